"""The paper's tables, aggregated from results records (`lra.results`).

Pure functions over lists of record dicts: `accuracy_table` (the LRA accuracy table, test
accuracy in % as mean ± std over seeds, best per column, published reference rows below)
and `efficiency_table` (training samples/s and peak memory, relative to softmax on the same
task). Both return a `Table` that renders to Markdown, LaTeX and CSV rows; missing cells,
failed runs and unreadable records become gaps (`—`) and notes, never exceptions.
`load_records` is the one function that touches the disk.

Published numbers are REFERENCE §4: the LRA paper (Tay et al., 2021), the Skyformer paper
(Chen et al., 2021) and the LOTFormer paper (arXiv 2509.23436).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lra.results import find_records, read_record

# The five tasks of the LRA average, then Path-X (shown only when a record has it).
STANDARD_TASKS = ("listops", "text", "retrieval", "image", "pathfinder")
EXTRA_TASKS = ("pathx",)
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
               "pathfinder": "Pathfinder", "pathx": "Path-X"}
# Row order of the tables; backends not listed here follow, sorted by name.
BACKEND_ORDER = ("lot", "softmax", "sinkhorn", "linear", "performer", "nystrom", "linformer",
                 "skyformer")
BACKEND_TITLES = {"lot": "LOT", "softmax": "Softmax", "sinkhorn": "Sinkhorn", "linear": "Linear",
                  "performer": "Performer", "nystrom": "Nyströmformer", "linformer": "Linformer",
                  "skyformer": "Skyformer"}
BASELINE = "softmax"  # efficiency ratios are relative to this backend on the same task
# Data sources that are not the official LRA release (see lra.data.base.SOURCES).
NON_OFFICIAL_SOURCES = ("generated", "sample")

GAP = "—"
DAGGER = "†"

# ---------------------------------------------------------------------------------------------
# Published reference rows (REFERENCE §4), accuracy in %.


@dataclass(frozen=True)
class PublishedRow:
    """One published row: model name, short source key (see PUBLISHED_SOURCES), scores."""

    model: str
    source: str
    scores: dict[str, float]  # task -> accuracy %, only the cells the source reports
    avg: float | None = None  # the average as published
    digits: int = 2  # decimals as published


PUBLISHED_SOURCES = {
    "LRA": "Tay et al., Long Range Arena (ICLR 2021): original JAX setup",
    "Skyformer": "Chen et al., Skyformer (NeurIPS 2021): the small PyTorch setup these presets follow",
    "LOTFormer": "LOTFormer paper (arXiv 2509.23436): only its Text number is available",
}


def _row(model: str, source: str, values: tuple[float, ...], avg: float) -> PublishedRow:
    return PublishedRow(model, source, dict(zip(STANDARD_TASKS, values)), avg)


LRA_PAPER_ROWS = (
    _row("Transformer", "LRA", (36.37, 64.27, 57.46, 42.44, 71.40), 54.39),
    _row("Linformer", "LRA", (35.70, 53.94, 52.27, 38.56, 76.34), 51.36),
    _row("Reformer", "LRA", (37.27, 56.10, 53.40, 38.07, 68.50), 50.67),
    _row("Sinkhorn Transformer", "LRA", (33.67, 61.20, 53.83, 41.23, 67.45), 51.39),
    _row("BigBird", "LRA", (36.05, 64.02, 59.29, 40.83, 74.87), 55.01),
    _row("Linear Transformer", "LRA", (16.13, 65.90, 53.09, 42.34, 75.30), 50.55),
    _row("Performer", "LRA", (18.01, 65.40, 53.82, 42.77, 77.05), 51.41),
)
SKYFORMER_PAPER_ROWS = (
    _row("Self-attention", "Skyformer", (38.37, 61.95, 80.69, 40.57, 65.26), 57.37),
    _row("Nyströmformer", "Skyformer", (38.51, 64.83, 80.52, 41.30, 69.48), 58.93),
    _row("Linformer", "Skyformer", (37.45, 58.93, 78.19, 37.96, 60.93), 54.69),
    _row("Performer", "Skyformer", (38.02, 64.19, 80.04, 41.43, 66.30), 58.00),
    _row("Reformer", "Skyformer", (37.68, 62.93, 78.99, 48.87, 66.49), 58.99),
    _row("BigBird", "Skyformer", (39.25, 63.86, 80.28, 43.16, 68.72), 59.05),
    _row("Skyformer", "Skyformer", (38.69, 64.70, 82.06, 40.77, 70.73), 59.39),
)
LOTFORMER_PAPER_ROWS = (PublishedRow("LOTFormer", "LOTFormer", {"text": 71.1}, None, digits=1),)
PUBLISHED_ROWS = LRA_PAPER_ROWS + SKYFORMER_PAPER_ROWS + LOTFORMER_PAPER_ROWS

# ---------------------------------------------------------------------------------------------
# Tables: a renderer-neutral structure.


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, whether it is the best of its column, and a marker suffix."""

    text: str
    best: bool = False
    mark: str = ""  # e.g. DAGGER for runs on non-official data

    @property
    def plain(self) -> str:
        return self.text + (f" {self.mark}" if self.mark else "")


@dataclass
class Table:
    """Measured rows, an optional second block (published rows), notes and CSV rows."""

    title: str
    columns: list[str]
    rows: list[list[Cell]]
    extra_title: str | None = None  # caption of the second block
    extra_rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    csv_rows: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, row_label: str, column: str) -> Cell:
        """The cell of the measured row whose first cell reads `row_label` (for tests/scripts)."""
        j = self.columns.index(column)
        for row in self.rows:
            if row[0].text == row_label:
                return row[j]
        raise KeyError(f"no row {row_label!r}; rows: {[r[0].text for r in self.rows]}")


# ---------------------------------------------------------------------------------------------
# Reading records.


@dataclass
class LoadedRecords:
    records: list[dict[str, Any]]
    skipped: list[str]  # "path: reason" for unreadable or malformed records


def validate_record(record: Any) -> str | None:
    """Why `record` cannot be used at all, or None when it can."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    for key in ("task", "attention"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"no {key!r} name"
    for key in ("metrics", "data", "throughput", "memory", "device"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"{key!r} is not an object"
    return None


def load_records(roots: Iterable[str | Path]) -> LoadedRecords:
    """All readable records under the run directories; unreadable ones are listed, not raised.

    Each record gets `_path` (its results.json) for the notes.
    """
    records, skipped = [], []
    roots = list(roots)
    for root in roots:
        if not Path(root).exists():
            skipped.append(f"{root}: no such file or directory")
    for path in find_records(*roots):
        try:
            record = read_record(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            skipped.append(f"{path}: unreadable ({type(err).__name__}: {err})")
            continue
        reason = validate_record(record)
        if reason:
            skipped.append(f"{path}: malformed record ({reason})")
            continue
        records.append({**record, "_path": str(path)})
    return LoadedRecords(records, skipped)


def filter_by_tag(records: list[dict], pattern: str | None) -> tuple[list[dict], int]:
    """Records whose tag matches the glob `pattern` (None: all), and how many were dropped."""
    if pattern is None:
        return records, 0
    kept = [r for r in records if fnmatch.fnmatchcase(str(r.get("tag")), pattern)]
    return kept, len(records) - len(kept)


# ---------------------------------------------------------------------------------------------
# Helpers over records.


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, non-numeric, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _section(record: dict, key: str) -> dict:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def accuracy_of(record: dict) -> float | None:
    """The record's test accuracy as a fraction in [0, 1], or None."""
    value = _number(_section(record, "metrics").get("test_acc"))
    return value if value is not None and 0.0 <= value <= 1.0 else None


def failure_reason(record: dict, need_accuracy: bool = True) -> str | None:
    """Why a record does not count as a finished run, or None when it does."""
    status = record.get("status")
    if status != "completed":
        error = record.get("error")
        return f"status {status!r}" + (f": {_shorten(str(error))}" if error else "")
    if need_accuracy and accuracy_of(record) is None:
        raw = _section(record, "metrics").get("test_acc")
        return "completed without a test accuracy" if raw is None else f"invalid test_acc {raw!r}"
    return None


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def run_label(record: dict) -> str:
    return f"{record['task']}/{record['attention']} seed {record.get('seed')}"


def device_label(record: dict) -> str:
    """What a run trained on, e.g. 'NVIDIA H100 80GB HBM3' or 'CPU x86_64 (2 threads)'."""
    device = _section(record, "device")
    kind, name = device.get("type"), device.get("name")
    if kind == "cuda":
        return str(name or "CUDA GPU")
    if kind == "cpu":
        threads = device.get("threads")
        return f"CPU {name or ''}".rstrip() + (f" ({threads} threads)" if threads else "")
    return str(name or kind or "unknown device")


def backend_order(backends: Iterable[str]) -> list[str]:
    present = set(backends)
    known = [b for b in BACKEND_ORDER if b in present]
    return known + sorted(present - set(BACKEND_ORDER))


def task_columns(records: list[dict]) -> list[str]:
    """The five standard tasks, then Path-X and any other task that has a record."""
    present = {r["task"] for r in records}
    extra = [t for t in EXTRA_TASKS if t in present]
    return list(STANDARD_TASKS) + extra + sorted(present - set(STANDARD_TASKS) - set(EXTRA_TASKS))


def _dedupe(records: list[dict]) -> tuple[list[dict], list[str]]:
    """One record per (task, backend, seed): the newest by `created`; notes name the rest."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["attention"], str(record.get("seed")))].append(record)
    kept, notes = [], []
    for group in groups.values():
        group.sort(key=lambda r: (str(r.get("created") or ""), r.get("_path", "")))
        kept.append(group[-1])
        if len(group) > 1:
            notes.append(f"{run_label(group[-1])}: {len(group)} records, used the newest "
                         f"({group[-1].get('_path', '?')})")
    return kept, notes


def _settings_key(record: dict) -> str:
    return json.dumps([record.get("attention_options"), record.get("steps")], sort_keys=True,
                      default=str)


def _title(backend: str) -> str:
    return BACKEND_TITLES.get(backend, backend)


def _cells_of(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        cells[(record["task"], record["attention"])].append(record)
    return cells


def _seeds(runs: list[dict]) -> str:
    return ";".join(str(s) for s in sorted((r.get("seed") for r in runs), key=str))


# ---------------------------------------------------------------------------------------------
# The accuracy table.


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_std(mean: float, std: float | None, n: int, digits: int = 1) -> str:
    """'37.2 ± 0.4 (n=3)'; a single seed has no spread: '37.2 (n=1)'."""
    if std is None:
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def _mark_best(rows: list[list[Cell]], values: list[list[float | None]], digits: int) -> None:
    """Bold the highest value of each column (ties at display precision all count); a column
    needs at least two values, not all equal, to have a best."""
    for j in range(len(values[0]) if values else 0):
        column = [round(v[j], digits) for v in values if v[j] is not None]
        if len(column) < 2 or min(column) == max(column):
            continue
        top = max(column)
        for row, vals in zip(rows, values):
            if vals[j] is not None and round(vals[j], digits) == top:
                row[j + 1] = Cell(row[j + 1].text, True, row[j + 1].mark)


def accuracy_table(records: list[dict], *, published: bool = True, digits: int = 1) -> Table:
    """The LRA accuracy table: rows = backends, columns = tasks (+ Avg), cells = test accuracy
    in % as mean ± std over seeds. Records must have passed `validate_record`."""
    tasks = task_columns(records)
    columns = ["Backend"] + [TASK_TITLES.get(t, t) for t in tasks] + ["Avg"]
    backends = backend_order(r["attention"] for r in records)

    failed = [(r, failure_reason(r)) for r in records]
    ok = [r for r, why in failed if why is None]
    failed = [(r, why) for r, why in failed if why is not None]
    ok, duplicate_notes = _dedupe(ok)
    cells = _cells_of(ok)

    rows: list[list[Cell]] = []
    values: list[list[float | None]] = []
    csv_rows: list[dict[str, Any]] = []
    missing, mixed, any_mark = [], [], False
    for backend in backends:
        row, vals, task_means, avg_mark = [Cell(_title(backend))], [], [], ""
        for task in tasks:
            runs = cells.get((task, backend), [])
            if not runs:
                row.append(Cell(GAP))
                vals.append(None)
                missing.append(f"{task}/{backend}")
                csv_rows.append(_accuracy_csv("measured", backend, task, status="missing"))
                continue
            accs = [100.0 * accuracy_of(r) for r in runs]
            mean, std = mean_std(accs)
            mark = DAGGER if any(_section(r, "data").get("source") in NON_OFFICIAL_SOURCES
                                 for r in runs) else ""
            any_mark |= bool(mark)
            if len({_settings_key(r) for r in runs}) > 1:
                mixed.append(f"{task}/{backend}")
            text = format_mean_std(mean, std, len(runs), digits)
            row.append(Cell(text, mark=mark))
            vals.append(mean)
            if task in STANDARD_TASKS:
                task_means.append(mean)
                avg_mark = avg_mark or mark
            csv_rows.append(_accuracy_csv("measured", backend, task, mean=mean, std=std,
                                          n=len(runs), seeds=_seeds(runs), nonofficial=bool(mark),
                                          cell=Cell(text, mark=mark).plain, status="ok"))
        if len(task_means) == len(STANDARD_TASKS):
            avg = statistics.fmean(task_means)
            row.append(Cell(f"{avg:.{digits}f}", mark=avg_mark))
            vals.append(avg)
            csv_rows.append(_accuracy_csv("measured", backend, "avg", mean=avg,
                                          nonofficial=bool(avg_mark),
                                          cell=Cell(f"{avg:.{digits}f}", mark=avg_mark).plain,
                                          status="ok"))
        else:
            row.append(Cell(GAP))
            vals.append(None)
            csv_rows.append(_accuracy_csv("measured", backend, "avg", status="missing"))
        rows.append(row)
        values.append(vals)

    _mark_best(rows, values, digits)
    # The CSV flags the same cells as the rendered table.
    best = {(r[0].text, columns[j]) for r in rows for j, c in enumerate(r) if c.best}
    for entry in csv_rows:  # measured rows only so far
        column = "Avg" if entry["task"] == "avg" else TASK_TITLES.get(entry["task"], entry["task"])
        entry["best"] = int((entry["label"], column) in best)

    extra_rows = []
    if published:
        for pub in PUBLISHED_ROWS:
            row = [Cell(f"{pub.model} [{pub.source}]")]
            for task in tasks:
                score = pub.scores.get(task)
                row.append(Cell(GAP if score is None else f"{score:.{pub.digits}f}"))
                if score is not None:
                    csv_rows.append(_accuracy_csv("published", pub.model, task, mean=score,
                                                  source=pub.source, label=pub.model,
                                                  cell=f"{score:.{pub.digits}f}", status="ok"))
            row.append(Cell(GAP if pub.avg is None else f"{pub.avg:.{pub.digits}f}"))
            if pub.avg is not None:
                csv_rows.append(_accuracy_csv("published", pub.model, "avg", mean=pub.avg,
                                              source=pub.source, label=pub.model,
                                              cell=f"{pub.avg:.{pub.digits}f}", status="ok"))
            extra_rows.append(row)

    notes = ["Test accuracy (%) of the best-validation checkpoint: mean ± sample standard "
             "deviation over seeds, n = number of seeds (one seed: no ±).",
             "Avg: mean over ListOps, Text, Retrieval, Image and Pathfinder, only for rows with "
             "all five."]
    if any(c.best for r in rows for c in r):
        notes.append("Bold: best measured value in its column (of at least two different values).")
    if any_mark:
        notes.append(f"{DAGGER} At least one run of the cell used generated or sample data, not "
                     "the official LRA release: not comparable with published numbers.")
    notes += _gap_notes(missing, failed, duplicate_notes)
    if mixed:
        notes.append("Seeds of these cells ran with different attention options or step counts: "
                     + ", ".join(mixed) + ".")
    if published:
        notes.append("Published rows (not measured here): "
                     + "; ".join(f"[{k}] {v}" for k, v in PUBLISHED_SOURCES.items()) + ".")
    return Table(title="LRA accuracy (test accuracy, %)", columns=columns, rows=rows,
                 extra_title="Published results" if published else None, extra_rows=extra_rows,
                 notes=notes, csv_rows=csv_rows)


ACCURACY_CSV_FIELDS = ("block", "source", "backend", "label", "task", "mean", "std", "n", "seeds",
                       "best", "nonofficial_data", "status", "cell")


def _accuracy_csv(block: str, backend: str, task: str, *, mean: float | None = None,
                  std: float | None = None, n: int | None = None, seeds: str = "",
                  nonofficial: bool = False, cell: str = GAP, status: str,
                  source: str = "measured", label: str | None = None) -> dict[str, Any]:
    return {"block": block, "source": source, "backend": backend,
            "label": label or _title(backend), "task": task, "mean": _round(mean),
            "std": _round(std), "n": n, "seeds": seeds, "best": 0,
            "nonofficial_data": int(nonofficial), "status": status, "cell": cell}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _gap_notes(missing: list[str], failed: list[tuple[dict, str]],
               duplicates: list[str]) -> list[str]:
    notes = []
    if missing:
        notes.append("Missing (no finished run): " + ", ".join(missing) + ".")
    if failed:
        notes.append("Failed runs, not counted: "
                     + "; ".join(f"{run_label(r)} ({why})" for r, why in
                                 sorted(failed, key=lambda item: run_label(item[0]))) + ".")
    if duplicates:
        notes.append("Duplicate runs: " + "; ".join(duplicates) + ".")
    return notes


# ---------------------------------------------------------------------------------------------
# The efficiency table.


def format_ratio(ratio: float | None) -> str:
    """'2.30x' (two decimals below 10, one above)."""
    if ratio is None:
        return GAP
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def _efficiency_usable(record: dict) -> str | None:
    why = failure_reason(record, need_accuracy=False)
    if why is None and _number(_section(record, "throughput").get("train_samples_per_s")) is None:
        why = "no throughput measured"
    return why


def efficiency_table(records: list[dict]) -> Table:
    """Training samples/s and peak memory per task and backend, both relative to softmax on the
    same task and device. Means over seeds; failed runs are gaps."""
    tasks = task_columns(records)
    backends = backend_order(r["attention"] for r in records)
    columns = ["Task", "Backend", "Train samples/s", f"vs {_title(BASELINE).lower()}",
               "Peak memory (MiB)", f"vs {_title(BASELINE).lower()}", "n", "Device"]

    checked = [(r, _efficiency_usable(r)) for r in records]
    ok = [r for r, why in checked if why is None]
    failed = [(r, why) for r, why in checked if why is not None]
    ok, duplicate_notes = _dedupe(ok)
    cells = _cells_of(ok)

    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for key, runs in cells.items():
        memory = [_number(_section(r, "memory").get("peak_bytes")) for r in runs]
        memory = [m for m in memory if m is not None]
        summaries[key] = {
            "speed": statistics.fmean(_number(_section(r, "throughput")["train_samples_per_s"])
                                      for r in runs),
            "memory": statistics.fmean(memory) if memory else None,
            "devices": sorted({device_label(r) for r in runs}),
            "kinds": sorted({str(_section(r, "memory").get("kind")) for r in runs if memory}),
            "n": len(runs), "seeds": _seeds(runs),
        }

    rows, csv_rows, missing, not_comparable, no_baseline = [], [], [], [], []
    for task in tasks:
        if not any((task, b) in summaries for b in backends):
            missing += [f"{task}/{b}" for b in backends]
            continue
        base = summaries.get((task, BASELINE))
        if base is None:
            no_baseline.append(task)
        for backend in backends:
            s = summaries.get((task, backend))
            label = [Cell(TASK_TITLES.get(task, task)), Cell(_title(backend))]
            if s is None:
                missing.append(f"{task}/{backend}")
                rows.append(label + [Cell(GAP)] * (len(columns) - 2))
                csv_rows.append({"task": task, "backend": backend, "label": _title(backend),
                                 "status": "missing"})
                continue
            comparable = (base is not None and len(s["devices"]) == 1
                          and s["devices"] == base["devices"] and s["kinds"] == base["kinds"])
            if base is not None and not comparable:
                not_comparable.append(f"{task}/{backend}")
            speed_ratio = s["speed"] / base["speed"] if comparable else None
            memory_ratio = (s["memory"] / base["memory"] if comparable and s["memory"]
                            and base["memory"] else None)
            mib = None if s["memory"] is None else s["memory"] / 2**20
            rows.append(label + [
                Cell(f"{s['speed']:,.1f}"), Cell(format_ratio(speed_ratio)),
                Cell(GAP if mib is None else f"{mib:,.0f}"), Cell(format_ratio(memory_ratio)),
                Cell(str(s["n"])), Cell(", ".join(s["devices"])),
            ])
            csv_rows.append({
                "task": task, "backend": backend, "label": _title(backend),
                "samples_per_s": _round(s["speed"], 3), "speed_vs_softmax": _round(speed_ratio),
                "peak_mib": _round(mib, 1), "memory_vs_softmax": _round(memory_ratio),
                "memory_kind": ";".join(s["kinds"]), "n": s["n"], "seeds": s["seeds"],
                "device": "; ".join(s["devices"]), "status": "ok",
            })

    devices = sorted({d for s in summaries.values() for d in s["devices"]})
    kinds = sorted({k for s in summaries.values() for k in s["kinds"]})
    notes = [f"Training throughput (samples/s, mean over seeds; summed over DDP processes) and "
             f"peak memory; 'vs {BASELINE}' = backend / {BASELINE} on the same task and device "
             "(above 1x: faster, or more memory).",
             "Devices: " + (", ".join(devices) if devices else GAP) + "."]
    kind_text = {"cuda_max_allocated": "cuda_max_allocated = peak memory held by tensors "
                                       "(torch.cuda.max_memory_allocated)",
                 "cpu_max_rss": "cpu_max_rss = peak resident memory of the whole process "
                                "(includes data and framework; a lifetime peak, so in a local "
                                "-m sweep the largest of the jobs so far)"}
    if kinds:
        notes.append("Memory: " + "; ".join(kind_text.get(k, k) for k in kinds) + ".")
    notes += _gap_notes(missing, failed, duplicate_notes)
    if no_baseline:
        notes.append(f"No ratios for {', '.join(no_baseline)}: no finished {BASELINE} run.")
    if not_comparable:
        notes.append(f"No ratio (different device or memory measure than {BASELINE}): "
                     + ", ".join(not_comparable) + ".")
    title = "Training throughput and peak memory" + (f" ({devices[0]})" if len(devices) == 1 else "")
    return Table(title=title, columns=columns, rows=rows, notes=notes, csv_rows=csv_rows)


EFFICIENCY_CSV_FIELDS = ("task", "backend", "label", "samples_per_s", "speed_vs_softmax",
                         "peak_mib", "memory_vs_softmax", "memory_kind", "n", "seeds", "device",
                         "status")

# ---------------------------------------------------------------------------------------------
# Rendering.


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return (f"**{text}**" if cell.best else text) + cell.mark


TEXT_COLUMNS = ("Backend", "Task", "Device")  # left-aligned; every other column is numeric


def _md_table(columns: list[str], rows: list[list[Cell]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(table: Table) -> str:
    """Markdown: the measured table, the published block as a second table, then the notes."""
    lines = [f"## {table.title}", ""]
    lines += _md_table(table.columns, table.rows) if table.rows else ["(no measured runs)"]
    if table.extra_rows:
        lines += ["", f"### {table.extra_title}", ""] + _md_table(table.columns, table.extra_rows)
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---", "†": r"$^\dagger$",
                  "ö": r"\"o", "…": r"\ldots{}", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    return (rf"\textbf{{{text}}}" if cell.best else text) + latex_escape(cell.mark)


def render_latex(table: Table) -> str:
    """A `table` float with a booktabs tabular (needs \\usepackage{booktabs}); notes below."""
    spec = "".join("l" if c in TEXT_COLUMNS else "r" for c in table.columns)
    lines = ["% Generated by scripts/make_tables.py from results records; needs booktabs.",
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}", rf"\begin{{tabular}}{{{spec}}}",
             r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_cell(c) for c in row) + r" \\" for row in table.rows]
    if table.extra_rows:
        caption = latex_escape(table.extra_title or "")
        lines += [r"\midrule", rf"\multicolumn{{{len(table.columns)}}}{{l}}{{\emph{{{caption}}}}} \\"]
        lines += [" & ".join(_tex_cell(c) for c in row) + r" \\" for row in table.extra_rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"]
        lines += [latex_escape(note) + r"\\" for note in table.notes]
        lines += [r"\end{minipage}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict[str, Any]], fields: Iterable[str]) -> str:
    """CSV text with a header row; missing values are empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
