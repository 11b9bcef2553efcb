#!/usr/bin/env python
"""Reproduce LRA cells: train a named set of cells over seeds in parallel, then write the
tables, the reproduction report and the learning curves.

  python scripts/reproduce.py                                    # the default set, paper schedule
  python scripts/reproduce.py --set default --seeds 0 --max-steps 600 --jobs 2   # shortened
  python scripts/reproduce.py --set default-small --max-steps listops=2500,pathfinder=100 --budget-minutes 45
  python scripts/reproduce.py --cells listops/lot,listops/softmax --tolerance 1.5
  python scripts/reproduce.py --cells listops/lot task.max_len=512   # extra Hydra overrides
  python scripts/reproduce.py --max-steps 300 'pathfinder:task.data.generate={n: 4000, seed: 0}'  # one task's

Writes <out>/reproduction.md and .csv (per cell: mean ± std over seeds, published numbers,
difference, verdict), reproduction_curves.png, reproduction_{accuracy,efficiency}.{md,tex,csv}
and reproduction/runs/<run>/ (each run's results.json and metrics.csv). A shortened schedule
(--max-steps, --budget-minutes) is marked in the records, tables and report, and its verdict
is "shortened: not comparable". Bad input stops with one message and exit code 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from lra.reproduce import ReproduceError, make_plan, reproduce
from lra.reproduce.plan import read_sets

EXIT_USER_ERROR = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    sets = ", ".join(read_sets()[0])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for every run, e.g. trainer.num_workers=2; TASK:key=value for that "
                             "task's runs only (it replaces the set's overrides of that task), e.g. "
                             "'pathfinder:task.data.generate={n: 4000, seed: 0}'")
    parser.add_argument("--set", default="default", dest="set_name", help=f"named set of cells: {sets}")
    parser.add_argument("--cells", help="TASK/BACKEND,... instead of a set, e.g. listops/lot,pathfinder/softmax")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the set's, or 0 with --cells)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    parser.add_argument("--max-steps", help="shortened schedule: train N steps, or TASK=N,... per task "
                                            "(e.g. listops=2500,pathfinder=100)")
    parser.add_argument("--budget-minutes", type=float,
                        help="stop each run's training at its share of this many minutes (shortened)")
    parser.add_argument("--tolerance", type=float, default=2.0,
                        help="accuracy points a mean may differ from the published number (default 2)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="report folder (default results)")
    parser.add_argument("--runs-dir", type=Path,
                        help="run directories (default outputs/reproduce/<date>_<time>)")
    parser.add_argument("--dry-run", action="store_true", help="check and list the runs, train nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = make_plan(set_name=args.set_name, cells=args.cells, seeds=args.seeds,
                         tolerance=args.tolerance, jobs=args.jobs, max_steps=args.max_steps,
                         budget_minutes=args.budget_minutes, overrides=args.overrides)
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    for note in plan.data_notes:
        print(f"data: {note}")
    if args.dry_run:
        for run in plan.runs:
            print(f"{run.name}: python train.py {shlex.join(run.overrides)}")
        return 0
    runs_dir = args.runs_dir or Path("outputs/reproduce") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    command = shlex.join(["python", "scripts/reproduce.py", *(argv if argv is not None else sys.argv[1:])])
    written = reproduce(plan, out=args.out, runs_dir=runs_dir, command=command)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
