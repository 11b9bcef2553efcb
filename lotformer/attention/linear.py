"""Linear attention with the elu(x) + 1 feature map.

Katharopoulos, Vyas, Pappas and Fleuret, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention", ICML 2020.

With phi(x) = elu(x) + 1 (elementwise, strictly positive), the output at query i is

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps),

computed right to left in O(N D^2) time and O(D^2) extra memory per head. Padded keys have
phi(k_j) and v_j zeroed, so they carry no weight. `eps` (1e-6 as in the paper's code) only
guards the division; phi > 0 keeps the denominator positive anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lotformer.attention.base import AttentionBackend, dense_map, zero_padded
from lotformer.attention.registry import register_attention


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, the positive feature map of linear attention."""
    return F.elu(x) + 1.0


@register_attention("linear")
class LinearAttention(AttentionBackend):
    """Non-causal linear attention phi(q) (phi(k)^T v) / (phi(q) phi(k)^T 1 + eps)."""

    title = "Linear"
    published_names = ("Linear Transformer",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = eps

    def forward(self, q, k, v, key_padding_mask=None):
        phi_q = elu_feature_map(q)  # (B, H, N, D)
        phi_k = zero_padded(elu_feature_map(k), key_padding_mask)  # (B, H, N, D)
        v = zero_padded(v, key_padding_mask)  # (B, H, N, Dv)
        context = torch.einsum("bhnd,bhne->bhde", phi_k, v)  # (B, H, D, Dv)
        key_sum = phi_k.sum(dim=-2)  # (B, H, D)
        numerator = torch.einsum("bhnd,bhde->bhne", phi_q, context)  # (B, H, N, Dv)
        denominator = torch.einsum("bhnd,bhd->bhn", phi_q, key_sum)  # (B, H, N)
        return numerator / (denominator[..., None] + self.eps)  # (B, H, N, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """phi(q) phi(k)^T over valid keys, rows divided by their sum + eps."""
        phi_k = zero_padded(elu_feature_map(k), key_padding_mask)  # (B, H, N, D)
        kernel = elu_feature_map(q) @ phi_k.transpose(-1, -2)  # (B, H, N, N)
        return kernel / (kernel.sum(dim=-1, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
