#!/usr/bin/env python
"""Prepare Long Range Arena data: generate synthetic sets, report what is where, build caches.

  python scripts/prepare_data.py generate listops --out DIR --train 96000 --val 2000 --test 2000 --seed 0
  python scripts/prepare_data.py generate pathfinder --out DIR --n 200000 --resolution 32 \\
      --difficulty hard --seed 0 --workers 8
  python scripts/prepare_data.py status [--data-dir DIR]
  python scripts/prepare_data.py prepare TASK [--data-dir DIR] [--cache-dir DIR] [--max-len N] \\
      [--option KEY=VALUE ...]

The data dir defaults to $LRA_DATA_DIR, else ./data; the cache dir to <data dir>/.cache (the
same defaults as configs/paths). Missing or malformed data ends with a one-paragraph message
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from lra.data import TASKS
from lra.data.listops import OFFICIAL_SIZES
from lra.data.pathfinder_generator.settings import MARKER_INTENSITY
DEFAULT_MAX_LEN = {"listops": 2000, "text": 4000, "retrieval": 4000, "image": 1024,
                   "pathfinder": 1024, "pathx": 16384}
EXIT_USER_ERROR = 2


def default_data_dir() -> Path:
    return Path(os.environ.get("LRA_DATA_DIR", "data"))


# ----------------------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.what == "listops":
        from lra.data.listops import write_release

        sizes = {"train": args.train, "val": args.val, "test": args.test}
        folder = write_release(out, sizes, args.seed)
        print(f"wrote ListOps {sizes} (seed {args.seed}) to {folder}")
    else:
        from lra.data.pathfinder import generate_release

        folder = generate_release(out, args.n, resolution=args.resolution, difficulty=args.difficulty,
                                  seed=args.seed, workers=args.workers, progress=not args.quiet,
                                  markers=args.markers)
        print(f"wrote {args.n} Pathfinder-{args.resolution} images ({args.difficulty}, {args.markers} markers, "
              f"seed {args.seed}) "
              f"to {folder}")
    return 0


# ----------------------------------------------------------------------------- status
def task_status(task: str, data_dir: Path) -> dict:
    """{task, found, source, location, sizes, help} for one task: the task's data module says
    where its files are, how large its splits are and whether they are the official release."""
    from lra.data import task_module
    from lra.data.base import DataNotFoundError
    from lra.errors import UserError

    module = task_module(task)
    try:
        located = module.locate(data_dir)
        sizes = module.split_sizes(located)
    except DataNotFoundError as err:
        return {"task": task, "found": False, "help": str(err)}
    except (UserError, OSError, ValueError) as err:  # found, but a file is damaged or refused
        return {"task": task, "found": False, "broken": True, "help": str(err)}
    where = located.settings.get("folder") or located.settings.get("version_dir") or \
        str(Path(next(iter(located.files.values()))).parent)
    return {"task": task, "found": True, "source": module.source_of(located, sizes),
            "location": where, "sizes": sizes}


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    rows = [task_status(task, data_dir) for task in TASKS]
    console = Console(width=max(120, Console().width))
    table = Table(title=f"LRA data under {data_dir.resolve()}")
    for column in ("task", "status", "source", "train", "val", "test", "location"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row["found"]:
            sizes = row["sizes"]
            table.add_row(row["task"], "[green]found", row["source"], str(sizes["train"]), str(sizes["val"]),
                          str(sizes["test"]), row["location"])
        else:
            table.add_row(row["task"], "[red]broken" if row.get("broken") else "[red]missing",
                          "-", "-", "-", "-", "-")
    console.print(table)
    for row in rows:
        if not row["found"]:
            fix = " Replace the damaged file (download or generate it again)." if row.get("broken") else ""
            console.print(f"\n[bold]{row['task']}[/bold]: {row['help']}{fix}", highlight=False)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- prepare
def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, yaml.safe_load(value)  # YAML, so JSON too: {n: 1000, seed: 0} as in Hydra overrides
    except yaml.YAMLError:
        return key, value


def cmd_prepare(args: argparse.Namespace) -> int:
    from lra.data import load_task

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    cache_dir = Path(args.cache_dir) if args.cache_dir else data_dir / ".cache"
    max_len = args.max_len or DEFAULT_MAX_LEN[args.task]
    options = dict(args.option or [])
    data = load_task(args.task, data_dir=data_dir, cache_dir=cache_dir, max_len=max_len, **options)
    print(f"{args.task}: source {data.source}, sizes {data.sizes()}, from {data.location}; "
          f"cache in {cache_dir}")
    for note in data.notes:
        print(f"  note: {note}")
    return 0


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a synthetic data set in the official layout")
    kinds = generate.add_subparsers(dest="what", required=True)
    listops = kinds.add_parser("listops", help="ListOps with the LRA generator algorithm")
    listops.add_argument("--out", required=True, help="folder to write listops-1000/ into")
    for split, size in OFFICIAL_SIZES.items():
        listops.add_argument(f"--{split}", type=int, default=size, help=f"examples (default {size})")
    listops.add_argument("--seed", type=int, default=0)
    pathfinder = kinds.add_parser("pathfinder", help="Pathfinder / Path-X images (Linsley et al. 2018)")
    pathfinder.add_argument("--out", required=True, help="folder to write pathfinder{res}/ into")
    pathfinder.add_argument("--n", type=int, required=True, help="number of images")
    pathfinder.add_argument("--resolution", type=int, choices=(32, 128), default=32)
    pathfinder.add_argument("--difficulty", choices=("easy", "medium", "hard"), default="hard")
    pathfinder.add_argument("--seed", type=int, default=0)
    pathfinder.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    pathfinder.add_argument("--markers", choices=tuple(MARKER_INTENSITY), default="visible",
                            help="visible: snakes2.py's marker discs (default); faint: as in the real samples, "
                                 "markers below one gray level")
    pathfinder.add_argument("--quiet", action="store_true", help="no progress bar")

    status = commands.add_parser("status", help="where each task's data is, with split sizes")
    status.add_argument("--data-dir", help="default: $LRA_DATA_DIR or ./data")
    status.add_argument("--json", action="store_true", help="also print the rows as JSON")

    prepare = commands.add_parser("prepare", help="read a task and build its cache")
    prepare.add_argument("task", choices=TASKS)
    prepare.add_argument("--data-dir", help="default: $LRA_DATA_DIR or ./data")
    prepare.add_argument("--cache-dir", help="default: <data dir>/.cache")
    prepare.add_argument("--max-len", type=int, help="default: the task's LRA length")
    prepare.add_argument("--option", action="append", type=_parse_option, metavar="KEY=VALUE",
                         help="a locate() option of the task, e.g. difficulty=medium or "
                              "generate='{n: 1000, seed: 0}' (YAML values, as in Hydra overrides)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lra.errors import UserError

    try:
        return {"generate": cmd_generate, "status": cmd_status, "prepare": cmd_prepare}[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (TypeError, ValueError) as err:  # an unknown or invalid task option
        if isinstance(err, TypeError) and "keyword argument" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
