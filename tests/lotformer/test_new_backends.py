"""BigBird, Informer, Reformer, cosFormer and ESPFormer against their defining formulas,
computed densely in float64 on small inputs with the backend's own random state."""

from __future__ import annotations

import math

import pytest
import torch

from lotformer.attention import build_attention
from lotformer.attention.espformer import soft_sort_plans

from tests.lotformer.test_baselines import F64, lengths_mask, make_qkv  # noqa: E402
from tests.lotformer.test_baselines import build as build_f64  # noqa: E402


def build(name, H=2, D=4, **options):
    torch.manual_seed(0)  # the backends' random parts
    return build_f64(name, H=H, D=D, **options)


def masked_softmax(scores, allowed):
    return torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)


def keep(x, mask):
    return x[mask[:, None, :, None].expand_as(x)]


def softmax_attention(q, k, v, mask):
    return masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), mask[:, None, None, :]) @ v


def assert_padding_invariant(attn, H=2, D=4, N=20, lengths=(20, 13)):
    q, k, v = make_qkv(2, H, N, D, seed=99)
    mask = lengths_mask(list(lengths), N)
    out = attn(q, k, v, mask)
    for b, L in enumerate(lengths):
        alone = attn(q[b:b + 1, :, :L], k[b:b + 1, :, :L], v[b:b + 1, :, :L])
        torch.testing.assert_close(out[b:b + 1, :, :L], alone, rtol=1e-9, atol=1e-11)


# --- bigbird -----------------------------------------------------------------------------

def test_bigbird_layout_has_window_globals_and_distinct_random_blocks():
    attn = build("bigbird", max_len=64, block_size=4, window_blocks=3, num_random_blocks=2)
    layout = attn.block_layout(torch.tensor([16, 10]), 16)  # (B, nb, nb)
    for b, nb in enumerate((16, 10)):
        for i in range(1, nb - 1):  # non-global query blocks
            row = layout[b, i]
            window = {j for j in (i - 1, i, i + 1) if 0 <= j < nb}
            assert window | {0, nb - 1} <= set(row.nonzero().flatten().tolist())
            assert int(row.sum()) == len(window | {0, nb - 1}) + min(2, nb - len(window | {0, nb - 1}))
            assert not row[nb:].any()  # nothing beyond the last valid block
        assert layout[b, 0, :nb].all() and layout[b, nb - 1, :nb].all()  # global rows


def test_bigbird_equals_dense_masked_softmax_of_its_layout():
    B, H, N, D, bs = 2, 2, 23, 4, 3
    q, k, v = make_qkv(B, H, N, D, seed=1)
    mask = lengths_mask([23, 14], N)
    attn = build("bigbird", max_len=N, block_size=bs, num_random_blocks=2)
    nb = math.ceil(N / bs)
    valid_blocks = torch.tensor([math.ceil(23 / bs), math.ceil(14 / bs)])
    layout = attn.block_layout(valid_blocks, nb)  # (B, nb, nb)
    block = torch.arange(N) // bs
    allowed = layout[:, block][:, :, block] & mask[:, None, :]  # (B, N, N)
    expected = masked_softmax(q @ k.transpose(-1, -2) / 2.0, allowed[:, None]) @ v
    out = attn(q, k, v, mask)
    torch.testing.assert_close(keep(out, mask), keep(expected, mask), rtol=1e-10, atol=1e-12)
    # sparse: it is not softmax attention
    assert (keep(out - softmax_attention(q, k, v, mask), mask)).abs().max() > 1e-3


def test_bigbird_window_covering_the_sequence_is_softmax():
    q, k, v = make_qkv(2, 2, 17, 4, seed=2)
    mask = lengths_mask([17, 9], 17)
    attn = build("bigbird", max_len=17, block_size=3, window_blocks=13, num_random_blocks=1)
    torch.testing.assert_close(keep(attn(q, k, v, mask), mask),
                               keep(softmax_attention(q, k, v, mask), mask), rtol=1e-10, atol=1e-12)


def test_bigbird_padding_invariance():
    assert_padding_invariant(build("bigbird", max_len=20, block_size=3, num_random_blocks=2))


# --- informer ----------------------------------------------------------------------------

def test_informer_equals_probsparse_formula():
    B, H, N, D, c = 2, 2, 24, 4, 2
    q, k, v = make_qkv(B, H, N, D, seed=3)
    mask = lengths_mask([24, 15], N)
    attn = build("informer", max_len=N, factor=c)
    out = attn(q, k, v, mask)
    for b in range(B):
        n = int(mask[b].sum())
        u = min(c * math.ceil(math.log(n)), n)
        keys = (attn.sample_uniforms[:n, :u] * n).long()  # (n, U): valid keys are a prefix here
        for h in range(H):
            dots = q[b, h, :n] @ k[b, h, :n].T / 2.0  # (n, n)
            sampled = dots.gather(1, keys)  # (n, U)
            measure = sampled.max(-1).values - sampled.mean(-1)
            active = measure.topk(u).indices
            expected = v[b, h, :n].mean(0).expand(n, D).clone()
            expected[active] = torch.softmax(dots[active], -1) @ v[b, h, :n]
            torch.testing.assert_close(out[b, h, :n], expected, rtol=1e-10, atol=1e-12)


def test_informer_with_u_at_least_n_is_softmax():
    q, k, v = make_qkv(2, 2, 16, 4, seed=4)
    mask = lengths_mask([16, 10], 16)
    attn = build("informer", max_len=16, factor=8)  # 8 * ceil(ln n) >= n
    torch.testing.assert_close(keep(attn(q, k, v, mask), mask),
                               keep(softmax_attention(q, k, v, mask), mask), rtol=1e-10, atol=1e-12)


def test_informer_padding_invariance():
    assert_padding_invariant(build("informer", max_len=20, factor=2))


# --- reformer ----------------------------------------------------------------------------

def _reformer_dense(attn, q, v, mask):
    """Each round: token i sees valid tokens j whose sorted chunk is i's or the one before."""
    B, H, N, D = q.shape
    keys = torch.nn.functional.normalize(q, dim=-1)
    scores = q @ keys.transpose(-1, -2)  # (B, H, N, N)
    scores = torch.where(torch.eye(N, dtype=torch.bool), torch.tensor(-1e5, dtype=F64), scores)
    bucket = attn.buckets(keys).masked_fill(~mask[:, None, None, :], attn.num_buckets)
    rank = (bucket * N + torch.arange(N)).argsort(-1).argsort(-1)  # (B, H, R, N)
    chunk = rank // attn.bucket_size
    delta = chunk[..., :, None] - chunk[..., None, :]  # (B, H, R, N, N)
    allowed = ((delta == 0) | (delta == 1)) & mask[:, None, None, None, :]
    s = scores[:, :, None].masked_fill(~allowed, -math.inf)  # (B, H, R, N, N)
    lse = s.logsumexp(-1)  # (B, H, R, N)
    outs = torch.softmax(s, -1) @ v[:, :, None]  # (B, H, R, N, D)
    return (torch.softmax(lse, dim=2)[..., None] * outs).sum(2)


def test_reformer_equals_dense_lsh_chunk_formula():
    q, k, v = make_qkv(2, 2, 22, 4, seed=5)
    mask = lengths_mask([22, 15], 22)
    attn = build("reformer", max_len=22, num_hashes=3, bucket_size=4, num_buckets=4)
    out = attn(q, k, v, mask)
    torch.testing.assert_close(keep(out, mask), keep(_reformer_dense(attn, q, v, mask), mask),
                               rtol=1e-10, atol=1e-12)


def test_reformer_one_bucket_is_shared_qk_softmax_without_self():
    q, k, v = make_qkv(2, 2, 12, 4, seed=6)
    mask = lengths_mask([12, 7], 12)
    attn = build("reformer", max_len=12, bucket_size=12, num_buckets=1)
    keys = torch.nn.functional.normalize(q, dim=-1)
    scores = (q @ keys.transpose(-1, -2)).masked_fill(torch.eye(12, dtype=torch.bool), -1e5)
    expected = masked_softmax(scores, mask[:, None, None, :]) @ v
    torch.testing.assert_close(keep(attn(q, k, v, mask), mask), keep(expected, mask),
                               rtol=1e-10, atol=1e-12)
    # a single valid token may only attend to itself
    alone = attn(q[:1, :, :1], k[:1, :, :1], v[:1, :, :1])
    torch.testing.assert_close(alone, v[:1, :, :1], rtol=1e-12, atol=1e-12)


def test_reformer_padding_invariance():
    assert_padding_invariant(build("reformer", max_len=20, bucket_size=3, num_buckets=4))


# --- cosformer ---------------------------------------------------------------------------

def test_cosformer_equals_reweighted_quadratic_form():
    q, k, v = make_qkv(2, 2, 11, 4, seed=7)
    mask = lengths_mask([11, 6], 11)
    out = build("cosformer")(q, k, v, mask)
    for b, M in enumerate((11, 6)):
        idx = torch.arange(1, M + 1, dtype=F64)
        cos = torch.cos(math.pi / 2 * (idx[:, None] - idx[None, :]) / M)  # (M, M)
        s = torch.relu(q[b, :, :M]) @ torch.relu(k[b, :, :M]).transpose(-1, -2) * cos
        expected = s @ v[b, :, :M] / s.sum(-1, keepdim=True).clamp_min(1e-6)
        torch.testing.assert_close(out[b, :, :M], expected, rtol=1e-10, atol=1e-12)


def test_cosformer_without_reweighting_is_relu_linear_attention():
    q, k, v = make_qkv(2, 2, 11, 4, seed=8)
    mask = lengths_mask([11, 6], 11)
    s = torch.relu(q) @ torch.relu(k).transpose(-1, -2) * mask[:, None, None, :]
    expected = s @ v / s.sum(-1, keepdim=True).clamp_min(1e-6)
    out = build("cosformer", reweight=False)(q, k, v, mask)
    torch.testing.assert_close(keep(out, mask), keep(expected, mask), rtol=1e-10, atol=1e-12)
    assert (keep(build("cosformer")(q, k, v, mask) - out, mask)).abs().max() > 1e-3


def test_cosformer_padding_invariance():
    assert_padding_invariant(build("cosformer"))


# --- espformer ---------------------------------------------------------------------------

def test_soft_sort_tends_to_the_sorting_permutation():
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(2, 7, generator=g, dtype=F64)
    valid = torch.ones(7, dtype=torch.bool)
    p_q, p_k = soft_sort_plans(x, y, valid, tau=1e-6)
    torch.testing.assert_close(p_q @ x, x.sort().values, rtol=0, atol=1e-6)
    torch.testing.assert_close(p_k @ y, y.sort().values, rtol=0, atol=1e-6)
    hard = torch.zeros(7, 7, dtype=F64)
    hard[x.argsort(), y.argsort()] = 1.0  # i-th smallest x -> i-th smallest y
    torch.testing.assert_close(p_q.T @ p_k, hard, rtol=0, atol=1e-6)


def test_espformer_equals_weighted_sliced_plans():
    B, H, N, D = 2, 2, 9, 4
    q, k, v = make_qkv(B, H, N, D, seed=10)
    mask = lengths_mask([9, 6], N)
    attn = build("espformer", num_slices=3, tau=0.05, temperature=2.0)
    out = attn(q, k, v, mask)
    for b, n in enumerate((9, 6)):
        qs, ks = q[b, :, :n] / 2.0, k[b, :, :n] / 2.0  # D^(-1/2)
        plans, costs = [], []
        for theta in attn.directions:
            x, y = qs @ theta, ks @ theta  # (H, n)
            pq = torch.softmax(-(x[:, None, :] - x.sort(-1).values[:, :, None]) ** 2 / 0.05, dim=-2)
            pk = torch.softmax(-(y[:, None, :] - y.sort(-1).values[:, :, None]) ** 2 / 0.05, dim=-1)
            plan = pq.transpose(-1, -2) @ pk  # (H, n, n)
            plans.append(plan)
            costs.append((plan * torch.cdist(qs, ks)).sum((-2, -1)))
        w = torch.softmax(-2.0 * torch.stack(costs, -1), -1)  # (H, L)
        attn_map = (torch.stack(plans, 1) * w[..., None, None]).sum(1)
        torch.testing.assert_close(out[b, :, :n], attn_map @ v[b, :, :n], rtol=1e-10, atol=1e-12)


def test_espformer_map_is_nearly_doubly_stochastic_at_low_tau():
    q, k, _ = make_qkv(2, 2, 12, 4, seed=11)
    mask = lengths_mask([12, 8], 12)
    target = mask[:, None, :].to(F64).expand(2, 2, 12)
    sharp, soft = build("espformer", num_slices=4, tau=1e-6), build("espformer", num_slices=4, tau=1.0)
    for attn, col_tol in ((sharp, 1e-3), (soft, None)):
        plans, w = attn.slice_plans(q, k, mask)
        attn_map = (plans * w[..., None, None]).sum(2)  # (B, H, N, N)
        torch.testing.assert_close(attn_map.sum(-1), target, rtol=0, atol=1e-12)  # rows: exact
        col_error = (attn_map.sum(-2) - target).abs().max()
        if col_tol is None:
            assert col_error > 1e-2  # a soft sort is not a permutation
        else:
            assert col_error < col_tol


def test_espformer_padding_invariance():
    assert_padding_invariant(build("espformer", num_slices=3))


# --- bad options -------------------------------------------------------------------------

@pytest.mark.parametrize("name, options, option", [
    ("bigbird", {"block_size": 0}, "block_size"),
    ("bigbird", {"window_blocks": 2}, "window_blocks"),
    ("bigbird", {"num_random_blocks": -1}, "num_random_blocks"),
    ("bigbird", {"max_len": None}, "max_len"),
    ("informer", {"factor": 0}, "factor"),
    ("informer", {"max_len": None}, "max_len"),
    ("reformer", {"num_hashes": 0}, "num_hashes"),
    ("reformer", {"bucket_size": 0}, "bucket_size"),
    ("reformer", {"num_buckets": 3}, "num_buckets"),
    ("reformer", {"max_len": None}, "max_len"),
    ("cosformer", {"eps": 0.0}, "eps"),
    ("espformer", {"num_slices": 0}, "num_slices"),
    ("espformer", {"tau": 0.0}, "tau"),
    ("espformer", {"temperature": -1.0}, "temperature"),
])
def test_invalid_options_fail_at_build_time_naming_the_option(name, options, option):
    kwargs = {"num_heads": 2, "head_dim": 4, "max_len": 16, **options}
    with pytest.raises(ValueError, match=option):
        build_attention(name, **kwargs)


@pytest.mark.parametrize("name", ["bigbird", "informer"])
def test_sequences_longer_than_max_len_are_refused(name):
    attn = build(name, max_len=8)
    q, k, v = make_qkv(1, 2, 9, 4)
    with pytest.raises(ValueError, match="max_len=8"):
        attn(q, k, v)
