"""Entropic optimal transport by Sinkhorn iterations on batched similarity matrices.

The problem (Cuturi, 2013, "Sinkhorn Distances"; log-domain form as in Peyre & Cuturi,
"Computational Optimal Transport", 2019, section 4.4): for a similarity matrix ``S`` of shape
``(..., n, m)``, row masses ``a`` and column masses ``b``, find the plan

    P = exp((S + f 1^T + 1 g^T) / eps)      with   P 1 = a,   P^T 1 = b,

i.e. entropic OT with cost ``-S`` and Gibbs kernel ``exp(S / eps)``. The log-domain updates are

    f = eps * log(a) - eps * LSE_j((S_ij + g_j) / eps)        (row update)
    g = eps * log(b) - eps * LSE_i((S_ij + f_i) / eps)        (column update)

and whichever update runs last makes its marginal exact. Masses may be zero (``log`` mass
``-inf``): such rows / columns get exactly zero plan entries and never produce NaN.

How it is computed (no host-device synchronisation anywhere; data-dependent control flow only
on CPU, where it costs nothing):

* All work happens on ``X = S / eps``. The first two half-updates (one of each kind) are done
  exactly in the log domain (stabilised exp passes), so arbitrarily bad initial potentials --
  e.g. a column far from every row -- are corrected in one step, as log-domain Sinkhorn does.
* After that the iterations run in the *kernel domain*: a stabilised kernel
  ``K = exp(X + g/eps - rowmax)`` (one exp pass, which is itself an exact row update absorbing
  the current column potential; for schedules that start with a row update the exact second
  update's column-stabilised kernel plays this role) and each following half-update is a batched
  matrix-vector product on scaling vectors, ``u = a / (K v)`` or ``v = b / (K^T u)``: O(n m)
  multiply-adds, no exp, no logsumexp. Potentials are carried in log form across kernel
  rebuilds, so nothing overflows. Kernel entries are floored at ``exp(-70)`` of their row
  (column) maximum in float32 (``exp(-250)`` in float64): that keeps exp and the products out of
  the subnormal range (very slow on CPUs) while leaving the potentials room to move between
  rebuilds. Denominators are clamped to the smallest normal number so that an underflowed line
  gives a finite potential.
* When the kernel is rebuilt. On CPU without autograd (the forward pass of the default
  ``"implicit"`` mode) the updates run in a fused numba kernel (:mod:`lotformer.cpu_kernels`: a
  row update and the following column update are one pass over the kernel) that checks after
  every update how far the scalings have moved since the kernel was built; an update that moves
  one beyond ``exp(+-20)`` (float32; ``exp(+-110)`` float64: floored entries then stay below
  ``exp(-30)`` of their line's maximum) is not kept, and the kernel is rebuilt stabilised for
  that update, which makes it exact. So the kernel is rebuilt only when needed (typically once
  per solve). Elsewhere (GPU: a data-dependent rebuild would need a host sync; autograd modes)
  it is rebuilt every ``ABSORB_EVERY`` (10) row updates on a fixed schedule. An explicit
  ``absorb_every`` caps the row updates per kernel on both paths.
* The LAST half-update is always done exactly in the log domain (one stabilised softmax over the
  n x m matrix), so that marginal is exact (to rounding) at any iteration count and even in
  extreme regimes (tiny ``eps``, huge similarities). Plan entries below ``exp(-35)`` of their
  row (column) maximum are raised to that floor (float32; negligible mass, keeps the backward
  pass out of the subnormal range).

Accuracy: the iterates equal those of textbook log-domain Sinkhorn (same start f = 0 and order as
POT's ``sinkhorn_log``) up to float rounding as long as the potentials move by less than about
``70 * eps`` between kernel rebuilds (on the fixed schedule; the drift check enforces it).
Measured in float32 against float64 log-domain iterates (max plan error relative to the
largest entry, 25-60 iterations, with a pivot and a token far from everything): <= 2e-5 when
``S / eps`` has a spread of a few hundred; at spreads of thousands (Sinkhorn then is far from
converged) mostly 1e-5 to 1e-4, worst case seen ~1e-2.
Outputs stay finite and the last marginal exact in every regime.

Gradients (``grad_mode`` of :func:`sinkhorn_plan`):

* ``"implicit"`` (default): the solve runs without autograd; the backward pass applies the
  implicit-function-theorem formulas at the returned plan (an r x r linear system per problem,
  r = the smaller side). Exact at convergence, an approximation after finitely many iterations.
  Saves only the plan: memory does not grow with the iteration count.
* ``"recompute"``: autograd through the unrolled iterations with activation checkpointing per
  kernel block: the exact gradient of the computed (finite-iteration) plan, memory flat in
  the iteration count, one extra forward pass over ``"unrolled"``.
* ``"unrolled"``: plain autograd through the iterations: the same exact gradient as
  ``"recompute"``; memory grows with the number of kernel blocks.
  (Both are several times slower than ``"implicit"``: the backward of every matrix-vector
  product is an n x m outer product.)

Internal arithmetic is float64 for float64 inputs and float32 otherwise (half-precision inputs
are upcast; autocast is disabled inside).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ABSORB_EVERY",
    "GRAD_MODES",
    "check_solver_options",
    "compute_dtype",
    "half_update_schedule",
    "implicit_backward",
    "log_sinkhorn",
    "sinkhorn_plan",
    "sinkhorn_plan_scaled",
]

GRAD_MODES = ("implicit", "recompute", "unrolled")
ABSORB_EVERY = 10  # row updates between two kernel rebuilds
FUSED_CPU_UPDATES = True  # CPU, no autograd: scaling updates by the numba kernel (cpu_kernels.py)
_cpu_kernels = None  # lotformer.cpu_kernels, imported on first use (False: unavailable)

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solver (and every attention backend) computes in: float64 for float64
    input, float32 for everything else (half-precision inputs are upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _floor_exponent(dtype: torch.dtype) -> float:
    """Working-kernel entries are floored at exp(-floor) of their row (column) maximum."""
    return 250.0 if dtype == torch.float64 else 70.0


def _plan_floor_exponent(dtype: torch.dtype) -> float:
    """Floor of the returned plan, relative to the row (column) maximum: the lost mass is
    negligible (< m e^-35 relative) and keeps products in the backward pass out of the subnormal
    range."""
    return 250.0 if dtype == torch.float64 else 35.0


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    """log(x) with log(0) = -inf and a zero (not NaN) gradient at x = 0."""
    pos = x > 0
    return torch.where(pos, torch.log(torch.where(pos, x, torch.ones_like(x))),
                       torch.full_like(x, _NEG_INF))


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def half_update_schedule(first: str, n_half: int) -> list[str]:
    """The sequence of half-updates: ``first`` then alternating, ``n_half`` in all."""
    if first not in ("row", "col"):
        raise ValueError(f"first must be 'row' or 'col', got {first!r}")
    other = "col" if first == "row" else "row"
    return [first if t % 2 == 0 else other for t in range(n_half)]


def _blocks(seq: Sequence[str], absorb_every: int) -> list[tuple[str, ...]]:
    """Group the iterated half-updates into blocks, each a unit of work on one fresh kernel.

    The first two half-updates of the schedule are always exact log-domain updates, so the
    initial potentials can be arbitrarily far off (e.g. a pivot far from every token) and are
    corrected in one step, as in log-domain Sinkhorn. Block kinds:

    * ``("col*",)``: the exact first column update (schedule starting with a column update);
      its column-stabilised kernel is discarded (the row potential is still the arbitrary start).
    * ``("row", ...)``: an exact row update that builds a row-stabilised kernel absorbing the
      current column potential, followed by scaling half-updates on that kernel.
    * ``("col", ...)``: the exact second half-update of a schedule starting with a row update: a
      column-stabilised kernel absorbing the (exact) row potential, then scaling half-updates.

    A new row block starts every ``absorb_every`` row updates.
    """
    blocks: list[tuple[str, ...]] = []
    current: list[str] | None = None
    rows_in_block = 0

    def close():
        if current:
            blocks.append(tuple(current))

    for t, kind in enumerate(seq):
        if kind == "col":
            if t == 0:
                blocks.append(("col*",))
            elif t == 1:
                close()
                current, rows_in_block = ["col"], 0
            else:
                current.append("col")
        else:
            if current is None or rows_in_block >= absorb_every:
                close()
                current, rows_in_block = [], 0
            current.append("row")
            rows_in_block += 1
    close()
    return blocks


# --------------------------------------------------------------------------------------------
# the solver on X = S / eps, flattened to (Bf, n, m)
# --------------------------------------------------------------------------------------------
def _matvec(K: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """K v for K (Bf, n, m) and v (Bf, 1, m) as a (Bf, n, 1) tensor.

    For m >= 16 it is computed as v K^T (a (1, n) output row), which streams K once with long
    contiguous accumulations -- on CPU BLAS about 1.5x faster than the (n, 1) column form.
    """
    Bf, n, m = K.shape
    if m >= 16:
        row = torch.bmm(v, K.transpose(-1, -2), out=None if out is None else out.view(Bf, 1, n))
        return row.view(Bf, n, 1)
    return torch.bmm(K, v.transpose(-1, -2), out=out)


def _stabilised_exp(X: torch.Tensor, pot: torch.Tensor, dim: int, floor: float,
                    out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """E = exp(max(X + pot - mx, -floor)) with mx = max of X + pot along ``dim``. Returns (E, mx).

    pot is (Bf, 1, m) for dim=-1 (row-stabilised) or (Bf, n, 1) for dim=-2 (column-stabilised),
    or None for an all-zero potential.
    With ``out`` given (no autograd) the result is built in that buffer, in place.
    """
    if out is not None:
        if pot is None:  # an all-zero potential: one pass less
            mx = _finite_or_zero(X.amax(dim=dim, keepdim=True))
            E = torch.sub(X, mx, out=out)
        else:
            E = torch.add(X, pot, out=out)
            mx = _finite_or_zero(E.amax(dim=dim, keepdim=True))
            E.sub_(mx)
        E.clamp_(min=-floor).exp_()
        return E, mx
    Z = X if pot is None else X + pot
    mx = _finite_or_zero(Z.amax(dim=dim, keepdim=True))
    return torch.exp(torch.clamp(Z - mx, min=-floor)), mx


def _exact_col_update(X, log_b, F, floor, buf):
    """G = log b - LSE_i(X_ij + F_i), exactly in the log domain (column-stabilised exp pass)."""
    E, mx = _stabilised_exp(X, F, -2, floor, buf)  # (Bf, n, m), (Bf, 1, m)
    G = log_b - mx - torch.log(E.sum(dim=-2, keepdim=True))
    return torch.where(log_b > _NEG_INF, G, torch.full_like(G, _NEG_INF))


def _kernel_block(X, log_a, log_b, F, G, types, floor, buf, fused=None):
    """One fresh kernel, an exact first update, then scaling updates on that kernel.

    types[0] == "row": the kernel is row-stabilised and absorbs G,
        K = exp(X + G - alpha) (floored), P = u K v with F = log(u) - alpha, G = G_abs + log(v).
    types[0] == "col": the kernel is column-stabilised and absorbs F,
        K = exp(X + F - gamma) (floored), P = u K v with F = F_abs + log(u), G = log(v) - gamma.
    The first update on a fresh kernel is exact (its normalisation is the log-domain update).
    With ``buf`` given (no autograd) the kernel lives in ``buf`` and the loop reuses buffers;
    ``fused`` (CPU, with ``buf``) is the numba kernel, which may stop early at its drift bound.
    Returns (F, G, K, number of the half-updates in ``types`` done).
    """
    tiny = torch.finfo(X.dtype).tiny
    a = torch.exp(log_a)  # (Bf, n, 1)
    b = torch.exp(log_b)  # (Bf, 1, m)
    by_rows = types[0] == "row"
    if by_rows:
        K, alpha = _stabilised_exp(X, G, -1, floor, buf)  # (Bf, n, m), (Bf, n, 1)
        v = _live(G, b)  # (Bf, 1, m): 1 on live columns, 0 on zero-mass ones
        u = torch.zeros_like(a) if buf is not None else None
    else:
        K, gamma = _stabilised_exp(X, F, -2, floor, buf)  # (Bf, n, m), (Bf, 1, m)
        u = _live(F, a)  # (Bf, n, 1)
        v = torch.zeros_like(b) if buf is not None else None
    if fused is not None:
        types = types[:fused(K, a, b, u, v, types, _drift_bound(X.dtype))]  # the updates kept
    elif buf is not None:
        # hot loop: preallocated outputs and precomputed views, 6 kernels per iteration
        Bf, n, m = K.shape
        rs = torch.empty_like(a)  # (Bf, n, 1)
        cs = torch.empty_like(b)  # (Bf, 1, m)
        uT = u.transpose(-1, -2)  # (Bf, 1, n) view
        if m >= 16:  # K v as v K^T: see _matvec
            rs_out, lhs, rhs = rs.view(Bf, 1, n), v, K.transpose(-1, -2)
        else:
            rs_out, lhs, rhs = rs, K, v.transpose(-1, -2)
        for t in types:
            if t == "row":
                torch.bmm(lhs, rhs, out=rs_out)  # K v
                torch.div(a, rs.clamp_min_(tiny), out=u)
            else:
                torch.bmm(uT, K, out=cs)  # (K^T u)^T
                torch.div(b, cs.clamp_min_(tiny), out=v)
    else:
        for t in types:
            if t == "row":
                u = a / _matvec(K, v).clamp_min(tiny)
            else:
                v = b / torch.bmm(u.transpose(-1, -2), K).clamp_min(tiny)
    if by_rows:
        F_new = _safe_log(u) - alpha
        G_new = _add_pot(G, _safe_log(v)) if "col" in types else G
    else:
        F_new = _add_pot(F, _safe_log(u)) if "row" in types else F
        G_new = _safe_log(v) - gamma
        G_new = torch.where(log_b > _NEG_INF, G_new, torch.full_like(G_new, _NEG_INF))
    return F_new, G_new, K, len(types)


def _drift_bound(dtype: torch.dtype) -> float:
    """How far (in log) the scalings may move on one kernel: its floored entries (exp(-floor)
    of their line's maximum) then stay below exp(-30) of it."""
    return (_floor_exponent(dtype) - 30.0) / 2


def _fused_cpu_updates():
    """The fused numba kernel for the scaling updates on CPU, or None: ``FUSED_CPU_UPDATES`` off,
    a process forked after the kernel ran (its OpenMP runtime is not fork-safe), or numba not
    importable (warned once). The BLAS loop runs instead."""
    global _cpu_kernels
    if not FUSED_CPU_UPDATES:
        return None
    if _cpu_kernels is None:
        try:
            import lotformer.cpu_kernels as cpu_kernels
        except ImportError as err:  # pragma: no cover - numba is a dependency
            warnings.warn(f"numba is not importable ({err}); the CPU Sinkhorn solver falls back "
                          "to BLAS matrix-vector products (about 1.5x slower)")
            cpu_kernels = False
        _cpu_kernels = cpu_kernels
    if not _cpu_kernels or not _cpu_kernels.usable_in_this_process():
        return None
    return _cpu_kernels.scaling_updates


def _live(pot: torch.Tensor | None, mass: torch.Tensor) -> torch.Tensor:
    """1 where the potential is finite (line with mass), 0 on zero-mass lines; all ones for None."""
    if pot is None:
        return torch.ones_like(mass)
    return (pot > _NEG_INF).to(mass.dtype)


def _add_pot(pot: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
    return delta if pot is None else pot + delta


def _run_block(X, log_a, log_b, F, G, block, floor, buf, fused=None):
    """Returns (F, G, buffer, number of the block's half-updates done)."""
    if block == ("col*",):
        return F, _exact_col_update(X, log_b, F, floor, buf), buf, 1
    return _kernel_block(X, log_a, log_b, F, G, block, floor, buf, fused)


def _final_plan(X: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor,
                F: torch.Tensor | None, G: torch.Tensor | None, last: str, floor: float,
                mask_other_side: bool, buf: torch.Tensor | None) -> torch.Tensor:
    """The exact log-domain last half-update, returning the plan (Bf, n, m).

    last == "row": P = a * softmax_j(X + G)  (row sums exactly a).
    last == "col": P = b * softmax_i(X + F)  (column sums exactly b).
    Entries are floored at exp(-floor) of the row (column) maximum before normalisation; the
    other side's zero-mass lines are zeroed explicitly when ``mask_other_side``.
    """
    if last == "row":
        pot, dim, mass_log, other_log = G, -1, log_a, log_b
    else:
        pot, dim, mass_log, other_log = F, -2, log_b, log_a
    E, _ = _stabilised_exp(X, pot, dim, floor, buf)
    scale = torch.exp(mass_log) / E.sum(dim=dim, keepdim=True)
    live = (other_log > _NEG_INF).to(E.dtype) if mask_other_side else None
    if buf is not None:
        E.mul_(scale)
        if live is not None:
            E.mul_(live)
        return E
    P = E * scale
    return P * live if live is not None else P


def _initial_potentials(log_a: torch.Tensor, log_b: torch.Tensor, zero_rows: bool,
                        zero_cols: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """f = 0, g = 0 on lines with mass, -inf on zero-mass lines (None: all lines have mass)."""
    F0 = torch.zeros_like(log_a).masked_fill(log_a == _NEG_INF, _NEG_INF) if zero_rows else None
    G0 = torch.zeros_like(log_b).masked_fill(log_b == _NEG_INF, _NEG_INF) if zero_cols else None
    return (None if F0 is None else F0.detach()), (None if G0 is None else G0.detach())


def _block_potentials(X, log_a, log_b, F, G, block, floor):
    F, G, _, _ = _run_block(X, log_a, log_b, F, G, block, floor, None)
    return F, G


def _solve_potentials(X, log_a, log_b, seq, absorb_every, floor, zero_rows, zero_cols, *,
                      fast: bool, use_checkpoint: bool = False):
    """Run all but the last half-update; returns (F, G, n x m scratch buffer or None).

    A potential that is still the all-zero start is returned as None.
    """
    F, G = _initial_potentials(log_a, log_b, zero_rows, zero_cols)
    buf = torch.empty_like(X) if fast else None
    fused = _fused_cpu_updates() if fast and X.device.type == "cpu" else None
    if absorb_every is None:  # automatic: drift-bounded blocks where the drift is checked
        absorb_every = max(len(seq), 1) if fused is not None else ABSORB_EVERY
    blocks = _blocks(seq, absorb_every)
    while blocks:
        block = blocks.pop(0)
        if fast:
            F, G, buf, done = _run_block(X, log_a, log_b, F, G, block, floor, buf, fused)
            if done < len(block):  # stopped at the drift bound: the rest on a fresh kernel
                blocks.insert(0, block[done:])
        elif use_checkpoint:
            F, G = checkpoint(_block_potentials, X, log_a, log_b, F, G, block, floor,
                              use_reentrant=False)
        else:
            F, G = _block_potentials(X, log_a, log_b, F, G, block, floor)
    return F, G, buf


def _plan_fast(X, log_a, log_b, first, n_half, absorb_every, zero_rows, zero_cols):
    """Forward without autograd, in place in one reusable n x m buffer."""
    seq = half_update_schedule(first, n_half)
    F, G, buf = _solve_potentials(X, log_a, log_b, seq[:-1], absorb_every,
                                  _floor_exponent(X.dtype), zero_rows, zero_cols, fast=True)
    mask_other = zero_cols if seq[-1] == "row" else zero_rows
    return _final_plan(X, log_a, log_b, F, G, seq[-1], _plan_floor_exponent(X.dtype),
                       mask_other, buf)


def _plan_autograd(X, log_a, log_b, first, n_half, absorb_every, zero_rows, zero_cols,
                   use_checkpoint):
    seq = half_update_schedule(first, n_half)
    F, G, _ = _solve_potentials(X, log_a, log_b, seq[:-1], absorb_every, _floor_exponent(X.dtype),
                                zero_rows, zero_cols, fast=False, use_checkpoint=use_checkpoint)
    mask_other = zero_cols if seq[-1] == "row" else zero_rows
    return _final_plan(X, log_a, log_b, F, G, seq[-1], _plan_floor_exponent(X.dtype),
                       mask_other, None)


# --------------------------------------------------------------------------------------------
# implicit differentiation
# --------------------------------------------------------------------------------------------
def implicit_backward(P: torch.Tensor, dP, eliminate_rows: bool,
                      exact_rows: torch.Tensor | None = None,
                      exact_cols: torch.Tensor | None = None,
                      buf: torch.Tensor | None = None):
    """Adjoint of the entropic plan at (approximately) its fixed point: the backward pass of
    ``grad_mode="implicit"``, public for callers that fuse it into their own autograd node (LOT
    attention does). P (Bf, n, m) is a flattened batch of plans; ``eliminate_rows`` says which
    side the linear system eliminates (True when n >= m: the system is then m x m).

    For P = exp(X + F + G) with P 1 = a, P^T 1 = b and upstream dP = dL/dP, H = dP * P:
    dL/dX = P * (dP - alpha 1^T - 1 beta^T), dL/da = alpha, dL/db = beta, where
    diag(a) alpha + P beta = H 1 and P^T alpha + diag(b) beta = H^T 1. The longer side is
    eliminated, alpha = (H 1 - P beta) / a, leaving the (short x short) system
    (diag(b) - P^T diag(1/a) P) beta = H^T 1 - P^T (H 1 / a); it is singular along the constant
    shift (alpha, beta) -> (alpha + c, beta - c), which a gauge term c 1 1^T removes (it selects
    1^T beta = 0) together with a tiny ridge. The marginals used are the plan's actual ones, which
    keeps that matrix positive semi-definite at any iteration count; zero-mass lines drop out.
    ``exact_rows`` (Bf, n) may pass the row sums when they are known to be exact (the last update
    was a row update), saving a pass over P.
    ``dP`` is the upstream gradient, or a function writing it into a given (Bf, n, m) tensor;
    ``buf`` an n x m scratch tensor to work in (fresh when None). dX is returned in that scratch.
    Returns (dX, alpha, beta) with alpha (Bf, n), beta (Bf, m).
    """
    if not eliminate_rows:
        dPt = (lambda out: dP(out.transpose(-1, -2))) if callable(dP) else dP.transpose(-1, -2)
        dXt, beta_t, alpha_t = implicit_backward(
            P.transpose(-1, -2), dPt, True, exact_rows=exact_cols,
            buf=None if buf is None else buf.transpose(-1, -2))
        return dXt.transpose(-1, -2), alpha_t, beta_t
    a_act = P.sum(dim=-1) if exact_rows is None else exact_rows  # (Bf, n)
    pos = a_act > 0
    inv_a = torch.where(pos, 1.0 / torch.where(pos, a_act, torch.ones_like(a_act)),
                        torch.zeros_like(a_act))  # (Bf, n)
    work = torch.mul(P, inv_a.unsqueeze(-1), out=buf)  # (Bf, n, m) = diag(1/a) P
    M = torch.bmm(work.transpose(-1, -2), P).neg_()  # (Bf, m, m) = -P^T diag(1/a) P
    if callable(dP):  # reuse the buffer: H = dP * P
        dP(work)
        H = work.mul_(P)
    else:
        H = torch.mul(dP, P, out=work)
    hr = H.sum(dim=-1)  # (Bf, n)
    hc = H.sum(dim=-2)  # (Bf, m)
    # one pass over P for both P^T (hr / a) and the actual column sums b = P^T 1
    both = torch.bmm(torch.stack((hr * inv_a, pos.to(P.dtype)), dim=-2), P)  # (Bf, 2, m)
    beta = _solve_gauged(M, hc - both[:, 0], both[:, 1])  # (Bf, m)
    alpha = (hr - _matvec(P, beta.unsqueeze(-2)).squeeze(-1)) * inv_a  # (Bf, n)
    # dX = H - P * alpha - P * beta, in place in H's buffer
    dX = H.addcmul_(P, alpha.unsqueeze(-1), value=-1.0).addcmul_(P, beta.unsqueeze(-2), value=-1.0)
    return dX, alpha, beta


def _solve_gauged(M: torch.Tensor, rhs: torch.Tensor, b_act: torch.Tensor) -> torch.Tensor:
    """beta from (diag(b) + M + ridge + c 1 1^T) beta = rhs, with M = -P^T diag(1/a) P (Bf, m, m,
    completed in place), rhs (Bf, m) and the plan's column sums b_act (Bf, m).

    The gauge term c 1 1^T (c = mean(b) / m) selects 1^T beta = 0 along the system's null
    direction; the ridge is tiny. An empty problem (a plan without mass: every row or every
    column has zero mass) has the zero matrix as its system. It is replaced explicitly by the
    identity with a zero right-hand side (beta = 0, and then alpha = 0, dX = 0) rather than left
    to what a LAPACK build makes of a singular solve.
    """
    m = M.shape[-1]
    empty = b_act.sum(dim=-1, keepdim=True) <= 0  # (Bf, 1)
    b_mean = torch.where(empty, torch.ones_like(b_act[:, :1]), b_act.mean(dim=-1, keepdim=True))
    ridge = (1e-12 if M.dtype == torch.float64 else 1e-6) * b_mean  # (Bf, 1)
    M.diagonal(dim1=-2, dim2=-1).add_(b_act + ridge)
    M.add_((b_mean / m).unsqueeze(-1))  # gauge: + c 1 1^T with c = mean(b) / m
    M.masked_fill_(empty.unsqueeze(-1), 0.0).diagonal(dim1=-2, dim2=-1).add_(empty.to(M.dtype))
    rhs = rhs.masked_fill(empty, 0.0)
    return torch.linalg.solve_ex(M, rhs.unsqueeze(-1), check_errors=False)[0].squeeze(-1)


class _ImplicitSinkhornPlan(torch.autograd.Function):
    """Plan from X = S / eps; backward by implicit differentiation (saves only the plan)."""

    @staticmethod
    def forward(ctx, X, log_a, log_b, first, n_half, absorb_every, zero_rows, zero_cols):
        P = _plan_fast(X, log_a, log_b, first, n_half, absorb_every, zero_rows, zero_cols)
        ctx.save_for_backward(P, log_a, log_b)
        ctx.last = half_update_schedule(first, n_half)[-1]
        return P

    @staticmethod
    @once_differentiable
    def backward(ctx, dP):
        P, log_a, log_b = ctx.saved_tensors
        n, m = P.shape[-2:]
        # the marginal of the last update is exact: use it instead of summing the plan
        exact_rows = torch.exp(log_a).squeeze(-1) if ctx.last == "row" else None
        exact_cols = torch.exp(log_b).squeeze(-2) if ctx.last == "col" else None
        dX, alpha, beta = implicit_backward(P, dP.contiguous(), eliminate_rows=n >= m,
                                             exact_rows=exact_rows, exact_cols=exact_cols)
        dlog_a = alpha.unsqueeze(-1) * torch.exp(log_a) if ctx.needs_input_grad[1] else None
        dlog_b = beta.unsqueeze(-2) * torch.exp(log_b) if ctx.needs_input_grad[2] else None
        return dX, dlog_a, dlog_b, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _prepare(X: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor):
    if X.dim() < 2:
        raise ValueError(f"expected a similarity matrix of shape (..., n, m), got {tuple(X.shape)}")
    n, m = X.shape[-2:]
    if log_a.shape[-1] != n or log_b.shape[-1] != m:
        raise ValueError(f"log_a must end in n={n} and log_b in m={m}; got log_a "
                         f"{tuple(log_a.shape)}, log_b {tuple(log_b.shape)} for S {tuple(X.shape)}")
    batch = torch.broadcast_shapes(X.shape[:-2], log_a.shape[:-1], log_b.shape[:-1])
    dt = compute_dtype(X.dtype)
    Xf = X.to(dt).expand(*batch, n, m).reshape(-1, n, m)
    la = log_a.to(dt).expand(*batch, n).reshape(-1, n, 1)
    lb = log_b.to(dt).expand(*batch, m).reshape(-1, 1, m)
    return Xf, la, lb, batch


def check_solver_options(eps: float, n_iters: int, grad_mode: str,
                         absorb_every: int | None = None) -> None:
    """The one check of the solver's options; raises ValueError saying what is wrong. The
    public entry points call it once; :func:`sinkhorn_plan_scaled` (a building block for
    callers that validated their own options, such as LOT attention) does not."""
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool)) or not (eps > 0) \
            or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if not isinstance(n_iters, int) or isinstance(n_iters, bool) or n_iters < 1:
        raise ValueError(f"n_iters must be an int >= 1, got {n_iters!r}")
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"unknown grad_mode {grad_mode!r}; valid choices: {', '.join(GRAD_MODES)}")
    if absorb_every is not None and (not isinstance(absorb_every, int) or absorb_every < 1):
        raise ValueError(f"absorb_every must be None or an int >= 1, got {absorb_every!r}")


def sinkhorn_plan_scaled(X: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, *,
                         first: str, n_half: int, grad_mode: str = "implicit",
                         absorb_every: int | None = None, zero_rows: bool = True,
                         zero_cols: bool = True) -> torch.Tensor:
    """Entropic plan from a pre-scaled similarity ``X = S / eps`` with an explicit schedule.

    Runs ``n_half`` half-updates, starting with ``first`` ("row" or "col") and alternating; the
    last one is exact. X (..., n, m), log_a (..., n), log_b (..., m) (broadcastable batch dims).
    ``zero_rows=False`` / ``zero_cols=False`` are speed hints: the caller guarantees that no row /
    column has zero mass (``log_a`` / ``log_b`` has no -inf); with the default True any line may.
    Returns P (batch..., n, m) in float32 (float64 for float64 input), autocast disabled.
    The options are not checked here: validate them once with :func:`check_solver_options`
    (``n_iters=n_half``) where they enter.
    """
    with torch.autocast(device_type=X.device.type, enabled=False):
        Xf, la, lb, batch = _prepare(X, log_a, log_b)
        needs_grad = torch.is_grad_enabled() and (Xf.requires_grad or la.requires_grad
                                                  or lb.requires_grad)
        if not needs_grad:
            with torch.no_grad():
                P = _plan_fast(Xf, la, lb, first, n_half, absorb_every, zero_rows, zero_cols)
        elif grad_mode == "implicit":
            P = _ImplicitSinkhornPlan.apply(Xf, la, lb, first, n_half, absorb_every, zero_rows,
                                            zero_cols)
        else:
            P = _plan_autograd(Xf, la, lb, first, n_half, absorb_every, zero_rows, zero_cols,
                               use_checkpoint=grad_mode == "recompute")
        return P.reshape(*batch, *P.shape[-2:])


def sinkhorn_plan(S: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, eps: float,
                  n_iters: int, *, last: str = "row", grad_mode: str = "implicit",
                  absorb_every: int | None = None) -> torch.Tensor:
    """Differentiable entropic plan P (..., n, m) for similarity S, ``n_iters`` full iterations.

    ``last="row"``: each iteration is a column update then a row update (starting from f = 0, as
    POT's ``sinkhorn_log``), so row sums equal ``a`` exactly. ``last="col"``: row then column
    update from g = 0 (the transpose problem), column sums exact. ``grad_mode`` and
    ``absorb_every`` (None: automatic) as in the module docstring.
    """
    check_solver_options(eps, n_iters, grad_mode, absorb_every)
    if last not in ("row", "col"):
        raise ValueError(f"last must be 'row' or 'col', got {last!r}")
    first = "col" if last == "row" else "row"
    X = S.to(compute_dtype(S.dtype)) / eps  # upcast before dividing (bf16 / fp16 inputs)
    return sinkhorn_plan_scaled(X, log_a, log_b, first=first, n_half=2 * n_iters,
                                grad_mode=grad_mode, absorb_every=absorb_every)


def log_sinkhorn(S: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, eps: float,
                 n_iters: int, *, last: str = "row",
                 absorb_every: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sinkhorn potentials (f, g) for similarity S (..., n, m) and log-masses (..., n), (..., m).

    Each of the ``n_iters`` iterations is a column update then a row update (from f = 0 on rows
    with mass), so with ``last="row"`` the plan ``exp((S + f[..., :, None] + g[..., None, :]) /
    eps)`` has row sums exactly ``a`` at any ``n_iters >= 1``; ``last="col"`` solves the transpose
    order (row then column update from g = 0). Zero-mass rows / columns get potential -inf.
    The potentials are computed without autograd (use :func:`sinkhorn_plan` for gradients) and are
    returned in float32 (float64 for float64 input), in units of S.
    """
    check_solver_options(eps, n_iters, "implicit", absorb_every)
    if last not in ("row", "col"):
        raise ValueError(f"last must be 'row' or 'col', got {last!r}")
    first = "col" if last == "row" else "row"
    with torch.no_grad(), torch.autocast(device_type=S.device.type, enabled=False):
        Xf, la, lb, batch = _prepare(S.to(compute_dtype(S.dtype)) / eps, log_a, log_b)
        floor = _floor_exponent(Xf.dtype)
        seq = half_update_schedule(first, 2 * n_iters)
        F, G, _ = _solve_potentials(Xf, la, lb, seq[:-1], absorb_every, floor, True, True,
                                    fast=True)
        F = torch.zeros_like(la) if F is None else F
        G = torch.zeros_like(lb) if G is None else G
        # exact last update in the log domain
        if last == "row":
            F = la - torch.logsumexp(Xf + G, dim=-1, keepdim=True)
            F = torch.where(la > _NEG_INF, F, torch.full_like(F, _NEG_INF))
        else:
            G = lb - torch.logsumexp(Xf + F, dim=-2, keepdim=True)
            G = torch.where(lb > _NEG_INF, G, torch.full_like(G, _NEG_INF))
        n, m = Xf.shape[-2:]
        return (eps * F).reshape(*batch, n), (eps * G).reshape(*batch, m)
