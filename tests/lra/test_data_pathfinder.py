"""Pathfinder / Path-X reader: text and binary metadata, pixel ids, seeded split, skipped images."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from lra.data import load_task, pathfinder, pathx
from lra.data.base import DataNotFoundError, MalformedDataError

SAMPLE = "lra_release/pathfinder32/curv_contour_length_14"


def sample_rows(folder) -> list[tuple[str, int]]:
    lines = (folder / "metadata" / "0.npy").read_text().splitlines()
    return [(line.split()[1], int(line.split()[3])) for line in lines if line.strip()]


def decoded(folder, name) -> np.ndarray:
    return np.asarray(Image.open(folder / "imgs" / "0" / name)).reshape(-1).astype(np.int64) + 1


def all_rows(data) -> list[tuple[tuple[int, ...], int]]:
    return sorted((tuple(int(v) for v in row), int(label))
                  for split in data.splits.values() for row, label in zip(split.ids, split.labels))


@pytest.fixture
def copy_sample(samples_dir, tmp_path):
    """A writable copy of the real Pathfinder-32 sample (60 images), as <tmp>/data/pathfinder32/..."""
    target = tmp_path / "data" / SAMPLE
    shutil.copytree(samples_dir / SAMPLE, target)
    return target


def test_reads_the_real_sample(samples_dir, tmp_path):
    data = load_task("pathfinder", data_dir=samples_dir, cache_dir=tmp_path / "cache", max_len=1024)
    folder = samples_dir / SAMPLE
    rows = sample_rows(folder)
    assert data.source == "sample"  # 60 images, far below the official ~200k
    assert data.sizes() == {"train": 48, "val": 6, "test": 6}
    assert data.splits["train"].ids.shape == (48, 1024)
    assert data.splits["train"].labels.dtype == np.int64
    expected = sorted((tuple(decoded(folder, name).tolist()), label) for name, label in rows)
    assert all_rows(data) == expected  # id = pixel + 1, labels from column 3
    ids = np.concatenate([np.asarray(s.ids) for s in data.splits.values()])
    assert ids.min() >= 1 and ids.max() <= 256 and (ids != 0).all()  # no pixel is padding
    assert data.notes == []


def test_binary_npy_metadata_reads_like_text(copy_sample, tmp_path):
    meta = copy_sample / "metadata" / "0.npy"
    text_data = pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
    rows = [line.split() for line in meta.read_text().splitlines() if line.strip()]
    np.save(meta, np.array(rows))  # the original generator's format: a string array
    assert meta.read_bytes()[:6] == b"\x93NUMPY"
    binary_data = pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(binary_data.splits[split].ids, text_data.splits[split].ids)
        np.testing.assert_array_equal(binary_data.splits[split].labels, text_data.splits[split].labels)


def test_seeded_split_is_deterministic_and_seed_dependent(copy_sample, tmp_path):
    first = pathfinder.read(pathfinder.locate(tmp_path / "data", split_seed=0), max_len=1024)
    again = pathfinder.read(pathfinder.locate(tmp_path / "data", split_seed=0), max_len=1024)
    other = pathfinder.read(pathfinder.locate(tmp_path / "data", split_seed=1), max_len=1024)
    np.testing.assert_array_equal(first.splits["test"].ids, again.splits["test"].ids)
    assert not np.array_equal(first.splits["test"].ids, other.splits["test"].ids)
    assert all_rows(first) == all_rows(other)  # same images, other assignment


def test_empty_and_unreadable_images_are_skipped_and_counted(copy_sample, tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(copy_sample / "imgs" / "0" / "sample_3.png")
    (copy_sample / "imgs" / "0" / "sample_7.png").write_bytes(b"\x89PNG broken")
    (copy_sample / "imgs" / "0" / "sample_9.png").unlink()
    data = pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
    assert sum(data.sizes().values()) == 57
    assert any("1 empty" in note and "sample_3.png" in note for note in data.notes)
    assert any("2 missing or unreadable" in note for note in data.notes)
    ids = np.concatenate([np.asarray(s.ids) for s in data.splits.values()])
    assert (ids.max(axis=1) > 1).all()  # no all-zero image left


def test_parallel_decoding_matches_serial(copy_sample, tmp_path, monkeypatch):
    serial = pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
    monkeypatch.setattr(pathfinder, "PARALLEL_MIN_IMAGES", 10)
    monkeypatch.setenv("LRA_DATA_WORKERS", "2")
    parallel = pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(parallel.splits[split].ids, serial.splits[split].ids)
        np.testing.assert_array_equal(parallel.splits[split].labels, serial.splits[split].labels)


def test_difficulty_folders(copy_sample, tmp_path):
    baseline = tmp_path / "data" / "lra_release" / "pathfinder32" / "curv_baseline"
    shutil.copytree(copy_sample, baseline)  # the release's name for the easy set
    assert pathfinder.locate(tmp_path / "data", difficulty="easy").settings["folder"] == str(baseline.resolve())
    with pytest.raises(DataNotFoundError) as err:
        pathfinder.locate(tmp_path / "data", difficulty="medium")
    assert "pathfinder32/curv_contour_length_9/metadata" in str(err.value)
    assert "prepare_data.py generate pathfinder" in str(err.value)
    with pytest.raises(ValueError, match="difficulty"):
        pathfinder.locate(tmp_path / "data", difficulty="extreme")


@pytest.mark.parametrize("line, message", [
    ("imgs/0 sample_0.png 0", r"0\.npy line 2: expected at least 4 columns"),
    ("imgs/0 sample_0.png 0 yes 1.0", r"0\.npy line 2: label 'yes'"),
    ("imgs/0 sample_0.png 0 2 1.0", r"0\.npy line 2: label 2 is outside 0\.\.1"),
])
def test_malformed_metadata_names_file_and_line(copy_sample, tmp_path, line, message):
    meta = copy_sample / "metadata" / "0.npy"
    lines = meta.read_text().splitlines()
    lines[1] = line
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedDataError, match=message):
        pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)


def test_wrong_image_size_is_an_error(copy_sample, tmp_path):
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(copy_sample / "imgs" / "0" / "sample_5.png")
    with pytest.raises(MalformedDataError, match="sample_5.png: image is not 32x32"):
        pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)


def test_pathx_reads_pathfinder128_and_generates_when_asked(tmp_path):
    with pytest.raises(DataNotFoundError, match="pathfinder128/curv_contour_length_14"):
        pathx.locate(tmp_path)
    data = load_task("pathx", data_dir=tmp_path, cache_dir=tmp_path / "cache", max_len=16384,
                     generate={"n": 10, "seed": 3})
    assert data.source == "generated"
    assert data.sizes() == {"train": 8, "val": 1, "test": 1}
    assert data.splits["train"].ids.shape == (8, 16384)
    assert (tmp_path / "generated" / "pathfinder128-hard_n10_seed3" / "pathfinder128").is_dir()
    labels = np.concatenate([s.labels for s in data.splits.values()])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5


def test_no_readable_images_is_one_paragraph_and_nothing_is_cached(samples_dir, copy_sample, tmp_path):
    shutil.rmtree(copy_sample / "imgs")
    cache_dir = tmp_path / "cache"
    with pytest.raises(MalformedDataError) as err:
        load_task("pathfinder", data_dir=tmp_path / "data", cache_dir=cache_dir, max_len=1024)
    message = str(err.value)
    assert message.startswith(f"0 of 60 images listed in {copy_sample.resolve()}/metadata (1 file(s)) "
                              "could be read (60 missing or unreadable, 0 all-zero, e.g. ")
    assert f"restore the images under {copy_sample.resolve()}/imgs" in message
    assert "nothing was cached" in message and "\n" not in message
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []
    # Restoring the images is enough (metadata untouched, same cache key): no empty entry was stored.
    shutil.copytree(samples_dir / SAMPLE / "imgs", copy_sample / "imgs")
    data = load_task("pathfinder", data_dir=tmp_path / "data", cache_dir=cache_dir, max_len=1024)
    assert data.sizes() == {"train": 48, "val": 6, "test": 6}


def test_a_split_left_without_images_names_it(copy_sample, tmp_path):
    for i in range(1, 60):  # 1 of 60 readable: two splits get none
        (copy_sample / "imgs" / "0" / f"sample_{i}.png").unlink()
    with pytest.raises(MalformedDataError) as err:
        pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
    message = str(err.value)
    assert message.startswith("1 of 60 images listed in") and "59 missing or unreadable" in message
    assert "split empty" in message and "restore the images under" in message


def test_too_few_listed_images_for_the_split(copy_sample, tmp_path):
    meta = copy_sample / "metadata" / "0.npy"
    meta.write_text("\n".join(meta.read_text().splitlines()[:5]) + "\n")
    with pytest.raises(MalformedDataError, match=r"only 5 images listed in .* leaves the val split empty; "
                                                 r"list at least 10 images"):
        pathfinder.read(pathfinder.locate(tmp_path / "data"), max_len=1024)
