"""Majority-class baseline and learning curve of a run (lra/curves.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lra.curves import majority_accuracy, plot_learning_curve
from lra.runner import run
from tests.helpers import compose_train, tiny_run_overrides


def test_majority_accuracy():
    assert majority_accuracy(np.array([3, 1, 3, 3, 0])) == 0.6
    assert majority_accuracy(np.array([], dtype=np.int64)) is None


def test_learning_curve_png_only_when_accuracy_was_logged(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/acc,train/loss,val/acc\n0,9,0.2,2.1,\n0,9,,,0.25\n"
                   "0,19,0.4,1.9,\n0,19,,,0.45\n")
    out = plot_learning_curve(csv, tmp_path / "curve.png", "t", majority=0.2)
    assert out == tmp_path / "curve.png" and Image.open(out).size[0] > 100
    assert not list(tmp_path.glob(".curve.png.tmp*"))  # written atomically
    (tmp_path / "empty.csv").write_text("epoch,step,train/loss\n0,9,2.0\n")
    assert plot_learning_curve(tmp_path / "empty.csv", tmp_path / "none.png", "t") is None
    assert plot_learning_curve(tmp_path / "missing.csv", tmp_path / "none.png", "t") is None


def test_run_records_majority_class_and_writes_its_learning_curve(tmp_path):
    overrides = [o for o in tiny_run_overrides(tmp_path) if o != "logger=none"] + ["logger=csv"]
    record = run(compose_train(overrides), tmp_path / "run")
    labels = np.array([int(line.split("\t")[1]) for line in
                       next((tmp_path / "data").rglob("basic_test.tsv")).read_text().splitlines()[1:]])
    assert record.metrics.majority_test_acc == majority_accuracy(labels)
    assert record.learning_curve == str(tmp_path / "run" / "learning_curve.png")
    assert Image.open(record.learning_curve).format == "PNG"
