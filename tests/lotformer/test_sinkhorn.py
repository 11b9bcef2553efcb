"""Tests of the batched Sinkhorn solver (lotformer/sinkhorn.py)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

import lotformer.sinkhorn as sinkhorn_module
from lotformer.sinkhorn import (
    _blocks,
    half_update_schedule,
    log_sinkhorn,
    sinkhorn_plan,
    sinkhorn_plan_scaled,
)
from tests.helpers import saved_bytes

F64 = torch.float64


def _problem(batch=2, n=7, m=3, scale=1.0, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(batch, n, m, generator=g, dtype=dtype) * scale
    log_a = torch.log_softmax(torch.randn(batch, n, generator=g, dtype=dtype), -1)
    log_b = torch.log_softmax(torch.randn(batch, m, generator=g, dtype=dtype), -1)
    return S, log_a, log_b


def _log_domain_reference(S, log_a, log_b, eps, n_iters, last="row"):
    """Textbook log-domain Sinkhorn in float64 (column then row update from f = 0)."""
    S, log_a, log_b = S.double(), log_a.double(), log_b.double()
    f = torch.where(log_a > -math.inf, 0.0, -math.inf).to(F64)
    g = torch.where(log_b > -math.inf, 0.0, -math.inf).to(F64)
    for _ in range(n_iters):
        if last == "row":
            g = eps * log_b - eps * torch.logsumexp((S + f[..., :, None]) / eps, dim=-2)
            f = eps * log_a - eps * torch.logsumexp((S + g[..., None, :]) / eps, dim=-1)
        else:
            f = eps * log_a - eps * torch.logsumexp((S + g[..., None, :]) / eps, dim=-1)
            g = eps * log_b - eps * torch.logsumexp((S + f[..., :, None]) / eps, dim=-2)
    P = torch.exp((S + f[..., :, None] + g[..., None, :]) / eps)
    return torch.nan_to_num(P, nan=0.0)


# ---------------------------------------------------------------------------------------------
# agreement with POT and with the textbook log-domain iteration
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_iters", [1, 3])
def test_iterates_match_pot_sinkhorn_log(n_iters):
    # Same start (f = 0) and order (column then row update) as POT's sinkhorn_log: iterate-exact.
    S, log_a, log_b = _problem()
    eps = 0.5
    P = sinkhorn_plan(S, log_a, log_b, eps, n_iters)
    for i in range(S.shape[0]):
        with pytest.warns(UserWarning):  # POT warns that it did not converge: expected here
            P_pot = ot.sinkhorn(log_a[i].exp().numpy(), log_b[i].exp().numpy(), -S[i].numpy(),
                                eps, method="sinkhorn_log", numItermax=n_iters, stopThr=0.0)
        np.testing.assert_allclose(P[i].numpy(), P_pot, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["sinkhorn_log", "sinkhorn_stabilized"])
@pytest.mark.parametrize("last", ["row", "col"])
def test_converged_plan_matches_pot(method, last):
    S, log_a, log_b = _problem(batch=3, n=9, m=4, scale=2.0, seed=1)
    eps = 0.3
    P = sinkhorn_plan(S, log_a, log_b, eps, 400, last=last)
    for i in range(S.shape[0]):
        P_pot = ot.sinkhorn(log_a[i].exp().numpy(), log_b[i].exp().numpy(), -S[i].numpy(), eps,
                            method=method, numItermax=20000, stopThr=1e-15)
        np.testing.assert_allclose(P[i].numpy(), P_pot, atol=1e-9, rtol=0)


def test_float32_matches_pot_once_converged():
    S, log_a, log_b = _problem(batch=2, n=50, m=6, scale=0.5, seed=2, dtype=torch.float32)
    eps = 0.2
    P = sinkhorn_plan(S, log_a, log_b, eps, 300)
    assert P.dtype == torch.float32
    for i in range(2):
        a, b = log_a[i].double().exp(), log_b[i].double().exp()
        P_pot = ot.sinkhorn((a / a.sum()).numpy(), (b / b.sum()).numpy(), -S[i].double().numpy(),
                            eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-12)
        np.testing.assert_allclose(P[i].double().numpy(), P_pot, atol=1e-5 * P_pot.max(), rtol=0)


@pytest.mark.parametrize("last", ["row", "col"])
def test_potentials_reproduce_the_plan(last):
    S, log_a, log_b = _problem(seed=3)
    eps = 0.4
    f, g = log_sinkhorn(S, log_a, log_b, eps, 7, last=last)
    assert f.shape == log_a.shape and g.shape == log_b.shape
    P_pot = torch.exp((S + f[..., :, None] + g[..., None, :]) / eps)
    torch.testing.assert_close(P_pot, sinkhorn_plan(S, log_a, log_b, eps, 7, last=last),
                               atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(P_pot, _log_domain_reference(S, log_a, log_b, eps, 7, last=last),
                               atol=1e-14, rtol=1e-12)


@pytest.mark.parametrize("scale, n_iters, last", [(3.0, 2, "row"), (3.0, 25, "row"),
                                                  (3.0, 150, "row"), (30.0, 25, "row"),
                                                  (3.0, 25, "col"), (10.0, 25, "col")])
@pytest.mark.parametrize("fused", [True, False], ids=["fused-cpu-kernel", "blas-loop"])
def test_wide_float32_problem_follows_log_domain_iterates(monkeypatch, scale, n_iters, last,
                                                          fused):
    # Similarity spreads of hundreds to thousands in S/eps, a pivot far from every token ("dead"
    # column), a token far from every pivot and uneven pivot masses: the kernel floor and the
    # re-builds are active, yet the float32 iterates must follow exact float64 log-domain
    # Sinkhorn step by step (not only at convergence). Both CPU paths: the fused kernel with
    # drift-bounded blocks and the BLAS loop with a rebuild every ABSORB_EVERY row updates.
    monkeypatch.setattr(sinkhorn_module, "FUSED_CPU_UPDATES", fused)
    g = torch.Generator().manual_seed(4)
    S = torch.randn(2, 300, 8, generator=g) * scale
    S[:, :, 0] -= 10 * scale
    S[:, 5, :] -= 13 * scale
    log_a = torch.full((2, 300), -math.log(300.0))
    log_b = torch.log_softmax(torch.randn(2, 8, generator=g), -1)
    P = sinkhorn_plan(S, log_a, log_b, 0.1, n_iters, last=last)
    P_ref = _log_domain_reference(S, log_a, log_b, 0.1, n_iters, last=last)
    assert torch.isfinite(P).all()
    torch.testing.assert_close(P.double(), P_ref, atol=1e-4 * P_ref.max().item(), rtol=0)
    if n_iters >= 25 and last == "row":
        assert P[:, :, 0].sum() > 0.5 * log_b[:, 0].exp().sum()  # the far pivot gets its mass


@pytest.mark.parametrize("last", ["row", "col"])
def test_many_columns_layout(last):
    # m >= 16 takes the transposed matrix-vector layout (K v computed as v K^T)
    S, log_a, log_b = _problem(batch=2, n=40, m=20, scale=1.0, seed=14)
    S.requires_grad_()
    theta = log_b.detach().clone().requires_grad_()
    W = torch.randn(2, 40, 20, dtype=F64, generator=torch.Generator().manual_seed(3))
    for iters in (3, 80):
        ref = _log_domain_reference(S.detach(), log_a, log_b, 1.0, iters, last=last)
        grads = {}
        for mode in ("implicit", "unrolled"):
            P = sinkhorn_plan(S, log_a, torch.log_softmax(theta, -1), 1.0, iters, last=last,
                              grad_mode=mode)
            torch.testing.assert_close(P, ref, atol=1e-14, rtol=1e-11)
            grads[mode] = torch.autograd.grad((P * W).sum(), (S, theta))
    # converged (80 iterations at eps = 1): the implicit gradient equals the unrolled one
    for gi, gu in zip(grads["implicit"], grads["unrolled"]):
        torch.testing.assert_close(gi, gu, atol=1e-10, rtol=1e-8)


def test_absorption_schedule_does_not_change_the_math():
    S, log_a, log_b = _problem(batch=2, n=20, m=5, scale=1.0, seed=5)
    P1 = sinkhorn_plan(S, log_a, log_b, 0.2, 13, absorb_every=1)
    P2 = sinkhorn_plan(S, log_a, log_b, 0.2, 13, absorb_every=1000)
    torch.testing.assert_close(P1, P2, atol=1e-14, rtol=1e-11)


def _blas_updates(K, a, b, u, v, kinds):
    """Reference scaling updates, one BLAS matrix-vector product each (float64)."""
    for kind in kinds:
        if kind == "row":
            u = a / (K @ v.transpose(-1, -2))
        else:
            v = b / (u.transpose(-1, -2) @ K)
    return u, v


def test_fused_cpu_updates_match_blas_and_stop_at_the_drift_bound():
    cpu_kernels = pytest.importorskip("lotformer.cpu_kernels")  # numba is a dependency
    g = torch.Generator().manual_seed(12)
    K = torch.rand(3, 50, 6, generator=g, dtype=F64) + 0.1  # (P, n, m), no line far off
    a = torch.full((3, 50, 1), 1 / 50, dtype=F64)
    b = torch.softmax(torch.randn(3, 1, 6, generator=g, dtype=F64), -1)
    b[1, 0, 2] = 0.0  # a zero-mass column stays at exactly 0
    kinds = ("row", "col") * 20 + ("row",)

    def start():  # u to be computed; v = 1 on live columns, 0 on the zero-mass one
        return torch.zeros_like(a), (b > 0).to(F64)

    u, v = start()
    assert cpu_kernels.scaling_updates(K, a, b, u, v, kinds, drift=20.0) == len(kinds)
    u_ref, v_ref = _blas_updates(K, a, b, None, start()[1], kinds)
    torch.testing.assert_close(u, u_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=0)
    assert v[1, 0, 2] == 0

    # Column 0 of problem 1 is far from every row (its entries are at the kernel floor): its first
    # column update jumps far out of the drift bound and is not kept; problems 0 and 2, which could
    # go on, are rolled back to the same point: only the first (row) update is kept.
    K[1, :, 0] = math.exp(-70)
    u, v = start()
    assert cpu_kernels.scaling_updates(K, a, b, u, v, kinds, drift=20.0) == 1
    u_ref, _ = _blas_updates(K, a, b, None, start()[1], ("row",))
    torch.testing.assert_close(u, u_ref, rtol=1e-12, atol=0)
    assert torch.equal(v, start()[1])
    # a loose enough bound keeps going
    u, v = start()
    assert cpu_kernels.scaling_updates(K, a, b, u, v, kinds, drift=200.0) == len(kinds)


def test_forked_child_solves_without_the_parallel_kernel():
    # numba's parallel kernel aborts a process forked after it ran (GNU OpenMP is not fork-safe);
    # a forked child (e.g. a fork-started worker) must take the BLAS loop and get the same plan.
    import multiprocessing

    S, log_a, log_b = _problem(batch=4, n=200, m=16, seed=13, dtype=torch.float32)
    P = sinkhorn_plan(S, log_a, log_b, 0.1, 10)  # runs the fused kernel in this process

    def child(queue):
        torch.set_num_threads(1)  # as DataLoader workers do
        queue.put(float((sinkhorn_plan(S, log_a, log_b, 0.1, 10) - P).abs().max()))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert queue.get(timeout=10) < 1e-6


def test_fused_kernel_leaves_torch_thread_count_as_it_was():
    """numba's OpenMP layer resets torch's thread count when it starts in a process; the fused
    kernel gives it back (before, a run that set 1 thread ran on every core after its first
    LOT call, and bitwise results changed). Needs a fresh process, so one is spawned."""
    import subprocess
    import sys

    code = ("import torch; from lotformer.sinkhorn import sinkhorn_plan\n"
            "torch.manual_seed(0); torch.set_num_threads(1)\n"
            "S = torch.randn(4, 200, 16)\n"
            "log_a = torch.full((4, 200), -math.log(200)); log_b = torch.full((4, 16), -math.log(16))\n"
            "sinkhorn_plan(S, log_a, log_b, 0.1, 10)\n"
            "import lotformer.cpu_kernels as k, os; assert k._ran_in_pid == os.getpid(), 'kernel not used'\n"
            "print(torch.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", "import math\n" + code], capture_output=True, text=True,
                         timeout=120, env=env, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]


def test_block_schedule():
    seq = half_update_schedule("col", 9)
    assert seq == ["col", "row"] * 4 + ["col"]
    # first two half-updates exact; a new kernel every 2nd row update afterwards
    assert _blocks(seq[:-1], 2) == [("col*",), ("row", "col", "row", "col"), ("row", "col", "row")]
    # starting with a row update: the exact column update keeps its kernel for what follows
    seq = half_update_schedule("row", 6)
    assert _blocks(seq[:-1], 8) == [("row",), ("col", "row", "col", "row")]
    assert _blocks(half_update_schedule("row", 9)[:-1], 2) == [
        ("row",), ("col", "row", "col", "row", "col"), ("row", "col")]


# ---------------------------------------------------------------------------------------------
# marginals and zero masses
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_iters", [1, 3, 50])
def test_last_marginal_exact_at_any_iteration_count(n_iters):
    S, log_a, log_b = _problem(n=11, m=4, scale=3.0, seed=6, dtype=torch.float32)
    P = sinkhorn_plan(S, log_a, log_b, 0.05, n_iters, last="row")
    torch.testing.assert_close(P.sum(-1), log_a.exp(), atol=1e-6, rtol=1e-5)
    P = sinkhorn_plan(S, log_a, log_b, 0.05, n_iters, last="col")
    torch.testing.assert_close(P.sum(-2), log_b.exp(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("last", ["row", "col"])
def test_zero_mass_rows_and_columns_are_exact_zeros(last):
    S, _, _ = _problem(batch=2, n=8, m=5, seed=7)
    a = torch.tensor([[1, 1, 1, 0, 1, 1, 0, 1], [1] * 8], dtype=F64)
    b = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=F64)
    log_a = torch.log(a / a.sum(-1, keepdim=True))
    log_b = torch.log(b / b.sum(-1, keepdim=True))
    P = sinkhorn_plan(S, log_a, log_b, 0.3, 300, last=last)
    assert torch.isfinite(P).all()
    assert (P[0, [3, 6]] == 0).all() and (P[0, :, 1] == 0).all() and (P[1, :, 4] == 0).all()
    f, g = log_sinkhorn(S, log_a, log_b, 0.3, 300, last=last)
    assert torch.isneginf(f[0, [3, 6]]).all() and torch.isneginf(g[0, 1]) and torch.isneginf(g[1, 4])
    # the live part equals POT on the reduced problem
    rows, cols = a[0].bool(), b[0].bool()
    P_pot = ot.sinkhorn((a[0] / a[0].sum())[rows].numpy(), (b[0] / b[0].sum())[cols].numpy(),
                        -S[0][rows][:, cols].numpy(), 0.3, method="sinkhorn_log",
                        numItermax=20000, stopThr=1e-15)
    np.testing.assert_allclose(P[0][rows][:, cols].numpy(), P_pot, atol=1e-10)


def test_extreme_regime_is_finite_with_finite_gradients():
    g = torch.Generator().manual_seed(8)
    S = (torch.randn(2, 40, 6, generator=g) * 1e5).requires_grad_()
    log_a = torch.full((2, 40), -math.log(40.0))
    log_b = torch.log_softmax(torch.randn(2, 6, generator=g), -1).requires_grad_()
    for mode in ("implicit", "recompute", "unrolled"):
        P = sinkhorn_plan(S, log_a, log_b, 1e-3, 10, grad_mode=mode)
        assert torch.isfinite(P).all()
        torch.testing.assert_close(P.sum(-1), log_a.exp(), atol=1e-7, rtol=1e-5)
        gS, gb = torch.autograd.grad((P * torch.randn_like(P)).sum(), (S, log_b))
        assert torch.isfinite(gS).all() and torch.isfinite(gb).all(), mode


def test_half_precision_input_computes_in_float32():
    S, log_a, log_b = _problem(n=9, m=3, seed=9, dtype=torch.float32)
    P16 = sinkhorn_plan(S.to(torch.bfloat16), log_a, log_b, 0.2, 5)
    assert P16.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Pac = sinkhorn_plan(S, log_a, log_b, 0.2, 5)
    assert Pac.dtype == torch.float32
    torch.testing.assert_close(Pac, sinkhorn_plan(S, log_a, log_b, 0.2, 5))


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grad_mode", ["implicit", "recompute", "unrolled"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])  # (3, 5) eliminates the column side
def test_gradcheck_plan(grad_mode, shape):
    n, m = shape
    S, log_a, log_b = _problem(batch=2, n=n, m=m, scale=0.5, seed=10)
    S.requires_grad_()
    log_b.requires_grad_()
    log_a.requires_grad_()
    iters = 200 if grad_mode == "implicit" else 4  # implicit is exact only at convergence
    W = torch.randn(2, n, m, dtype=F64, generator=torch.Generator().manual_seed(0))
    # masses are parametrised through log_softmax so that perturbed problems stay balanced
    fn = lambda S, ta, tb: sinkhorn_plan(S, torch.log_softmax(ta, -1), torch.log_softmax(tb, -1),
                                         1.0, iters, grad_mode=grad_mode) * W
    assert torch.autograd.gradcheck(fn, (S, log_a, log_b))


def test_implicit_gradient_matches_unrolled_at_convergence_and_not_before():
    S, log_a, theta_b = _problem(batch=2, n=12, m=4, scale=1.0, seed=11)
    S.requires_grad_()
    theta_b.requires_grad_()  # masses through softmax: the constant-shift gauge drops out
    W = torch.randn(2, 12, 4, dtype=F64, generator=torch.Generator().manual_seed(1))

    def grads(mode, iters):
        P = sinkhorn_plan(S, log_a, torch.log_softmax(theta_b, -1), 0.5, iters, grad_mode=mode)
        return torch.autograd.grad((P * W).sum(), (S, theta_b))

    for gi, gu in zip(grads("implicit", 300), grads("unrolled", 300)):
        torch.testing.assert_close(gi, gu, atol=1e-10, rtol=1e-8)
    # after a single iteration they differ: the test can tell the two gradients apart
    gi, gu = grads("implicit", 1)[0], grads("unrolled", 1)[0]
    assert (gi - gu).abs().max() > 1e-4


def test_recompute_gradient_equals_unrolled_exactly():
    S, log_a, log_b = _problem(batch=2, n=10, m=4, scale=2.0, seed=12)
    S.requires_grad_()
    log_b.requires_grad_()
    W = torch.randn(2, 10, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    res = {}
    for mode in ("recompute", "unrolled"):
        P = sinkhorn_plan(S, log_a, log_b, 0.1, 20, grad_mode=mode, absorb_every=3)
        res[mode] = (P, *torch.autograd.grad((P * W).sum(), (S, log_b)))
    for x, y in zip(res["recompute"], res["unrolled"]):
        torch.testing.assert_close(x, y, atol=1e-15, rtol=1e-13)


def test_saved_memory_does_not_grow_with_iterations_in_implicit_mode():
    S, log_a, log_b = _problem(batch=2, n=64, m=8, seed=13, dtype=torch.float32)
    S.requires_grad_()

    def saved(mode, iters):
        return saved_bytes(lambda: sinkhorn_plan(S, log_a, log_b, 0.1, iters, grad_mode=mode))

    assert saved("implicit", 50) == saved("implicit", 5)
    # the plain unrolled graph does grow (more absorption windows): the probe can see growth
    assert saved("unrolled", 50) > saved("unrolled", 5)


def test_bad_arguments_raise_value_error():
    S, log_a, log_b = _problem()
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        sinkhorn_plan(S, log_a, log_b, 0.0, 5)
    with pytest.raises(ValueError, match="n_iters must be an int >= 1"):
        sinkhorn_plan(S, log_a, log_b, 0.1, 0)
    with pytest.raises(ValueError, match="unknown grad_mode 'exact'; valid choices: implicit, "
                                         "recompute, unrolled"):
        sinkhorn_plan(S, log_a, log_b, 0.1, 5, grad_mode="exact")
    with pytest.raises(ValueError, match="last must be 'row' or 'col'"):
        log_sinkhorn(S, log_a, log_b, 0.1, 5, last="both")
    with pytest.raises(ValueError, match="log_a must end in n=7"):
        sinkhorn_plan(S, log_a[..., :3], log_b, 0.1, 5)
    with pytest.raises(ValueError, match="first must be 'row' or 'col'"):
        sinkhorn_plan_scaled(S, log_a, log_b, first="rows", n_half=3)
