"""Reformer LSH attention with shared queries and keys.

Kitaev, Kaiser and Levskaya, "Reformer: The Efficient Transformer", ICLR 2020.

Shared QK: the keys are the unit-normalised queries, k_j = q_j / |q_j| (the `k` input is not
used), and the scores are q_i . k_j (the Hugging Face implementation's scaling, used by the
LRA harness: keys normalised to length sqrt(D), then divided by sqrt(D)). A token may not
attend to its own position unless nothing else is available (its score is replaced by
-1e5, as in the Hugging Face code).

LSH: for each of `num_hashes` rounds, tokens are hashed by random rotations R (D x nb/2):
bucket = argmax([x R, -x R]). Tokens are sorted by (bucket, position), cut into chunks of
`bucket_size`, and each chunk attends to itself and the previous chunk (no wrap-around, so
the first chunk sees no padding of another sequence). Padded tokens are sorted after all
valid ones and masked. Rounds are combined with weights softmax_r(logsumexp of round r's
scores) per query, as in the Hugging Face code (a key found in several rounds counts
several times). Cost: O(num_hashes N bucket_size D).

Defaults follow the Skyformer harness (Hugging Face LSHSelfAttention with num_hashes=2 and
its default chunk length 64); `num_buckets=0` derives the bucket count as Hugging Face does,
the largest power of two <= 2 max_len / bucket_size. The rotations are drawn once at
construction (buffer `rotations`); Hugging Face draws new ones on every call, and wraps the
first chunk around to the last one. With one bucket and bucket_size >= N the layer is
shared-QK softmax attention with the own-position rule.

Runs in float32 (float64 for float64 inputs) with autocast disabled; the output is cast back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lotformer.attention.base import (
    AttentionBackend,
    dense_map,
    identity_values,
)
from lotformer.attention.registry import register_attention

SELF_SCORE = -1e5  # score of a token for its own position


def derived_num_buckets(max_len: int, bucket_size: int) -> int:
    """Largest power of two <= 2 max_len / bucket_size (at least 1), the Hugging Face rule."""
    target = max(1, 2 * max_len // bucket_size)
    return 2 ** (target.bit_length() - 1)


@register_attention("reformer")
class ReformerAttention(AttentionBackend):
    """Shared-QK LSH attention over sorted bucket chunks plus one chunk back."""

    title = "Reformer"
    published_names = ("Reformer",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 num_hashes: int = 2, bucket_size: int = 64, num_buckets: int = 0) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if num_hashes < 1:
            raise ValueError(f"num_hashes must be >= 1, got {num_hashes}")
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        if num_buckets < 0 or (num_buckets > 1 and num_buckets % 2):
            raise ValueError(f"num_buckets must be 0 (derived from max_len), 1, or an even number "
                             f">= 2, got {num_buckets}")
        if num_buckets == 0:
            if max_len is None or max_len < 1:
                raise ValueError("reformer with num_buckets=0 derives the bucket count from "
                                 f"max_len; pass max_len >= 1 or num_buckets, got max_len={max_len}")
            num_buckets = derived_num_buckets(max_len, bucket_size)
        self.num_hashes = num_hashes
        self.bucket_size = bucket_size
        self.num_buckets = num_buckets
        self.register_buffer("rotations", torch.randn(num_hashes, head_dim, max(num_buckets // 2, 1)))

    def buckets(self, keys: torch.Tensor) -> torch.Tensor:
        """LSH bucket of each unit key: (B, H, N, D) -> (B, H, R, N)."""
        B, H, N, _ = keys.shape
        if self.num_buckets == 1:
            return torch.zeros(B, H, self.num_hashes, N, dtype=torch.long, device=keys.device)
        rotated = torch.einsum("bhnd,rdk->bhrnk", keys, self.rotations.to(keys.dtype))
        return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)  # (B, H, R, N)

    def forward(self, q, k, v, key_padding_mask=None):
        B, H, N, D = q.shape
        c = self.bucket_size
        Np = math.ceil(N / c) * c
        valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)
        valid = F.pad(valid, (0, Np - N), value=False)  # (B, Np)
        q, v = F.pad(q, (0, 0, 0, Np - N)), F.pad(v, (0, 0, 0, Np - N))  # (B, H, Np, D)
        keys = F.normalize(q, dim=-1)  # (B, H, Np, D)
        position = torch.arange(Np, device=q.device)  # (Np,)
        bucket = self.buckets(keys).masked_fill(~valid[:, None, None, :], self.num_buckets)
        order = (bucket * Np + position).argsort(dim=-1)  # (B, H, R, Np)
        out, lse = self._chunked(q, keys, v, valid, order)  # (B, H, R, Np, Dv), (B, H, R, Np)
        unsort = order.argsort(dim=-1)  # (B, H, R, Np)
        out = out.gather(3, unsort[..., None].expand_as(out))
        weights = torch.softmax(lse.gather(3, unsort), dim=2)  # (B, H, R, Np)
        return (weights[..., None] * out).sum(2)[:, :, :N]  # (B, H, N, Dv)

    def _chunked(self, q, keys, v, valid, order):
        """Attention of each sorted chunk to itself and the chunk before, per hash round."""
        B, H, Np, D = q.shape
        R, c = order.shape[2], self.bucket_size
        nc = Np // c

        def sort(x):  # (B, H, Np, E) -> (B, H, R, nc, c, E) in sorted order
            x = x[:, :, None].expand(-1, -1, R, -1, -1)
            return x.gather(3, order[..., None].expand(-1, -1, -1, -1, x.shape[-1])).view(
                B, H, R, nc, c, -1)

        def with_previous(x):  # (B, H, R, nc, c, E) -> (B, H, R, nc, 2c, E)
            return torch.cat([F.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :, :-1], x], dim=4)

        sq, sk, sv = sort(q), with_previous(sort(keys)), with_previous(sort(v))
        pos = order.view(B, H, R, nc, c)  # original positions in sorted order
        key_pos = with_previous(pos[..., None] + 1)[..., 0] - 1  # (B, H, R, nc, 2c), -1 = none
        key_ok = valid[:, None, None, :].expand(-1, H, R, -1).gather(3, key_pos.clamp_min(0).view(
            B, H, R, -1)).view_as(key_pos) & (key_pos >= 0)  # (B, H, R, nc, 2c)
        scores = sq @ sk.transpose(-1, -2)  # (B, H, R, nc, c, 2c)
        scores = scores.masked_fill(pos[..., None] == key_pos[..., None, :], SELF_SCORE)
        scores = scores.masked_fill(~key_ok[..., None, :], torch.finfo(scores.dtype).min)
        lse = scores.logsumexp(dim=-1)  # (B, H, R, nc, c)
        out = torch.exp(scores - lse[..., None]) @ sv  # (B, H, R, nc, c, Dv)
        return out.view(B, H, R, Np, -1), lse.view(B, H, R, Np)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """Sum over hash rounds of the round weight times the softmax over the query's chunk and
        the previous one (a key found in several rounds counts in each); zero outside them.
        Read off the forward pass with v = I (the rotations are fixed)."""
        return self.forward(q, k, identity_values(q), key_padding_mask)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_hashes={self.num_hashes}, "
                f"bucket_size={self.bucket_size}, num_buckets={self.num_buckets}")
