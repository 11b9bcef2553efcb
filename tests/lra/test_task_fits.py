"""Every task trains: a 2-step fit + test from its data fixture, through the real readers,
cache, datamodule and model (retrieval with two documents per example)."""

from __future__ import annotations

import numpy as np
import pytest

from lra.data import pathfinder
from lra.runner import run
from tests.helpers import compose_train
from tests.lra.data_fixtures import hermetic_env, write_acl_imdb, write_cifar_pickles


def _fit(tmp_path, task: str, *extra: str, attn: str = "softmax") -> dict:
    overrides = [
        f"task={task}", f"attn={attn}", "debug=fast", "logger=none", "callbacks/progress_bar=none",
        f"paths.data_dir={tmp_path / 'data'}", "task.batch_size=2", "trainer.eval_batch_size=2", *extra,
    ]
    return run(compose_train(overrides), tmp_path / "run")


def _check(record: dict, task: str, sizes: dict, source: str) -> None:
    assert record.task == task and record.steps == 2 and record.status == "completed"
    assert record.data.sizes == sizes and record.data.source == source
    assert 0.0 <= record.metrics.test_acc <= 1.0


def test_text_from_raw_imdb_folder(tmp_path, monkeypatch):
    hermetic_env(monkeypatch, tmp_path)
    reviews = {split: {"pos": [f"good film {i} é".encode() for i in range(3)],
                       "neg": [f"bad film {i}".encode() for i in range(3)]} for split in ("train", "test")}
    write_acl_imdb(tmp_path / "data", reviews)
    _check(_fit(tmp_path, "text", "task.max_len=64"), "text", {"train": 6, "val": 6, "test": 6}, "raw")


def test_retrieval_pairs(tmp_path):
    folder = tmp_path / "data" / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    for split, n in (("train", 6), ("eval", 2), ("test", 2)):
        rows = [f"{i % 2}.0\ta{i}\tb{i}\tdocument {i} text\tother doc {i}\n" for i in range(n)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("".join(rows))
    record = _fit(tmp_path, "retrieval", "task.max_len=32")
    _check(record, "retrieval", {"train": 6, "val": 2, "test": 2}, "sample")
    assert record.config["task"]["dual"] is True


def test_image_from_cifar_pickles(tmp_path, monkeypatch):
    hermetic_env(monkeypatch, tmp_path)
    write_cifar_pickles(tmp_path / "data" / "cifar-10-batches-py", np.random.default_rng(0), per_batch=4, test_size=4)
    # 20 training images: the last 10% (2) become validation, as in the 45k/5k split.
    _check(_fit(tmp_path, "image"), "image", {"train": 18, "val": 2, "test": 4}, "raw")


def test_pathfinder_from_release_samples(tmp_path, samples_dir):
    record = _fit(tmp_path, "pathfinder", f"paths.data_dir={samples_dir}",
                  f"paths.cache_dir={tmp_path / 'cache'}", attn="lot")
    assert record.data.source == "sample"
    assert sum(record.data.sizes.values()) == 60
    assert record.steps == 2


@pytest.mark.slow
def test_pathx_from_generated_images(tmp_path):
    pathfinder.generate_release(tmp_path / "data", 20, resolution=128, seed=0, progress=False)
    record = _fit(tmp_path, "pathx", attn="lot")
    assert record.data.source == "generated" and sum(record.data.sizes.values()) == 20
    assert record.config["task"]["max_len"] == 16384
