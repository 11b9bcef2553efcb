"""The paper's tables, aggregated from results records (`lra.record.RunRecord`).

- `records`: reading records (`load_records`, the one function that touches the disk),
  `filter_by_tag`, and what the tables ask of a record; backend titles and row order come
  from the backend registry (LOT, softmax, then the rest by title).
- `published`: the published reference rows, read from `published.yaml` (with sources).
- `accuracy`: `accuracy_table`, test accuracy in % as mean ± std over seeds, best per column.
- `efficiency`: `efficiency_table`, training samples/s and peak memory vs softmax.
- `diagnostics`: `diagnostics_table`, attention diagnostics per task, backend and layer.
- `render`: Markdown, LaTeX and CSV of a `Table` (`table`).

Missing cells, failed runs and unreadable records become gaps (`—`) and notes, never
exceptions. `scripts/make_tables.py` is the command line.
"""

from lra.tables.accuracy import ACCURACY_CSV_FIELDS, accuracy_table, format_mean_std, mean_std
from lra.tables.diagnostics import (DIAGNOSTICS_CSV_FIELDS, diagnostics_table,
                                    has_diagnostics)
from lra.tables.efficiency import EFFICIENCY_CSV_FIELDS, efficiency_table, format_ratio
from lra.tables.published import PUBLISHED_ROWS, PUBLISHED_SOURCES, PublishedRow
from lra.tables.records import (STANDARD_TASKS, LoadedRecords, backend_order, backend_title,
                                filter_by_tag, load_records)
from lra.tables.render import latex_escape, render_csv, render_latex, render_markdown
from lra.tables.table import DAGGER, GAP, TEXT_COLUMNS, Cell, Table

__all__ = ["ACCURACY_CSV_FIELDS", "DAGGER", "DIAGNOSTICS_CSV_FIELDS", "EFFICIENCY_CSV_FIELDS",
           "GAP", "PUBLISHED_ROWS", "PUBLISHED_SOURCES", "STANDARD_TASKS", "TEXT_COLUMNS", "Cell",
           "LoadedRecords", "PublishedRow", "Table", "accuracy_table", "backend_order",
           "backend_title", "diagnostics_table", "efficiency_table", "filter_by_tag",
           "format_mean_std", "format_ratio", "has_diagnostics", "latex_escape", "load_records",
           "mean_std", "render_csv", "render_latex", "render_markdown"]
