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

Harness compatibility (`compat`). "clean" (default) is the estimator above. "harness" replays
the Skyformer/LOTFormer LRA harness (pkuzengqi/Skyformer src/models/attention_performer.py),
whose published Performer rows came from a different quantity: it divides q and k by D^(1/4)
before calling the FAVOR+ kernel, which divides by D^(1/4) again, so it estimates
softmax(q k^T / D) instead of softmax(q k^T / sqrt(D)). It also zeroes padded keys instead
of removing them, so their features (exp(-max) + eps, not 0) still enter the denominator;
adds eps = 1e-4 inside the feature (phi = (exp(...) + 1e-4) / sqrt(m)); and shifts all key
features by one maximum over the whole (B, H, N, m) tensor, padded keys included.
"""

from __future__ import annotations

import math

import torch

from lotformer.attention.base import AttentionBackend, dense_map, identity_values, zero_padded
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


_COMPATS = ("clean", "harness")
HARNESS_FEATURE_EPS = 1e-4  # the harness's softmax_kernel eps, added before the 1/sqrt(m)


@register_attention("performer")
class PerformerAttention(AttentionBackend):
    """FAVOR+ linear attention estimating softmax attention with positive random features."""

    title = "Performer"
    published_names = ("Performer",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 num_features: int = 128, redraw_interval: int = 0,
                 feature_eps: float = 1e-6, compat: str = "clean") -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        if redraw_interval < 0:
            raise ValueError(f"redraw_interval must be >= 0 (0 = never redraw), got {redraw_interval}")
        if compat not in _COMPATS:
            raise ValueError(f"compat must be one of {', '.join(_COMPATS)}, got {compat!r}")
        self.compat = compat
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

        if self.compat == "harness":
            return self._harness(q, k, v, key_padding_mask)
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

    def _harness(self, q, k, v, key_padding_mask):
        """The LRA harness's computation: softmax(q k^T / D) estimate, padded keys in the sums."""
        scale = q.shape[-1] ** -0.5  # D^(-1/4) in the wrapper, D^(-1/4) again in the kernel
        x_q, x_k = q * scale, zero_padded(k, key_padding_mask) * scale  # (B, H, N, D)
        w = self.projection.to(q.dtype)  # (m, D)
        proj_q, proj_k = x_q @ w.T, x_k @ w.T  # (B, H, N, m)
        q_stab = proj_q.detach().amax(dim=-1, keepdim=True)  # (B, H, N, 1)
        k_stab = proj_k.detach().amax()  # one maximum over the whole tensor
        ratio = self.num_features ** -0.5
        phi_q = ratio * (torch.exp(proj_q - 0.5 * (x_q * x_q).sum(-1, keepdim=True) - q_stab)
                         + HARNESS_FEATURE_EPS)  # (B, H, N, m)
        phi_k = ratio * (torch.exp(proj_k - 0.5 * (x_k * x_k).sum(-1, keepdim=True) - k_stab)
                         + HARNESS_FEATURE_EPS)  # (B, H, N, m), padded keys not zeroed
        v = zero_padded(v, key_padding_mask)  # (B, H, N, Dv)
        context = torch.einsum("bhnm,bhne->bhme", phi_k, v)  # (B, H, m, Dv)
        denominator = torch.einsum("bhnm,bhm->bhn", phi_q, phi_k.sum(dim=-2))  # (B, H, N)
        return torch.einsum("bhnm,bhme->bhne", phi_q, context) / denominator[..., None]

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """phi(q) phi(k)^T over valid keys, rows normalised, for the current projection (no
        redraw). Harness mode: read off `_harness` with identity values; padded keys stay in
        its row sums, so the rows of a padded example sum to less than 1."""
        if self.compat == "harness":
            return self._harness(q, k, identity_values(q), key_padding_mask)
        valid = (torch.ones(q.shape[0], q.shape[2], dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)  # (B, N)
        x_q, x_k = q * q.shape[-1] ** -0.25, k * q.shape[-1] ** -0.25  # (B, H, N, D)
        proj_q, proj_k = x_q @ self.projection.to(q.dtype).T, x_k @ self.projection.to(q.dtype).T
        # the forward pass's stabilisers: they do not cancel against feature_eps
        k_stab = proj_k.masked_fill(~valid[:, None, :, None], -torch.inf).amax(dim=(-2, -1))
        k_stab = torch.nan_to_num(k_stab, neginf=0.0)[..., None, None]  # (B, H, 1, 1)
        phi_q = self._feature_map(x_q, proj_q, proj_q.amax(dim=-1, keepdim=True))  # (B, H, N, m)
        phi_k = zero_padded(self._feature_map(x_k, proj_k, k_stab), valid)  # (B, H, N, m)
        kernel = phi_q @ phi_k.transpose(-1, -2)  # (B, H, N, N)
        row_sum = kernel.sum(dim=-1, keepdim=True)  # (B, H, N, 1); 0 only without valid keys
        return kernel / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_features={self.num_features}, "
                f"redraw_interval={self.redraw_interval}, compat={self.compat!r}")
