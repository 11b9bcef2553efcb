"""One whole-training-step cell (task, backend, compile mode): steps/s, tokens/s, peak memory.

The model is built exactly as ``train.py`` builds it: configs/train.yaml composed with
``task=<task> attn=<backend>`` (so model/lra_small, the task's config and
task_attn/<task>_<backend>.yaml apply) plus the benchmark's overrides, then
:func:`lra.runner.build_module` (the LightningModule with the optimizer and schedule of
configs/optim and configs/sched). A Lightning Trainer with the training config's precision and
gradient clipping runs ``warmup + steps`` optimizer steps on synthetic batches of the task's
paper shape (:mod:`lra.bench.synthetic`); each step (forward, loss, backward, clipping,
optimizer and schedule step) is timed by the training's own :class:`~lra.throughput.
ThroughputMeter`, the device synchronised around it. Data loading is not in the step (see
:mod:`lra.bench.loader`).

Time limit (``timeout_s``, from the worker's ready mark, warm-up included; with compile the
ready mark comes after the warm-up, whose compilation is set-up): after each timed step the cell
stops when one more step would pass the limit or the timed steps have taken a quarter of it, so
a slow cell reports what it measured in one step. A cell whose warm-up step already leaves no
room for a timed step stops with status ``timeout``; one still running at the limit is killed
(status ``timeout``, keeping the steps it had measured).

Memory: the window (:func:`lra.bench.probes.memory_baseline`) opens after the warm-up, when
parameters, gradients and optimizer state exist. ``peak_mb`` is the absolute peak in the timed
steps (CUDA: ``max_memory_allocated``, as the LRA and Skyformer tables; CPU: the process's
resident peak, runtime included); ``extra_mb`` is the part above the baseline.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lra.bench.presets import CONFIG_DIR
from lra.bench.probes import cap_memory, is_oom, memory_baseline, memory_peak, set_threads
from lra.bench.synthetic import synthetic_split
from lra.bench.worker import WorkerHooks
from lra.datamodule import collate
from lra.throughput import ThroughputMeter

COMPILE_MODES = {"off": False, "inductor": True}  # any other value: a torch.compile backend


def compose_config(task: str, backend: str | None, compile_mode: str = "off",
                   overrides: list[str] | tuple = ()) -> DictConfig:
    """configs/train.yaml for this cell, as ``python train.py task=.. attn=.. <overrides>``
    (backend None: the default attention)."""
    flag = COMPILE_MODES.get(compile_mode, compile_mode)
    chosen = [f"task={task}", *([f"attn={backend}"] if backend else [])]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*chosen, f"trainer.compile={str(flag).lower()}",
                                           *overrides])


def step_batches(task_cfg, count: int, seed: int = 0) -> list[tuple]:
    """``count`` training batches of the task's shape, through the training's collate:
    (ids (B, [2,] L), mask, labels (B,), indices (B,)), every one at the full max_len."""
    B = task_cfg.batch_size
    split = synthetic_split(task_cfg.name, n=count * B, max_len=task_cfg.max_len,
                            vocab_size=task_cfg.vocab_size, num_classes=task_cfg.num_classes,
                            dual=task_cfg.dual, batch_size=B, seed=seed)
    return [collate([(split.ids[i], int(split.labels[i]), i) for i in range(s * B, (s + 1) * B)])
            for s in range(count)]


class _Batches(torch.utils.data.Dataset):
    """Prepared batches served as they are (a DataLoader with batch_size=None)."""

    def __init__(self, batches: list[tuple]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple:
        return self.batches[index]


class StepProbe(ThroughputMeter):
    """The training's throughput meter plus the benchmark's needs: the ready mark, the memory
    window after the warm-up, progress after every timed step and the early stop."""

    def __init__(self, spec: dict, hooks: WorkerHooks) -> None:
        super().__init__(warmup_batches=spec["warmup"])
        self.spec, self.hooks = spec, hooks
        self.ready_at = 0.0
        self.window: tuple[str, int] | None = None
        self.stopped_early = ""

    def _ready(self) -> None:
        self.hooks.ready()
        self.ready_at = time.monotonic()

    def _open_window(self, device) -> None:
        self.window = memory_baseline(torch, device)

    def on_train_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        cap_memory(torch, device, self.spec.get("max_memory_gb"))
        if self.spec["compile"] == "off" or not self.spec["warmup"]:
            self._ready()
        if not self.spec["warmup"]:
            self._open_window(device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        done, warmup = len(self.batches), self.spec["warmup"]
        if done == warmup:
            if self.spec["compile"] != "off":
                self._ready()
            self._open_window(trainer.strategy.root_device)
        elif done > warmup:
            self.hooks.progress(self.fields())
        if self._enough(done):
            trainer.should_stop = True
            if done == warmup:
                self.stopped_early = (f"the warm-up step took {self.batches[-1][0]:.1f} s: a "
                                      f"timed step would pass the {self.spec['timeout_s']:g} s "
                                      "limit")

    def _enough(self, done: int) -> bool:
        """Stop now: one more step would pass the limit, or the timed steps have taken a
        quarter of it (enough to measure; this keeps slow cells to one timed step)."""
        warmup, limit = self.spec["warmup"], self.spec.get("timeout_s")
        if done < warmup or not limit or (done == warmup and self.spec["compile"] != "off"):
            return False  # a compiled warm-up's time is compilation, not a step's
        last = self.batches[-1][0]
        timed = sum(b[0] for b in self.batches[warmup:])
        return time.monotonic() - self.ready_at + last > limit or timed >= limit / 4

    def fields(self) -> dict:
        """What the timed steps measured so far (the warm-up time always)."""
        warmup = self.spec["warmup"]
        timed = [b[0] for b in self.batches[warmup:]]
        result = {"measured_steps": len(timed),
                  "warmup_s": sum(b[0] for b in self.batches[:warmup])}
        if timed:
            rates = self.summary()
            result.update(steps_per_s=len(timed) / sum(timed),
                          samples_per_s=rates["train_samples_per_s"],
                          tokens_per_s=rates["train_tokens_per_s"],
                          step_ms=statistics.median(timed) * 1e3,
                          times_ms=";".join(f"{t * 1e3:.1f}" for t in timed))
        return result


def _trainer(cfg: DictConfig, spec: dict, probe: StepProbe, root: str) -> L.Trainer:
    """A Lightning Trainer with the training config's precision and clipping, nothing else."""
    from lra.runner import resolve_precision

    device = torch.device(spec["device"])
    accelerator, devices = ("cpu", 1) if device.type == "cpu" else ("gpu", [device.index or 0])
    return L.Trainer(
        accelerator=accelerator, devices=devices, precision=resolve_precision(cfg.trainer.precision),
        max_steps=spec["warmup"] + spec["steps"], gradient_clip_val=cfg.trainer.gradient_clip_val,
        deterministic=cfg.trainer.deterministic, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[probe], default_root_dir=root)


def _fit(cfg: DictConfig, spec: dict, hooks: WorkerHooks) -> dict:
    """Build the model, run the steps; the result fields."""
    from lra.runner import build_module, check_config

    check_config(cfg)
    torch.manual_seed(cfg.seed)
    module = build_module(cfg)
    loader = torch.utils.data.DataLoader(
        _Batches(step_batches(cfg.task, spec["warmup"] + spec["steps"], cfg.seed)), batch_size=None)
    probe = StepProbe(spec, hooks)
    with tempfile.TemporaryDirectory(prefix="bench_step_") as root:
        trainer = _trainer(cfg, spec, probe, root)
        trainer.fit(module, train_dataloaders=loader)
    device = trainer.strategy.root_device
    result = {"status": "ok", "error": "", **probe.fields(), "precision": str(trainer.precision),
              "params": sum(p.numel() for p in module.parameters())}
    if probe.stopped_early:
        result.update(status="timeout", error=probe.stopped_early)
    if probe.window is not None and probe.fields()["measured_steps"]:
        method, baseline = probe.window
        peak = memory_peak(torch, device, method)
        result.update(peak_mb=peak / 2 ** 20, extra_mb=max(peak - baseline, 0) / 2 ** 20,
                      mem_method=method)
    return result


def run_step_cell(spec: dict, hooks: WorkerHooks | None = None) -> dict:
    """Measure one cell in this process (the worker's entry); failures become statuses."""
    set_threads(torch, spec["threads"])
    cfg = compose_config(spec["task"], spec["backend"], spec["compile"], spec.get("overrides", ()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on workers and logging
            logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
            return _fit(cfg, spec, hooks or WorkerHooks())
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        return {"status": "oom" if is_oom(exc) else "error",
                "error": f"{type(exc).__name__}: {exc}"[:500]}
