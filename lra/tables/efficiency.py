"""The efficiency table: training samples/s and peak memory per task and backend, both
relative to softmax on the same task and device; means over seeds, failed runs are gaps."""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from lra.record import RunRecord
from lra.tables.records import (BASELINE, TASK_TITLES, as_records, backend_order, backend_title,
                                device_label, failure_reason, gap_notes, number, rounded, seeds,
                                split_usable, task_columns)
from lra.tables.table import GAP, Cell, Table

EFFICIENCY_CSV_FIELDS = ("task", "backend", "label", "samples_per_s", "speed_vs_softmax",
                         "peak_mib", "memory_vs_softmax", "memory_kind", "n", "seeds", "device",
                         "status")
MEMORY_KINDS = {"cuda_max_allocated": "cuda_max_allocated = peak memory held by tensors "
                                      "(torch.cuda.max_memory_allocated)",
                "cpu_peak_rss": "cpu_peak_rss = peak resident memory of the run's process "
                                "since the run started (includes data and framework)",
                "cpu_max_rss": "cpu_max_rss = peak resident memory of the whole process "
                               "(includes data and framework; a lifetime peak, so in a local "
                               "-m sweep the largest of the jobs so far)"}


def format_ratio(ratio: float | None) -> str:
    """'2.30x' (two decimals below 10, one above)."""
    if ratio is None:
        return GAP
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def _usable(record: RunRecord) -> str | None:
    why = failure_reason(record, need_accuracy=False)
    speed = record.throughput.train_samples_per_s if record.throughput else None
    if why is None and number(speed) is None:
        why = "no throughput measured"
    return why


def _summary(runs: list[RunRecord]) -> dict[str, Any]:
    memory = [number(r.memory.peak_bytes) for r in runs if r.memory]
    memory = [m for m in memory if m is not None]
    return {
        "speed": statistics.fmean(number(r.throughput.train_samples_per_s) for r in runs),
        "memory": statistics.fmean(memory) if memory else None,
        "devices": sorted({device_label(r) for r in runs}),
        "kinds": sorted({str(r.memory.kind) for r in runs if memory and r.memory}),
        "n": len(runs), "seeds": seeds(runs),
    }


def _row(task: str, backend: str, s: dict, base: dict | None) -> tuple[list[Cell], dict, bool]:
    """The table row and CSV row of one measured cell, and whether it is comparable to base."""
    comparable = (base is not None and len(s["devices"]) == 1
                  and s["devices"] == base["devices"] and s["kinds"] == base["kinds"])
    speed_ratio = s["speed"] / base["speed"] if comparable else None
    memory_ratio = (s["memory"] / base["memory"] if comparable and s["memory"]
                    and base["memory"] else None)
    mib = None if s["memory"] is None else s["memory"] / 2**20
    row = [Cell(TASK_TITLES.get(task, task)), Cell(backend_title(backend)),
           Cell(f"{s['speed']:,.1f}"), Cell(format_ratio(speed_ratio)),
           Cell(GAP if mib is None else f"{mib:,.0f}"), Cell(format_ratio(memory_ratio)),
           Cell(str(s["n"])), Cell(", ".join(s["devices"]))]
    csv_row = {"task": task, "backend": backend, "label": backend_title(backend),
               "samples_per_s": rounded(s["speed"], 3), "speed_vs_softmax": rounded(speed_ratio),
               "peak_mib": rounded(mib, 1), "memory_vs_softmax": rounded(memory_ratio),
               "memory_kind": ";".join(s["kinds"]), "n": s["n"], "seeds": s["seeds"],
               "device": "; ".join(s["devices"]), "status": "ok"}
    return row, csv_row, comparable or base is None


def _notes(summaries: dict, missing, failed, duplicates, no_baseline, not_comparable) -> list[str]:
    devices = sorted({d for s in summaries.values() for d in s["devices"]})
    kinds = sorted({k for s in summaries.values() for k in s["kinds"]})
    notes = [f"Training throughput (samples/s, mean over seeds; summed over DDP processes) and "
             f"peak memory; 'vs {BASELINE}' = backend / {BASELINE} on the same task and device "
             "(above 1x: faster, or more memory).",
             "Devices: " + (", ".join(devices) if devices else GAP) + "."]
    if kinds:
        notes.append("Memory: " + "; ".join(MEMORY_KINDS.get(k, k) for k in kinds) + ".")
    notes += gap_notes(missing, failed, duplicates)
    if no_baseline:
        notes.append(f"No ratios for {', '.join(no_baseline)}: no finished {BASELINE} run.")
    if not_comparable:
        notes.append(f"No ratio (different device or memory measure than {BASELINE}): "
                     + ", ".join(not_comparable) + ".")
    return notes


def efficiency_table(records: Iterable[RunRecord | dict]) -> Table:
    """Training samples/s and peak memory vs softmax, per task (rows) and backend."""
    records = as_records(records)
    tasks, backends = task_columns(records), backend_order(r.attention for r in records)
    columns = ["Task", "Backend", "Train samples/s", f"vs {backend_title(BASELINE).lower()}",
               "Peak memory (MiB)", f"vs {backend_title(BASELINE).lower()}", "n", "Device"]
    cells, failed, duplicates = split_usable(records, _usable)
    summaries = {key: _summary(runs) for key, runs in cells.items()}
    rows, csv_rows, missing, not_comparable, no_baseline = [], [], [], [], []
    for task in tasks:
        if not any((task, b) in summaries for b in backends):
            missing += [f"{task}/{b}" for b in backends]
            continue
        base = summaries.get((task, BASELINE))
        no_baseline += [task] if base is None else []
        for backend in backends:
            if (task, backend) not in summaries:
                missing.append(f"{task}/{backend}")
                rows.append([Cell(TASK_TITLES.get(task, task)), Cell(backend_title(backend))]
                            + [Cell(GAP)] * (len(columns) - 2))
                csv_rows.append({"task": task, "backend": backend,
                                 "label": backend_title(backend), "status": "missing"})
                continue
            row, csv_row, comparable = _row(task, backend, summaries[(task, backend)], base)
            rows.append(row)
            csv_rows.append(csv_row)
            not_comparable += [] if comparable else [f"{task}/{backend}"]
    devices = sorted({d for s in summaries.values() for d in s["devices"]})
    title = "Training throughput and peak memory" + (f" ({devices[0]})" if len(devices) == 1 else "")
    return Table(title=title, columns=columns, rows=rows, csv_rows=csv_rows,
                 notes=_notes(summaries, missing, failed, duplicates, no_baseline, not_comparable))
