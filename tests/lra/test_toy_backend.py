"""Adding a backend is one file (plus one YAML for train.py): a toy backend registered here is
built through the registry and the multi-head wrapper, benchmarked by lra.bench and trained
through lra, with no list anywhere to update."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lotformer.attention import (
    AttentionBackend,
    MultiHeadAttention,
    available_attentions,
    build_attention,
    register_attention,
    registry,
)
from lra.bench import BenchRequest, run_benchmark
from lra.runner import run
from tests.helpers import compose_train, tiny_run_overrides

NAME = "toy_mean"


class MeanAttention(AttentionBackend):
    """Every query gets the mean of the valid values."""

    title = "Toy mean"
    published_names = ()

    def __init__(self, *, num_heads, head_dim, max_len=None, scale: float = 1.0):
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def bench_fields(self):
        return {"scale": self.scale.item()}

    def forward(self, q, k, v, key_padding_mask=None):
        w = torch.ones(v.shape[:3], dtype=v.dtype, device=v.device)  # (B, H, N)
        if key_padding_mask is not None:
            w = w * key_padding_mask[:, None, :].to(v.dtype)
        mean = (w[..., None] * v).sum(-2, keepdim=True) / w.sum(-1)[..., None, None].clamp_min(1)
        return self.scale * mean.expand_as(v)


@pytest.fixture
def toy(monkeypatch):
    """Register the toy backend for one test only (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_attention(NAME)(MeanAttention)
    return NAME


def test_built_through_the_registry_and_the_wrapper(toy):
    assert toy in available_attentions()
    attn = build_attention(toy, num_heads=2, head_dim=4, scale=2.0)
    assert isinstance(attn, MeanAttention)
    mha = MultiHeadAttention(8, 2, attention=toy, attention_options={"scale": 0.5})
    x = torch.randn(2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the base class's float32 policy
        y = mha(x, key_padding_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    assert y.shape == (2, 5, 8) and torch.isfinite(y.float()).all()
    with pytest.raises(ValueError, match="floating-point"):  # the base class's input check
        attn(*(torch.ones(1, 2, 3, 4, dtype=torch.long) for _ in range(3)))


def test_benchmarked_by_the_bench_module(toy, tmp_path):
    code = run_benchmark(BenchRequest(
        preset="scaling", backends=toy, lengths="16", modes="fwd+bwd", batch=1, heads=1,
        head_dim=4, options=[f"{toy}.scale=3"], repeats=1, warmup=0, threads=1, device="cpu",
        out=tmp_path, tag="toy", in_process=True))
    assert code == 0
    df = pd.read_csv(tmp_path / "bench_scaling_toy.csv")
    assert list(df["status"]) == ["ok"] and df["median_ms"].iloc[0] > 0
    assert df[f"{toy}_scale"].iloc[0] == 3.0  # its bench_fields() as a column
    assert (tmp_path / "bench_scaling_toy_time.png").is_file()


def test_trained_through_lra(toy, tmp_path):
    # configs/attn/softmax.yaml holds only its name: the toy's YAML would look the same
    overrides = tiny_run_overrides(tmp_path, attn="softmax") + [f"attn.name={toy}"]
    record = run(compose_train(overrides), tmp_path / "run")
    assert record.attention == toy and record.steps == 2 and record.status == "completed"
    assert 0.0 <= record.metrics.test_acc <= 1.0
