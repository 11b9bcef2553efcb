"""Harness-compat modes: `compat="harness"` equals the LRA harness's formula, written here
from the formula (float64, small N); the default mode equals the method's defining formula."""

from __future__ import annotations

import math

import pytest
import torch

from lotformer.attention import build_attention
from lotformer.attention.skyformer import gaussian_kernel_attention

from tests.lotformer.test_baselines import F64, build, lengths_mask, make_qkv  # noqa: E402


def masked_softmax_attention(scores, v, mask):
    scores = scores.masked_fill(~mask[:, None, None, :], -math.inf)
    return torch.softmax(scores, dim=-1) @ v


def keep(x, mask):
    return x[mask[:, None, :, None].expand_as(x)]


def test_compat_rejects_unknown_values():
    for name in ("performer", "nystrom", "skyformer"):
        with pytest.raises(ValueError, match="compat"):
            build_attention(name, num_heads=2, head_dim=4, compat="paper")
    with pytest.raises(ValueError, match="compat"):
        build_attention("linformer", num_heads=2, head_dim=4, max_len=8, compat="ref")


# --- performer ---------------------------------------------------------------------------

def _favor_features(x, w, stabiliser, eps):
    """(exp(x w^T - |x|^2/2 - stabiliser) + eps) / sqrt(m), written out."""
    proj = x @ w.T
    return (torch.exp(proj - 0.5 * (x ** 2).sum(-1, keepdim=True) - stabiliser) + eps) / math.sqrt(w.shape[0])


def test_performer_harness_equals_harness_formula():
    B, H, N, D = 2, 2, 9, 4
    q, k, v = make_qkv(B, H, N, D, seed=1)
    mask = lengths_mask([9, 5], N)
    torch.manual_seed(0)
    attn = build("performer", D=D, num_features=16, compat="harness")
    w = attn.projection  # (m, D)
    m4 = mask[:, None, :, None].to(F64)
    xq = q / D ** 0.25 / D ** 0.25  # wrapper, then kernel
    xk = k / D ** 0.25 * m4 / D ** 0.25
    phi_q = _favor_features(xq, w, (xq @ w.T).amax(-1, keepdim=True), 1e-4)
    phi_k = _favor_features(xk, w, (xk @ w.T).max(), 1e-4)  # padded keys kept
    vm = v * m4
    expected = phi_q @ (phi_k.transpose(-1, -2) @ vm) / (phi_q @ phi_k.sum(-2)[..., None])
    torch.testing.assert_close(attn(q, k, v, mask), expected, rtol=1e-10, atol=1e-12)


def test_performer_harness_estimates_softmax_over_d_and_clean_over_sqrt_d():
    """With many features the harness mode converges to softmax(q k^T / D) (padded keys
    still in its denominator), the clean mode to softmax(q k^T / sqrt(D))."""
    B, H, N, D = 1, 2, 12, 4
    q, k, v = make_qkv(B, H, N, D, seed=2, scale=0.7)
    torch.manual_seed(1)
    harness = build("performer", D=D, num_features=32768, compat="harness")
    torch.manual_seed(1)
    clean = build("performer", D=D, num_features=32768)
    full = torch.ones(B, N, dtype=torch.bool)
    over_d = masked_softmax_attention(q @ k.transpose(-1, -2) / D, v, full)
    over_sqrt_d = masked_softmax_attention(q @ k.transpose(-1, -2) / math.sqrt(D), v, full)
    assert (over_d - over_sqrt_d).abs().max() > 0.05  # the two targets differ visibly
    err = lambda out, target: ((out - target).norm() / target.norm()).item()  # noqa: E731
    h, c = harness(q, k, v), clean(q, k, v)
    assert err(h, over_d) < 0.3 * err(h, over_sqrt_d)
    assert err(c, over_sqrt_d) < 0.3 * err(c, over_d)


# --- nystrom -----------------------------------------------------------------------------

def _newton_schulz(a, z, iters):
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def test_nystrom_harness_equals_harness_formula():
    B, H, N, D, m = 2, 2, 12, 4, 3
    q, k, v = make_qkv(B, H, N, D, seed=3)
    mask = lengths_mask([12, 7], N)
    attn = build("nystrom", D=D, num_landmarks=m, compat="harness")
    m4 = mask[:, None, :, None].to(F64)
    Q, K = q * m4 / D ** 0.25, k * m4 / D ** 0.25
    Ql = Q.reshape(B, H, m, N // m, D).mean(-2)  # the harness's reshape-mean landmarks
    Kl = K.reshape(B, H, m, N // m, D).mean(-2)
    k1 = torch.softmax(Q @ Kl.transpose(-1, -2), -1)
    k2 = torch.softmax(Ql @ Kl.transpose(-1, -2), -1)
    k3 = torch.softmax(Ql @ K.transpose(-1, -2) - 1e9 * (1 - mask[:, None, None, :].to(F64)), -1)
    z0 = k2.transpose(-1, -2) / k2.sum(-2).max()  # one max over batch and heads
    expected = (k1 @ _newton_schulz(k2, z0, 6)) @ (k3 @ v)
    torch.testing.assert_close(attn(q, k, v, mask), expected, rtol=1e-10, atol=1e-12)


def test_nystrom_clean_equals_paper_formula_with_per_head_init():
    B, H, N, D, m = 2, 2, 12, 4, 3
    q, k, v = make_qkv(B, H, N, D, seed=4)
    attn = build("nystrom", D=D, num_landmarks=m)
    Q, K = q / D ** 0.25, k / D ** 0.25
    Ql = Q.reshape(B, H, m, N // m, D).mean(-2)
    Kl = K.reshape(B, H, m, N // m, D).mean(-2)
    a = torch.softmax(Ql @ Kl.transpose(-1, -2), -1)
    z0 = a.transpose(-1, -2) / (a.sum(-2).amax(-1) * a.sum(-1).amax(-1))[..., None, None]
    expected = (torch.softmax(Q @ Kl.transpose(-1, -2), -1) @ _newton_schulz(a, z0, 6)) @ (
        torch.softmax(Ql @ K.transpose(-1, -2), -1) @ v)
    torch.testing.assert_close(attn(q, k, v), expected, rtol=1e-10, atol=1e-12)
    # the harness mode differs once padding is averaged into the landmarks
    mask = lengths_mask([12, 7], N)
    harness = build("nystrom", D=D, num_landmarks=m, compat="harness")
    assert (keep(harness(q, k, v, mask) - attn(q, k, v, mask), mask)).abs().max() > 1e-3


# --- linformer ---------------------------------------------------------------------------

def test_linformer_harness_is_one_fixed_projection_per_head_for_k_and_v():
    B, H, N, D = 2, 2, 10, 4
    q, k, v = make_qkv(B, H, N, D, seed=5)
    mask = lengths_mask([10, 6], N)
    torch.manual_seed(0)
    attn = build("linformer", H=H, D=D, max_len=16, proj_dim=5, compat="harness")
    assert list(attn.parameters()) == []  # nothing trainable, as in the harness
    e = attn.harness_proj  # (H, k, L)
    assert e.shape == (H, 5, 16) and 0.012 < e.std().item() < 0.028
    m4 = mask[:, None, :, None].to(F64)
    kp = e[:, :, :N] @ (k * m4)  # (B, H, k, D), same E for K and V
    vp = e[:, :, :N] @ (v * m4)
    expected = torch.softmax(q @ kp.transpose(-1, -2) / math.sqrt(D), -1) @ vp
    torch.testing.assert_close(attn(q, k, v, mask), expected, rtol=1e-10, atol=1e-12)
    assert "harness_proj" in attn.state_dict()


def test_linformer_clean_has_separate_learned_projections():
    attn = build("linformer", max_len=8, proj_dim=4)
    names = {n for n, p in attn.named_parameters() if p.requires_grad}
    assert names == {"key_proj", "value_proj"}
    assert not torch.equal(attn.key_proj, attn.value_proj)


# --- skyformer ---------------------------------------------------------------------------

def _rbf(x, y):
    return torch.exp(x @ y.transpose(-1, -2) - 0.5 * (x ** 2).sum(-1)[..., :, None]
                     - 0.5 * (y ** 2).sum(-1)[..., None, :])


def test_skyformer_harness_equals_harness_formula_for_a_fixed_seed():
    B, H, N, D, m = 2, 2, 10, 4, 6
    q, k, v = make_qkv(B, H, N, D, seed=6)
    mask = lengths_mask([10, 7], N)
    attn = build("skyformer", D=D, num_features=m, compat="harness")
    torch.manual_seed(123)
    out = attn(q, k, v, mask)
    torch.manual_seed(123)
    u = torch.rand(m).to(F64)  # the one uniform draw the harness makes
    m4 = mask[:, None, :, None].to(F64)
    X = torch.cat([q * m4, k * m4], dim=2) / D ** 0.25  # (B, H, 2N, D)
    rows = (mask.sum(-1, keepdim=True) * u).long()  # (B, m), from the real rows
    rows[:, m // 2:] += N  # second half from the keys
    S = torch.stack([X[b][:, rows[b]] for b in range(B)])  # (B, H, m, D)
    W = _rbf(S, S) + 0.1 * torch.eye(m, dtype=F64)
    d = W.sum(-1) ** -0.5  # (B, H, m)
    W = d[..., :, None] * W * d[..., None, :]
    Winv = _newton_schulz(W, W.transpose(-1, -2) / W.sum(-2).max(), 6)  # batch-global init
    Kside = (_rbf(X[:, :, N:], S) * d[..., None, :]) @ Winv * d[..., None, :] * m4
    expected = _rbf(X[:, :, :N], S) @ (Kside.transpose(-1, -2) @ (v * m4))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.manual_seed(124)
    assert not torch.allclose(attn(q, k, v, mask), out)  # redrawn on every call, eval too


def test_skyformer_clean_is_deterministic_and_exact_with_all_keys_as_landmarks():
    q, k, v = make_qkv(1, 2, 8, 4, seed=7)
    attn = build("skyformer", num_features=8)
    torch.testing.assert_close(attn(q, k, v), gaussian_kernel_attention(q, k, v), rtol=1e-10, atol=1e-12)
    few = build("skyformer", num_features=3)
    torch.testing.assert_close(few(q, k, v), few(q, k, v), rtol=0, atol=0)


# --- sinkhorn ----------------------------------------------------------------------------

def test_sinkhorn_n_iters_one_is_three_normalisations():
    """Sinkformer's 3 normalisations (row, column, row) = n_iters=1 here."""
    q, k, v = make_qkv(1, 2, 7, 4, seed=8)
    s = q @ k.transpose(-1, -2) / 2.0
    a = torch.softmax(s, -1)  # 1: rows
    a = a / a.sum(-2, keepdim=True)  # 2: columns
    a = a / a.sum(-1, keepdim=True)  # 3: rows
    torch.testing.assert_close(build("sinkhorn", n_iters=1)(q, k, v), a @ v, rtol=1e-10, atol=1e-12)
