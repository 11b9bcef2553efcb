"""LightningModule for LRA: the shared encoder, a classification head, AdamW with a
warmup + cosine schedule.

Single-document tasks classify the pooled features u; two-document tasks (retrieval) encode
both documents with one encoder and classify [u, v, u*v, u-v] (REFERENCE §2).
"""

from __future__ import annotations

import logging
import math
import random

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lotformer.encoder import LRAEncoder
from lra.errors import NonFiniteLossError

log = logging.getLogger(__name__)
NONFINITE_POLICIES = ("stop", "skip")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, start_factor: float = 0.1,
                  end_factor: float = 0.4) -> float:
    """LR multiplier: linear warmup from start_factor to 1, then cosine decay to end_factor."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRAModule(L.LightningModule):
    """Encoder + MLP head trained with cross-entropy; logs loss and accuracy per split."""

    def __init__(self, *, vocab_size: int, max_len: int, num_classes: int, dual: bool = False,
                 dim: int = 64, depth: int = 2, num_heads: int = 2, mlp_dim: int = 128,
                 dropout: float = 0.1, head_hidden: int = 128, attention: str = "softmax",
                 attention_options: dict | None = None, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.98), adam_eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, total_steps: int = 1,
                 start_factor: float = 0.1, end_factor: float = 0.4,
                 on_nonfinite: str = "stop") -> None:
        super().__init__()
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
        self.save_hyperparameters()
        self.skipped_batches = 0
        self.encoder = LRAEncoder(
            vocab_size=vocab_size, max_len=max_len, dim=dim, depth=depth, num_heads=num_heads,
            mlp_dim=mlp_dim, dropout=dropout, attention=attention,
            attention_options=dict(attention_options or {}),
        )
        features = 4 * dim if dual else dim
        self.head = nn.Sequential(nn.Linear(features, head_hidden), nn.ReLU(),
                                  nn.Linear(head_hidden, num_classes))
        # ModuleDict keys must not shadow nn.Module attributes such as `train`.
        self.accuracy = nn.ModuleDict({
            f"{split}_acc": MulticlassAccuracy(num_classes=num_classes, average="micro")
            for split in ("train", "val", "test")
        })

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, L), or (B, 2, L) for two documents -> logits (B, classes)."""
        if self.hparams.dual:
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
        if self.hparams.on_nonfinite == "skip":
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
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                      eps=hp.adam_eps, weight_decay=hp.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(
            step, warmup_steps=hp.warmup_steps, total_steps=hp.total_steps,
            start_factor=hp.start_factor, end_factor=hp.end_factor))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
