"""LOT attention: doubly-stochastic linear attention via low-rank optimal transport.

From "LOTFormer" (arXiv 2509.23436). Per head, with queries q_i, keys k_j (dimension D), n tokens
and r learnable pivots z_l with masses w = softmax(pivot_logits):

    S1 = q z^T / sqrt(D)   (n x r)          S2 = z k^T / sqrt(D)   (r x n)
    P1 = entropic OT plan for S1 with rows a (tokens), columns w (pivots)
    P2 = entropic OT plan for S2 with rows w (pivots), columns a (tokens)
    A  = n_valid * P1 diag(1/w) P2          (n x n, rank <= r, doubly stochastic at convergence)
    out = A v = n_valid * P1 (diag(1/w) (P2 v))        O(n r D) time, O(n r) memory

with a = 1/n_valid on real tokens and 0 on padding, Gibbs kernel exp(S / eps), cost -S.
Each problem runs ``n_iters`` log-domain Sinkhorn iterations in its own orientation, each a
column update then a row update, from zero potentials (POT's ``sinkhorn_log`` order): P1 updates
pivots then tokens, P2 tokens then pivots. So both end on the update that makes A row-stochastic
(P1 on its token-row update, P2 on its pivot-row update): A 1 = 1 exactly at any iteration count,
and the columns of A sum to 1 as the iterations converge. The n x n map is never formed (except by
:func:`lot_attention_matrix`, meant for diagnostics on small n).

Numerics: the attention math runs in float32 (float64 for float64 input) with autocast disabled
and the output is cast back to the input dtype: the policy of every backend
(:func:`lotformer.attention.base.in_compute_dtype`), which the functional entry points apply too.
No host-device synchronisation happens anywhere. See :mod:`lotformer.sinkhorn` for the solver
and the meaning of ``grad_mode``. Inputs are validated once, where they enter
(:func:`lot_attention`, :func:`lot_attention_matrix`, or the module's constructor and the base
class's check of q, k, v); the private functions below trust them. An empty batch (B = 0) or
empty sequences (N = 0) give the empty output.

Padding (``key_padding_mask``, (B, N) bool, True = real token): padded tokens get zero mass on
both sides, their q / k / v values are replaced by zeros before use (so valid outputs cannot
depend on them, not even through NaN), and the output rows at padded positions are exactly zero.

``compat="reference"`` reproduces the public reference code's LRA attention instead of the paper:
  * ``n_iters`` counts HALF-updates, alternating and starting with the row update of each
    problem in its own orientation (P1: token rows; P2: pivot rows) from zero potentials; 50 =
    25 row + 25 column updates (ends on a column update), 5 ends on a row update. (The reference
    computes each one with a logsumexp; the shared solver gives the same iterates to rounding.)
  * S1, S2 are clamped to [-50, 50] before dividing by eps;
  * pivot masses are uniform (``pivot_logits`` is ignored);
  * the map is (n / r) P1 P2 -- the paper's A divided by r^2 (the reference multiplies by
    r^-1/2 twice where the paper's diag(1/w) means r^+1/2 twice);
  * the padding mask is ignored (every one of the N positions gets mass 1/N), so outputs DO
    depend on padded positions, exactly as in the reference code.
  Not replicated: the reference's early stop (``err.item() < 1e-12``), which only fires once the
  row potentials stop changing in float32 and would force a host sync every iteration.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lotformer.attention.base import (AttentionBackend, check_qkv, dense_map, in_compute_dtype,
                                      option_at_most_max_len)
from lotformer.attention.registry import register_attention
from lotformer.sinkhorn import check_solver_options, implicit_backward, sinkhorn_plan_scaled

__all__ = ["COMPAT_MODES", "KERNELS", "LOTAttention", "lot_attention", "lot_attention_matrix"]

COMPAT_MODES = ("paper", "reference")
KERNELS = ("auto", "torch", "triton")
_triton_lot = None  # lotformer.triton_lot, imported on first use (False: unavailable)
_REFERENCE_CLAMP = 50.0


def _check_options(eps, n_iters, grad_mode, compat) -> None:
    """LOT's options: the solver's (eps, n_iters, grad_mode), checked by the solver, and compat."""
    check_solver_options(eps, n_iters, grad_mode)
    if compat not in COMPAT_MODES:
        raise ValueError(f"unknown compat {compat!r}; valid choices: {', '.join(COMPAT_MODES)}")


def _check_kernel(kernel, grad_mode, compat) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid choices: {', '.join(KERNELS)}")
    if kernel == "triton" and (compat, grad_mode) != ("paper", "implicit"):
        raise ValueError("kernel='triton' supports compat='paper' with grad_mode='implicit' only; "
                         f"got compat={compat!r}, grad_mode={grad_mode!r}")


def _triton_module():
    """lotformer.triton_lot, or None when triton is not importable (checked once)."""
    global _triton_lot
    if _triton_lot is None:
        try:
            from lotformer import triton_lot
        except ImportError:
            triton_lot = False
        _triton_lot = triton_lot
    return _triton_lot or None


def _use_triton(kernel: str, q: torch.Tensor) -> bool:
    """Whether paper-mode implicit LOT runs on the fused Triton kernels (see ``kernel``)."""
    if kernel == "torch":
        return False
    fits = q.dtype != torch.float64
    if kernel == "auto":
        return fits and q.is_cuda and _triton_module() is not None
    module = _triton_module()
    if not fits:
        raise ValueError(f"kernel='triton' computes in float32; got {q.dtype} inputs")
    if module is None:
        raise RuntimeError("kernel='triton' needs the triton package (pip install -e "
                           "'.[test-triton]')")
    if not q.is_cuda and not module.INTERPRETED:
        raise RuntimeError(f"kernel='triton' needs CUDA tensors, got {q.device} (on CPU only "
                           "under Triton's interpreter: TRITON_INTERPRET=1 before import)")
    return True


def _check_pivots(q, pivots, pivot_logits) -> None:
    """The pivots (H, r, D) and their logits (H, r) against q (B, H, N, D)."""
    _, H, _, D = q.shape
    if pivots.dim() != 3 or pivots.shape[0] != H or pivots.shape[2] != D or pivots.shape[1] < 1:
        raise ValueError(f"pivots must have shape (H, r, D) = ({H}, r, {D}) with r >= 1; got "
                         f"{tuple(pivots.shape)}")
    r = pivots.shape[1]
    if pivot_logits is not None and tuple(pivot_logits.shape) != (H, r):
        raise ValueError(f"pivot_logits must have shape (H, r) = ({H}, {r}) or be None; got "
                         f"{tuple(pivot_logits.shape)}")


def _pivot_factor(z: torch.Tensor, B: int) -> torch.Tensor:
    """z (H, r, D) -> z^T for every batch-head (B*H, D, r), contiguous: a small copy (with a
    transposed view CPU bmm takes a path ~3x slower)."""
    H, r, D = z.shape
    return z.transpose(-1, -2).unsqueeze(0).expand(B, H, D, r).reshape(B * H, D, r)


def _similarity(x: torch.Tensor, z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x z^T per head: x (B, H, N, D), z (H, r, D) -> (B, H, N, r), as one flat bmm."""
    B, H, N, D = x.shape
    r = z.shape[1]
    flat_out = None if out is None else out.view(B * H, N, r)
    return torch.bmm(x.reshape(B * H, N, D), _pivot_factor(z, B), out=flat_out).view(B, H, N, r)


def _apply_plans(P1: torch.Tensor, P2t: torch.Tensor, col_scale: torch.Tensor,
                 v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """n_valid P1 diag(1/w) P2 v = P1 diag(col_scale) (P2t^T v), O(N r Dv), as flat bmm's.

    P2t^T v is formed as (v^T P2t)^T so that the gradient reaching P2t is contiguous.
    Returns the output (B, H, N, Dv) and v^T P2t (B*H, Dv, r).
    """
    B, H, N, r = P1.shape
    Dv = v.shape[-1]
    vT_P2t = torch.bmm(v.reshape(B * H, N, Dv).transpose(-1, -2), P2t.reshape(B * H, N, r))
    pv = vT_P2t.view(B, H, Dv, r) * col_scale.unsqueeze(-2)  # (B, H, Dv, r) = (diag(s) P2 v)^T
    out = torch.bmm(P1.reshape(B * H, N, r), pv.reshape(B * H, Dv, r).transpose(-1, -2))
    return out.view(B, H, N, Dv), vT_P2t


def _token_masses(mask, B, N, dt, device):
    """Token log-masses log_a (B or 1, 1, N) (uniform on real tokens, -inf on padding) and the
    number of real tokens n_scale (B or 1, 1, 1).

    A fully padded example has no token measure, so it would pose an empty (infeasible) OT
    problem whose implicit gradient is a singular system. It is solved explicitly instead as the
    uniform problem over all N positions (its q, k and v are zeroed, so the problem is trivial and
    well conditioned) with output scale n_scale = 0: its output and every gradient through it are
    exactly zero, on every path and in every gradient mode, whatever the linear-algebra library.
    """
    if mask is None:
        log_a = torch.full((1, 1, N), -math.log(N), dtype=dt, device=device)
        return log_a, torch.full((1, 1, 1), float(N), dtype=dt, device=device)
    n_valid = mask.sum(dim=-1).to(dt)  # (B,)
    empty = (n_valid == 0)[:, None]  # (B, 1): fully padded examples
    log_a = torch.where(mask, -torch.log(n_valid.clamp_min(1.0))[:, None],
                        torch.full((B, N), float("-inf"), dtype=dt, device=device))
    log_a = torch.where(empty, torch.full_like(log_a, -math.log(max(N, 1))), log_a)  # (B, N)
    return log_a[:, None, :], n_valid[:, None, None]


def _pivot_terms(z, pivot_logits, n_scale, eps):
    """Paper mode: pivot log-masses log_w (H, r), the pivots scaled by 1 / (sqrt(D) eps) (so that
    the similarity products are S / eps directly) and the output scale n_valid / w (B or 1, H, r)."""
    H, r, D = z.shape
    if pivot_logits is None:
        log_w = torch.full((H, r), -math.log(r), dtype=z.dtype, device=z.device)
    else:
        log_w = torch.log_softmax(pivot_logits.to(z.dtype), dim=-1)  # (H, r)
    zs = z * (1.0 / (math.sqrt(D) * eps))
    return log_w, zs, n_scale * torch.exp(-log_w)


def _paper_inputs(q, k, pivots, pivot_logits, eps, mask):
    """Paper mode, in the compute dtype of q and k: q, k with padding zeroed, the pivots scaled
    so that the similarity products are S / eps, the token and pivot log-masses and the output
    scale. Returns q, k, zs (H, r, D), log_a (B or 1, 1, N), log_w (H, r), col_scale (B or 1, H, r).
    """
    dt = q.dtype
    B, H, N, D = q.shape
    if mask is not None:
        pad = ~mask[:, None, :, None]  # (B, 1, N, 1)
        q, k = q.masked_fill(pad, 0.0), k.masked_fill(pad, 0.0)
    log_a, n_scale = _token_masses(mask, B, N, dt, q.device)
    log_w, zs, col_scale = _pivot_terms(pivots.to(dt), pivot_logits, n_scale, eps)
    return q, k, zs, log_a, log_w, col_scale


def _paper_plans(q, k, zs, log_a, log_w, *, n_iters, zero_rows, grad_mode="implicit"):
    """Both paper-mode plans: P1 (B, H, N, r) [rows: tokens] and P2t (B, H, N, r) [= P2^T, P2
    (r x N) has pivot rows]. With autograd off (as inside :class:`_PaperImplicitLOT`) the second
    similarity matrix is computed in the first one's buffer."""
    X = _similarity(q, zs)  # (B, H, N, r) = S1 / eps
    # P1: rows = tokens (mass a), columns = pivots (mass w); ends on the row update.
    P1 = sinkhorn_plan_scaled(X, log_a, log_w, first="col", n_half=2 * n_iters,
                              grad_mode=grad_mode, zero_rows=zero_rows, zero_cols=False)
    X = _similarity(k, zs, out=None if torch.is_grad_enabled() else X)  # (S2 / eps)^T
    # P2 = P2t^T: pivot rows (mass w) end the schedule -> columns of this layout last.
    P2t = sinkhorn_plan_scaled(X, log_a, log_w, first="row", n_half=2 * n_iters,
                               grad_mode=grad_mode, zero_rows=zero_rows, zero_cols=False)
    return P1, P2t


def _lot_factors(q, k, pivots, pivot_logits, *, eps, n_iters, key_padding_mask, grad_mode,
                 compat):
    """The two plans and the per-(batch, head, pivot) output scale, all in the compute dtype.

    Returns P1 (B, H, N, r) [rows: tokens], P2t (B, H, N, r) [= P2^T, P2 (r x N) has pivot rows]
    and col_scale (B, H, r) such that A = P1 diag(col_scale) P2.
    """
    if compat == "paper":
        q, k, zs, log_a, log_w, col_scale = _paper_inputs(q, k, pivots, pivot_logits, eps,
                                                          key_padding_mask)
        P1, P2t = _paper_plans(q, k, zs, log_a, log_w, n_iters=n_iters, grad_mode=grad_mode,
                               zero_rows=key_padding_mask is not None)
        return P1, P2t, col_scale
    dt = q.dtype
    B, H, N, D = q.shape
    r = pivots.shape[1]
    log_a, _ = _token_masses(None, B, N, dt, q.device)  # the reference ignores padding
    zs = pivots.to(dt) * (1.0 / math.sqrt(D))
    X1 = _similarity(q, zs).clamp(-_REFERENCE_CLAMP, _REFERENCE_CLAMP) / eps
    log_w = torch.full((H, r), -math.log(r), dtype=dt, device=q.device)
    # Reference order: each problem starts with the row update of its own orientation.
    P1 = sinkhorn_plan_scaled(X1, log_a, log_w, first="row", n_half=n_iters,
                              grad_mode=grad_mode, zero_rows=False, zero_cols=False)
    del X1
    X2 = _similarity(k, zs).clamp(-_REFERENCE_CLAMP, _REFERENCE_CLAMP) / eps
    P2t = sinkhorn_plan_scaled(X2, log_a, log_w, first="col", n_half=n_iters,
                               grad_mode=grad_mode, zero_rows=False, zero_cols=False)
    del X2
    col_scale = torch.full((1, 1, r), N / r, dtype=dt, device=q.device)
    return P1, P2t, col_scale


class _PaperImplicitLOT(torch.autograd.Function):
    """Paper-mode LOT with implicit-differentiation gradients, as one autograd node.

    The same computation as :func:`_lot_factors` + :func:`_apply_plans`, but it owns its
    intermediates: the forward pass reuses one n x r buffer for both similarity matrices and the
    backward pass one n x r buffer for both plans' upstream gradients, H = dP * P and dX (four
    fewer fresh n x r tensors per step; on CPU each costs page faults). Gradients are those of
    the composed path (``test_lot.py`` checks them with gradcheck).
    Inputs: q, k (B, H, N, D) and v (B, H, N, Dv) with padding zeroed, zs (H, r, D) the scaled
    pivots, log_a (B or 1, 1, N), log_w (H, r), col_scale (B or 1, H, r).
    """

    @staticmethod
    def forward(ctx, q, k, v, zs, log_a, log_w, col_scale, n_iters, zero_rows):
        P1, P2t = _paper_plans(q, k, zs, log_a, log_w, n_iters=n_iters, zero_rows=zero_rows)
        out, vT_P2t = _apply_plans(P1, P2t, col_scale.expand(q.shape[0], -1, -1), v)
        ctx.save_for_backward(q, k, v, zs, P1, P2t, log_a, log_w, col_scale, vT_P2t)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, zs, P1, P2t, log_a, log_w, col_scale, vT_P2t = ctx.saved_tensors
        B, H, N, D = q.shape
        r, Dv = zs.shape[1], v.shape[-1]
        BH = B * H
        P1f, P2f = P1.reshape(BH, N, r), P2t.reshape(BH, N, r)
        vf, doutf = v.reshape(BH, N, Dv), dout.reshape(BH, N, Dv)
        cs = col_scale.expand(B, H, r).reshape(BH, 1, r)
        pv = vT_P2t * cs  # (BH, Dv, r): out = P1 pv^T
        d_pv = torch.bmm(doutf.transpose(-1, -2), P1f)  # (BH, Dv, r)
        d_cs = (d_pv * vT_P2t).sum(dim=1).view(B, H, r)  # (B, H, r)
        if col_scale.shape[0] == 1:
            d_cs = d_cs.sum(dim=0, keepdim=True)
        d_vT_P2t = d_pv * cs  # (BH, Dv, r)
        dv = torch.bmm(P2f, d_vT_P2t.transpose(-1, -2)).view(B, H, N, Dv)
        zT = _pivot_factor(zs, B)  # (BH, D, r)
        w = torch.exp(log_w).expand(B, H, r).reshape(BH, r)
        buf = torch.empty_like(P1f)  # the one n x r scratch of this backward pass
        # P1: tokens -> pivots, ended on its (exact) token-row update; upstream dP1 = dout pv
        a = torch.exp(log_a).expand(B, H, N).reshape(BH, N)
        dX, _, beta1 = implicit_backward(P1f, lambda out: torch.bmm(doutf, pv, out=out),
                                          eliminate_rows=N >= r, exact_rows=a, buf=buf)
        dq = torch.bmm(dX, zT.transpose(-1, -2)).view(B, H, N, D)
        dzT = torch.bmm(q.reshape(BH, N, D).transpose(-1, -2), dX)  # (BH, D, r)
        # P2t: its pivot side (columns here) was updated last; upstream dP2t = v d(v^T P2t)
        dX, _, beta2 = implicit_backward(P2f, lambda out: torch.bmm(vf, d_vT_P2t, out=out),
                                          eliminate_rows=N >= r, exact_cols=w, buf=buf)
        dk = torch.bmm(dX, zT.transpose(-1, -2)).view(B, H, N, D)
        dzT += torch.bmm(k.reshape(BH, N, D).transpose(-1, -2), dX)
        dzs = dzT.view(B, H, D, r).sum(dim=0).transpose(-1, -2)  # (H, r, D)
        dlog_w = ((beta1 + beta2) * w).view(B, H, r).sum(dim=0)  # (H, r)
        return dq, dk, dv, dzs, None, dlog_w, d_cs, None, None


def _lot_output(q, k, v, pivots, pivot_logits, *, eps, n_iters, key_padding_mask, grad_mode,
                compat, kernel="auto"):
    """A v, (B, H, N, Dv), for validated inputs already in the compute dtype (autocast off)."""
    if q.shape[0] == 0 or q.shape[2] == 0:  # no examples or no tokens: the empty output
        return v * 0.0
    if compat == "paper" and key_padding_mask is not None:
        v = v.masked_fill(~key_padding_mask[:, None, :, None], 0.0)
    if compat == "paper" and grad_mode == "implicit":
        q, k, zs, log_a, log_w, col_scale = _paper_inputs(q, k, pivots, pivot_logits, eps,
                                                          key_padding_mask)
        if _use_triton(kernel, q):
            return _triton_module().lot_paper_implicit(q, k, v, zs, log_a, log_w, col_scale,
                                                       n_iters)
        return _PaperImplicitLOT.apply(q, k, v, zs, log_a, log_w, col_scale, n_iters,
                                       key_padding_mask is not None)
    P1, P2t, col_scale = _lot_factors(
        q, k, pivots, pivot_logits, eps=eps, n_iters=n_iters,
        key_padding_mask=key_padding_mask, grad_mode=grad_mode, compat=compat)
    return _apply_plans(P1, P2t, col_scale.expand(P1.shape[0], -1, -1), v)[0]


def _lot_map(q, k, _v, pivots, pivot_logits, **options):
    """The dense map (B, H, N, N) for validated inputs in the compute dtype (autocast off)."""
    if q.shape[0] == 0 or q.shape[2] == 0:
        return q @ k.transpose(-1, -2)  # empty
    P1, P2t, col_scale = _lot_factors(q, k, pivots, pivot_logits, **options)
    return torch.matmul(P1 * col_scale.unsqueeze(-2), P2t.transpose(-1, -2))


def lot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pivots: torch.Tensor,
                  pivot_logits: torch.Tensor | None = None, *, eps: float, n_iters: int,
                  key_padding_mask: torch.Tensor | None = None, grad_mode: str = "implicit",
                  compat: str = "paper", kernel: str = "auto") -> torch.Tensor:
    """LOT attention output A v, shape (B, H, N, Dv), in O(N r D) time without the N x N map.

    Args:
        q, k: (B, H, N, D); v: (B, H, N, Dv), floating point.
        pivots: (H, r, D), one set of r pivots per head.
        pivot_logits: (H, r) pivot mass logits (w = softmax per head) or None for uniform masses.
        eps: entropic regularisation (> 0). n_iters: Sinkhorn iterations (>= 1); in "paper" mode
            full (column + row) iterations per problem, in "reference" mode half-updates.
        key_padding_mask: (B, N) bool, True = real token, or None.
        grad_mode: "implicit" (default; implicit differentiation at the returned plans: exact at
            convergence, approximate after finitely many iterations, saves only the two n x r
            plans, fastest), "recompute" (the exact gradient of the unrolled finite-iteration
            solve, via checkpointing per kernel block: memory flat in n_iters, several times
            slower) or "unrolled" (the same exact gradient by plain autograd; memory grows with
            n_iters).
        compat: "paper" (the paper's mechanism) or "reference" (the public reference code's LRA
            behaviour, see the module docstring).
        kernel: "auto" (default: the fused Triton kernels of :mod:`lotformer.triton_lot` for
            paper mode with implicit gradients on CUDA tensors when triton is importable, else
            PyTorch), "torch" (always PyTorch, the reference path) or "triton" (always Triton;
            an error where it cannot run: other modes, float64, CPU tensors outside Triton's
            interpreter).

    Returns the output in the dtype of ``q``; rows at padded positions are zero (paper mode).
    """
    _check_options(eps, n_iters, grad_mode, compat)
    _check_kernel(kernel, grad_mode, compat)
    check_qkv(q, k, v, key_padding_mask)
    _check_pivots(q, pivots, pivot_logits)
    out = in_compute_dtype(_lot_output, q, k, v, pivots, pivot_logits, eps=eps, n_iters=n_iters,
                           key_padding_mask=key_padding_mask, grad_mode=grad_mode, compat=compat,
                           kernel=kernel)
    return out.to(q.dtype)


def lot_attention_matrix(q: torch.Tensor, k: torch.Tensor, pivots: torch.Tensor,
                         pivot_logits: torch.Tensor | None = None, *, eps: float, n_iters: int,
                         key_padding_mask: torch.Tensor | None = None,
                         grad_mode: str = "implicit", compat: str = "paper") -> torch.Tensor:
    """The dense LOT attention map A (B, H, N, N) -- for diagnostics and tests on small N.

    Same arguments as :func:`lot_attention` without ``v`` (the map does not depend on it);
    ``lot_attention(q, k, v, ...) == lot_attention_matrix(q, k, ...) @ v`` up to rounding.
    Returned in float32 (float64 for float64 input); differentiable like :func:`lot_attention`.
    """
    _check_options(eps, n_iters, grad_mode, compat)
    check_qkv(q, k, None, key_padding_mask)
    _check_pivots(q, pivots, pivot_logits)
    return in_compute_dtype(_lot_map, q, k, None, pivots, pivot_logits, eps=eps, n_iters=n_iters,
                            key_padding_mask=key_padding_mask, grad_mode=grad_mode, compat=compat)


@register_attention("lot")
class LOTAttention(AttentionBackend):
    """LOT attention with learnable pivots (and pivot masses) per head; see the module docstring.

    Options: ``rank`` r (pivots per head), ``eps`` (entropic regularisation), ``n_iters``,
    ``learn_masses``, ``pivot_init_std``, ``grad_mode`` and ``kernel`` (see
    :func:`lot_attention`), ``compat``.
    What ``n_iters`` counts depends on ``compat``:

    * ``"paper"``: FULL Sinkhorn iterations per problem, each a column update then a row update
      (P1 ends on its token rows, P2 on its pivot rows), so A is row-stochastic at any count;
      25 = 50 half-updates.
    * ``"reference"``: HALF-updates, as the reference code counts them, alternating from the
      row update of each problem; 50 = 25 row + 25 column updates (the reference LRA setting,
      the same work as paper mode's 25), and an odd count such as 5 ends on a row update.

    Parameters: ``pivots`` (H, r, D), initialised ``randn * pivot_init_std``; ``pivot_logits``
    (H, r), zeros, a Parameter when ``learn_masses`` else a (non-trained) buffer. With
    ``compat="reference"`` the masses are uniform by definition, so ``pivot_logits`` is always a
    buffer there (an unused Parameter would only trouble optimisers and DDP).
    """

    title = "LOT"
    published_names = ("LOTFormer",)

    @classmethod
    def check_options(cls, options, *, max_len):
        option_at_most_max_len(
            options, "rank", 32, max_len, "LOT rank attn.rank={value} is larger than the sequence "
            "length task.max_len={max_len}; more pivots than tokens cannot help. Use attn.rank <= "
            "{max_len}.")

    def bench_fields(self):
        return {"rank": self.rank, "eps": self.eps, "n_iters": self.n_iters,
                "grad_mode": self.grad_mode}

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 rank: int = 32, eps: float = 0.1, n_iters: int = 25, learn_masses: bool = True,
                 pivot_init_std: float = 0.02, grad_mode: str = "implicit",
                 compat: str = "paper", kernel: str = "auto") -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank (number of pivots) must be an int >= 1, got {rank!r}")
        _check_options(eps, n_iters, grad_mode, compat)
        _check_kernel(kernel, grad_mode, compat)
        if isinstance(pivot_init_std, bool) or not isinstance(pivot_init_std, (int, float)) \
                or not pivot_init_std >= 0:
            raise ValueError(f"pivot_init_std must be a number >= 0, got {pivot_init_std!r}")
        self.rank = rank
        self.eps = float(eps)
        self.n_iters = n_iters
        self.learn_masses = bool(learn_masses) and compat == "paper"
        self.grad_mode = grad_mode
        self.compat = compat
        self.kernel = kernel
        self.pivots = nn.Parameter(torch.randn(num_heads, rank, head_dim) * pivot_init_std)
        if self.learn_masses:
            self.pivot_logits = nn.Parameter(torch.zeros(num_heads, rank))
        else:
            self.register_buffer("pivot_logits", torch.zeros(num_heads, rank))

    def forward(self, q, k, v, key_padding_mask=None):
        # q, k, v checked and in the compute dtype (base class); options checked at __init__
        return _lot_output(q, k, v, self.pivots, self.pivot_logits, eps=self.eps,
                           n_iters=self.n_iters, key_padding_mask=key_padding_mask,
                           grad_mode=self.grad_mode, compat=self.compat, kernel=self.kernel)

    @dense_map
    def attention_matrix(self, q: torch.Tensor, k: torch.Tensor,
                         key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The dense (B, H, N, N) map this module applies (small N only)."""
        return lot_attention_matrix(q, k, self.pivots, self.pivot_logits, eps=self.eps,
                                    n_iters=self.n_iters, key_padding_mask=key_padding_mask,
                                    grad_mode=self.grad_mode, compat=self.compat)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, rank={self.rank}, eps={self.eps}, "
                f"n_iters={self.n_iters}, learn_masses={self.learn_masses}, "
                f"grad_mode={self.grad_mode!r}, compat={self.compat!r}, kernel={self.kernel!r}")
