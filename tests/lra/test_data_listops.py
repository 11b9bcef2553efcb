"""ListOps: reader on the real sample, generator format and statistics, tokenizer, errors."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from lra.data import listops, load_task
from lra.data.base import DataNotFoundError, MalformedDataError

SAMPLE = "lra_release/listops-1000"


def test_reader_on_the_real_sample(samples_dir, tmp_path):
    data = load_task("listops", data_dir=samples_dir, cache_dir=tmp_path / "cache", max_len=2000)
    assert data.source == "sample"
    assert data.sizes() == {"train": 60, "val": 20, "test": 20}
    with open(samples_dir / SAMPLE / "basic_train.tsv", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    train = data.splits["train"]
    assert train.ids.shape == (60, 2000) and train.labels.dtype == np.int64
    for row, (source, target) in zip(train.ids[:5], rows[:5]):
        tokens = listops.tokenize(source)
        np.testing.assert_array_equal(row[: len(tokens)], tokens)
        assert (np.asarray(row[len(tokens):]) == 0).all()
    assert train.labels.tolist() == [int(target) for _, target in rows]
    ids = np.concatenate([np.asarray(s.ids) for s in data.splits.values()])
    assert ids.max() <= 15 and ids.min() == 0


def test_tokenizer_round_trip():
    source = "( ( ( [MAX 2 ) ( ( [SM 9 ) 3 ) ) ] )"
    ids = listops.tokenize(source)
    assert ids == [12, 3, 14, 10, 4, 15]
    assert listops.detokenize(ids + [0, 0]) == "[MAX 2 [SM 9 3 ]"
    assert listops.tokenize(listops.detokenize(ids)) == ids
    assert sorted(listops.VOCAB.values()) == list(range(1, 16))  # 15 symbols, 0 left for padding


def evaluate(source: str) -> int:
    """Independent evaluator: parse the bracket form and compute the value."""
    tokens = source.replace("(", " ").replace(")", " ").split()
    stack: list = []
    for token in tokens:
        if token.startswith("["):
            stack.append([token])
        elif token == "]":
            op, *values = stack.pop()
            value = {"[MIN": min, "[MAX": max, "[MED": lambda v: int(np.median(v)),
                     "[SM": lambda v: sum(v) % 10}[op](values)
            if not stack:
                return value
            stack[-1].append(value)
        else:
            if not stack:
                return int(token)
            stack[-1].append(int(token))
    raise AssertionError("unbalanced")


def test_generator_statistics():
    examples = listops.generate_examples(300, seed=5)
    assert len({source for source, _ in examples}) == 300  # de-duplicated
    lengths = [len(listops.tokenize(source)) for source, _ in examples]
    assert min(lengths) > 500 and max(lengths) < 2000
    text = " ".join(source for source, _ in examples)
    for op in ("[MIN", "[MAX", "[MED", "[SM"):
        assert op in text
    assert {target for _, target in examples} == set(range(10))
    assert all(evaluate(source) == target for source, target in examples[:50])
    for source, _ in examples[:50]:  # LRA's string form: every operator opens a "( " pair
        assert re.search(r"(?<!\( )\[(MIN|MAX|MED|SM)", source) is None
        assert source.count("(") == source.count(")")


def test_write_release_format_and_reader(tmp_path):
    folder = listops.write_release(tmp_path, {"train": 6, "val": 2, "test": 2}, seed=1)
    lines = (folder / "basic_train.tsv").read_text().splitlines()
    assert lines[0] == "Source\tTarget" and len(lines) == 7
    assert all(len(line.split("\t")) == 2 for line in lines)
    sources = {split: {line.split("\t")[0] for line in (folder / f"basic_{split}.tsv").read_text().splitlines()[1:]}
               for split in ("train", "val", "test")}
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"])
    data = listops.read(listops.locate(tmp_path), max_len=2000)
    assert data.sizes() == {"train": 6, "val": 2, "test": 2} and data.source == "generated"


def test_malformed_row_names_file_and_line(tmp_path):
    folder = tmp_path / "listops-1000"
    folder.mkdir()
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    (folder / "basic_val.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n( [MAX 1 [FOO ] )\t1\n")
    with pytest.raises(MalformedDataError, match=r"basic_val\.tsv:3: cannot parse row"):
        listops.read(listops.locate(tmp_path), max_len=50)
    (folder / "basic_val.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t12\n")
    with pytest.raises(MalformedDataError, match="label 12"):
        listops.read(listops.locate(tmp_path), max_len=50)


def test_missing_data_message(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        listops.locate(tmp_path)
    assert "listops-1000/basic_train.tsv" in str(err.value)
    assert "prepare_data.py generate listops" in str(err.value)


def test_generated_copy_under_the_data_dir_is_recorded_as_generated(tmp_path):
    from lra.data import load_task, listops

    listops.write_release(tmp_path / "data", {"train": 3, "val": 2, "test": 2}, seed=1)
    data = load_task("listops", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", max_len=2000)
    assert data.source == "generated" and data.sizes() == {"train": 3, "val": 2, "test": 2}


def test_non_text_bytes_name_file_and_line(tmp_path):
    folder = tmp_path / "listops-1000"
    folder.mkdir()
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_bytes(b"Source\tTarget\n( [MAX 2 3 ] )\t3\n( [MAX \xff 3 ] )\t3\n")
    from lra.data import listops
    from lra.data.base import MalformedDataError

    with pytest.raises(MalformedDataError, match=r"basic_train.tsv:3: cannot parse row"):
        listops.read(listops.locate(tmp_path), max_len=50)


@pytest.mark.parametrize("target", ["12", "-1", "10"])
def test_label_out_of_range_names_the_file_line(tmp_path, target):
    folder = tmp_path / "listops-1000"
    folder.mkdir()
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    # header = line 1, two good rows = lines 2-3, the bad target on file line 4 (data row 2, 0-based)
    (folder / "basic_test.tsv").write_text(
        f"Source\tTarget\n( [MAX 1 2 ] )\t2\n( [MIN 3 4 ] )\t3\n( [MAX 1 2 ] )\t{target}\n")
    with pytest.raises(MalformedDataError) as err:
        listops.read(listops.locate(tmp_path), max_len=50)
    message = str(err.value)
    assert message.startswith(f"{folder / 'basic_test.tsv'}:4: label {target} is outside 0..9")
    assert "row" not in message.split(":4: ", 1)[1]  # not the 0-based data row
    assert "correct or remove that line" in message and "\n" not in message


def test_generator_tree_options_make_a_smaller_listops_in_its_own_folder(tmp_path):
    options = {"min_length": 10, "max_length": 60, "max_depth": 3, "max_args": 4}
    small = listops.locate(tmp_path, generate={"train": 40, "val": 5, "test": 5, "seed": 0,
                                               **options})
    lra_default = listops.locate(tmp_path, generate={"train": 4, "val": 2, "test": 2, "seed": 0})
    assert small.files["train"].parent != lra_default.files["train"].parent
    data = listops.read(small, max_len=64)
    lengths = (data.splits["train"].ids != 0).sum(axis=1)
    assert lengths.min() > 0 and lengths.max() < 60 and data.source == "generated"
    marker = json.loads((small.files["train"].parent / listops.GENERATED_MARKER).read_text())
    assert marker["max_depth"] == 3 and marker["max_length"] == 60
    with pytest.raises(ValueError, match="max_length"):
        listops.locate(tmp_path, generate={"train": 4, "val": 2, "test": 2, "min_length": 10,
                                           "max_length": 11})
    with pytest.raises(ValueError, match="unknown key.* max_dept; valid keys: train, val, test, seed, min_length"):
        listops.locate(tmp_path, generate={"train": 4, "val": 2, "test": 2, "max_dept": 3})


def test_tree_options_default_to_the_lra_generator_and_name_only_changes():
    assert listops.TreeOptions() == listops.TreeOptions(min_length=500, max_length=2000,
                                                        max_depth=10, max_args=10)
    trees = listops.TreeOptions.from_options({"train": 5, "seed": 1, "max_depth": 3})
    assert trees.max_depth == 3 and trees.changed() == {"max_depth": 3}
    with pytest.raises(ValueError, match="max_args must be an int >= 1"):
        listops.TreeOptions(max_args=0)
