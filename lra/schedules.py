"""Learning-rate schedules, built from the `sched` config group.

`configs/sched/<name>.yaml` names a builder here with `_target_` and `_partial_: true`; the
module calls the partial with its optimizer (`LRAModule.configure_optimizers`). A builder
returns a torch scheduler stepped once per optimizer step.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, start_factor: float = 0.1,
                  end_factor: float = 0.4) -> float:
    """LR multiplier: linear warmup from start_factor to 1, then cosine decay to end_factor."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                           start_factor: float = 0.1,
                           end_factor: float = 0.4) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine` as a per-step scheduler of `optimizer`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(
        step, warmup_steps=warmup_steps, total_steps=total_steps, start_factor=start_factor,
        end_factor=end_factor))


def constant_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The optimizer's own learning rate at every step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
