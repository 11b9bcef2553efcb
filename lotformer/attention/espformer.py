"""ESPFormer: doubly-stochastic attention from expected sliced transport plans.

Shahbazi, Akbari, Salehi, Liu, NaderiAlizadeh and Kolouri, "ESPFormer: Doubly-Stochastic
Attention with Expected Sliced Transport Plans", ICML 2025.

Queries and keys (scaled by D^(-1/2)) are projected on L fixed random unit directions theta_l
(buffer `directions`). In each slice the 1-D optimal plan between the n valid queries and
the n valid keys matches the i-th smallest query to the i-th smallest key; it is relaxed by
soft sorting (SoftSort, Prillo and Eisenschlos 2020, with squared distances as in the
authors' code) at temperature `tau`:

    Pq[i, a] = softmax_i(-(x_a - sort(x)_i)^2 / tau)   (query a's soft rank; columns sum to 1)
    Pk[i, b] = softmax_b(-(y_b - sort(y)_i)^2 / tau)   (slot i's soft key; rows sum to 1)
    G_l = Pq^T Pk                                       (n x n; rows sum exactly to 1)

The slices are averaged with weights softmax_l(-temperature * sum_ab G_l[a, b] |q_a - k_b|)
(the authors' aggregation: lower-cost plans weigh more; temperature 0 is the plain mean), and
out = (sum_l w_l G_l) v. Every row of the map sums to 1; as tau -> 0 each G_l tends to a
permutation matrix, so the map tends to a doubly-stochastic one.

Differences from the authors' code: it slices along the head coordinates themselves (L = D,
identity directions) and soft-sorts both sides with the row-normalised SoftSort, so its rows
sum to 1 only approximately; here the directions are random and the query side is
column-normalised. Padded tokens take no slot and get no weight.

Cost: O(L N^2) time, O(N^2) memory per head, in training too (slices are accumulated one at a
time; with autograd each slice is recomputed in the backward pass rather than stored). Runs in
float32 (float64 for float64 inputs) with autocast disabled; the output is cast back.
"""

from __future__ import annotations


import torch
from torch.utils.checkpoint import checkpoint

from lotformer.attention.base import AttentionBackend, dense_map
from lotformer.attention.registry import register_attention


def soft_sort_plans(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor,
                    tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft rank of x and soft sort of y: x, y (..., N) with valid (..., N) bool ->
    Pq, Pk (..., N slots, N tokens); slots beyond the valid count and padded tokens are 0."""
    n_valid = valid.sum(-1, keepdim=True)  # (..., 1)
    slot_ok = torch.arange(x.shape[-1], device=x.device) < n_valid  # (..., N)

    def sorted_slots(z):  # (..., N): ascending valid values, then zeros
        s = z.masked_fill(~valid, torch.inf).sort(dim=-1).values
        return s.masked_fill(~slot_ok, 0.0)

    xs, ys = sorted_slots(x), sorted_slots(y)  # (..., N)
    x, y = x.masked_fill(~valid, 0.0), y.masked_fill(~valid, 0.0)
    logits_q = -(x[..., None, :] - xs[..., :, None]) ** 2 / tau  # (..., slot i, token a)
    logits_q = logits_q.masked_fill(~slot_ok[..., :, None], -torch.inf)
    p_q = torch.softmax(logits_q, dim=-2).masked_fill(~valid[..., None, :], 0.0)
    logits_k = -(y[..., None, :] - ys[..., :, None]) ** 2 / tau  # (..., slot i, token b)
    logits_k = logits_k.masked_fill(~valid[..., None, :], -torch.inf)
    p_k = torch.softmax(logits_k, dim=-1).masked_fill(~slot_ok[..., :, None], 0.0)
    return p_q, p_k


@register_attention("espformer")
class ESPFormerAttention(AttentionBackend):
    """Weighted average over random slices of soft-sorted 1-D transport plans."""

    title = "ESPFormer"
    published_names = ()

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 num_slices: int = 32, tau: float = 1e-3, temperature: float = 10.0) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if num_slices < 1:
            raise ValueError(f"num_slices must be >= 1, got {num_slices}")
        if tau <= 0:
            raise ValueError(f"tau (soft-sort temperature) must be > 0, got {tau}")
        if temperature < 0:
            raise ValueError(f"temperature (slice weighting) must be >= 0, got {temperature}")
        self.num_slices = num_slices
        self.tau = tau
        self.temperature = temperature
        directions = torch.randn(num_slices, head_dim)
        self.register_buffer("directions", directions / directions.norm(dim=-1, keepdim=True))

    def slice_plans(self, q, k, key_padding_mask=None):
        """Per-slice plans G_l (B, H, L, N, N) and their weights w_l (B, H, L), densely."""
        plans, costs = zip(*(self._slice(q, k, key_padding_mask, l) for l in range(self.num_slices)))
        costs = torch.stack(costs, dim=-1)  # (B, H, L)
        return torch.stack(plans, dim=2), torch.softmax(-self.temperature * costs, dim=-1)

    def _slice(self, q, k, key_padding_mask, l):
        """Plan G_l (B, H, N, N) and its transport cost (B, H)."""
        B, H, N, D = q.shape
        valid = (torch.ones(B, N, dtype=torch.bool, device=q.device)
                 if key_padding_mask is None else key_padding_mask)
        theta = self.directions[l].to(q.dtype)  # (D,)
        x, y = (q @ theta) * D ** -0.5, (k @ theta) * D ** -0.5  # (B, H, N)
        p_q, p_k = soft_sort_plans(x, y, valid[:, None, :].expand(-1, H, -1), self.tau)
        plan = p_q.transpose(-1, -2) @ p_k  # (B, H, N, N)
        distance = torch.cdist(q * D ** -0.5, k * D ** -0.5)  # (B, H, N, N)
        return plan, (plan * distance).sum(dim=(-2, -1))

    def _slice_output(self, q, k, v, key_padding_mask, l):
        """G_l v (B, H, N, Dv) and the slice's cost (B, H)."""
        plan, cost = self._slice(q, k, key_padding_mask, l)  # (B, H, N, N), (B, H)
        return plan @ v, cost

    def forward(self, q, k, v, key_padding_mask=None):
        # Online softmax over slices: only one N x N plan is alive at a time, in the backward
        # pass too (each slice is recomputed there instead of keeping its N x N intermediates).
        best = acc = norm = None
        for l in range(self.num_slices):
            if torch.is_grad_enabled():
                plan_v, cost = checkpoint(self._slice_output, q, k, v, key_padding_mask, l,
                                          use_reentrant=False)
            else:
                plan_v, cost = self._slice_output(q, k, v, key_padding_mask, l)
            logit = -self.temperature * cost  # (B, H)
            new_best = logit if best is None else torch.maximum(best, logit)
            scale = torch.exp(logit - new_best)[..., None, None]  # (B, H, 1, 1)
            term = scale * plan_v  # (B, H, N, Dv)
            if best is None:
                acc, norm = term, scale
            else:
                decay = torch.exp(best - new_best)[..., None, None]
                acc, norm = acc * decay + term, norm * decay + scale
            best = new_best
        return acc / norm  # (B, H, N, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """sum_l w_l G_l from :meth:`slice_plans` (all L plans are held at once)."""
        plans, weights = self.slice_plans(q, k, key_padding_mask)  # (B, H, L, N, N), (B, H, L)
        return (weights[..., None, None] * plans).sum(dim=2)  # (B, H, N, N)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_slices={self.num_slices}, tau={self.tau}, "
                f"temperature={self.temperature}")
