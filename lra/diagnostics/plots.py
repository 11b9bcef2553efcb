"""Figures of the attention diagnostics: a layer x head grid of maps per example, side by side
for several models, and the per-layer summary bars (row entropy and column-mass concentration)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lra.diagnostics.probe import LayerMap

SUMMARY_PANELS = (  # (metric, axis label) of the summary figure
    ("row_entropy_normalized", "row entropy / ln n  (1 = uniform rows)"),
    ("max_column_mass", "largest column mass  (uniform = 1)"),
    ("column_mass_gini", "Gini of column masses  (0 = balanced)"),
    ("starved_key_share", "share of keys with mass < 0.1"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_example(maps: Sequence[Sequence[LayerMap]], labels: Sequence[str], example: int,
                 count: int, path: Path, title: str = "") -> Path:
    """One PNG: rows = layers, columns = every model's heads (models side by side), each panel
    the valid (n, n) block of `example` (of `count` examples; document 1 of two-document
    tasks), rows = queries, columns = keys, colour scale per panel."""
    plt = _pyplot()
    depth = max(len(layers) for layers in maps)
    heads = [layers[0].attn.shape[1] for layers in maps]
    fig, axes = plt.subplots(depth, sum(heads), figsize=(2.4 * sum(heads), 2.7 * depth),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    column = 0
    for layers, label, H in zip(maps, labels, heads):
        for layer, layer_map in enumerate(layers):
            doc = example * (layer_map.attn.shape[0] // count)  # first document of the example
            n = int(layer_map.mask[doc].sum()) if layer_map.mask is not None else layer_map.attn.shape[-1]
            for head in range(H):
                block = layer_map.attn[doc, head, :n, :n].float().cpu().numpy()  # (n, n)
                ax = axes[layer, column + head]
                ax.imshow(block, cmap="viridis", interpolation="nearest")
                ax.set_title(f"{label}  L{layer + 1} H{head + 1}  (max {block.max():.2f})",
                             fontsize=8)
        column += H
    fig.suptitle(title or f"test example {example}: attention maps (rows = queries, columns = "
                 "keys, colour scale per panel)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(runs: Sequence[dict], path: Path, title: str = "") -> Path:
    """Grouped bars per layer, one bar per run, for each metric of SUMMARY_PANELS; `runs` are
    diagnostics.json runs (`label` and per-layer rows under `layers`)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(SUMMARY_PANELS), figsize=(4.2 * len(SUMMARY_PANELS), 3.4))
    width = 0.8 / max(len(runs), 1)
    for ax, (metric, axis_label) in zip(axes, SUMMARY_PANELS):
        for i, run in enumerate(runs):
            layers = [row["layer"] for row in run["layers"]]
            values = [row[metric] for row in run["layers"]]
            positions = [layer - 0.4 + width * (i + 0.5) for layer in layers]
            ax.bar(positions, values, width=width, label=run["label"])
        ax.set_xticks(sorted({row["layer"] for run in runs for row in run["layers"]}))
        ax.set_xlabel("layer")
        ax.set_title(axis_label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
