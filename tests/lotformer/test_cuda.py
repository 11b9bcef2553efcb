"""GPU checks: LOT and every backend on CUDA agree with the CPU, never sync, fit in memory.

These need a CUDA device and are skipped without one (CI has none). Run them on a GPU machine
with `pytest tests/lotformer/test_cuda.py`; the README records the last such run.
"""

from __future__ import annotations

import pytest
import torch

from lotformer import LRAEncoder, lot_attention
from lotformer.attention import available_attentions
from tests.lotformer.test_attention_contract import build_small, lengths_mask, make_qkv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _lot_inputs(B=3, H=2, N=300, D=16, r=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))
    z = torch.randn(H, r, D, generator=g)
    theta = torch.randn(H, r, generator=g)
    return q, k, v, z, theta


def _out_and_grads(args, mask, device, grad_mode, kernel="auto"):
    args = [t.detach().to(device).requires_grad_() for t in args]  # fresh leaves
    out = lot_attention(*args, eps=0.1, n_iters=20, grad_mode=grad_mode, kernel=kernel,
                        key_padding_mask=None if mask is None else mask.to(device))
    out.square().sum().backward()
    return [out.detach().cpu()] + [t.grad.cpu() for t in args]


@pytest.mark.parametrize("grad_mode", ["implicit", "recompute"])
def test_lot_on_cuda_matches_cpu(grad_mode):
    args = _lot_inputs()
    mask = lengths_mask([300, 211, 17], 300)
    cpu = _out_and_grads(args, mask, "cpu", grad_mode)
    gpu = _out_and_grads(args, mask, CUDA, grad_mode)
    for name, c, g in zip(["out", "q", "k", "v", "pivots", "logits"], cpu, gpu):
        torch.testing.assert_close(g, c, atol=2e-4 * c.abs().max().item(), rtol=1e-3, msg=name)
    assert (gpu[0][1, :, 211:] == 0).all()  # padded rows are exact zeros on the GPU too


def test_lot_never_synchronises_with_the_host():
    args = [t.to(CUDA).requires_grad_() for t in _lot_inputs(N=512)]
    mask = lengths_mask([512, 300, 100], 512).to(CUDA)
    lot_attention(*args, eps=0.1, n_iters=5, key_padding_mask=mask).sum().backward()  # warm up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        for mode in ("implicit", "recompute", "unrolled"):
            out = lot_attention(*args, eps=0.1, n_iters=25, key_padding_mask=mask,
                                grad_mode=mode)
            out.square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(args[0].grad).all()


def test_triton_kernels_match_the_torch_path_and_never_synchronise():
    pytest.importorskip("triton", reason="the fused LOT kernels need triton")
    args = _lot_inputs(B=3, H=2, N=1000, D=32, r=64)
    mask = lengths_mask([1000, 637, 0], 1000)  # with a fully padded example
    got = _out_and_grads(args, mask, CUDA, "implicit", kernel="triton")  # warm-up: compiles
    ref = _out_and_grads([t[:2] for t in args[:3]] + list(args[3:]), mask[:2], CUDA, "implicit",
                         kernel="torch")  # the empty example contributes nothing
    got_cut = [got[0][:2], got[1][:2], got[2][:2], got[3][:2], got[4], got[5]]
    for name, g, c in zip(["out", "q", "k", "v", "pivots", "logits"], got_cut, ref):
        torch.testing.assert_close(g, c, atol=2e-4 * c.abs().max().item(), rtol=1e-3, msg=name)
    assert all((t[2] == 0).all() for t in got[:4]) and all(torch.isfinite(t).all() for t in got)
    leaves = [t.to(CUDA).requires_grad_() for t in args]
    mask = mask.to(CUDA)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        out = lot_attention(*leaves, eps=0.1, n_iters=25, key_padding_mask=mask,
                            kernel="triton")
        out.square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(leaves[0].grad).all()


def test_lot_memory_is_linear_and_fits_2gb_at_65536_tokens():
    peaks = {}
    for n in (16384, 65536):
        q, k, v, z, theta = (t.to(CUDA).requires_grad_() for t in
                             _lot_inputs(B=1, H=1, N=n, D=32, r=32))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        lot_attention(q, k, v, z, theta, eps=0.1, n_iters=25).square().sum().backward()
        torch.cuda.synchronize()
        peaks[n] = torch.cuda.max_memory_allocated() - base
        del q, k, v, z, theta
    assert peaks[65536] < 2 * 2**30, peaks
    assert peaks[65536] < 4.6 * peaks[16384], peaks  # 4x the tokens: ~4x the memory


@pytest.mark.parametrize("name", available_attentions())
def test_every_backend_on_cuda_matches_cpu_with_grads(name):
    B, H, N, D = 2, 2, 64, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N).train(False)
    q, k, v = make_qkv(B, H, N, D, seed=2)
    mask = lengths_mask([64, 40], N)
    results = []
    for device in ("cpu", CUDA):
        attn = attn.to(device)
        qkv = [t.detach().to(device).requires_grad_() for t in (q, k, v)]  # fresh leaves
        out = attn(*qkv, mask.to(device))
        out[mask.to(device)[:, None, :, None].expand_as(out)].square().sum().backward()
        results.append([out.detach().cpu()] + [t.grad.cpu() for t in qkv])
    valid = mask[:, None, :, None].expand(B, H, N, D)
    torch.testing.assert_close(results[1][0][valid], results[0][0][valid], atol=1e-4, rtol=1e-3)
    for c, g in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(g, c, atol=1e-4 * max(1.0, c.abs().max().item()), rtol=1e-3)


@pytest.mark.parametrize("name", available_attentions())
def test_encoder_trains_on_cuda_under_bf16_autocast(name):
    torch.manual_seed(0)
    options = {"lot": {"rank": 8, "n_iters": 10}, "sinkhorn": {"n_iters": 3},
               "linformer": {"proj_dim": 16}, "nystrom": {"num_landmarks": 8}}.get(name, {})
    model = LRAEncoder(vocab_size=20, max_len=128, dim=32, depth=2, num_heads=2, mlp_dim=64,
                       attention=name, attention_options=options).to(CUDA)
    head = torch.nn.Linear(32, 5).to(CUDA)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3)
    ids = torch.randint(1, 20, (4, 128), device=CUDA)
    mask = lengths_mask([128, 100, 64, 9], 128).to(CUDA)
    ids = ids.masked_fill(~mask, 0)
    y = torch.randint(0, 5, (4,), device=CUDA)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(head(model(ids, mask)).float(), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
