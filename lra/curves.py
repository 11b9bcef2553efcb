"""What a run learned, beside its accuracy: the majority-class baseline and the learning curve."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def majority_accuracy(labels: np.ndarray) -> float | None:
    """Accuracy of always predicting the most frequent label (None for an empty split)."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        return None
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def read_curve(metrics_csv: Path, column: str = "val/acc") -> pd.DataFrame | None:
    """(step, value) rows of one logged metric from a CSV logger's metrics.csv, or None."""
    if not Path(metrics_csv).is_file():
        return None
    frame = pd.read_csv(metrics_csv)
    if column not in frame:
        return None
    points = frame[["step", column]].dropna()
    return points if len(points) else None


def _save(fig, out: Path) -> Path:
    """Save a figure atomically as a PNG at `out` and close it."""
    import matplotlib.pyplot as plt

    tmp = Path(out).with_name(f".{Path(out).name}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return Path(out)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(metrics_csv: Path, out: Path, title: str,
                        majority: float | None = None) -> Path | None:
    """Validation (and training) accuracy against the step, from a CSV logger's metrics.csv,
    saved atomically as a PNG at ``out``. Returns ``out``, or None when no accuracy was logged."""
    plt = _pyplot()
    series = {name: read_curve(metrics_csv, column) for name, column in
              (("validation", "val/acc"), ("training", "train/acc"))}
    series = {name: points for name, points in series.items() if points is not None}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    for name, points in series.items():
        ax.plot(points["step"], points.iloc[:, 1], marker="o" if name == "validation" else None,
                markersize=3, label=f"{name} accuracy", alpha=1.0 if name == "validation" else 0.5)
    if majority is not None:
        ax.axhline(majority, color="grey", linestyle="--", label="majority class (test)")
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def plot_curve_set(curves: dict[str, dict[str, pd.DataFrame]], out: Path, title: str,
                   majority: dict[str, float] | None = None) -> Path | None:
    """Validation accuracy by step for a set of runs, one panel per group (e.g. task) and one
    line per run (label -> (step, val/acc) rows); a dashed line per group's majority class."""
    curves = {group: runs for group, runs in curves.items() if runs}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), dpi=120, squeeze=False)
    for ax, (group, runs) in zip(axes[0], curves.items()):
        for label, points in runs.items():
            ax.plot(points["step"], points.iloc[:, 1], marker="o", markersize=2, label=label)
        if majority and majority.get(group) is not None:
            ax.axhline(majority[group], color="grey", linestyle="--", label="majority class (test)")
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)
