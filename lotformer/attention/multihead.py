"""Multi-head wrapper: the one place with projections and head split/merge."""

from __future__ import annotations

import torch
from torch import nn

from lotformer.attention.registry import build_attention


class MultiHeadAttention(nn.Module):
    """Project to heads, mix with a registered backend, merge heads, project out.

    The backend computes in float32 with autocast off and returns the input dtype (the policy
    every backend gets from :class:`~lotformer.attention.base.AttentionBackend`).
    """

    def __init__(self, dim: int, num_heads: int, *, attention: str = "softmax",
                 max_len: int | None = None, attention_options: dict | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attention = build_attention(
            attention, num_heads=num_heads, head_dim=self.head_dim, max_len=max_len,
            **(attention_options or {}),
        )

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = x.shape  # x: (B, N, dim)
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D)
        mixed = self.attention(q, k, v, key_padding_mask)  # (B, H, N, D)
        merged = mixed.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)  # (B, N, dim)
        return self.out(merged)
