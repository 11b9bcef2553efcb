"""The dense view of the contract: `attention_matrix(q, k, mask) @ v == forward(q, k, v, mask)`.

Parametrized over `available_attentions()` (plus the compat / option variants below), so a new
backend is covered the moment it registers. Values at padded positions are random, not zero,
so a map that should ignore them but does not would fail.
"""

from __future__ import annotations

import pytest
import torch

from lotformer.attention import AttentionBackend, available_attentions
from lotformer.attention.base import DENSE_MAP_MAX_LEN
from tests.lotformer.test_attention_contract import build_small, lengths_mask, make_qkv

F64 = torch.float64


def variant(name, **options):
    """pytest parameter (name, options), id'd by both."""
    label = ",".join(f"{key}={value}" for key, value in options.items())
    return pytest.param(name, options, id=f"{name}[{label}]" if label else name)


# Every backend with its contract-test settings, then its other modes.
VARIANTS = [variant(name) for name in available_attentions()] + [
    variant("performer", compat="harness"),
    variant("nystrom", compat="harness"),
    variant("linformer", compat="harness"),
    variant("skyformer", normalize=True),
    variant("lot", compat="reference", n_iters=5),
    variant("cosformer", reweight=False),
]
# Modes without a fixed map (they redraw random state on every call).
NO_FIXED_MAP = [variant("skyformer", compat="harness")]


def valid_rows(x, mask):
    return x if mask is None else x * mask[:, None, :, None].to(x.dtype)


@pytest.mark.parametrize("name,options", VARIANTS)
@pytest.mark.parametrize("N", [13, 32])
def test_map_times_values_equals_forward(name, options, N):
    B, H, D = 2, 2, 4
    attn = build_small(name, num_heads=H, head_dim=D, n=N, dtype=F64, **options)
    q, k, v = make_qkv(B, H, N, D, dtype=F64, seed=N)
    for mask in (None, lengths_mask([N, N - 5], N)):
        attn_map = attn.attention_matrix(q, k, mask)
        assert attn_map.shape == (B, H, N, N) and attn_map.dtype == F64
        torch.testing.assert_close(valid_rows(attn_map @ v, mask),
                                   valid_rows(attn(q, k, v, mask), mask), rtol=1e-9, atol=1e-11)
        if mask is not None:  # padded query rows are zero
            assert not attn_map[~mask[:, None, :, None].expand_as(attn_map)].any()


@pytest.mark.parametrize("name", available_attentions())
def test_map_in_float32_and_bfloat16(name):
    B, H, N, D = 2, 2, 16, 4
    attn = build_small(name, num_heads=H, head_dim=D, n=N)
    q, k, v = make_qkv(B, H, N, D, seed=5)
    mask = lengths_mask([16, 10], N)
    attn_map = attn.attention_matrix(q, k, mask)
    assert attn_map.dtype == torch.float32
    torch.testing.assert_close(valid_rows(attn_map @ v, mask),
                               valid_rows(attn(q, k, v, mask), mask), rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(attn.attention_matrix(q, k, mask)).all()


@pytest.mark.parametrize("name", ["softmax", "lot", "sinkhorn"])
def test_rows_sum_to_one(name):
    B, H, N, D = 2, 2, 13, 4
    attn = build_small(name, num_heads=H, head_dim=D, n=N, dtype=F64)
    q, k, _ = make_qkv(B, H, N, D, dtype=F64, seed=6)
    mask = lengths_mask([13, 7], N)
    attn_map = attn.attention_matrix(q, k, mask)  # (B, H, N, N)
    rows = attn_map.sum(-1)  # (B, H, N)
    torch.testing.assert_close(rows, mask[:, None, :].to(F64).expand_as(rows), rtol=0, atol=1e-10)
    assert not attn_map[1][..., ~mask[1]].any()  # padded keys get no weight


@pytest.mark.parametrize("name,options", [variant("lot", n_iters=300),
                                          variant("sinkhorn", n_iters=300)])
def test_columns_sum_to_one_at_convergence(name, options):
    B, H, N, D = 2, 2, 13, 4
    attn = build_small(name, num_heads=H, head_dim=D, n=N, dtype=F64, **options)
    q, k, _ = make_qkv(B, H, N, D, dtype=F64, seed=7)
    mask = lengths_mask([13, 8], N)
    cols = attn.attention_matrix(q, k, mask).sum(-2)  # (B, H, N)
    torch.testing.assert_close(cols, mask[:, None, :].to(F64).expand_as(cols), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", available_attentions())
def test_too_long_sequence_raises_naming_the_limit(name):
    attn = build_small(name, num_heads=1, head_dim=2, n=16)
    q = torch.zeros(1, 1, DENSE_MAP_MAX_LEN + 1, 2)
    with pytest.raises(ValueError, match=f"DENSE_MAP_MAX_LEN = {DENSE_MAP_MAX_LEN}"):
        attn.attention_matrix(q, q)


@pytest.mark.parametrize("name,options", NO_FIXED_MAP)
def test_modes_without_a_fixed_map_raise(name, options):
    attn = build_small(name, num_heads=2, head_dim=4, n=16, **options)
    q, k, _ = make_qkv(1, 2, 16, 4, dtype=F64)
    with pytest.raises(NotImplementedError, match="compat='harness'"):
        attn.attention_matrix(q, k)


def test_base_class_has_no_map():
    backend = AttentionBackend(num_heads=1, head_dim=2)
    with pytest.raises(NotImplementedError, match="attention_matrix"):
        backend.attention_matrix(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))
