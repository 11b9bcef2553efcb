"""One training run from a composed Hydra config: data -> model -> fit -> test -> record.

`train.py` is a thin Hydra entry point around `run(cfg, run_dir)`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from lra.datamodule import LRADataModule
from lra.module import LRAModule
from lra.results import device_info, git_info, now_iso, versions, write_record
from lra.throughput import ThroughputMeter, peak_memory

log = logging.getLogger(__name__)


def attention_options(cfg: DictConfig) -> dict[str, Any]:
    """Backend options: every key of the `attn` node except its name."""
    options = OmegaConf.to_container(cfg.attn, resolve=True)
    options.pop("name")
    return options


def resolve_precision(precision: str | int) -> str | int:
    """`auto` -> bf16 mixed precision on a GPU that supports it, else full float32."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_datamodule(cfg: DictConfig) -> LRADataModule:
    task = cfg.task
    return LRADataModule(
        task=task.name, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir,
        max_len=task.max_len, batch_size=task.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size, num_workers=cfg.trainer.num_workers,
        seed=cfg.seed, data_options=OmegaConf.to_container(task.get("data") or {}, resolve=True),
    )


def build_module(cfg: DictConfig) -> LRAModule:
    task, model = cfg.task, cfg.model
    return LRAModule(
        vocab_size=task.vocab_size, max_len=task.max_len, num_classes=task.num_classes,
        dual=task.dual, dim=model.dim, depth=model.depth, num_heads=model.num_heads,
        mlp_dim=model.mlp_dim, dropout=model.dropout, head_hidden=model.head_hidden,
        attention=cfg.attn.name, attention_options=attention_options(cfg),
        lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), adam_eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay, warmup_steps=cfg.sched.warmup_steps,
        total_steps=cfg.trainer.max_steps, start_factor=cfg.sched.start_factor,
        end_factor=cfg.sched.end_factor,
    )


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger | bool:
    name = cfg.logger.name
    if name == "csv":
        return CSVLogger(save_dir=run_dir, name="csv", version="")
    if name == "wandb":
        return WandbLogger(
            project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
            tags=list(cfg.logger.tags), save_dir=str(run_dir), offline=cfg.logger.offline,
            name=f"{cfg.task.name}-{cfg.attn.name}-s{cfg.seed}",
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    if name == "none":
        return False
    raise ValueError(f"unknown logger {name!r}; valid: csv, wandb, none")


def build_trainer(cfg: DictConfig, run_dir: Path, meter: ThroughputMeter) -> L.Trainer:
    t = cfg.trainer
    callbacks: list[L.Callback] = [meter]
    ck = cfg.callbacks.checkpoint
    callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=ck.monitor, mode=ck.mode,
                                     save_last=ck.save_last, filename="best-{step}"))
    bar = cfg.callbacks.progress_bar
    if bar == "rich":
        callbacks.append(RichProgressBar())
    elif bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=resolve_precision(t.precision), max_steps=t.max_steps,
        # Validation every `eval_every` optimizer steps, counted across epochs; at least once.
        val_check_interval=min(t.val_check_interval, t.max_steps), check_val_every_n_epoch=None,
        gradient_clip_val=t.gradient_clip_val, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, limit_test_batches=t.limit_test_batches,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic,
        logger=build_logger(cfg, run_dir), callbacks=callbacks, default_root_dir=run_dir,
        enable_progress_bar=bar != "none",
    )


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, evaluate the best-validation checkpoint on test, write and return the record."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    data = datamodule.load()
    for note in data.notes:
        log.info(note)
    model = build_module(cfg)
    meter = ThroughputMeter()
    trainer = build_trainer(cfg, run_dir, meter)

    trainer.fit(model, datamodule=datamodule)
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    val_acc = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else None
    test_metrics = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
    test = test_metrics[0] if test_metrics else {}

    record = {
        "task": cfg.task.name,
        "attention": cfg.attn.name,
        "attention_options": attention_options(cfg),
        "seed": int(cfg.seed),
        "tag": cfg.get("tag"),
        "status": "completed",
        "error": None,
        "data": {"source": data.source, "location": data.location, "sizes": data.sizes(),
                 "notes": data.notes},
        "metrics": {"val_acc": val_acc, "test_acc": _metric(test, "test/acc"),
                    "test_loss": _metric(test, "test/loss")},
        "throughput": meter.summary(trainer.world_size),
        "memory": peak_memory(trainer.strategy.root_device),
        "wall_time_s": time.perf_counter() - started,
        "steps": int(trainer.global_step),
        "best_checkpoint": best_path or None,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": versions(),
        "git": git_info(),
        "device": device_info(),
        "precision": str(trainer.precision),
        "run_dir": str(run_dir),
        "created": now_iso(),
    }
    if trainer.is_global_zero:
        record["record_path"] = str(write_record(run_dir, record))
    if isinstance(trainer.logger, WandbLogger):
        trainer.logger.experiment.finish()  # flush the run now, not at interpreter exit
    return record
