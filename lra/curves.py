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


def plot_learning_curve(metrics_csv: Path, out: Path, title: str,
                        majority: float | None = None) -> Path | None:
    """Validation (and training) accuracy against the step, from a CSV logger's metrics.csv,
    saved atomically as a PNG at ``out``. Returns ``out``, or None when no accuracy was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(metrics_csv).is_file():
        return None
    frame = pd.read_csv(metrics_csv)
    series = {name: frame[["step", column]].dropna() for name, column in
              (("validation", "val/acc"), ("training", "train/acc")) if column in frame}
    series = {name: points for name, points in series.items() if len(points)}
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
    tmp = Path(out).with_name(f".{Path(out).name}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return Path(out)
