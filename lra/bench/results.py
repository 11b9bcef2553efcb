"""Benchmark results: the CSV (one row per backend x n x mode) and its Markdown summaries.

A row has the fixed :data:`COLUMNS` plus, for each backend, the fields its module reports
through :meth:`~lotformer.attention.base.AttentionBackend.bench_fields`, as columns
``<backend>_<field>`` (LOT: ``lot_rank``, ``lot_eps``, ``lot_n_iters``, ``lot_grad_mode``),
placed after ``options``. Every option is also in the ``options`` JSON.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path

from lra.bench.presets import BenchError

MODES = ("fwd", "fwd+bwd")
_HEAD = ["preset", "backend", "mode", "n", "batch", "heads", "head_dim", "dtype", "status",
         "median_ms", "min_ms", "times_ms", "repeats", "warmup", "peak_mb", "baseline_mb",
         "mem_method", "options"]
_TAIL = ["device", "device_tag", "threads", "torch", "python", "timeout_s", "max_memory_gb",
         "timestamp", "error"]
COLUMNS = [*_HEAD, *_TAIL]  # without any backend's bench fields


def field_columns(backend: str, fields: dict) -> dict:
    """A module's bench fields as row entries ``<backend>_<field>``."""
    return {f"{backend}_{key}": value for key, value in fields.items()}


def csv_columns(rows: list[dict]) -> list[str]:
    """:data:`COLUMNS` with the rows' bench-field columns (in order of appearance) after
    ``options``."""
    known = set(COLUMNS)
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in known))
    return [*_HEAD, *extra, *_TAIL]


def write_csv_atomic(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    """Write the rows (missing values empty) via a temp file and a rename; columns default to
    the attention benchmark's (:func:`csv_columns`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns or csv_columns(rows),
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Summary: ratios and slopes (pure functions on a results DataFrame)


def loglog_slope(n1: float, y1: float, n2: float, y2: float) -> float:
    """Slope of log y versus log n between two points: 1 = linear, 2 = quadratic in n."""
    if not (n1 > 0 and n2 > 0 and y1 > 0 and y2 > 0) or n1 == n2:
        return float("nan")
    return math.log(y2 / y1) / math.log(n2 / n1)


def _ok(df):
    return df[df["status"] == "ok"]


def ratio_table(df, reference: str = "lot", others: list[str] | None = None,
                metric: str = "median_ms"):
    """reference / other of `metric` at each (mode, n): < 1 means the reference is cheaper.

    Returns a DataFrame with columns mode, n, `<reference>` (its own value) and one column
    `<reference>/<other>` per other backend; NaN where either point is missing or a gap.
    """
    import pandas as pd

    ok = _ok(df)
    if others is None:
        others = [b for b in dict.fromkeys(df["backend"]) if b != reference]
    table = (ok.pivot_table(index=["mode", "n"], columns="backend", values=metric, aggfunc="first")
             if len(ok) else pd.DataFrame())

    def value(backend, key):
        return table[backend].get(key, float("nan")) if backend in table else float("nan")

    keys = sorted({(m, int(n)) for m, n in zip(df["mode"], df["n"])},
                  key=lambda k: (MODES.index(k[0]) if k[0] in MODES else 9, k[1]))
    rows = []
    for key in keys:
        ref = value(reference, key)
        row = {"mode": key[0], "n": key[1], reference: ref}
        for other in others:
            val = value(other, key)
            row[f"{reference}/{other}"] = ref / val if val and val > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["mode", "n", reference, *(f"{reference}/{o}" for o in others)])


def slope_table(df, n1: int | None = None, n2: int | None = None):
    """Log-log slopes of median time and peak memory versus n for each backend and mode.

    Between n1 and n2 (defaults: the smallest and the largest n with an "ok" point for that
    backend and mode); NaN where a point is missing or a value is not positive.
    """
    import pandas as pd

    ok = _ok(df)
    rows = []
    for (backend, mode), part in df.groupby(["backend", "mode"], sort=False):
        good = ok[(ok["backend"] == backend) & (ok["mode"] == mode)].set_index("n")
        lo = n1 if n1 is not None else (int(good.index.min()) if len(good) else int(part["n"].min()))
        hi = n2 if n2 is not None else (int(good.index.max()) if len(good) else int(part["n"].max()))
        row = {"backend": backend, "mode": mode, "n1": lo, "n2": hi}
        for metric, name in (("median_ms", "time_slope"), ("peak_mb", "memory_slope")):
            if lo in good.index and hi in good.index:
                row[name] = loglog_slope(lo, float(good.at[lo, metric]), hi, float(good.at[hi, metric]))
            else:
                row[name] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["backend", "mode", "n1", "n2", "time_slope", "memory_slope"])


def markdown_table(df, floatfmt: str = ".3g") -> str:
    """A GitHub Markdown table; NaN shows as an em dash."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "—" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def summarize(csv_path: Path, reference: str = "lot", compare: list[str] | None = None,
              slope_lengths: tuple[int, int] | None = None) -> str:
    """Markdown: the run's settings, ratio tables of ``reference`` to ``compare`` (time and
    memory) and the log-log slopes of every backend."""
    import pandas as pd

    if not csv_path.is_file():
        raise BenchError(f"--summary: no such CSV {csv_path}; run the benchmark first")
    df = pd.read_csv(csv_path)
    lines = []
    if len(df):
        first = df.iloc[0]
        lines += [f"Preset `{first['preset']}`, {first['device']}, {first['threads']} threads, "
                  f"torch {first['torch']}, B={first['batch']} H={first['heads']} "
                  f"D={first['head_dim']}, {first['dtype']}; medians of {first['repeats']} calls.",
                  ""]
    present = list(dict.fromkeys(df["backend"]))
    if reference in present:
        others = [b for b in (compare or ["softmax", "sinkhorn", "linear"]) if b in present]
        for metric, what in (("median_ms", "time (ms)"), ("peak_mb", "peak memory (MiB)")):
            table = ratio_table(df, reference, others, metric).rename(
                columns={reference: f"{reference} {what}"})
            lines += [f"**{what}: {reference} ÷ other** (< 1: {reference} is cheaper)", "",
                      markdown_table(table), ""]
    else:
        lines += [f"(no {reference!r} rows in the CSV: ratios left out)", ""]
    n1, n2 = slope_lengths or (None, None)
    lines += ["**log-log slope versus n** (1 = linear, 2 = quadratic)", "",
              markdown_table(slope_table(df, n1, n2), ".2f")]
    return "\n".join(lines)
