"""Fused Triton kernels for paper-mode LOT attention with implicit gradients (GPU path).

The same computation as :class:`lotformer.lot._PaperImplicitLOT` in two kernel launches for the
forward pass and four plus a batched r x r solve and a few small torch ops for the backward
pass, instead of about a dozen small launches per Sinkhorn iteration. One program handles one
(batch, head) problem and loops over the N tokens in tiles of ``BLOCK_N`` rows; the n x r
similarity tile ``X = x zs^T`` (= S / eps) is recomputed
from the (B, H, N, D) input and the scaled pivots in every pass, so no n x r buffer is needed
while iterating. Only the r pivot potentials live across passes:

* a full iteration (a token-row update then a pivot-column update) is ONE pass over the tokens:
  per tile, F_i = log a_i - LSE_j(X_ij + G_j) (exact: the whole row is in the tile), then the
  column log-sum-exp LSE_i(X_ij + F_i) is accumulated online (running max and sum), giving
  G_j = log w_j - LSE_i(X_ij + F_i) at the end of the pass;
* everything is in the log domain, float32, with the schedule of :func:`lot._paper_plans`: P1
  runs ``n_iters`` (column, row) iterations from F = 0 and ends on its token-row update
  (P1 = a * softmax_j(X + G)), P2t runs ``n_iters`` (row, column) iterations from G = 0 and ends
  on its pivot-column update (P2t = w * softmax_i(X + F)), so A = P1 diag(n/w) P2t^T is exactly
  row-stochastic at any iteration count;
* plan entries below exp(-35) of their line maximum are raised to that floor, as in
  :func:`lotformer.sinkhorn._final_plan`; zero-mass (padded) tokens get exactly zero entries and
  a fully padded example gives zero plans (its potentials are kept finite, never NaN).

Forward: ``_p2t_kernel`` (P2t and v^T P2t in its last pass), then ``_p1_kernel`` (P1 and
out = P1 diag(col_scale) (v^T P2t)^T in its last pass). Backward (implicit differentiation, see
:func:`lotformer.sinkhorn._implicit_backward`): per problem ``_adjoint_stats_kernel`` gathers the
r x r system in one pass, torch solves it (one batched launch), ``_adjoint_grads_kernel`` forms
dX tile by tile and returns dq / dk, the pivot gradient partials and (for P2t) dv.

Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is imported) runs the same
kernels on CPU tensors; that is how the tests check them on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

__all__ = ["INTERPRETED", "lot_paper_implicit"]

INTERPRETED = bool(triton.knobs.runtime.interpret)  # kernels decorated for the interpreter
_PLAN_FLOOR = 35.0  # = lotformer.sinkhorn._plan_floor_exponent(float32)
_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# device helpers
# --------------------------------------------------------------------------------------------
@triton.jit
def _sim_tile(x_base, zT, n0, N, D, r, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              BLOCK_R: tl.constexpr):
    """X = x[n0:n0+BLOCK_N] zs^T (BLOCK_N, BLOCK_R); columns beyond r are -inf, rows beyond N
    are 0 (their mass is -inf in the log_a tile)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    x = tl.load(x_base + offs_n[:, None] * D + offs_d[None, :],
                mask=(offs_n[:, None] < N) & (offs_d[None, :] < D), other=0.0)  # (BLOCK_N, BLOCK_D)
    X = tl.dot(x, zT, input_precision="ieee")  # (BLOCK_N, BLOCK_R)
    return tl.where((tl.arange(0, BLOCK_R) < r)[None, :], X, float("-inf"))


@triton.jit
def _row_update(X, G, la):
    """Token-row update F_i = log a_i - LSE_j(X_ij + G_j) (BLOCK_N,); -inf where a_i = 0."""
    Z = X + G[None, :]
    mx = tl.max(Z, axis=1)  # finite: column 0 is live
    lse = mx + tl.log(tl.sum(tl.exp(Z - mx[:, None]), axis=1))
    return tl.where(la > float("-inf"), la - lse, float("-inf"))


@triton.jit
def _col_update(m, s, log_w, col_ok):
    """Pivot-column update G_j = log w_j - LSE_i(X_ij + F_i) from the online (m, s); an empty
    column (fully padded example) gets 0 instead of +inf, padding columns -inf."""
    G = tl.where(s > 0, log_w - m - tl.log(tl.where(s > 0, s, 1.0)), 0.0)
    return tl.where(col_ok, G, float("-inf"))


@triton.jit
def _sinkhorn_passes(x_base, la_base, zT, log_w, n_passes, N, D, r, FROM_ZERO_F: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    """``n_passes`` full iterations (row update, then column update) from G = 0, one pass over
    the tokens each. FROM_ZERO_F: the first pass starts from F = 0 instead (a schedule that
    begins with a column update). Returns (G, G before the last pass, the last pass's column
    max m and sum s), all (BLOCK_R,)."""
    col_ok = tl.arange(0, BLOCK_R) < r
    G = tl.where(col_ok, 0.0, float("-inf"))  # (BLOCK_R,)
    G_prev = G
    m = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_R,), tl.float32)
    for it in range(n_passes):
        m = tl.full((BLOCK_R,), float("-inf"), tl.float32)
        s = tl.zeros((BLOCK_R,), tl.float32)
        for n0 in range(0, N, BLOCK_N):
            X = _sim_tile(x_base, zT, n0, N, D, r, BLOCK_N, BLOCK_D, BLOCK_R)
            offs_n = n0 + tl.arange(0, BLOCK_N)
            la = tl.load(la_base + offs_n, mask=offs_n < N, other=float("-inf"))  # (BLOCK_N,)
            F = _row_update(X, G, la)
            if FROM_ZERO_F:
                F = tl.where(it == 0, tl.where(la > float("-inf"), 0.0, float("-inf")), F)
            # online column log-sum-exp of X + F: running max m, sum s relative to it
            Z = X + F[:, None]  # (BLOCK_N, BLOCK_R)
            m_new = tl.maximum(m, tl.max(Z, axis=0))
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(Z - m_ref[None, :]), axis=0)
            m = m_new
        G_prev = G
        G = _col_update(m, s, log_w, col_ok)
    return G, G_prev, m, s


@triton.jit
def _load_pivots(z_ptr, h, r, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """The scaled pivots of head h, transposed: zs[h]^T (BLOCK_D, BLOCK_R), zero-padded."""
    offs_r = tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    return tl.load(z_ptr + h * r * D + offs_r[None, :] * D + offs_d[:, None],
                   mask=(offs_r[None, :] < r) & (offs_d[:, None] < D), other=0.0)


# --------------------------------------------------------------------------------------------
# forward kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _p2t_kernel(k_ptr, z_ptr, la_ptr, lw_ptr, v_ptr, p_ptr, vtp_ptr, H, N, D, Dv, r,
                la_stride, n_iters, FLOOR: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_R: tl.constexpr):
    """P2t (N, r) = w * softmax_i(X + F) with X = k zs^T after ``n_iters`` (row, column)
    iterations from G = 0, and v^T P2t (Dv, r), for the (batch, head) problem program_id(0)."""
    pid = tl.program_id(0)
    h = pid % H
    offs_r = tl.arange(0, BLOCK_R)
    col_ok = offs_r < r
    zT = _load_pivots(z_ptr, h, r, D, BLOCK_R, BLOCK_D)  # (BLOCK_D, BLOCK_R)
    log_w = tl.load(lw_ptr + h * r + offs_r, mask=col_ok, other=0.0)  # (BLOCK_R,)
    x_base = k_ptr + pid * N * D
    la_base = la_ptr + (pid // H) * la_stride
    _, G, m, s = _sinkhorn_passes(x_base, la_base, zT, log_w, n_iters, N, D, r, False,
                                  BLOCK_N, BLOCK_D, BLOCK_R)
    # the last column update, exact: P2t = w exp(X + F - m) / s with F from the row update
    m_ref = tl.where(m == float("-inf"), 0.0, m)
    scale = tl.where(s > 0, tl.exp(log_w) / tl.where(s > 0, s, 1.0), 0.0)  # (BLOCK_R,)
    offs_dv = tl.arange(0, BLOCK_DV)
    acc = tl.zeros((BLOCK_DV, BLOCK_R), tl.float32)  # v^T P2t
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        X = _sim_tile(x_base, zT, n0, N, D, r, BLOCK_N, BLOCK_D, BLOCK_R)
        la = tl.load(la_base + offs_n, mask=offs_n < N, other=float("-inf"))
        F = _row_update(X, G, la)  # (BLOCK_N,)
        E = tl.exp(tl.maximum(X + F[:, None] - m_ref[None, :], -FLOOR)) * scale[None, :]
        live = (la > float("-inf"))[:, None] & col_ok[None, :]
        P = tl.where(live, E, 0.0)  # (BLOCK_N, BLOCK_R)
        row_ok = offs_n[:, None] < N
        tl.store(p_ptr + pid * N * r + offs_n[:, None] * r + offs_r[None, :], P,
                 mask=row_ok & col_ok[None, :])
        v = tl.load(v_ptr + pid * N * Dv + offs_n[:, None] * Dv + offs_dv[None, :],
                    mask=row_ok & (offs_dv[None, :] < Dv), other=0.0)  # (BLOCK_N, BLOCK_DV)
        acc += tl.dot(tl.trans(v), P, input_precision="ieee")
    tl.store(vtp_ptr + pid * Dv * r + offs_dv[:, None] * r + offs_r[None, :], acc,
             mask=(offs_dv[:, None] < Dv) & col_ok[None, :])


@triton.jit
def _p1_kernel(q_ptr, z_ptr, la_ptr, lw_ptr, vtp_ptr, cs_ptr, p_ptr, out_ptr, H, N, D, Dv, r,
               la_stride, n_iters, FLOOR: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_R: tl.constexpr):
    """P1 (N, r) = a * softmax_j(X + G) with X = q zs^T after ``n_iters`` (column, row)
    iterations from F = 0, and out = P1 diag(col_scale) (v^T P2t)^T (N, Dv)."""
    pid = tl.program_id(0)
    h = pid % H
    offs_r = tl.arange(0, BLOCK_R)
    col_ok = offs_r < r
    zT = _load_pivots(z_ptr, h, r, D, BLOCK_R, BLOCK_D)  # (BLOCK_D, BLOCK_R)
    log_w = tl.load(lw_ptr + h * r + offs_r, mask=col_ok, other=0.0)
    x_base = q_ptr + pid * N * D
    la_base = la_ptr + (pid // H) * la_stride
    G, _, _, _ = _sinkhorn_passes(x_base, la_base, zT, log_w, n_iters, N, D, r, True,
                                  BLOCK_N, BLOCK_D, BLOCK_R)
    offs_dv = tl.arange(0, BLOCK_DV)
    cs = tl.load(cs_ptr + pid * r + offs_r, mask=col_ok, other=0.0)  # (BLOCK_R,)
    pvT = tl.load(vtp_ptr + pid * Dv * r + offs_dv[None, :] * r + offs_r[:, None],
                  mask=col_ok[:, None] & (offs_dv[None, :] < Dv), other=0.0) * cs[:, None]
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        X = _sim_tile(x_base, zT, n0, N, D, r, BLOCK_N, BLOCK_D, BLOCK_R)
        la = tl.load(la_base + offs_n, mask=offs_n < N, other=float("-inf"))
        Z = X + G[None, :]
        mx = tl.max(Z, axis=1)
        E = tl.where(col_ok[None, :], tl.exp(tl.maximum(Z - mx[:, None], -FLOOR)), 0.0)
        P = E * (tl.exp(la) / tl.sum(E, axis=1))[:, None]  # (BLOCK_N, BLOCK_R), rows sum to a
        row_ok = offs_n[:, None] < N
        tl.store(p_ptr + pid * N * r + offs_n[:, None] * r + offs_r[None, :], P,
                 mask=row_ok & col_ok[None, :])
        out = tl.dot(P, pvT, input_precision="ieee")  # (BLOCK_N, BLOCK_DV)
        tl.store(out_ptr + pid * N * Dv + offs_n[:, None] * Dv + offs_dv[None, :], out,
                 mask=row_ok & (offs_dv[None, :] < Dv))


# --------------------------------------------------------------------------------------------
# backward kernels (implicit differentiation at the returned plan)
# --------------------------------------------------------------------------------------------
@triton.jit
def _adjoint_tile(p_base, u_base, W, n0, N, r, Dv, BLOCK_N: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr):
    """A tile of the plan P (BLOCK_N, BLOCK_R), H = dP * P with the upstream dP = U W, the row
    sums of H and 1 / (row sums of P) (0 on empty rows)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_n[:, None] < N
    P = tl.load(p_base + offs_n[:, None] * r + offs_r[None, :],
                mask=row_ok & (offs_r[None, :] < r), other=0.0)
    U = tl.load(u_base + offs_n[:, None] * Dv + offs_dv[None, :],
                mask=row_ok & (offs_dv[None, :] < Dv), other=0.0)  # (BLOCK_N, BLOCK_DV)
    Hm = tl.dot(U, W, input_precision="ieee") * P
    a = tl.sum(P, axis=1)
    inv_a = tl.where(a > 0, 1.0 / tl.where(a > 0, a, 1.0), 0.0)
    return P, Hm, tl.sum(Hm, axis=1), inv_a


@triton.jit
def _load_w(w_ptr, pid, r, Dv, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr):
    """The (Dv, r) factor W of the upstream gradient dP = U W of problem pid, zero-padded."""
    offs_r = tl.arange(0, BLOCK_R)
    offs_dv = tl.arange(0, BLOCK_DV)
    return tl.load(w_ptr + pid * Dv * r + offs_dv[:, None] * r + offs_r[None, :],
                   mask=(offs_dv[:, None] < Dv) & (offs_r[None, :] < r), other=0.0)


@triton.jit
def _adjoint_stats_kernel(p_ptr, u_ptr, w_ptr, m_ptr, rhs_ptr, b_ptr, N, r, Dv,
                          BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr):
    """One pass over a plan P (N, r): P^T diag(1/a) P (r, r), the right-hand side
    H^T 1 - P^T (H 1 / a) (r,) and the column sums b = P^T 1 (r,), a = P 1, H = (U W) * P."""
    pid = tl.program_id(0)
    W = _load_w(w_ptr, pid, r, Dv, BLOCK_R, BLOCK_DV)  # (BLOCK_DV, BLOCK_R)
    M = tl.zeros((BLOCK_R, BLOCK_R), tl.float32)
    t = tl.zeros((BLOCK_R,), tl.float32)
    hc = tl.zeros((BLOCK_R,), tl.float32)
    b = tl.zeros((BLOCK_R,), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        P, Hm, hr, inv_a = _adjoint_tile(p_ptr + pid * N * r, u_ptr + pid * N * Dv, W, n0, N, r,
                                         Dv, BLOCK_N, BLOCK_R, BLOCK_DV)
        Pa = P * inv_a[:, None]  # diag(1/a) P
        M += tl.dot(tl.trans(Pa), P, input_precision="ieee")
        t += tl.sum(Pa * hr[:, None], axis=0)
        hc += tl.sum(Hm, axis=0)
        b += tl.sum(P, axis=0)
    offs_r = tl.arange(0, BLOCK_R)
    col_ok = offs_r < r
    tl.store(m_ptr + pid * r * r + offs_r[:, None] * r + offs_r[None, :], M,
             mask=col_ok[:, None] & col_ok[None, :])
    tl.store(rhs_ptr + pid * r + offs_r, hc - t, mask=col_ok)
    tl.store(b_ptr + pid * r + offs_r, b, mask=col_ok)


@triton.jit
def _adjoint_grads_kernel(p_ptr, u_ptr, w_ptr, beta_ptr, x_ptr, z_ptr, dx_ptr, dz_ptr, dv_ptr,
                          H, N, D, Dv, r, WITH_DV: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_R: tl.constexpr):
    """dX = H - P * alpha - P * beta with alpha = (H 1 - P beta) / a, then dx = dX zs (N, D)
    and this problem's pivot gradient dX^T x (r, D); with WITH_DV also dv = P W^T (N, Dv)."""
    pid = tl.program_id(0)
    offs_r = tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    col_ok = offs_r < r
    W = _load_w(w_ptr, pid, r, Dv, BLOCK_R, BLOCK_DV)  # (BLOCK_DV, BLOCK_R)
    beta = tl.load(beta_ptr + pid * r + offs_r, mask=col_ok, other=0.0)  # (BLOCK_R,)
    z = tl.trans(_load_pivots(z_ptr, pid % H, r, D, BLOCK_R, BLOCK_D))  # (BLOCK_R, BLOCK_D)
    dz = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        P, Hm, hr, inv_a = _adjoint_tile(p_ptr + pid * N * r, u_ptr + pid * N * Dv, W, n0, N, r,
                                         Dv, BLOCK_N, BLOCK_R, BLOCK_DV)
        alpha = (hr - tl.sum(P * beta[None, :], axis=1)) * inv_a  # (BLOCK_N,)
        dX = Hm - P * (alpha[:, None] + beta[None, :])  # (BLOCK_N, BLOCK_R)
        offs_n = n0 + tl.arange(0, BLOCK_N)
        row_ok = offs_n[:, None] < N
        x_mask = row_ok & (offs_d[None, :] < D)
        x = tl.load(x_ptr + pid * N * D + offs_n[:, None] * D + offs_d[None, :], mask=x_mask,
                    other=0.0)  # (BLOCK_N, BLOCK_D)
        tl.store(dx_ptr + pid * N * D + offs_n[:, None] * D + offs_d[None, :],
                 tl.dot(dX, z, input_precision="ieee"), mask=x_mask)
        dz += tl.dot(tl.trans(dX), x, input_precision="ieee")
        if WITH_DV:
            tl.store(dv_ptr + pid * N * Dv + offs_n[:, None] * Dv + offs_dv[None, :],
                     tl.dot(P, tl.trans(W), input_precision="ieee"),
                     mask=row_ok & (offs_dv[None, :] < Dv))
    tl.store(dz_ptr + pid * r * D + offs_r[:, None] * D + offs_d[None, :], dz,
             mask=col_ok[:, None] & (offs_d[None, :] < D))


# --------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------
def _blocks(N: int, D: int, Dv: int, r: int) -> dict[str, int]:
    """Launch options: tile sizes are powers of two >= 16 (tl.dot's minimum), a token tile holds
    at most 2048 entries of its widest operand. With 8 warps and 2 pipeline stages, an sm_90
    compile of every kernel at the ListOps and Text shapes used <= 45 KB shared memory and <= 32
    bytes of stack (4 warps / 4096-entry tiles: up to 7 KB of register spills). Chosen from
    those resource counts, not tuned by timing (no GPU was at hand)."""
    block_r, block_d, block_dv = _pow2_block(r), _pow2_block(D), _pow2_block(Dv)
    block_n = min(_pow2_block(N), max(16, 2048 // max(block_r, block_d, block_dv)))
    return {"BLOCK_N": block_n, "BLOCK_D": block_d, "BLOCK_DV": block_dv, "BLOCK_R": block_r,
            "num_warps": 8, "num_stages": 2}


def _pow2_block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _forward(q, k, v, zs, log_a, log_w, col_scale, n_iters):
    """Both plans, v^T P2t and the output; q, k, v contiguous float32, col_scale (B, H, r)."""
    B, H, N, D = q.shape
    r, Dv = zs.shape[1], v.shape[-1]
    blocks = _blocks(N, D, Dv, r)
    la_stride = N if log_a.shape[0] > 1 else 0
    P1 = torch.empty(B, H, N, r, device=q.device, dtype=q.dtype)
    P2t = torch.empty_like(P1)
    vT_P2t = torch.empty(B, H, Dv, r, device=q.device, dtype=q.dtype)
    out = torch.empty(B, H, N, Dv, device=q.device, dtype=q.dtype)
    grid = (B * H,)
    _p2t_kernel[grid](k, zs, log_a, log_w, v, P2t, vT_P2t, H, N, D, Dv, r, la_stride, n_iters,
                      FLOOR=_PLAN_FLOOR, **blocks)
    _p1_kernel[grid](q, zs, log_a, log_w, vT_P2t, col_scale, P1, out, H, N, D, Dv, r, la_stride,
                     n_iters, FLOOR=_PLAN_FLOOR, **blocks)
    return out, P1, P2t, vT_P2t


def _solve_adjoint(M_raw, rhs, b_act):
    """beta (BH, r) from (diag(b) - P^T diag(1/a) P + ridge + gauge) beta = rhs, as in
    :func:`lotformer.sinkhorn._implicit_backward`; an empty problem (fully padded: P = 0)
    solves the identity with a zero right-hand side instead of a singular system."""
    r = b_act.shape[-1]
    b_mean = b_act.mean(dim=-1, keepdim=True)  # (BH, 1)
    M = (b_mean / r).unsqueeze(-1) - M_raw  # (BH, r, r)
    M.diagonal(dim1=-2, dim2=-1).add_(b_act + 1e-6 * b_mean)
    empty = (b_mean <= 0).unsqueeze(-1)  # (BH, 1, 1)
    M = torch.where(empty, torch.eye(r, dtype=M.dtype, device=M.device), M)
    rhs = torch.where(empty.squeeze(-1), torch.zeros_like(rhs), rhs)
    return torch.linalg.solve_ex(M, rhs.unsqueeze(-1), check_errors=False)[0].squeeze(-1)


def _adjoint(P, U, W, x, zs, dv=None):
    """Implicit backward of one plan P (B, H, N, r) with upstream dP = U W (U (B, H, N, Dv), W
    (BH, Dv, r)): returns dx (B, H, N, D), the per-problem pivot gradients (B, H, r, D), beta
    (BH, r); fills ``dv`` with P W^T when given."""
    B, H, N, r = P.shape
    D, Dv = x.shape[-1], U.shape[-1]
    blocks = _blocks(N, D, Dv, r)
    M_raw = torch.empty(B * H, r, r, device=P.device, dtype=P.dtype)
    rhs = torch.empty(B * H, r, device=P.device, dtype=P.dtype)
    b_act = torch.empty_like(rhs)
    grid = (B * H,)
    _adjoint_stats_kernel[grid](P, U, W, M_raw, rhs, b_act, N, r, Dv,
                                **{k: v for k, v in blocks.items() if k != "BLOCK_D"})
    beta = _solve_adjoint(M_raw, rhs, b_act)  # (BH, r)
    dx = torch.empty_like(x)
    dz = torch.empty(B, H, r, D, device=P.device, dtype=P.dtype)
    _adjoint_grads_kernel[grid](P, U, W, beta, x, zs, dx, dz, dx if dv is None else dv, H, N, D,
                                Dv, r, WITH_DV=dv is not None, **blocks)
    return dx, dz, beta


class _TritonPaperImplicitLOT(torch.autograd.Function):
    """Paper-mode LOT with implicit gradients on the fused kernels: the inputs, outputs and
    gradients of :class:`lotformer.lot._PaperImplicitLOT` (without its ``zero_rows`` hint)."""

    @staticmethod
    def forward(ctx, q, k, v, zs, log_a, log_w, col_scale, n_iters):
        B, H = q.shape[:2]
        q, k, v, zs = (t.contiguous() for t in (q, k, v, zs))
        log_a, log_w = log_a.contiguous(), log_w.contiguous()
        cs = col_scale.expand(B, H, -1).contiguous()  # (B, H, r)
        out, P1, P2t, vT_P2t = _forward(q, k, v, zs, log_a, log_w, cs, n_iters)
        ctx.save_for_backward(q, k, v, zs, P1, P2t, log_w, col_scale, vT_P2t)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, zs, P1, P2t, log_w, col_scale, vT_P2t = ctx.saved_tensors
        B, H, N, _ = q.shape
        r, Dv = zs.shape[1], v.shape[-1]
        dout = dout.contiguous()
        cs = col_scale.expand(B, H, r).reshape(B * H, 1, r)
        vT_P2t = vT_P2t.view(B * H, Dv, r)
        pv = vT_P2t * cs  # (BH, Dv, r): out = P1 pv^T
        d_pv = torch.bmm(dout.view(B * H, N, Dv).transpose(-1, -2), P1.view(B * H, N, r))
        d_cs = (d_pv * vT_P2t).sum(dim=1).view(B, H, r)  # (B, H, r)
        if col_scale.shape[0] == 1:
            d_cs = d_cs.sum(dim=0, keepdim=True)
        d_vT_P2t = (d_pv * cs).contiguous()  # (BH, Dv, r)
        dq, dz1, beta1 = _adjoint(P1, dout, pv, q, zs)  # upstream dP1 = dout pv
        dv = torch.empty_like(v)
        dk, dz2, beta2 = _adjoint(P2t, v, d_vT_P2t, k, zs, dv=dv)  # dP2t = v d(v^T P2t)
        dzs = (dz1 + dz2).sum(dim=0)  # (H, r, D)
        dlog_w = ((beta1 + beta2).view(B, H, r) * torch.exp(log_w)).sum(dim=0)  # (H, r)
        return dq, dk, dv, dzs, None, dlog_w, d_cs, None


def lot_paper_implicit(q, k, v, zs, log_a, log_w, col_scale, n_iters: int) -> torch.Tensor:
    """Paper-mode LOT output (B, H, N, Dv) with implicit gradients, on the fused kernels.

    Same inputs as :class:`lotformer.lot._PaperImplicitLOT`: q, k (B, H, N, D) and v
    (B, H, N, Dv) float32 with padding zeroed, zs (H, r, D) the pivots scaled by
    1 / (sqrt(D) eps), log_a (B or 1, 1, N), log_w (H, r), col_scale (B or 1, H, r) = n_valid / w,
    n_iters >= 1. CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``).
    """
    if q.dtype != torch.float32:
        raise ValueError(f"the Triton LOT kernels compute in float32; got {q.dtype}")
    B, H, N, D = q.shape
    if B * H * N * max(D, v.shape[-1], zs.shape[1]) >= 2**31:
        raise ValueError("the Triton LOT kernels use 32-bit offsets: B*H*N*max(D, Dv, r) must "
                         f"stay below 2**31; got {(B, H, N, D)} with Dv={v.shape[-1]}, "
                         f"r={zs.shape[1]}")
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError("the Triton LOT kernels need CUDA tensors (or TRITON_INTERPRET=1 set "
                           f"before lotformer.triton_lot is imported); got {q.device}")
    return _TritonPaperImplicitLOT.apply(q, k, v, zs, log_a, log_w, col_scale, n_iters)
