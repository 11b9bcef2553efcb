"""Performer attention with FAVOR+ positive orthogonal random features.

Choromanski et al., "Rethinking Attention with Performers", ICLR 2021.

The softmax kernel exp(q.k / sqrt(D)) is estimated without bias by random features. With
x = q / D^(1/4) (and the same for keys) and rows w_1..w_m of a random matrix W,

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),     E[phi(x_q) . phi(x_k)] = exp(q.k / sqrt(D)),

and attention is phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1): O(N m D) time per head.

Random features: W stacks blocks of D orthogonal directions (QR of a Gaussian matrix), each
row rescaled by the norm of an independent Gaussian vector so its length is chi(D)
distributed, exactly as for a Gaussian row ("positive orthogonal random features").
One W of shape (num_features, D) is shared by all heads and stored in the buffer
`projection` (saved in the state dict).

Redraw policy (`redraw_interval`): 0 keeps W fixed for the life of the module (drawn once at
construction from the global torch RNG). k > 0 redraws W at the start of a training forward
call once the current W has served k training calls, so calls 1..k use the first draw,
k+1..2k the second, and so on. Calls in eval mode never redraw and do not count. The call
counter lives on the module (not in the state dict), so a resumed run restarts its count.

Numerical stabilisation (as in the reference FAVOR+ code): before exponentiating, each
query's features are shifted by their own maximum, and all key features of a head by their
maximum over valid keys and features. Both shifts cancel exactly in the ratio (they are
constant per query row and per head respectively) and are excluded from autograd. A small
`feature_eps` (1e-6, the reference's numerical stabiliser) is added to every feature so the
denominator cannot vanish; padded keys' features are then zeroed.
"""

from __future__ import annotations

import math

import torch

from lotformer.attention.base import AttentionBackend, zero_padded
from lotformer.attention.registry import register_attention


def orthogonal_gaussian_features(num_features: int, dim: int, *, device=None,
                                 dtype: torch.dtype = torch.float32,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A (num_features, dim) matrix of orthogonal random directions with chi(dim) lengths.

    Rows within each block of `dim` rows are exactly orthogonal and uniformly (Haar)
    oriented; each row's norm is that of an independent standard Gaussian vector, so every
    row is marginally N(0, I).
    """
    num_blocks = math.ceil(num_features / dim)
    gaussian = torch.randn(num_blocks, dim, dim, device=device, dtype=torch.float32,
                           generator=generator)  # (blocks, dim, dim)
    q, r = torch.linalg.qr(gaussian)  # orthonormal columns per block
    # Fix the column signs (sign of R's diagonal) so each q is Haar-distributed; without it
    # the directions are biased and the kernel estimate does not converge.
    signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0)  # (blocks, dim)
    rows = (q * signs[:, None, :]).transpose(-1, -2)  # (blocks, dim, dim), orthonormal rows
    directions = rows.reshape(num_blocks * dim, dim)[:num_features]  # (m, dim)
    lengths = torch.randn(num_features, dim, device=device, dtype=torch.float32,
                          generator=generator).norm(dim=-1)  # (m,)
    return (directions * lengths[:, None]).to(dtype)  # (m, dim)


@register_attention("performer")
class PerformerAttention(AttentionBackend):
    """FAVOR+ linear attention estimating softmax attention with positive random features."""

    title = "Performer"
    published_names = ("Performer",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 num_features: int = 128, redraw_interval: int = 0,
                 feature_eps: float = 1e-6) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        if redraw_interval < 0:
            raise ValueError(f"redraw_interval must be >= 0 (0 = never redraw), got {redraw_interval}")
        self.num_features = num_features
        self.redraw_interval = redraw_interval
        self.feature_eps = feature_eps
        self.register_buffer("projection", orthogonal_gaussian_features(num_features, head_dim))
        self._calls_since_draw = 0  # training forward calls served by the current projection

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Replace the random projection in place (same device and dtype)."""
        self.projection.copy_(orthogonal_gaussian_features(
            self.num_features, self.head_dim, device=self.projection.device,
            dtype=self.projection.dtype))
        self._calls_since_draw = 0

    def _feature_map(self, x: torch.Tensor, projected: torch.Tensor,
                     stabiliser: torch.Tensor) -> torch.Tensor:
        """exp(W x - |x|^2/2 - stabiliser) / sqrt(m) + feature_eps, with projected = x W^T."""
        half_sq_norm = 0.5 * (x * x).sum(dim=-1, keepdim=True)  # (B, H, N, 1)
        features = torch.exp(projected - half_sq_norm - stabiliser)  # (B, H, N, m)
        return features / math.sqrt(self.num_features) + self.feature_eps

    def forward(self, q, k, v, key_padding_mask=None):
        if self.training and self.redraw_interval > 0:
            if self._calls_since_draw >= self.redraw_interval:
                self.redraw_features()
            self._calls_since_draw += 1

        scale = q.shape[-1] ** -0.25
        x_q, x_k = q * scale, k * scale  # (B, H, N, D)
        w = self.projection.to(q.dtype)  # (m, D)
        proj_q, proj_k = x_q @ w.T, x_k @ w.T  # (B, H, N, m)
        # Stabilisers (constant per query row / per head, so they cancel in the ratio).
        q_stab = proj_q.detach().amax(dim=-1, keepdim=True)  # (B, H, N, 1)
        k_masked = proj_k.detach()
        if key_padding_mask is not None:
            k_masked = k_masked.masked_fill(~key_padding_mask[:, None, :, None], -torch.inf)
        k_stab = k_masked.amax(dim=(-2, -1), keepdim=True)  # (B, H, 1, 1)
        k_stab = torch.nan_to_num(k_stab, neginf=0.0)  # heads with no valid key
        phi_q = self._feature_map(x_q, proj_q, q_stab)  # (B, H, N, m)
        phi_k = zero_padded(self._feature_map(x_k, proj_k, k_stab), key_padding_mask)  # (B, H, N, m)
        v = zero_padded(v, key_padding_mask)  # (B, H, N, Dv)

        context = torch.einsum("bhnm,bhne->bhme", phi_k, v)  # (B, H, m, Dv)
        key_sum = phi_k.sum(dim=-2)  # (B, H, m)
        numerator = torch.einsum("bhnm,bhme->bhne", phi_q, context)  # (B, H, N, Dv)
        denominator = torch.einsum("bhnm,bhm->bhn", phi_q, key_sum)  # (B, H, N)
        # > 0 whenever a key is valid (features >= feature_eps); an example without valid keys
        # has a zero numerator and gets zero output instead of 0 / 0
        denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        return numerator / denominator[..., None]  # (B, H, N, Dv)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_features={self.num_features}, "
                f"redraw_interval={self.redraw_interval}")
