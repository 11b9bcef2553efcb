"""LightningDataModule over a task's cached splits: batches of (ids, mask, label, index).

ids and mask are (B, L) or, for two-document tasks (retrieval), (B, 2, L); mask = ids != 0;
index holds the examples' row numbers (reported when a batch goes wrong). With
`trim_padding`, each batch is cut to its longest sequence, which saves compute without
changing any valid token.

`num_workers` loader processes and `pin_memory` (page-locked batches, for faster copies to a
GPU) come from the trainer config. `batch_size` is the global batch: with several devices
each gets batch_size / devices.
Training batches come from a step-indexed sampler (lra/sampling.py), so resuming at step k
continues the exact data order; evaluation splits are sharded across ranks without padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lra.data import TaskData, load_task
from lra.data.base import MalformedDataError, SplitArrays
from lra.sampling import StepBatchSampler, shard


class SplitDataset(Dataset):
    """Index into one memory-mapped split."""

    def __init__(self, split: SplitArrays) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        return np.asarray(self.split.ids[index]), int(self.split.labels[index]), index


def collate(batch: list[tuple[np.ndarray, int, int]], trim_padding: bool = True):
    """Stack examples into (ids, mask, labels, indices); optionally trim trailing padding."""
    ids = torch.from_numpy(np.stack([item[0] for item in batch]).astype(np.int64))  # (B, [2,] L)
    labels = torch.tensor([item[1] for item in batch], dtype=torch.long)  # (B,)
    indices = torch.tensor([item[2] for item in batch], dtype=torch.long)  # (B,)
    mask = ids != 0
    if trim_padding:
        used = mask.reshape(-1, mask.shape[-1]).any(dim=0)  # (L,)
        length = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
        ids, mask = ids[..., :length], mask[..., :length]
    return ids, mask, labels, indices


@dataclass
class DataConfig:
    """What the data module serves: task, where its files and cache are, lengths, batches.

    Built from configs/datamodule/ (`_target_: lra.datamodule.DataConfig`), which takes the task,
    paths and trainer settings by interpolation. `options` are the task reader's own options
    (`task.data`, e.g. ListOps' `generate`); `batch_size` is the global batch.
    """

    task: str
    data_dir: str | Path
    cache_dir: str | Path
    max_len: int
    batch_size: int
    eval_batch_size: int | None = None  # None: batch_size
    num_workers: int = 0
    pin_memory: bool = False  # page-locked batches (faster copies to a GPU)
    trim_padding: bool = True
    seed: int = 0
    total_steps: int = 1  # training steps the sampler draws batches for
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.data_dir, self.cache_dir = Path(self.data_dir), Path(self.cache_dir)
        self.eval_batch_size = self.eval_batch_size or self.batch_size
        self.options = dict(self.options or {})


class LRADataModule(L.LightningDataModule):
    """Loads a task through the cache once, then serves seeded, shuffled batches."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.data: TaskData | None = None

    def load(self) -> TaskData:
        """Load (or build) the cached data; safe to call from every process."""
        if self.data is None:
            c = self.config
            data = load_task(c.task, data_dir=c.data_dir, cache_dir=c.cache_dir, max_len=c.max_len,
                             **c.options)
            for name, split in data.splits.items():
                check_not_empty(split, f"{c.task} {name} split ({data.location})")
            self.data = data
        return self.data

    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _placement(self) -> tuple[int, int, int]:
        """(global step, rank, world size) of the attached trainer, or a fresh single process."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0, 1
        return trainer.global_step, trainer.global_rank, trainer.world_size

    def _per_device(self, batch_size: int, world_size: int) -> int:
        if batch_size < world_size or batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} cannot be split evenly over {world_size} devices; "
                "set task.batch_size to a multiple of trainer.devices x trainer.num_nodes"
            )
        return batch_size // world_size

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset, num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0, pin_memory=self.config.pin_memory,
            collate_fn=partial(collate, trim_padding=self.config.trim_padding),
            # An own generator keeps loaders from drawing on the global RNG (dropout's), so a
            # resumed run and an uninterrupted one consume the same random numbers.
            generator=torch.Generator().manual_seed(self.config.seed), **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        step, rank, world = self._placement()
        split = self.load().splits["train"]
        c = self.config
        sampler = StepBatchSampler(len(split), self._per_device(c.batch_size, world), seed=c.seed,
                                   total_steps=c.total_steps, start_step=step, rank=rank,
                                   world_size=world)
        return self._loader(SplitDataset(split), batch_sampler=sampler)

    def _eval_loader(self, name: str) -> DataLoader:
        _, rank, world = self._placement()
        split = self.load().splits[name]
        dataset = Subset(SplitDataset(split), shard(len(split), rank, world))
        return self._loader(dataset, batch_size=self._per_device(self.config.eval_batch_size, world),
                            shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def check_not_empty(split: SplitArrays, where: str) -> None:
    """Raise a clear error if any example has no token at all (it cannot be pooled)."""
    ids = split.ids.reshape(len(split), -1, split.ids.shape[-1])  # (N, docs, L)
    empty = np.flatnonzero(~(ids != 0).any(axis=-1).all(axis=-1))
    if empty.size:
        raise MalformedDataError(
            f"{where}: {empty.size} example(s) are all padding (first at row {empty[0]}); "
            "every example needs at least one token. Fix or drop these rows and rebuild the cache "
            "(delete the task's folder under the cache dir)."
        )
