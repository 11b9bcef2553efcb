"""Degenerate inputs (fully padded examples, empty OT problems) on every code path.

Each test runs under every CPU solver configuration (fused kernel / BLAS loop, 1 / 2 threads; see
conftest.py): outputs and gradients must be finite, exactly zero where there is nothing to attend
to, and the other examples of the batch must not notice the degenerate one.
"""

from __future__ import annotations

import math

import pytest
import torch

from lotformer import lot_attention, lot_attention_matrix
from lotformer.attention import available_attentions
from lotformer.sinkhorn import GRAD_MODES, sinkhorn_plan
from tests.lotformer.test_attention_contract import build_small

F64 = torch.float64


def _lot_inputs(N, r, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(3, 2, N, 4, generator=g, dtype=dtype) for _ in range(3))
    z = torch.randn(2, r, 4, generator=g, dtype=dtype)
    theta = torch.randn(2, r, generator=g, dtype=dtype)
    return q, k, v, z, theta


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("N,r", [(9, 4), (3, 5)])  # N >= r and N < r eliminate different sides
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_lot_fully_padded_example_is_zero_with_zero_gradients(solver_config, grad_mode, N, r,
                                                              dtype):
    q, k, v, z, theta = _lot_inputs(N, r, dtype)
    mask = torch.ones(3, N, dtype=torch.bool)
    mask[1] = False  # example 1: nothing but padding
    mask[2, N // 2:] = False
    args = tuple(t.clone().requires_grad_() for t in (q, k, v, z, theta))
    out = lot_attention(*args, eps=0.1, n_iters=5, key_padding_mask=mask, grad_mode=grad_mode)
    assert (out[1] == 0).all() and torch.isfinite(out).all()
    dout = torch.randn_like(out)
    grads = torch.autograd.grad((out * dout).sum(), args)
    for name, grad in zip("q k v pivots logits".split(), grads):
        assert torch.isfinite(grad).all(), name
    for grad in grads[:3]:
        assert (grad[1] == 0).all()
    # the other examples are solved as if alone: same outputs and pivot gradients
    keep = [0, 2]
    alone = tuple(t[keep].clone().requires_grad_() if t.dim() == 4 else t.clone().requires_grad_()
                  for t in (q, k, v, z, theta))
    out_alone = lot_attention(*alone, eps=0.1, n_iters=5, key_padding_mask=mask[keep],
                              grad_mode=grad_mode)
    grads_alone = torch.autograd.grad((out_alone * dout[keep]).sum(), alone)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out[keep], out_alone, **tol)
    torch.testing.assert_close(grads[0][keep], grads_alone[0], **tol)
    torch.testing.assert_close(grads[3], grads_alone[3], **tol)
    torch.testing.assert_close(grads[4], grads_alone[4], **tol)


def test_lot_dense_map_of_a_fully_padded_example_is_zero(solver_config):
    q, k, _, z, theta = _lot_inputs(7, 3, F64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0] = False
    A = lot_attention_matrix(q, k, z, theta, eps=0.1, n_iters=5, key_padding_mask=mask)
    assert (A[0] == 0).all()
    torch.testing.assert_close(A[1:].sum(-1), torch.ones(2, 2, 7, dtype=F64))


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("last", ["row", "col"])
@pytest.mark.parametrize("n,m", [(8, 3), (3, 8)])
def test_solver_empty_problem_has_zero_plan_and_zero_gradients(solver_config, grad_mode, last,
                                                               n, m):
    g = torch.Generator().manual_seed(1)
    S = torch.randn(3, n, m, generator=g, dtype=F64, requires_grad=True)
    log_a = torch.full((3, n), -math.log(n), dtype=F64)
    log_b = torch.full((3, m), -math.log(m), dtype=F64)
    log_a[1] = -math.inf  # no row mass: problem 1 is empty
    log_b[2] = -math.inf  # no column mass: problem 2 is empty
    P = sinkhorn_plan(S, log_a, log_b, 0.2, 6, last=last, grad_mode=grad_mode)
    assert torch.isfinite(P).all() and (P[1:] == 0).all()
    dS, = torch.autograd.grad((P * torch.randn_like(P)).sum(), S)
    assert torch.isfinite(dS).all() and (dS[1:] == 0).all()
    P0 = sinkhorn_plan(S[:1], log_a[:1], log_b[:1], 0.2, 6, last=last, grad_mode=grad_mode)
    torch.testing.assert_close(P[0], P0[0])


@pytest.mark.parametrize("name", available_attentions())
def test_every_backend_fully_padded_example_is_finite(solver_config, name):
    torch.manual_seed(0)
    attn = build_small(name, num_heads=2, head_dim=8, n=12).train(False)
    q, k, v = (torch.randn(2, 2, 12, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1] = False
    out = attn(q, k, v, key_padding_mask=mask)
    assert torch.isfinite(out).all(), name
    params = [p for p in attn.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.sum(), [q, k, v, *params], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads), name
    alone = attn(q[:1], k[:1], v[:1], key_padding_mask=mask[:1])
    torch.testing.assert_close(out[:1], alone, atol=1e-5, rtol=1e-4)


def test_empty_problem_does_not_force_kernel_rebuilds_on_the_batch(monkeypatch):
    """The fused kernel's drift check skips problems without mass (whose scalings run off to the
    denominator clamp); otherwise one fully padded example would rebuild every kernel of the
    batch after each update."""
    import lotformer.sinkhorn as sinkhorn_module

    monkeypatch.setattr(sinkhorn_module, "FUSED_CPU_UPDATES", True)
    calls = []
    real = sinkhorn_module._stabilised_exp
    monkeypatch.setattr(sinkhorn_module, "_stabilised_exp",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    g = torch.Generator().manual_seed(2)
    S = torch.randn(2, 50, 4, generator=g)
    log_a = torch.full((2, 50), -math.log(50))
    log_b = torch.full((2, 4), -math.log(4))
    sinkhorn_plan(S, log_a, log_b, 0.1, 25)
    with_mass = len(calls)
    calls.clear()
    log_a[1] = -math.inf
    sinkhorn_plan(S, log_a, log_b, 0.1, 25)
    assert len(calls) == with_mass
