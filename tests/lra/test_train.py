"""End-to-end training: a 2-step fit + test per backend, multirun, wandb offline, records."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from lotformer import available_attentions
from lra.record import RunRecord
from lra.results import read_record
from lra.runner import run
from tests.conftest import REPO_ROOT
from tests.helpers import compose_train, read_wandb_history_keys, tiny_run_overrides

RECORD_FIELDS = {"task", "attention", "attention_options", "seed", "status", "data", "metrics",
                 "throughput", "memory", "wall_time_s", "steps", "config", "versions", "git",
                 "device", "run_dir", "created"}


# ESPFormer soft-sorts every slice in O(N^2): on 2 CPU cores ListOps' 2000 tokens take minutes
SHORTER = {"espformer": ["task.max_len=256"]}


@pytest.mark.parametrize("attn", available_attentions())
def test_two_step_fit_and_test_on_generated_listops(tmp_path, attn):
    cfg = compose_train(tiny_run_overrides(tmp_path, attn=attn) + SHORTER.get(attn, []))
    record = run(cfg, tmp_path / "run")
    assert record.steps == 2
    assert record.attention == attn and record.task == "listops"
    assert record.data.source == "generated"
    assert record.data.sizes == {"train": 16, "val": 8, "test": 8}
    assert 0.0 <= record.metrics.test_acc <= 1.0
    assert 0.0 <= record.metrics.val_acc <= 1.0
    assert record.throughput.train_samples_per_s > 0
    on_disk = read_record(tmp_path / "run")
    assert RECORD_FIELDS <= set(on_disk)
    assert RunRecord.from_dict(on_disk) == dataclasses.replace(record, path=None)
    assert on_disk["cell"] == f"listops/{attn}"


def test_record_contents(tmp_path):
    cfg = compose_train(tiny_run_overrides(tmp_path, attn="softmax") + ["seed=3", "tag=t"])
    record = read_record(run(cfg, tmp_path / "run").record_path)
    assert record["seed"] == 3 and record["tag"] == "t" and record["status"] == "completed"
    assert record["throughput"]["train_tokens_per_s"] > record["throughput"]["train_samples_per_s"]
    assert record["memory"]["peak_bytes"] > 0 and record["memory"]["kind"] == "cpu_peak_rss"
    assert record["device"]["type"] == "cpu"
    assert record["versions"]["torch"] and record["config"]["task"]["name"] == "listops"
    assert len(record["git"]["commit"] or "x" * 40) == 40
    # The generated data is cached: a second run reads it without regenerating.
    generated = list((tmp_path / "data" / "generated").glob("*/listops-1000/basic_train.tsv"))
    assert len(generated) == 1
    mtime = generated[0].stat().st_mtime_ns
    run(cfg, tmp_path / "run2")
    assert generated[0].stat().st_mtime_ns == mtime


def _train(args: list[str], tmp_path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_multirun_writes_one_record_per_job(tmp_path):
    overrides = [o for o in tiny_run_overrides(tmp_path) if not o.startswith("attn=")]
    _train(["-m", "attn=lot,softmax", *overrides], tmp_path)
    records = sorted((tmp_path / "outputs" / "multirun").rglob("results.json"))
    assert len(records) == 2
    assert sorted(json.loads(p.read_text())["attention"] for p in records) == ["lot", "softmax"]


def test_joblib_launcher_runs_jobs_in_parallel_with_their_own_records(tmp_path):
    overrides = [o for o in tiny_run_overrides(tmp_path) if not o.startswith("attn=")]
    result = _train(["-m", "attn=linear,softmax", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2", *overrides], tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    records = [json.loads(p.read_text())
               for p in (tmp_path / "outputs" / "multirun").rglob("results.json")]
    assert sorted(r["attention"] for r in records) == ["linear", "softmax"]
    assert all(r["status"] == "completed" for r in records)
    # each job's own peak (the worker's high-water mark is reset at the start of a run)
    assert all(r["memory"]["kind"] == "cpu_peak_rss" for r in records)


def test_main_command_prints_summary(tmp_path):
    overrides = [o for o in tiny_run_overrides(tmp_path, attn="lot") if not o.startswith("callbacks")]
    result = _train(overrides, tmp_path)
    assert "test accuracy" in result.stdout and "results record:" in result.stdout
    assert "majority class (test)" in result.stdout
    records = list((tmp_path / "outputs" / "runs").rglob("results.json"))
    assert len(records) == 1


def test_wandb_offline_logs_metrics(tmp_path, monkeypatch):
    cfg = compose_train(tiny_run_overrides(tmp_path) + ["logger=wandb"])
    monkeypatch.setenv("WANDB_SILENT", "true")
    record = run(cfg, tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected one offline wandb run under the run directory"
    data = list(runs[0].glob("run-*.wandb"))
    assert data and data[0].stat().st_size > 0
    # wandb-core writes the transaction log in its own process and may still be flushing it
    # when finish() returns on a loaded machine: give it a few seconds.
    keys: set[str] = set()
    for _ in range(40):
        keys = read_wandb_history_keys(data[0])
        if {"train/loss", "val/acc", "test/acc"} <= keys:
            break
        time.sleep(0.25)
    assert {"train/loss", "val/acc", "test/acc"} <= keys
    assert record.metrics.test_acc is not None
