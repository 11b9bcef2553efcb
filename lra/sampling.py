"""Step-indexed batch sampling: the batch at optimizer step s is a pure function of
(seed, s), so a run resumed at step k sees exactly the batches an uninterrupted run would.

Each epoch is a fresh permutation drawn from `seed` and the epoch number; the global batch of
a step is split evenly across data-parallel ranks; the remainder of an epoch that does not
fill a global batch is dropped (training only).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields the per-rank index batches of steps `start_step .. total_steps - 1`.

    `len()` is `total_steps` whatever `start_step` is: Lightning counts the batches of a
    restored epoch from the step it resumes at, so the epoch ends exactly at `total_steps`.
    """

    def __init__(self, num_examples: int, batch_size: int, *, seed: int, total_steps: int,
                 start_step: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.global_batch = batch_size * world_size
        if num_examples < self.global_batch:
            raise ValueError(
                f"the training split has {num_examples} examples, fewer than one global batch "
                f"({batch_size} per device x {world_size} devices); lower task.batch_size"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.start_step = start_step
        self.rank = rank
        self.steps_per_epoch = num_examples // self.global_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The example order of one epoch: (num_examples,) indices."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=generator)

    def batch_at(self, step: int, order: torch.Tensor | None = None) -> list[int]:
        """This rank's indices for optimizer step `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self.permutation(epoch) if order is None else order
        start = position * self.global_batch + self.rank * self.batch_size
        return order[start: start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch, order = None, None
        for step in range(self.start_step, self.total_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = self.permutation(epoch)
            yield self.batch_at(step, order)

    def __len__(self) -> int:
        return self.total_steps


def shard(num_examples: int, rank: int, world_size: int) -> list[int]:
    """Evaluation indices of one rank: every example exactly once across ranks, no padding."""
    return list(range(rank, num_examples, world_size))
