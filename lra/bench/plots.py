"""Benchmark plots: time and memory versus n, log-log, one colour per backend."""

from __future__ import annotations

from pathlib import Path

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
