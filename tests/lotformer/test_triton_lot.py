"""The fused Triton LOT kernels (lotformer/triton_lot.py) against the PyTorch solver.

Without a GPU the kernels run in Triton's interpreter on CPU tensors: ``TRITON_INTERPRET=1``
must be set before ``lotformer.triton_lot`` is first imported (the kernels are decorated for the
interpreter at import), which this module does at collection time. Each pytest-xdist worker is
its own process; only an earlier import of the module in the same process without the variable
(nothing in the suite does that on CPU) would make these tests skip. On a CUDA machine the same
tests run the compiled kernels on the GPU. ``test_kernels_compile_for_sm90`` (slow) compiles
them for sm_90 without a GPU, in a fresh process without the interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
triton_lot = pytest.importorskip("lotformer.triton_lot", reason="triton is not installed")

from lotformer import LOTAttention, lot_attention  # noqa: E402
from lotformer.attention import lot as lot_module  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and not triton_lot.INTERPRETED:
    pytest.skip("lotformer.triton_lot was imported in this process without TRITON_INTERPRET=1",
                allow_module_level=True)


def _inputs(B, H, N, D, r, *, Dv=None, seed=0, logits=True):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, N, D, generator=g) for _ in range(2))
    v = torch.randn(B, H, N, Dv or D, generator=g)
    z = torch.randn(H, r, D, generator=g)
    theta = torch.randn(H, r, generator=g) if logits else None
    return [t for t in (q, k, v, z, theta) if t is not None]


def _mask(N, lengths):
    return torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


def _run(args, mask, kernel, n_iters, eps=0.1):
    """Output and the gradients of every input for a fixed random upstream gradient."""
    leaves = [t.detach().to(DEVICE).requires_grad_() for t in args]
    out = lot_attention(*leaves[:4], leaves[4] if len(leaves) > 4 else None, eps=eps,
                        n_iters=n_iters, kernel=kernel,
                        key_padding_mask=None if mask is None else mask.to(DEVICE))
    g = torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(1))  # same per example
    out.backward(g.to(DEVICE).expand_as(out))
    return [out.detach().cpu()] + [t.grad.cpu() for t in leaves]


def _assert_close(got, ref, names):
    for name, a, b in zip(names, got, ref):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-3, msg=name)


# (B, H, N, D, Dv, r, n_iters, lengths or None, learned masses): odd N and r, padding, several
# token tiles per problem (2048 // the widest of r, D, Dv rows each), one and 25 iterations
CASES = [
    (2, 2, 37, 8, 8, 5, 1, [37, 20], True),
    (2, 2, 131, 16, 12, 7, 25, [131, 70], True),
    (2, 2, 160, 32, 32, 64, 2, None, False),
    (2, 2, 51, 8, 8, 64, 10, [51, 40], True),
    (2, 2, 9, 8, 8, 16, 5, [9, 4], True),  # fewer tokens than pivots
]


@pytest.mark.parametrize("B, H, N, D, Dv, r, n_iters, lengths, learned", CASES)
def test_outputs_and_gradients_match_the_torch_solver(B, H, N, D, Dv, r, n_iters, lengths,
                                                      learned):
    args = _inputs(B, H, N, D, r, Dv=Dv, logits=learned, seed=N)
    mask = None if lengths is None else _mask(N, lengths)
    got = _run(args, mask, "triton", n_iters)
    ref = _run(args, mask, "torch", n_iters)
    _assert_close(got, ref, ["out", "q", "k", "v", "pivots", "logits"])
    if mask is not None:  # padded rows: exact zeros, and no gradient reaches padded inputs
        pad = ~mask[:, None, :, None]
        for t in (got[0], got[1], got[2], got[3]):
            assert (t.masked_select(pad) == 0).all()


def test_fully_padded_example_gives_zeros_and_leaves_the_others_alone():
    args = _inputs(2, 2, 40, 8, 5, seed=3)
    got = _run(args, _mask(40, [40, 0]), "triton", 25)
    assert all(torch.isfinite(t).all() for t in got)
    assert all((t[1] == 0).all() for t in got[:4])  # out, dq, dk, dv of the empty example
    # it contributes nothing: the same as the batch without it (out, grads incl. the pivots')
    ref = _run([t[:1] for t in args[:3]] + args[3:], _mask(40, [40]), "torch", 25)
    _assert_close([got[0][:1], got[1][:1], got[2][:1], got[3][:1], got[4], got[5]], ref,
                  ["out", "q", "k", "v", "pivots", "logits"])


@pytest.mark.parametrize("n_iters", [1, 4])
def test_rows_of_the_attention_map_sum_to_one_at_any_iteration_count(n_iters):
    q, k, _, z, theta = _inputs(2, 2, 75, 8, 6, seed=5)
    ones = torch.ones(2, 2, 75, 1)
    mask = _mask(75, [75, 31])
    out = lot_attention(*(t.to(DEVICE) for t in (q * 3, k * 3, ones, z, theta)), eps=0.05,
                        n_iters=n_iters, key_padding_mask=mask.to(DEVICE), kernel="triton").cpu()
    torch.testing.assert_close(out[0], torch.ones(2, 75, 1), atol=2e-6, rtol=0)
    torch.testing.assert_close(out[1, :, :31], torch.ones(2, 31, 1), atol=2e-6, rtol=0)
    assert (out[1, :, 31:] == 0).all()


def test_module_option_and_kernel_selection(monkeypatch):
    torch.manual_seed(0)
    attn = LOTAttention(num_heads=2, head_dim=8, rank=5, n_iters=3, kernel="triton").to(DEVICE)
    q, k, v = (t.to(DEVICE) for t in _inputs(2, 2, 30, 8, 5)[:3])
    ref = lot_attention(q, k, v, attn.pivots, attn.pivot_logits, eps=0.1, n_iters=3,
                        kernel="torch")
    torch.testing.assert_close(attn(q, k, v), ref, atol=1e-5, rtol=1e-4)
    assert "kernel='triton'" in repr(attn)
    with pytest.raises(ValueError, match="kernel"):
        LOTAttention(num_heads=2, head_dim=8, kernel="cuda")
    with pytest.raises(ValueError, match="compat='paper'"):
        LOTAttention(num_heads=2, head_dim=8, grad_mode="recompute", kernel="triton")
    with pytest.raises(ValueError, match="compat='paper'"):
        lot_attention(q, k, v, attn.pivots, eps=0.1, n_iters=3, compat="reference",
                      kernel="triton")
    with pytest.raises(ValueError, match="float64"):
        lot_attention(q.double(), k.double(), v.double(), attn.pivots.double(), eps=0.1,
                      n_iters=3, kernel="triton")
    if DEVICE.type == "cpu":  # "auto" never picks the kernels on CPU; "triton" needs a GPU
        monkeypatch.setattr(triton_lot, "lot_paper_implicit", None)  # a call would fail
        lot_attention(q, k, v, attn.pivots, eps=0.1, n_iters=3)
        monkeypatch.setattr(triton_lot, "INTERPRETED", False)
        with pytest.raises(RuntimeError, match="CUDA tensors"):
            lot_attention(q, k, v, attn.pivots, eps=0.1, n_iters=3, kernel="triton")
    else:  # "auto" on CUDA does pick them
        monkeypatch.setattr(lot_module, "_PaperImplicitLOT", None)
        lot_attention(q, k, v, attn.pivots, eps=0.1, n_iters=3)


_AOT_SCRIPT = """
import json, sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lotformer import triton_lot as T
N, D, r = 4000, 32, 64  # the LRA Text / Retrieval shape, the largest tiles
launch = T._blocks(N, D, D, r)
extra = {"_p2t_kernel": {"FLOOR": 35.0}, "_p1_kernel": {"FLOOR": 35.0},
         "_adjoint_stats_kernel": {}, "_adjoint_grads_kernel": {"WITH_DV": True}}
shared = {}
for name, consts in extra.items():
    fn = getattr(T, name)
    consts = dict(consts, **{k: v for k, v in launch.items() if k in fn.arg_names})
    sig = {a: "constexpr" if a in consts else "*fp32" if a.endswith("_ptr") else "i32"
           for a in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": launch["num_warps"],
                                     "num_stages": launch["num_stages"]})
    shared[name] = kernel.metadata.shared
print(json.dumps(shared))
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """Every kernel compiles ahead of time for sm_90 (H100 / H200) at the LRA Text shape, no GPU
    needed (Triton's bundled ptxas): checks what the interpreter does not (typing, layouts,
    resources). In a fresh process, as the kernels here are decorated for the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, cwd=root, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shared = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(shared) == {"_p2t_kernel", "_p1_kernel", "_adjoint_stats_kernel",
                           "_adjoint_grads_kernel"}
    assert max(shared.values()) <= 64 * 1024, shared  # fits any recent GPU's shared memory
