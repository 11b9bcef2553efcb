"""cosFormer: linear attention with ReLU features and a cos-based re-weighting.

Qin, Sun, Deng, Li, Wei, Lv, Yan, Kong and Zhong, "cosFormer: Rethinking Softmax in
Attention", ICLR 2022.

Non-causal form. With phi = ReLU and token indices i, j = 1..M (M = the number of valid
tokens of the sequence, i.e. max(N_q, N_k) for unpadded self-attention),

    s_ij = phi(q_i) . phi(k_j) cos(pi/2 (i - j) / M),      out_i = sum_j s_ij v_j / sum_j s_ij,

and cos(a - b) = cos a cos b + sin a sin b splits the sum into two linear-attention terms:
O(N D^2) time per head. Indices are ranks among valid tokens, so padding does not shift them.
`reweight=False` drops the cos factor (plain ReLU linear attention). The denominator is
floored at `eps` (the authors' 1e-6), as ReLU features can make it vanish.

Runs in float32 (float64 for float64 inputs) with autocast disabled; the output is cast back.
"""

from __future__ import annotations

import math

import torch

from lotformer.attention.base import AttentionBackend, dense_map, zero_padded
from lotformer.attention.registry import register_attention


def _linear_terms(phi_q, phi_k, v):
    """Numerator (B, H, N, Dv) and denominator (B, H, N) of phi_q (phi_k^T v) attention."""
    context = torch.einsum("bhnd,bhne->bhde", phi_k, v)  # (B, H, D, Dv)
    numerator = torch.einsum("bhnd,bhde->bhne", phi_q, context)  # (B, H, N, Dv)
    denominator = torch.einsum("bhnd,bhd->bhn", phi_q, phi_k.sum(dim=-2))  # (B, H, N)
    return numerator, denominator


@register_attention("cosformer")
class CosformerAttention(AttentionBackend):
    """ReLU linear attention re-weighted by cos(pi/2 (i - j) / M)."""

    title = "cosFormer"
    published_names = ()

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 reweight: bool = True, eps: float = 1e-6) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.reweight = reweight
        self.eps = eps

    def forward(self, q, k, v, key_padding_mask=None):
        B, _, N, _ = q.shape
        phi_q = torch.relu(q)  # (B, H, N, D)
        phi_k = zero_padded(torch.relu(k), key_padding_mask)  # (B, H, N, D)
        v = zero_padded(v, key_padding_mask)  # (B, H, N, Dv)
        if not self.reweight:
            numerator, denominator = _linear_terms(phi_q, phi_k, v)
            return numerator / denominator.clamp_min(self.eps)[..., None]
        valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)  # (B, N)
        index = valid.cumsum(dim=-1).to(q.dtype)  # (B, N): 1..M over valid tokens
        length = valid.sum(dim=-1, keepdim=True).clamp_min(1).to(q.dtype)  # (B, 1): M
        angle = (math.pi / 2) * index / length  # (B, N)
        cos, sin = angle.cos()[:, None, :, None], angle.sin()[:, None, :, None]  # (B, 1, N, 1)
        num_c, den_c = _linear_terms(phi_q * cos, phi_k * cos, v)
        num_s, den_s = _linear_terms(phi_q * sin, phi_k * sin, v)
        return (num_c + num_s) / (den_c + den_s).clamp_min(self.eps)[..., None]

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """s_ij = relu(q_i) . relu(k_j) cos(pi/2 (i - j) / M) over valid keys, rows divided by
        their sum (floored at eps); without re-weighting the cos factor is 1."""
        B, _, N, _ = q.shape
        kernel = torch.relu(q) @ zero_padded(torch.relu(k), key_padding_mask).transpose(-1, -2)
        if self.reweight:
            valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                     if key_padding_mask is None else key_padding_mask)  # (B, N)
            index = valid.cumsum(dim=-1).to(q.dtype)  # (B, N): ranks among valid tokens
            offset = index[:, :, None] - index[:, None, :]  # (B, N, N): i - j
            length = valid.sum(dim=-1).clamp_min(1).to(q.dtype)[:, None, None]  # (B, 1, 1): M
            kernel = kernel * torch.cos((math.pi / 2) * offset / length)[:, None]  # (B, H, N, N)
        return kernel / kernel.sum(dim=-1, keepdim=True).clamp_min(self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reweight={self.reweight}"
