"""One training run from a composed Hydra config: data -> model -> fit -> test -> record.

`train.py` is a thin Hydra entry point around `run(cfg, run_dir)`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from lotformer.attention import UnknownAttentionError
from lra.checkpoints import AtomicCheckpointIO, ensure_writable, load_checkpoint
from lra.checks import check_config, check_data_fits
from lra.curves import majority_accuracy, plot_learning_curve
from lra.datamodule import LRADataModule
from lra.diagnostics.callback import best_checkpoint_diagnostics
from lra.errors import CheckpointError, ConfigError
from lra.module import LRAModule, over_skip_limit
from lra.record import DataInfo, Memory, Metrics, RunRecord, Schedule, Throughput
from lra.resume import ResumePlan, RunLedger, adopt_log_files, keep_metrics_through, plan_resume
from lra.results import RECORD_NAME, device_info, git_info, now_iso, read_record, versions, write_record
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


def build_datamodule(cfg: DictConfig) -> LRADataModule:
    """The LightningDataModule from the datamodule group (task, paths and trainer by interpolation)."""
    return LRADataModule(instantiate(cfg.datamodule, _convert_="all"))


def build_module(cfg: DictConfig) -> LRAModule:
    """The LightningModule from the model, optim and sched groups (each names its `_target_`)."""
    model = instantiate(cfg.model, _convert_="all")
    optimizer = instantiate(cfg.optim, _convert_="all")
    scheduler = instantiate(cfg.sched, _convert_="all")
    try:
        return LRAModule(model, optimizer=optimizer, scheduler=scheduler,
                         on_nonfinite=cfg.on_nonfinite, nonfinite_skip_limit=cfg.nonfinite_skip_limit,
                         compile=cfg.trainer.get("compile", False))
    except (UnknownAttentionError, ConfigError):  # already say what to change
        raise
    except (ValueError, TypeError) as err:  # an attention option the backend rejects
        raise ConfigError(f"attention backend {cfg.attn.name!r}: {err}") from None


def build_logger(cfg: DictConfig, keep_through_step: int | None) -> Logger | bool:
    """The logger group's `_target_` (null: no logger), with the resolved config as hparams.

    keep_through_step: the resumed checkpoint's step (its metrics.csv rows before it are kept
    and the run appends), or None for a fresh run (an old metrics.csv there is removed).
    """
    if cfg.logger.get("_target_") is None:
        return False
    logger = instantiate(cfg.logger, _convert_="all")
    if isinstance(logger, CSVLogger):
        keep_metrics_through(Path(logger.log_dir) / "metrics.csv", keep_through_step)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group: a dict of `_target_` entries, instantiated in order; null entries
    (or a `_target_: null`) are left out."""
    return [instantiate(node, _convert_="all") for node in cfg.callbacks.values()
            if node is not None and node.get("_target_") is not None]


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], logger: Logger | bool) -> L.Trainer:
    """The Trainer of cfg.trainer with these callbacks and logger; checkpoints are written
    atomically (lra.checkpoints.AtomicCheckpointIO)."""
    t = cfg.trainer
    try:
        return L.Trainer(
            accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
            precision=resolve_precision(t.precision), max_steps=t.max_steps,
            max_time=t.get("max_time"),  # a time limit ("DD:HH:MM:SS"): the run may stop early
            # Validation every `eval_every` optimizer steps, counted across epochs; at least once.
            val_check_interval=min(t.val_check_interval, t.max_steps), check_val_every_n_epoch=None,
            gradient_clip_val=t.gradient_clip_val, limit_train_batches=t.limit_train_batches,
            limit_val_batches=t.limit_val_batches, limit_test_batches=t.limit_test_batches,
            log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic,
            logger=logger, callbacks=callbacks, default_root_dir=cfg.paths.run_dir,
            enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
            use_distributed_sampler=False,  # the datamodule shards batches itself (lra/sampling.py)
            plugins=[AtomicCheckpointIO()],
        )
    except MisconfigurationException as err:  # e.g. a device or strategy this machine lacks
        raise ConfigError(f"the trainer settings cannot run here: {err} (trainer.accelerator="
                          f"{t.accelerator}, trainer.devices={t.devices}, trainer.strategy="
                          f"{t.strategy}). Change them in configs/trainer/ or on the command line.") from None


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
    """Train (or continue a resumed run), test the best-validation checkpoint, write and
    return the record. With `resume=` pointing at a completed run and `reevaluate=true`, only
    the test is repeated (see lra/resume.py)."""
    started = time.perf_counter()
    check_config(cfg)
    trust = cfg.trust_checkpoint
    plan = plan_resume(cfg, Path(run_dir),
                       lambda path, purpose: load_checkpoint(path, trust=trust, purpose=purpose))
    adopt_log_files(Path(run_dir), plan.run_dir)
    cfg = with_run_dir(cfg, plan.run_dir)  # the record's config names the run dir too
    if plan.reevaluate:
        return reevaluate(cfg, plan)
    ensure_writable(plan.run_dir / "checkpoints")
    if plan.checkpoint:
        log.info("resuming from %s at step %d (segment %d of this run)", plan.checkpoint,
                 plan.step, len(plan.segments) + 1)
    reset_peak_memory()  # a run's peak, not an earlier run's in this process
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    data = datamodule.load()
    for note in data.notes:
        log.info(note)
    check_data_fits(cfg, data)
    model = build_module(cfg)
    meter = ThroughputMeter(earlier=plan.ledger.get("throughput"))
    ledger = RunLedger(cfg.task.name, cfg.attn.name, meter, plan, started)
    trainer = build_trainer(cfg, [meter, ledger, *build_callbacks(cfg)],
                            build_logger(cfg, plan.step if plan.checkpoint else None))

    trainer.fit(model, datamodule=datamodule, ckpt_path=plan.checkpoint, weights_only=not trust)
    record = _test_and_record(cfg, plan, datamodule, trainer, model, meter, ledger)
    judge_divergence(record, cfg.nonfinite_skip_limit)
    if trainer.is_global_zero:
        _finish(record, trainer, plan.run_dir)
    if isinstance(trainer.logger, WandbLogger):
        trainer.logger.experiment.finish()  # flush the run now, not at interpreter exit
    return record


def _test_and_record(cfg: DictConfig, plan: ResumePlan, datamodule: LRADataModule, trainer: L.Trainer,
                     model: LRAModule, meter: ThroughputMeter, ledger: RunLedger) -> RunRecord:
    """Test the best checkpoint of a finished fit and build the run's record."""
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    val_acc = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else None
    test = _test(trainer, model, datamodule, best_path, cfg.trust_checkpoint)
    data = datamodule.load()

    segments = [*plan.segments, ledger.segment(int(trainer.global_step))]
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
        schedule=Schedule.of_run(steps=int(trainer.global_step), max_steps=int(cfg.trainer.max_steps),
                                 paper_max_steps=cfg.task.get("paper_max_steps"),
                                 warmup_steps=cfg.task.get("warmup_steps"), eval_every=cfg.task.eval_every),
        wall_time_s=sum(segment["wall_time_s"] for segment in segments), steps=int(trainer.global_step),
        resumed_from=str(plan.checkpoint) if plan.checkpoint else None, resumes=len(plan.segments),
        segments=segments, skipped_nonfinite_batches=ledger.earlier_skipped + model.skipped_batches,
        best_checkpoint=best_path or None, precision=str(trainer.precision), **_provenance(cfg, plan.run_dir),
        diagnostics=best_checkpoint_diagnostics(trainer, model),  # None unless callbacks/diagnostics=on
    )
    return record


def _test(trainer: L.Trainer, model: LRAModule, datamodule: LRADataModule, best_path: str,
          trust: bool) -> dict[str, float]:
    """Test metrics of the best checkpoint (checked first: after a resume its path comes from
    the resumed checkpoint), or of the final weights when there is none."""
    if best_path:
        load_checkpoint(Path(best_path), trust=trust, purpose="cannot test the best checkpoint")
    results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False,
                           weights_only=not trust)
    return results[0] if results else {}


def judge_divergence(record: RunRecord, skip_limit: float) -> None:
    """A run that skipped more than `skip_limit` of its training batches (on_nonfinite=skip),
    or whose test loss is not finite, has diverged: its status says so, with the numbers."""
    skipped = record.skipped_nonfinite_batches or 0
    batches = record.steps or 0  # a skipped batch still counts as a (parameter-free) step
    problems = []
    if over_skip_limit(skipped, batches, skip_limit):
        problems.append(f"{skipped} of {batches} training batches had a non-finite loss and were "
                        f"skipped, more than nonfinite_skip_limit={skip_limit}")
    loss = record.metrics.test_loss
    if loss is not None and not math.isfinite(loss):
        problems.append(f"the test loss is {loss}")
    if problems:
        record.status = "diverged"
        record.error = ("; ".join(problems) + ". Lower the learning rate (task.lr) or check the data; "
                        "the tables leave this run out.")


def _finish(record: RunRecord, trainer: L.Trainer, run_dir: Path) -> None:
    """Plot the learning curve (CSV logger) and write the record (strict JSON)."""
    if isinstance(trainer.logger, CSVLogger):
        curve = plot_learning_curve(
            Path(trainer.logger.log_dir) / "metrics.csv", run_dir / "learning_curve.png",
            f"{record.task} / {record.attention} / seed {record.seed}",
            record.metrics.majority_test_acc)
        record.learning_curve = None if curve is None else str(curve)
    record.record_path = str(run_dir / RECORD_NAME)
    write_record(run_dir, record)


def reevaluate(cfg: DictConfig, plan: ResumePlan) -> RunRecord:
    """Test a completed run's best checkpoint again and update its record's test metrics."""
    record = RunRecord.from_dict(read_record(plan.run_dir), path=str(plan.run_dir / RECORD_NAME))
    best = record.best_checkpoint
    if not best or not Path(best).is_file():
        raise CheckpointError(f"cannot re-evaluate the run in {plan.run_dir}: its best checkpoint "
                              f"{best!r} is missing. Start a fresh run instead.")
    datamodule = build_datamodule(cfg)
    data = datamodule.load()
    check_data_fits(cfg, data)
    trainer = build_trainer(cfg, [], logger=False)
    test = _test(trainer, build_module(cfg), datamodule, best, cfg.trust_checkpoint)
    record.metrics.test_acc, record.metrics.test_loss = _metric(test, "test/acc"), _metric(test, "test/loss")
    record.metrics.majority_test_acc = majority_accuracy(data.splits["test"].labels)
    record.reevaluated = now_iso()
    log.info("re-evaluated %s: test accuracy %s", best, record.metrics.test_acc)
    if trainer.is_global_zero:
        write_record(plan.run_dir, record)
    return record


def _provenance(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """The record fields that say what ran where: config, versions, code, device, time."""
    return {"config": OmegaConf.to_container(cfg, resolve=True), "versions": versions(),
            "git": git_info(), "device": device_info(), "run_dir": str(run_dir),
            "created": now_iso()}


def failure_record(cfg: DictConfig, run_dir: str | Path, error: BaseException) -> RunRecord:
    """A record for a run that failed, so sweeps and tables show it as a gap with a reason.
    Written when it can be (not on a full or read-only disk: then it is only logged)."""
    seed = cfg.get("seed")
    record = RunRecord(task=cfg.task.name, attention=cfg.attn.name,
                       seed=seed if isinstance(seed, int) else None,
                       tag=cfg.get("tag"), status="failed", error=f"{type(error).__name__}: {error}",
                       record_path=str(Path(run_dir) / RECORD_NAME), **_provenance(cfg, run_dir))
    try:
        write_record(run_dir, record)
    except OSError as err:
        log.error("could not write the failure record in %s: %s", run_dir, err)
    return record
