"""BigBird block-sparse attention: sliding window + global + random blocks.

Zaheer, Guruganesh, Dubey, Ainslie, Alberti, Ontanon, Pham, Ravula, Wang, Yang and Ahmed,
"Big Bird: Transformers for Longer Sequences", NeurIPS 2020 (the ITC variant).

The sequence is cut into blocks of `block_size` tokens (padded internally to a multiple of
the block size; the padding is masked out). Query block i attends, by softmax over the
union of these key blocks (each counted once), to

- the `window_blocks` blocks centred on i (3 in the paper and the harness),
- the 2 global blocks: the first and the last block holding valid tokens,
- `num_random_blocks` other blocks (3 in the harness) outside the window and the globals,

and the 2 global query blocks attend to every key. Padded keys get no weight; the last
global block and the random candidates are defined by the sequence's own valid blocks, so
valid outputs do not depend on padding. Cost: O(N (window + 2 + random) block_size D).

Random blocks: block i picks the `num_random_blocks` allowed blocks with the highest scores
in a fixed table `random_scores` (max_blocks x max_blocks, uniform, drawn at construction from
the global RNG and saved in the state dict), so the pattern is fixed per layer, as in the
authors' code (which seeds it per layer). This needs `max_len`. The Hugging Face
implementation used by the Skyformer harness (block_size 64, 3 random blocks) redraws the
random blocks in training, takes the physical last block as global, and falls back to full
attention when N <= (5 + 2 * num_random_blocks) * block_size.

With a window covering the sequence the layer is exactly softmax attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lotformer.attention.base import (AttentionBackend, dense_map, identity_values,
                                      require_max_len)
from lotformer.attention.registry import register_attention


def _masked_softmax_out(scores, allowed, v):
    """softmax over the last dim of scores where allowed, times v (rows with none: uniform)."""
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


@register_attention("bigbird")
class BigBirdAttention(AttentionBackend):
    """Softmax over window, global and random key blocks of each query block."""

    title = "BigBird"
    published_names = ("BigBird",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 block_size: int = 64, window_blocks: int = 3, num_random_blocks: int = 3) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if window_blocks < 1 or window_blocks % 2 == 0:
            raise ValueError(f"window_blocks must be an odd number >= 1, got {window_blocks}")
        if num_random_blocks < 0:
            raise ValueError(f"num_random_blocks must be >= 0, got {num_random_blocks}")
        require_max_len(max_len, "bigbird", "fixed random-block table")
        self.block_size = block_size
        self.window_blocks = window_blocks
        self.num_random_blocks = num_random_blocks
        max_blocks = math.ceil(max_len / block_size)
        self.register_buffer("random_scores", torch.rand(max_blocks, max_blocks))

    def block_layout(self, valid_blocks: torch.Tensor, num_blocks: int) -> torch.Tensor:
        """(B, nb, nb) bool: query block i attends to key block j. valid_blocks: (B,) counts."""
        device = valid_blocks.device
        qi = torch.arange(num_blocks, device=device)[None, :, None]  # (1, nb, 1)
        kj = torch.arange(num_blocks, device=device)[None, None, :]  # (1, 1, nb)
        last = (valid_blocks - 1).clamp_min(0)[:, None, None]  # (B, 1, 1)
        key_ok = kj <= last  # (B, 1, nb)
        window = (qi - kj).abs() <= self.window_blocks // 2  # (1, nb, nb)
        global_key = (kj == 0) | (kj == last)  # (B, 1, nb)
        global_query = (qi == 0) | (qi == last)  # (B, nb, 1)
        layout = window | global_key | global_query
        r = min(self.num_random_blocks, num_blocks)
        if r:
            candidates = key_ok & ~layout  # (B, nb, nb)
            table = self.random_scores[:num_blocks, :num_blocks]  # (nb, nb)
            scores = torch.where(candidates, table.to(torch.float32), -1.0)  # (B, nb, nb)
            top, picks = scores.topk(r, dim=-1)  # (B, nb, r)
            chosen = torch.zeros_like(candidates).scatter(-1, picks, top >= 0)
            layout = layout | chosen
        return layout & key_ok  # (B, nb, nb)

    def forward(self, q, k, v, key_padding_mask=None):
        B, H, N, D = q.shape
        if N > self.max_len:
            raise ValueError(f"bigbird got length {N} > max_len={self.max_len}; rebuild with a "
                             "larger max_len")
        b = self.block_size
        nb = math.ceil(N / b)
        pad = nb * b - N
        valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)  # (B, N)
        valid = F.pad(valid, (0, pad), value=False)  # (B, Np)
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, Np, D)
        last_valid = valid.view(B, nb, b).any(-1) * torch.arange(nb, device=q.device)  # (B, nb)
        valid_blocks = last_valid.amax(-1) + 1  # (B,): blocks up to the last valid one
        layout = self.block_layout(valid_blocks, nb)  # (B, nb, nb)

        out = self._sparse_rows(q, k, v, valid, layout)  # (B, H, nb, b, Dv)
        out = self._global_rows(q, k, v, valid, valid_blocks, out)
        return out.reshape(B, H, nb * b, -1)[:, :, :N]  # (B, H, N, Dv)

    def _sparse_rows(self, q, k, v, valid, layout):
        """Every query block over its gathered key blocks: (B, H, nb, b, Dv)."""
        B, H, Np, D = q.shape
        b, nb = self.block_size, layout.shape[-1]
        kmax = min(nb, self.window_blocks + 2 + self.num_random_blocks)
        picked, picks = layout.to(torch.int8).topk(kmax, dim=-1)  # (B, nb, kmax)
        batch = torch.arange(B, device=q.device)[:, None, None]  # (B, 1, 1)
        k_blocks = k.view(B, H, nb, b, D).transpose(1, 2)[batch, picks]  # (B, nb, kmax, H, b, D)
        v_blocks = v.view(B, H, nb, b, -1).transpose(1, 2)[batch, picks]  # (B, nb, kmax, H, b, Dv)
        k_blocks = k_blocks.permute(0, 3, 1, 2, 4, 5).reshape(B, H, nb, kmax * b, D)
        v_blocks = v_blocks.permute(0, 3, 1, 2, 4, 5).reshape(B, H, nb, kmax * b, -1)
        key_ok = valid.view(B, nb, b)[batch, picks] & picked.bool()[..., None]  # (B, nb, kmax, b)
        allowed = key_ok.reshape(B, 1, nb, 1, kmax * b)  # (B, 1, nb, 1, kmax*b)
        q_blocks = q.view(B, H, nb, b, D)  # (B, H, nb, b, D)
        scores = q_blocks @ k_blocks.transpose(-1, -2) / math.sqrt(D)  # (B, H, nb, b, kmax*b)
        return _masked_softmax_out(scores, allowed, v_blocks)  # (B, H, nb, b, Dv)

    def _global_rows(self, q, k, v, valid, valid_blocks, out):
        """Overwrite the first and last valid query blocks with full attention rows."""
        B, H, Np, D = q.shape
        b = self.block_size
        blocks = torch.stack([torch.zeros_like(valid_blocks), valid_blocks - 1], dim=-1)  # (B, 2)
        batch = torch.arange(B, device=q.device)[:, None]  # (B, 1)
        q_glob = q.view(B, H, -1, b, D).transpose(1, 2)[batch, blocks]  # (B, 2, H, b, D)
        q_glob = q_glob.transpose(1, 2).reshape(B, H, 2 * b, D)  # (B, H, 2b, D)
        scores = q_glob @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, 2b, Np)
        rows = _masked_softmax_out(scores, valid[:, None, None, :], v)  # (B, H, 2b, Dv)
        rows = rows.view(B, H, 2, b, -1).transpose(1, 2)  # (B, 2, H, b, Dv)
        out = out.transpose(1, 2).clone()  # (B, nb, H, b, Dv)
        out[batch, blocks] = rows
        return out.transpose(1, 2)  # (B, H, nb, b, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """Softmax over each query's window, global and random key blocks (global query
        blocks: over all valid keys), zero elsewhere; read off the forward pass with v = I."""
        return self.forward(q, k, identity_values(q), key_padding_mask)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, block_size={self.block_size}, "
                f"window_blocks={self.window_blocks}, num_random_blocks={self.num_random_blocks}")
