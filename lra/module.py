"""LightningModule for LRA: the shared encoder, a classification head, and the optimizer and
schedule its config groups build (configs/optim/, configs/sched/).

Single-document tasks classify the pooled features u; two-document tasks (retrieval) encode
both documents with one encoder and classify [u, v, u*v, u-v] (REFERENCE §2).
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lotformer.encoder import LRAEncoder
from lra.errors import CheckpointError, ConfigError, NonFiniteLossError

log = logging.getLogger(__name__)
NONFINITE_POLICIES = ("stop", "skip")
MIN_SKIPS_TO_STOP = 20  # with on_nonfinite=skip, training stops once this many batches were
                        # skipped and they are more than the skip limit's share


def over_skip_limit(skipped: int, batches: int, limit: float) -> bool:
    """Whether `skipped` of `batches` training batches (each skipped one still counts as a
    step) is more than the `limit` share: the run has diverged (on_nonfinite=skip)."""
    return batches > 0 and skipped > limit * batches


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


# Checkpoints written before commit d0808a8 store LRAModule's old flat keyword arguments as
# hparams: the ModelConfig fields, `attention` (the backend name), `attention_options`,
# `on_nonfinite`, and the optimizer and schedule settings below (now the optim/sched groups').
LEGACY_TRAINING_KEYS = ("lr", "betas", "adam_eps", "weight_decay", "warmup_steps", "total_steps",
                        "start_factor", "end_factor")


def upgrade_hparams(hparams: dict, where: str = "checkpoint") -> dict:
    """A checkpoint's hparams in today's layout, {"model": ModelConfig fields, "on_nonfinite"}.

    Today's layout is returned as it is; the flat layout from before ModelConfig is translated
    (the weights' names did not change); anything else is a CheckpointError saying what to do.
    """
    if "model" in hparams:
        return hparams
    model_keys = [f.name for f in fields(ModelConfig) if f.name != "attention"]
    legacy = {*model_keys, "attention", "attention_options", "on_nonfinite", *LEGACY_TRAINING_KEYS}
    unknown = sorted(set(hparams) - legacy)
    if unknown or "vocab_size" not in hparams:
        raise CheckpointError(
            f"{where}: its hyper-parameters are in neither layout LRAModule reads (today's "
            "{'model': ..., 'on_nonfinite': ...}, or the flat keyword arguments of checkpoints "
            f"written before commit d0808a8){f'; unknown keys: {unknown}' if unknown else ''}. "
            "It was written by another version of this project or by another program: retrain "
            "the model with this version, or load the checkpoint with the commit that wrote it "
            "(its run's results.json names it under git).")
    model = {key: hparams[key] for key in model_keys if key in hparams}
    model["attention"] = {"name": hparams.get("attention", "softmax"),
                          **(hparams.get("attention_options") or {})}
    return {"model": model, "on_nonfinite": hparams.get("on_nonfinite", "stop")}


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
                 nonfinite_skip_limit: float = 0.1, compile: bool | str | None = False) -> None:
        super().__init__()
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
        self.config = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.on_nonfinite, self.nonfinite_skip_limit = on_nonfinite, nonfinite_skip_limit
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

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None,
                             strict=None, weights_only=None, **kwargs):
        """Lightning's loader, which also reads a local checkpoint whose hparams are in the
        layout from before ModelConfig (see :func:`upgrade_hparams`)."""
        if isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).is_file():
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=weights_only)
            hparams = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY)
            if hparams is not None and "model" not in hparams:
                checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = upgrade_hparams(
                    hparams, where=f"checkpoint {checkpoint_path}")
                checkpoint.pop(cls.CHECKPOINT_HYPER_PARAMS_NAME, None)  # old: "kwargs"
                checkpoint_path = io.BytesIO()
                torch.save(checkpoint, checkpoint_path)
                checkpoint_path.seek(0)
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict,
                                            weights_only=weights_only, **kwargs)

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
            seen = self.global_step + 1  # a skipped batch still counts as a step
            if self.skipped_batches >= MIN_SKIPS_TO_STOP and over_skip_limit(
                    self.skipped_batches, seen, self.nonfinite_skip_limit):
                log.error("%d of %d training batches skipped: the run has diverged; training stops",
                          self.skipped_batches, seen)
                self.trainer.should_stop = True  # else a run whose every batch is NaN never ends
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
