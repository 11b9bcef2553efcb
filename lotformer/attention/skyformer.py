"""Skyformer: Gaussian-kernel attention approximated with the Nyström method.

Chen, Zeng, Ji and Yang, "Skyformer: Remodel Self-Attention with Gaussian Kernel and Nyström
Method", NeurIPS 2021.

Kernel. Queries and keys are scaled by D^(-1/4) (x = q / D^(1/4), y = k / D^(1/4)) and
compared with the Gaussian kernel

    kappa(q, k) = exp(-|x - y|^2 / 2) = exp(-|q - k|^2 / (2 sqrt(D)))
               = exp(q.k / sqrt(D)) * exp(-|q|^2 / (2 sqrt(D))) * exp(-|k|^2 / (2 sqrt(D))),

i.e. the softmax kernel with the query and key norms divided out.

Normalisation (`normalize`). The paper's "kernelized attention" and its reference code use
the kernel matrix directly, without the softmax row normalisation:

    normalize=False (default, as in the paper):  out_i = sum_j kappa(q_i, k_j) v_j
    normalize=True  (softmax-like rows):          out_i = sum_j kappa(q_i, k_j) v_j / sum_j kappa(q_i, k_j)

Sums run over valid keys only (padded keys are masked out).

Approximation. With m landmark points l (segment means of the scaled keys over valid tokens,
the same padding-aware segmentation as the Nyströmformer backend), kappa(Q, K) is replaced by
its Nyström approximation kappa(Q, L) (kappa(L, L) + ridge I)^(-1) kappa(L, K), applied right
to left in O(N m D + m^3) per head. The m x m system is solved directly (torch.linalg.solve)
rather than with the reference code's 6-step iterative inverse. When the landmarks are the
keys themselves the approximation is exact up to the ridge; when `num_features >= N` the
exact kernel attention is computed instead, so `num_features = N` reproduces it exactly.
Deviations from the reference code, for determinism and padding-awareness: landmarks are
segment means of the keys instead of points sampled at random each call from the
concatenated queries and keys, and the regulariser is a small ridge instead of adding 0.1 I
and symmetrically rescaling the landmark kernel matrix. With normalize=True the approximate
denominator is floored at `eps` (a Nyström estimate of a positive sum can be non-positive).

Runs in float32 (float64 for float64 inputs) with autocast disabled (the policy of every
backend, base.py), since the linear solve
has no half-precision kernel; the output is cast back to the input dtype.
"""

from __future__ import annotations


import torch

from lotformer.attention.base import AttentionBackend, dense_map, identity_values, zero_padded
from lotformer.attention.nystrom import iterative_pinv, segment_means
from lotformer.attention.registry import register_attention


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """exp(-|x_i - y_j|^2 / 2) for x: (..., n, D), y: (..., m, D) -> (..., n, m)."""
    sq_dist = ((x * x).sum(-1)[..., :, None] + (y * y).sum(-1)[..., None, :]
               - 2.0 * x @ y.transpose(-1, -2))  # (..., n, m)
    return torch.exp(-0.5 * sq_dist.clamp_min(0.0))


def gaussian_kernel_attention(
    q: torch.Tensor,  # (B, H, N, D)
    k: torch.Tensor,  # (B, H, N, D)
    v: torch.Tensor,  # (B, H, N, Dv)
    key_padding_mask: torch.Tensor | None = None,  # (B, N) bool, True = token
    *,
    normalize: bool = False,
) -> torch.Tensor:  # (B, H, N, Dv)
    """Exact O(N^2) Gaussian-kernel attention, the quantity Skyformer approximates."""
    scale = q.shape[-1] ** -0.25
    kernel = gaussian_kernel(q * scale, k * scale)  # (B, H, N, N)
    if key_padding_mask is not None:
        kernel = kernel * key_padding_mask[:, None, None, :].to(kernel.dtype)
    out = kernel @ zero_padded(v, key_padding_mask)  # (B, H, N, Dv)
    if normalize:
        out = out / kernel.sum(dim=-1, keepdim=True)
    return out


_COMPATS = ("clean", "harness")
HARNESS_RIDGE = 0.1
HARNESS_PINV_ITERS = 6


def harness_landmark_rows(num_features: int, n_valid: torch.Tensor, N: int) -> torch.Tensor:
    """Row indices into [q; k] (length 2N) the harness samples: (B, m), from the global RNG."""
    u = torch.rand(num_features, device=n_valid.device)  # (m,), shared by the batch
    rows = (n_valid[:, None].to(u.dtype) * u[None, :]).long()  # (B, m), in [0, n_valid)
    rows[:, num_features // 2:] += N  # second half: key rows
    return rows


@register_attention("skyformer")
class SkyformerAttention(AttentionBackend):
    """Nyström-approximated Gaussian-kernel attention with segment-mean key landmarks."""

    title = "Skyformer"
    published_names = ("Skyformer",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 num_features: int = 128, normalize: bool = False, ridge: float = 1e-3,
                 eps: float = 1e-6, compat: str = "clean") -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if num_features < 1:
            raise ValueError(f"num_features (landmarks) must be >= 1, got {num_features}")
        if ridge < 0 or eps <= 0:
            raise ValueError(f"ridge must be >= 0 and eps > 0, got ridge={ridge}, eps={eps}")
        if compat not in _COMPATS:
            raise ValueError(f"compat must be one of {', '.join(_COMPATS)}, got {compat!r}")
        if compat == "harness" and normalize:
            raise ValueError("compat='harness' replays the harness's unnormalised kernel "
                             "attention; it needs normalize=False")
        self.compat = compat
        self.num_features = num_features
        self.normalize = normalize
        self.ridge = ridge
        self.eps = eps

    def forward(self, q, k, v, key_padding_mask=None):
        if self.compat == "harness":
            return self._harness(q, k, v, key_padding_mask)
        if self.num_features >= q.shape[-2]:
            return gaussian_kernel_attention(q, k, v, key_padding_mask, normalize=self.normalize)
        return self._nystrom(q, k, v, key_padding_mask)

    def _nystrom(self, q, k, v, key_padding_mask):
        B, H, N, _ = q.shape
        m = self.num_features
        scale = q.shape[-1] ** -0.25
        x, y = q * scale, k * scale  # (B, H, N, D)
        landmarks, land_valid = segment_means(y, key_padding_mask, m)  # (B, H, m, D), (B, m)
        land_valid = land_valid[:, None, :].to(q.dtype)  # (B, 1, m)

        query_land = gaussian_kernel(x, landmarks) * land_valid[..., None, :]  # (B, H, N, m)
        land_key = gaussian_kernel(landmarks, y) * land_valid[..., :, None]  # (B, H, m, N)
        if key_padding_mask is not None:
            land_key = land_key * key_padding_mask[:, None, None, :].to(q.dtype)
        land_land = gaussian_kernel(landmarks, landmarks)  # (B, H, m, m)
        land_land = land_land * land_valid[..., :, None] * land_valid[..., None, :]
        eye = torch.eye(m, dtype=q.dtype, device=q.device)  # (m, m)
        # disabled landmarks get an identity block; valid ones a ridge on the diagonal
        diagonal = self.ridge * land_valid + (1.0 - land_valid)  # (B, 1, m)
        land_land = land_land + eye * diagonal[..., :, None]  # (B, H, m, m)

        values = zero_padded(v, key_padding_mask)  # (B, H, N, Dv)
        if self.normalize:
            ones = torch.ones(B, H, N, 1, dtype=q.dtype, device=q.device)
            ones = zero_padded(ones, key_padding_mask)  # (B, H, N, 1)
            values = torch.cat([values, ones], dim=-1)  # (B, H, N, Dv+1)
        rhs = land_key @ values  # (B, H, m, Dv[+1])
        out = query_land @ torch.linalg.solve(land_land, rhs)  # (B, H, N, Dv[+1])
        if self.normalize:
            out = out[..., :-1] / out[..., -1:].clamp_min(self.eps)
        return out

    def _harness(self, q, k, v, key_padding_mask):
        """The LRA harness's sampled-landmark Nyström path (see the module docstring)."""
        B, H, N, D = q.shape
        valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)  # (B, N)
        scale = D ** -0.25
        x = torch.cat([zero_padded(q, valid), zero_padded(k, valid)], dim=2) * scale  # (B, H, 2N, D)
        rows = harness_landmark_rows(self.num_features, valid.sum(-1), N)  # (B, m)
        landmarks = x[torch.arange(B, device=q.device)[:, None], :, rows]  # (B, m, H, D)
        landmarks = landmarks.transpose(1, 2)  # (B, H, m, D)
        query_land = gaussian_kernel(x[:, :, :N], landmarks)  # (B, H, N, m)
        key_land = gaussian_kernel(x[:, :, N:], landmarks)  # (B, H, N, m)
        eye = torch.eye(self.num_features, dtype=q.dtype, device=q.device)  # (m, m)
        land_land = gaussian_kernel(landmarks, landmarks) + HARNESS_RIDGE * eye  # (B, H, m, m)
        d_inv_sqrt = land_land.sum(-1).rsqrt()  # (B, H, m)
        land_land = d_inv_sqrt[..., :, None] * land_land * d_inv_sqrt[..., None, :]
        inverse = iterative_pinv(land_land, HARNESS_PINV_ITERS, global_init=True)  # (B, H, m, m)
        key_side = (key_land * d_inv_sqrt[..., None, :]) @ inverse  # (B, H, N, m)
        key_side = zero_padded(key_side * d_inv_sqrt[..., None, :], valid)  # (B, H, N, m)
        context = key_side.transpose(-1, -2) @ zero_padded(v, valid)  # (B, H, m, Dv)
        return query_land @ context  # (B, H, N, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """kappa(Q, L) (kappa(L, L) + ridge I)^-1 kappa(L, K) over valid keys (rows normalised
        when `normalize`), the factors applied to v = I by the forward pass. Harness mode has no
        fixed map: it redraws its landmarks on every call (NotImplementedError)."""
        if self.compat == "harness":
            raise NotImplementedError(
                "skyformer compat='harness' samples new landmarks from the global RNG on every "
                "call, so no fixed map reproduces its output; use compat='clean' for maps")
        return self.forward(q, k, identity_values(q), key_padding_mask)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_features={self.num_features}, "
                f"normalize={self.normalize}, ridge={self.ridge}, compat={self.compat!r}")
