"""Reliability: exact resume after SIGKILL/SIGTERM, bit-for-bit repeats, CPU DDP,
non-finite losses and clear errors for bad input."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lra.data.base import DataNotFoundError, MalformedDataError, SplitArrays
from lra.datamodule import check_not_empty
from lra.errors import CheckpointError, ConfigError, NonFiniteLossError
from lra.module import LRAModule
from lra.runner import run
from tests.conftest import REPO_ROOT
from tests.helpers import compose_train, tiny_run_overrides
from tests.lra.data_fixtures import RunsCommand


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    """A 12-step softmax run with checkpoints every 3 steps and validation every 4."""
    extra_groups = {e.split("=")[0] for e in extra if "/" in e.split("=")[0]}
    base = [o for o in tiny_run_overrides(tmp_path) if o.split("=")[0] not in extra_groups]
    return base + [
        "task.max_steps=12", "task.eval_every=4", "callbacks.checkpoint.every_n_steps=3",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", *extra,
    ]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs"


def _train_cmd(overrides: list[str]) -> list[str]:
    return [sys.executable, "train.py", *overrides]


@contextlib.contextmanager
def _killed_on_exit(proc: subprocess.Popen):
    """Yield the process; kill it on the way out, so a failing test leaves no training behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _run_until_checkpoint(cmd: list[str], checkpoint: Path, sig: int) -> int:
    """Start training, send `sig` as soon as the first periodic checkpoint exists."""
    with _killed_on_exit(subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)) as proc:
        deadline = time.time() + 300
        while not checkpoint.is_file():
            assert proc.poll() is None, f"training ended before a checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[dict, Path]:
    """The uninterrupted 12-step run every resumed run must reproduce."""
    tmp_path = tmp_path_factory.mktemp("reference")
    return run(compose_train(_overrides(tmp_path)), tmp_path / "run"), tmp_path / "run"


# Checkpoints every 3 steps fall between validations (every 4); every 4 they coincide with
# them, where the checkpoint must be taken after the validation to resume exactly.
@pytest.mark.parametrize("sig,every", [(signal.SIGKILL, 3), (signal.SIGKILL, 4), (signal.SIGTERM, 3)])
def test_killed_run_resumes_to_the_same_result(tmp_path, reference_run, sig, every):
    reference, reference_dir = reference_run
    run_dir = tmp_path / "interrupted"
    cmd = _train_cmd(_overrides(tmp_path, f"hydra.run.dir={run_dir}",
                                f"callbacks.checkpoint.every_n_steps={every}"))
    last = run_dir / "checkpoints" / "last.ckpt"
    stopped_at = _run_until_checkpoint(cmd, last, sig)
    assert every <= stopped_at < 12, f"the run should stop mid-training, stopped at {stopped_at}"
    assert not (run_dir / "results.json").exists()

    resumed = run(compose_train(_overrides(tmp_path, f"resume={run_dir}",
                                           f"callbacks.checkpoint.every_n_steps={every}")),
                  tmp_path / "new-dir")
    assert resumed.resumed_from == str(last)
    assert resumed.run_dir == str(run_dir)  # the run continues in its own directory
    assert resumed.steps == reference.steps == 12
    assert resumed.metrics == reference.metrics
    _assert_same_weights(Path(reference.best_checkpoint), Path(resumed.best_checkpoint))
    assert Path(reference.best_checkpoint).name == Path(resumed.best_checkpoint).name
    final = _state(last)  # the resumed run's last checkpoint is at step 12, as the reference's
    assert torch.load(last, weights_only=True)["global_step"] == 12
    assert all(torch.equal(final[k], v) for k, v in _state(reference_dir / "checkpoints" / "last.ckpt").items())


def test_sigterm_saves_a_checkpoint_at_the_step_it_stopped(tmp_path):
    """SIGTERM between periodic checkpoints: last.ckpt is written where training stopped."""
    run_dir = tmp_path / "run"
    never = "100000"  # no periodic checkpoint, no validation, no end of training in this test
    cmd = _train_cmd(_overrides(tmp_path, f"hydra.run.dir={run_dir}", f"task.max_steps={never}",
                                f"callbacks.checkpoint.every_n_steps={never}", f"task.eval_every={never}",
                                "callbacks/progress_bar=tqdm"))
    with _killed_on_exit(subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)) as proc:
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stdout.read(64), "")),
                                  daemon=True)
        reader.start()
        deadline = time.time() + 300
        while not re.search(r"\| ([3-9]|\d\d+)/100000", "".join(seen)):  # tqdm bar: 3 steps done
            assert proc.poll() is None, "".join(seen)[-2000:]
            assert time.time() < deadline, "training did not reach step 3 within 300 s"
            time.sleep(0.05)
        assert not (run_dir / "checkpoints" / "last.ckpt").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 3 <= checkpoint["global_step"] < 100000


def test_seeded_runs_repeat_bit_for_bit(tmp_path):
    first = run(compose_train(_overrides(tmp_path, "seed=7")), tmp_path / "a")
    second = run(compose_train(_overrides(tmp_path, "seed=7")), tmp_path / "b")
    other = run(compose_train(_overrides(tmp_path, "seed=8")), tmp_path / "c")
    assert first.metrics == second.metrics
    _assert_same_weights(tmp_path / "a" / "checkpoints" / "last.ckpt", tmp_path / "b" / "checkpoints" / "last.ckpt")
    with pytest.raises(AssertionError):
        _assert_same_weights(tmp_path / "a" / "checkpoints" / "last.ckpt",
                             tmp_path / "c" / "checkpoints" / "last.ckpt")
    assert other.seed == 8


def test_two_process_cpu_ddp(tmp_path):
    run_dir = tmp_path / "ddp"
    overrides = _overrides(tmp_path, f"hydra.run.dir={run_dir}", "trainer.strategy=ddp",
                           "trainer.devices=2", "trainer.accelerator=cpu", "task.batch_size=4",
                           "trainer.limit_test_batches=null", "task.max_steps=4", "task.eval_every=2")
    result = subprocess.run(_train_cmd(overrides), cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = list(tmp_path.rglob("results.json"))
    assert records == [run_dir / "results.json"], "one record, in the one run directory"
    assert not (tmp_path / "outputs").exists(), "no second run directory"
    record = json.loads(records[0].read_text())
    assert record["steps"] == 4 and record["config"]["trainer"]["devices"] == 2
    # The test accuracy is reduced over both processes: it equals a single-process evaluation
    # of the same checkpoint on the whole test split.
    cfg = compose_train(_overrides(tmp_path))
    model = LRAModule.load_from_checkpoint(record["best_checkpoint"], map_location="cpu",
                                          weights_only=True).eval()
    from lra.runner import build_datamodule

    data = build_datamodule(cfg).load().splits["test"]
    ids = torch.from_numpy(np.asarray(data.ids).astype(np.int64))
    with torch.no_grad():
        predictions = model(ids, ids != 0).argmax(-1)
    expected = (predictions == torch.from_numpy(np.asarray(data.labels))).float().mean().item()
    assert record["metrics"]["test_acc"] == pytest.approx(expected, abs=1e-6)


def test_nonfinite_loss_stops_with_step_examples_and_checkpoint(tmp_path, monkeypatch):
    original = LRAModule._step

    def poisoned(self, batch, split):
        loss = original(self, batch, split)
        return loss * float("nan") if split == "train" and self.global_step == 2 else loss

    monkeypatch.setattr(LRAModule, "_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 2 on the batch of training examples \[") as err:
        run(compose_train(_overrides(tmp_path)), tmp_path / "run")
    saved = tmp_path / "run" / "checkpoints" / "nonfinite-step2.ckpt"
    assert str(saved) in str(err.value)
    state = torch.load(saved, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())

    record = run(compose_train(_overrides(tmp_path, "on_nonfinite=skip")), tmp_path / "skip")
    assert record.skipped_nonfinite_batches == 1 and record.status == "completed"


def test_bf16_run_stays_finite(tmp_path):
    record = run(compose_train(tiny_run_overrides(tmp_path, attn="lot") + ["trainer.precision=bf16-mixed"]),
                 tmp_path / "run")
    assert record.precision == "bf16-mixed"
    assert math.isfinite(record.metrics.test_loss)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("extra,message", [
    (["attn=lot", "attn.rank=3000"], "LOT rank attn.rank=3000 is larger than the sequence length"),
    (["attn=linformer", "attn.proj_dim=4000"], "Linformer projects the sequence to attn.proj_dim=4000"),
    (["trainer.devices=8", "task.batch_size=4"], "task.batch_size=4 cannot be split over 8 device"),
    (["attn=lot", "attn.eps=-1"], "attention backend 'lot'"),
    (["attn=performer", "+attn.num_featurs=3"], "unknown option(s) num_featurs"),
    (["trust_checkpoint=maybe"], "trust_checkpoint must be true or false, got 'maybe'"),
])
def test_conflicting_settings_fail_clearly(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        run(compose_train(tiny_run_overrides(tmp_path) + extra), tmp_path / "run")


def test_missing_data_names_paths_and_fixes(tmp_path):
    with pytest.raises(DataNotFoundError, match="ListOps not found: searched") as err:
        run(compose_train(tiny_run_overrides(tmp_path) + ["task.data.generate=null"]), tmp_path / "run")
    assert "LRA_DATA_DIR" in str(err.value) and "prepare_data.py generate listops" in str(err.value)


def test_all_padding_example_is_reported():
    ids = np.array([[3, 4, 0], [0, 0, 0]], dtype=np.int16)
    with pytest.raises(MalformedDataError, match=r"1 example\(s\) are all padding \(first at row 1\)"):
        check_not_empty(SplitArrays(ids=ids, labels=np.array([0, 1])), "listops train split")
    pairs = np.array([[[3, 0], [0, 0]]], dtype=np.int16)  # retrieval: one empty document
    with pytest.raises(ValueError, match="all padding"):
        check_not_empty(SplitArrays(ids=pairs, labels=np.array([0])), "retrieval train split")


def test_unreadable_data_file_is_reported(tmp_path):
    overrides = tiny_run_overrides(tmp_path)
    run(compose_train(overrides), tmp_path / "first")  # generates the data
    (train,) = (tmp_path / "data" / "generated").glob("*/listops-1000/basic_train.tsv")
    train.unlink()
    train.mkdir()  # a folder where the file should be: reading it fails with an OSError
    with pytest.raises(MalformedDataError, match="cannot read the listops data"):
        run(compose_train(overrides), tmp_path / "second")


def test_corrupt_checkpoint_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is unreadable or corrupt"):
        run(compose_train(tiny_run_overrides(tmp_path) + [f"resume={run_dir}"]), tmp_path / "x")
    with pytest.raises(CheckpointError, match="no such run directory or checkpoint"):
        run(compose_train(tiny_run_overrides(tmp_path) + [f"resume={tmp_path / 'nope'}"]), tmp_path / "x")


@pytest.mark.parametrize("args,message", [
    (["attn=lot", "attn.rank=3000"], "LOT rank attn.rank=3000 is larger"),
    (["experiment=nope"], "Available options in 'experiment'"),
])
def test_cli_prints_one_paragraph_without_traceback(tmp_path, args, message):
    overrides = [o for o in tiny_run_overrides(tmp_path) if not o.startswith("attn=")]
    result = subprocess.run(_train_cmd(overrides + args), cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- untrusted checkpoints
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete 2-step run (its last.ckpt is at max_steps) that tests copy and tamper with."""
    tmp_path = tmp_path_factory.mktemp("finished")
    run(compose_train(_finished_overrides(tmp_path)), tmp_path / "run")
    return tmp_path


def _finished_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return tiny_run_overrides(tmp_path) + ["callbacks.checkpoint.every_n_steps=1", *extra]


def _copy_run(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(run dir, its last.ckpt) of a fresh copy of `finished_run`, data included, without its
    results.json: a run that died during its final test, which resume= finishes."""
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)
    (tmp_path / "run" / "results.json").unlink()
    return tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"


def _resume(tmp_path: Path, run_dir: Path, *extra: str) -> dict:
    return run(compose_train(_finished_overrides(tmp_path, f"resume={run_dir}", *extra)), tmp_path / "new")


def _assert_refused_naming(err: pytest.ExceptionInfo, path: Path, purpose: str) -> None:
    message = str(err.value)
    assert message.startswith(f"{purpose}: refused to load checkpoint {path}, because it holds ")
    assert f"{os.system.__module__}.system" in message and "trust_checkpoint=true" in message
    assert "\n" not in message


def test_crafted_checkpoint_on_resume_is_refused_and_not_run(finished_run, tmp_path):
    run_dir, last = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "marker"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["optimizer_states"] = [RunsCommand(f"touch {marker}")]
    torch.save(checkpoint, last)
    with pytest.raises(CheckpointError) as err:
        _resume(tmp_path, run_dir)
    _assert_refused_naming(err, last, "cannot resume")
    assert not marker.exists()


def test_crafted_best_checkpoint_is_refused_before_testing(finished_run, tmp_path):
    """A clean last.ckpt can name any file as the best checkpoint that the run tests at its end."""
    run_dir, last = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "marker"
    crafted = run_dir / "checkpoints" / "best-step=9.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCommand(f"touch {marker}")}, crafted)
    checkpoint = torch.load(last, weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint")]
    checkpoint["callbacks"][key].update(best_model_path=str(crafted), best_model_score=torch.tensor(1.0),
                                        best_k_models={str(crafted): torch.tensor(1.0)})
    torch.save(checkpoint, last)  # still tensors and plain values: resuming from it is allowed
    with pytest.raises(CheckpointError) as err:
        _resume(tmp_path, run_dir)
    _assert_refused_naming(err, crafted, "cannot test the best checkpoint")
    assert not marker.exists()


class Note:
    """A custom object for a checkpoint; restoring it from a pickle creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        Path(self.marker).touch()


def test_trust_checkpoint_loads_a_checkpoint_with_a_custom_object(finished_run, tmp_path):
    run_dir, last = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "marker"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["note"] = Note(marker)
    torch.save(checkpoint, last)
    with pytest.raises(CheckpointError, match=f"because it holds {__name__}.Note: ") as err:
        _resume(tmp_path, run_dir)
    assert "set trust_checkpoint=true to load it anyway" in str(err.value)
    assert not marker.exists()
    record = _resume(tmp_path, run_dir, "trust_checkpoint=true")
    assert record.status == "completed" and record.resumed_from == str(last)
    assert record.steps == 2
    assert marker.exists()  # the object was restored, its code run: the risk the flag accepts
