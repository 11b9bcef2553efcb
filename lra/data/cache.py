"""On-disk cache of tokenized splits: keyed by the settings that made them, written
atomically, memory-mapped on read, safe for parallel multirun jobs.

Layout: `<cache_dir>/<task>-<key hash>/` holding `meta.json` and per split `<split>.ids.npy`,
`<split>.labels.npy`. A cache entry is built in a temporary folder and renamed into place in
one step, under a file lock, so readers only ever see complete entries and two jobs that need
the same entry build it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from lra.data.base import MalformedDataError, SplitArrays, TaskData

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the on-disk layout or tokenization changes


def cache_key(settings: dict) -> str:
    """Stable short hash of everything that produced a cache entry."""
    blob = json.dumps({"format": CACHE_FORMAT, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_array(path: Path) -> np.ndarray:
    """Memory-map one cached array; an array of pickled objects is refused, never unpickled."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise MalformedDataError(
            f"{path}: not a cache array this project wrote ({err}); the cache only holds plain "
            f"integer arrays. Delete {path.parent} and the entry is rebuilt from the data.") from None


def _read_entry(folder: Path) -> TaskData:
    meta = json.loads((folder / "meta.json").read_text())
    splits = {
        name: SplitArrays(ids=_load_array(folder / f"{name}.ids.npy"),
                          labels=_load_array(folder / f"{name}.labels.npy"))
        for name in meta["splits"]
    }
    return TaskData(splits=splits, source=meta["source"], location=meta["location"],
                    notes=meta.get("notes", []))


def _write_entry(folder: Path, data: TaskData, settings: dict) -> None:
    folder.mkdir(parents=True)
    for name, split in data.splits.items():
        np.save(folder / f"{name}.ids.npy", np.ascontiguousarray(split.ids))
        np.save(folder / f"{name}.labels.npy", np.ascontiguousarray(split.labels))
    meta = {"splits": list(data.splits), "source": data.source, "location": data.location,
            "notes": data.notes, "sizes": data.sizes(), "settings": settings}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def cached(cache_dir: str | Path, task: str, settings: dict,
           build: Callable[[], TaskData]) -> tuple[TaskData, bool]:
    """Return the cached entry for `settings`, building it with `build()` on a miss.

    Returns (data, hit): hit is True when the entry already existed.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / f"{task}-{cache_key(settings)}"
    if (folder / "meta.json").is_file():
        return _read_entry(folder), True
    with FileLock(str(folder) + ".lock"):
        if (folder / "meta.json").is_file():  # another job built it while we waited
            return _read_entry(folder), True
        data = build()
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_dir))
        try:
            _write_entry(tmp / "entry", data, settings)
            os.replace(tmp / "entry", folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("cached %s data in %s", task, folder)
    return _read_entry(folder), False
