"""What every task's data module produces, and the errors readers raise."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lra.errors import UserError

SPLITS = ("train", "val", "test")
# Where the data came from, as recorded in every results record.
SOURCES = ("official", "sample", "generated", "raw", "hf", "tfds")


class DataNotFoundError(UserError, FileNotFoundError):
    """A task's data is missing; the message lists the paths searched and how to get it."""


class MalformedDataError(UserError, ValueError):
    """A data file has a row that cannot be read; the message names file and line."""


class CacheError(UserError):
    """The cache of tokenized splits cannot be written or repaired (a full disk, a damaged
    entry that cannot be removed); the message names the entry and what to do."""


@dataclass
class SplitArrays:
    """One split, tokenized and padded with 0.

    ids: (N, L) int, or (N, 2, L) for two-document tasks (retrieval); labels: (N,) int64.
    """

    ids: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels):
            raise ValueError(f"{len(self.ids)} id rows but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """All splits of a task plus where they came from."""

    splits: dict[str, SplitArrays]
    source: str  # one of SOURCES
    location: str  # file or folder the data was read from
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source {self.source!r} is not one of {', '.join(SOURCES)}")

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}


@dataclass
class Located:
    """Input files of a task, found (or generated) but not yet read.

    files: named input paths (e.g. per split); their sizes and modification times key the
    cache. source: one of SOURCES, or None to let the reader decide (official vs sample).
    """

    files: dict[str, Path]
    source: str | None
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # extra reader settings that key the cache

    def fingerprint(self) -> dict:
        """Everything about the inputs that should invalidate a cache entry when it changes."""
        stats = {}
        for name, path in sorted(self.files.items()):
            path = Path(path)
            stat = path.stat()
            stats[name] = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
        return {"files": stats, "source": self.source, **self.settings}


def release_source(sizes: dict[str, int | str], official: dict[str, int]) -> str:
    """'official' when every split is at least as large as the official release's, else
    'sample' (a size not known, "?", counts as smaller)."""
    return "official" if meets_sizes(sizes, official) else "sample"


def meets_sizes(sizes: dict[str, int | str], official: dict[str, int]) -> bool:
    """Every split of `official` is at least that large in `sizes` ("?" counts as smaller)."""
    return all(isinstance(sizes.get(s), int) and sizes[s] >= n for s, n in official.items())


def generate_options(generate: object, example: str) -> Mapping:
    """`task.data.generate` as a mapping, or a ValueError that shows the expected form."""
    if not isinstance(generate, Mapping):
        raise ValueError(f"task.data.generate must be a mapping such as {example}, got {generate!r}")
    return generate


def count_lines(path: Path, header: bool = False) -> int:
    """Non-blank lines of a text file (less a header line): a split's size without reading it."""
    with open(path, "rb") as handle:
        count = sum(1 for line in handle if line.strip())
    return count - int(header)


def pad_rows(rows: list[list[int]] | list[np.ndarray], max_len: int,
             dtype: type = np.int16) -> np.ndarray:
    """Stack token-id rows into (N, max_len), truncating long rows and padding with 0."""
    out = np.zeros((len(rows), max_len), dtype=dtype)
    for i, row in enumerate(rows):
        row = row[:max_len]
        out[i, : len(row)] = row
    return out


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Return labels as int64, or raise if any lies outside [0, num_classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise MalformedDataError(
            f"{where}: label {labels[bad[0]]} of example {bad[0] + 1} (1-based, in reading "
            f"order) is outside 0..{num_classes - 1}; the file does not match this task"
        )
    return labels


def walk_folders(root: Path, max_depth: int = 4,
                 stop_below: Callable[[Path], bool] = lambda folder: False) -> Iterator[Path]:
    """Folders under `root` (itself first), breadth-first down to `max_depth` levels.

    Folders that never hold inputs (`_NEVER_SEARCHED`: image folders, caches, generated copies)
    are skipped, so large image trees are never walked; a folder for which `stop_below` is true
    is yielded but not descended into. Lazy: a search that stops early walks no further.
    """
    level = [Path(root)] if Path(root).is_dir() else []
    for _ in range(max_depth + 1):
        next_level: list[Path] = []
        for folder in level:
            yield folder
            if stop_below(folder):
                continue
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            next_level += [c for c in children if c.name not in _NEVER_SEARCHED]
        level = next_level


def find_file(root: Path, relative: str, max_depth: int = 4) -> Path | None:
    """Find `relative` (e.g. 'listops-1000/basic_train.tsv') under root at any nesting depth.

    Release copies nest differently (`lra_release/` vs `lra_release/lra_release/`); the
    shallowest match wins (see `walk_folders`).
    """
    return next((folder / relative for folder in walk_folders(root, max_depth)
                 if (folder / relative).is_file()), None)


# Folders that never hold a release copy (image folders, caches, generated copies, which are
# found by their own settings); skipped while searching.
_NEVER_SEARCHED = {"imgs", "metadata", "generated", ".cache", "cache", "__pycache__", ".git"}
