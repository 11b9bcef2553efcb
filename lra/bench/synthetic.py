"""Synthetic LRA data in a task's training shape, for timing training steps and loaders.

Token ids lie in the task's vocabulary (1 .. vocab_size - 1; 0 is padding), labels in its
classes, and padding follows the real data roughly: every example has a length drawn
uniformly from [min_fraction x max_len, max_len] (:data:`MIN_LENGTH_FRACTION`: ListOps 500-2000
symbols, IMDB reviews mostly shorter than 4000 bytes, AAN papers mostly longer; pixel tasks
are never padded), and example 0 of every ``batch_size`` block has the full length, so that
consecutive batches keep the full max_len after padding is trimmed (the shape the papers time).
Two-document tasks (retrieval) have two documents per example: ids (N, 2, L).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lra.data.base import SplitArrays, TaskData

MIN_LENGTH_FRACTION = {"listops": 0.25, "text": 0.05, "retrieval": 0.5}  # others: 1 (no padding)


def synthetic_split(task: str, *, n: int, max_len: int, vocab_size: int, num_classes: int,
                    dual: bool, batch_size: int, seed: int = 0) -> SplitArrays:
    """n examples: ids (n, L) or (n, 2, L) int16, labels (n,) int64."""
    rng = np.random.default_rng(seed)
    docs = 2 if dual else 1
    ids = rng.integers(1, vocab_size, size=(n, docs, max_len)).astype(np.int16)  # (n, docs, L)
    low = max(1, int(MIN_LENGTH_FRACTION.get(task, 1.0) * max_len))
    lengths = rng.integers(low, max_len + 1, size=(n, docs))  # (n, docs)
    lengths[::batch_size, 0] = max_len  # a full-length document in every batch
    ids[np.arange(max_len) >= lengths[..., None]] = 0
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)  # (n,)
    return SplitArrays(ids if dual else ids[:, 0], labels)


def synthetic_task_data(task_cfg, *, n: int, folder: Path | None = None,
                        seed: int = 0) -> TaskData:
    """A train split of n synthetic examples for the task config node (name, max_len,
    vocab_size, num_classes, dual, batch_size); with ``folder``, saved there and memory-mapped
    like the real cache."""
    split = synthetic_split(task_cfg.name, n=n, max_len=task_cfg.max_len,
                            vocab_size=task_cfg.vocab_size, num_classes=task_cfg.num_classes,
                            dual=task_cfg.dual, batch_size=task_cfg.batch_size, seed=seed)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "ids.npy", split.ids)
        np.save(folder / "labels.npy", split.labels)
        split = SplitArrays(np.load(folder / "ids.npy", mmap_mode="r"),
                            np.load(folder / "labels.npy", mmap_mode="r"))
    return TaskData(splits={"train": split, "val": split, "test": split}, source="generated",
                    location=str(folder) if folder else "memory",
                    notes=["synthetic data in the task's shape (lra.bench.synthetic)"])
