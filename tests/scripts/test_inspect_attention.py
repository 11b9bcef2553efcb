"""scripts/inspect_attention.py and lra.diagnostics.inspect: maps and diagnostics of trained
and untrained models, and the one-paragraph errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from lotformer.attention import available_attentions
from lra.diagnostics import inspect as inspect_module
from lra.diagnostics.probe import METRICS
from lra.runner import build_datamodule, run
from scripts.inspect_attention import main
from tests.helpers import compose_train, short_run_overrides

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step LOT run on short generated ListOps: its run directory."""
    tmp = tmp_path_factory.mktemp("inspect")
    record = run(compose_train(short_run_overrides(tmp, "lot")), tmp / "run")
    return tmp / "run", record


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_dir_beside_an_untrained_model(trained_run, tmp_path, capsys):
    run_dir, record = trained_run
    out = tmp_path / "out"
    code, stdout, err = run_main(capsys, run_dir, "--init", "--task", "listops", "--attn",
                                 "softmax", "--examples", 3, "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "diagnostics.csv", "diagnostics.json", "example0.png", "example1.png", "example2.png",
        "summary.png"]
    assert all((out / f"example{i}.png").read_bytes()[:8] == PNG for i in range(3))
    rows = list(csv.DictReader((out / "diagnostics.csv").open()))
    assert [(r["run"], r["layer"], r["head"]) for r in rows] == [
        (run, layer, head) for run in ("LOT", "Softmax") for layer in "12" for head in "12"]
    summary = json.loads((out / "diagnostics.json").read_text())
    assert summary["examples"]["indices"] == [0, 1, 2]
    lot, softmax = summary["runs"]
    assert lot["source"] == record.best_checkpoint and softmax["source"] == "untrained (seed 0)"
    for run in (lot, softmax):  # both row-stochastic; layer rows = mean of their head rows
        assert all(head["row_sum_deviation"] < 1e-4 for head in run["heads"])
        for layer in run["layers"]:
            heads = [h for h in run["heads"] if h["layer"] == layer["layer"]]
            for metric in METRICS:
                assert layer[metric] == pytest.approx(sum(h[metric] for h in heads) / 2)
    # LOT balances the columns, softmax does not (column sums of a softmax map vary)
    assert max(h["column_sum_deviation"] for h in lot["heads"]) < 0.05
    assert min(h["column_sum_deviation"] for h in softmax["heads"]) > 0.05


def test_the_run_dir_and_its_checkpoint_give_the_same_numbers(trained_run, tmp_path):
    run_dir, record = trained_run
    by_dir = inspect_module.load_subject(run_dir)
    by_file = inspect_module.load_subject(record.best_checkpoint)
    for a, b in zip(by_dir.model.state_dict().values(), by_file.model.state_dict().values()):
        assert torch.equal(a, b)
    saved = torch.load(record.best_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in by_dir.model.state_dict().items())


def test_a_record_from_before_the_datamodule_group_still_gives_its_data(trained_run, tmp_path):
    run_dir, record = trained_run
    old = tmp_path / "old"
    old.mkdir()
    raw = json.loads((run_dir / "results.json").read_text())
    del raw["config"]["datamodule"]
    (old / "results.json").write_text(json.dumps(raw))
    cfg = inspect_module.run_config(old)
    split = build_datamodule(cfg).load().splits["test"]
    assert len(split) == 8 and cfg.datamodule.data_dir == raw["config"]["paths"]["data_dir"]


def error_of(capsys, *args) -> str:
    code, stdout, err = run_main(capsys, *args)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_checkpoint_of_another_task(trained_run, tmp_path, capsys):
    run_dir, record = trained_run
    err = error_of(capsys, record.best_checkpoint, "--task", "text")
    assert "is of task listops" in err and "not text" in err
    alone = tmp_path / "best.ckpt"  # outside its run directory: only its weights say the task
    shutil.copy(record.best_checkpoint, alone)
    err = error_of(capsys, alone, "--task", "text")
    assert "is of another task than text" in err and "'vocab_size': 32" in err
    assert "task and data are unknown" in error_of(capsys, alone)


def test_run_dir_without_checkpoint(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "results.json", bare / "results.json")
    record = json.loads((bare / "results.json").read_text())
    record["best_checkpoint"] = None
    (bare / "results.json").write_text(json.dumps(record))
    assert "has no checkpoint" in error_of(capsys, bare)


def test_neither_run_dir_nor_checkpoint(tmp_path, capsys):
    assert "neither a run directory" in error_of(capsys, tmp_path)
    assert "neither a run directory" in error_of(capsys, tmp_path / "missing")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    assert "unreadable or corrupt" in error_of(capsys, text)


def test_examples_longer_than_the_dense_map_limit(trained_run, tmp_path, capsys, monkeypatch):
    run_dir, _ = trained_run
    monkeypatch.setattr(inspect_module, "DENSE_MAP_MAX_LEN", 8)
    err = error_of(capsys, run_dir, "--examples", 2, "--out", tmp_path)
    assert "DENSE_MAP_MAX_LEN = 8" in err and "--max-len" in err
    assert "between 1 and" in error_of(capsys, run_dir, "--max-len", 9, "--out", tmp_path)
    code, _, err = run_main(capsys, run_dir, "--examples", 2, "--max-len", 8, "--figures", 1,
                            "--out", tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["example0.png", "summary.png"]
    summary = json.loads((tmp_path / "diagnostics.json").read_text())
    assert summary["examples"]["tokens"] == [8, 8]


def test_init_errors_name_the_valid_choices(capsys):
    err = error_of(capsys, "--init", "--task", "listops", "--attn", "lotformer")
    assert "unknown attention backend 'lotformer'" in err
    assert all(name in err for name in available_attentions())
    assert "valid tasks" in error_of(capsys, "--init", "--task", "lisops", "--attn", "lot")
    assert "--init needs --task" in error_of(capsys, "--init", "--attn", "lot")
    assert "nothing to inspect" in error_of(capsys)


def test_runs_of_different_tasks_are_refused(trained_run, capsys):
    run_dir, _ = trained_run
    subjects = [inspect_module.load_subject(run_dir),
                inspect_module.init_subject("text", "softmax", ["task.max_len=64"])]
    with pytest.raises(inspect_module.InspectError, match="different tasks"):
        inspect_module.inspect(subjects, (torch.ones(1, 4, dtype=torch.long),
                                          torch.ones(1, 4, dtype=torch.bool)))
