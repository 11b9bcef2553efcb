"""`AttentionDiagnostics`: attention diagnostics on a fixed validation batch during training.

Off by default: `callbacks/diagnostics=on` adds it (configs/callbacks/diagnostics/), and when
off it is not instantiated at all. Every `every_n_steps` optimizer steps it runs the first
`examples` validation examples through the model in eval mode (global random state untouched)
and logs, per layer and averaged over heads, `diag/<metric>/layer<i>` to every logger. After
the test of the best checkpoint the runner asks :func:`best_checkpoint_diagnostics` for the
results record's `diagnostics`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from torch import nn

from lotformer.attention.base import DENSE_MAP_MAX_LEN
from lra.diagnostics.probe import attention_maps, fixed_batch, head_rows, layer_rows

log = logging.getLogger(__name__)


class AttentionDiagnostics(L.Callback):
    """Diagnostics of the attention maps on a fixed batch of `split`, every `every_n_steps`.

    max_len: tokens per example kept for the dense maps (None: DENSE_MAP_MAX_LEN).
    """

    def __init__(self, every_n_steps: int = 200, examples: int = 8, split: str = "val",
                 max_len: int | None = None) -> None:
        if every_n_steps < 1 or examples < 1:
            raise ValueError(f"diagnostics need every_n_steps >= 1 and examples >= 1, got "
                             f"{every_n_steps} and {examples}")
        self.every_n_steps = every_n_steps
        self.examples = examples
        self.split = split
        self.max_len = min(max_len or DENSE_MAP_MAX_LEN, DENSE_MAP_MAX_LEN)
        self.batch = None  # (ids, mask, labels, indices) on the CPU

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.batch is None:
            split = trainer.datamodule.load().splits[self.split]
            self.batch = fixed_batch(split, self.examples, self.max_len)

    def measure(self, model: nn.Module) -> tuple[list[dict], list[dict]]:
        """(per-layer rows averaged over heads, per-head rows) on the fixed batch."""
        device = next(model.parameters()).device
        ids, mask = (t.to(device) for t in self.batch[:2])
        heads = head_rows(attention_maps(model, ids, mask))
        return layer_rows(heads), heads

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero or not trainer.loggers:
            return
        layers, _ = self.measure(pl_module)
        metrics = {f"diag/{name}/layer{row['layer']}": value
                   for row in layers for name, value in row.items() if name != "layer"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def record(self, model: nn.Module, checkpoint: str | None) -> dict[str, Any]:
        """The results record's `diagnostics`: the batch it used and the rows of `measure`."""
        layers, heads = self.measure(model)
        ids = self.batch[0]
        return {"split": self.split, "indices": self.batch[3].tolist(),
                "tokens": int(ids.shape[-1]), "checkpoint": checkpoint or None,
                "layers": layers, "heads": heads}


def best_checkpoint_diagnostics(trainer: L.Trainer, model: nn.Module) -> dict[str, Any] | None:
    """The record's diagnostics of `model` (after `trainer.test(ckpt_path=best)` it holds the
    best checkpoint's weights), or None when the run has no AttentionDiagnostics callback."""
    callback = next((c for c in trainer.callbacks if isinstance(c, AttentionDiagnostics)), None)
    if callback is None or callback.batch is None:
        return None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
    return callback.record(model, best)
