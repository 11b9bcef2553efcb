"""Running a plan's runs: one `train.py` process per run, `jobs` at a time, each in its own
run directory with its console log. A run that fails or crashes does not stop the others: it
leaves a failed record (train.py writes one for errors it knows; a crash gets one here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from lra.record import RecordError, RunRecord
from lra.reproduce.plan import REPO_ROOT, RunSpec
from lra.results import RECORD_NAME, device_info, now_iso, read_record, write_record

TRAIN_SCRIPT = REPO_ROOT / "train.py"
CONSOLE_LOG = "console.log"  # the run's stdout and stderr (Hydra's own log is train.log)


def thread_env(jobs: int) -> dict[str, str]:
    """The environment of a run: the machine's cores split between the parallel runs, unless
    OMP_NUM_THREADS is set already."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("NUMBA_NUM_THREADS", env["OMP_NUM_THREADS"])
    env.setdefault("WANDB_SILENT", "true")
    return env


def last_error_line(log: Path) -> str:
    """What a crashed run said last: its last `error:` or exception line, else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or (":" in line and line.split(":")[0].endswith(("Error", "Exception"))):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else "no output"


def read_run(spec: RunSpec, run_dir: Path, returncode: int) -> RunRecord:
    """The run's record; a failed record (written to run_dir) when the run left none."""
    path = run_dir / RECORD_NAME
    try:
        return RunRecord.from_dict(read_record(path), path=str(path))
    except (OSError, ValueError, RecordError):
        pass
    log = run_dir / CONSOLE_LOG
    why = last_error_line(log) if log.is_file() else "no console log"
    record = RunRecord(task=spec.cell.task, attention=spec.cell.backend, seed=spec.seed,
                       status="failed", error=f"exit code {returncode}: {why}",
                       run_dir=str(run_dir), record_path=str(path), created=now_iso(),
                       device=device_info())
    write_record(run_dir, record)
    record.path = str(path)
    return record


def run_one(spec: RunSpec, runs_dir: Path, env: dict[str, str],
            script: Path = TRAIN_SCRIPT) -> RunRecord:
    """Train one run in its own process (run dir: runs_dir/<task>_<backend>_s<seed>)."""
    run_dir = runs_dir / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(script), *spec.overrides, f"hydra.run.dir={run_dir}"]
    if not any(o.startswith("callbacks/progress_bar=") for o in spec.overrides):
        command.insert(2, "callbacks/progress_bar=none")  # no progress bars in the log
    with open(run_dir / CONSOLE_LOG, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return read_run(spec, run_dir, code)


def run_all(runs: list[RunSpec], runs_dir: Path, jobs: int,
            report: Callable[[str], None] = print, script: Path = TRAIN_SCRIPT) -> list[RunRecord]:
    """Every run, `jobs` at a time, in plan order; a line per finished run through `report`."""
    env, started, done = thread_env(jobs), time.perf_counter(), []

    def one(spec: RunSpec) -> RunRecord:
        record = run_one(spec, runs_dir, env, script)
        done.append(spec)
        minutes = (time.perf_counter() - started) / 60
        result = (f"test accuracy {record.metrics.test_acc:.4f}" if record.status == "completed"
                  and record.metrics and record.metrics.test_acc is not None else f"{record.status}: {record.error}")
        report(f"[{len(done)}/{len(runs)}, {minutes:.1f} min] {spec.cell.name} seed {spec.seed}: {result}")
        return record

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, runs))
