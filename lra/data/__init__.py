"""LRA data: one module per task, each with `locate(data_dir, **options) -> Located` and
`read(located, *, max_len) -> TaskData`; `load_task` puts the on-disk cache in between."""

from __future__ import annotations

import logging
from importlib import import_module
from pathlib import Path
from types import ModuleType

from lra.data.base import DataNotFoundError, MalformedDataError, SplitArrays, TaskData, meets_sizes
from lra.data.cache import cached

log = logging.getLogger(__name__)

# Tasks: each is the module lra.data.<task> implementing locate() and read().
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


def task_module(name: str) -> ModuleType:
    """The data module of task `name`; a clear error lists the valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return import_module(f"lra.data.{name}")


def has_official_sizes(name: str, sizes: dict[str, int | str]) -> bool:
    """Whether every split is at least as large as in the task's official LRA release (its
    module's OFFICIAL_SIZES); a size not known ("?") counts as smaller."""
    return meets_sizes(sizes, task_module(name).OFFICIAL_SIZES)


def load_task(name: str, *, data_dir: str | Path, cache_dir: str | Path, max_len: int,
              **options) -> TaskData:
    """Locate a task's data, then read it through the cache (a second call re-reads nothing)."""
    module = task_module(name)
    try:
        located = module.locate(Path(data_dir), **options)
        settings = {"task": name, "max_len": max_len, **located.fingerprint()}
        data, hit = cached(cache_dir, name, settings, lambda: module.read(located, max_len=max_len))
    except (DataNotFoundError, MalformedDataError):
        raise
    except OSError as err:  # unreadable file or folder: permissions, I/O errors, a full disk
        raise MalformedDataError(
            f"cannot read the {name} data: {err}. Check that the files under {Path(data_dir).resolve()} "
            f"are readable and that the cache dir {Path(cache_dir).resolve()} is writable."
        ) from None
    log.info("%s data (%s, %s): %s%s", name, data.source, data.location, data.sizes(),
             " [cache hit]" if hit else "")
    return data


__all__ = ["DataNotFoundError", "MalformedDataError", "SplitArrays", "TaskData", "load_task",
           "task_module", "has_official_sizes", "TASKS"]
