"""The attention contract, checked for every registered backend.

Parametrized over `available_attentions()`, so a backend is covered the moment it registers.
Each backend is built with small settings that fit the test sizes (SMALL_OPTIONS), passed
as they are (a key the backend does not take fails); a backend without an entry is built with
its defaults.
"""

from __future__ import annotations

import pytest
import torch

from lotformer.attention import (
    UnknownAttentionError,
    attention_class,
    available_attentions,
    build_attention,
)

BACKENDS = available_attentions()

# Small per-backend settings, every key an option of that backend (build_small passes them all).
SMALL_OPTIONS: dict[str, dict] = {
    "linformer": {"proj_dim": 8},
    "nystrom": {"num_landmarks": 8, "conv_kernel": 3},
    "skyformer": {"num_features": 8},
    "performer": {"num_features": 16},
    "sinkhorn": {"n_iters": 3},
    "lot": {"rank": 4},
    "bigbird": {"block_size": 4, "window_blocks": 3, "num_random_blocks": 1},
    "informer": {"factor": 2},
    "reformer": {"num_hashes": 2, "bucket_size": 4},
    "cosformer": {"reweight": True},
    "espformer": {"num_slices": 4},
}

# Backends whose definition does not read the `k` input (Reformer's keys are the normalised
# queries), so no gradient reaches k.
KEY_FREE = {"reformer"}


def build_small(name: str, *, num_heads: int, head_dim: int, n: int,
                dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> torch.nn.Module:
    """Backend `name` sized for sequences of length <= n, in eval mode; `overrides` replace
    or add options (every key must be an option of the backend)."""
    torch.manual_seed(seed)
    attn = build_attention(name, num_heads=num_heads, head_dim=head_dim, max_len=n,
                           **{**SMALL_OPTIONS.get(name, {}), **overrides})
    return attn.to(dtype).eval()


def make_qkv(B: int, H: int, N: int, D: int, *, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, N, D, generator=g, dtype=dtype) for _ in range(3))


def lengths_mask(lengths: list[int], N: int) -> torch.Tensor:
    return torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


def test_registry_has_lot_and_the_baselines():
    for name in ("lot", "softmax", "sinkhorn", "linear", "performer", "nystrom", "linformer",
                 "skyformer"):
        assert name in BACKENDS


def test_small_options_name_registered_backends_and_real_options():
    assert set(SMALL_OPTIONS) <= set(BACKENDS)
    for name in SMALL_OPTIONS:  # build_attention rejects a key the backend does not take
        build_small(name, num_heads=2, head_dim=8, n=16)


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_owns_its_title(name):
    cls = attention_class(name)
    assert isinstance(cls.title, str) and cls.title, f"{name} sets no title"
    assert isinstance(cls.published_names, tuple)
    assert isinstance(build_small(name, num_heads=2, head_dim=8, n=16).bench_fields(), dict)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_floating_inputs_fail_with_one_clear_message(name, dtype):
    B, H, N, D = 2, 2, 16, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N)
    q, k, v = make_qkv(B, H, N, D, seed=9)
    with pytest.raises(ValueError, match=r"attention needs floating-point q, k, v .*; got k "):
        attn(q, (k * 3).to(dtype), v)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_finite(name, dtype):
    B, H, N, D = 2, 2, 16, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N, dtype=dtype)
    q, k, v = make_qkv(B, H, N, D, dtype=dtype)
    for mask in (None, lengths_mask([16, 11], N)):
        out = attn(q, k, v, mask)
        assert out.shape == (B, H, N, D)
        assert out.dtype == dtype
        valid = torch.ones(B, N, dtype=torch.bool) if mask is None else mask
        assert torch.isfinite(out[valid[:, None, :, None].expand_as(out)]).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_all_true_mask_equals_no_mask(name):
    B, H, N, D = 2, 2, 16, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N, dtype=torch.float64)
    q, k, v = make_qkv(B, H, N, D, dtype=torch.float64, seed=1)
    full = torch.ones(B, N, dtype=torch.bool)
    torch.testing.assert_close(attn(q, k, v, full), attn(q, k, v, None), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", BACKENDS)
def test_gradients_reach_inputs_and_parameters(name):
    B, H, N, D = 2, 2, 16, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N).train()
    q, k, v = (t.requires_grad_() for t in make_qkv(B, H, N, D, seed=2))
    mask = lengths_mask([16, 12], N)
    out = attn(q, k, v, mask)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights * mask[:, None, :, None]).sum().backward()
    for label, t in (("q", q), ("k", k), ("v", v)):
        if label == "k" and name in KEY_FREE:
            assert t.grad is None or not t.grad.any()
            continue
        assert t.grad is not None, f"no gradient reached {label}"
        assert torch.isfinite(t.grad).all(), f"non-finite gradient for {label}"
        assert t.grad.abs().sum() > 0, f"zero gradient for {label}"
    for pname, p in attn.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"no gradient reached parameter {pname}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient for parameter {pname}"
            assert p.grad.abs().sum() > 0, f"zero gradient for parameter {pname}"


@pytest.mark.parametrize("name", BACKENDS)
def test_valid_outputs_ignore_padded_content(name):
    B, H, N, D = 2, 2, 16, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N)
    mask = lengths_mask([16, 9], N)
    q, k, v = make_qkv(B, H, N, D, seed=4)
    noise = make_qkv(B, H, N, D, seed=5)
    padded = (~mask)[:, None, :, None]  # (B, 1, N, 1)
    q2, k2, v2 = (torch.where(padded, 5.0 * n + 3.0, t) for t, n in zip((q, k, v), noise))
    assert not torch.equal(k, k2)
    out1 = attn(q, k, v, mask)
    out2 = attn(q2, k2, v2, mask)
    keep = mask[:, None, :, None].expand_as(out1)
    torch.testing.assert_close(out1[keep], out2[keep], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_odd_sizes(name):
    B, H, N, D = 2, 3, 37, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N)
    q, k, v = make_qkv(B, H, N, D, seed=6)
    mask = lengths_mask([37, 23], N)
    for m in (None, mask):
        out = attn(q, k, v, m)
        assert out.shape == (B, H, N, D)
        valid = torch.ones(B, N, dtype=torch.bool) if m is None else m
        assert torch.isfinite(out[valid[:, None, :, None].expand_as(out)]).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_padded_batch_matches_each_sequence_alone(name):
    """A batch of two different lengths gives, at valid positions, what each sequence gives alone."""
    H, N, D = 2, 20, 8
    lengths = [20, 13]
    attn = build_small(name, num_heads=H, head_dim=D, n=N, dtype=torch.float64)
    q, k, v = make_qkv(2, H, N, D, dtype=torch.float64, seed=7)
    out = attn(q, k, v, lengths_mask(lengths, N))
    for b, L in enumerate(lengths):
        alone = attn(q[b:b + 1, :, :L], k[b:b + 1, :, :L], v[b:b + 1, :, :L])
        torch.testing.assert_close(out[b:b + 1, :, :L], alone, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", BACKENDS)
def test_bf16_autocast_is_finite(name):
    B, H, N, D = 2, 2, 16, 8
    attn = build_small(name, num_heads=H, head_dim=D, n=N)
    q, k, v = make_qkv(B, H, N, D, seed=8)
    mask = lengths_mask([16, 10], N)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(q, k, v, mask)
    assert out.shape == (B, H, N, D)
    keep = mask[:, None, :, None].expand_as(out)
    assert torch.isfinite(out.float()[keep]).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_misspelled_option_lists_valid_options(name):
    with pytest.raises(TypeError) as info:
        build_attention(name, num_heads=2, head_dim=8, max_len=16, num_haeds=2)
    message = str(info.value)
    assert "num_haeds" in message
    for option in ("num_heads", "head_dim", "max_len"):
        assert option in message


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownAttentionError) as info:
        build_attention("softmx", num_heads=2, head_dim=8)
    message = str(info.value)
    assert "softmx" in message
    for name in BACKENDS:
        assert name in message
