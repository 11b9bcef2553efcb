"""The short summary printed at the end of a run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lra.record import RunRecord


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_summary(record: RunRecord, console: Console | None = None) -> None:
    """Print test accuracy, throughput, peak memory, wall time (segments), skipped batches,
    a status other than completed, and the record's path."""
    console = console or Console()
    m, t, mem = record.metrics, record.throughput, record.memory
    table = Table(title=f"{record.task} / {record.attention} / seed {record.seed} "
                        f"({record.data.source} data)", show_header=False)
    table.add_row("test accuracy", _fmt(m.test_acc, ".4f"))
    table.add_row("majority class (test)", _fmt(m.majority_test_acc, ".4f"))
    table.add_row("best val accuracy", _fmt(m.val_acc, ".4f"))
    table.add_row("train samples/s", _fmt(t.train_samples_per_s, ".1f"))
    table.add_row("train tokens/s", _fmt(t.train_tokens_per_s, ",.0f"))
    table.add_row(f"peak memory ({mem.kind})", f"{mem.peak_bytes / 2**20:,.0f} MiB")
    wall = f"{record.wall_time_s:.1f} s"
    table.add_row("wall time", wall + (f" ({record.resumes + 1} segments)" if record.resumes else ""))
    if record.skipped_nonfinite_batches:
        table.add_row("skipped batches (non-finite loss)",
                      f"{record.skipped_nonfinite_batches} of {record.steps}")
    if record.status != "completed":
        table.add_row("status", f"[bold red]{record.status}[/]: {record.error}")
    console.print(table)
    console.print(f"results record: {record.record_path or '(not written on this rank)'}",
                  soft_wrap=True)
    if record.learning_curve:
        console.print(f"learning curve: {record.learning_curve}", soft_wrap=True)
