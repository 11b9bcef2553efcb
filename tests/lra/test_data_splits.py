"""A task's data module owns its splits: the cheap `split_sizes` / `source_of` that
scripts/prepare_data.py reports agree with what `read` produces, for every task."""

from __future__ import annotations

import numpy as np
import pytest

from lra.data import task_module
from lra.data.listops import GENERATED_MARKER, write_release
from tests.lra.data_fixtures import hermetic_env, write_acl_imdb, write_cifar_pickles


def _agree(task: str, data_dir, max_len: int, **options) -> dict:
    module = task_module(task)
    located = module.locate(data_dir, **options)
    data = module.read(located, max_len=max_len)
    sizes = module.split_sizes(located)
    assert sizes == data.sizes()
    assert module.source_of(located, sizes) == data.source
    return sizes


def test_listops_generated_and_release_copy(tmp_path):
    folder = write_release(tmp_path / "gen", {"train": 5, "val": 2, "test": 3}, seed=0, progress=False)
    assert _agree("listops", tmp_path / "gen", 2000) == {"train": 5, "val": 2, "test": 3}
    assert task_module("listops").locate(tmp_path / "gen").source == "generated"
    (folder / GENERATED_MARKER).unlink()  # now it looks like a (small) release copy
    assert _agree("listops", tmp_path / "gen", 2000) == {"train": 5, "val": 2, "test": 3}
    assert task_module("listops").locate(tmp_path / "gen").source is None


def test_retrieval(tmp_path):
    folder = tmp_path / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    for split, n in (("train", 4), ("eval", 2), ("test", 3)):
        rows = [f"{i % 2}.0\ta{i}\tb{i}\tdoc {i}\tother {i}\n" for i in range(n)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("".join(rows))
    assert _agree("retrieval", tmp_path, 16) == {"train": 4, "val": 2, "test": 3}


def test_text_val_is_test(tmp_path, monkeypatch):
    hermetic_env(monkeypatch, tmp_path)
    reviews = {split: {"pos": [b"good"] * 2, "neg": [b"bad"] * n} for split, n in (("train", 3), ("test", 1))}
    write_acl_imdb(tmp_path / "data", reviews)
    assert _agree("text", tmp_path / "data", 16) == {"train": 5, "val": 3, "test": 3}


def test_image_val_is_the_end_of_train(tmp_path, monkeypatch):
    hermetic_env(monkeypatch, tmp_path)
    write_cifar_pickles(tmp_path / "data" / "cifar-10-batches-py", np.random.default_rng(0),
                        per_batch=4, test_size=3)
    assert _agree("image", tmp_path / "data", 1024) == {"train": 18, "val": 2, "test": 3}


def test_pathfinder_samples(samples_dir):
    sizes = _agree("pathfinder", samples_dir, 1024)
    assert sum(sizes.values()) == 60


@pytest.mark.parametrize("sizes,source", [({"train": 96000, "val": 2000, "test": 2000}, "official"),
                                          ({"train": 96000, "val": 1999, "test": 2000}, "sample"),
                                          ({"train": "?", "val": 2000, "test": 2000}, "sample")])
def test_release_source(sizes, source):
    from lra.data.base import release_source
    from lra.data.listops import OFFICIAL_SIZES

    assert release_source(sizes, OFFICIAL_SIZES) == source


def test_out_of_range_label_names_its_example_1_based():
    import numpy as np
    import pytest

    from lra.data.base import MalformedDataError, check_labels

    with pytest.raises(MalformedDataError, match=r"x: label 12 of example 3 \(1-based"):
        check_labels(np.array([0, 1, 12]), 10, "x")
