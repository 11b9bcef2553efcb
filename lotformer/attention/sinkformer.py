"""Full doubly-stochastic attention in the style of Sinkformers.

Sander, Ablin, Blondel and Peyré, "Sinkformers: Transformers with Doubly Stochastic
Attention", AISTATS 2022.

The n x n scores S = q k^T / sqrt(D) are turned into an entropic optimal-transport plan with
log-domain Sinkhorn (temperature 1, Gibbs kernel exp(S)) between uniform measures on the
valid tokens, a_i = b_j = 1 / n_valid (padded rows and columns get zero mass). The attention
map is A = n_valid * P.

Iteration convention: the loop starts with a row normalisation (which alone is softmax), then
each of the `n_iters` iterations is a column update followed by a row update. Ending on the
row update keeps A exactly row-stochastic at any iteration count (every output is a convex
combination of values, as with softmax), and the column sums converge to 1 as `n_iters`
grows. `n_iters = 0` is softmax attention.

Counting convention versus the paper: Sinkformers count alternating normalisations (1 =
softmax), which is 2 * n_iters + 1 here. The default `n_iters = 3` is therefore 7
normalisations; the Sinkformer paper's experiments use 3 normalisations, which is
`n_iters = 1` here.

Cost: O(n^2) time and memory per head (the map is dense), like softmax. The Sinkhorn loop
always runs in float32 (float64 if the inputs are float64) with autocast disabled (the policy
of every backend, base.py); the output
is cast back to the input dtype.
"""

from __future__ import annotations

import math

import torch

from lotformer.attention.base import AttentionBackend, dense_map
from lotformer.attention.registry import register_attention

# Finite stand-in for -inf on masked score entries: exp() of it is exactly 0, and unlike
# -inf it never yields NaN in log-sum-exp gradients when a whole row is masked.
_MASKED_SCORE = -1e9


def sinkhorn_attention_map(
    q: torch.Tensor,  # (B, H, N, D)
    k: torch.Tensor,  # (B, H, N, D)
    key_padding_mask: torch.Tensor | None = None,  # (B, N) bool, True = token
    *,
    n_iters: int = 3,
) -> torch.Tensor:  # (B, H, N, N)
    """Dense Sinkformer attention map A = n_valid * P in the dtype of `q` (no autocast).

    Valid rows sum exactly to 1; valid columns sum to 1 up to the Sinkhorn error after
    `n_iters` iterations. Rows and columns at padded positions are exactly 0.
    """
    if n_iters < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")
    B, H, N, D = q.shape
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(D)  # (B, H, N, N)
    if key_padding_mask is None:
        valid = torch.ones(B, N, dtype=torch.bool, device=q.device)  # (B, N)
    else:
        valid = key_padding_mask
    pair_valid = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, N, N)
    scores = scores.masked_fill(~pair_valid, _MASKED_SCORE)  # (B, H, N, N)

    n_valid = valid.sum(-1).clamp_min(1).to(scores.dtype)  # (B,)
    log_mass = -torch.log(n_valid)[:, None, None]  # (B, 1, 1): log(1 / n_valid)
    row_valid = valid[:, None, :]  # (B, 1, N)

    def row_update(g: torch.Tensor) -> torch.Tensor:  # g: (B, H, N) -> f: (B, H, N)
        f = log_mass - torch.logsumexp(scores + g[..., None, :], dim=-1)
        return f.masked_fill(~row_valid, 0.0)

    def column_update(f: torch.Tensor) -> torch.Tensor:  # f: (B, H, N) -> g: (B, H, N)
        g = log_mass - torch.logsumexp(scores + f[..., :, None], dim=-2)
        return g.masked_fill(~row_valid, 0.0)

    g = torch.zeros(B, H, N, dtype=scores.dtype, device=scores.device)  # (B, H, N)
    f = row_update(g)  # softmax potentials
    for _ in range(n_iters):
        g = column_update(f)
        f = row_update(g)
    log_plan = scores + f[..., :, None] + g[..., None, :]  # (B, H, N, N)
    return torch.exp(log_plan + torch.log(n_valid)[:, None, None, None])  # (B, H, N, N)


@register_attention("sinkhorn")
class SinkhornAttention(AttentionBackend):
    """Sinkformer attention: A v with A the Sinkhorn-balanced (doubly stochastic) score map."""

    title = "Sinkformer"
    # The LRA paper's "Sinkhorn Transformer" (Tay et al., sparse sorting) is another method.
    published_names = ()

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 n_iters: int = 3) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if n_iters < 0:
            raise ValueError(f"n_iters must be >= 0 (0 = softmax), got {n_iters}")
        self.n_iters = n_iters

    def forward(self, q, k, v, key_padding_mask=None):
        attn = sinkhorn_attention_map(q, k, key_padding_mask, n_iters=self.n_iters)  # (B, H, N, N)
        return attn @ v  # (B, H, N, D)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """The Sinkhorn-balanced map n_valid * P (see :func:`sinkhorn_attention_map`)."""
        return sinkhorn_attention_map(q, k, key_padding_mask, n_iters=self.n_iters)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_iters={self.n_iters}"
