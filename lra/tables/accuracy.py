"""The LRA accuracy table: rows = backends, columns = tasks (+ Avg), cells = test accuracy in
% as mean ± std over seeds, best per column, published reference rows below."""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from lra.record import RunRecord
from lra.tables.published import PUBLISHED_ROWS, PUBLISHED_SOURCES, PublishedRow
from lra.tables.records import (STANDARD_TASKS, TASK_TITLES, accuracy_of, as_records,
                                backend_order, backend_title, failure_reason, gap_notes,
                                rounded, run_marks, seeds, settings_key, split_usable,
                                task_columns)
from lra.tables.table import DAGGER, DOUBLE_DAGGER, GAP, Cell, Table

ACCURACY_CSV_FIELDS = ("block", "source", "backend", "label", "task", "mean", "std", "n", "seeds",
                       "best", "nonofficial_data", "status", "cell", "shortened")


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


def _csv(block: str, backend: str | None, task: str, *, mean: float | None = None,
         std: float | None = None, n: int | None = None, seeds: str = "",
         nonofficial: bool = False, cell: str = GAP, status: str, source: str = "measured",
         label: str | None = None, shortened: bool = False) -> dict[str, Any]:
    return {"block": block, "source": source, "backend": backend or "",
            "label": label or backend_title(backend or ""), "task": task, "mean": rounded(mean),
            "std": rounded(std), "n": n, "seeds": seeds, "best": 0,
            "nonofficial_data": int(nonofficial), "status": status, "cell": cell,
            "shortened": int(shortened)}


class _Measured:
    """The measured block, built row by row; collects the CSV rows and what the notes say."""

    def __init__(self, cells: dict, tasks: list[str], digits: int) -> None:
        self.cells, self.tasks, self.digits = cells, tasks, digits
        self.rows: list[list[Cell]] = []
        self.values: list[list[float | None]] = []
        self.csv_rows: list[dict[str, Any]] = []
        self.missing: list[str] = []
        self.mixed: list[str] = []
        self.any_mark = False
        self.any_shortened = False

    def add_row(self, backend: str) -> None:
        row, vals, task_means, avg_mark = [Cell(backend_title(backend))], [], [], ""
        for task in self.tasks:
            cell, mean = self._cell(backend, task)
            row.append(cell)
            vals.append(mean)
            if mean is not None and task in STANDARD_TASKS:
                task_means.append(mean)
                avg_mark = "".join(m for m in (DAGGER, DOUBLE_DAGGER) if m in avg_mark + cell.mark)
        if len(task_means) == len(STANDARD_TASKS):
            avg = statistics.fmean(task_means)
            row.append(Cell(f"{avg:.{self.digits}f}", mark=avg_mark))
            vals.append(avg)
            self.csv_rows.append(_csv("measured", backend, "avg", mean=avg, status="ok",
                                      nonofficial=DAGGER in avg_mark, cell=row[-1].plain,
                                      shortened=DOUBLE_DAGGER in avg_mark))
        else:
            row.append(Cell(GAP))
            vals.append(None)
            self.csv_rows.append(_csv("measured", backend, "avg", status="missing"))
        self.rows.append(row)
        self.values.append(vals)

    def _cell(self, backend: str, task: str) -> tuple[Cell, float | None]:
        runs = self.cells.get((task, backend), [])
        if not runs:
            self.missing.append(f"{task}/{backend}")
            self.csv_rows.append(_csv("measured", backend, task, status="missing"))
            return Cell(GAP), None
        mean, std = mean_std([100.0 * accuracy_of(r) for r in runs])
        mark = run_marks(runs)
        nonofficial, shortened = DAGGER in mark, DOUBLE_DAGGER in mark
        self.any_mark |= nonofficial
        self.any_shortened |= shortened
        if len({settings_key(r) for r in runs}) > 1:
            self.mixed.append(f"{task}/{backend}")
        cell = Cell(format_mean_std(mean, std, len(runs), self.digits), mark=mark)
        self.csv_rows.append(_csv("measured", backend, task, mean=mean, std=std, n=len(runs),
                                  seeds=seeds(runs), nonofficial=nonofficial, cell=cell.plain,
                                  status="ok", shortened=shortened))
        return cell, mean

    def mark_best(self, columns: list[str]) -> None:
        """Bold the best cells; the CSV flags the same cells as the rendered table."""
        _mark_best(self.rows, self.values, self.digits)
        best = {(r[0].text, columns[j]) for r in self.rows for j, c in enumerate(r) if c.best}
        for entry in self.csv_rows:
            column = "Avg" if entry["task"] == "avg" else TASK_TITLES.get(entry["task"], entry["task"])
            entry["best"] = int((entry["label"], column) in best)


def _majority_row(cells: dict, tasks: list[str], digits: int) -> tuple[list[Cell], list]:
    """The 'Majority class' reference row: per task, the accuracy of always answering the
    commonest test label of the data the runs used (their records), with the range when runs of
    the task saw different test splits. Empty when no record carries it."""
    row, csv_rows = [Cell("Majority class")], []
    for task in tasks:
        values = [100.0 * r.metrics.majority_test_acc for (t, _), runs in cells.items()
                  if t == task for r in runs
                  if r.metrics is not None and r.metrics.majority_test_acc is not None]
        if not values:
            row.append(Cell(GAP))
            continue
        low, high, mean = min(values), max(values), statistics.fmean(values)
        text = f"{mean:.{digits}f}"
        if round(high - low, digits) > 0:
            text += f" ({low:.{digits}f}-{high:.{digits}f})"
        row.append(Cell(text))
        csv_rows.append(_csv("majority", None, task, mean=mean, n=len(values), cell=text,
                             status="ok", label="Majority class"))
    row.append(Cell(GAP))
    return (row, csv_rows) if csv_rows else ([], [])


def _published_block(rows: Iterable[PublishedRow], tasks: list[str]) -> tuple[list, list]:
    """Rows 'Model [source]' and their CSV rows (backend: the registered backend, if any)."""
    table_rows, csv_rows = [], []
    for pub in rows:
        def entry(task: str, value: float) -> dict[str, Any]:
            return _csv("published", pub.backend, task, mean=value, source=pub.source,
                        label=pub.model, cell=f"{value:.{pub.digits}f}", status="ok")
        row = [Cell(f"{pub.model} [{pub.source}]")]
        for task in tasks:
            score = pub.scores.get(task)
            row.append(Cell(GAP if score is None else f"{score:.{pub.digits}f}"))
            csv_rows += [entry(task, score)] if score is not None else []
        row.append(Cell(GAP if pub.avg is None else f"{pub.avg:.{pub.digits}f}"))
        csv_rows += [entry("avg", pub.avg)] if pub.avg is not None else []
        table_rows.append(row)
    return table_rows, csv_rows


def _notes(measured: _Measured, failed: list, duplicates: list[str], published: bool) -> list[str]:
    notes = ["Test accuracy (%) of the best-validation checkpoint: mean ± sample standard "
             "deviation over seeds, n = number of seeds (one seed: no ±).",
             "Avg: mean over ListOps, Text, Retrieval, Image and Pathfinder, only for rows with "
             "all five."]
    if any(c.best for r in measured.rows for c in r):
        notes.append("Bold: best measured value in its column (of at least two different values).")
    if measured.any_mark:
        notes.append(f"{DAGGER} At least one run of the cell used generated or sample data, or "
                     "splits smaller than the official LRA release's: not comparable with "
                     "published numbers.")
    if measured.any_shortened:
        notes.append(f"{DOUBLE_DAGGER} At least one run of the cell trained fewer steps than the "
                     "paper's schedule (shortened): not comparable with published numbers.")
    notes += gap_notes(measured.missing, failed, duplicates)
    if measured.mixed:
        notes.append("Seeds of these cells ran with different attention options or step counts: "
                     + ", ".join(measured.mixed) + ".")
    if published:
        notes.append("Published rows (not measured here): "
                     + "; ".join(f"[{k}] {v}" for k, v in PUBLISHED_SOURCES.items()) + ".")
    return notes


def accuracy_table(records: Iterable[RunRecord | dict], *, published: bool = True,
                   digits: int = 1) -> Table:
    """The LRA accuracy table; failed runs and missing cells are gaps with notes."""
    records = as_records(records)
    tasks = task_columns(records)
    columns = ["Backend"] + [TASK_TITLES.get(t, t) for t in tasks] + ["Avg"]
    cells, failed, duplicates = split_usable(records, failure_reason)
    measured = _Measured(cells, tasks, digits)
    for backend in backend_order(r.attention for r in records):
        measured.add_row(backend)
    measured.mark_best(columns)
    majority, majority_csv = _majority_row(cells, tasks, digits)  # a reference, never "best"
    extra_rows, extra_csv = _published_block(PUBLISHED_ROWS if published else (), tasks)
    return Table(title="LRA accuracy (test accuracy, %)", columns=columns,
                 rows=measured.rows + ([majority] if majority else []),
                 extra_title="Published results" if published else None, extra_rows=extra_rows,
                 notes=_notes(measured, failed, duplicates, published) + (
                     ["Majority class: always answering the commonest label of the test split the "
                      "runs used (a floor, not a method; range over runs when their data differ)."]
                     if majority else []),
                 csv_rows=measured.csv_rows + majority_csv + extra_csv)
