"""Look at the attention maps of trained (or untrained) models and measure them.

    python scripts/inspect_attention.py outputs/diag/lot outputs/diag/softmax --examples 4 --out results/diagnostics
    python scripts/inspect_attention.py --init --task listops --attn lot --attn softmax -o experiment=quick

Each argument is a run directory (its config and best checkpoint) or a checkpoint file. The
first K test examples go through every model; the output folder gets diagnostics.csv (per run,
layer and head, mean over the K examples), diagnostics.json (also per-layer means), summary.png
(per-layer row entropy and column-mass concentration) and example<i>.png for the first
--figures examples (layer x head maps, models side by side). The work is done by
lra/diagnostics/inspect.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lotformer.attention.base import DENSE_MAP_MAX_LEN
from lra.diagnostics.inspect import InspectError, init_subject, inspect_to, load_subject
from lra.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="RUN_DIR_or_CKPT",
                        help="run directories or checkpoint files (models side by side)")
    parser.add_argument("--examples", type=int, default=4, help="test examples (default 4)")
    parser.add_argument("--figures", type=int, default=4,
                        help="example PNGs to draw, of the first examples (default 4)")
    parser.add_argument("--out", default="outputs/inspect", help="output folder")
    parser.add_argument("--max-len", type=int, default=None,
                        help=f"keep the first N tokens of each example (N <= {DENSE_MAP_MAX_LEN})")
    parser.add_argument("--task", default=None,
                        help="the task (required with --init; checked against runs)")
    parser.add_argument("--init", action="store_true", help="also inspect untrained models")
    parser.add_argument("--attn", action="append", default=[],
                        help="backend of an untrained model (--init; repeat for several)")
    parser.add_argument("--seed", type=int, default=0, help="seed of untrained models")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="train-config override for --init, e.g. experiment=quick")
    parser.add_argument("--data-dir", default=None, help="read the data from here instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.init and (not args.task or not args.attn):
            raise InspectError("--init needs --task T and at least one --attn A, e.g. "
                               "--init --task listops --attn lot --attn softmax.")
        subjects = [load_subject(path, args.task) for path in args.paths]
        if args.init:
            subjects += [init_subject(args.task, attn, args.override, args.seed)
                         for attn in args.attn]
        written = inspect_to(Path(args.out), subjects, args.examples,
                             args.max_len, args.data_dir, args.figures)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
