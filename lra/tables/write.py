"""Writing the accuracy and efficiency tables of a set of records as Markdown, LaTeX and CSV."""

from __future__ import annotations

from pathlib import Path

from lra.record import RunRecord
from lra.tables.accuracy import ACCURACY_CSV_FIELDS, accuracy_table
from lra.tables.diagnostics import DIAGNOSTICS_CSV_FIELDS, diagnostics_table, has_diagnostics
from lra.tables.efficiency import EFFICIENCY_CSV_FIELDS, efficiency_table
from lra.tables.render import render_csv, render_latex, render_markdown
from lra.tables.table import Table


def build_tables(records: list[RunRecord], *, published: bool = True, digits: int = 1,
                 notes: list[str] = ()) -> dict[str, tuple[Table, tuple[str, ...]]]:
    """name -> (table, its CSV fields) for `accuracy`, `efficiency` and, when a record has
    attention diagnostics, `diagnostics`; `notes` added to each."""
    tables = {"accuracy": (accuracy_table(records, published=published, digits=digits),
                           ACCURACY_CSV_FIELDS),
              "efficiency": (efficiency_table(records), EFFICIENCY_CSV_FIELDS)}
    if any(has_diagnostics(r) for r in records):
        tables["diagnostics"] = (diagnostics_table(records), DIAGNOSTICS_CSV_FIELDS)
    for table, _ in tables.values():
        table.notes += list(notes)
    return tables


def write_tables(tables: dict[str, tuple[Table, tuple[str, ...]]], out: str | Path,
                 prefix: str) -> list[Path]:
    """<out>/<prefix>_<name>.{md,tex,csv} for each table; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (table, fields) in tables.items():
        stem = out / f"{prefix}_{name}"
        for suffix, text in ((".md", render_markdown(table)), (".tex", render_latex(table)),
                             (".csv", render_csv(table.csv_rows, fields))):
            path = stem.with_suffix(suffix)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
