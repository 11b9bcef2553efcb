"""A whole reproduction: run the plan, then write the tables, the report, the learning curves
and a copy of every run's record (small files, to commit) under the output folder."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

from lra.curves import plot_curve_set, read_curve
from lra.record import RunRecord
from lra.reproduce.launch import run_all
from lra.reproduce.plan import Plan
from lra.reproduce.render import RunContext, render_report, render_report_csv
from lra.reproduce.report import cell_reports
from lra.results import RECORD_NAME, now_iso
from lra.tables.records import TASK_TITLES, device_label
from lra.tables.write import build_tables, write_tables

PREFIX = "reproduction"  # <out>/reproduction.{md,csv}, reproduction_curves.png, tables, runs/
METRICS = Path("csv") / "metrics.csv"  # the CSV logger's file in a run dir (configs/logger/csv.yaml)


def reproduce(plan: Plan, *, out: Path, runs_dir: Path, command: str,
              report: Callable[[str], None] = print) -> list[Path]:
    """Run every run of the plan, then write the outputs; the paths written."""
    started, clock = now_iso(), time.perf_counter()
    report(f"{len(plan.runs)} runs ({len(plan.cells)} cells x {len(plan.seeds)} seeds), "
           f"{plan.jobs} at a time, in {runs_dir}")
    records = run_all(plan.runs, runs_dir, plan.jobs, report)
    return write_outputs(plan, records, out=out, command=command, started=started,
                         wall_time_s=time.perf_counter() - clock)


def plot_runs(records: list[RunRecord], out: Path, title: str) -> Path | None:
    """Validation accuracy by step of every run with a CSV log: a panel per task, a line per
    cell and seed, the task's majority class dashed."""
    curves: dict[str, dict] = {}
    majority: dict[str, list[float]] = {}
    for record in sorted(records, key=lambda r: (r.task, r.attention, str(r.seed))):
        points = read_curve(Path(record.run_dir) / METRICS) if record.run_dir else None
        group = TASK_TITLES.get(record.task, record.task)
        if points is not None:
            curves.setdefault(group, {})[f"{record.attention} seed {record.seed}"] = points
        if record.metrics and record.metrics.majority_test_acc is not None:
            majority.setdefault(group, []).append(record.metrics.majority_test_acc)
    return plot_curve_set(curves, out, title, {g: statistics.fmean(v) for g, v in majority.items()})


def copy_runs(records: list[RunRecord], dest: Path) -> None:
    """Each run's results.json and metrics.csv into dest/<run dir name>/ (replacing dest)."""
    shutil.rmtree(dest, ignore_errors=True)
    for record in records:
        source = Path(record.run_dir) if record.run_dir else Path(record.path or ".").parent
        target = dest / source.name
        target.mkdir(parents=True, exist_ok=True)
        for name in (RECORD_NAME, METRICS):
            if (source / name).is_file():
                (target / Path(name).name).write_bytes((source / name).read_bytes())


def write_outputs(plan: Plan, records: list[RunRecord], *, out: Path, command: str,
                  started: str, wall_time_s: float) -> list[Path]:
    """The tables, report (Markdown, CSV), curves and record copies under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tables = write_tables(build_tables(records), out, PREFIX)
    curves = plot_runs(records, out / f"{PREFIX}_curves.png",
                       f"LRA reproduction, set {plan.set_name}: validation accuracy by step")
    copy_runs(records, out / PREFIX / "runs")
    cells = cell_reports(records, [(c.task, c.backend) for c in plan.cells], plan.tolerance)
    commits = [r.git.get("commit") for r in records if r.git and r.git.get("commit")]
    ctx = RunContext(
        set_name=plan.set_name, description=plan.description, command=command,
        tolerance=plan.tolerance, jobs=plan.jobs, wall_time_s=wall_time_s, started=started,
        devices=sorted({device_label(r) for r in records if r.device}),
        commit=commits[0] if commits else None, data_notes=plan.data_notes,
        overrides=plan.extra_overrides, task_overrides=plan.task_overrides, given_tasks=plan.given_tasks,
        curves=curves.name if curves else None,
        tables=[p.name for p in tables if p.suffix == ".md"])
    report_md, report_csv = out / f"{PREFIX}.md", out / f"{PREFIX}.csv"
    report_md.write_text(render_report(cells, ctx), encoding="utf-8")
    report_csv.write_text(render_report_csv(cells, plan.tolerance), encoding="utf-8")
    return [report_md, report_csv, *([curves] if curves else []), *tables, out / PREFIX / "runs"]
