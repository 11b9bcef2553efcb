"""Resuming a run: find its checkpoint, check it belongs to this config before touching
anything, keep the logs of the earlier segments, and carry the run's history forward.

A run may take several segments (preempted, killed, resumed). Every checkpoint carries a
`run_ledger` entry (written by `RunLedger`): the task and backend it trains and the wall time,
steps and training throughput of each segment up to that checkpoint. The resumed run's record
then describes the whole run: wall time over all segments, throughput over all measured
batches, and the number of resumes.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lra.errors import CheckpointError
from lra.module import ModelConfig
from lra.results import RECORD_NAME, read_record
from lra.throughput import ThroughputMeter

log = logging.getLogger(__name__)

LEDGER_KEY = "run_ledger"
TRAINING_KEYS = {"state_dict", "loops", "optimizer_states"}


@dataclass
class ResumePlan:
    """What `resume=` resolved to: where the run writes, and the checkpoint (None: a fresh run).

    step: the checkpoint's global step; ledger: its `run_ledger` entry ({} for a checkpoint
    written before ledgers existed); reevaluate: the run is complete and is only tested again.
    """

    run_dir: Path
    checkpoint: Path | None = None
    step: int = 0
    ledger: dict[str, Any] = field(default_factory=dict)
    reevaluate: bool = False

    @property
    def segments(self) -> list[dict[str, Any]]:
        """The earlier segments of the run, oldest first."""
        return list(self.ledger.get("segments", []))


def resolve_resume(resume: str | None, run_dir: Path) -> tuple[Path | None, Path]:
    """(checkpoint to resume from or None, run dir to write to) for `resume=`.

    null: a fresh run. auto: this run dir's last checkpoint if there is one (rerun the same
    command with hydra.run.dir=<old run dir>). A run dir: its last checkpoint, and the run
    continues writing there. A .ckpt file: that checkpoint.
    """
    if not resume:
        return None, run_dir
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return (last if last.is_file() else None), run_dir
    target = Path(resume)
    if target.is_dir():
        last = target / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise CheckpointError(f"resume={resume}: no checkpoints/last.ckpt in that run directory; "
                                  "pass a .ckpt file, or drop resume= to start afresh.")
        return last, target
    if target.is_file():
        return target, target.parent.parent if target.parent.name == "checkpoints" else run_dir
    raise CheckpointError(f"resume={resume}: no such run directory or checkpoint file.")


def plan_resume(cfg: DictConfig, run_dir: Path, load) -> ResumePlan:
    """Resolve `cfg.resume` and check everything about it before any file is written.

    load: (path, purpose) -> checkpoint dict (the runner's safe loader). Refuses a checkpoint
    that is not a training checkpoint or was written for another task, model or backend, and a
    run that already completed unless `reevaluate=true`.
    """
    checkpoint, target = resolve_resume(cfg.get("resume"), run_dir)
    if checkpoint is None:
        return ResumePlan(run_dir=target)
    completed = _completed_record(target)
    if completed and not cfg.get("reevaluate", False):
        raise CheckpointError(
            f"cannot resume: the run in {target} already completed ({completed}); resuming would "
            "overwrite its record. To test its best checkpoint again, add reevaluate=true; to "
            "train further, start a new run (drop resume=).")
    state = load(checkpoint, "cannot resume")
    missing = TRAINING_KEYS - set(state)
    if missing:
        raise CheckpointError(f"cannot resume: {checkpoint} is not a training checkpoint (it lacks "
                              f"{', '.join(sorted(missing))}); pass the run's checkpoints/last.ckpt.")
    check_same_run(state, cfg, checkpoint)
    return ResumePlan(run_dir=target, checkpoint=checkpoint, step=int(state.get("global_step", 0)),
                      ledger=dict(state.get(LEDGER_KEY) or {}), reevaluate=bool(completed))


def _completed_record(run_dir: Path) -> str | None:
    """'status completed, N steps' when run_dir holds the record of a completed run."""
    try:
        record = read_record(run_dir / RECORD_NAME)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") != "completed":
        return None
    return f"status completed at step {record.get('steps')}, {RECORD_NAME} written {record.get('created')}"


def check_same_run(state: dict, cfg: DictConfig, path: Path) -> None:
    """Refuse a checkpoint whose task, model shape or backend differ from this config's."""
    ledger = state.get(LEDGER_KEY) or {}
    saved = (state.get("hyper_parameters") or {}).get("model")
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"cannot resume: {path} does not record the model it trains (no hyper_parameters.model); "
            "it was not written by this version of the project. Start a fresh run.")
    wanted = asdict(instantiate(cfg.model, _convert_="all"))
    differences = [f"{key} {saved.get(key)!r} (now {wanted[key]!r})" for key in wanted
                   if key in saved and saved[key] != wanted[key]]
    if ledger.get("task") not in (None, cfg.task.name):
        differences.insert(0, f"task {ledger['task']!r} (now {cfg.task.name!r})")
    if differences:
        raise CheckpointError(
            f"cannot resume from {path}: it was written for another run: {'; '.join(differences)}. "
            "Resume with the same task, model and attention settings as that run (its config is in "
            "its run directory's .hydra/config.yaml), or start a fresh run. Nothing was changed.")


def keep_metrics_through(csv_path: Path, step: int | None) -> None:
    """Prepare a run's metrics CSV for a segment that starts after `step` optimizer steps.

    Rows logged at steps < `step` (the steps the checkpoint includes; Lightning logs the
    optimizer step k at row step k-1) are kept and the resumed segment appends after them;
    rows from after the checkpoint, which the segment repeats, are dropped. step None (a fresh
    run in an existing directory): the file is removed. Rewritten atomically.
    """
    if not csv_path.is_file():
        return
    if step is None:
        csv_path.unlink()
        return
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        rows = [row for row in reader if _step_of(row) < step]
    fd, tmp = tempfile.mkstemp(prefix=".metrics.", suffix=".csv", dir=csv_path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, csv_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _step_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


def adopt_log_files(hydra_dir: Path, run_dir: Path) -> None:
    """Continue this process's log files (Hydra's train.log) in the resumed run's directory.

    Hydra made a new output dir for this command; the resumed run writes into its own
    directory instead, so the log handlers are re-pointed there (appending), this command's
    .hydra/ config is kept as run_dir/.hydra/resume-<time>/, and the stray dir is removed
    when nothing else is in it.
    """
    hydra_dir, run_dir = hydra_dir.resolve(), run_dir.resolve()
    if hydra_dir == run_dir:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == hydra_dir:
            name = Path(handler.baseFilename).name
            handler.close()
            handler.baseFilename, handler.mode = str(run_dir / name), "a"
            handler.stream = handler._open()
            (hydra_dir / name).unlink(missing_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    if (hydra_dir / ".hydra").is_dir():
        shutil.move(str(hydra_dir / ".hydra"), run_dir / ".hydra" / f"resume-{stamp}")
    if hydra_dir.is_dir() and not any(hydra_dir.iterdir()):
        hydra_dir.rmdir()


class RunLedger(L.Callback):
    """Writes `run_ledger` into every checkpoint: the task and backend, the segments so far
    (this one up to the save) and the throughput meter's totals (see module docstring)."""

    def __init__(self, task: str, attention: str, meter: ThroughputMeter, plan: ResumePlan,
                 started: float) -> None:
        """started: time.perf_counter() when this segment began (the runner's start)."""
        self.task, self.attention, self.meter = task, attention, meter
        self.earlier = plan.segments
        self.earlier_skipped = int(plan.ledger.get("skipped_nonfinite_batches", 0))
        self.first_step = plan.step
        self.started = started
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def segment(self, last_step: int) -> dict[str, Any]:
        """This segment so far: when it started, its wall time and the steps it covers."""
        return {"started": self.started_at, "wall_time_s": time.perf_counter() - self.started,
                "first_step": self.first_step, "last_step": last_step}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[LEDGER_KEY] = {
            "task": self.task, "attention": self.attention,
            "segments": [*self.earlier, self.segment(trainer.global_step)],
            "throughput": self.meter.totals(),
            "skipped_nonfinite_batches": self.earlier_skipped + pl_module.skipped_batches,
        }
