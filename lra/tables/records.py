"""Reading results records for the tables, and what the tables ask of them.

Records are `lra.record.RunRecord`s; `load_records` is the one function that touches the disk,
and every table builder also takes record dicts as written (converted with `as_records`).
Backends' titles and their row order come from the backend registry (`backend_order`).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lotformer.attention import UnknownAttentionError, attention_class
from lra.data import TASKS, has_official_sizes
from lra.record import RecordError, RunRecord
from lra.results import find_records, read_record
from lra.tables.table import DAGGER, DOUBLE_DAGGER

# The five tasks of the LRA average, then Path-X (shown only when a record has it).
STANDARD_TASKS = ("listops", "text", "retrieval", "image", "pathfinder")
EXTRA_TASKS = ("pathx",)
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
               "pathfinder": "Pathfinder", "pathx": "Path-X"}
# Row order: the paper's method, then its baseline, then every other backend by its title.
LEADING_BACKENDS = ("lot", "softmax")
BASELINE = "softmax"  # efficiency ratios are relative to this backend on the same task
# Data sources that are not the official LRA release (see lra.data.base.SOURCES).
NON_OFFICIAL_SOURCES = ("generated", "sample")


@dataclass
class LoadedRecords:
    records: list[RunRecord]
    skipped: list[str]  # "path: reason" for unreadable or malformed records


def load_records(roots: Iterable[str | Path]) -> LoadedRecords:
    """All readable records under the run directories; unreadable ones are listed, not raised.

    Each record's `path` is its results.json, for the notes.
    """
    records, skipped = [], []
    roots = list(roots)
    for root in roots:
        if not Path(root).exists():
            skipped.append(f"{root}: no such file or directory")
    for path in find_records(*roots):
        try:
            records.append(RunRecord.from_dict(read_record(path), path=str(path)))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            skipped.append(f"{path}: unreadable ({type(err).__name__}: {err})")
        except RecordError as err:
            skipped.append(f"{path}: malformed record ({err})")
    return LoadedRecords(records, skipped)


def as_records(records: Iterable[RunRecord | dict[str, Any]]) -> list[RunRecord]:
    """RunRecords, converting record dicts as written (a dict's `_path` becomes `path`)."""
    return [r if isinstance(r, RunRecord) else RunRecord.from_dict(r, path=r.get("_path"))
            for r in records]


def filter_by_tag(records: list[RunRecord], pattern: str | None) -> tuple[list[RunRecord], int]:
    """Records whose tag matches the glob `pattern` (None: all), and how many were dropped."""
    if pattern is None:
        return records, 0
    kept = [r for r in records if fnmatch.fnmatchcase(str(r.tag), pattern)]
    return kept, len(records) - len(kept)


def number(value: Any) -> float | None:
    """A finite float, or None (missing, non-numeric, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def accuracy_of(record: RunRecord) -> float | None:
    """The record's test accuracy as a fraction in [0, 1], or None."""
    value = number(record.metrics.test_acc) if record.metrics else None
    return value if value is not None and 0.0 <= value <= 1.0 else None


def failure_reason(record: RunRecord, need_accuracy: bool = True) -> str | None:
    """Why a record does not count as a finished run, or None when it does."""
    if record.status != "completed":
        error = record.error
        return f"status {record.status!r}" + (f": {_shorten(str(error))}" if error else "")
    if need_accuracy and accuracy_of(record) is None:
        raw = record.metrics.test_acc if record.metrics else None
        return "completed without a test accuracy" if raw is None else f"invalid test_acc {raw!r}"
    return None


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def is_nonofficial(record: RunRecord) -> bool:
    """Generated or sample data, or splits smaller than the official release's (e.g. 100 CIFAR
    images read from the raw files): not comparable with published numbers."""
    if not record.data:
        return False
    if record.data.source in NON_OFFICIAL_SOURCES:
        return True
    return record.task in TASKS and bool(record.data.sizes) and not has_official_sizes(record.task, record.data.sizes)


def is_shortened(record: RunRecord) -> bool:
    """Trained fewer steps than the paper's schedule (lra.record.Schedule)."""
    return bool(record.schedule and record.schedule.shortened)


def run_marks(runs: Iterable[RunRecord]) -> str:
    """The marks of a cell's runs: DAGGER for non-official data, DOUBLE_DAGGER for a shortened
    schedule (either for at least one run)."""
    runs = list(runs)
    return ((DAGGER if any(map(is_nonofficial, runs)) else "")
            + (DOUBLE_DAGGER if any(map(is_shortened, runs)) else ""))


def device_label(record: RunRecord) -> str:
    """What a run trained on, e.g. 'NVIDIA H100 80GB HBM3' or 'CPU x86_64 (2 threads)'."""
    device = record.device or {}
    kind, name = device.get("type"), device.get("name")
    if kind == "cuda":
        return str(name or "CUDA GPU")
    if kind == "cpu":
        threads = device.get("threads")
        return f"CPU {name or ''}".rstrip() + (f" ({threads} threads)" if threads else "")
    return str(name or kind or "unknown device")


def backend_title(backend: str) -> str:
    """The backend's display title from its class (`title`); its name if not registered."""
    try:
        return attention_class(backend).title or backend
    except UnknownAttentionError:
        return backend


def backend_order(backends: Iterable[str]) -> list[str]:
    """LOT, then softmax, then the other backends by title (case-insensitive), then name."""
    def key(name: str) -> tuple:
        lead = LEADING_BACKENDS.index(name) if name in LEADING_BACKENDS else len(LEADING_BACKENDS)
        return lead, backend_title(name).casefold(), name
    return sorted(set(backends), key=key)


def task_columns(records: list[RunRecord]) -> list[str]:
    """The five standard tasks, then Path-X and any other task that has a record."""
    present = {r.task for r in records}
    extra = [t for t in EXTRA_TASKS if t in present]
    return list(STANDARD_TASKS) + extra + sorted(present - set(STANDARD_TASKS) - set(EXTRA_TASKS))


def dedupe(records: list[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """One record per (task, backend, seed): the newest by `created`; notes name the rest."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[(record.task, record.attention, str(record.seed))].append(record)
    kept, notes = [], []
    for group in groups.values():
        group.sort(key=lambda r: (str(r.created or ""), r.path or ""))
        kept.append(group[-1])
        if len(group) > 1:
            notes.append(f"{group[-1].label}: {len(group)} records, used the newest "
                         f"({group[-1].path or '?'})")
    return kept, notes


def split_usable(records: list[RunRecord], why_not) -> tuple[dict, list, list[str]]:
    """(cells: (task, backend) -> newest record per seed, failed: [(record, reason)], notes on
    duplicates) for the records that `why_not(record)` does not reject."""
    checked = [(r, why_not(r)) for r in records]
    ok, notes = dedupe([r for r, why in checked if why is None])
    cells: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for record in ok:
        cells[(record.task, record.attention)].append(record)
    return cells, [(r, why) for r, why in checked if why is not None], notes


def settings_key(record: RunRecord) -> str:
    return json.dumps([record.attention_options, record.steps], sort_keys=True, default=str)


def seeds(runs: list[RunRecord]) -> str:
    return ";".join(str(s) for s in sorted((r.seed for r in runs), key=str))


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def gap_notes(missing: list[str], failed: list[tuple[RunRecord, str]],
              duplicates: list[str]) -> list[str]:
    notes = []
    if missing:
        notes.append("Missing (no finished run): " + ", ".join(missing) + ".")
    if failed:
        notes.append("Failed runs, not counted: "
                     + "; ".join(f"{r.label} ({why})" for r, why in
                                 sorted(failed, key=lambda item: item[0].label)) + ".")
    if duplicates:
        notes.append("Duplicate runs: " + "; ".join(duplicates) + ".")
    return notes
