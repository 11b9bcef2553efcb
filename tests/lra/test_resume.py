"""Resume keeps a run's data: logs are appended, the record covers every segment, a checkpoint
of another run or a completed run is refused before anything is written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lra.errors import CheckpointError
from lra.resume import LEDGER_KEY, keep_metrics_through
from lra.runner import run
from tests.conftest import REPO_ROOT
from tests.helpers import compose_train, tiny_run_overrides


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    """A 12-step softmax run logging every step to CSV, checkpoints every 3 steps."""
    base = [o for o in tiny_run_overrides(tmp_path) if not o.startswith("logger=")]
    return base + ["logger=csv", "task.max_steps=12", "task.eval_every=4",
                   "trainer.log_every_n_steps=1", "callbacks.checkpoint.every_n_steps=3",
                   "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", *extra]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _train_steps(rows: list[dict[str, str]]) -> list[int]:
    return [int(row["step"]) for row in rows if row.get("train/loss")]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped after 6 of its 12 steps (last.ckpt at step 6, no results.json), as a run
    killed between checkpoints leaves it. Tests copy it."""
    tmp_path = tmp_path_factory.mktemp("interrupted")
    run_dir = tmp_path / "run"
    run(compose_train(_overrides(tmp_path, "trainer.max_steps=6")), run_dir)
    (run_dir / "results.json").unlink()
    return tmp_path


def _copy(interrupted: Path, tmp_path: Path) -> Path:
    import shutil
    shutil.copytree(interrupted, tmp_path, dirs_exist_ok=True)
    return tmp_path / "run"


def test_resumed_run_appends_to_its_metrics_and_its_record_covers_all_segments(interrupted, tmp_path):
    run_dir = _copy(interrupted, tmp_path)
    before = _rows(run_dir)
    assert _train_steps(before) == list(range(6))
    with open(run_dir / "csv" / "metrics.csv", "a") as handle:  # logged after the checkpoint
        handle.write(",".join("6" if key == "step" else "9.9" if key == "train/loss" else ""
                              for key in before[0]) + "\n")

    record = run(compose_train(_overrides(tmp_path, f"resume={run_dir}")), tmp_path / "elsewhere")
    rows = _rows(run_dir)
    assert _train_steps(rows) == list(range(12))  # each step once: the stale step-6 row is gone
    kept = [row for row in before if int(row["step"]) < 6]  # not the first segment's test row
    assert rows[:len(kept)] == kept  # the first segment's training rows are kept as they were
    assert "9.9" not in {row["train/loss"] for row in rows}
    assert record.resumes == 1 and len(record.segments) == 2
    first, second = record.segments
    assert (first["first_step"], first["last_step"]) == (0, 6)
    assert (second["first_step"], second["last_step"]) == (6, 12)
    assert record.wall_time_s == pytest.approx(first["wall_time_s"] + second["wall_time_s"])
    assert record.throughput.measured_steps == 4 + 4  # 6 steps per segment, 2 warmup each
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["resumes"] == 1 and saved["steps"] == 12 and saved["status"] == "completed"


def test_checkpoint_of_another_run_is_refused_before_anything_is_written(interrupted, tmp_path):
    run_dir = _copy(interrupted, tmp_path)
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"written for another run: attention \{'name': 'softmax'\}"):
        run(compose_train(_overrides(tmp_path, f"resume={run_dir}", "attn=lot", "attn.rank=4")),
            tmp_path / "x")
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    state[LEDGER_KEY]["task"] = "text"
    torch.save(state, last)
    snapshot[last] = last.read_bytes()
    with pytest.raises(CheckpointError, match=r"task 'text' \(now 'listops'\)"):
        run(compose_train(_overrides(tmp_path, f"resume={run_dir}")), tmp_path / "x")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot


def test_completed_run_is_not_resumed_but_can_be_reevaluated(interrupted, tmp_path):
    run_dir = _copy(interrupted, tmp_path)
    done = run(compose_train(_overrides(tmp_path, f"resume={run_dir}")), tmp_path / "x")
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="already completed .* add reevaluate=true"):
        run(compose_train(_overrides(tmp_path, f"resume={run_dir}")), tmp_path / "x")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot

    again = run(compose_train(_overrides(tmp_path, f"resume={run_dir}", "reevaluate=true")), tmp_path / "x")
    assert again.metrics.test_acc == pytest.approx(done.metrics.test_acc)
    assert again.reevaluated and again.steps == done.steps == 12
    assert again.wall_time_s == done.wall_time_s and again.segments == done.segments
    assert _rows(run_dir) == [dict(r) for r in csv.DictReader(
        snapshot[run_dir / "csv" / "metrics.csv"].decode().splitlines())]


def test_cli_resume_logs_into_the_resumed_run_dir(interrupted, tmp_path):
    run_dir = _copy(interrupted, tmp_path)
    stray = tmp_path / "stray"
    cmd = [sys.executable, "train.py", *_overrides(tmp_path, f"resume={run_dir}", f"hydra.run.dir={stray}")]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not stray.exists()  # its log and .hydra moved into the resumed run
    log = (run_dir / "train.log").read_text()
    assert "resuming from" in log and "at step 6 (segment 2 of this run)" in log
    assert len(list((run_dir / ".hydra").glob("resume-*/overrides.yaml"))) == 1


def test_keep_metrics_through_rewrites_atomically(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,train/loss\n0,1.0\n1,0.9\n2,0.8\n")
    keep_metrics_through(path, 2)
    assert path.read_text().splitlines() == ["step,train/loss", "0,1.0", "1,0.9"]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    keep_metrics_through(path, None)  # a fresh run in this directory starts a new file
    assert not path.exists()
