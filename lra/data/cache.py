"""On-disk cache of tokenized splits: keyed by the settings that made them, written
atomically, memory-mapped on read, verified on open, safe for parallel multirun jobs.

Layout: `<cache_dir>/<task>-<key hash>/` holding `meta.json` and per split `<split>.ids.npy`,
`<split>.labels.npy`. A cache entry is built in a temporary folder and renamed into place in
one step, under a file lock, so readers only ever see complete entries and two jobs that need
the same entry build it once. A failed build (a reader error, a full disk) leaves nothing behind.

Integrity: `meta.json` records for every array file its shape, dtype, byte size and a blake2b
(16-byte) checksum of the file's bytes. Opening an entry checks all of them; an entry that
fails (a file missing, truncated or rewritten, changed labels, an unreadable `meta.json`) is
removed and rebuilt with a warning naming it. Label files and files up to FULL_CHECKSUM_BYTES
are checksummed in full; larger id files (e.g. Path-X, 6.5 GB) over SAMPLE_BLOCKS blocks of
SAMPLE_BLOCK_BYTES at evenly spaced offsets (first and last block included), which keeps the
check under a second per file (blake2b: a 100 MB file in 0.23 s, measured on a shared 2-core
VM; a 400 MB id file sampled in 0.43 s): a rewrite of a whole region is
caught, a single changed byte between sampled blocks of a large id file is not (its size,
header, shape and dtype still are). An entry with an empty split is never written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from lra.data.base import CacheError, MalformedDataError, SplitArrays, TaskData

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the on-disk layout or tokenization changes (2: checksummed arrays)
FULL_CHECKSUM_BYTES = 256 << 20  # files up to this size are checksummed in full
SAMPLE_BLOCKS = 256  # larger files: this many blocks ...
SAMPLE_BLOCK_BYTES = 1 << 20  # ... of this size, evenly spaced


class DamagedEntry(Exception):
    """A cache entry that cannot be used as it is (the message says why); it is rebuilt."""


def cache_key(settings: dict) -> str:
    """Stable short hash of everything that produced a cache entry."""
    blob = json.dumps({"format": CACHE_FORMAT, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- checksums
def _block_offsets(size: int, full: bool) -> list[int] | None:
    """Start offsets of the blocks to checksum, or None for the whole file."""
    if full or size <= FULL_CHECKSUM_BYTES:
        return None
    last = size - SAMPLE_BLOCK_BYTES
    return sorted({round(i * last / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)})


def file_checksum(path: Path, full: bool = False) -> tuple[str, str]:
    """(blake2b hex digest, what was hashed: 'all' or the sample) of the bytes of `path`."""
    digest = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    offsets = _block_offsets(size, full)
    with open(path, "rb") as handle:
        if offsets is None:
            for chunk in iter(lambda: handle.read(16 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest(), "all"
        for offset in offsets:
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest(), f"{len(offsets)} blocks of {SAMPLE_BLOCK_BYTES} bytes"


# ----------------------------------------------------------------------------- read
def _array_files(splits: list[str]) -> list[tuple[str, str, str]]:
    """(split, kind, file name) of every array of an entry."""
    return [(name, kind, f"{name}.{kind}.npy") for name in splits for kind in ("ids", "labels")]


def _read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedEntry("meta.json is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedEntry(f"meta.json is unreadable ({err})") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("splits"), list)
            and isinstance(meta.get("arrays"), dict) and "source" in meta and "location" in meta):
        raise DamagedEntry("meta.json lacks splits, arrays, source or location")
    return meta


def _open_array(folder: Path, file: str, record: dict, verify: bool) -> np.ndarray:
    path = folder / file
    if verify:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DamagedEntry(f"{file} is missing") from None
        if size != record.get("bytes"):
            raise DamagedEntry(f"{file} has {size} bytes, {record.get('bytes')} were written")
        if file_checksum(path, full=file.endswith(".labels.npy"))[0] != record.get("checksum"):
            raise DamagedEntry(f"{file} does not match its checksum (its bytes were changed)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DamagedEntry(f"{file} is missing") from None
    except (OSError, ValueError, EOFError) as err:  # a bad header, a truncated file
        raise DamagedEntry(f"{file} is not a readable .npy file ({err})") from None
    if list(array.shape) != record.get("shape") or str(array.dtype) != record.get("dtype"):
        raise DamagedEntry(f"{file} holds {array.dtype} {list(array.shape)}, "
                           f"{record.get('dtype')} {record.get('shape')} were written")
    return array


def _read_entry(folder: Path, verify: bool = True) -> TaskData:
    """The entry in `folder`, memory-mapped; raises DamagedEntry if it fails any check."""
    meta = _read_meta(folder)
    arrays = {}
    for name, kind, file in _array_files(meta["splits"]):
        record = meta["arrays"].get(file)
        if not isinstance(record, dict):
            raise DamagedEntry(f"meta.json has no record of {file}")
        arrays[name, kind] = _open_array(folder, file, record, verify)
    try:
        splits = {name: SplitArrays(ids=arrays[name, "ids"], labels=arrays[name, "labels"])
                  for name in meta["splits"]}
    except ValueError as err:  # id rows and labels disagree
        raise DamagedEntry(str(err)) from None
    return TaskData(splits=splits, source=meta["source"], location=meta["location"],
                    notes=meta.get("notes", []))


# ----------------------------------------------------------------------------- write
def _check_not_empty(task: str, data: TaskData) -> None:
    """Never cache a split with no examples: it would train or evaluate on nothing, every run."""
    empty = [name for name, split in data.splits.items() if len(split) == 0]
    if empty or not data.splits:
        what = f"split {', '.join(empty)} is empty" if data.splits else "there are no splits"
        notes = f" Reader notes: {'; '.join(data.notes)}." if data.notes else ""
        raise MalformedDataError(
            f"{task}: {what} after reading {data.location}, so nothing was cached; check that the "
            f"input files there hold readable examples.{notes}"
        )


def _write_entry(folder: Path, data: TaskData, settings: dict) -> None:
    folder.mkdir(parents=True)
    arrays = {}
    for name, kind, file in _array_files(list(data.splits)):
        split = data.splits[name]
        array = np.ascontiguousarray(split.ids if kind == "ids" else split.labels)
        np.save(folder / file, array, allow_pickle=False)
        checksum, scope = file_checksum(folder / file, full=kind == "labels")
        arrays[file] = {"shape": list(array.shape), "dtype": str(array.dtype),
                        "bytes": (folder / file).stat().st_size, "checksum": checksum,
                        "checksum_of": scope}
    meta = {"splits": list(data.splits), "source": data.source, "location": data.location,
            "notes": data.notes, "sizes": data.sizes(), "arrays": arrays, "settings": settings}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's message for a short write


def _disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT) or bool(_SHORT_WRITE.search(str(err)))


def _discard(folder: Path, reason: str) -> None:
    """Remove a damaged entry (renamed aside first, so no reader sees it half-deleted)."""
    log.warning("cache entry %s is damaged (%s); removing and rebuilding it", folder, reason)
    aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
    try:
        os.replace(folder, aside)
    except FileNotFoundError:
        return
    except OSError as err:
        raise CacheError(
            f"cache entry {folder} is damaged ({reason}) and cannot be removed ({err.strerror}); "
            f"delete that folder (`rm -r {folder}`) and run again."
        ) from None
    shutil.rmtree(aside, ignore_errors=True)


def cached(cache_dir: str | Path, task: str, settings: dict,
           build: Callable[[], TaskData]) -> tuple[TaskData, bool]:
    """Return the cached entry for `settings`, building it with `build()` on a miss.

    Returns (data, hit): hit is True when the entry already existed and passed its checks.
    A damaged entry is rebuilt (with a warning naming it).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / f"{task}-{cache_key(settings)}"
    if (folder / "meta.json").is_file():
        try:
            return _read_entry(folder), True
        except DamagedEntry:
            pass  # checked again and removed under the lock, where no other job is rebuilding it
    with FileLock(str(folder) + ".lock"):
        if folder.exists():  # built by another job while we waited, or damaged
            try:
                return _read_entry(folder), True
            except DamagedEntry as err:
                _discard(folder, str(err))
        data = build()
        _check_not_empty(task, data)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_dir))
        try:
            _write_entry(tmp / "entry", data, settings)
            os.replace(tmp / "entry", folder)
        except OSError as err:
            if not _disk_full(err):
                raise
            raise CacheError(
                f"no space left on device while writing cache entry {folder} ({err}); nothing was "
                f"kept. Free space under {cache_dir}, or put the cache elsewhere: set LRA_DATA_DIR "
                "(the cache is $LRA_DATA_DIR/.cache) or the cache dir (paths.cache_dir=... for "
                "train.py, --cache-dir for scripts/prepare_data.py)."
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("cached %s data in %s", task, folder)
    return _read_entry(folder, verify=False), False
