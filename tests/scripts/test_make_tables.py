"""Paper tables from results records: lra.tables (aggregation, rendering) and the
scripts/make_tables.py command line, on synthetic records written to tmp dirs."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lotformer.attention import registry
from lra.record import RunRecord
from lra.results import write_record
from lra.tables import (ACCURACY_CSV_FIELDS, PUBLISHED_ROWS, PUBLISHED_SOURCES, STANDARD_TASKS, Cell,
                        accuracy_table, efficiency_table, filter_by_tag, format_mean_std,
                        format_ratio, load_records, mean_std, render_csv, render_latex,
                        render_markdown)
from tests.conftest import REPO_ROOT

MIB = 2**20
H100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1}
CPU = {"type": "cpu", "name": "x86_64", "count": 1, "threads": 2}


def record(task: str, attn: str, seed: int, acc: float | None, *, source: str = "official",
           status: str = "completed", error: str | None = None, speed: float = 100.0,
           memory_mib: float = 1024, device: dict = H100, created: str = "2026-01-02T00:00:00+00:00",
           tag: str | None = "lra/x") -> dict:
    """A results record as lra.runner writes it (only the fields the tables read, plus a few)."""
    return {
        "task": task, "attention": attn, "attention_options": {}, "seed": seed, "tag": tag,
        "status": status, "error": error, "data": {"source": source, "location": "x"},
        "metrics": {"val_acc": acc, "test_acc": acc, "test_loss": 1.0},
        "throughput": {"train_samples_per_s": speed, "train_tokens_per_s": speed * 100,
                       "measured_steps": 10},
        "memory": {"peak_bytes": int(memory_mib * MIB),
                   "kind": "cuda_max_allocated" if device["type"] == "cuda" else "cpu_max_rss"},
        "device": device, "wall_time_s": 1.0, "steps": 100, "created": created,
    }


# (task, attn, seed, test accuracy): LOT and softmax everywhere, LOT also on Path-X.
LOT_ACCS = {"listops": (0.36, 0.37, 0.38), "text": (0.70, 0.71, 0.72), "retrieval": (0.80, 0.82),
            "image": (0.40,), "pathfinder": (0.65, 0.66, 0.70), "pathx": (0.50,)}
SOFTMAX_ACCS = {"listops": (0.38, 0.40), "text": (0.64, 0.66), "retrieval": (0.79, 0.81),
                "image": (0.42, 0.44), "pathfinder": (0.60, 0.62)}


def sweep_records() -> list[dict]:
    """An incomplete sweep: multiple seeds, a duplicate, generated data, failed runs."""
    records = []
    for attn, accs, speed, memory in (("lot", LOT_ACCS, 300.0, 256),
                                      ("softmax", SOFTMAX_ACCS, 100.0, 1024)):
        for task, values in accs.items():
            for seed, acc in enumerate(values):
                records.append(record(
                    task, attn, seed, acc, memory_mib=memory,
                    speed=250.0 if (task, attn) == ("text", "lot") else speed,
                    device=CPU if (task, attn) == ("image", "lot") else H100))
    # An older duplicate of softmax/listops seed 0: the newer record (0.38) wins.
    records.append(record("listops", "softmax", 0, 0.10, created="2026-01-01T00:00:00+00:00"))
    # Linear: ListOps on generated data; Text failed; Retrieval finished without a test accuracy.
    records.append(record("listops", "linear", 0, 0.20, source="generated", speed=400.0, memory_mib=512))
    # A failed run's record as lra.runner writes it: no metrics, data, throughput or memory.
    records.append({"task": "text", "attention": "linear", "seed": 0, "tag": "lra/x",
                    "status": "failed", "error": "OutOfMemoryError: CUDA out of memory",
                    "device": H100, "created": "2026-01-02T00:00:00+00:00"})
    records.append(record("retrieval", "linear", 0, None))
    return records


def write_sweep(root: Path) -> Path:
    for i, rec in enumerate(sweep_records()):
        write_record(root / "multirun" / f"{i}_{rec['task']}_{rec['attention']}_s{rec['seed']}", rec)
    (root / "corrupt").mkdir(parents=True)
    (root / "corrupt" / "results.json").write_text('{"task": "text", "attention"')  # truncated
    (root / "not_a_record").mkdir()
    (root / "not_a_record" / "results.json").write_text(json.dumps({"attention": "lot"}))
    return root


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return write_sweep(tmp_path / "outputs")


# ---------------------------------------------------------------------------------------------
# Formatting helpers.


def test_mean_std_uses_sample_std_and_formats_like_the_paper():
    mean, std = mean_std([36.0, 37.0, 38.0])
    assert mean == pytest.approx(37.0) and std == pytest.approx(1.0)
    assert mean_std([40.0]) == (40.0, None)
    assert format_mean_std(37.21, 0.44, 3) == "37.2 ± 0.4 (n=3)"
    assert format_mean_std(40.0, None, 1) == "40.0 (n=1)"
    assert format_mean_std(37.216, 0.444, 2, digits=2) == "37.22 ± 0.44 (n=2)"


def test_format_ratio():
    assert format_ratio(2.3) == "2.30x" and format_ratio(0.25) == "0.25x"
    assert format_ratio(12.34) == "12.3x" and format_ratio(None) == "—"


def test_published_rows_come_from_the_data_file_with_their_sources(tmp_path):
    from lra.tables.published import PUBLISHED_FILE, read_published

    assert PUBLISHED_ROWS == read_published(PUBLISHED_FILE)
    assert all(row.citation for row in PUBLISHED_ROWS)
    assert PUBLISHED_SOURCES["LRA"].startswith("Tay et al., Long Range Arena")
    odd = tmp_path / "published.yaml"
    odd.write_text("- {source: X, citation: Y, rows: [{model: M, listop: 1.0}]}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        read_published(odd)


def test_published_rows_match_their_averages_and_sources():
    """A transcription check: each published Avg is the mean of its five cells, except the LRA
    paper's Sinkhorn Transformer row, whose printed Avg (51.39) is not its cells' mean (51.48)."""
    for row in PUBLISHED_ROWS:
        assert row.source in ("LRA", "Skyformer", "LOTFormer")
        if row.avg is not None:
            assert set(row.scores) == set(STANDARD_TASKS)
            mean = statistics.fmean(row.scores.values())
            if (row.source, row.model) == ("LRA", "Sinkhorn Transformer"):
                assert (round(mean, 3), row.avg) == (51.476, 51.39)
            else:
                assert mean == pytest.approx(row.avg, abs=0.006), row
    assert sum(r.source == "LRA" for r in PUBLISHED_ROWS) == 7
    assert sum(r.source == "Skyformer" for r in PUBLISHED_ROWS) == 7
    lotformer = [r for r in PUBLISHED_ROWS if r.source == "LOTFormer"]
    assert len(lotformer) == 1 and lotformer[0].scores == {"text": 71.1}


# ---------------------------------------------------------------------------------------------
# Reading records.


def test_load_records_skips_corrupt_and_malformed(sweep_dir, tmp_path):
    loaded = load_records([sweep_dir, tmp_path / "nowhere"])
    assert len(loaded.records) == len(sweep_records())
    assert all(r.path.endswith("results.json") for r in loaded.records)
    skipped = "\n".join(loaded.skipped)
    assert len(loaded.skipped) == 3, skipped
    assert "corrupt/results.json: unreadable (JSONDecodeError" in skipped
    assert "not_a_record/results.json: malformed record (no 'task' name)" in skipped
    assert "nowhere: no such file or directory" in skipped


def test_filter_by_tag():
    records = [RunRecord.from_dict(r) for r in (
        record("text", "lot", 0, 0.5, tag="lra"), record("text", "lot", 1, 0.5, tag="quick"),
        record("text", "lot", 2, 0.5, tag=None))]
    kept, dropped = filter_by_tag(records, "lra*")
    assert [r.seed for r in kept] == [0] and dropped == 2
    assert filter_by_tag(records, None) == (records, 0)


# ---------------------------------------------------------------------------------------------
# The accuracy table.

EXPECTED_MEASURED_MD = """\
| Backend | ListOps | Text | Retrieval | Image | Pathfinder | Path-X | Avg |
|---|---:|---:|---:|---:|---:|---:|---:|
| LOT | 37.0 ± 1.0 (n=3) | **71.0 ± 1.0 (n=3)** | **81.0 ± 1.4 (n=2)** | 40.0 (n=1) | **67.0 ± 2.6 (n=3)** | 50.0 (n=1) | **59.2** |
| Softmax | **39.0 ± 1.4 (n=2)** | 65.0 ± 1.4 (n=2) | 80.0 ± 1.4 (n=2) | **43.0 ± 1.4 (n=2)** | 61.0 ± 1.4 (n=2) | — | 57.6 |
| Linear | 20.0 (n=1)† | — | — | — | — | — | — |
"""


def test_accuracy_table_exact_markdown():
    table = accuracy_table(sweep_records())
    md = render_markdown(table)
    assert md.startswith("## LRA accuracy (test accuracy, %)\n\n" + EXPECTED_MEASURED_MD)
    # Published block below the measured rows, labelled with its source.
    published = md.split("### Published results\n\n", 1)[1]
    assert published.splitlines()[2] == "| Transformer [LRA] | 36.37 | 64.27 | 57.46 | 42.44 | 71.40 | — | 54.39 |"
    assert "| Skyformer [Skyformer] | 38.69 | 64.70 | 82.06 | 40.77 | 70.73 | — | 59.39 |" in published
    assert "| LOTFormer [LOTFormer] | — | 71.1 | — | — | — | — | — |" in published
    assert md.index("| Linear |") < md.index("### Published results")


def test_accuracy_table_cells_best_marks_and_notes():
    table = accuracy_table(sweep_records())
    assert table.columns == ["Backend", "ListOps", "Text", "Retrieval", "Image", "Pathfinder",
                             "Path-X", "Avg"]
    assert [r[0].text for r in table.rows] == ["LOT", "Softmax", "Linear"]
    # The duplicate (0.10, older) is ignored: softmax ListOps is the mean of 38 and 40.
    assert table.cell("Softmax", "ListOps") == Cell("39.0 ± 1.4 (n=2)", best=True)
    assert table.cell("LOT", "Path-X").best is False  # a lone value is no "best"
    assert table.cell("Linear", "ListOps").mark == "†"
    assert table.cell("Linear", "Text").text == "—" and table.cell("Linear", "Avg").text == "—"
    notes = "\n".join(table.notes)
    assert ("Missing (no finished run): pathx/softmax, text/linear, retrieval/linear, image/linear, "
            "pathfinder/linear, pathx/linear.") in notes
    assert ("Failed runs, not counted: retrieval/linear seed 0 (completed without a test accuracy); "
            "text/linear seed 0 (status 'failed': OutOfMemoryError: CUDA out of memory).") in notes
    assert "Duplicate runs: listops/softmax seed 0: 2 records, used the newest" in notes
    assert "† At least one run of the cell used generated or sample data" in notes
    assert "[LRA] Tay et al." in notes and "[Skyformer] Chen et al." in notes


def test_no_best_among_equal_values():
    records = [record("listops", attn, 0, 0.25) for attn in ("lot", "softmax", "linear")]
    records.append(record("text", "lot", 0, 0.5))
    records.append(record("text", "softmax", 0, 0.5004))  # equal at one decimal: a tie, both bold
    records.append(record("text", "linear", 0, 0.4))
    table = accuracy_table(records, published=False)
    assert not any(row[1].best for row in table.rows)
    assert [row[2].best for row in table.rows] == [True, True, False]
    assert table.cell("Softmax", "Text").text == "50.0 (n=1)"


def test_cells_mixing_settings_are_noted():
    a, b = record("text", "lot", 0, 0.7), record("text", "lot", 1, 0.72)
    b["attention_options"] = {"rank": 16}
    table = accuracy_table([a, b, record("text", "softmax", 0, 0.6)], published=False)
    assert table.cell("LOT", "Text").text == "71.0 ± 1.4 (n=2)"
    assert ("Seeds of these cells ran with different attention options or step counts: text/lot."
            in table.notes)
    assert not any("Seeds of these cells" in n for n in accuracy_table([a]).notes)


def test_accuracy_table_without_pathx_or_published():
    records = [r for r in sweep_records() if r["task"] != "pathx"]
    table = accuracy_table(records, published=False)
    assert "Path-X" not in table.columns and table.extra_rows == []
    assert "### Published" not in render_markdown(table)
    assert not any("Published rows" in n for n in table.notes)
    assert all(row["block"] == "measured" for row in table.csv_rows)


def test_accuracy_table_survives_odd_records():
    odd = record("text", "performer", None, 0.5)
    odd.pop("metrics"), odd.pop("throughput"), odd.pop("device"), odd.pop("data")
    bad_acc = record("image", "performer", 0, 71.0)  # a percentage where a fraction belongs
    table = accuracy_table([odd, bad_acc, record("listops", "performer", 0, float("nan"))])
    assert all(c.text == "—" for c in table.rows[0][1:])
    notes = "\n".join(table.notes)
    assert "image/performer seed 0 (invalid test_acc 71.0)" in notes
    assert "text/performer seed None (completed without a test accuracy)" in notes
    eff = efficiency_table([odd, bad_acc])
    assert [c.text for c in eff.rows[0]][:3] == ["Image", "Performer", "100.0"]


def test_accuracy_latex_and_csv():
    table = accuracy_table(sweep_records())
    tex = render_latex(table)
    assert r"\begin{tabular}{lrrrrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert (r"LOT & 37.0 $\pm$ 1.0 (n=3) & \textbf{71.0 $\pm$ 1.0 (n=3)} & "
            r"\textbf{81.0 $\pm$ 1.4 (n=2)} & 40.0 (n=1) & \textbf{67.0 $\pm$ 2.6 (n=3)} & "
            r"50.0 (n=1) & \textbf{59.2} \\") in tex
    assert r"Linear & 20.0 (n=1)$^\dagger$ & --- & --- & --- & --- & --- & --- \\" in tex
    assert r"\multicolumn{8}{l}{\emph{Published results}} \\" in tex
    assert r"Nystr\"omformer [Skyformer] & 38.51" in tex
    assert tex.index(r"Linear &") < tex.index(r"\multicolumn{8}")

    rows = list(csv.DictReader(io.StringIO(render_csv(table.csv_rows, ACCURACY_CSV_FIELDS))))
    by_key = {(r["block"], r["backend"], r["task"]): r for r in rows}
    softmax_listops = by_key[("measured", "softmax", "listops")]
    assert (softmax_listops["mean"], softmax_listops["std"], softmax_listops["n"],
            softmax_listops["seeds"], softmax_listops["best"]) == ("39.0", "1.4142", "2", "0;1", "1")
    assert by_key[("measured", "lot", "listops")]["best"] == "0"
    lot_avg = by_key[("measured", "lot", "avg")]
    assert (lot_avg["mean"], lot_avg["best"], lot_avg["n"]) == ("59.2", "1", "")
    assert by_key[("measured", "linear", "listops")]["nonofficial_data"] == "1"
    assert by_key[("measured", "linear", "text")]["status"] == "missing"
    published = {(r["source"], r["label"], r["task"]): r for r in rows if r["block"] == "published"}
    transformer = published[("LRA", "Transformer", "text")]
    assert (transformer["backend"], transformer["mean"], transformer["best"]) == ("softmax", "64.27", "0")
    assert published[("Skyformer", "Self-attention", "text")]["backend"] == "softmax"
    assert published[("LOTFormer", "LOTFormer", "text")]["backend"] == "lot"
    assert published[("LOTFormer", "LOTFormer", "text")]["mean"] == "71.1"
    assert published[("LRA", "BigBird", "text")]["backend"] == "bigbird"
    assert published[("LRA", "Sinkhorn Transformer", "text")]["backend"] == ""  # not Sinkformer
    # The published Linformer row shares a name with the measured one but is never "best".
    assert all(r["best"] == "0" for r in rows if r["block"] == "published")


def test_a_registered_backend_appears_with_its_title_and_published_rows(monkeypatch):
    """Titles, row order and published-row ownership come from the backend registry."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_attention("toy")
    class ToyAttention:
        title = "Toy Former"
        published_names = ("Sinkhorn Transformer",)  # a published row no backend owns

    records = [record("text", attn, 0, 0.6) for attn in ("toy", "softmax", "lot", "linear")]
    table = accuracy_table(records)
    assert [row[0].text for row in table.rows] == ["LOT", "Softmax", "Linear", "Toy Former"]
    assert table.cell("Toy Former", "Text").text == "60.0 (n=1)"
    owned = [r for r in table.csv_rows
             if r["block"] == "published" and r["label"] == "Sinkhorn Transformer"]
    assert owned and all(r["backend"] == "toy" for r in owned)
    assert efficiency_table(records).rows[3][1].text == "Toy Former"
    # A backend that is not registered (an old record) keeps its name and comes last.
    assert accuracy_table(records + [record("text", "zzz", 0, 0.5)]).rows[-1][0].text == "zzz"


# ---------------------------------------------------------------------------------------------
# The efficiency table.


def test_efficiency_table_ratios_devices_and_gaps():
    table = efficiency_table(sweep_records())
    assert table.columns == ["Task", "Backend", "Train samples/s", "vs softmax",
                             "Peak memory (MiB)", "vs softmax", "n", "Device"]
    rows = {(r[0].text, r[1].text): [c.text for c in r[2:]] for r in table.rows}
    assert rows[("ListOps", "LOT")] == ["300.0", "3.00x", "256", "0.25x", "3", "NVIDIA H100 80GB HBM3"]
    assert rows[("ListOps", "Softmax")] == ["100.0", "1.00x", "1,024", "1.00x", "2", "NVIDIA H100 80GB HBM3"]
    assert rows[("ListOps", "Linear")] == ["400.0", "4.00x", "512", "0.50x", "1", "NVIDIA H100 80GB HBM3"]
    assert rows[("Text", "LOT")][:2] == ["250.0", "2.50x"]
    # Image/LOT ran on a CPU: its numbers are shown, its ratios are not.
    assert rows[("Image", "LOT")] == ["300.0", "—", "256", "—", "1", "CPU x86_64 (2 threads)"]
    assert rows[("Text", "Linear")] == ["—"] * 6  # failed run
    assert rows[("Path-X", "LOT")][:2] == ["300.0", "—"]  # no softmax on Path-X
    notes = "\n".join(table.notes)
    assert "No ratio (different device or memory measure than softmax): image/lot." in notes
    assert "No ratios for pathx: no finished softmax run." in notes
    assert ("Failed runs, not counted: text/linear seed 0 (status 'failed': OutOfMemoryError: "
            "CUDA out of memory).") in notes
    assert "Devices: CPU x86_64 (2 threads), NVIDIA H100 80GB HBM3." in notes
    assert "cpu_max_rss" in notes and "cuda_max_allocated" in notes
    md = render_markdown(table)
    assert "| ListOps | LOT | 300.0 | 3.00x | 256 | 0.25x | 3 | NVIDIA H100 80GB HBM3 |" in md
    assert "|---|---|---:|---:|---:|---:|---:|---|" in md
    tex = render_latex(table)
    assert r"ListOps & LOT & 300.0 & 3.00x & 256 & 0.25x & 3 & NVIDIA H100 80GB HBM3 \\" in tex


def test_efficiency_single_device_in_title():
    records = [record("text", "lot", 0, 0.7, speed=50.0), record("text", "softmax", 0, 0.6, speed=20.0)]
    table = efficiency_table(records)
    assert table.title == "Training throughput and peak memory (NVIDIA H100 80GB HBM3)"
    assert table.csv_rows[0]["speed_vs_softmax"] == 2.5


# ---------------------------------------------------------------------------------------------
# The command line, end to end.


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/make_tables.py", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_six_files(sweep_dir, tmp_path):
    out = tmp_path / "results"
    result = run_cli(str(sweep_dir), "--out", str(out), "--prefix", "paper")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"paper_{t}.{s}" for t in ("accuracy", "efficiency") for s in ("md", "tex", "csv"))
    md = (out / "paper_accuracy.md").read_text()
    assert EXPECTED_MEASURED_MD in md and "### Published results" in md
    assert "Skipped inputs (unreadable or malformed):" in md and "corrupt/results.json" in md
    assert "| ListOps | LOT | 300.0 | 3.00x |" in (out / "paper_efficiency.md").read_text()
    assert r"\textbf{71.0 $\pm$ 1.0 (n=3)}" in (out / "paper_accuracy.tex").read_text()
    rows = list(csv.DictReader((out / "paper_efficiency.csv").open()))
    assert {"task": "listops", "backend": "lot", "speed_vs_softmax": "3.0",
            "memory_vs_softmax": "0.25"}.items() <= rows[0].items()
    assert "skipped" in result.stdout and "corrupt/results.json" in result.stdout
    assert "71.0 ± 1.0 (n=3)" in result.stdout  # the console rendering


def test_cli_no_published_tag_filter_and_empty_input(sweep_dir, tmp_path):
    out = tmp_path / "res"
    result = run_cli(str(sweep_dir), "--out", str(out), "--no-published", "--tag", "nomatch*")
    assert result.returncode == 1 and "no usable results records" in result.stdout
    assert not out.exists()
    result = run_cli(str(sweep_dir), "--out", str(out), "--no-published")
    assert result.returncode == 0, result.stderr
    assert "Published" not in (out / "lra_accuracy.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(str(empty), "--out", str(out))
    assert result.returncode == 1 and "run train.py first" in result.stdout


def test_majority_class_reference_row_from_the_records():
    records = [record("listops", "lot", 0, 0.37), record("listops", "softmax", 0, 0.40),
               record("text", "lot", 0, 0.70), record("image", "lot", 0, 0.4)]
    for rec, majority in zip(records, (0.13, 0.17, 0.5, None)):
        rec["metrics"]["majority_test_acc"] = majority
    table = accuracy_table(records, published=False)
    assert table.rows[-1][0].text == "Majority class"
    assert table.cell("Majority class", "ListOps").text == "15.0 (13.0-17.0)"
    assert table.cell("Majority class", "Text").text == "50.0"
    assert table.cell("Majority class", "Image").text == "—"
    assert not any(c.best for c in table.rows[-1])  # a reference, never the best
    csv = [r for r in table.csv_rows if r["block"] == "majority"]
    assert {r["task"]: r["n"] for r in csv} == {"listops": 2, "text": 1}
    # records written before the field existed: no row
    for rec in records:
        del rec["metrics"]["majority_test_acc"]
    assert all(row[0].text != "Majority class" for row in accuracy_table(records).rows)
