"""LightningModule for LRA: the shared encoder, a classification head, and the optimizer and
schedule its config groups build (configs/optim/, configs/sched/).

Single-document tasks classify the pooled features u; two-document tasks (retrieval) encode
both documents with one encoder and classify [u, v, u*v, u-v] (REFERENCE §2).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lotformer.encoder import LRAEncoder
from lra.errors import ConfigError, NonFiniteLossError

log = logging.getLogger(__name__)
NONFINITE_POLICIES = ("stop", "skip")

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # params -> optimizer
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]  # optimizer -> per-step scheduler


def compile_options(value: bool | str | None) -> dict | None:
    """`trainer.compile`: false/null -> None (eager), true -> {} (torch.compile's default
    inductor backend), a backend name such as "eager" or "aot_eager" -> {"backend": name}."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str) and value.strip():
        return {"backend": value.strip()}
    raise ConfigError(f"trainer.compile must be true, false or a torch.compile backend name "
                      f"(e.g. inductor, aot_eager, eager), got {value!r}; set trainer.compile=false "
                      "to train without compiling")


@dataclass
class ModelConfig:
    """The classifier: task shape, encoder size and the attention node (name + options).

    Built from configs/model/ (`_target_: lra.module.ModelConfig`), which takes the task's
    shape and the `attn` node by interpolation.
    """

    vocab_size: int
    max_len: int
    num_classes: int
    dual: bool = False  # two documents per example (retrieval)
    dim: int = 64
    depth: int = 2
    num_heads: int = 2
    mlp_dim: int = 128
    dropout: float = 0.1
    head_hidden: int = 128
    attention: dict[str, Any] = field(default_factory=lambda: {"name": "softmax"})

    def __post_init__(self) -> None:
        self.attention = dict(self.attention)
        if not isinstance(self.attention.get("name"), str):
            raise ValueError(f"model attention needs a backend 'name', got {self.attention!r}")

    @property
    def attention_name(self) -> str:
        return self.attention["name"]

    @property
    def attention_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.attention.items() if k != "name"}


class LRAModule(L.LightningModule):
    """Encoder + MLP head trained with cross-entropy; logs loss and accuracy per split.

    optimizer: params -> optimizer (e.g. `instantiate(cfg.optim)`, a partial); scheduler:
    optimizer -> scheduler stepped every optimizer step, or None for a constant rate. Both are
    needed only to train (a module loaded from a checkpoint for evaluation has neither).
    compile: torch.compile the encoder (see :func:`compile_options`); in place
    (``nn.Module.compile``), so parameter names and checkpoints are those of the eager model.
    """

    def __init__(self, model: ModelConfig | dict, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, on_nonfinite: str = "stop",
                 compile: bool | str | None = False) -> None:
        super().__init__()
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
        self.config = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.on_nonfinite = on_nonfinite
        # Plain values only, so that checkpoints load with weights_only and rebuild the model.
        self.save_hyperparameters({"model": asdict(self.config), "on_nonfinite": on_nonfinite})
        self.skipped_batches = 0
        c = self.config
        self.encoder = LRAEncoder(
            vocab_size=c.vocab_size, max_len=c.max_len, dim=c.dim, depth=c.depth,
            num_heads=c.num_heads, mlp_dim=c.mlp_dim, dropout=c.dropout,
            attention=c.attention_name, attention_options=c.attention_options,
        )
        options = compile_options(compile)
        if options is not None:
            self.encoder.compile(**options)
        features = 4 * c.dim if c.dual else c.dim
        self.head = nn.Sequential(nn.Linear(features, c.head_hidden), nn.ReLU(),
                                  nn.Linear(c.head_hidden, c.num_classes))
        # ModuleDict keys must not shadow nn.Module attributes such as `train`.
        self.accuracy = nn.ModuleDict({
            f"{split}_acc": MulticlassAccuracy(num_classes=c.num_classes, average="micro")
            for split in ("train", "val", "test")
        })

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, L), or (B, 2, L) for two documents -> logits (B, classes)."""
        if self.config.dual:
            B, _, N = ids.shape
            pooled = self.encoder(ids.reshape(2 * B, N), mask.reshape(2 * B, N))  # (2B, dim)
            u, v = pooled.view(B, 2, -1).unbind(dim=1)  # each (B, dim)
            features = torch.cat([u, v, u * v, u - v], dim=-1)  # (B, 4 dim)
        else:
            features = self.encoder(ids, mask)  # (B, dim)
        return self.head(features)

    def _step(self, batch, split: str) -> torch.Tensor:
        ids, mask, labels, _ = batch
        logits = self(ids, mask)
        loss = F.cross_entropy(logits.float(), labels)
        metric = self.accuracy[f"{split}_acc"]
        metric(logits.detach(), labels)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 sync_dist=not on_step, batch_size=len(labels))
        self.log(f"{split}/acc", metric, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=len(labels))
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        # One flag per step, agreed across ranks so that all of them stop or skip together.
        nonfinite = self.trainer.strategy.reduce_boolean_decision(
            not bool(torch.isfinite(loss)), all=False)
        if not nonfinite:
            return loss
        indices = batch[3].tolist()
        if self.on_nonfinite == "skip":
            self.skipped_batches += 1
            log.warning("non-finite loss at step %d (examples %s): batch skipped",
                        self.global_step, indices)
            return None  # Lightning skips the optimizer step for this batch
        path = f"{self.trainer.default_root_dir}/checkpoints/nonfinite-step{self.global_step}.ckpt"
        self.trainer.save_checkpoint(path)  # parameters from before this step
        raise NonFiniteLossError(
            f"the training loss became {loss.item()} at step {self.global_step} on the batch of "
            f"training examples {indices}. The model from before this step is saved in {path}. "
            "Lower the learning rate, check these examples, or set on_nonfinite=skip to skip such "
            "batches."
        )

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the random states, so a resumed run draws the same dropout masks."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {  # tensors and plain values only: loadable with weights_only
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(states["python"])
        if states["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("LRAModule was built without an optimizer factory; pass "
                               "optimizer=instantiate(cfg.optim) to train it")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        schedule = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
