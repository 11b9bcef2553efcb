"""scripts/prepare_data.py end to end, through subprocesses on temporary folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.lra.data_fixtures import write_crafted_cifar_batch, write_cifar_pickles

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prepare_data.py"


def run(*args: str, tmp_path: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LRA_DATA_DIR", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "TFDS_DATA_DIR")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HOME=str(tmp_path / "home"), COLUMNS="200",
               PYTHONPATH=os.pathsep.join(sys.path))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """ListOps and Pathfinder generated through the CLI (shared by the tests below)."""
    root = tmp_path_factory.mktemp("cli")
    out = root / "data"
    listops = run("generate", "listops", "--out", str(out), "--train", "12", "--val", "3", "--test", "4",
                  "--seed", "2", tmp_path=root)
    assert listops.returncode == 0, listops.stderr
    pathfinder = run("generate", "pathfinder", "--out", str(out), "--n", "10", "--resolution", "32",
                     "--difficulty", "hard", "--seed", "1", "--workers", "1", "--quiet", tmp_path=root)
    assert pathfinder.returncode == 0, pathfinder.stderr
    return out


def test_generate_writes_the_official_layouts(data_dir):
    train = (data_dir / "listops-1000" / "basic_train.tsv").read_text().splitlines()
    assert train[0] == "Source\tTarget" and len(train) == 13
    assert len((data_dir / "listops-1000" / "basic_test.tsv").read_text().splitlines()) == 5
    folder = data_dir / "pathfinder32" / "curv_contour_length_14"
    meta = (folder / "metadata" / "0.npy").read_text().splitlines()
    assert len(meta) == 10 and meta[0].startswith("imgs/0 sample_0.png 0 ")
    assert len(list((folder / "imgs" / "0").glob("sample_*.png"))) == 10


def test_generate_pathfinder_with_faint_markers(tmp_path):
    result = run("generate", "pathfinder", "--out", str(tmp_path / "data"), "--n", "2", "--markers", "faint",
                 "--workers", "1", "--quiet", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "faint markers" in result.stdout
    folder = tmp_path / "data" / "pathfinder32" / "curv_contour_length_14"
    assert json.loads((folder / "generator.json").read_text())["settings"]["markers"] == "faint"
    bad = run("generate", "pathfinder", "--out", str(tmp_path / "x"), "--n", "2", "--markers", "bright",
              tmp_path=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'bright'" in bad.stderr


def test_status_reports_found_and_missing(data_dir, tmp_path):
    result = run("status", "--data-dir", str(data_dir), "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["task"]: row for row in json.loads(result.stdout[result.stdout.index("[\n"):])}
    assert set(rows) == {"listops", "text", "retrieval", "image", "pathfinder", "pathx"}
    assert rows["listops"]["found"] and rows["listops"]["sizes"] == {"train": 12, "val": 3, "test": 4}
    assert rows["listops"]["source"] == "generated"  # written by `generate listops`
    assert rows["pathfinder"]["found"] and rows["pathfinder"]["source"] == "generated"
    assert rows["pathfinder"]["sizes"] == {"train": 8, "val": 1, "test": 1}
    for task in ("text", "retrieval", "image", "pathx"):
        assert not rows[task]["found"]
    assert "aclImdb_v1.tar.gz" in rows["text"]["help"] and "cifar-10-python.tar.gz" in rows["image"]["help"]
    assert "missing" in result.stdout and "found" in result.stdout  # the rich table
    assert "lra_release.gz" in result.stdout  # how to get the missing data


def test_prepare_builds_the_cache(data_dir, tmp_path):
    result = run("prepare", "pathfinder", "--data-dir", str(data_dir), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "source generated" in result.stdout
    entries = [p for p in (data_dir / ".cache").iterdir() if p.is_dir() and p.name.startswith("pathfinder-")]
    assert len(entries) == 1
    assert json.loads((entries[0] / "meta.json").read_text())["sizes"] == {"train": 8, "val": 1, "test": 1}
    env_default = run("prepare", "listops", "--max-len", "64", tmp_path=tmp_path,
                      env_extra={"LRA_DATA_DIR": str(data_dir)})  # data dir from $LRA_DATA_DIR
    assert env_default.returncode == 0, env_default.stderr
    assert any(p.name.startswith("listops-") for p in (data_dir / ".cache").iterdir())


def test_missing_data_is_one_paragraph_exit_2(tmp_path):
    result = run("prepare", "text", "--data-dir", str(tmp_path / "empty"), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: IMDB (task text) not found")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    bad_option = run("prepare", "pathfinder", "--data-dir", str(tmp_path), "--option", "colour=red",
                     tmp_path=tmp_path)
    assert bad_option.returncode == 2 and "colour" in bad_option.stderr
    assert "Traceback" not in bad_option.stderr
    for task in ("pathfinder", "listops"):  # generate= must be a mapping
        not_mapping = run("prepare", task, "--data-dir", str(tmp_path), "--option", "generate=5", tmp_path=tmp_path)
        assert not_mapping.returncode == 2 and "Traceback" not in not_mapping.stderr
        assert "task.data.generate must be a mapping such as {" in not_mapping.stderr


def test_prepare_generates_from_a_yaml_option(tmp_path):
    result = run("prepare", "pathfinder", "--data-dir", str(tmp_path), "--option", "generate={n: 10, seed: 3}",
                 "--max-len", "1024", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sizes {'train': 8, 'val': 1, 'test': 1}" in result.stdout
    assert (tmp_path / "generated" / "pathfinder32-hard_n10_seed3").is_dir()


def test_status_refuses_a_crafted_cifar_pickle_without_running_it(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_cifar_pickles(folder, np.random.default_rng(0), per_batch=2, test_size=2)
    clean = run("status", "--data-dir", str(tmp_path / "data"), "--json", tmp_path=tmp_path)
    assert clean.returncode == 0, clean.stderr
    (image,) = [row for row in json.loads(clean.stdout[clean.stdout.index("[\n"):]) if row["task"] == "image"]
    assert image["sizes"] == {"train": 9, "val": 1, "test": 2}
    marker = tmp_path / "marker"
    write_crafted_cifar_batch(folder / "test_batch", marker)
    result = run("status", "--data-dir", str(tmp_path / "data"), "--json", tmp_path=tmp_path)
    assert not marker.exists()
    assert result.returncode == 0 and "Traceback" not in result.stderr  # the table still prints
    (image,) = [row for row in json.loads(result.stdout[result.stdout.index("[\n"):]) if row["task"] == "image"]
    assert image["broken"] and image["help"].startswith(f"{folder / 'test_batch'}: refused to unpickle")
    assert f"{os.system.__module__}.system" in image["help"]
    assert "│ image      │ broken" in result.stdout


def test_status_marks_a_truncated_cifar_pickle_broken_and_prints_the_table(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_cifar_pickles(folder, np.random.default_rng(0), per_batch=2, test_size=2)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    result = run("status", "--data-dir", str(tmp_path / "data"), tmp_path=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "│ image      │ broken" in result.stdout and "│ listops    │ missing" in result.stdout
    assert f"{batch}: not a CIFAR-10 python batch" in " ".join(result.stdout.split())
    assert "Replace the damaged file" in " ".join(result.stdout.split())
