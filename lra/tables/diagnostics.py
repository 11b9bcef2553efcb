"""The attention diagnostics table: per task, backend and layer, the diagnostics of the best
checkpoint on a fixed batch (the records' `diagnostics`, written by runs with
`callbacks/diagnostics=on`, lra/diagnostics/callback.py), mean over heads and seeds."""

from __future__ import annotations

import statistics
from typing import Iterable

from lra.record import RunRecord
from lra.tables.records import (TASK_TITLES, as_records, backend_order, backend_title,
                                failure_reason, gap_notes, number, rounded, seeds, split_usable,
                                task_columns)
from lra.tables.table import GAP, Cell, Table

# (record metric, column title, decimals), in the order of the table
DIAGNOSTIC_COLUMNS = (
    ("row_entropy_normalized", "Row entropy / ln n", 3),
    ("max_column_mass", "Max column mass", 2),
    ("column_mass_gini", "Column-mass Gini", 3),
    ("starved_key_share", "Starved keys", 3),
    ("effective_rank", "Effective rank", 1),
    ("row_sum_deviation", "Row-sum dev.", 4),
    ("column_sum_deviation", "Column-sum dev.", 4),
)
DIAGNOSTICS_CSV_FIELDS = ("task", "backend", "label", "layer",
                          *(metric for metric, _, _ in DIAGNOSTIC_COLUMNS), "n", "seeds",
                          "examples", "tokens")
NOTE = ("Diagnostics of each run's best checkpoint on a fixed batch (the first validation "
        "examples), mean over heads, then over seeds. Row entropy / ln n: 1 = uniform rows. "
        "Column mass = how much attention a key receives, summed over the row-normalised "
        "queries (uniform: 1 per key); max column mass and the Gini coefficient of the column "
        "masses (0 = balanced) measure concentration on a few keys; starved keys = share of "
        "keys with less than a tenth of the uniform mass. Deviations: max |sum - 1| over rows "
        "/ columns of the raw map.")


def has_diagnostics(record: RunRecord) -> bool:
    layers = (record.diagnostics or {}).get("layers")
    return bool(layers) and all(isinstance(row, dict) for row in layers)


def _usable(record: RunRecord) -> str | None:
    return failure_reason(record, need_accuracy=False) or (
        None if has_diagnostics(record) else "no diagnostics")


def _layer_means(runs: list[RunRecord]) -> dict[int, dict[str, float | None]]:
    """layer -> metric -> mean over the runs that have it."""
    by_layer: dict[int, dict[str, list[float]]] = {}
    for run in runs:
        for row in run.diagnostics["layers"]:
            slot = by_layer.setdefault(int(row.get("layer", 0)), {})
            for metric, _, _ in DIAGNOSTIC_COLUMNS:
                values, value = slot.setdefault(metric, []), number(row.get(metric))
                if value is not None:
                    values.append(value)
    return {layer: {m: statistics.fmean(v) if v else None for m, v in metrics.items()}
            for layer, metrics in sorted(by_layer.items())}


def _rows(task: str, backend: str, runs: list[RunRecord]) -> tuple[list, list]:
    """Table rows and CSV rows of one (task, backend) cell, one per layer."""
    rows, csv_rows = [], []
    batch = runs[0].diagnostics
    for layer, means in _layer_means(runs).items():
        rows.append([Cell(TASK_TITLES.get(task, task)), Cell(backend_title(backend)),
                     Cell(str(layer))]
                    + [Cell(GAP if means.get(m) is None else f"{means[m]:.{d}f}")
                       for m, _, d in DIAGNOSTIC_COLUMNS] + [Cell(str(len(runs)))])
        csv_rows.append({"task": task, "backend": backend, "label": backend_title(backend),
                         "layer": layer, **{m: rounded(means.get(m), 6)
                                            for m, _, _ in DIAGNOSTIC_COLUMNS},
                         "n": len(runs), "seeds": seeds(runs),
                         "examples": len(batch.get("indices") or []),
                         "tokens": batch.get("tokens")})
    return rows, csv_rows


def diagnostics_table(records: Iterable[RunRecord | dict]) -> Table:
    """Rows per task, backend (LOT, softmax, then by title) and layer; records without
    diagnostics are named in a note."""
    records = as_records(records)
    without = sorted(r.label for r in records
                     if failure_reason(r, need_accuracy=False) is None and not has_diagnostics(r))
    cells, failed, duplicates = split_usable(records, _usable)
    failed = [(r, why) for r, why in failed if why != "no diagnostics"]
    columns = ["Task", "Backend", "Layer", *(title for _, title, _ in DIAGNOSTIC_COLUMNS), "n"]
    rows, csv_rows = [], []
    for task in task_columns(records):
        for backend in backend_order(r.attention for r in records):
            if (task, backend) in cells:
                table_rows, table_csv = _rows(task, backend, cells[(task, backend)])
                rows += table_rows
                csv_rows += table_csv
    notes = [NOTE] + gap_notes([], failed, duplicates)
    if without:
        notes.append("Without diagnostics (trained without callbacks/diagnostics=on): "
                     + ", ".join(without) + ".")
    return Table(title="Attention diagnostics per layer", columns=columns, rows=rows,
                 notes=notes, csv_rows=csv_rows)
