"""Make the paper's tables from results records.

    python scripts/make_tables.py outputs --out results/

Reads only the `results.json` records under the given run directories (see lra/record.py)
and writes, as Markdown, LaTeX and CSV:
  <out>/<prefix>_accuracy.{md,tex,csv}    LRA test accuracy, mean ± std over seeds
  <out>/<prefix>_efficiency.{md,tex,csv}  training samples/s and peak memory vs softmax
  <out>/<prefix>_diagnostics.{md,tex,csv} attention diagnostics per task, backend and layer
                                          (only when a record has them: callbacks/diagnostics=on)
Missing cells and failed runs become gaps with a note; unreadable records are reported and
skipped. The aggregation lives in the lra/tables/ package.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table as RichTable

from lra.tables import TEXT_COLUMNS, Table, filter_by_tag, load_records
from lra.tables.write import build_tables, write_tables


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run or sweep directories (searched recursively for results.json)")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.add_argument("--prefix", default="lra",
                        help="output file stem: <prefix>_accuracy.* and <prefix>_efficiency.*")
    parser.add_argument("--no-published", action="store_true",
                        help="leave out the published reference rows")
    parser.add_argument("--tag", default=None,
                        help="use only records whose tag matches this glob, e.g. 'lra/*'")
    parser.add_argument("--digits", type=int, default=1, help="decimals of accuracy cells")
    return parser.parse_args(argv)


def show(console: Console, table: Table) -> None:
    """Print a table with rich: bold best cells, the published block as a second section."""
    rich = RichTable(title=table.title, title_justify="left")
    for column in table.columns:
        rich.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")

    def add(row):
        rich.add_row(*[(f"[bold]{c.text}[/bold]" if c.best else c.text) + c.mark for c in row])

    for row in table.rows:
        add(row)
    if table.extra_rows:
        rich.add_section()
        rich.add_row(f"[italic]{table.extra_title}[/italic]")
        for row in table.extra_rows:
            add(row)
    console.print(rich)
    for note in table.notes:
        console.print(f"  - {note}", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)  # no wrapping into logs
    loaded = load_records(args.run_dirs)
    for problem in loaded.skipped:
        console.print(f"[yellow]skipped[/yellow] {problem}", soft_wrap=True, highlight=False)
    records, dropped = filter_by_tag(loaded.records, args.tag)
    if dropped:
        console.print(f"left out {dropped} record(s) whose tag does not match {args.tag!r}")
    if not records:
        console.print(f"[red]no usable results records under {', '.join(args.run_dirs)}[/red]; "
                      "run train.py first (see EXPERIMENTS.md)")
        return 1

    skipped_note = ([f"Skipped inputs (unreadable or malformed): {'; '.join(loaded.skipped)}."]
                    if loaded.skipped else [])
    tables = build_tables(records, published=not args.no_published, digits=args.digits,
                          notes=skipped_note)
    for table, _ in tables.values():
        show(console, table)
    written = [str(path) for path in write_tables(tables, args.out, args.prefix)]
    console.print(f"{len(records)} record(s) from {', '.join(args.run_dirs)}; wrote "
                  + ", ".join(written), soft_wrap=True, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
