"""scripts/reproduce.py end to end: a tiny set trained for real by train.py with 2 jobs, the
report and CSV checked against the runs' own records; bad input stops with exit code 2."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from scripts.reproduce import main

TINY = ["experiment=quick", "task.data.generate.train=32", "task.data.generate.val=16",
        "task.data.generate.test=16", "task.batch_size=8", "trainer.limit_test_batches=2"]


def test_tiny_set_end_to_end_with_two_jobs(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    code = main(["--cells", "listops/softmax", "--seeds", "0,1", "--jobs", "2", "--max-steps", "4",
                 "--out", str(out), "--runs-dir", str(runs), f"paths.data_dir={tmp_path / 'data'}", *TINY])
    assert code == 0, capsys.readouterr()
    records = [json.loads(p.read_text()) for p in sorted(runs.glob("*/results.json"))]
    assert [(r["seed"], r["status"], r["steps"]) for r in records] == [(0, "completed", 4), (1, "completed", 4)]
    assert all(r["schedule"]["shortened"] and r["schedule"]["paper_max_steps"] == 50000 for r in records)
    accs = [100 * r["metrics"]["test_acc"] for r in records]
    row, = csv.DictReader((out / "reproduction.csv").open())
    assert (row["task"], row["backend"], row["n"], row["seeds"]) == ("listops", "softmax", "2", "0;1")
    assert float(row["mean"]) == pytest.approx(statistics.fmean(accs), abs=0.005)
    assert float(row["std"]) == pytest.approx(statistics.stdev(accs), abs=0.005)
    assert row["verdict"] == "shortened: not comparable" and row["reference"] == "38.37"
    md = (out / "reproduction.md").read_text()
    assert "Shortened schedule" in md and "4 of 50000" in md and "--max-steps 4" in md
    assert (out / "reproduction_curves.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "reproduction" / "runs").iterdir()) == \
        ["listops_softmax_s0", "listops_softmax_s1"]
    assert "‡" in (out / "reproduction_accuracy.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--set", "nope"], "unknown set 'nope'"),
    (["--cells", "listops/nope"], "unknown backend 'nope'"),
    (["--tolerance", "-1"], "--tolerance -1.0"),
    (["--budget-minutes", "0"], "--budget-minutes 0.0"),
    (["--set", "all"], "no data for text"),
])
def test_bad_input_exits_2_with_one_message_before_anything_runs(tmp_path, capsys, args, message):
    code = main([*args, "--runs-dir", str(tmp_path / "runs"), f"paths.data_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err
    assert not (tmp_path / "runs").exists()
