"""The reproduction report: per cell the measured test accuracy (mean ± std over seeds), the
published numbers with their sources, the difference and a verdict against a tolerance.

Verdicts never compare what is not comparable: a cell with a shortened schedule is
"shortened: not comparable", a cell without a finished run is "failed", one without a
published number says so; generated or sample data is named in the verdict.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from lra.record import RunRecord
from lra.tables import GAP, PUBLISHED_ROWS, format_mean_std, mean_std
from lra.tables.records import (accuracy_of, device_label, failure_reason, is_nonofficial,
                                is_shortened, run_marks, split_usable)

# The published number a verdict compares with: the first source that reports the cell. The
# LOTFormer paper and the Skyformer study use the small PyTorch setup this suite follows; the
# LRA paper's JAX setup differs (REFERENCE §2, §4).
REFERENCE_SOURCES = ("LOTFormer", "Skyformer", "LRA")
SHORTENED = "shortened: not comparable"
CSV_FIELDS = ("task", "backend", "status", "n", "seeds", "mean", "std", "majority",
              "reference_source", "reference", "difference", "tolerance", "verdict", "shortened",
              "steps", "paper_steps", "data_source", "train_size", "other_published",
              "wall_time_s", "device", "failed", "errors")


@dataclass
class CellReport:
    """One cell of the report (accuracies in %, the difference in accuracy points)."""

    task: str
    backend: str
    runs: list[RunRecord] = field(default_factory=list)  # completed
    failed: list[tuple[RunRecord, str]] = field(default_factory=list)
    published: list[tuple[str, float]] = field(default_factory=list)  # (source, value)
    mean: float | None = None
    std: float | None = None
    difference: float | None = None
    verdict: str = ""

    @property
    def name(self) -> str:
        return f"{self.task}/{self.backend}"

    @property
    def reference(self) -> tuple[str, float] | None:
        return self.published[0] if self.published else None

    @property
    def shortened(self) -> bool:
        return any(map(is_shortened, self.runs))

    @property
    def nonofficial(self) -> bool:
        return any(is_nonofficial(r) for r in self.runs)


def published_numbers(task: str, backend: str) -> list[tuple[str, float]]:
    """(source, accuracy %) of every published row for the cell, REFERENCE_SOURCES order first."""
    found = [(row.source, row.scores[task]) for row in PUBLISHED_ROWS
             if row.backend == backend and task in row.scores]
    order = {source: i for i, source in enumerate(REFERENCE_SOURCES)}
    return sorted(found, key=lambda item: order.get(item[0], len(order)))


def verdict(cell: CellReport, tolerance: float) -> str:
    """The cell's verdict (see the module docstring); sets cell.difference when comparable."""
    if not cell.runs:
        return "failed"
    if cell.shortened:
        return SHORTENED
    if cell.reference is None:
        return "no published number"
    cell.difference = cell.mean - cell.reference[1]
    word = "reproduces" if abs(cell.difference) <= tolerance else "does not reproduce"
    data = {r.data.source for r in cell.runs if is_nonofficial(r)}
    return word + (f" (on {'/'.join(sorted(data))} data)" if data else "")


def cell_reports(records: Iterable[RunRecord], cells: list[tuple[str, str]],
                 tolerance: float) -> list[CellReport]:
    """One report per cell, in the order given; records of other cells are ignored."""
    usable, failed, _ = split_usable(list(records), failure_reason)
    out = []
    for task, backend in cells:
        cell = CellReport(task, backend, runs=sorted(usable.get((task, backend), []), key=_seed),
                          failed=[(r, why) for r, why in failed if (r.task, r.attention) == (task, backend)],
                          published=published_numbers(task, backend))
        if cell.runs:
            cell.mean, cell.std = mean_std([100.0 * accuracy_of(r) for r in cell.runs])
        cell.verdict = verdict(cell, tolerance)
        out.append(cell)
    return out


def _seed(record: RunRecord) -> str:
    return str(record.seed)


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def csv_row(cell: CellReport, tolerance: float) -> dict[str, Any]:
    """The cell as one CSV row (accuracies in %)."""
    runs = cell.runs
    majority = _mean([100.0 * r.metrics.majority_test_acc for r in runs
                      if r.metrics.majority_test_acc is not None])
    ref = cell.reference
    return {
        "task": cell.task, "backend": cell.backend,
        "status": "ok" if runs and not cell.failed else ("partial" if runs else "failed"),
        "n": len(runs), "seeds": ";".join(_seed(r) for r in runs), "mean": _round(cell.mean),
        "std": _round(cell.std), "majority": _round(majority),
        "reference_source": ref[0] if ref else "", "reference": ref[1] if ref else None,
        "difference": _round(cell.difference), "tolerance": tolerance, "verdict": cell.verdict,
        "shortened": int(cell.shortened), "steps": ";".join(sorted({str(r.steps) for r in runs})),
        "paper_steps": ";".join(sorted({str(r.schedule.paper_max_steps) for r in runs if r.schedule})),
        "data_source": ";".join(sorted({str(r.data.source) for r in runs if r.data})),
        "train_size": ";".join(sorted({str(r.data.sizes.get("train")) for r in runs if r.data})),
        "other_published": "; ".join(f"{s} {v:g}" for s, v in cell.published[1:]),
        "wall_time_s": _round(_mean([r.wall_time_s for r in runs]), 1),
        "device": "; ".join(sorted({device_label(r) for r in runs})),
        "failed": ";".join(_seed(r) for r, _ in cell.failed),
        "errors": " | ".join(f"seed {r.seed}: {why}" for r, why in cell.failed),
    }


def accuracy_text(cell: CellReport) -> str:
    if cell.mean is None:
        return GAP
    return format_mean_std(cell.mean, cell.std, len(cell.runs), 2) + run_marks(cell.runs)
