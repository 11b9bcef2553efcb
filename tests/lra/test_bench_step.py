"""The whole-step benchmark (lra/bench/step*.py, loader.py; CLI scripts/bench_step.py): real
training steps on tiny shapes, timeouts as rows, the compile flag, loader timing, the tables."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lra.bench.loader import measure_loader
from lra.bench.presets import BenchError
from lra.bench.step import StepProbe, compose_config, run_step_cell, step_batches
from lra.bench.step_report import README_END, README_START, render_step_section, write_summary
from lra.bench.step_run import LOADER_COLUMNS, STEP_COLUMNS, StepRequest, run_step_benchmark
from lra.bench.synthetic import synthetic_split
from lra.bench.worker import WorkerHooks
from lra.errors import ConfigError
from lra.runner import build_module
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "bench_step.py"
TINY = ["task.max_len=64", "task.batch_size=2", "trainer.precision=32-true"]  # retrieval LOT r=64


def tiny_spec(**extra) -> dict:
    return {"task": "listops", "backend": "softmax", "compile": "off", "device": "cpu",
            "threads": 1, "warmup": 1, "steps": 1, "timeout_s": None, "overrides": TINY, **extra}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two tasks x two backends, each cell and loader in a worker process, as the CLI runs."""
    out = tmp_path_factory.mktemp("step")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tasks", "listops,retrieval", "--backends", "lot,softmax",
         "--device", "cpu", "--threads", "1", "--steps", "2", "--loader-workers", "0",
         "--loader-batches", "3", *(f"--override={o}" for o in TINY),
         "--override=paths.data_dir=" + str(out / "data"), "--out", str(out), "--tag", "test"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    return proc, out


def test_cli_writes_one_row_per_cell_with_positive_rates(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(out / "step_test.csv")
    assert list(df.columns) == STEP_COLUMNS
    assert sorted(zip(df["task"], df["backend"])) == [
        ("listops", "lot"), ("listops", "softmax"), ("retrieval", "lot"), ("retrieval", "softmax")]
    assert (df["status"] == "ok").all(), df[["task", "backend", "error"]]
    assert (df[["steps_per_s", "samples_per_s", "tokens_per_s", "step_ms", "peak_mb"]] > 0).all().all()
    assert (df["measured_steps"] == 2).all() and (df["extra_mb"] >= 0).all()
    assert (df["compile"] == "off").all() and (df["precision"] == "32-true").all()
    assert df.set_index("task")["docs"].to_dict() == {"listops": 1, "retrieval": 2}
    assert (df["batch"] == 2).all() and (df["max_len"] == 64).all()
    assert json.loads(df.loc[df["backend"] == "lot", "options"].iloc[0])["rank"] == 4  # task_attn
    assert (df["loader_over_step"] > 0).all()
    assert (out / "step_test.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_times_the_real_loader(tiny_run):
    _, out = tiny_run
    loader = pd.read_csv(out / "step_test_loader.csv")
    assert list(loader.columns) == LOADER_COLUMNS
    assert (loader["status"] == "ok").all() and (loader["batches_per_s"] > 0).all()
    # ListOps is made by its generator (in a temporary folder); Retrieval has no generator.
    assert loader.set_index("task")["data"].to_dict() == {"listops": "generated",
                                                          "retrieval": "synthetic"}


def test_summary_renders_tables_and_writes_the_readme_section(tiny_run, tmp_path):
    _, out = tiny_run
    text = render_step_section(out / "step_test.csv")
    assert "#### Training steps per second" in text and "#### Peak memory (MiB)" in text
    assert "| Backend | ListOps | Retrieval |" in text and "| LOT " in text
    assert "#### Data loader against the step" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\nrest\n")
    write_summary(out / "step_test.csv", readme)
    written = readme.read_text()
    assert written.startswith("intro\n") and written.endswith(f"{README_END}\nrest\n")
    assert "old" not in written and text in written
    readme.write_text("no markers\n")
    with pytest.raises(BenchError, match="markers"):
        write_summary(out / "step_test.csv", readme)


def test_step_table_shows_gaps_and_marks_best():
    rows = [{"task": "text", "backend": "softmax", "compile": "off", "status": "timeout"},
            {"task": "text", "backend": "linear", "compile": "off", "status": "ok",
             "steps_per_s": 2.0, "peak_mb": 100.0},
            {"task": "listops", "backend": "linear", "compile": "off", "status": "ok",
             "steps_per_s": 1.0, "peak_mb": 50.0},
            {"task": "listops", "backend": "softmax", "compile": "off", "status": "ok",
             "steps_per_s": 4.0, "peak_mb": 80.0}]
    from lra.bench.step_report import step_tables

    speed, memory = step_tables(pd.DataFrame(rows))
    assert speed.columns == ["Backend", "ListOps", "Text"]  # the LRA task order
    assert speed.cell("Softmax", "Text").text == "timeout"
    assert speed.cell("Softmax", "ListOps").best and not speed.cell("Linear", "ListOps").best
    assert speed.cell("Linear", "Text").text == "2" and speed.cell("Linear", "Text").best
    assert memory.cell("Linear", "ListOps").best and memory.cell("Linear", "ListOps").text == "50"


def test_a_cell_over_its_time_limit_is_a_timeout_row(tmp_path):
    """1 ms: the worker is killed, or stops itself after the warm-up step; a row either way."""
    req = StepRequest(tasks="listops", backends="softmax", overrides=TINY, device="cpu",
                      threads=1, timeout=0.001, loader_workers="", out=tmp_path, tag="slow")
    assert run_step_benchmark(req) == 0
    row = pd.read_csv(tmp_path / "step_slow.csv").iloc[0]
    assert row["status"] == "timeout" and "0.001 s" in row["error"]
    assert pd.isna(row["steps_per_s"])


def _probe_after(step_s: float, since_ready_s: float, done_before: int, timeout_s: float = 10.0):
    """A StepProbe that has seen ``done_before`` batches, fed one more that took ``step_s``
    seconds, ``since_ready_s`` after the ready mark; returns (probe, stub trainer)."""
    probe = StepProbe({"warmup": 1, "steps": 5, "compile": "off", "timeout_s": timeout_s},
                      WorkerHooks())
    probe.batches = [(1.0, 2, 64)] * done_before
    probe.ready_at = time.monotonic() - since_ready_s
    trainer = SimpleNamespace(should_stop=False,
                              strategy=SimpleNamespace(root_device=torch.device("cpu")))
    probe._start = time.perf_counter() - step_s
    batch = (None, torch.ones(2, 32, dtype=torch.bool), torch.zeros(2, dtype=torch.long), None)
    probe.on_train_batch_end(trainer, None, None, batch, done_before)
    return probe, trainer


def test_probe_stops_before_a_step_would_pass_the_limit():
    probe, trainer = _probe_after(step_s=2.0, since_ready_s=3.0, done_before=1)
    assert not trainer.should_stop and probe.fields()["measured_steps"] == 1
    probe, trainer = _probe_after(step_s=4.0, since_ready_s=7.0, done_before=1)
    assert trainer.should_stop and not probe.stopped_early  # measured: an ok row
    assert probe.fields()["steps_per_s"] == pytest.approx(0.25, rel=0.01)


def test_probe_stops_once_timed_steps_took_a_quarter_of_the_limit():
    probe, trainer = _probe_after(step_s=3.0, since_ready_s=3.0, done_before=1)
    assert trainer.should_stop and not probe.stopped_early


def test_probe_warmup_that_leaves_no_room_is_a_timeout():
    probe, trainer = _probe_after(step_s=6.0, since_ready_s=6.0, done_before=0)
    assert trainer.should_stop and "warm-up step took 6.0 s" in probe.stopped_early
    assert probe.window is not None and probe.fields()["measured_steps"] == 0


def test_compile_flag_reaches_the_model_and_trains():
    cfg = compose_config("listops", "softmax", "eager", TINY)
    assert cfg.trainer.compile == "eager"
    module = build_module(cfg)
    assert module.encoder._compiled_call_impl is not None  # compiled in place
    assert "encoder.token_embedding.weight" in module.state_dict()  # names unchanged
    assert build_module(compose_config("listops", "softmax", "off", TINY)).encoder \
        ._compiled_call_impl is None
    result = run_step_cell(tiny_spec(compile="eager"))
    assert result["status"] == "ok" and result["steps_per_s"] > 0


def test_bad_compile_value_says_what_to_set():
    cfg = compose_config("listops", "softmax", "off", [*TINY, "trainer.compile=3"])
    with pytest.raises(ConfigError, match="trainer.compile=false"):
        build_module(cfg)


def test_loader_measurement_returns_positive_rates(tmp_path):
    spec = {"task": "text", "workers": 0, "pin_memory": False, "batches": 3, "device": "cpu",
            "threads": 1, "overrides": [*TINY, f"paths.data_dir={tmp_path}"]}
    # In a fresh process, as the benchmark runs it: measure_loader sets the process's torch and
    # numba thread counts, which would change the float results of later tests in this worker.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(measure_loader, spec).result(timeout=300)
    assert result["status"] == "ok" and result["data"] == "synthetic"
    assert result["batches_per_s"] > 0 and result["samples_per_s"] > 0


def test_synthetic_batches_have_the_task_shape_and_padding():
    cfg = compose_config("retrieval", "softmax", overrides=["task.max_len=40", "task.batch_size=3"])
    batches = step_batches(cfg.task, 2)
    ids, mask, labels, _ = batches[0]
    assert ids.shape == (3, 2, 40) and mask.shape == (3, 2, 40)  # (B, 2 documents, L)
    assert bool(mask[0, 0].all())  # a full-length document in every batch
    assert int(ids.max()) < cfg.task.vocab_size and int(ids[mask].min()) >= 1
    assert not bool(ids[~mask].any()) and set(labels.tolist()) <= {0, 1}
    pixels = synthetic_split("image", n=4, max_len=16, vocab_size=257, num_classes=10,
                             dual=False, batch_size=2)
    assert (pixels.ids > 0).all() and pixels.ids.dtype == np.int16  # pixel tasks: no padding


@pytest.mark.parametrize("field, value, message", [
    ("tasks", "listopz", "valid: listops, text, retrieval, image, pathfinder, pathx"),
    ("backends", "nope", "valid names"),
    ("compile", "fast", "valid: off, inductor"),
    ("loader_workers", "two", "e.g. 0,2"),
    ("overrides", ["task.nokey=1"], "--override"),
])
def test_bad_input_fails_before_running_with_the_valid_names(field, value, message, tmp_path):
    with pytest.raises(BenchError, match=message):
        run_step_benchmark(StepRequest(**{field: value}, device="cpu", out=tmp_path,
                                       in_process=True))
    assert not list(tmp_path.iterdir())  # nothing ran
