"""Informer ProbSparse self-attention.

Zhou, Zhang, Peng, Zhang, Li, Xiong and Zhang, "Informer: Beyond Efficient Transformer for
Long Sequence Time-Series Forecasting", AAAI 2021.

For a sequence with n valid tokens and sampling factor c, let u = min(c ceil(ln n), n) (the
authors' code rounds ln n up). Each query q_i is scored on U = u keys k_s sampled uniformly
with replacement from the valid keys by the max-mean measurement

    M(q_i) = max_s q_i.k_s / sqrt(D) - mean_s q_i.k_s / sqrt(D),

the u queries with the largest M ("active") get softmax attention over all valid keys, and
the other ("lazy") queries get the mean of v over the valid tokens. Cost: O(N u D).
With u >= n (c large) every query is active and the layer is softmax attention.

Samples: query position i uses row i of the fixed table `sample_uniforms` (max_len x U_max,
uniform, drawn at construction from the global RNG, in the state dict); sample s picks the
floor(uniform * n)-th valid key. The measurement averages over the U samples (the paper's
mean over keys, estimated on the sample).

Differences from the Skyformer harness (models/attention_informer.py): the harness uses
c = ceil(in_nb_features / ln(max_len)) with in_nb_features = 128 (17 for ListOps, 16 for
Text/Retrieval, 19 at length 1024), not the paper's c = 5; draws new samples on every call
from all positions (one set shared by the batch and heads); divides the sampled sum by the
sequence length instead of the sample count; and ignores the padding mask (padded keys
enter the softmax and the mean of v).
"""

from __future__ import annotations

import math

import torch

from lotformer.attention.base import (
    AttentionBackend,
    dense_map,
    identity_values,
    require_max_len,
    zero_padded,
)
from lotformer.attention.registry import register_attention


def probsparse_count(n: torch.Tensor, factor: int) -> torch.Tensor:
    """u = min(factor * ceil(ln n), n) for valid-token counts n: (B,) -> (B,)."""
    logs = torch.log(n.clamp_min(1).to(torch.float64)).ceil().long()
    return torch.minimum(factor * logs, n)


@register_attention("informer")
class InformerAttention(AttentionBackend):
    """ProbSparse attention: top-u queries by the max-mean measurement, lazy ones get mean(v)."""

    title = "Informer"
    published_names = ()

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 factor: int = 5) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if factor < 1:
            raise ValueError(f"factor (the sampling factor c) must be >= 1, got {factor}")
        require_max_len(max_len, "informer", "fixed key-sample table")
        self.factor = factor
        max_samples = max(1, int(probsparse_count(torch.tensor([max_len]), factor)))
        self.register_buffer("sample_uniforms", torch.rand(max_len, max_samples))

    def _measurement(self, q, k, valid, n_valid):
        """Max-mean measurement M: (B, H, N), -inf at padded queries."""
        B, H, N, D = q.shape
        samples = probsparse_count(n_valid, self.factor).clamp_min(1)  # (B,)
        width = int(samples.max())
        order = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)  # (B, N): valid first
        rank = (self.sample_uniforms[:N, :width].to(torch.float64)
                * n_valid[:, None, None]).long()  # (B, N, U): rank among valid keys
        keys = order.gather(1, rank.view(B, -1)).view(B, N, width)  # (B, N, U) positions
        batch = torch.arange(B, device=q.device)[:, None, None]
        k_sample = k.transpose(1, 2)[batch, keys]  # (B, N, U, H, D)
        dots = torch.einsum("bhnd,bnuhd->bhnu", q, k_sample) / math.sqrt(D)  # (B, H, N, U)
        used = (torch.arange(width, device=q.device) < samples[:, None])[:, None, None, :]  # (B,1,1,U)
        top = dots.masked_fill(~used, -torch.inf).amax(-1)  # (B, H, N)
        mean = (dots * used).sum(-1) / samples[:, None, None].to(dots.dtype)  # (B, H, N)
        return (top - mean).masked_fill(~valid[:, None, :], -torch.inf)

    def forward(self, q, k, v, key_padding_mask=None):
        B, H, N, D = q.shape
        if N > self.max_len:
            raise ValueError(f"informer got length {N} > max_len={self.max_len}; rebuild with a "
                             "larger max_len")
        valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)  # (B, N)
        n_valid = valid.sum(-1)  # (B,)
        v = zero_padded(v, valid)  # (B, H, N, Dv)
        lazy = v.sum(-2, keepdim=True) / n_valid.clamp_min(1)[:, None, None, None].to(v.dtype)
        out = lazy.expand(-1, -1, N, -1).clone()  # (B, H, N, Dv): mean of v for lazy queries
        u = probsparse_count(n_valid, self.factor)  # (B,)
        width = int(u.max())
        if width == 0:
            return out
        picks = self._measurement(q, k, valid, n_valid).topk(width, dim=-1).indices  # (B, H, u)
        q_top = q.gather(2, picks[..., None].expand(-1, -1, -1, D))  # (B, H, u, D)
        scores = q_top @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, u, N)
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
        active = torch.softmax(scores, dim=-1) @ v  # (B, H, u, Dv)
        keep = (torch.arange(width, device=q.device) < u[:, None])[:, None, :, None]  # (B, 1, u, 1)
        active = torch.where(keep, active, lazy)  # rank >= u_b: stays lazy
        index = picks[..., None].expand(-1, -1, -1, active.shape[-1])  # (B, H, u, Dv)
        return out.scatter(2, index, active)  # (B, H, N, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """Active queries: softmax over the valid keys; lazy queries: uniform 1 / n_valid over
        them. Read off the forward pass with v = I (the key samples are a fixed table)."""
        return self.forward(q, k, identity_values(q), key_padding_mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"
