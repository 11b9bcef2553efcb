"""LightningDataModule over a task's cached splits: batches of (ids, mask, label).

ids and mask are (B, L) or, for two-document tasks (retrieval), (B, 2, L); mask = ids != 0.
With `trim_padding`, each batch is cut to its longest sequence, which saves compute without
changing any valid token.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lra.data import TaskData, load_task
from lra.data.base import SplitArrays


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


class LRADataModule(L.LightningDataModule):
    """Loads a task through the cache once, then serves seeded, shuffled batches."""

    def __init__(self, *, task: str, data_dir: str | Path, cache_dir: str | Path, max_len: int,
                 batch_size: int, eval_batch_size: int | None = None, num_workers: int = 0,
                 trim_padding: bool = True, seed: int = 0, data_options: dict | None = None) -> None:
        super().__init__()
        self.task = task
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir)
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.trim_padding = trim_padding
        self.seed = seed
        self.data_options = dict(data_options or {})
        self.data: TaskData | None = None

    def load(self) -> TaskData:
        """Load (or build) the cached data; safe to call from every process."""
        if self.data is None:
            self.data = load_task(self.task, data_dir=self.data_dir, cache_dir=self.cache_dir,
                                  max_len=self.max_len, **self.data_options)
        return self.data

    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.load()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            SplitDataset(data.splits[split]),
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=lambda batch: collate(batch, self.trim_padding),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
