"""Diagnostics of dense attention maps, e.g. from a backend's `attention_matrix`.

Every function takes a map `attn` (B, H, N, N) (rows = queries, columns = keys) and an optional
`key_padding_mask` (B, N) bool (True = token) and returns one value per (batch, head), (B, H).
Conventions:

- Only valid rows and columns count: padded rows and columns are ignored, so a padded example
  gives the values of its valid (n x n) block alone (n = its number of valid tokens).
- Row / column sum deviations are max |sum - 1| over valid rows / columns of the raw map (sums
  over the valid block).
- Entropies and column masses use the row distributions p_i = |a_i| / sum_j |a_ij| over valid
  keys: the rows themselves for a row-stochastic map (the absolute value only matters for maps
  with negative entries, such as Nyström's). An all-zero row is an all-zero distribution: it
  has entropy 0 and gives no column mass.
- Column mass c_j = sum_i p_ij over valid rows, the doubly-stochastic normalisation: the masses
  sum to n (for n non-zero rows), so uniform attention gives every key mass 1, and a key is
  *starved* when c_j < 0.1, a tenth of the uniform mass.
- Effective rank (Roy and Vetterli, 2007), per head: exp of the entropy of the normalised
  singular values s / sum(s) of the raw valid block; 1 for a rank-one map, n for a permutation.
- An example without valid tokens (or an all-zero map) gives 0 for every quantity: finite,
  never NaN. :func:`summarize` averages over the examples with at least one valid token.
"""

from __future__ import annotations

import torch

STARVED_MASS = 0.1  # a key is starved below a tenth of the uniform column mass 1


def _valid(attn: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, N) bool of valid tokens; all True without a mask."""
    B, _, N, _ = attn.shape
    if key_padding_mask is None:
        return torch.ones(B, N, dtype=torch.bool, device=attn.device)
    return key_padding_mask


def _valid_block(attn: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:  # (B, H, N, N)
    """The map with padded rows and columns zeroed."""
    pair = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, N, N)
    return attn * pair.to(attn.dtype)


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """x with its zeros replaced by 1: a divisor for quantities that are 0 where x is."""
    return torch.where(x != 0, x, torch.ones_like(x))


def _max_deviation(sums: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:  # (B, H)
    """max |sums - 1| over valid positions; sums (B, H, N)."""
    return (sums - 1).abs().masked_fill(~valid[:, None, :], 0.0).amax(dim=-1)


def row_sum_deviation(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H)
    """max over valid rows of |sum over valid keys - 1|."""
    valid = _valid(attn, key_padding_mask)
    return _max_deviation(_valid_block(attn, valid).sum(dim=-1), valid)


def column_sum_deviation(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H)
    """max over valid columns of |sum over valid queries - 1|."""
    valid = _valid(attn, key_padding_mask)
    return _max_deviation(_valid_block(attn, valid).sum(dim=-2), valid)


def row_distributions(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H, N, N)
    """p_i = |a_i| / sum_j |a_ij| over valid keys; zero rows, and padded rows and columns, are 0."""
    block = _valid_block(attn, _valid(attn, key_padding_mask)).abs()  # (B, H, N, N)
    total = block.sum(dim=-1, keepdim=True)  # (B, H, N, 1)
    return block / _nonzero(total)


def row_entropy(attn, key_padding_mask=None, *, normalized: bool = False) -> torch.Tensor:
    """Mean over valid rows of -sum_j p_ij ln p_ij (natural log), (B, H). With `normalized`,
    divided by ln n (so uniform rows give 1); 0 when n <= 1."""
    valid = _valid(attn, key_padding_mask)
    p = row_distributions(attn, key_padding_mask)  # (B, H, N, N)
    n = valid.sum(dim=-1).to(p.dtype)[:, None]  # (B, 1)
    entropy = -torch.xlogy(p, p).sum(dim=(-2, -1)) / n.clamp_min(1)  # (B, H)
    if not normalized:
        return entropy
    return torch.where(n > 1, entropy / torch.log(n.clamp_min(2)), torch.zeros_like(entropy))


def column_masses(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H, N)
    """c_j = sum_i p_ij over valid rows (uniform attention: 1 per key); 0 at padded keys."""
    return row_distributions(attn, key_padding_mask).sum(dim=-2)


def max_column_mass(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H)
    """The largest column mass: 1 for uniform attention, n when every row attends to one key."""
    return column_masses(attn, key_padding_mask).amax(dim=-1)


def column_mass_gini(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H)
    """Gini coefficient of the column masses over valid keys, 0 (equal) to (n - 1) / n (one
    key takes all): 2 sum_i i c_(i) / (n sum c) - (n + 1) / n with c ascending, i = 1..n."""
    valid = _valid(attn, key_padding_mask)
    mass = column_masses(attn, key_padding_mask)  # (B, H, N)
    ascending = mass.masked_fill(~valid[:, None, :], torch.inf).sort(dim=-1).values
    ascending = torch.nan_to_num(ascending, posinf=0.0)  # padded keys last, with mass 0
    rank = torch.arange(1, mass.shape[-1] + 1, dtype=mass.dtype, device=mass.device)  # (N,)
    n = valid.sum(dim=-1).to(mass.dtype)[:, None]  # (B, 1)
    total = mass.sum(dim=-1)  # (B, H)
    gini = 2 * (rank * ascending).sum(dim=-1) / _nonzero(n * total) - (n + 1) / _nonzero(n)
    return torch.where(total > 0, gini, torch.zeros_like(gini))


def starved_key_share(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H)
    """Share of valid keys with column mass below STARVED_MASS (a tenth of uniform)."""
    valid = _valid(attn, key_padding_mask)
    starved = (column_masses(attn, key_padding_mask) < STARVED_MASS) & valid[:, None, :]
    n = valid.sum(dim=-1).clamp_min(1).to(attn.dtype)[:, None]  # (B, 1)
    return starved.sum(dim=-1).to(attn.dtype) / n


def effective_rank(attn, key_padding_mask=None) -> torch.Tensor:  # (B, H)
    """exp(-sum_k s_k ln s_k) of the normalised singular values of each head's valid block."""
    block = _valid_block(attn, _valid(attn, key_padding_mask))  # (B, H, N, N)
    compute = torch.promote_types(block.dtype, torch.float32)
    singular = torch.linalg.svdvals(block.to(compute))  # (B, H, N); padding adds zeros only
    total = singular.sum(dim=-1, keepdim=True)  # (B, H, 1)
    s = singular / _nonzero(total)
    rank = torch.exp(-torch.xlogy(s, s).sum(dim=-1))  # (B, H)
    return torch.where(total[..., 0] > 0, rank, torch.zeros_like(rank)).to(attn.dtype)


def diagnostics(attn, key_padding_mask=None) -> dict[str, torch.Tensor]:
    """Every diagnostic of this module, each (B, H), by name."""
    return {
        "row_sum_deviation": row_sum_deviation(attn, key_padding_mask),
        "column_sum_deviation": column_sum_deviation(attn, key_padding_mask),
        "row_entropy": row_entropy(attn, key_padding_mask),
        "row_entropy_normalized": row_entropy(attn, key_padding_mask, normalized=True),
        "max_column_mass": max_column_mass(attn, key_padding_mask),
        "column_mass_gini": column_mass_gini(attn, key_padding_mask),
        "starved_key_share": starved_key_share(attn, key_padding_mask),
        "effective_rank": effective_rank(attn, key_padding_mask),
    }


def summarize(attn, key_padding_mask=None) -> dict[str, float]:
    """:func:`diagnostics` averaged over heads and over the examples with at least one valid
    token (all 0.0 when there is none)."""
    has_tokens = _valid(attn, key_padding_mask).any(dim=-1)  # (B,)
    count = int(has_tokens.sum()) * attn.shape[1]
    return {name: float(values[has_tokens].sum()) / count if count else 0.0
            for name, values in diagnostics(attn, key_padding_mask).items()}
