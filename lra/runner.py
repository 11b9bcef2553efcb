"""One training run from a composed Hydra config: data -> model -> fit -> test -> record.

`train.py` is a thin Hydra entry point around `run(cfg, run_dir)`.
"""

from __future__ import annotations

import copy
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from lotformer.attention import UnknownAttentionError, attention_class
from lra.errors import CheckpointError, ConfigError

from lra.curves import majority_accuracy, plot_learning_curve
from lra.datamodule import LRADataModule
from lra.module import LRAModule
from lra.record import DataInfo, Memory, Metrics, RunRecord, Throughput
from lra.results import RECORD_NAME, device_info, git_info, now_iso, versions, write_record
from lra.throughput import ThroughputMeter, peak_memory, reset_peak_memory

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


def check_config(cfg: DictConfig) -> None:
    """Reject settings that cannot work together, before any data or model is built."""
    task, attn, t = cfg.task, cfg.attn, cfg.trainer
    world = int(t.devices if isinstance(t.devices, int) else 1) * int(t.num_nodes)
    if task.batch_size < world or task.batch_size % world:
        raise ConfigError(
            f"task.batch_size={task.batch_size} cannot be split over {world} device(s): the batch "
            "size is global, so set it to a multiple of trainer.devices x trainer.num_nodes.")
    options = {key: value for key, value in attn.items() if key != "name"}
    try:
        attention_class(attn.name).check_options(options, max_len=task.max_len)
    except ValueError as err:  # the backend's own check, against this task
        raise ConfigError(str(err)) from None
    if t.max_steps < 1:
        raise ConfigError(f"trainer.max_steps must be >= 1, got {t.max_steps}")
    if cfg.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"on_nonfinite must be 'stop' or 'skip', got {cfg.on_nonfinite!r}")
    if not isinstance(cfg.trust_checkpoint, bool):
        raise ConfigError(f"trust_checkpoint must be true or false, got {cfg.trust_checkpoint!r}")


def resolve_resume(resume: str | None, run_dir: Path) -> tuple[Path | None, Path]:
    """(checkpoint to resume from or None, run dir to write to) for `resume=`.

    null: a fresh run. auto: this run dir's last checkpoint if there is one (rerun the same
    command with hydra.run.dir=<old run dir>). A run dir: its last checkpoint, and the run
    continues writing there. A .ckpt file: that checkpoint.
    """
    if not resume:
        return None, run_dir
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return (last if last.is_file() else None), run_dir
    target = Path(resume)
    if target.is_dir():
        last = target / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise CheckpointError(f"resume={resume}: no checkpoints/last.ckpt in that run directory; "
                                  "pass a .ckpt file, or drop resume= to start afresh.")
        return last, target
    if target.is_file():
        return target, target.parent.parent if target.parent.name == "checkpoints" else run_dir
    raise CheckpointError(f"resume={resume}: no such run directory or checkpoint file.")


def _unsafe_globals(path: Path) -> list[str]:
    """Globals beyond torch's weights-only set that a torch.save file names (read, not run)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a torch.save zip file: nothing to name
        return []


def load_checkpoint(path: Path, *, trust: bool, purpose: str) -> dict:
    """Read a checkpoint on the CPU, allowing only tensors and plain Python values unless `trust`.

    purpose: how the error messages begin, e.g. "cannot resume".
    trust: load any object with weights_only=False, which runs whatever code the file holds.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        unsafe = [] if trust else _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(
                f"{purpose}: refused to load checkpoint {path}, because it holds {', '.join(unsafe)}: "
                "objects beyond the tensors and plain Python values this project's checkpoints "
                "contain, and loading them could run code from the file. Use a checkpoint written "
                "by this project, or, only if you trust whoever made this one, set "
                "trust_checkpoint=true to load it anyway (that runs any code it holds).") from None
        reason = "not a file written by torch.save" if isinstance(err, pickle.UnpicklingError) \
            else f"{type(err).__name__}: {err}"
        raise CheckpointError(
            f"{purpose}: checkpoint {path} is unreadable or corrupt ({reason}). Delete it and "
            "resume from an earlier checkpoint, or start a fresh run.") from None


def check_checkpoint(path: Path, *, trust: bool = False) -> None:
    """Fail with a clear message if a checkpoint to resume from cannot be read back safely."""
    missing = {"state_dict", "loops", "optimizer_states"} - set(
        load_checkpoint(path, trust=trust, purpose="cannot resume"))
    if missing:
        raise CheckpointError(f"cannot resume: {path} is not a training checkpoint (it lacks "
                              f"{', '.join(sorted(missing))}); pass the run's checkpoints/last.ckpt.")


def build_datamodule(cfg: DictConfig) -> LRADataModule:
    task = cfg.task
    return LRADataModule(
        task=task.name, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir,
        max_len=task.max_len, batch_size=task.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size, num_workers=cfg.trainer.num_workers,
        pin_memory=cfg.trainer.get("pin_memory", False),
        seed=cfg.seed, total_steps=cfg.trainer.max_steps, data_options=OmegaConf.to_container(task.data, resolve=True) if task.get("data") is not None else {},
    )


def build_module(cfg: DictConfig) -> LRAModule:
    """The LightningModule from the model, optim and sched groups (each names its `_target_`)."""
    model = instantiate(cfg.model, _convert_="all")
    optimizer = instantiate(cfg.optim, _convert_="all")
    scheduler = instantiate(cfg.sched, _convert_="all")
    try:
        return LRAModule(model, optimizer=optimizer, scheduler=scheduler,
                         on_nonfinite=cfg.on_nonfinite, compile=cfg.trainer.get("compile", False))
    except (UnknownAttentionError, ConfigError):  # already say what to change
        raise
    except (ValueError, TypeError) as err:  # an attention option the backend rejects
        raise ConfigError(f"attention backend {cfg.attn.name!r}: {err}") from None


def build_logger(cfg: DictConfig) -> Logger | bool:
    """The logger group's `_target_` (null: no logger), with the resolved config as hparams."""
    if cfg.logger.get("_target_") is None:
        return False
    logger = instantiate(cfg.logger, _convert_="all")
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group: a dict of `_target_` entries, instantiated in order; null entries
    (or a `_target_: null`) are left out."""
    return [instantiate(node, _convert_="all") for node in cfg.callbacks.values()
            if node is not None and node.get("_target_") is not None]


def build_trainer(cfg: DictConfig, run_dir: Path, meter: ThroughputMeter) -> L.Trainer:
    t = cfg.trainer
    cfg = with_run_dir(cfg, run_dir)
    callbacks = [meter, *build_callbacks(cfg)]
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=resolve_precision(t.precision), max_steps=t.max_steps,
        # Validation every `eval_every` optimizer steps, counted across epochs; at least once.
        val_check_interval=min(t.val_check_interval, t.max_steps), check_val_every_n_epoch=None,
        gradient_clip_val=t.gradient_clip_val, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, limit_test_batches=t.limit_test_batches,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic,
        logger=build_logger(cfg), callbacks=callbacks, default_root_dir=run_dir,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        use_distributed_sampler=False,  # the datamodule shards batches itself (lra/sampling.py)
    )


def with_run_dir(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A copy of cfg with paths.run_dir set, which the logger and checkpoint configs read."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    return cfg


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def run(cfg: DictConfig, run_dir: str | Path) -> RunRecord:
    """Train, evaluate the best-validation checkpoint on test, write and return the record."""
    check_config(cfg)
    resume_from, run_dir = resolve_resume(cfg.get("resume"), Path(run_dir))
    trust = cfg.trust_checkpoint
    cfg = with_run_dir(cfg, run_dir)  # the record's config names the run dir too
    if resume_from is not None:
        check_checkpoint(resume_from, trust=trust)
        log.info("resuming from %s", resume_from)
    started = time.perf_counter()
    reset_peak_memory()  # a run's peak, not an earlier run's in this process
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    data = datamodule.load()
    for note in data.notes:
        log.info(note)
    model = build_module(cfg)
    meter = ThroughputMeter()
    trainer = build_trainer(cfg, run_dir, meter)

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=not trust)
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    val_acc = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else None
    if best_path:  # after a resume, this path comes from the resumed checkpoint: check it as well
        load_checkpoint(Path(best_path), trust=trust, purpose="cannot test the best checkpoint")
    test_metrics = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False,
                                weights_only=not trust)
    test = test_metrics[0] if test_metrics else {}

    record = RunRecord(
        task=cfg.task.name, attention=cfg.attn.name, attention_options=attention_options(cfg),
        seed=int(cfg.seed), tag=cfg.get("tag"), status="completed",
        data=DataInfo(source=data.source, location=data.location, sizes=data.sizes(),
                      notes=data.notes),
        metrics=Metrics(val_acc=val_acc, test_acc=_metric(test, "test/acc"),
                        test_loss=_metric(test, "test/loss"),
                        majority_test_acc=majority_accuracy(data.splits["test"].labels)),
        throughput=Throughput(**meter.summary(trainer.world_size)),
        memory=Memory(**peak_memory(trainer.strategy.root_device)),
        wall_time_s=time.perf_counter() - started, steps=int(trainer.global_step),
        resumed_from=str(resume_from) if resume_from else None,
        skipped_nonfinite_batches=model.skipped_batches, best_checkpoint=best_path or None,
        precision=str(trainer.precision), **_provenance(cfg, run_dir),
    )
    if trainer.is_global_zero:
        if isinstance(trainer.logger, CSVLogger):
            curve = plot_learning_curve(
                Path(trainer.logger.log_dir) / "metrics.csv", run_dir / "learning_curve.png",
                f"{record.task} / {record.attention} / seed {record.seed}",
                record.metrics.majority_test_acc)
            record.learning_curve = None if curve is None else str(curve)
        record.record_path = str(run_dir / RECORD_NAME)
        write_record(run_dir, record)
    if isinstance(trainer.logger, WandbLogger):
        trainer.logger.experiment.finish()  # flush the run now, not at interpreter exit
    return record


def _provenance(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """The record fields that say what ran where: config, versions, code, device, time."""
    return {"config": OmegaConf.to_container(cfg, resolve=True), "versions": versions(),
            "git": git_info(), "device": device_info(), "run_dir": str(run_dir),
            "created": now_iso()}


def failure_record(cfg: DictConfig, run_dir: str | Path, error: BaseException) -> RunRecord:
    """A record for a run that failed, so sweeps and tables show it as a gap with a reason."""
    record = RunRecord(task=cfg.task.name, attention=cfg.attn.name, seed=int(cfg.seed),
                       tag=cfg.get("tag"), status="failed", error=f"{type(error).__name__}: {error}",
                       record_path=str(Path(run_dir) / RECORD_NAME), **_provenance(cfg, run_dir))
    write_record(run_dir, record)
    return record
