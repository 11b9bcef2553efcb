"""lotformer.diagnostics on maps with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from lotformer.diagnostics import diagnostics, summarize

F64 = torch.float64
N = 6


def as_map(matrix: torch.Tensor, B: int = 1, H: int = 2) -> torch.Tensor:  # (B, H, N, N)
    return matrix.to(F64).expand(B, H, *matrix.shape).clone()


def check(values: dict[str, torch.Tensor], **expected: float) -> None:
    for name, value in expected.items():
        torch.testing.assert_close(values[name], torch.full_like(values[name], value),
                                   rtol=0, atol=1e-10, msg=name)


def test_uniform_map():
    values = diagnostics(as_map(torch.full((N, N), 1 / N, dtype=F64)))
    check(values, row_sum_deviation=0, column_sum_deviation=0, row_entropy=math.log(N),
          row_entropy_normalized=1, max_column_mass=1, column_mass_gini=0, starved_key_share=0,
          effective_rank=1)


def test_identity_map():
    values = diagnostics(as_map(torch.eye(N)))
    check(values, row_sum_deviation=0, column_sum_deviation=0, row_entropy=0,
          row_entropy_normalized=0, max_column_mass=1, column_mass_gini=0, starved_key_share=0,
          effective_rank=N)


def test_every_row_attends_to_one_key():
    attn = torch.zeros(N, N)
    attn[:, 2] = 1
    values = diagnostics(as_map(attn))
    check(values, row_sum_deviation=0, column_sum_deviation=N - 1, row_entropy=0,
          max_column_mass=N, column_mass_gini=(N - 1) / N, starved_key_share=(N - 1) / N,
          effective_rank=1)


def test_doubly_stochastic_permutation():
    values = diagnostics(as_map(torch.eye(N)[torch.tensor([3, 0, 5, 1, 4, 2])]))
    check(values, row_sum_deviation=0, column_sum_deviation=0, row_entropy=0, max_column_mass=1,
          column_mass_gini=0, starved_key_share=0, effective_rank=N)


def test_general_map_against_direct_formulas():
    """Unequal column masses: Gini from its pairwise definition, entropy and rank directly."""
    g = torch.Generator().manual_seed(0)
    attn = torch.softmax(3 * torch.randn(1, 1, N, N, generator=g, dtype=F64), dim=-1)
    values = diagnostics(attn)
    mass = attn[0, 0].sum(0)  # (N,)
    gini = (mass[:, None] - mass[None, :]).abs().sum() / (2 * N * mass.sum())
    s = torch.linalg.svdvals(attn[0, 0])
    s = s / s.sum()
    check(values, column_mass_gini=float(gini), column_sum_deviation=float((mass - 1).abs().max()),
          row_entropy=float(-(attn * attn.log()).sum() / N),
          effective_rank=float(torch.exp(-(s * s.log()).sum())),
          starved_key_share=float((mass < 0.1).double().mean()))
    assert 0 < values["column_mass_gini"].item() < (N - 1) / N


def test_unnormalised_rows_use_row_distributions():
    """Entropy and column masses use |a_i| / sum |a_i|; the deviations see the raw sums."""
    values = diagnostics(as_map(3 * torch.full((N, N), 1 / N, dtype=F64)))
    check(values, row_sum_deviation=2, column_sum_deviation=2, row_entropy=math.log(N),
          max_column_mass=1, column_mass_gini=0, effective_rank=1)


def test_padded_example_equals_its_valid_block():
    n = 4
    g = torch.Generator().manual_seed(1)
    block = torch.softmax(torch.randn(2, n, n, generator=g, dtype=F64), dim=-1)  # (H, n, n)
    padded = torch.rand(1, 2, N, N, generator=g, dtype=F64) * 5  # garbage at padded entries
    padded[0, :, :n, :n] = block
    mask = torch.arange(N)[None, :] < n  # (1, N)
    alone = diagnostics(block[None])
    for name, value in diagnostics(padded, mask).items():
        torch.testing.assert_close(value, alone[name], rtol=0, atol=1e-12, msg=name)
    assert summarize(padded, mask) == pytest.approx(summarize(block[None]), abs=1e-12)


def test_fully_padded_example_gives_zeros():
    attn = torch.rand(2, 2, N, N, dtype=F64)
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[0] = True
    values = diagnostics(attn, mask)
    for name, value in values.items():
        assert torch.isfinite(value).all(), name
        assert not value[1].any(), name
    # the summary averages over the example that has tokens only
    assert summarize(attn, mask) == pytest.approx(summarize(attn[:1]), abs=1e-12)
    assert summarize(attn, torch.zeros(2, N, dtype=torch.bool)) == dict.fromkeys(values, 0.0)


def test_summarize_averages_over_batch_and_heads():
    attn = torch.stack([as_map(torch.eye(N))[0], as_map(torch.full((N, N), 1 / N, dtype=F64))[0]])
    summary = summarize(attn)
    assert set(summary) == set(diagnostics(attn))
    assert all(isinstance(value, float) for value in summary.values())
    assert summary["effective_rank"] == pytest.approx((N + 1) / 2)
    assert summary["row_entropy"] == pytest.approx(math.log(N) / 2)


def test_float32_map_gives_float32_values():
    values = diagnostics(as_map(torch.eye(N)).float())
    assert all(value.dtype == torch.float32 and value.shape == (1, 2) for value in values.values())
