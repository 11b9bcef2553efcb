"""Training callbacks of this project, named by `_target_` in configs/callbacks/."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """Raised after SIGTERM once the resume checkpoint is saved: the process exits with 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class ResumeCheckpoint(Checkpoint):
    """Writes `last.ckpt` every `every_n_steps` steps and on SIGTERM, then exits on SIGTERM.

    A checkpoint is only written where Lightning resumes exactly: right after a training step
    when no validation is due, else right after that step's validation. (Written before a due
    validation, the restored run would skip that validation; written while it runs, it would
    not be repeated in full.) SIGTERM is therefore only noted when it arrives; the save and the
    exit happen at the next such point. Being a `Checkpoint`, it runs after the best-model
    checkpoint, so a save after validation includes that validation's best-model update.
    """

    def __init__(self, path: str | Path, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self._sigterm = False
        self._pending = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note_sigterm)  # replaces Lightning's handler

    def _note_sigterm(self, signum, frame) -> None:
        self._sigterm = True

    def _save(self, trainer: L.Trainer) -> None:
        self._pending = False
        trainer.save_checkpoint(self.path)
        if trainer.strategy.reduce_boolean_decision(self._sigterm, all=False):
            log.warning("SIGTERM: saved %s at step %d; resume with resume=%s", self.path,
                        trainer.global_step, self.path.parent.parent)
            raise Preempted()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        sigterm = trainer.strategy.reduce_boolean_decision(self._sigterm, all=False)
        if not (sigterm or step % self.every_n_steps == 0):
            return
        # Lightning validates every val_check_batch steps only (not at a last step between)
        validation_due = step % trainer.val_check_batch == 0
        if validation_due:
            self._pending = True
        else:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending and not trainer.sanity_checking:
            self._save(trainer)
