#!/usr/bin/env python
"""Whole-training-step benchmark: steps/s, tokens/s and peak memory of the full LRA model for
every task x backend (the suite's counterpart of LRA Table 2 / Skyformer Table 2).

Each cell builds the model as `train.py task=<task> attn=<backend>` does (model, task and
task_attn configs, the LightningModule, the optimizer of configs/optim), runs `--warmup` then
`--steps` training steps (forward, backward, clipping, optimizer step) on synthetic batches of
the task's paper batch size and length, in a fresh process with a per-cell `--timeout`; slow
cells stop early with what they measured, cells over the limit or out of memory are rows with
that status. Each task's training DataLoader is timed too (batches/s per loader setting).
Outputs in --out (default results/): step_<tag>.csv, step_<tag>_loader.csv, step_<tag>.png.
`--summary CSV` prints the Markdown tables; `--readme README.md` also writes them into the
README's whole-step section. How cells are measured: lra/bench/step.py, lra/bench/loader.py.

Examples:
    python scripts/bench_step.py --device cpu                       # every task x backend
    python scripts/bench_step.py --tasks listops,text --backends lot,softmax,linear
    python scripts/bench_step.py --tasks listops --backends lot --compile off,inductor
    python scripts/bench_step.py --summary results/step_cpu-xeon.csv --readme README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from lra.bench.presets import BenchError  # noqa: E402
from lra.bench.step_report import write_summary  # noqa: E402
from lra.bench.step_run import StepRequest, run_step_benchmark  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", help="comma-separated tasks (default: every task in configs/task)")
    p.add_argument("--backends", help="comma-separated backends (default: every registered one)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per cell (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--timeout", type=float, default=40.0, help="seconds per cell after set-up, "
                   "warm-up included (with compile: after the warm-up); timing stops once the "
                   "timed steps took a quarter of it; 0 = none (default 40)")
    p.add_argument("--compile", default="off", help="comma-separated modes, each a row per cell: "
                   "off, inductor (trainer.compile=true) or another torch.compile backend")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override for every cell, as in train.py (repeatable), e.g. "
                   "task.max_len=256")
    p.add_argument("--threads", type=int, help="torch threads (default: all usable cores; on a "
                   "busy machine use 1)")
    p.add_argument("--max-memory-gb", default="auto",
                   help="per-cell allocation cap beyond set-up: a number, auto or none")
    p.add_argument("--loader-workers", default="0,2",
                   help="loader worker counts to time per task (empty: no loader timing)")
    p.add_argument("--loader-batches", type=int, default=50, help="batches timed per loader")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results")
    p.add_argument("--tag", help="device tag in the file names (default: from the device name)")
    p.add_argument("--summary", type=Path, metavar="CSV",
                   help="print the Markdown tables of a step_<tag>.csv (and its _loader.csv)")
    p.add_argument("--readme", type=Path, help="with --summary: also write them into this "
                   "README between its whole-step markers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.summary:
            print(write_summary(args.summary, args.readme))
            return 0
        return run_step_benchmark(StepRequest(
            tasks=args.tasks, backends=args.backends, compile=args.compile,
            overrides=args.override, steps=args.steps, warmup=args.warmup, timeout=args.timeout,
            threads=args.threads, device=args.device, max_memory_gb=args.max_memory_gb,
            loader_workers=args.loader_workers, loader_batches=args.loader_batches,
            out=args.out, tag=args.tag))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
