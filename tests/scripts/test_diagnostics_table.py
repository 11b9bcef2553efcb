"""The attention diagnostics table (lra.tables.diagnostics) and make_tables writing it."""

from __future__ import annotations

import csv

import pytest

from lra.results import write_record
from lra.tables import DIAGNOSTICS_CSV_FIELDS, diagnostics_table, render_csv, render_markdown
from lra.tables.diagnostics import DIAGNOSTIC_COLUMNS
from scripts.make_tables import main as make_tables
from tests.scripts.test_make_tables import record


def layer(number: int, gini: float, entropy: float) -> dict:
    values = {metric: 0.5 for metric, _, _ in DIAGNOSTIC_COLUMNS}
    return {"layer": number, **values, "column_mass_gini": gini, "row_entropy_normalized": entropy}


def with_diagnostics(task, attn, seed, layers) -> dict:
    raw = record(task, attn, seed, 0.4)
    raw["diagnostics"] = {"split": "val", "indices": [0, 1, 2, 3], "tokens": 90,
                          "checkpoint": "x.ckpt", "layers": layers, "heads": []}
    return raw


def records() -> list[dict]:
    return [
        with_diagnostics("listops", "softmax", 0, [layer(1, 0.30, 0.8), layer(2, 0.50, 0.6)]),
        with_diagnostics("listops", "lot", 0, [layer(1, 0.01, 0.9), layer(2, 0.02, 0.7)]),
        with_diagnostics("listops", "lot", 1, [layer(1, 0.03, 0.7), layer(2, 0.04, 0.5)]),
        record("listops", "sinkhorn", 0, 0.4),  # trained without the callback
        {**record("text", "lot", 0, None), "status": "failed", "error": "boom"},
    ]


def test_rows_per_task_backend_and_layer_mean_over_seeds():
    table = diagnostics_table(records())
    assert [[c.text for c in row[:3]] for row in table.rows] == [
        ["ListOps", "LOT", "1"], ["ListOps", "LOT", "2"],
        ["ListOps", "Softmax", "1"], ["ListOps", "Softmax", "2"]]
    gini, entropy = table.columns.index("Column-mass Gini"), table.columns.index("Row entropy / ln n")
    assert [row[gini].text for row in table.rows] == ["0.020", "0.030", "0.300", "0.500"]
    assert [row[entropy].text for row in table.rows] == ["0.800", "0.600", "0.800", "0.600"]
    assert [row[-1].text for row in table.rows] == ["2", "2", "1", "1"]
    notes = " ".join(table.notes)
    assert "Without diagnostics" in notes and "listops/sinkhorn seed 0" in notes
    assert "text/lot seed 0" in notes and "boom" in notes
    rows = list(csv.DictReader(render_csv(table.csv_rows, DIAGNOSTICS_CSV_FIELDS).splitlines()))
    assert rows[0]["column_mass_gini"] == "0.02" and rows[0]["seeds"] == "0;1"
    assert rows[0]["examples"] == "4" and rows[0]["tokens"] == "90"
    assert "| ListOps | LOT | 1 |" in render_markdown(table)


def test_make_tables_writes_the_diagnostics_table_only_when_records_have_them(tmp_path, capsys):
    with_diag, without = tmp_path / "with", tmp_path / "without"
    for i, raw in enumerate(records()):
        write_record(with_diag / str(i), raw)
    write_record(without / "0", record("listops", "lot", 0, 0.4))
    assert make_tables([str(with_diag), "--out", str(tmp_path / "out1")]) == 0
    assert {p.name for p in (tmp_path / "out1").glob("lra_diagnostics.*")} == {
        "lra_diagnostics.md", "lra_diagnostics.tex", "lra_diagnostics.csv"}
    assert make_tables([str(without), "--out", str(tmp_path / "out2")]) == 0
    assert not list((tmp_path / "out2").glob("lra_diagnostics.*"))
    assert (tmp_path / "out2" / "lra_accuracy.md").is_file()


@pytest.mark.parametrize("diagnostics", [None, {}, {"layers": []}, {"layers": ["x"]}])
def test_records_without_usable_diagnostics_make_no_rows(diagnostics):
    raw = {**record("listops", "lot", 0, 0.4), "diagnostics": diagnostics}
    assert diagnostics_table([raw]).rows == []
