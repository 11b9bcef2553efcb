"""CIFAR-10 (task image): grayscale as tf.image.rgb_to_grayscale, pixel ids, splits, readers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from lra.data import image, load_task
from lra.data.base import DataNotFoundError, MalformedDataError
from lra.data.safe_pickle import UnsafePickleError
from tests.lra.data_fixtures import (hermetic_env, png_bytes, write_cifar_pickles, write_crafted_cifar_batch,
                                    write_parquet, write_tfds)


@pytest.fixture(autouse=True)
def _no_user_caches(monkeypatch, tmp_path):
    hermetic_env(monkeypatch, tmp_path)


def reference_gray(rgb: np.ndarray) -> np.ndarray:
    """float64 version of TF's formula: trunc(255.5 * (0.2989 r + 0.5870 g + 0.1140 b) / 255)."""
    rgb = rgb.astype(np.float64) / 255
    return np.floor((rgb @ np.array([0.2989, 0.5870, 0.1140])) * 255.5)


def test_grayscale_matches_tf_formula():
    known = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]],
                     dtype=np.uint8)
    # TF truncates after scaling by 255.5: pure green gives 149, not round(149.7) = 150.
    assert image.rgb_to_grayscale(known).tolist() == [0, 255, 76, 149, 29, 124]
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20000, 3), dtype=np.uint8)
    ours = image.rgb_to_grayscale(rgb).astype(np.float64)
    exact = (rgb.astype(np.float64) / 255 @ np.array([0.2989, 0.5870, 0.1140])) * 255.5
    reference = np.floor(exact)
    close_to_integer = np.abs(exact - np.round(exact)) < 1e-4  # float32 may land either side
    assert np.all((ours == reference) | close_to_integer)
    assert np.mean(ours == reference) > 0.999


def test_pickle_reader_splits_ids_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    batches = write_cifar_pickles(tmp_path / "data" / "cifar-10-batches-py", rng)
    data = load_task("image", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", max_len=1024)
    assert data.source == "raw"
    assert data.sizes() == {"train": 90, "val": 10, "test": 10}
    train_rgb = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    expected = reference_gray(train_rgb).reshape(100, 1024) + 1  # id = pixel + 1
    train, val = data.splits["train"], data.splits["val"]
    assert train.ids.shape == (90, 1024)
    agree = np.concatenate([np.asarray(train.ids), np.asarray(val.ids)]) == expected
    assert agree.mean() > 0.999
    assert int(np.asarray(train.ids).min()) >= 1 and int(np.asarray(train.ids).max()) <= 256
    # val is the LAST 10% of the training set, in order
    assert val.labels.tolist() == train_labels[90:].tolist()
    assert train.labels.tolist() == train_labels[:90].tolist()
    test_rgb, test_labels = batches["test_batch"]
    np.testing.assert_array_equal(data.splits["test"].ids,
                                  image.pixels_to_ids(image.rgb_to_grayscale(test_rgb)))
    assert data.splits["test"].labels.tolist() == test_labels.tolist()
    assert (np.asarray(train.ids) != 0).all()  # every pixel is a real token (mask all True)


def test_hf_parquet_reader(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = list(range(10)) + [3, 4]
    encode = [{"bytes": png_bytes(im), "path": None} for im in images]
    folder = tmp_path / "cifar10" / "plain_text"
    write_parquet(folder / "train-00000-of-00001.parquet", {"img": encode[:10], "label": labels[:10]})
    write_parquet(folder / "test-00000-of-00001.parquet", {"img": encode[10:], "label": labels[10:]})
    data = load_task("image", data_dir=tmp_path, cache_dir=tmp_path / "cache", max_len=1024)
    assert data.source == "hf"
    assert data.sizes() == {"train": 9, "val": 1, "test": 2}
    np.testing.assert_array_equal(data.splits["train"].ids, image.pixels_to_ids(image.rgb_to_grayscale(images[:9])))
    assert data.splits["val"].labels.tolist() == [9]
    assert data.splits["test"].labels.tolist() == [3, 4]


def test_tfds_data_source_reader(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    write_tfds(tmp_path / "tensorflow_datasets", "cifar10", {
        "train": [{"image": Image.fromarray(images[i]), "label": i, "id": f"train_{i}"} for i in range(10)],
        "test": [{"image": Image.fromarray(images[i]), "label": 9, "id": f"test_{i}"} for i in (10, 11)],
    })
    data = load_task("image", data_dir=tmp_path, cache_dir=tmp_path / "cache", max_len=1024)
    assert data.source == "tfds"
    assert data.sizes() == {"train": 9, "val": 1, "test": 2}
    all_train = np.concatenate([data.splits["train"].ids, data.splits["val"].ids])
    np.testing.assert_array_equal(all_train, image.pixels_to_ids(image.rgb_to_grayscale(images[:10])))
    assert data.splits["val"].labels.tolist() == [9]
    assert data.splits["test"].labels.tolist() == [9, 9]


def test_raw_wins_and_errors(tmp_path):
    rng = np.random.default_rng(4)
    write_cifar_pickles(tmp_path / "cifar-10-batches-py", rng, per_batch=2, test_size=2)
    write_parquet(tmp_path / "cifar10" / "train-0.parquet", {"img": [{"bytes": b"", "path": None}], "label": [0]})
    write_parquet(tmp_path / "cifar10" / "test-0.parquet", {"img": [{"bytes": b"", "path": None}], "label": [0]})
    assert image.locate(tmp_path).source == "raw"
    with pytest.raises(MalformedDataError, match="cannot decode image"):  # empty PNG bytes
        image.read(image.locate(tmp_path, source="hf"), max_len=1024)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(MalformedDataError, match="test_batch: not a CIFAR-10 python batch"):
        image.read(image.locate(tmp_path), max_len=1024)


def test_label_out_of_range_and_missing_data(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    folder = tmp_path / "cifar10"
    write_parquet(folder / "train-0.parquet", {"img": [{"bytes": png_bytes(images[0]), "path": None}], "label": [10]})
    write_parquet(folder / "test-0.parquet", {"img": [{"bytes": png_bytes(images[1]), "path": None}], "label": [1]})
    with pytest.raises(MalformedDataError, match="label 10"):
        image.read(image.locate(tmp_path), max_len=1024)
    with pytest.raises(DataNotFoundError) as err:
        image.locate(tmp_path / "nothing")
    for hint in ("cifar-10-python.tar.gz", "uoft-cs/cifar10", "tfds.builder('cifar10'"):
        assert hint in str(err.value)


def test_crafted_pickle_is_refused_and_not_run(tmp_path):
    write_cifar_pickles(tmp_path / "cifar-10-batches-py", np.random.default_rng(6), per_batch=2, test_size=2)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    marker = tmp_path / "marker"
    write_crafted_cifar_batch(batch, marker)
    with pytest.raises(UnsafePickleError) as err:
        load_task("image", data_dir=tmp_path, cache_dir=tmp_path / "cache", max_len=1024)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{batch}: refused to unpickle")
    assert f"{os.system.__module__}.system" in message and image.PYTHON_RELEASE in message
