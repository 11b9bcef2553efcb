"""Exact softmax attention (Vaswani et al., 2017, "Attention Is All You Need").

Computed with `torch.nn.functional.scaled_dot_product_attention`; padded keys are masked out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lotformer.attention.base import AttentionBackend, dense_map, masked_softmax
from lotformer.attention.registry import register_attention


@register_attention("softmax")
class SoftmaxAttention(AttentionBackend):
    """softmax(q k^T / sqrt(D)) v through PyTorch SDPA."""

    title = "Softmax"
    published_names = ("Transformer", "Self-attention")

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        self.dropout = dropout

    def forward(self, q, k, v, key_padding_mask=None):
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, N), True = attend
        return F.scaled_dot_product_attention(  # (B, H, N, D)
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """softmax(q k^T / sqrt(D)) over the valid keys (eval mode: no dropout)."""
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        if key_padding_mask is None:
            return torch.softmax(scores, dim=-1)
        return masked_softmax(scores, key_padding_mask[:, None, None, :])  # (B, H, N, N)
