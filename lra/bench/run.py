"""The benchmark run: every (backend, n, mode) point of a preset, gaps, the CSV and plots.

A point that runs out of memory (``torch.OutOfMemoryError``, ``MemoryError``, "can't allocate
memory"), is killed by a signal (SIGKILL: most likely the kernel OOM killer), passes the
per-point timeout or raises becomes a row with a status other than "ok"; the run goes on. After
an oom / timeout at some n, larger n of the same backend and mode (and fwd+bwd at the same n
after a fwd gap) are recorded as "skipped" unless ``skip_after_gap`` is off.
:func:`run_benchmark` returns 0 unless a point failed with "error" or "crashed" (a bug rather
than a resource limit); the CSV and plots are written in every case.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lra.bench.measure import measure_point, run_point
from lra.bench.presets import (BenchError, backend_names, parse_lengths, presets,
                               resolve_backends, resolve_options)
from lra.bench.probes import default_threads, device_tag, memory_cap, resolve_device
from lra.bench.results import MODES, field_columns, write_csv_atomic
from lra.bench.worker import start_server

GAP_STATUSES = ("oom", "oom-killed", "timeout")  # resource limits: larger n is skipped after one
BUG_STATUSES = ("error", "crashed")  # make the exit code 1


@dataclass
class BenchRequest:
    """What to run; None means the preset's value (or every backend, all usable cores)."""

    preset: str = "paper-latency"
    backends: str | None = None  # "a,b,c"
    lengths: str | None = None  # "512,1024"
    modes: str = "fwd,fwd+bwd"
    batch: int | None = None
    heads: int | None = None
    head_dim: int | None = None
    options: list[str] = field(default_factory=list)  # "BACKEND.KEY=VALUE"
    repeats: int = 5
    warmup: int = 2
    threads: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    timeout: float = 600.0  # seconds per point after set-up; 0 = none
    max_memory_gb: str = "auto"  # a number, auto (90% of MemAvailable on CPU) or none
    skip_after_gap: bool = True
    out: Path = Path("results")
    tag: str | None = None  # device tag in the file names
    in_process: bool = False  # measure in this process (tests; no isolation, no memory cap)


def plan(req: BenchRequest, torch) -> dict:
    """Resolve the request into the settings of every point (checked; BenchError otherwise)."""
    if req.preset not in presets():
        raise BenchError(f"unknown preset {req.preset!r}; valid: {', '.join(sorted(presets()))}")
    preset = presets()[req.preset]
    valid = backend_names()
    backends = resolve_backends(req.backends, valid)
    modes = [m.strip() for m in req.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise BenchError(f"--modes {req.modes!r}: choose from {', '.join(MODES)}")
    shape = {"batch": req.batch or preset.batch, "heads": req.heads or preset.heads,
             "head_dim": req.head_dim or preset.head_dim}
    if min(*shape.values(), req.repeats) < 1 or req.warmup < 0:
        raise BenchError("--batch, --heads, --head-dim and --repeats must be >= 1, --warmup >= 0")
    device, device_name, kind = resolve_device(req.device, torch)
    return {"backends": backends, "modes": modes, "shape": shape, "device": device,
            "device_name": device_name, "threads": default_threads(req.threads),
            "options": resolve_options(backends, preset, req.options, valid),
            "lengths": parse_lengths(req.lengths) if req.lengths else list(preset.lengths),
            "max_gb": memory_cap(req.max_memory_gb, kind),
            "tag": req.tag or device_tag(device_name, kind)}


def _point(req: BenchRequest, p: dict, backend: str, n: int, mode: str) -> dict:
    spec = {"backend": backend, "n": n, "mode": mode, **p["shape"], "dtype": req.dtype,
            "device": p["device"], "threads": p["threads"], "options": p["options"][backend],
            "warmup": req.warmup, "repeats": req.repeats,
            "max_memory_gb": None if req.in_process else p["max_gb"]}
    if req.in_process:
        return run_point(spec)
    return measure_point(spec, req.timeout or None)


def _backend_rows(req: BenchRequest, p: dict, backend: str, common: dict):
    """Yield the rows of one backend, skipping larger n after an oom / timeout."""
    gap_from: dict[str, int] = {}  # mode -> smallest n with an oom / timeout
    for n in p["lengths"]:
        for mode in p["modes"]:
            row = {**common, "backend": backend, "mode": mode, "n": n,
                   "options": json.dumps(p["options"][backend], sort_keys=True),
                   "timestamp": _dt.datetime.now().isoformat(timespec="seconds")}
            earlier = [m for m in (mode, "fwd") if m in gap_from and gap_from[m] <= n]
            if earlier and req.skip_after_gap:
                row.update(status="skipped",
                           error=f"after a gap at n={gap_from[earlier[0]]} ({earlier[0]})")
            else:
                result = _point(req, p, backend, n, mode)
                row.update(field_columns(backend, result.pop("fields", None) or {}), **result)
                if row["status"] in GAP_STATUSES:
                    gap_from.setdefault(mode, n)
            yield row


def run_benchmark(req: BenchRequest) -> int:
    """Run the request; write ``<out>/bench_<preset>_<tag>.csv`` (after every point) and the
    plots. Returns 0, or 1 when a point failed with an error or crashed."""
    if not req.in_process:
        start_server()  # the server imports torch while this process does too
    import torch

    p = plan(req, torch)
    prefix = Path(req.out) / f"bench_{req.preset}_{p['tag']}"
    csv_path = prefix.with_name(prefix.name + ".csv")
    common = {"preset": req.preset, **p["shape"], "dtype": req.dtype, "repeats": req.repeats,
              "warmup": req.warmup, "device": p["device_name"], "device_tag": p["tag"],
              "threads": p["threads"], "torch": torch.__version__,
              "python": platform.python_version(), "timeout_s": req.timeout or None,
              "max_memory_gb": p["max_gb"]}
    s = p["shape"]
    print(f"{req.preset}: B={s['batch']} H={s['heads']} D={s['head_dim']} n={p['lengths']} "
          f"modes={p['modes']} on {p['device_name']} ({p['threads']} threads), backends "
          f"{', '.join(p['backends'])} -> {csv_path}", flush=True)
    rows: list[dict] = []
    for backend in p["backends"]:
        for row in _backend_rows(req, p, backend, common):
            rows.append(row)
            shown = (f"{row['median_ms']:10.3f} ms {row['peak_mb']:10.2f} MiB"
                     if row["status"] == "ok" else f"{row['status']}: {row.get('error', '')}")
            print(f"  {backend:>10} n={row['n']:<6} {row['mode']:<7} {shown}", flush=True)
            write_csv_atomic(rows, csv_path)
    _plot(csv_path, prefix, f"{req.preset}: B={s['batch']} H={s['heads']} D={s['head_dim']} "
          f"{req.dtype}\n{p['device_name']}, {p['threads']} threads, torch {torch.__version__}")
    bugs = [r for r in rows if r["status"] in BUG_STATUSES]
    if bugs:
        print(f"{len(bugs)} point(s) failed with an error (see the error column)", file=sys.stderr)
        return 1
    return 0


def _plot(csv_path: Path, prefix: Path, title: str) -> None:
    import pandas as pd

    from lra.bench.plots import plot_results

    for path in plot_results(pd.read_csv(csv_path), prefix, title):
        print(f"wrote {path}")
    print(f"wrote {csv_path}")
