"""The reproduction: plans and their checks, verdicts and statistics on known records, the
report files, failed runs, and the shortened-schedule marks in records and tables."""

from __future__ import annotations

import csv
import io
import statistics

import pytest

from lra.record import DataInfo, Metrics, RunRecord, Schedule
from lra.reproduce import ReproduceError, make_plan, write_outputs
from lra.reproduce.launch import run_all
from lra.reproduce.plan import Cell, RunSpec, time_limit
from lra.reproduce.report import SHORTENED, cell_reports
from lra.tables import accuracy_table

FULL, SHORT = 50000, 600


def record(task="listops", attn="softmax", seed=0, acc=0.38, *, steps=FULL, source="official",
           status="completed", error=None, planned=None) -> RunRecord:
    """A finished (or failed) run as the runner records it, at `steps` of the paper's 50000
    (of `planned` max steps when a time limit stopped it)."""
    if status != "completed":
        return RunRecord(task=task, attention=attn, seed=seed, status=status, error=error)
    return RunRecord(task=task, attention=attn, seed=seed, steps=steps,
                     data=DataInfo(source=source, sizes={"train": 96000, "val": 2000, "test": 2000}),
                     metrics=Metrics(test_acc=acc, val_acc=acc, majority_test_acc=0.17),
                     schedule=Schedule.of_run(steps=steps, max_steps=planned or steps,
                                              paper_max_steps=FULL),
                     device={"type": "cpu", "name": "x86_64", "threads": 1}, wall_time_s=60.0)


def one_cell(records, tolerance=1.0, cell=("listops", "softmax")):
    return cell_reports(records, [cell], tolerance)[0]


def test_mean_std_difference_and_verdict_from_known_records():
    accs = [0.36, 0.38, 0.40]
    cell = one_cell([record(seed=s, acc=a) for s, a in enumerate(accs)])
    assert cell.mean == pytest.approx(38.0) and cell.std == pytest.approx(2.0)
    assert cell.std == pytest.approx(statistics.stdev([100 * a for a in accs]))
    assert cell.reference == ("Skyformer", 38.37)  # the setup this suite follows comes first
    assert cell.published[1] == ("LRA", 36.37)
    assert cell.difference == pytest.approx(38.0 - 38.37)
    assert cell.verdict == "reproduces"
    assert one_cell([record(seed=s, acc=a) for s, a in enumerate(accs)], tolerance=0.3).verdict \
        == "does not reproduce"


def test_shortened_cell_is_never_compared():
    cell = one_cell([record(seed=s, acc=0.3837, steps=SHORT) for s in range(2)], tolerance=50)
    assert cell.shortened and cell.verdict == SHORTENED and cell.difference is None


def test_failed_partial_generated_and_unpublished_cells():
    failed = one_cell([record(status="failed", error="ConfigError: bad")])
    assert failed.verdict == "failed" and failed.mean is None and failed.failed
    partial = one_cell([record(seed=0, acc=0.38), record(seed=1, status="failed", error="boom")])
    assert len(partial.runs) == 1 and partial.std is None and partial.verdict == "reproduces"
    assert "boom" in partial.failed[0][1]
    generated = one_cell([record(acc=0.38, source="generated")])
    assert generated.verdict == "reproduces (on generated data)"
    unpublished = one_cell([record(attn="lot")], cell=("listops", "lot"))
    assert unpublished.verdict == "no published number" and unpublished.difference is None


def _plan(tmp_path, **kw):
    args = dict(tolerance=2.0, jobs=2, overrides=[f"paths.data_dir={tmp_path}"])
    return make_plan(**{**args, **kw})


def test_report_files_from_known_records(tmp_path):
    plan = _plan(tmp_path, cells="listops/softmax,listops/lot,pathfinder/softmax", seeds="0,1",
                 overrides=[f"paths.data_dir={tmp_path}", "pathfinder:task.data.generate={n: 40, seed: 0}"])
    records = [record(seed=0, acc=0.36), record(seed=1, acc=0.40),
               record(attn="lot", seed=0, acc=0.2, steps=SHORT, planned=1000),
               record(attn="lot", seed=1, acc=0.3, steps=SHORT, planned=1000),
               record(task="pathfinder", seed=0, status="failed", error="RuntimeError: out of memory")]
    write_outputs(plan, records, out=tmp_path / "out", command="reproduce", started="now", wall_time_s=90)
    rows = {(r["task"], r["backend"]): r for r in
            csv.DictReader(io.StringIO((tmp_path / "out" / "reproduction.csv").read_text()))}
    soft, lot, pf = rows["listops", "softmax"], rows["listops", "lot"], rows["pathfinder", "softmax"]
    assert (soft["n"], soft["mean"], soft["verdict"], soft["shortened"]) == ("2", "38.0", "reproduces", "0")
    assert float(soft["std"]) == pytest.approx(2.83, abs=0.01) and soft["difference"] == "-0.37"
    assert (lot["mean"], lot["verdict"], lot["shortened"], lot["steps"]) == ("25.0", SHORTENED, "1", "600")
    assert pf["status"] == "failed" and "out of memory" in pf["errors"]
    md = (tmp_path / "out" / "reproduction.md").read_text()
    assert "Shortened schedule" in md and "listops/lot 600 of 1000 planned steps (stopped by the time limit; paper 50000)" in md
    assert "1.5 min" in md
    assert "Failed: pathfinder/softmax seed 0: status 'failed': RuntimeError: out of memory" in md
    assert "25.00 ± 7.07 (n=2)‡" in md and "[Skyformer]" in md
    assert "Overrides for every pathfinder run (given as pathfinder:key=value): `task.data.generate={n: 40" in md
    assert f"Extra overrides for every run: `paths.data_dir={tmp_path}`." in md
    assert "‡" in (tmp_path / "out" / "reproduction_accuracy.md").read_text()


def test_tables_mark_shortened_cells():
    table = accuracy_table([record(attn="lot", steps=SHORT, source="generated"), record()])
    assert table.cell("LOT", "ListOps").mark == "†‡"
    assert table.cell("Softmax", "ListOps").mark == ""
    assert any(note.startswith("‡") for note in table.notes)


def test_schedule_is_recorded_and_old_records_still_read():
    raw = record(steps=SHORT).to_dict()
    assert raw["schedule"]["shortened"] is True and raw["schedule"]["paper_max_steps"] == FULL
    assert RunRecord.from_dict(raw).schedule == Schedule(max_steps=SHORT, paper_max_steps=FULL,
                                                         shortened=True)
    del raw["schedule"]
    assert RunRecord.from_dict(raw).schedule is None


def test_plan_of_the_default_set_with_a_shortened_schedule(tmp_path):
    plan = _plan(tmp_path, max_steps="600", seeds="0")
    assert [c.name for c in plan.cells] == ["listops/lot", "listops/softmax", "pathfinder/lot",
                                            "pathfinder/softmax"]
    listops, pathfinder = plan.runs[0].overrides, plan.runs[2].overrides
    assert {"task.max_steps=600", "task.warmup_steps=60", "task.eval_every=60", "seed=0"} <= set(listops)
    assert "task.warmup_steps=50" in pathfinder and "task.data.generate={n: 200000, seed: 0}" in pathfinder
    assert listops[-2] == f"paths.data_dir={tmp_path}"  # the user's overrides come last and win
    assert any("generated" in note for note in plan.data_notes)


@pytest.mark.parametrize("kw, message", [
    (dict(set_name="nope"), "unknown set 'nope'; sets: default, all"),
    (dict(cells="listops/lott"), "unknown backend 'lott'"),
    (dict(cells="lisops/lot"), "unknown task 'lisops'"),
    (dict(cells="listops"), "is not TASK/BACKEND"),
    (dict(tolerance=0.0), "--tolerance 0.0: give a positive number"),
    (dict(budget_minutes=-5.0), "--budget-minutes -5.0"),
    (dict(budget_minutes=1.0), "leave 8 s of training per run"),
    (dict(seeds="a,b"), "--seeds 'a,b'"),
    (dict(max_steps="0"), "give at least 1 step"),
    (dict(max_steps="listop=5"), "unknown task 'listop'"),
    (dict(set_name="all"), "no data for text, retrieval, image, pathx"),
    (dict(cells="listops/lot", overrides=["task.nope=1"]), "do not compose"),
    (dict(cells="listops/lot", overrides=["pathfindr:task.max_len=5"]), "unknown task 'pathfindr' before ':'"),
])
def test_bad_requests_fail_before_anything_runs(tmp_path, kw, message):
    with pytest.raises(ReproduceError) as err:
        _plan(tmp_path, **kw)
    assert message in str(err.value)


def test_max_steps_per_task(tmp_path):
    plan = _plan(tmp_path, max_steps="pathfinder=100", seeds="0")
    assert plan.max_steps == {"pathfinder": 100}
    assert not any(o.startswith("task.max_steps") for o in plan.runs[0].overrides)  # ListOps: paper
    assert {"task.max_steps=100", "task.warmup_steps=8", "task.eval_every=10"} <= set(plan.runs[2].overrides)


def test_task_prefixed_overrides_apply_to_that_task_only(tmp_path):
    plan = _plan(tmp_path, seeds="0", overrides=[f"paths.data_dir={tmp_path}",
                                                 "pathfinder:task.data.generate={n: 40, seed: 1}",
                                                 "listops:task.eval_every=7"])
    listops, pathfinder = plan.runs[0].overrides, plan.runs[2].overrides
    assert "task.eval_every=7" in listops and not any("generate" in o for o in listops)
    assert "task.data.generate={n: 40, seed: 1}" in pathfinder  # replaces the set's 200000 images
    assert not any("200000" in o or "eval_every=7" in o for o in pathfinder)
    assert plan.task_overrides["pathfinder"] == ["task.data.generate={n: 40, seed: 1}"]  # as reported
    assert plan.given_tasks == ["pathfinder", "listops"] and plan.extra_overrides == [f"paths.data_dir={tmp_path}"]
    assert any("{'n': 40, 'seed': 1}" in note for note in plan.data_notes)


def test_budget_becomes_a_per_run_time_limit():
    assert time_limit(None, 8, 2) == []
    assert time_limit(40, 8, 2) == ["trainer.max_time=00:00:08:30"]  # 40 min x 0.85 / 4 waves


def test_a_crashing_run_gets_a_failed_record_and_the_others_go_on(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("import sys\nprint('starting')\nprint('RuntimeError: boom', file=sys.stderr)\n"
                      "sys.exit(1)\n")
    specs = [RunSpec(Cell("listops", "softmax"), seed, ("seed=0",)) for seed in (0, 1)]
    lines = []
    records = run_all(specs, tmp_path / "runs", jobs=2, report=lines.append, script=script)
    assert [r.status for r in records] == ["failed", "failed"] and len(lines) == 2
    assert records[0].error == "exit code 1: RuntimeError: boom"
    assert (tmp_path / "runs" / "listops_softmax_s1" / "results.json").is_file()
