"""Retrieval: ACL Anthology Network (AAN) citation pairs (Radev et al. 2013) at byte level, as
packaged by the Long Range Arena (Tay et al. 2021).

Files: `tsv_data/new_aan_pairs.{train,eval,test}.tsv` (eval is the validation split), found at
any depth under the data dir. No header; 5 tab-separated columns `label, id1, id2, text1, text2`;
the label must be exactly 0 or 1 as a float (the release writes e.g. `1.0`; the reference's
int(float(x)) would train `1.7` as 1, which is an error here). Fields are split on tabs
only, with no quote handling, as the reference pipeline does. Official sizes 147086/18090/17437.

Each document is byte-encoded (id = UTF-8 byte + 1, 0 = padding) and truncated to `max_len`
(4000 per document); ids have shape (N, 2, max_len).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lra.data import sources
from lra.data.base import (
    DataNotFoundError,
    Located,
    MalformedDataError,
    SplitArrays,
    TaskData,
    check_labels,
    count_lines,
    find_file,
    release_source,
)
from lra.data.tokenizers import BYTE_OFFSET

NUM_CLASSES = 2
MAX_LEN = 4000
RELEASE_FILES = {"train": "tsv_data/new_aan_pairs.train.tsv",
                 "val": "tsv_data/new_aan_pairs.eval.tsv",
                 "test": "tsv_data/new_aan_pairs.test.tsv"}
OFFICIAL_SIZES = {"train": 147086, "val": 18090, "test": 17437}


def locate(data_dir: str | Path) -> Located:
    """The three AAN TSV files under `data_dir` (any nesting depth)."""
    found = {split: find_file(Path(data_dir), rel) for split, rel in RELEASE_FILES.items()}
    if not all(found.values()):
        missing = [RELEASE_FILES[s] for s, p in found.items() if p is None]
        raise DataNotFoundError(
            f"AAN (task retrieval) not found: searched {Path(data_dir).resolve()} (any depth) for "
            f"{', '.join(RELEASE_FILES.values())}; missing {', '.join(missing)}. Put the LRA release "
            "there (lra_release.gz from the Long Range Arena repository, "
            "https://storage.googleapis.com/long-range-arena/lra_release.gz, extracted with "
            "`tar xzf lra_release.gz -C $LRA_DATA_DIR`) or set LRA_DATA_DIR to where it is; "
            "check with `python scripts/prepare_data.py status`."
        )
    return Located(files=found, source=None)


def _lines(path: Path):
    """(line number, line without its newline) for every non-empty line, as bytes."""
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if line:
                yield line_no, line


def _label(field: bytes, path: Path, line_no: int) -> int:
    """0 or 1 from a label field ("0", "1", "0.0", "1.0"); anything else names file and line.

    The reference parses int(float(x)), which trains `1.7` as 1 and fails on `inf`; here only
    values that are exactly 0 or 1 as floats are accepted.
    """
    try:
        value = float(field)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        shown = field[:20].decode("utf-8", errors="replace")
        shown = shown.strip() if value is not None else repr(shown)  # a number as written
        raise MalformedDataError(
            f"{path}:{line_no}: label {shown} is not 0 or 1; the first column of an AAN row is the "
            "label, written 0, 1, 0.0 or 1.0: correct or remove that line, or use an unmodified "
            "copy of the LRA release (tsv_data/new_aan_pairs.*.tsv)."
        )
    return int(value)


def read_tsv(path: str | Path, max_len: int) -> SplitArrays:
    """One AAN TSV -> ids (N, 2, max_len) int16 and labels (N,)."""
    path = Path(path)
    count = sum(1 for _ in _lines(path))
    if count == 0:
        raise MalformedDataError(f"{path}: no examples")
    ids = sources.allocate((count, 2, max_len), np.int16)
    labels = np.zeros(count, dtype=np.int64)
    for row, (line_no, line) in enumerate(_lines(path)):
        fields = line.split(b"\t")
        if len(fields) != 5:
            raise MalformedDataError(f"{path}:{line_no}: expected 5 tab-separated columns "
                                     f"(label, id1, id2, text1, text2), got {len(fields)}")
        labels[row] = _label(fields[0], path, line_no)
        for doc, text in enumerate(fields[3:]):
            data = np.frombuffer(text[:max_len], dtype=np.uint8)
            ids[row, doc, : data.size] = data
            ids[row, doc, : data.size] += BYTE_OFFSET
    return SplitArrays(ids=ids, labels=check_labels(labels, NUM_CLASSES, str(path)))


def read(located: Located, *, max_len: int = MAX_LEN) -> TaskData:
    """Read all splits; a copy smaller than the official one is marked `sample`."""
    splits = {split: read_tsv(path, max_len) for split, path in located.files.items()}
    source = source_of(located, {s: len(a) for s, a in splits.items()})
    notes = list(located.notes)
    empty = {s: int((np.asarray(a.ids[:, :, 0]) == 0).sum()) for s, a in splits.items()}
    if any(empty.values()):
        notes.append(f"empty documents (all padding) per split: {empty}")
    return TaskData(splits=splits, source=source, location=str(located.files["train"].parent),
                    notes=notes)


def split_sizes(located: Located) -> dict[str, int]:
    """Split sizes of located files without reading them (one pair per line)."""
    return {split: count_lines(path) for split, path in located.files.items()}


def source_of(located: Located, sizes: dict[str, int | str]) -> str:
    """official when the splits are the official release's sizes, else sample."""
    return located.source or release_source(sizes, OFFICIAL_SIZES)
