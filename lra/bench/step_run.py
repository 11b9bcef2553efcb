"""The whole-step benchmark run: every task x backend x compile mode cell, each task's loader
settings, the CSVs and the plot.

For each task: its training DataLoader (:mod:`lra.bench.loader`) for every loader setting
(workers x pinned memory; pinned only on CUDA, where it matters), then one step cell
(:mod:`lra.bench.step`) per backend and compile mode, each in a fresh worker process with the
per-cell timeout. Cells that time out, run out of memory or fail are rows with that status.
Step rows carry the loader's batches/s at the training config's loader setting and
``loader_over_step`` = loader batches/s ÷ steps/s (below ~10 the loader costs a visible share of
a step when it runs in the training process, i.e. with 0 workers).
Outputs: ``<out>/step_<tag>.csv``, ``<out>/step_<tag>_loader.csv`` and ``<out>/step_<tag>.png``.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lra.bench.loader import measure_loader
from lra.bench.presets import (CONFIG_DIR, BenchError, backend_names, parse_ints,
                               resolve_backends)
from lra.bench.probes import default_threads, device_tag, memory_cap, resolve_device
from lra.bench.results import write_csv_atomic
from lra.bench.step import COMPILE_MODES, compose_config, run_step_cell
from lra.bench.worker import measure_in_subprocess, start_server

STEP_COLUMNS = [
    "task", "backend", "compile", "status", "steps_per_s", "samples_per_s", "tokens_per_s",
    "step_ms", "times_ms", "measured_steps", "warmup_s", "peak_mb", "extra_mb", "mem_method",
    "batch", "max_len", "docs", "params", "precision", "loader_batches_per_s",
    "loader_over_step", "options", "overrides", "steps", "warmup", "device", "device_tag",
    "threads", "torch", "python", "timeout_s", "max_memory_gb", "timestamp", "error"]
LOADER_COLUMNS = [
    "task", "workers", "pin_memory", "status", "batches_per_s", "samples_per_s", "data",
    "batches", "batch", "max_len", "device", "device_tag", "threads", "torch", "timestamp",
    "error"]
BUG_STATUSES = ("error", "crashed")  # make the exit code 1
PRELOAD = ("lightning", "hydra", "lra.runner", "lra.bench.step", "lra.bench.loader")


@dataclass
class StepRequest:
    """What to run; None means every task / backend, all usable cores."""

    tasks: str | None = None  # "listops,text"
    backends: str | None = None  # "lot,softmax"
    compile: str = "off"  # comma-separated: off, inductor or another torch.compile backend
    overrides: list[str] = field(default_factory=list)  # Hydra overrides for every cell
    steps: int = 2
    warmup: int = 1
    timeout: float = 40.0  # seconds per cell after set-up, warm-up included; 0 = none
    threads: int | None = None
    device: str = "auto"
    max_memory_gb: str = "auto"
    loader_workers: str = "0,2"  # "" = no loader measurement
    loader_batches: int = 50
    out: Path = Path("results")
    tag: str | None = None
    in_process: bool = False  # measure in this process (tests; no isolation, no timeout)


def task_names() -> list[str]:
    """The tasks of configs/task/, in the LRA order (ListOps, Text, Retrieval, ...)."""
    from lra.data import TASKS

    names = [path.stem for path in (CONFIG_DIR / "task").glob("*.yaml")]
    return sorted(names, key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t))


def _names(text: str | None, valid: list[str], what: str) -> list[str]:
    names = [x.strip() for x in (text or "").split(",") if x.strip()] or list(valid)
    unknown = [x for x in names if x not in valid]
    if unknown:
        raise BenchError(f"unknown {what} {', '.join(unknown)}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _compile_modes(text: str, torch) -> list[str]:
    valid = ["off", *sorted(set(COMPILE_MODES) - {"off"}),
             *(b for b in torch.compiler.list_backends(exclude_tags=()) if b != "inductor")]
    return _names(text or "off", valid, "--compile mode(s)")


def plan(req: StepRequest, torch) -> dict:
    """Resolve and check the request (BenchError with the fix otherwise)."""
    if req.steps < 1 or req.warmup < 0 or req.timeout < 0 or req.loader_batches < 1:
        raise BenchError("--steps and --loader-batches must be >= 1, --warmup and --timeout >= 0")
    device, device_name, kind = resolve_device(req.device, torch)
    tasks = _names(req.tasks, task_names(), "task(s)")
    try:  # a bad override fails here, before anything runs
        configs = {t: compose_config(t, None, overrides=req.overrides) for t in tasks}
    except Exception as exc:  # noqa: BLE001 - Hydra's own errors name the bad key
        raise BenchError(f"--override: {exc}; give Hydra overrides as in train.py, "
                         "e.g. --override task.max_len=256") from None
    pins = [False, True] if kind == "cuda" else [False]
    return {"tasks": tasks, "configs": configs, "device": device, "device_name": device_name,
            "backends": resolve_backends(req.backends, backend_names()),
            "compile": _compile_modes(req.compile, torch),
            "loader": [(w, p) for w in parse_ints(req.loader_workers, "--loader-workers", "0,2",
                                                   minimum=0) for p in pins],
            "threads": default_threads(req.threads), "max_gb": memory_cap(req.max_memory_gb, kind),
            "tag": req.tag or device_tag(device_name, kind)}


def _measure(req: StepRequest, entry, spec: dict, name: str) -> dict:
    if req.in_process:
        return entry(spec)
    return measure_in_subprocess(entry, spec, req.timeout or None, name=name)


def _loader_rows(req: StepRequest, p: dict, task: str, common: dict):
    cfg = p["configs"][task]
    for workers, pin in p["loader"]:
        spec = {"task": task, "workers": workers, "pin_memory": pin, "batches": req.loader_batches,
                "device": p["device"], "threads": p["threads"], "overrides": req.overrides}
        result = _measure(req, measure_loader, spec, f"loader-{task}-{workers}")
        yield {**common, "task": task, "workers": workers, "pin_memory": pin,
               "batches": req.loader_batches, "batch": cfg.task.batch_size,
               "max_len": cfg.task.max_len, "timestamp": _now(), **result}


def _loader_rate(rows: list[dict], task: str, cfg) -> float | None:
    """batches/s of the task's loader at the training config's workers and pinning."""
    for row in rows:
        if (row["task"], row["workers"], row["pin_memory"]) == (
                task, cfg.trainer.num_workers, cfg.trainer.get("pin_memory", False)):
            return row.get("batches_per_s")
    return None


def _step_row(req: StepRequest, p: dict, task: str, backend: str, mode: str, common: dict,
              loader_rate: float | None) -> dict:
    cfg = compose_config(task, backend, mode, req.overrides)
    options = {k: v for k, v in dict(cfg.attn).items() if k != "name"}
    spec = {"task": task, "backend": backend, "compile": mode, "overrides": req.overrides,
            "device": p["device"], "threads": p["threads"], "warmup": req.warmup,
            "steps": req.steps, "timeout_s": req.timeout or None,
            "max_memory_gb": None if req.in_process else p["max_gb"]}
    result = _measure(req, run_step_cell, spec, f"step-{task}-{backend}-{mode}")
    row = {**common, "task": task, "backend": backend, "compile": mode,
           "batch": cfg.task.batch_size, "max_len": cfg.task.max_len,
           "docs": 2 if cfg.task.dual else 1, "options": json.dumps(options, sort_keys=True),
           "loader_batches_per_s": loader_rate, "timestamp": _now(), **result}
    if loader_rate and row.get("steps_per_s"):
        row["loader_over_step"] = loader_rate / row["steps_per_s"]
    return row


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _show(row: dict) -> str:
    if row.get("steps_per_s"):
        return (f"{row['steps_per_s']:8.3f} steps/s {row.get('tokens_per_s') or 0:10.0f} tok/s "
                f"{row.get('peak_mb') or 0:8.0f} MiB" + ("" if row["status"] == "ok"
                                                         else f" ({row['status']})"))
    if row.get("batches_per_s"):
        return f"{row['batches_per_s']:8.1f} batches/s ({row.get('data')})"
    return f"{row['status']}: {row.get('error', '')}"


def run_step_benchmark(req: StepRequest) -> int:
    """Run the request, writing the CSVs after every row and the plot at the end; returns 0,
    or 1 when a cell failed with an error or crashed."""
    if not req.in_process:
        start_server(PRELOAD)
    import torch

    p = plan(req, torch)
    prefix = Path(req.out) / f"step_{p['tag']}"
    step_csv, loader_csv = Path(f"{prefix}.csv"), Path(f"{prefix}_loader.csv")
    common = {"device": p["device_name"], "device_tag": p["tag"], "threads": p["threads"],
              "torch": torch.__version__, "python": platform.python_version(),
              "steps": req.steps, "warmup": req.warmup, "timeout_s": req.timeout or None,
              "max_memory_gb": p["max_gb"], "overrides": " ".join(req.overrides)}
    print(f"whole-step benchmark on {p['device_name']} ({p['threads']} threads): tasks "
          f"{', '.join(p['tasks'])}; backends {', '.join(p['backends'])}; compile "
          f"{', '.join(p['compile'])} -> {step_csv}", flush=True)
    steps, loaders = [], []
    for task in p["tasks"]:
        for row in _loader_rows(req, p, task, common):
            loaders.append(row)
            write_csv_atomic(loaders, loader_csv, LOADER_COLUMNS)
            print(f"  {task:>10} loader workers={row['workers']} pin={row['pin_memory']}: "
                  f"{_show(row)}", flush=True)
        rate = _loader_rate(loaders, task, p["configs"][task])
        for backend in p["backends"]:
            for mode in p["compile"]:
                steps.append(_step_row(req, p, task, backend, mode, common, rate))
                write_csv_atomic(steps, step_csv, STEP_COLUMNS)
                print(f"  {task:>10} {backend:>10} {mode:>8}: {_show(steps[-1])}", flush=True)
    _plot(step_csv, prefix, f"{p['device_name']}, {p['threads']} threads, torch {torch.__version__}")
    bugs = [r for r in steps + loaders if r["status"] in BUG_STATUSES]
    if bugs:
        print(f"{len(bugs)} cell(s) failed with an error (see the error column)", file=sys.stderr)
        return 1
    return 0


def _plot(csv_path: Path, prefix: Path, title: str) -> None:
    import pandas as pd

    from lra.bench.plots import plot_steps

    print(f"wrote {plot_steps(pd.read_csv(csv_path), prefix, title)}")
    print(f"wrote {csv_path}")
