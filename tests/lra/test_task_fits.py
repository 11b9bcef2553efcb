"""Every task trains: a short seeded fit + test from its data fixture, through the real readers,
cache, datamodule and model (retrieval with two documents per example).

Text, retrieval and image run on so few examples that the model fits them: the mean training
loss of the last steps must be well below that of the first steps (CSV logger, one row per
step; image trains on its whole training split every step). Pathfinder and Path-X cannot be
learned in a few CPU steps: their tests check that a run goes through end to end with finite
losses.
"""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest

from lra.data import pathfinder
from lra.runner import run
from tests.helpers import compose_train
from tests.lra.data_fixtures import hermetic_env, write_acl_imdb, write_cifar_pickles


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


def _assert_fits(losses: list[float], factor: float) -> None:
    first, last = statistics.fmean(losses[:WINDOW]), statistics.fmean(losses[-WINDOW:])
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


def test_pathfinder_from_release_samples(tmp_path, samples_dir):
    record = _fit(tmp_path, "pathfinder", f"paths.data_dir={samples_dir}",
                  f"paths.cache_dir={tmp_path / 'cache'}", attn="lot", steps=2)
    _check(record, "pathfinder", {"train": 48, "val": 6, "test": 6}, "sample", steps=2)


@pytest.mark.slow
def test_pathx_from_generated_images(tmp_path):
    pathfinder.generate_release(tmp_path / "data", 20, resolution=128, seed=0, progress=False)
    record = _fit(tmp_path, "pathx", attn="lot", steps=2)
    assert record.data.source == "generated" and sum(record.data.sizes.values()) == 20
    assert record.config["task"]["max_len"] == 16384
