"""Numerical identities of the baseline attention backends (float64 unless noted)."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from lotformer.attention import build_attention
from lotformer.attention.nystrom import iterative_pinv
from lotformer.attention.performer import orthogonal_gaussian_features
from lotformer.attention.sinkformer import sinkhorn_attention_map
from lotformer.attention.skyformer import gaussian_kernel_attention

F64 = torch.float64


def make_qkv(B, H, N, D, *, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=F64) for _ in range(3))
    return q * scale, k * scale, v


def lengths_mask(lengths, N):
    return torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


def build(name, H=2, D=4, **options):
    return build_attention(name, num_heads=H, head_dim=D, **options).to(F64).eval()


def explicit_softmax(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], -math.inf)
    return torch.softmax(scores, dim=-1) @ v


def valid_part(x, mask):
    return x[mask[:, None, :, None].expand_as(x)]


# --- softmax -----------------------------------------------------------------------------

def test_softmax_equals_explicit_formula_with_mask():
    q, k, v = make_qkv(2, 2, 10, 4, seed=1)
    mask = lengths_mask([10, 6], 10)
    attn = build("softmax")
    torch.testing.assert_close(attn(q, k, v), explicit_softmax(q, k, v), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(attn(q, k, v, mask), explicit_softmax(q, k, v, mask),
                               rtol=1e-10, atol=1e-12)


# --- linear ------------------------------------------------------------------------------

def test_linear_equals_explicit_quadratic_form_with_mask():
    q, k, v = make_qkv(2, 2, 10, 4, seed=2)
    mask = lengths_mask([10, 7], 10)
    attn = build("linear")
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    weights = phi(q) @ phi(k).transpose(-1, -2) * mask[:, None, None, :]  # (B, H, N, N)
    expected = weights @ v / (weights.sum(-1, keepdim=True) + attn.eps)
    torch.testing.assert_close(attn(q, k, v, mask), expected, rtol=1e-10, atol=1e-12)


# --- nystrom -----------------------------------------------------------------------------

def test_nystrom_with_n_landmarks_is_softmax():
    q, k, v = make_qkv(2, 2, 12, 4, seed=3)
    mask = lengths_mask([12, 8], 12)
    attn = build("nystrom", num_landmarks=12)
    torch.testing.assert_close(attn(q, k, v), explicit_softmax(q, k, v), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(attn(q, k, v, mask), explicit_softmax(q, k, v, mask),
                               rtol=1e-10, atol=1e-12)


def test_nystrom_single_token_landmarks_reproduce_softmax():
    """n_valid < num_landmarks < N: each valid token is a landmark, surplus ones are disabled,
    so with a converged pseudo-inverse the approximate path is exact on the valid tokens."""
    q, k, v = make_qkv(1, 2, 12, 4, seed=4, scale=0.5)
    mask = lengths_mask([5], 12)
    attn = build("nystrom", num_landmarks=8, pinv_iters=40)
    out = attn(q, k, v, mask)
    torch.testing.assert_close(valid_part(out, mask), valid_part(explicit_softmax(q, k, v, mask), mask),
                               rtol=1e-8, atol=1e-10)
    # with few landmarks it is only an approximation (so the check above is not vacuous)
    rough = build("nystrom", num_landmarks=2)(q, k, v, mask)
    assert (valid_part(rough - explicit_softmax(q, k, v, mask), mask)).abs().max() > 1e-4


def test_iterative_pinv_converges_to_pseudo_inverse():
    g = torch.Generator().manual_seed(5)
    a = torch.softmax(torch.randn(3, 6, 6, generator=g, dtype=F64), dim=-1)
    torch.testing.assert_close(iterative_pinv(a, 40), torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)


def test_nystrom_conv_skip_adds_depthwise_conv_of_values():
    q, k, v = make_qkv(1, 2, 12, 4, seed=6)
    plain = build("nystrom", num_landmarks=12)
    with_conv = build("nystrom", num_landmarks=12, conv_kernel=3)
    weight = with_conv.conv.weight  # (H, 1, 3, 1)
    padded = torch.nn.functional.pad(v, (0, 0, 1, 1))  # (B, H, N + 2, D)
    conv = sum(weight[None, :, 0, t, 0, None, None] * padded[:, :, t:t + 12] for t in range(3))
    torch.testing.assert_close(with_conv(q, k, v), plain(q, k, v) + conv, rtol=1e-10, atol=1e-12)


# --- performer ---------------------------------------------------------------------------

def test_orthogonal_features_are_orthogonal_and_estimate_the_softmax_kernel():
    torch.manual_seed(0)
    w = orthogonal_gaussian_features(65536, 4).to(F64)  # (m, D)
    block = w[:4] / w[:4].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(4, dtype=F64), rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    x, y = (0.4 * torch.randn(3, 4, generator=g, dtype=F64) for _ in range(2))
    feats = lambda z: torch.exp(z @ w.T - 0.5 * (z * z).sum(-1, keepdim=True))  # noqa: E731
    estimate = feats(x) @ feats(y).T / w.shape[0]
    torch.testing.assert_close(estimate, torch.exp(x @ y.T), rtol=0.03, atol=0)


def _performer_error(num_features: int, seed: int) -> float:
    q, k, v = make_qkv(2, 2, 48, 8, seed=100 + seed, scale=0.5)
    torch.manual_seed(seed)
    attn = build("performer", D=8, num_features=num_features)
    exact = explicit_softmax(q, k, v)
    return ((attn(q, k, v) - exact).norm() / exact.norm()).item()


def test_performer_error_falls_with_more_features():
    errors = {m: np.mean([_performer_error(m, s) for s in range(4)]) for m in (16, 128, 1024)}
    assert errors[128] < 0.8 * errors[16]
    assert errors[1024] < 0.6 * errors[128]
    assert errors[1024] < 0.35 * errors[16]


def test_performer_redraw_policy():
    q, k, v = make_qkv(1, 2, 8, 4, seed=7)
    fixed = build("performer", num_features=8).train()
    first = fixed.projection.clone()
    for _ in range(3):
        fixed(q, k, v)
    assert torch.equal(fixed.projection, first)
    assert "projection" in fixed.state_dict()

    redraw = build("performer", num_features=8, redraw_interval=2).train()
    seen = []
    for _ in range(5):
        redraw(q, k, v)
        seen.append(redraw.projection.clone())
    assert torch.equal(seen[0], seen[1])  # calls 1-2 share a draw
    assert not torch.equal(seen[1], seen[2])  # call 3 redraws
    assert torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[3], seen[4])
    redraw.eval()
    for _ in range(4):
        redraw(q, k, v)
    assert torch.equal(redraw.projection, seen[4])  # eval never redraws


# --- linformer ---------------------------------------------------------------------------

def test_linformer_identity_projections_are_softmax():
    q, k, v = make_qkv(2, 2, 12, 4, seed=8)
    attn = build("linformer", max_len=12, proj_dim=12, init="identity")
    torch.testing.assert_close(attn(q, k, v), explicit_softmax(q, k, v), rtol=1e-10, atol=1e-12)


def test_linformer_short_inputs_use_first_columns_and_zero_padding():
    q, k, v = make_qkv(2, 2, 10, 4, seed=9)
    mask = lengths_mask([10, 6], 10)
    attn = build("linformer", max_len=16, proj_dim=5)
    e, f = attn.key_proj[:, :10], attn.value_proj[:, :10]  # (k, N)
    m = mask[:, None, :, None].to(F64)
    kp = torch.einsum("pn,bhnd->bhpd", e, k * m)
    vp = torch.einsum("pn,bhnd->bhpd", f, v * m)
    expected = torch.softmax(q @ kp.transpose(-1, -2) / 2.0, dim=-1) @ vp
    torch.testing.assert_close(attn(q, k, v, mask), expected, rtol=1e-10, atol=1e-12)


def test_linformer_length_errors_name_the_numbers():
    with pytest.raises(ValueError, match="max_len"):
        build_attention("linformer", num_heads=2, head_dim=4)
    attn = build("linformer", max_len=8, proj_dim=4)
    q, k, v = make_qkv(1, 2, 9, 4)
    with pytest.raises(ValueError, match=r"length 9.*max_len=8"):
        attn(q, k, v)
    with pytest.raises(ValueError, match="proj_dim == max_len"):
        build_attention("linformer", num_heads=2, head_dim=4, max_len=8, proj_dim=4, init="identity")


# --- skyformer ---------------------------------------------------------------------------

def test_gaussian_kernel_attention_matches_its_formula():
    q, k, v = make_qkv(2, 2, 9, 4, seed=10)
    mask = lengths_mask([9, 5], 9)
    kernel = torch.exp(-torch.cdist(q, k) ** 2 / (2 * math.sqrt(4))) * mask[:, None, None, :]
    torch.testing.assert_close(gaussian_kernel_attention(q, k, v, mask), kernel @ v,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gaussian_kernel_attention(q, k, v, mask, normalize=True),
                               kernel @ v / kernel.sum(-1, keepdim=True), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize", [False, True])
def test_skyformer_approaches_exact_kernel_attention(normalize):
    N = 36
    q, k, v = make_qkv(2, 2, N, 4, seed=11)
    exact = gaussian_kernel_attention(q, k, v, normalize=normalize)
    errors = []
    for m in (3, 9, 18, 35):
        out = build("skyformer", num_features=m, normalize=normalize)(q, k, v)
        errors.append(((out - exact).norm() / exact.norm()).item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * errors[0], errors
    equal = build("skyformer", num_features=N, normalize=normalize)(q, k, v)
    torch.testing.assert_close(equal, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize", [False, True])
def test_skyformer_nystrom_with_keys_as_landmarks_is_exact(normalize):
    """n_valid < num_features < N: the landmarks are the valid keys themselves, and the
    Nyström formula kappa(Q,K) kappa(K,K)^-1 kappa(K,K) is exact (up to the tiny ridge)."""
    q, k, v = make_qkv(1, 2, 12, 4, seed=12)
    mask = lengths_mask([6], 12)
    attn = build("skyformer", num_features=8, normalize=normalize, ridge=1e-12)
    exact = gaussian_kernel_attention(q, k, v, mask, normalize=normalize)
    torch.testing.assert_close(valid_part(attn(q, k, v, mask), mask), valid_part(exact, mask),
                               rtol=1e-6, atol=1e-8)


# --- sinkhorn ----------------------------------------------------------------------------

def test_sinkhorn_zero_iterations_is_softmax_and_rows_are_exact():
    q, k, v = make_qkv(2, 2, 10, 4, seed=13)
    mask = lengths_mask([10, 7], 10)
    out = build("sinkhorn", n_iters=0)(q, k, v, mask)
    torch.testing.assert_close(valid_part(out, mask), valid_part(explicit_softmax(q, k, v, mask), mask),
                               rtol=1e-10, atol=1e-12)
    assert torch.all(out[~mask[:, None, :, None].expand_as(out)] == 0)  # padded queries get no mass
    attn = sinkhorn_attention_map(q, k, mask, n_iters=1)  # (B, H, N, N)
    row_sums = attn.sum(-1)  # (B, H, N)
    torch.testing.assert_close(row_sums, mask[:, None, :].to(F64).expand_as(row_sums),
                               rtol=0, atol=1e-12)


def test_sinkhorn_converged_map_is_doubly_stochastic_and_respects_padding():
    q, k, v = make_qkv(2, 2, 10, 4, seed=14)
    mask = lengths_mask([10, 6], 10)
    attn = sinkhorn_attention_map(q, k, mask, n_iters=300)  # (B, H, N, N)
    target = mask[:, None, :].to(F64).expand(2, 2, 10)
    torch.testing.assert_close(attn.sum(-1), target, rtol=0, atol=1e-10)
    torch.testing.assert_close(attn.sum(-2), target, rtol=0, atol=1e-8)
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    assert torch.all(attn[~pair.expand_as(attn)] == 0)
    out = build("sinkhorn", n_iters=300)(q, k, v, mask)
    torch.testing.assert_close(out, attn @ v, rtol=1e-10, atol=1e-12)
    # three iterations are not converged: columns are visibly off
    few = sinkhorn_attention_map(q, k, mask, n_iters=3)
    assert (few.sum(-2) - target).abs().max() > 1e-4


def test_sinkhorn_matches_pot_log_domain_sinkhorn():
    q, k, _ = make_qkv(1, 2, 10, 4, seed=15)
    mask = lengths_mask([7], 10)
    attn = sinkhorn_attention_map(q, k, mask, n_iters=500)  # (1, H, N, N)
    n = 7
    for h in range(2):
        scores = (q[0, h, :n] @ k[0, h, :n].T / 2.0).numpy()  # (n, n), sqrt(D) = 2
        marg = np.full(n, 1.0 / n)
        plan = ot.sinkhorn(marg, marg, -scores, 1.0, method="sinkhorn_log",
                           numItermax=10000, stopThr=1e-13)
        np.testing.assert_allclose(attn[0, h, :n, :n].numpy() / n, plan, rtol=1e-7, atol=1e-12)
