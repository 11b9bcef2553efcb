"""Runs that go wrong say so: unwritable or full checkpoint folders, diverged runs, bad
settings (one paragraph naming the setting and the fix), failed sweep jobs leave a record."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import lra.checkpoints
from lra.checkpoints import ensure_writable
from lra.errors import CheckpointError, ConfigError
from lra.module import MIN_SKIPS_TO_STOP, LRAModule
from lra.runner import run
from lra.summary import print_summary
from lra.tables.records import failure_reason, is_nonofficial
from lra.record import RunRecord
from tests.conftest import REPO_ROOT
from tests.helpers import compose_train, tiny_run_overrides


def _strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise AssertionError(f"{path} holds a bare {constant}: not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


# ----------------------------------------------------------------------------- checkpoint folder
def test_unwritable_checkpoint_folder_stops_the_run_before_training(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match=r"cannot save checkpoints: writing in .*checkpoints failed"):
        run(compose_train(tiny_run_overrides(tmp_path)), run_dir)


def test_permission_and_full_disk_messages_name_the_fix(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(lra.checkpoints.tempfile, "NamedTemporaryFile", denied)
    with pytest.raises(CheckpointError, match=r"is not writable \(Permission denied\)\. Fix its "
                                              r"permissions, or write the run elsewhere with hydra.run.dir"):
        ensure_writable(tmp_path / "ckpt")


def test_full_disk_while_saving_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(lra.checkpoints.os, "fsync", full)
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"could not save checkpoint .*best-step=2\.ckpt: the disk "
                                              r"holding .* is full \(No space left on device\)"):
        run(compose_train(tiny_run_overrides(tmp_path)), run_dir)
    assert list((run_dir / "checkpoints").iterdir()) == []  # no truncated .ckpt, no temp file


# ----------------------------------------------------------------------------- divergence
def _poison(monkeypatch, split: str) -> None:
    """NaN logits in the training or the test steps."""
    original = LRAModule.forward

    def poisoned(self, ids, mask):
        logits = original(self, ids, mask)
        now = self.trainer.testing if split == "test" else self.trainer.training
        return logits * float("nan") if now else logits
    monkeypatch.setattr(LRAModule, "forward", poisoned)


def test_diverged_run_stops_early_instead_of_running_its_whole_schedule(tmp_path, monkeypatch):
    _poison(monkeypatch, "train")
    record = run(compose_train(tiny_run_overrides(tmp_path) + ["on_nonfinite=skip", "task.max_steps=1000",
                                                               "task.eval_every=1000"]), tmp_path / "run")
    assert record.status == "diverged" and record.steps == MIN_SKIPS_TO_STOP
    assert record.skipped_nonfinite_batches == MIN_SKIPS_TO_STOP


def test_run_skipping_most_batches_is_diverged_not_completed(tmp_path, monkeypatch):
    _poison(monkeypatch, "train")
    record = run(compose_train(tiny_run_overrides(tmp_path) + ["on_nonfinite=skip"]), tmp_path / "run")
    assert record.status == "diverged"
    assert record.skipped_nonfinite_batches == 2 and record.steps == 2
    assert "2 of 2 training batches had a non-finite loss" in record.error
    assert "nonfinite_skip_limit=0.1" in record.error
    saved = _strict_json(tmp_path / "run" / "results.json")
    assert saved["status"] == "diverged"
    assert failure_reason(RunRecord.from_dict(saved)).startswith("status 'diverged'")  # not a table cell
    console = Console(record=True, width=200)
    print_summary(record, console)
    text = console.export_text()
    assert "skipped batches (non-finite loss) │ 2 of 2" in text and "diverged" in text


def test_nonfinite_test_loss_is_diverged_and_the_record_stays_strict_json(tmp_path, monkeypatch):
    _poison(monkeypatch, "test")
    record = run(compose_train(tiny_run_overrides(tmp_path)), tmp_path / "run")
    assert record.status == "diverged" and "the test loss is nan" in record.error
    saved = _strict_json(tmp_path / "run" / "results.json")
    assert saved["metrics"]["test_loss"] is None and saved["status"] == "diverged"


# ----------------------------------------------------------------------------- bad settings
CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("extra,message", [
    (["attn=lot", "attn.rank=abc"], "attn.rank='abc' is not an integer (backend 'lot', default 32): "
                                    "set attn.rank to an integer."),
    (["task.batch_size=abc"], "task.batch_size='abc' is not an integer: set task.batch_size to an integer >= 1."),
    (["seed=abc"], "seed='abc' is not an integer: set seed to an integer."),
    (["task.lr=-1"], "task.lr=-1 is out of range: it must be > 0."),
    (["task.eval_every=0"], "task.eval_every=0 is out of range: it must be >= 1."),
    (["task.max_len=0"], "task.max_len=0 is out of range: it must be >= 1."),
    (["attn=lot", "attn.rank=0"], "attention backend 'lot': rank (number of pivots) must be an int >= 1, got 0"),
    (["task.vocab_size=8"], "task.vocab_size=8 is too small for the listops data: its train split has token id"),
    (["task.num_classes=2"], "task.num_classes=2 is too small for the listops data"),
    (["nonfinite_skip_limit=abc"], "nonfinite_skip_limit='abc' is not a number"),
    pytest.param(["trainer.accelerator=gpu"], "trainer.accelerator=gpu but this machine has no usable CUDA GPU",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has a GPU")),
])
def test_bad_settings_are_one_paragraph_naming_the_setting(tmp_path, extra, message):
    overrides = [o for o in tiny_run_overrides(tmp_path) if not (o.startswith("attn=") and "attn=lot" in extra)]
    with pytest.raises(ConfigError) as err:
        run(compose_train(overrides + extra), tmp_path / "run")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_image_max_len_shorter_than_an_image(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("task.max_len=512 is shorter than one image example "
                                                    "(1024 tokens, which may not be cut): set task.max_len >= 1024.")):
        run(compose_train(["task=image", "task.max_len=512", f"paths.data_dir={tmp_path}"]), tmp_path / "run")


def test_cli_bad_setting_prints_one_paragraph_and_leaves_a_failed_record(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", *tiny_run_overrides(tmp_path), "seed=abc", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "seed='abc' is not an integer" in result.stderr
    saved = _strict_json(run_dir / "results.json")
    assert saved["status"] == "failed" and saved["seed"] is None and "seed='abc'" in saved["error"]


def test_failed_multirun_job_leaves_a_failed_record_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", *tiny_run_overrides(tmp_path), "task.lr=-1,0.001",
           f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = {int(p.parent.name.split("_")[0]): _strict_json(p) for p in sweep.glob("*/results.json")}
    assert records[0]["status"] == "failed" and "task.lr=-1 is out of range" in records[0]["error"]
    assert records[1]["status"] == "completed"


# ----------------------------------------------------------------------------- tables
def test_tables_mark_runs_whose_splits_are_smaller_than_the_release():
    def rec(source, sizes):
        return RunRecord.from_dict({"task": "image", "attention": "lot", "status": "completed",
                                    "data": {"source": source, "sizes": sizes}})
    assert is_nonofficial(rec("raw", {"train": 100, "val": 10, "test": 10}))
    assert not is_nonofficial(rec("raw", {"train": 45000, "val": 5000, "test": 10000}))
    assert is_nonofficial(rec("generated", {"train": 45000, "val": 5000, "test": 10000}))
