"""Markdown tables of a whole-step benchmark run (step_<tag>.csv and its _loader.csv): steps/s
and peak memory per backend x task, the data loader against the step, and the README section.
"""

from __future__ import annotations

import re
from pathlib import Path

from lra.bench.presets import BenchError
from lra.tables import Cell, Table, render_markdown
from lra.tables.records import TASK_TITLES, backend_order, backend_title, number

README_START, README_END = "<!-- step-table:start -->", "<!-- step-table:end -->"
_TASK_ORDER = tuple(TASK_TITLES)


def _tasks(df) -> list[str]:
    present = list(dict.fromkeys(df["task"]))
    return sorted(present, key=lambda t: (_TASK_ORDER.index(t) if t in _TASK_ORDER else 99, t))


def _series(df) -> list[tuple[str, str]]:
    """(backend, compile mode) row keys: backends in the tables' order, eager first."""
    modes = list(dict.fromkeys(df["compile"]))
    return [(b, m) for b in backend_order(df["backend"]) for m in modes
            if ((df["backend"] == b) & (df["compile"] == m)).any()]


def _value_cells(df, series, tasks, metric: str, fmt: str, higher_is_better: bool):
    """One row of cells per series: the value, or the cell's status where there is none."""
    values = {}
    for key in series:
        for task in tasks:
            row = df[(df["backend"] == key[0]) & (df["compile"] == key[1]) & (df["task"] == task)]
            values[key, task] = (number(row[metric].iloc[0]) if len(row) else None,
                                 str(row["status"].iloc[0]) if len(row) else "—")
    best = {}
    for task in tasks:
        found = [v for (k, t), (v, _) in values.items() if t == task and v is not None]
        best[task] = (max if higher_is_better else min)(found) if found else None
    rows = []
    for key in series:
        label = backend_title(key[0]) + ("" if key[1] == "off" else f" (compile: {key[1]})")
        cells = [Cell(label)]
        for task in tasks:
            value, status = values[key, task]
            cells.append(Cell(status) if value is None else
                          Cell(format(value, fmt), best=value == best[task] and len(series) > 1,
                               mark="" if status == "ok" else "‡"))
        rows.append(cells)
    return rows


def step_tables(df) -> list[Table]:
    """Steps/s (higher is better, bold) and peak memory (lower is better) by backend x task."""
    tasks, series = _tasks(df), _series(df)
    columns = ["Backend", *(TASK_TITLES.get(t, t) for t in tasks)]
    return [
        Table("Training steps per second", columns,
              _value_cells(df, series, tasks, "steps_per_s", ".3g", True)),
        Table("Peak memory (MiB)", columns,
              _value_cells(df, series, tasks, "peak_mb", ".0f", False)),
    ]


def loader_table(loader_df, step_df) -> Table:
    """Per task: the loader's batches/s per setting and against the fastest measured step."""
    settings = list(dict.fromkeys(zip(loader_df["workers"], loader_df["pin_memory"])))
    names = [f"{w} workers" + (", pinned" if str(p) == "True" else "") for w, p in settings]
    columns = ["Task", *(f"loader batches/s ({n})" for n in names), "fastest step (steps/s)",
               "loader ÷ step"]
    rows = []
    for task in _tasks(loader_df):
        part = loader_df[loader_df["task"] == task]
        rates = [number(part[(part["workers"] == w) & (part["pin_memory"] == p)]["batches_per_s"]
                        .max()) for w, p in settings]
        fastest = number(step_df[step_df["task"] == task]["steps_per_s"].max())
        ratio = rates[0] / fastest if rates and rates[0] and fastest else None
        rows.append([Cell(TASK_TITLES.get(task, task)),
                     *(Cell("—" if r is None else f"{r:.0f}") for r in rates),
                     Cell("—" if fastest is None else f"{fastest:.3g}"),
                     Cell("—" if ratio is None else f"{ratio:.0f}×")])
    return Table("Data loader against the step", columns, rows)


def _settings_line(df) -> str:
    first = df.iloc[0]
    overrides = first.get("overrides")
    shape = (f"overrides `{overrides}`" if isinstance(overrides, str) and overrides.strip()
             else "each task's paper batch size and length")
    methods = ", ".join(str(m) for m in dict.fromkeys(df["mem_method"].dropna()))
    return (f"Measured on {first['device']} ({first['threads']} threads), torch {first['torch']}: "
            f"{first['warmup']} warm-up and up to {first['steps']} timed training steps per "
            f"cell, {first['timeout_s']} s limit per cell, {shape}, synthetic batches; memory "
            f"method {methods or '—'}.")


_NOTES = [
    "A step is forward, loss, backward, gradient clipping and the AdamW step of the full model "
    "(configs/model/lra_small.yaml, the task's config and task_attn settings), timed by the "
    "training's throughput meter; data loading is timed separately (loader table).",
    "timeout: the cell passed its time limit before a timed step finished (or its warm-up "
    "step left no room for one); oom: it ran out of memory; ‡: measured, but the cell then "
    "passed its limit.",
    "Peak memory: on CUDA torch.cuda.max_memory_allocated (as the LRA and Skyformer tables); "
    "on CPU the process's peak resident memory (the Python and torch runtime included).",
    "loader ÷ step: batches/s of the training DataLoader (trainer.num_workers, "
    "trainer.pin_memory of the training config) over the task's fastest step; with 0 workers "
    "the loader adds 1/ratio of a step's time.",
]


def render_step_section(step_csv: Path) -> str:
    """The Markdown of a run: settings, steps/s, peak memory, loader table, notes."""
    import pandas as pd

    if not Path(step_csv).is_file():
        raise BenchError(f"--summary: no such CSV {step_csv}; run scripts/bench_step.py first")
    df = pd.read_csv(step_csv)
    if df.empty:
        raise BenchError(f"{step_csv} has no rows; run scripts/bench_step.py again")
    loader_csv = Path(str(step_csv)[: -len(".csv")] + "_loader.csv")
    tables = step_tables(df)
    if loader_csv.is_file() and len(pd.read_csv(loader_csv)):
        tables.append(loader_table(pd.read_csv(loader_csv), df))
    parts = [_settings_line(df), "", *(render_markdown(t) for t in tables)]
    parts += [f"- {note}" for note in _NOTES]
    text = "\n".join(parts)
    return re.sub(r"^## ", "#### ", text, flags=re.MULTILINE) + "\n"


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the README's step-table markers with ``section``."""
    text = Path(readme).read_text()
    if README_START not in text or README_END not in text:
        raise BenchError(f"{readme} has no {README_START} ... {README_END} markers; add them "
                         "where the whole-step tables belong, or leave out --readme")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    Path(readme).write_text(f"{head}{README_START}\n{section}{README_END}{tail}")


def write_summary(step_csv: Path, readme: Path | None = None) -> str:
    """The run's Markdown; with ``readme``, also written into it. Returns the Markdown."""
    section = render_step_section(step_csv)
    if readme is not None:
        update_readme(readme, section)
    return section
