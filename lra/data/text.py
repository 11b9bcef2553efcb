"""Text: IMDB sentiment (Maas et al. 2011) at byte level, as in the Long Range Arena (Tay et al.
2021) and its PyTorch reproductions (Skyformer, LOTFormer): max length 4000 bytes.

Splits: 25k train and 25k test reviews; the test set doubles as validation (val = test, as in
the reference pipelines). Inputs, searched in this order (`source="auto"`):

1. "raw":  the `aclImdb/` folder of the Stanford download (`train/{pos,neg}/*.txt`,
   `test/{pos,neg}/*.txt`; label pos = 1, neg = 0), at any depth under the data dir.
2. "hf":   a local copy of the Hugging Face dataset `stanfordnlp/imdb`: parquet files
   (`plain_text/train-*.parquet`, `plain_text/test-*.parquet`) in a folder named `imdb`,
   `stanfordnlp___imdb` or `datasets--stanfordnlp--imdb` under the data dir, or in the local
   Hugging Face hub / datasets caches; read offline with `datasets.load_dataset("parquet")`.
3. "tfds": a prepared TFDS `imdb_reviews` (ArrayRecord format) in a TFDS data dir under the data
   dir (or $TFDS_DATA_DIR, ~/tensorflow_datasets), read with `tfds.data_source`.

Token ids: id = UTF-8 byte + 1 (1..256, 0 = padding), see `lra.data.tokenizers`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lra.data import sources
from lra.data.base import Located, MalformedDataError, SplitArrays, TaskData, check_labels
from lra.data.tokenizers import encode_batch

NUM_CLASSES = 2
MAX_LEN = 4000
OFFICIAL_SIZES = {"train": 25000, "test": 25000}
HF_REPO = "stanfordnlp/imdb"
TFDS_NAME, TFDS_CONFIG = "imdb_reviews", "plain_text"
RAW_FOLDERS = [f"{split}/{label}" for split in ("train", "test") for label in ("neg", "pos")]


# ----------------------------------------------------------------------------- locate
def locate(data_dir: str | Path, *, source: str = "auto", search_caches: bool = True) -> Located:
    """Find IMDB under `data_dir`: raw `aclImdb/`, then Hugging Face files, then TFDS.

    source: "auto" (that order) or one of "raw", "hf", "tfds" to insist on one.
    search_caches: also look in the Hugging Face caches and the default TFDS data dirs.
    """
    return sources.locate_download(
        Path(data_dir), task="IMDB (task text)", source=source, search_caches=search_caches,
        raw_folder="aclImdb", raw_required=RAW_FOLDERS, raw_reader="aclImdb", hf_repo=HF_REPO,
        tfds_name=TFDS_NAME, tfds_config=TFDS_CONFIG, how_to_get=(
            "Provide one of: (1) the raw download "
            "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz extracted into the data dir "
            "(`tar xzf aclImdb_v1.tar.gz -C $LRA_DATA_DIR`); (2) the Hugging Face parquet files of "
            "stanfordnlp/imdb (`huggingface-cli download stanfordnlp/imdb --repo-type dataset "
            "--local-dir $LRA_DATA_DIR/imdb`); (3) a TFDS copy prepared as ArrayRecord "
            "(`tfds.builder('imdb_reviews', data_dir='$LRA_DATA_DIR/tensorflow_datasets')"
            ".download_and_prepare(file_format='array_record')`)."))


# ----------------------------------------------------------------------------- read
_REVIEW_NAME = re.compile(r"^(\d+)_")


def _review_order(path: Path) -> tuple:
    match = _REVIEW_NAME.match(path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _read_raw(located: Located, max_len: int) -> dict[str, tuple[list[bytes], list[int], list[str]]]:
    out = {}
    for split in ("train", "test"):
        texts, labels, where = [], [], []
        for label, name in enumerate(("neg", "pos")):
            folder = located.files[f"{split}_{name}"]
            for path in sorted(folder.glob("*.txt"), key=_review_order):
                texts.append(path.read_bytes()[:max_len])
                labels.append(label)
                where.append(str(path))
        if not texts:
            raise MalformedDataError(f"{folder.parent}: no *.txt reviews in pos/ or neg/")
        out[split] = (texts, labels, where)
    return out


def _read_hf(located: Located) -> dict[str, tuple[list, list[int], list[str]]]:
    files: dict[str, list[Path]] = {}
    for key, path in located.files.items():
        files.setdefault(key.rsplit("_", 1)[0], []).append(path)
    try:
        tables = sources.load_hf_files(files, ["text", "label"])
    except KeyError as err:
        raise MalformedDataError(str(err)) from None
    return {split: (t["text"], t["label"], [f"{files[split][0]} row {i}" for i in range(len(t["text"]))])
            for split, t in tables.items()}


def _read_tfds(located: Located) -> dict[str, tuple[list, list[int], list[str]]]:
    version_dir = Path(located.settings["version_dir"])
    out = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for example in sources.iterate_source(sources.tfds_source(version_dir, TFDS_NAME, split)):
            texts.append(example["text"])
            labels.append(int(example["label"]))
        out[split] = (texts, labels, [f"{version_dir} {split} example {i}" for i in range(len(texts))])
    return out


def read(located: Located, *, max_len: int = MAX_LEN) -> TaskData:
    """Tokenize train and test; val is the test split (same arrays)."""
    reader = located.settings.get("reader")
    if reader == "aclImdb":
        raw = _read_raw(located, max_len)
        location = str(located.files["train_neg"].parent.parent)
    elif reader == "hf":
        raw = _read_hf(located)
        location = str(next(iter(located.files.values())).parent)
    elif reader == "tfds":
        raw = _read_tfds(located)
        location = located.settings["version_dir"]
    else:
        raise ValueError(f"unknown text reader {reader!r}")
    splits = {}
    for split, (texts, labels, where) in raw.items():
        for text, place in zip(texts, where):
            if text is None or len(text) == 0:
                raise MalformedDataError(f"{place}: empty review (it would be all padding)")
        ids = encode_batch(texts, max_len)
        splits[split] = SplitArrays(ids=ids, labels=check_labels(np.array(labels), NUM_CLASSES, location))
    notes = list(located.notes) + ["val is the test split (IMDB has no validation split)"]
    small = {s: len(splits[s]) for s in OFFICIAL_SIZES if len(splits[s]) < OFFICIAL_SIZES[s]}
    if small:
        notes.append(f"smaller than the official IMDB sizes {OFFICIAL_SIZES}: {small}")
    return TaskData(splits={"train": splits["train"], "val": splits["test"], "test": splits["test"]},
                    source=located.source, location=location, notes=notes)


def split_sizes(located: Located) -> dict[str, int | str]:
    """Split sizes without reading a review; val is the test split."""
    counts = sources.raw_split_counts(located)
    return {"train": counts.get("train", "?"), "val": counts.get("test", "?"),
            "test": counts.get("test", "?")}


def source_of(located: Located, sizes: dict[str, int | str]) -> str:
    """The download's kind (raw, hf, tfds): IMDB has no separate LRA release."""
    return located.source
