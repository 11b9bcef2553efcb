"""The reproduction report as Markdown (`reproduction.md`) and CSV (`reproduction.csv`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lra.reproduce.report import (CSV_FIELDS, REFERENCE_SOURCES, SHORTENED, CellReport,
                                  accuracy_text, csv_row)
from lra.tables import DAGGER, GAP, PUBLISHED_SOURCES, render_csv
from lra.tables.table import DOUBLE_DAGGER


@dataclass
class RunContext:
    """What the report says about the whole reproduction."""

    set_name: str
    description: str
    command: str
    tolerance: float
    jobs: int
    wall_time_s: float
    started: str
    devices: list[str]
    commit: str | None = None
    data_notes: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    task_overrides: dict[str, list[str]] = field(default_factory=dict)
    given_tasks: list[str] = field(default_factory=list)  # task_overrides given as TASK:key=value
    curves: str | None = None  # the learning-curve PNG, relative to the report
    tables: list[str] = field(default_factory=list)  # the accuracy/efficiency tables written


def _published(cell: CellReport) -> str:
    return "; ".join(f"{value:g} [{source}]" for source, value in cell.published) or GAP


def _row(cell: CellReport) -> str:
    row = csv_row(cell, 0.0)
    diff = GAP if cell.difference is None else f"{cell.difference:+.2f}"
    failed = f" ({len(cell.failed)} failed)" if cell.failed else ""
    majority = GAP if row["majority"] is None else f"{row['majority']:.1f}"
    wall = GAP if row["wall_time_s"] is None else f"{row['wall_time_s'] / 60:.1f} min"
    steps = (f"{row['steps']} of {row['paper_steps']}" if row["steps"] else GAP)
    data = f"{row['data_source']} ({row['train_size']} train)" if row["data_source"] else GAP
    return (f"| {cell.name} | {accuracy_text(cell)}{failed} | {majority} | {_published(cell)} | "
            f"{diff} | {cell.verdict} | {steps} | {data} | {wall} |")


def _steps(cell: CellReport) -> str:
    """'1413;1422 of 2500 planned steps (time limit; paper 50000)' for a shortened cell."""
    row = csv_row(cell, 0.0)
    planned = sorted({r.schedule.max_steps for r in cell.runs if r.schedule and r.schedule.max_steps})
    stopped = any(r.steps is not None and r.steps < p for r in cell.runs for p in planned[:1])
    return (f"{cell.name} {row['steps']} of {';'.join(map(str, planned)) or '?'} planned steps"
            f" ({'stopped by the time limit; ' if stopped else ''}paper {row['paper_steps']})")


def _schedule_note(cells: list[CellReport]) -> list[str]:
    shortened = [c for c in cells if c.shortened]
    if not shortened:
        return []
    return [f"**Shortened schedule{DOUBLE_DAGGER}.** These runs trained fewer steps than the paper: "
            + "; ".join(map(_steps, shortened)) + ". Warmup and validation interval were scaled "
            "down with the planned steps; a run stopped by the time limit ended before its "
            "learning-rate schedule did. These accuracies show how far each model gets in that "
            f"many steps, not whether the published numbers reproduce: verdict \"{SHORTENED}\".", ""]


def _notes(cells: list[CellReport], ctx: RunContext) -> list[str]:
    notes = []
    if any(c.nonofficial for c in cells):
        notes.append(f"{DAGGER} At least one run of the cell used generated or sample data, not the "
                     "official LRA release (the LRA generators' algorithms, see Data below).")
    if any(c.shortened for c in cells):
        notes.append(f"{DOUBLE_DAGGER} Shortened schedule: fewer training steps than the paper.")
    for cell in cells:
        for record, why in cell.failed:
            notes.append(f"Failed: {record.label}: {why}" + (f" (log: {record.run_dir}/console.log)"
                                                             if record.run_dir else ""))
    notes += [f"Data: {note}." for note in ctx.data_notes]
    for task, values in ctx.task_overrides.items():
        if values:
            origin = f"given as {task}:key=value" if task in ctx.given_tasks else "the set's"
            notes.append(f"Overrides for every {task} run ({origin}): `{' '.join(values)}`.")
    if ctx.overrides:
        notes.append("Extra overrides for every run: `" + " ".join(ctx.overrides) + "`.")
    notes.append("Published numbers (REFERENCE §4, lra/tables/published.yaml): "
                 + "; ".join(f"[{k}] {v}" for k, v in PUBLISHED_SOURCES.items()) + ".")
    return [f"- {note}" for note in notes]


def render_report(cells: list[CellReport], ctx: RunContext) -> str:
    """The Markdown report."""
    lines = [f"# LRA reproduction: set `{ctx.set_name}`", ""]
    if ctx.description:
        lines += [ctx.description + ".", ""]
    lines += [f"Command: `{ctx.command}`", "",
              f"Started {ctx.started}; wall time {ctx.wall_time_s / 60:.1f} min for the whole set "
              f"({ctx.jobs} runs in parallel) on {', '.join(ctx.devices) or 'unknown device'}"
              + (f"; code at commit {ctx.commit[:12]}" if ctx.commit else "") + ".", ""]
    lines += _schedule_note(cells)
    lines += [f"Test accuracy (%) of the best-validation checkpoint, mean ± sample std over seeds "
              f"(n seeds). Verdict: |measured − published| ≤ {ctx.tolerance:g} accuracy points against the "
              f"first published number listed (sources in order {', '.join(REFERENCE_SOURCES)}).", "",
              "| Cell | Test accuracy (%) | Majority class (%) | Published (%) | Difference | Verdict "
              "| Steps | Data | Wall time / run |", "|---|---:|---:|---|---:|---|---:|---|---:|"]
    lines += [_row(cell) for cell in cells]
    lines += [""] + _notes(cells, ctx)
    if ctx.curves:
        lines += ["", "## Learning curves", "", f"![validation accuracy by step]({ctx.curves})"]
    if ctx.tables:
        lines += ["", "Tables from the same records: " + ", ".join(f"`{t}`" for t in ctx.tables) + "."]
    return "\n".join(lines) + "\n"


def render_report_csv(cells: list[CellReport], tolerance: float) -> str:
    return render_csv([csv_row(cell, tolerance) for cell in cells], CSV_FIELDS)

