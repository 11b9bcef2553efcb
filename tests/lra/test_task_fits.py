"""Every task trains: a short seeded fit + test from its data fixture, through the real readers,
cache, datamodule and model (retrieval with two documents per example).

Each run is on so few examples, or on examples so easy, that the model fits them: the mean
training loss of the last steps must be well below that of the first steps (CSV logger, one
row per step). Image, Pathfinder and Path-X train on their whole training split every step, so
the curve is smooth. Real Pathfinder images cannot be learned in a few CPU steps, so those two
tests read a release-layout copy whose labels are learnable (dark vs bright noise,
`write_learnable_pathfinder`): with its labels shuffled the loss stays flat (measured: last/first
0.96 where the test asks for < 0.6), so they fail when images and labels come apart anywhere
between metadata and batch. The reader itself is checked on the
real release sample in test_data_pathfinder.py.
"""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest

from lra.runner import run
from tests.helpers import compose_train
from tests.lra.data_fixtures import (
    hermetic_env,
    write_acl_imdb,
    write_cifar_pickles,
    write_learnable_pathfinder,
)


STEPS = 20
WINDOW = 5  # steps averaged at each end


def _fit(tmp_path, task: str, *extra: str, attn: str = "softmax", steps: int = STEPS, batch: int = 4):
    overrides = [
        f"task={task}", f"attn={attn}", "debug=fast", "logger=csv", "callbacks/progress_bar=none",
        f"paths.data_dir={tmp_path / 'data'}", f"task.batch_size={batch}",
        f"trainer.eval_batch_size={batch}",
        f"task.max_steps={steps}", f"task.eval_every={steps}", "task.lr=3e-3", "model.dropout=0",
        "seed=0", *extra,
    ]
    return run(compose_train(overrides), tmp_path / "run")


def _train_losses(record) -> list[float]:
    with open(f"{record.run_dir}/csv/metrics.csv") as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def _check(record, task: str, sizes: dict, source: str, steps: int = STEPS) -> list[float]:
    assert record.task == task and record.steps == steps and record.status == "completed"
    assert record.data.sizes == sizes and record.data.source == source
    losses = _train_losses(record)
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    return losses


def _assert_fits(losses: list[float], factor: float, window: int = WINDOW) -> None:
    first, last = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
    assert last < factor * first, f"training loss did not go down enough: {first:.3f} -> {last:.3f}"


def test_text_from_raw_imdb_folder(tmp_path, monkeypatch):
    hermetic_env(monkeypatch, tmp_path)
    reviews = {split: {"pos": [f"good film {i} é".encode() for i in range(3)],
                       "neg": [f"bad film {i}".encode() for i in range(3)]} for split in ("train", "test")}
    write_acl_imdb(tmp_path / "data", reviews)
    losses = _check(_fit(tmp_path, "text", "task.max_len=64"), "text",
                    {"train": 6, "val": 6, "test": 6}, "raw")
    _assert_fits(losses, 0.2)


def test_retrieval_pairs(tmp_path):
    folder = tmp_path / "data" / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    for split, n in (("train", 6), ("eval", 2), ("test", 2)):
        rows = [f"{i % 2}.0\ta{i}\tb{i}\tdocument {i} text\tother doc {i}\n" for i in range(n)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("".join(rows))
    record = _fit(tmp_path, "retrieval", "task.max_len=32")
    _assert_fits(_check(record, "retrieval", {"train": 6, "val": 2, "test": 2}, "sample"), 0.5)
    assert record.config["task"]["dual"] is True


def test_image_from_cifar_pickles(tmp_path, monkeypatch):
    hermetic_env(monkeypatch, tmp_path)
    write_cifar_pickles(tmp_path / "data" / "cifar-10-batches-py", np.random.default_rng(0), per_batch=2, test_size=2)
    # 10 training images: the last 10% (1) becomes validation, as in the 45k/5k split. Each
    # step sees all 9 (random pixels, random labels): a smooth, full-batch loss curve.
    losses = _check(_fit(tmp_path, "image", batch=9), "image", {"train": 9, "val": 1, "test": 2}, "raw")
    _assert_fits(losses, 0.9)


# LOT with a small rank and few iterations keeps the 1024- and 16384-token steps cheap on CPU.
CHEAP_LOT = ("attn.rank=8", "attn.n_iters=5")


def test_pathfinder_fits_a_learnable_release_copy(tmp_path):
    write_learnable_pathfinder(tmp_path / "data", resolution=32, n=20)
    record = _fit(tmp_path, "pathfinder", *CHEAP_LOT, attn="lot", steps=8, batch=16)
    losses = _check(record, "pathfinder", {"train": 16, "val": 2, "test": 2}, "sample", steps=8)
    _assert_fits(losses, 0.6, window=3)  # measured 0.66 -> 0.25
    assert record.metrics.test_acc == 1.0


@pytest.mark.slow
def test_pathx_fits_a_learnable_release_copy(tmp_path):
    write_learnable_pathfinder(tmp_path / "data", resolution=128, n=10)
    record = _fit(tmp_path, "pathx", *CHEAP_LOT, attn="lot", steps=6, batch=8)
    losses = _check(record, "pathx", {"train": 8, "val": 1, "test": 1}, "sample", steps=6)
    _assert_fits(losses, 0.75, window=2)  # measured 0.69 -> 0.39
    assert record.config["task"]["max_len"] == 16384
