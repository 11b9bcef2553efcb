"""Shared transformer encoder of the LRA runs (Skyformer-style small model).

Token + learned absolute position embeddings, pre-LayerNorm blocks (attention + GELU MLP),
final LayerNorm and mean pooling over valid tokens. The attention in each block is any
registered backend, chosen by name.
"""

from __future__ import annotations

import torch
from torch import nn

from lotformer.attention.multihead import MultiHeadAttention


class EncoderBlock(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, *,
                 attention: str, max_len: int, attention_options: dict | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attention=attention, max_len=max_len,
                                       attention_options=attention_options)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
        )
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x), mask))  # (B, N, dim)
        return x + self.drop2(self.mlp(self.norm2(x)))


class LRAEncoder(nn.Module):
    """Embeddings -> `depth` pre-LN blocks -> LayerNorm -> mean pool over valid tokens."""

    def __init__(self, *, vocab_size: int, max_len: int, dim: int = 64, depth: int = 2,
                 num_heads: int = 2, mlp_dim: int = 128, dropout: float = 0.1,
                 attention: str = "softmax", attention_options: dict | None = None) -> None:
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, mlp_dim, dropout, attention=attention, max_len=max_len,
                         attention_options=attention_options)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, N) int, mask (B, N) bool True = token -> pooled features (B, dim)."""
        B, N = ids.shape
        if N > self.max_len:
            raise ValueError(
                f"input of length {N} is longer than the position table ({self.max_len}); "
                f"raise task.max_len or truncate the data to {self.max_len} tokens"
            )
        if mask is not None and not bool(mask.any(dim=1).all()):
            raise ValueError("a sequence in the batch is all padding (mask has no True entry); "
                             "drop empty examples from the data")
        positions = torch.arange(N, device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))  # (B, N, dim)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if mask is None:
            return x.mean(dim=1)
        weights = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1)  # (B, dim)
