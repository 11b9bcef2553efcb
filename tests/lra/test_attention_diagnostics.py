"""Attention diagnostics of LRA models: the capture hook (lra.diagnostics.probe), the optional
training callback (lra.diagnostics.callback) and the record's `diagnostics`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from lotformer.attention.base import DENSE_MAP_MAX_LEN
from lra.data.base import SplitArrays
from lra.diagnostics.callback import AttentionDiagnostics, best_checkpoint_diagnostics
from lra.diagnostics.probe import (LayerMap, attention_maps, capture_attention, fixed_batch,
                                   head_rows, layer_rows)
from lra.module import LRAModule
from lra.runner import build_callbacks, build_datamodule, run
from tests.helpers import compose_train, short_run_overrides


def tiny_model(attn: str, dropout: float = 0.1) -> LRAModule:
    torch.manual_seed(0)
    return LRAModule({"vocab_size": 20, "max_len": 32, "num_classes": 10, "dropout": dropout,
                      "attention": {"name": attn, **({"rank": 4} if attn == "lot" else {})}})


def padded_batch():
    ids = torch.randint(1, 20, (3, 24))  # (B, N)
    lengths = torch.tensor([24, 17, 9])
    mask = torch.arange(24)[None, :] < lengths[:, None]  # (B, N)
    return ids * mask, mask


@pytest.mark.parametrize("attn", ["lot", "softmax", "sinkhorn", "linear", "nystrom"])
def test_captured_map_is_the_map_the_layer_applied(attn):
    model = tiny_model(attn).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        plain = model(ids, mask)
        with capture_attention(model) as maps:
            hooked = model(ids, mask)
    torch.testing.assert_close(hooked, plain, rtol=0, atol=0)  # capturing changes nothing
    assert len(maps) == model.config.depth
    for layer in maps:
        assert layer.attn.shape == (3, 2, 24, 24)
        valid = mask[:, None, :, None]  # (B, 1, N, 1)
        torch.testing.assert_close((layer.attn @ layer.values) * valid, layer.output * valid,
                                   rtol=1e-4, atol=1e-5)
        assert torch.equal(layer.mask, mask)
    with torch.no_grad():  # the hooks are gone after the block
        with capture_attention(model) as again:
            pass
        model(ids, mask)
    assert again == []


def test_attention_maps_use_eval_mode_and_leave_the_random_state_alone():
    model = tiny_model("softmax", dropout=0.5).train()
    ids, mask = padded_batch()
    model.register_forward_hook(lambda *args: torch.rand(3))  # something that draws numbers
    state = torch.get_rng_state()
    first = attention_maps(model, ids, mask)
    second = attention_maps(model, ids, mask)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training  # restored
    for a, b in zip(first, second):  # no dropout: the same maps twice
        torch.testing.assert_close(a.attn, b.attn, rtol=0, atol=0)


def known_maps() -> LayerMap:
    """Heads: uniform rows, the identity, every query on the first key; example 2 has 2 tokens."""
    n = 4
    uniform = torch.full((n, n), 1 / n, dtype=torch.float64)
    first = torch.zeros(n, n, dtype=torch.float64)
    first[:, 0] = 1
    one = torch.stack([uniform, torch.eye(n, dtype=torch.float64), first])  # (H, N, N)
    two = one.clone()
    two[0] = 0
    two[0, :2, :2] = 0.5  # uniform over the 2 valid tokens
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    attn = torch.stack([one, two]) * mask[:, None, :, None] * mask[:, None, None, :]
    return LayerMap(attn, mask, torch.zeros(2, 3, n, 1), torch.zeros(2, 3, n, 1))


def test_head_and_layer_rows_known_answers():
    heads = head_rows([known_maps(), known_maps()])
    assert [(r["layer"], r["head"]) for r in heads] == [(l, h) for l in (1, 2) for h in (1, 2, 3)]
    uniform, identity, first = heads[:3]
    assert uniform["row_entropy"] == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert uniform["row_entropy_normalized"] == pytest.approx(1.0)
    assert uniform["max_column_mass"] == pytest.approx(1.0)
    assert uniform["column_mass_gini"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["effective_rank"] == pytest.approx(1.0)
    assert identity["row_entropy"] == pytest.approx(0.0)
    assert identity["effective_rank"] == pytest.approx((4 + 2) / 2)
    assert first["max_column_mass"] == pytest.approx((4 + 2) / 2)  # n per example
    assert first["column_mass_gini"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert first["starved_key_share"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert first["column_sum_deviation"] == pytest.approx((3 + 1) / 2)
    layers = layer_rows(heads)
    assert [r["layer"] for r in layers] == [1, 2]
    assert layers[0]["effective_rank"] == pytest.approx((1 + 3 + 1) / 3)
    assert layers[0]["max_column_mass"] == pytest.approx((1 + 1 + 3) / 3)


def test_fixed_batch_is_the_first_examples_trimmed_and_cut():
    ids = torch.zeros(5, 10, dtype=torch.int64)
    for i, length in enumerate([3, 6, 2, 9, 10]):
        ids[i, :length] = i + 1
    split = SplitArrays(ids=ids.numpy(), labels=torch.arange(5).numpy())
    batch_ids, mask, labels, indices = fixed_batch(split, 3)
    assert batch_ids.shape == (3, 6) and indices.tolist() == [0, 1, 2]
    assert mask.sum(dim=1).tolist() == [3, 6, 2] and labels.tolist() == [0, 1, 2]
    assert fixed_batch(split, 9, max_len=4)[0].shape == (5, 4)


def test_callback_is_off_by_default_and_built_when_asked():
    assert not any(isinstance(c, AttentionDiagnostics) for c in build_callbacks(compose_train()))
    on = [c for c in build_callbacks(compose_train(["callbacks/diagnostics=on"]))
          if isinstance(c, AttentionDiagnostics)]
    assert len(on) == 1 and on[0].every_n_steps == 200 and on[0].max_len == DENSE_MAP_MAX_LEN


def test_tiny_run_logs_diagnostics_and_records_those_of_the_best_checkpoint(tmp_path):
    overrides = short_run_overrides(tmp_path, "lot") + [
        "logger=csv", "callbacks/diagnostics=on", "callbacks.diagnostics.every_n_steps=1",
        "callbacks.diagnostics.examples=4"]
    record = run(compose_train(overrides), tmp_path / "run")
    logged = pd.read_csv(next((tmp_path / "run").rglob("metrics.csv")))
    for layer in (1, 2):
        column = logged[f"diag/column_mass_gini/layer{layer}"].dropna()
        assert len(column) == 2  # steps 1 and 2
        assert logged[f"diag/row_sum_deviation/layer{layer}"].dropna().max() < 1e-4
    diagnostics = record.diagnostics
    assert diagnostics["split"] == "val" and diagnostics["indices"] == [0, 1, 2, 3]
    assert diagnostics["checkpoint"] == record.best_checkpoint
    assert [r["layer"] for r in diagnostics["layers"]] == [1, 2] and len(diagnostics["heads"]) == 4
    # the same numbers again from the best checkpoint, on the first 4 validation examples
    state = torch.load(record.best_checkpoint, weights_only=True)
    model = LRAModule(state["hyper_parameters"]["model"])
    model.load_state_dict(state["state_dict"])
    split = build_datamodule(compose_train(overrides)).load().splits["val"]
    ids, mask, _, _ = fixed_batch(split, 4)
    expected = layer_rows(head_rows(attention_maps(model, ids, mask)))
    for got, want in zip(diagnostics["layers"], expected):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_records_without_the_callback_have_no_diagnostics():
    trainer = SimpleNamespace(callbacks=[], checkpoint_callback=None)
    assert best_checkpoint_diagnostics(trainer, tiny_model("softmax")) is None
