"""Tests of LOT attention (lotformer/attention/lot.py): the map, the O(n r D) output,
gradients, compat."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from lotformer import LOTAttention, build_attention, lot_attention, lot_attention_matrix
from lotformer.attention import MultiHeadAttention, available_attentions
from tests.helpers import saved_bytes

F64 = torch.float64


def _inputs(B=2, H=2, N=9, D=4, r=3, *, dtype=F64, seed=0, scale=1.0, zscale=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=dtype) * scale for _ in range(3))
    z = torch.randn(H, r, D, generator=g, dtype=dtype) * zscale
    theta = torch.randn(H, r, generator=g, dtype=dtype)
    return q, k, v, z, theta


def _mask(B, N, lengths):
    return torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------------------------
# the dense map
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_iters", [1, 3, 50])
def test_rows_sum_to_one_at_any_iteration_count(n_iters):
    q, k, _, z, theta = _inputs(dtype=torch.float32, scale=2.0)
    mask = _mask(2, 9, [9, 6])
    A = lot_attention_matrix(q, k, z, theta, eps=0.1, n_iters=n_iters, key_padding_mask=mask)
    assert A.shape == (2, 2, 9, 9) and A.dtype == torch.float32
    rows = A.sum(-1)
    torch.testing.assert_close(rows[0], torch.ones(2, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[1, :, :6], torch.ones(2, 6), atol=1e-5, rtol=0)
    # padded rows and columns carry nothing
    assert (A[1, :, 6:, :] == 0).all() and (A[1, :, :, 6:] == 0).all()
    assert (A >= 0).all()


def test_columns_sum_to_one_once_converged_and_rank_at_most_r():
    q, k, _, z, theta = _inputs(N=10, r=3, scale=1.0)
    mask = _mask(2, 10, [10, 7])
    A = lot_attention_matrix(q, k, z, theta, eps=0.5, n_iters=300, key_padding_mask=mask)
    cols = A.sum(-2)
    torch.testing.assert_close(cols[0], torch.ones(2, 10, dtype=F64), atol=1e-3, rtol=0)
    torch.testing.assert_close(cols[1, :, :7], torch.ones(2, 7, dtype=F64), atol=1e-3, rtol=0)
    for b in range(2):
        for h in range(2):
            sv = torch.linalg.svdvals(A[b, h])
            assert (sv[3:] < 1e-10 * sv[0]).all()  # numerical rank <= r = 3
    assert torch.linalg.matrix_rank(A[0, 0]) == 3


def test_single_iteration_columns_are_not_yet_stochastic():
    # the column check above can fail: after 1 iteration the columns are visibly off
    q, k, _, z, theta = _inputs(N=10, r=3, scale=2.0)
    A = lot_attention_matrix(q, k, z, theta, eps=0.1, n_iters=1)
    assert (A.sum(-2) - 1).abs().max() > 1e-2


@pytest.mark.parametrize("masked", [False, True])
def test_linear_time_output_equals_dense_map_times_v(masked):
    q, k, v, z, theta = _inputs(N=11, D=5, r=4, dtype=torch.float32, seed=1)
    mask = _mask(2, 11, [11, 5]) if masked else None
    out = lot_attention(q, k, v, z, theta, eps=0.2, n_iters=10, key_padding_mask=mask)
    A = lot_attention_matrix(q, k, z, theta, eps=0.2, n_iters=10, key_padding_mask=mask)
    dense = A @ (v if mask is None else v * mask[:, None, :, None])
    torch.testing.assert_close(out, dense, atol=1e-5 * dense.abs().max().item(), rtol=1e-5)
    if masked:
        assert (out[1, :, 5:] == 0).all()  # padded output rows are exactly zero


def test_plans_agree_with_pot():
    q, k, _, z, theta = _inputs(B=1, H=2, N=8, D=3, r=3, seed=2)
    mask = _mask(1, 8, [6])
    eps = 0.4
    A = lot_attention_matrix(q, k, z, theta, eps=eps, n_iters=500, key_padding_mask=mask)
    nv, D = 6, 3
    for h in range(2):
        w = torch.softmax(theta[h], -1).numpy()
        a = np.full(nv, 1.0 / nv)
        S1 = (q[0, h, :nv] @ z[h].T / math.sqrt(D)).numpy()  # (n, r)
        S2 = (z[h] @ k[0, h, :nv].T / math.sqrt(D)).numpy()  # (r, n)
        P1 = ot.sinkhorn(a, w, -S1, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-15)
        P2 = ot.sinkhorn(w, a, -S2, eps, method="sinkhorn_stabilized", numItermax=20000,
                         stopThr=1e-15)
        A_pot = nv * P1 @ np.diag(1.0 / w) @ P2
        np.testing.assert_allclose(A[0, h, :nv, :nv].numpy(), A_pot, atol=1e-5 / nv, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grad_mode", ["implicit", "recompute", "unrolled"])
def test_gradcheck_all_inputs(grad_mode):
    q, k, v, z, theta = _inputs(B=2, H=2, N=4, D=2, r=2, seed=3)
    mask = _mask(2, 4, [4, 3])
    iters = 60 if grad_mode == "implicit" else 3  # implicit: well converged (eps = 1)
    args = tuple(t.requires_grad_() for t in (q, k, v, z, theta))
    fn = lambda q, k, v, z, th: lot_attention(q, k, v, z, th, eps=1.0, n_iters=iters,
                                              key_padding_mask=mask, grad_mode=grad_mode)
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("N, r, lengths, logits", [(7, 3, [7, 5], True), (7, 3, None, False),
                                                  (3, 5, [3, 2], True), (3, 5, None, True)])
def test_implicit_path_equals_autograd_through_the_dense_map(N, r, lengths, logits):
    # lot_attention's implicit mode is one fused autograd node with hand-written gradients;
    # lot_attention_matrix composes the per-plan implicit nodes with autograd. Same values and
    # gradients, with and without padding, sequences longer and shorter than r, uniform masses.
    q, k, v, z, theta = _inputs(N=N, D=3, r=r, seed=11)
    mask = None if lengths is None else _mask(2, N, lengths)
    th = theta if logits else None
    args = [t.requires_grad_() for t in (q, k, v, z, theta)]
    W = torch.randn(2, 2, N, 3, dtype=F64, generator=torch.Generator().manual_seed(2))

    def grads(out):
        return torch.autograd.grad((out * W).sum(), args[:4] + ([args[4]] if logits else []))

    out = lot_attention(*args[:4], args[4] if logits else th, eps=0.2, n_iters=9,
                        key_padding_mask=mask)
    A = lot_attention_matrix(*args[:2], args[3], args[4] if logits else th, eps=0.2, n_iters=9,
                             key_padding_mask=mask)
    vm = args[2] if mask is None else args[2].masked_fill(~mask[:, None, :, None], 0.0)
    dense = A @ vm
    torch.testing.assert_close(out, dense, atol=1e-12, rtol=1e-10)
    for g_fused, g_dense in zip(grads(out), grads(dense)):
        torch.testing.assert_close(g_fused, g_dense, atol=1e-11, rtol=1e-9)


def _all_grads(grad_mode, n_iters, eps=0.3, seed=4):
    q, k, v, z, theta = _inputs(N=7, D=3, r=3, seed=seed)
    mask = _mask(2, 7, [7, 5])
    args = tuple(t.requires_grad_() for t in (q, k, v, z, theta))
    out = lot_attention(*args, eps=eps, n_iters=n_iters, key_padding_mask=mask,
                        grad_mode=grad_mode)
    W = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(9))
    return (out, *torch.autograd.grad((out * W).sum(), args))


def test_implicit_gradient_matches_unrolled_at_convergence():
    for gi, gu in zip(_all_grads("implicit", 400), _all_grads("unrolled", 400)):
        torch.testing.assert_close(gi, gu, atol=1e-9, rtol=1e-7)
    # and it is a different gradient far from convergence (the comparison has teeth)
    gi, gu = _all_grads("implicit", 1, eps=0.05)[1], _all_grads("unrolled", 1, eps=0.05)[1]
    assert (gi - gu).abs().max() > 1e-4


def test_recompute_gradient_equals_unrolled():
    for gr, gu in zip(_all_grads("recompute", 23, eps=0.1), _all_grads("unrolled", 23, eps=0.1)):
        torch.testing.assert_close(gr, gu, atol=1e-14, rtol=1e-12)


def test_saved_memory_does_not_grow_with_iterations():
    q, k, v, z, theta = _inputs(B=2, H=2, N=64, D=8, r=8, dtype=torch.float32)
    args = tuple(t.requires_grad_() for t in (q, k, v, z, theta))

    def saved(mode, iters):
        return saved_bytes(lambda: lot_attention(*args, eps=0.1, n_iters=iters, grad_mode=mode))

    implicit_5 = saved("implicit", 5)
    assert saved("implicit", 50) == implicit_5
    # what implicit mode saves is O(n r): the two plans plus the inputs, nothing per iteration
    nr_bytes = 2 * 2 * 64 * 8 * 4
    assert implicit_5 <= 1.2 * (2 * nr_bytes + 3 * q.numel() * 4)
    assert saved("unrolled", 50) > saved("unrolled", 5)  # the probe does see growth


# ---------------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------------
def test_extreme_regime_gives_finite_outputs_and_gradients():
    q, k, v, z, theta = _inputs(N=16, D=4, r=4, dtype=torch.float32, scale=1e3, zscale=1.0)
    mask = _mask(2, 16, [16, 11])
    for mode in ("implicit", "recompute", "unrolled"):
        args = tuple(t.clone().requires_grad_() for t in (q, k, v, z, theta))
        out = lot_attention(*args, eps=1e-3, n_iters=10, key_padding_mask=mask, grad_mode=mode)
        assert torch.isfinite(out).all(), mode
        grads = torch.autograd.grad(out.square().sum(), args)
        assert all(torch.isfinite(g).all() for g in grads), mode
    A = lot_attention_matrix(q, k, z, theta, eps=1e-3, n_iters=10, key_padding_mask=mask)
    torch.testing.assert_close(A[0].sum(-1), torch.ones(2, 16), atol=1e-4, rtol=0)


def test_bfloat16_inputs_and_autocast():
    q, k, v, z, theta = _inputs(N=12, D=8, r=4, dtype=torch.float32, seed=5)
    ref = lot_attention(q, k, v, z, theta, eps=0.1, n_iters=5)
    out = lot_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), z, theta, eps=0.1, n_iters=5)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qa = q @ torch.eye(8)  # a bf16 tensor made under autocast
        assert qa.dtype == torch.bfloat16
        out_ac = lot_attention(qa, k, v, z, theta, eps=0.1, n_iters=5)
    assert out_ac.dtype == torch.bfloat16 and torch.isfinite(out_ac.float()).all()
    torch.testing.assert_close(out_ac.float(), ref, atol=0.05, rtol=0.05)
    # float32 inputs under autocast stay float32 and exact
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = lot_attention(q, k, v, z, theta, eps=0.1, n_iters=5)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, ref)


def test_fully_padded_sequence_gives_zeros_not_nan():
    q, k, v, z, theta = _inputs(N=6, seed=6)
    mask = _mask(2, 6, [6, 0])
    args = tuple(t.requires_grad_() for t in (q, k, v, z, theta))
    out = lot_attention(*args, eps=0.1, n_iters=5, key_padding_mask=mask)
    assert (out[1] == 0).all() and torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), args)
    assert all(torch.isfinite(g).all() for g in grads)


def test_no_host_synchronisation_in_forward_or_backward():
    # Every tensor -> Python value conversion (.item(), bool(t), data-dependent shapes) goes
    # through one of these ops; on a GPU each would be a host-device sync.
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"_local_scalar_dense", "nonzero", "is_nonzero", "masked_select", "item",
               "equal", "allclose", "index"}  # index: boolean-mask indexing
    seen: set[str] = set()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    q, k, v, z, theta = _inputs(N=12, D=4, r=3, dtype=torch.float32)
    mask = _mask(2, 12, [12, 7])
    for mode in ("implicit", "recompute", "unrolled"):
        args = tuple(t.clone().requires_grad_() for t in (q, k, v, z, theta))
        with Recorder():
            out = lot_attention(*args, eps=0.1, n_iters=12, key_padding_mask=mask,
                                grad_mode=mode)
            out.square().sum().backward()
        assert args[3].grad is not None
    assert {"bmm", "_linalg_solve_ex"} <= seen  # the recorder did see the solver at work
    assert not (seen & syncing), seen & syncing


# ---------------------------------------------------------------------------------------------
# structure: heads, padding
# ---------------------------------------------------------------------------------------------
def test_heads_are_independent():
    q, k, v, z, theta = _inputs(B=3, H=3, N=8, D=4, r=3, seed=7)
    perm = torch.tensor([2, 0, 1])
    mask = _mask(3, 8, [8, 5, 7])
    out = lot_attention(q, k, v, z, theta, eps=0.2, n_iters=8, key_padding_mask=mask)
    out_p = lot_attention(q[:, perm], k[:, perm], v[:, perm], z[perm], theta[perm], eps=0.2,
                          n_iters=8, key_padding_mask=mask)
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-14, rtol=0)
    # identical q, k, v across heads: permuting only the pivots permutes the output heads
    q1, k1, v1 = (t[:, :1].expand(-1, 3, -1, -1) for t in (q, k, v))
    o1 = lot_attention(q1, k1, v1, z, theta, eps=0.2, n_iters=8, key_padding_mask=mask)
    o1p = lot_attention(q1, k1, v1, z[perm], theta[perm], eps=0.2, n_iters=8,
                        key_padding_mask=mask)
    torch.testing.assert_close(o1p, o1[:, perm], atol=1e-14, rtol=0)
    assert (o1[:, 0] - o1[:, 1]).abs().max() > 1e-3  # heads do differ


def test_padded_positions_do_not_affect_valid_outputs():
    q, k, v, z, theta = _inputs(N=10, seed=8)
    mask = _mask(2, 10, [10, 6])
    out = lot_attention(q, k, v, z, theta, eps=0.1, n_iters=10, key_padding_mask=mask)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[1, :, 6:] = torch.randn_like(t[1, :, 6:]) * 100
    k2[1, :, 7] = float("nan")
    out2 = lot_attention(q2, k2, v2, z, theta, eps=0.1, n_iters=10, key_padding_mask=mask)
    torch.testing.assert_close(out2[1, :, :6], out[1, :, :6], atol=0, rtol=0)
    torch.testing.assert_close(out2[0], out[0], atol=0, rtol=0)
    # without the mask the same change does move the outputs (the check can fail)
    o_nomask = lot_attention(q, k, v, z, theta, eps=0.1, n_iters=10)
    q3, k3, v3 = (t.nan_to_num() for t in (q2, k2, v2))
    o_nomask2 = lot_attention(q3, k3, v3, z, theta, eps=0.1, n_iters=10)
    assert (o_nomask2[1, :, :6] - o_nomask[1, :, :6]).abs().max() > 1e-3


def test_uniform_masses_when_logits_are_none():
    q, k, v, z, _ = _inputs(seed=9)
    out = lot_attention(q, k, v, z, None, eps=0.3, n_iters=6)
    out0 = lot_attention(q, k, v, z, torch.zeros(2, 3, dtype=F64), eps=0.3, n_iters=6)
    torch.testing.assert_close(out, out0, atol=1e-14, rtol=0)


# ---------------------------------------------------------------------------------------------
# compat="reference"
# ---------------------------------------------------------------------------------------------
def _reference_rules(q, k, v, z, eps, max_iter):
    """Straightforward transcription of the reference LRA rules (see REFERENCE.md section 1)."""
    B, H, N, D = q.shape
    r = z.shape[1]
    S1 = torch.clamp((q / math.sqrt(D)) @ z.transpose(-1, -2), -50, 50)  # (B, H, N, r)
    S2 = torch.clamp(z @ (k / math.sqrt(D)).transpose(-1, -2), -50, 50)  # (B, H, r, N)

    def sinkhorn(S):
        x, y = S.shape[-2:]
        log_mu, log_nu = -math.log(x), -math.log(y)
        f = torch.zeros(S.shape[:-1], dtype=S.dtype)
        g = torch.zeros(S.shape[:-2] + (y,), dtype=S.dtype)
        for i in range(max_iter):  # half-updates, row first
            M = (S + f[..., :, None] + g[..., None, :]) / eps
            if i % 2 == 0:
                f = eps * (log_mu - torch.logsumexp(M, dim=-1)) + f
            else:
                g = eps * (log_nu - torch.logsumexp(M, dim=-2)) + g
        return torch.exp((S + f[..., :, None] + g[..., None, :]) / eps)

    P1, P2 = sinkhorn(S1), sinkhorn(S2)
    return (N / r) * P1 @ (P2 @ v)


@pytest.mark.parametrize("max_iter", [1, 5, 50])
def test_reference_compat_matches_the_reference_rules(max_iter):
    q, k, v, z, theta = _inputs(N=10, D=4, r=3, seed=10, scale=3.0)
    mask = _mask(2, 10, [10, 4])
    out = lot_attention(q, k, v, z, theta, eps=0.1, n_iters=max_iter, key_padding_mask=mask,
                        compat="reference")
    expected = _reference_rules(q, k, v, z, 0.1, max_iter)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
    # the paper mode is a different map (scale r^2, mask honoured)
    paper = lot_attention(q, k, v, z, None, eps=0.1, n_iters=max_iter)
    assert (paper - expected).abs().max() > 1e-3


def test_reference_compat_clamps_similarities():
    q, k, v, z, _ = _inputs(N=6, D=4, r=3, seed=11, scale=100.0, zscale=5.0)
    out = lot_attention(q, k, v, z, None, eps=0.5, n_iters=6, compat="reference")
    torch.testing.assert_close(out, _reference_rules(q, k, v, z, 0.5, 6), atol=1e-9, rtol=1e-7)


def test_reference_compat_gradients_in_all_modes():
    q, k, v, z, _ = _inputs(B=1, H=2, N=4, D=2, r=2, seed=12)
    args = tuple(t.requires_grad_() for t in (q, k, v, z))
    for mode in ("recompute", "unrolled"):
        fn = lambda q, k, v, z: lot_attention(q, k, v, z, eps=1.0, n_iters=5, compat="reference",
                                              grad_mode=mode)
        assert torch.autograd.gradcheck(fn, args)
    fn = lambda q, k, v, z: lot_attention(q, k, v, z, eps=1.0, n_iters=120, compat="reference")
    assert torch.autograd.gradcheck(fn, args)


# ---------------------------------------------------------------------------------------------
# the module and argument checking
# ---------------------------------------------------------------------------------------------
def test_module_registration_parameters_and_forward():
    assert "lot" in available_attentions()
    mod = build_attention("lot", num_heads=2, head_dim=4, max_len=16, rank=5, eps=0.2, n_iters=7)
    assert isinstance(mod, LOTAttention)
    assert mod.pivots.shape == (2, 5, 4) and isinstance(mod.pivots, torch.nn.Parameter)
    assert 0.005 < mod.pivots.std().item() < 0.06  # randn * 0.02
    assert isinstance(mod.pivot_logits, torch.nn.Parameter) and (mod.pivot_logits == 0).all()
    q, k, v, _, _ = _inputs(N=9, D=4, dtype=torch.float32)
    mask = _mask(2, 9, [9, 3])
    out = mod(q, k, v, key_padding_mask=mask)
    ref = lot_attention(q, k, v, mod.pivots, mod.pivot_logits, eps=0.2, n_iters=7,
                        key_padding_mask=mask)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert mod.pivots.grad is not None and mod.pivot_logits.grad is not None
    A = mod.attention_matrix(q, k, key_padding_mask=mask)
    torch.testing.assert_close(A @ (v * mask[:, None, :, None]), out, atol=1e-5, rtol=1e-5)

    fixed = LOTAttention(num_heads=2, head_dim=4, rank=5, learn_masses=False)
    names = [n for n, _ in fixed.named_parameters()]
    assert names == ["pivots"] and "pivot_logits" in dict(fixed.named_buffers())
    # reference mode ignores the masses: no unused Parameter either
    ref = LOTAttention(num_heads=2, head_dim=4, rank=5, compat="reference")
    assert [n for n, _ in ref.named_parameters()] == ["pivots"]


def test_inside_multihead_wrapper_under_bf16_autocast():
    mha = MultiHeadAttention(16, 2, attention="lot", attention_options={"rank": 4, "n_iters": 5})
    x = torch.randn(2, 12, 16)
    mask = _mask(2, 12, [12, 7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mha(x, key_padding_mask=mask)
    assert y.shape == (2, 12, 16) and torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert torch.isfinite(mha.attention.pivots.grad).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
        ({"eps": -1.0}, "eps must be a finite number > 0, got -1.0"),
        ({"n_iters": 0}, "n_iters must be an int >= 1, got 0"),
        ({"rank": 0}, r"rank \(number of pivots\) must be an int >= 1, got 0"),
        ({"grad_mode": "exact"},
         "unknown grad_mode 'exact'; valid choices: implicit, recompute, unrolled"),
        ({"compat": "jax"}, "unknown compat 'jax'; valid choices: paper, reference"),
    ],
)
def test_module_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LOTAttention(num_heads=2, head_dim=4, **kwargs)


def test_functional_rejects_bad_arguments_and_shapes():
    q, k, v, z, theta = _inputs()
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        lot_attention(q, k, v, z, theta, eps=float("nan"), n_iters=3)
    with pytest.raises(ValueError, match="n_iters must be an int >= 1, got 2.5"):
        lot_attention(q, k, v, z, theta, eps=0.1, n_iters=2.5)
    with pytest.raises(ValueError, match=r"pivots must have shape \(H, r, D\) = \(2, r, 4\)"):
        lot_attention(q, k, v, z[:, :, :3], theta, eps=0.1, n_iters=3)
    with pytest.raises(ValueError, match=r"pivot_logits must have shape \(H, r\) = \(2, 3\)"):
        lot_attention(q, k, v, z, theta[:, :2], eps=0.1, n_iters=3)
    with pytest.raises(ValueError, match="q and k must both have shape"):
        lot_attention(q, k[..., :3], v, z, theta, eps=0.1, n_iters=3)
    with pytest.raises(ValueError, match=r"v must have shape \(B, H, N, Dv\)"):
        lot_attention(q, k, v[:, :, :4], z, theta, eps=0.1, n_iters=3)
    with pytest.raises(ValueError, match="key_padding_mask must be a bool tensor"):
        lot_attention(q, k, v, z, theta, eps=0.1, n_iters=3,
                      key_padding_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match="unknown compat 'paper2'"):
        lot_attention_matrix(q, k, z, theta, eps=0.1, n_iters=3, compat="paper2")


@pytest.mark.parametrize("B, N", [(0, 9), (2, 0), (0, 0)])
@pytest.mark.parametrize("compat", ["paper", "reference"])
def test_empty_batch_or_sequence_gives_the_empty_output(B, N, compat):
    q, k, v, z, theta = _inputs(B=max(B, 1), N=max(N, 1))
    q, k, v = (t[:B, :, :N].clone().requires_grad_() for t in (q, k, v))
    out = lot_attention(q, k, v, z, theta, eps=0.1, n_iters=3, compat=compat)
    assert out.shape == (B, 2, N, 4) and out.dtype == q.dtype
    out.sum().backward()  # differentiable, with (empty) gradients
    assert q.grad is None or q.grad.shape == q.shape
    A = lot_attention_matrix(q, k, z, theta, eps=0.1, n_iters=3, compat=compat)
    assert A.shape == (B, 2, N, N)
    mod = LOTAttention(num_heads=2, head_dim=4, rank=3, compat=compat)
    mask = torch.ones(B, N, dtype=torch.bool)
    assert mod(q, k, v, key_padding_mask=mask).shape == (B, 2, N, 4)


def test_integer_inputs_are_rejected_not_truncated():
    q, k, v, z, theta = _inputs()
    with pytest.raises(ValueError, match="attention needs floating-point q, k, v"):
        lot_attention(q.long(), k, v, z, theta, eps=0.1, n_iters=3)
    with pytest.raises(ValueError, match="attention needs floating-point q, k, v"):
        lot_attention_matrix(q, k.int(), z, theta, eps=0.1, n_iters=3)


def test_torch_compile_traces_around_the_fused_cpu_kernel():
    """torch.compile (trainer.compile) of a LOT layer on CPU: dynamo cannot trace numba's
    dispatcher, so the fused kernel is excluded from tracing (torch.compiler.disable) and runs
    eagerly; outputs and gradients equal the eager layer's. (Before, compiling crashed with
    "exception table entry start instruction has no offset".)"""
    import os

    import lotformer.cpu_kernels as cpu_kernels

    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = LOTAttention(num_heads=2, head_dim=8, rank=4, n_iters=10)
    q, k, v = (torch.randn(2, 2, 64, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 40:] = False
    cpu_kernels._ran_in_pid = None
    compiled = torch.compile(layer, backend="eager")(q, k, v, key_padding_mask=mask)
    assert cpu_kernels._ran_in_pid == os.getpid()  # the fused kernel ran under compile
    grads = torch.autograd.grad(compiled.square().sum(), (q, k, v, layer.pivots))
    eager = layer(q, k, v, key_padding_mask=mask)
    expected = torch.autograd.grad(eager.square().sum(), (q, k, v, layer.pivots))
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch._dynamo.reset()
