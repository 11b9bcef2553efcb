#!/usr/bin/env python
"""Benchmark attention backends: wall time and peak memory versus sequence length n.

Every registered backend (or `--backends a,b,c`) is timed on random (B, H, n, D) inputs for
each n in `--lengths`, forward only (`fwd`, no_grad, eval mode) and forward + backward
(`fwd+bwd`), each point in a fresh process; out-of-memory, kills and timeouts become gap rows.
Outputs, in `--out` (default results/): `bench_<preset>_<device tag>.csv` and `..._time.png`,
`..._memory.png`. `--summary CSV` prints Markdown ratio and slope tables from such a CSV.
The LRA presets read their shapes and per-task backend options from configs/. How points are
measured: lra/bench/measure.py; the run, gaps and exit code: lra/bench/run.py.

Examples:
    python scripts/bench_attention.py --preset paper-latency
    python scripts/bench_attention.py --preset lra-text --backends lot,softmax,linear
    python scripts/bench_attention.py --preset scaling --option lot.n_iters=50
    python scripts/bench_attention.py --summary results/bench_paper-latency_cpu-xeon.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from lra.bench import BenchError, BenchRequest, presets, run_benchmark, summarize  # noqa: E402
from lra.bench.presets import parse_lengths  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="presets: " + "; ".join(
                                    f"{k}: B={v.batch} H={v.heads} D={v.head_dim} n={v.lengths} "
                                    f"{v.options or ''}" for k, v in presets().items()))
    p.add_argument("--preset", default="paper-latency", choices=sorted(presets()))
    p.add_argument("--backends", help="comma-separated names (default: every registered backend)")
    p.add_argument("--lengths", help="comma-separated n (default: the preset's)")
    p.add_argument("--modes", default="fwd,fwd+bwd", help="fwd, fwd+bwd or both (default)")
    p.add_argument("--batch", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--option", action="append", default=[], metavar="BACKEND.KEY=VALUE",
                   help="backend option override, repeatable, e.g. lot.n_iters=50")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per point (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2; with 0, "
                   "peak memory also counts one-off initialisation such as thread pools)")
    p.add_argument("--threads", type=int, help="torch threads (default: all usable cores)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per point after set-up; 0 = none (default 600)")
    p.add_argument("--max-memory-gb", default="auto",
                   help="per-point allocation cap beyond set-up: a number, auto or none")
    p.add_argument("--no-skip-after-gap", action="store_true",
                   help="still run larger n after an oom / timeout")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results")
    p.add_argument("--tag", help="device tag in the file names (default: from the device name)")
    p.add_argument("--summary", type=Path, metavar="CSV", help="print Markdown ratio/slope tables")
    p.add_argument("--reference", default="lot", help="--summary: backend in the numerator")
    p.add_argument("--compare", default="softmax,sinkhorn,linear", help="--summary: denominators")
    p.add_argument("--slope-lengths", help="--summary: n1,n2 for the slopes")
    return p


def _summary(args: argparse.Namespace) -> int:
    slope = None
    if args.slope_lengths:
        values = parse_lengths(args.slope_lengths)
        if len(values) != 2:
            raise BenchError("--slope-lengths: expected two lengths, e.g. 1024,8192")
        slope = (values[0], values[1])
    compare = [b.strip() for b in args.compare.split(",") if b.strip()]
    print(summarize(args.summary, args.reference, compare, slope))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.summary:
            return _summary(args)
        return run_benchmark(BenchRequest(
            preset=args.preset, backends=args.backends, lengths=args.lengths, modes=args.modes,
            batch=args.batch, heads=args.heads, head_dim=args.head_dim, options=args.option,
            repeats=args.repeats, warmup=args.warmup, threads=args.threads, device=args.device,
            dtype=args.dtype, timeout=args.timeout, max_memory_gb=args.max_memory_gb,
            skip_after_gap=not args.no_skip_after_gap, out=args.out, tag=args.tag))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
