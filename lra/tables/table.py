"""A renderer-neutral table: cells with a best mark and a suffix, a second block, notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GAP = "—"
DAGGER = "†"  # generated or sample data
DOUBLE_DAGGER = "‡"  # a shortened schedule (fewer steps than the paper)
TEXT_COLUMNS = ("Backend", "Task", "Device")  # left-aligned; every other column is numeric


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, whether it is the best of its column, and a marker suffix."""

    text: str
    best: bool = False
    mark: str = ""  # DAGGER (non-official data) and/or DOUBLE_DAGGER (shortened schedule)

    @property
    def plain(self) -> str:
        return self.text + (f" {self.mark}" if self.mark else "")


@dataclass
class Table:
    """Measured rows, an optional second block (published rows), notes and CSV rows."""

    title: str
    columns: list[str]
    rows: list[list[Cell]]
    extra_title: str | None = None  # caption of the second block
    extra_rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    csv_rows: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, row_label: str, column: str) -> Cell:
        """The cell of the measured row whose first cell reads `row_label` (for tests/scripts)."""
        j = self.columns.index(column)
        for row in self.rows:
            if row[0].text == row_label:
                return row[j]
        raise KeyError(f"no row {row_label!r}; rows: {[r[0].text for r in self.rows]}")
