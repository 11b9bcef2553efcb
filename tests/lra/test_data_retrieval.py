"""AAN (task retrieval): TSV reader, (N, 2, L) byte ids, label parsing and errors."""

from __future__ import annotations

import numpy as np
import pytest

from lra.data import load_task, retrieval
from lra.data.base import DataNotFoundError, MalformedDataError

ROWS = {
    "train": [("1.0", "a1", "a2", "Attention é", "Transformers"), ("0.0", "b1", "b2", "x" * 30, "short"),
              ("1", "c1", "c2", 'quote " kept', "tab-free")],
    "eval": [("0.0", "d1", "d2", "val doc", "other")],
    "test": [("1.0", "e1", "e2", "test doc", "näive")],
}


def write_aan(root, rows=ROWS):
    folder = root / "lra_release" / "lra_release" / "tsv_data"  # the doubly nested copy
    folder.mkdir(parents=True)
    for split, lines in rows.items():
        body = "".join("\t".join(fields) + "\n" for fields in lines)
        (folder / f"new_aan_pairs.{split}.tsv").write_bytes(body.encode())
    return folder


def doc_ids(text: str, max_len: int) -> np.ndarray:
    row = np.zeros(max_len, dtype=np.int64)
    data = text.encode()[:max_len]
    row[: len(data)] = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + 1
    return row


def test_reader_shapes_ids_labels(tmp_path):
    write_aan(tmp_path)
    data = load_task("retrieval", data_dir=tmp_path, cache_dir=tmp_path / "cache", max_len=12)
    assert data.source == "sample"
    assert data.sizes() == {"train": 3, "val": 1, "test": 1}
    train = data.splits["train"]
    assert train.ids.shape == (3, 2, 12)
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [1, 0, 1]
    for row, fields in zip(train.ids, ROWS["train"]):
        np.testing.assert_array_equal(row[0], doc_ids(fields[3], 12))
        np.testing.assert_array_equal(row[1], doc_ids(fields[4], 12))
    assert (np.asarray(train.ids[1, 0]) != 0).sum() == 12  # 30 bytes truncated per document
    assert int(train.ids[0, 0, 10]) == 0xC3 + 1  # 'é' kept as its UTF-8 bytes
    np.testing.assert_array_equal(data.splits["val"].ids[0, 0], doc_ids("val doc", 12))  # eval -> val
    np.testing.assert_array_equal(data.splits["test"].ids[0, 1], doc_ids("näive", 12))


@pytest.mark.parametrize("line, message", [
    ("1.0\ta\tb\tonly four", r"new_aan_pairs\.train\.tsv:2: expected 5 tab-separated columns"),
    ("yes\ta\tb\tc\td", r"new_aan_pairs\.train\.tsv:2: label"),
])
def test_malformed_row_names_file_and_line(tmp_path, line, message):
    folder = write_aan(tmp_path)
    path = folder / "new_aan_pairs.train.tsv"
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedDataError, match=message):
        retrieval.read(retrieval.locate(tmp_path), max_len=8)


def test_label_out_of_range_is_an_error(tmp_path):
    rows = dict(ROWS, test=[("2.0", "e1", "e2", "a", "b")])
    write_aan(tmp_path, rows)
    with pytest.raises(MalformedDataError, match="label 2"):
        retrieval.read(retrieval.locate(tmp_path), max_len=8)


def test_missing_files_message(tmp_path):
    folder = write_aan(tmp_path)
    (folder / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(DataNotFoundError) as err:
        retrieval.locate(tmp_path)
    assert "missing tsv_data/new_aan_pairs.eval.tsv" in str(err.value)
    assert "lra_release.gz" in str(err.value) and str(tmp_path.resolve()) in str(err.value)


@pytest.mark.parametrize("label, shown", [("1.7", "label 1.7"), ("inf", "label inf"), ("nan", "label nan"),
                                          ("-1", "label -1"), ("", "label ''"), ("one", "label 'one'")])
def test_label_must_be_exactly_0_or_1(tmp_path, label, shown):
    folder = write_aan(tmp_path, dict(ROWS, eval=[("0", "d1", "d2", "x", "y"), (label, "d3", "d4", "x", "y")]))
    with pytest.raises(MalformedDataError) as err:
        retrieval.read(retrieval.locate(tmp_path), max_len=8)
    message = str(err.value)
    assert message.startswith(f"{folder / 'new_aan_pairs.eval.tsv'}:2: {shown} is not 0 or 1")
    assert "correct or remove that line" in message and "\n" not in message


def test_labels_written_as_0_1_and_floats_are_accepted(tmp_path):
    write_aan(tmp_path, dict(ROWS, test=[("0", "a", "b", "x", "y"), ("1", "a", "b", "x", "y"),
                                         ("0.0", "a", "b", "x", "y"), ("1.0", "a", "b", "x", "y")]))
    data = retrieval.read(retrieval.locate(tmp_path), max_len=8)
    assert data.splits["test"].labels.tolist() == [0, 1, 0, 1]
