"""Reproducing LRA cells: `make reproduce` / `scripts/reproduce.py`.

- `plan`: named sets of cells (sets.yaml), the runs (cell x seed) and their Hydra overrides,
  a shortened schedule when asked, and every check that can fail before anything starts.
- `launch`: one train.py process per run, `jobs` at a time; failed runs leave failed records.
- `report`: per cell mean ± std over seeds, published numbers, difference, verdict.
- `render`: the report as Markdown and CSV.
- `pipeline`: run, then tables, report, learning curves and record copies under --out.
"""

from lra.reproduce.plan import Cell, Plan, ReproduceError, RunSpec, make_plan
from lra.reproduce.pipeline import reproduce, write_outputs

__all__ = ["Cell", "Plan", "ReproduceError", "RunSpec", "make_plan", "reproduce", "write_outputs"]
