"""Benchmark plots: attention time and memory versus n (log-log, one colour per backend), and
the whole-step benchmark's bars per task."""

from __future__ import annotations

from pathlib import Path

from lra.tables.records import TASK_TITLES

_METRICS = (("median_ms", "median time per call (ms)", "time"),
            ("peak_mb", "peak extra memory (MiB)", "memory"))


def _label(backend: str) -> str:
    """The backend's display title from the registry (its name when not registered)."""
    from lotformer.attention import available_attentions, attention_class

    if backend not in available_attentions():
        return backend
    return attention_class(backend).title or backend


def _draw(ax, df, metric: str, colors: dict) -> int:
    """One line per backend and mode (fwd+bwd solid, fwd dashed); returns how many."""
    drawn = 0
    for backend, color in colors.items():
        for mode, style, marker in (("fwd+bwd", "-", "o"), ("fwd", "--", "s")):
            part = df[(df["backend"] == backend) & (df["mode"] == mode)].sort_values("n")
            y = part[metric].astype(float).where((part["status"] == "ok") & (part[metric] > 0))
            if part.empty or y.notna().sum() == 0:
                continue
            ax.plot(part["n"].astype(float), y.to_numpy(dtype=float), linestyle=style,
                    marker=marker, color=color, label=f"{_label(backend)} {mode}")
            drawn += 1
    return drawn


def plot_results(df, path_prefix: Path, title: str) -> list[Path]:
    """`<prefix>_time.png` and `<prefix>_memory.png`: log-log vs n, one colour per backend,
    fwd+bwd solid, fwd dashed; gap points are left out (the line breaks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colors = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(dict.fromkeys(df["backend"]))}
    gaps = int((df["status"] != "ok").sum())
    for metric, label, suffix in _METRICS:
        fig, ax = plt.subplots(figsize=(7.5, 5))
        if _draw(ax, df, metric, colors):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend(fontsize=8, ncol=2)
        else:
            ax.text(0.5, 0.5, "no successful points", ha="center", va="center",
                    transform=ax.transAxes)
        if gaps:
            ax.text(0.01, 0.01, f"{gaps} point(s) missing (oom / timeout / error / skipped): "
                    "see the CSV", fontsize=7, transform=ax.transAxes)
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        out = Path(f"{path_prefix}_{suffix}.png")
        fig.savefig(out, dpi=120)
        plt.close(fig)
        paths.append(out)
    return paths


# --------------------------------------------------------------------------------------------
# Whole-step benchmark: bars per task, one colour per backend (and compile mode)

_STEP_METRICS = (("steps_per_s", "training steps / s"), ("peak_mb", "peak memory (MiB)"))


def _cell_label(backend: str, mode: str) -> str:
    return _label(backend) + ("" if mode == "off" else f" ({mode})")


def _bars(ax, df, metric: str, series: list[tuple[str, str]], tasks: list[str]) -> None:
    """Grouped bars: x = task, one bar per (backend, compile); gaps marked with their status."""
    import numpy as np

    width = 0.8 / max(len(series), 1)
    colors = _colors(len(series))
    for i, (backend, mode) in enumerate(series):
        x = np.arange(len(tasks)) + (i - (len(series) - 1) / 2) * width
        for xi, task in zip(x, tasks):
            row = df[(df["task"] == task) & (df["backend"] == backend) & (df["compile"] == mode)]
            value = float(row[metric].iloc[0]) if len(row) else float("nan")
            if value > 0:
                ax.bar(xi, value, width, color=colors[i])
            elif len(row):
                ax.text(xi, 0.02, str(row["status"].iloc[0]), rotation=90, fontsize=6,
                        ha="center", va="bottom", transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(tasks)), [TASK_TITLES.get(t, t) for t in tasks])
    ax.set_yscale("log")


def _colors(count: int) -> list:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20" if count > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(count)]


def plot_steps(df, path_prefix: Path, title: str) -> Path:
    """`<prefix>.png`: steps/s and peak memory per task, one bar per backend (log scale); a cell
    without a value shows its status (timeout, oom, ...) instead of a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(df["task"]))
    series = list(dict.fromkeys(zip(df["backend"], df["compile"])))
    fig, axes = plt.subplots(2, 1, figsize=(max(7.5, 1.6 * len(tasks) + 3), 8), sharex=True)
    for ax, (metric, label) in zip(axes, _STEP_METRICS):
        _bars(ax, df, metric, series, tasks)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    from matplotlib.patches import Patch

    fig.legend([Patch(color=c) for c in _colors(len(series))],
               [_cell_label(b, m) for b, m in series], loc="center right", fontsize=7)
    axes[0].set_title(f"whole training step (forward, backward, optimizer)\n{title}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    out = Path(f"{path_prefix}.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
