"""Capture the attention maps a model applies and summarise them per layer and head.

A forward hook on every attention backend (the `attention` of each
`lotformer.attention.multihead.MultiHeadAttention`, in forward order) calls the backend's
`attention_matrix(q, k, mask)` with the very q, k and mask the layer received, so the map is
the one the layer applied: `map @ v == output` at valid rows (tested).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from lotformer.attention.base import DENSE_MAP_MAX_LEN
from lotformer.attention.multihead import MultiHeadAttention
from lotformer.diagnostics import diagnostics
from lra.data.base import SplitArrays
from lra.datamodule import SplitDataset, collate

# The diagnostics in the order tables and CSVs show them (lotformer.diagnostics names).
METRICS = ("row_sum_deviation", "column_sum_deviation", "row_entropy", "row_entropy_normalized",
           "max_column_mass", "column_mass_gini", "starved_key_share", "effective_rank")


@dataclass
class LayerMap:
    """What one attention layer applied to a batch (for two-document tasks B counts documents)."""

    attn: torch.Tensor  # (B, H, N, N) dense map, rows = queries
    mask: torch.Tensor | None  # (B, N) bool, True = token
    values: torch.Tensor  # (B, H, N, D) the v the layer mixed
    output: torch.Tensor  # (B, H, N, D) what the layer returned


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The attention backends of `model`, in module order (= layer order of the encoder)."""
    return [m.attention for m in model.modules() if isinstance(m, MultiHeadAttention)]


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[LayerMap]]:
    """Within the block, every attention call of `model` appends its LayerMap to the list."""
    captured: list[LayerMap] = []

    def hook(module, args, kwargs, output):
        q, k, v = args[:3]  # each (B, H, N, D)
        mask = args[3] if len(args) > 3 else kwargs.get("key_padding_mask")
        captured.append(LayerMap(module.attention_matrix(q, k, mask), mask, v, output))

    handles = [layer.register_forward_hook(hook, with_kwargs=True)
               for layer in attention_layers(model)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def attention_maps(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> list[LayerMap]:
    """One LayerMap per attention call of `model(ids, mask)`, in eval mode (no dropout), with
    the global random state left as it was (a training run resumes identically)."""
    was_training = model.training
    devices = [ids.device] if ids.device.type == "cuda" else []
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), capture_attention(model) as captured:
            model(ids, mask)
    finally:
        model.train(was_training)
    return captured


def head_rows(maps: list[LayerMap]) -> list[dict]:
    """Per (layer, head), 1-based: every diagnostic averaged over the examples with tokens."""
    rows = []
    for layer, layer_map in enumerate(maps, start=1):
        values = diagnostics(layer_map.attn.double(), layer_map.mask)  # name -> (B, H)
        B, H = layer_map.attn.shape[:2]
        has_tokens = (torch.ones(B, dtype=torch.bool) if layer_map.mask is None
                      else layer_map.mask.any(dim=-1).cpu())  # (B,)
        means = {name: values[name].cpu()[has_tokens].mean(dim=0) for name in METRICS}  # (H,)
        rows += [{"layer": layer, "head": head + 1,
                  **{name: float(means[name][head]) for name in METRICS}} for head in range(H)]
    return rows


def layer_rows(heads: list[dict]) -> list[dict]:
    """Per layer: the head rows averaged over heads."""
    layers = sorted({row["layer"] for row in heads})
    out = []
    for layer in layers:
        group = [row for row in heads if row["layer"] == layer]
        out.append({"layer": layer, **{name: sum(r[name] for r in group) / len(group)
                                       for name in METRICS}})
    return out


def fixed_batch(split: SplitArrays, count: int, max_len: int | None = None):
    """(ids, mask, labels, indices) of the first `count` examples of a split, trimmed to their
    longest sequence and cut to `max_len` tokens when given (None: no cut)."""
    dataset = SplitDataset(split)
    count = min(count, len(dataset))
    ids, mask, labels, indices = collate([dataset[i] for i in range(count)])  # ids (K, [2,] N)
    if max_len is not None:
        ids, mask = ids[..., :max_len], mask[..., :max_len]
    return ids, mask, labels, indices

