"""IMDB (task text): raw aclImdb, Hugging Face parquet and TFDS readers; byte tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from lra.data import load_task, text
from lra.data.base import DataNotFoundError, MalformedDataError
from lra.data.tokenizers import BYTE_VOCAB_SIZE, decode_bytes, encode_batch, encode_bytes
from tests.lra.data_fixtures import hermetic_env, write_acl_imdb, write_parquet, write_tfds

CAFE = "Café ☕ naïve".encode()  # 2- and 3-byte UTF-8 sequences
REVIEWS = {
    "train": {"pos": [b"great film", CAFE], "neg": [b"awful", b"x" * 50]},
    "test": {"pos": [b"loved it"], "neg": [b"meh", b"bad acting"]},
}


@pytest.fixture(autouse=True)
def _no_user_caches(monkeypatch, tmp_path):
    hermetic_env(monkeypatch, tmp_path)


def expected_ids(data: bytes, max_len: int) -> np.ndarray:
    row = np.zeros(max_len, dtype=np.int64)
    clipped = np.frombuffer(data[:max_len], dtype=np.uint8).astype(np.int64) + 1
    row[: len(clipped)] = clipped
    return row


def rows_as_set(split) -> set[tuple[tuple[int, ...], int]]:
    return {(tuple(int(v) for v in row), int(label)) for row, label in zip(split.ids, split.labels)}


def expected_set(by_label: dict[str, list[bytes]], max_len: int) -> set:
    return {(tuple(expected_ids(t, max_len)), int(label == "pos")) for label, texts in by_label.items() for t in texts}


# ----------------------------------------------------------------------------- tokenizer
def test_byte_tokenizer_round_trip_and_truncation():
    ids = encode_bytes(CAFE.decode())
    assert ids.tolist() == [b + 1 for b in CAFE]
    assert decode_bytes(ids) == CAFE.decode()
    assert ids.min() >= 1 and ids.max() < BYTE_VOCAB_SIZE
    assert encode_bytes("abcdef", max_len=3).tolist() == [98, 99, 100]
    batch = encode_batch(["ab", CAFE], max_len=4)
    assert batch.tolist() == [[98, 99, 0, 0], [b + 1 for b in CAFE[:4]]]
    assert decode_bytes(batch[0]) == "ab"  # padding dropped


# ----------------------------------------------------------------------------- raw
def test_raw_aclimdb_reader_ids_labels_and_val_is_test(tmp_path):
    write_acl_imdb(tmp_path / "data" / "nested", REVIEWS)
    data = load_task("text", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", max_len=16)
    assert data.source == "raw"
    assert data.sizes() == {"train": 4, "val": 3, "test": 3}
    train = data.splits["train"]
    assert train.ids.shape == (4, 16) and train.labels.dtype == np.int64
    assert rows_as_set(train) == expected_set(REVIEWS["train"], 16)
    # Non-ASCII bytes are encoded byte by byte (+1), truncation at 16 bytes, padding 0.
    cafe_row = next(row for row in train.ids if int(row[0]) == CAFE[0] + 1)
    assert int(cafe_row[3]) == 0xC3 + 1 and int(cafe_row[4]) == 0xA9 + 1
    long_row = next(row for row in train.ids if int(row[0]) == ord("x") + 1)
    assert (long_row != 0).sum() == 16  # 50 bytes truncated to max_len
    mask = np.asarray(train.ids) != 0  # the mask the model uses
    lengths = [min(len(t), 16) for texts in REVIEWS["train"].values() for t in texts]
    assert sorted(mask.sum(axis=1).tolist()) == sorted(lengths)
    np.testing.assert_array_equal(data.splits["val"].ids, data.splits["test"].ids)
    assert rows_as_set(data.splits["test"]) == expected_set(REVIEWS["test"], 16)


def test_raw_empty_review_is_an_error_naming_the_file(tmp_path):
    reviews = {"train": {"pos": [b"ok"], "neg": [b""]}, "test": {"pos": [b"a"], "neg": [b"b"]}}
    write_acl_imdb(tmp_path, reviews)
    with pytest.raises(MalformedDataError, match=r"aclImdb/train/neg/0_2\.txt"):
        text.read(text.locate(tmp_path), max_len=8)


# ----------------------------------------------------------------------------- Hugging Face
def write_hf_imdb(folder, with_unsupervised=True):
    write_parquet(folder / "plain_text" / "train-00000-of-00001.parquet",
                  {"text": ["good one", CAFE.decode()], "label": [1, 0]})
    write_parquet(folder / "plain_text" / "test-00000-of-00001.parquet", {"text": ["bad"], "label": [0]})
    if with_unsupervised:  # label -1: must be ignored, not read as a split
        write_parquet(folder / "plain_text" / "unsupervised-00000-of-00001.parquet",
                      {"text": ["?"], "label": [-1]})


def test_hf_parquet_reader(tmp_path):
    write_hf_imdb(tmp_path / "data" / "imdb")
    data = load_task("text", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", max_len=12)
    assert data.source == "hf"
    assert data.sizes() == {"train": 2, "val": 1, "test": 1}
    np.testing.assert_array_equal(data.splits["train"].ids[1], expected_ids(CAFE, 12))
    assert data.splits["train"].labels.tolist() == [1, 0]
    assert data.splits["test"].labels.tolist() == [0]


def test_hf_files_found_in_the_hub_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    write_hf_imdb(hub / "datasets--stanfordnlp--imdb" / "snapshots" / "abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    located = text.locate(tmp_path / "empty_data")
    assert located.source == "hf"
    with pytest.raises(DataNotFoundError):
        text.locate(tmp_path / "empty_data", search_caches=False)


def test_hf_label_out_of_range_is_an_error(tmp_path):
    write_parquet(tmp_path / "imdb" / "train-00000-of-00001.parquet", {"text": ["a"], "label": [3]})
    write_parquet(tmp_path / "imdb" / "test-00000-of-00001.parquet", {"text": ["b"], "label": [1]})
    with pytest.raises(MalformedDataError, match="label 3"):
        text.read(text.locate(tmp_path), max_len=8)


# ----------------------------------------------------------------------------- TFDS
def test_tfds_data_source_reader(tmp_path):
    write_tfds(tmp_path / "data" / "tensorflow_datasets", "imdb_reviews", {
        "train": [{"text": "fine", "label": 1}, {"text": CAFE.decode(), "label": 0}],
        "test": [{"text": "no", "label": 0}],
    })
    data = load_task("text", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", max_len=20)
    assert data.source == "tfds"
    assert data.sizes() == {"train": 2, "val": 1, "test": 1}
    np.testing.assert_array_equal(data.splits["train"].ids[0], expected_ids(b"fine", 20))
    np.testing.assert_array_equal(data.splits["train"].ids[1], expected_ids(CAFE, 20))
    assert data.splits["train"].labels.tolist() == [1, 0]


# ----------------------------------------------------------------------------- order, errors
def test_raw_wins_over_hf_and_source_option_selects(tmp_path):
    write_acl_imdb(tmp_path, REVIEWS)
    write_hf_imdb(tmp_path / "imdb")
    assert text.locate(tmp_path).source == "raw"
    assert text.locate(tmp_path, source="hf").source == "hf"
    with pytest.raises(DataNotFoundError):
        text.locate(tmp_path, source="tfds", search_caches=False)
    with pytest.raises(ValueError, match="source must be one of"):
        text.locate(tmp_path, source="web")


def test_missing_data_message_lists_paths_and_ways(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        text.locate(tmp_path / "nowhere")
    message = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    for hint in ("aclImdb_v1.tar.gz", "stanfordnlp/imdb", "imdb_reviews", "array_record"):
        assert hint in message
