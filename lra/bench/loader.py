"""Data-loader throughput: batches/s of the training DataLoader of a task, for given loader
workers and pinned memory, to set against the training step's steps/s.

The loader is the training's own (:func:`lra.runner.build_datamodule` from the composed config
with ``trainer.num_workers`` and ``trainer.pin_memory`` set, then ``train_dataloader()``: the
step-indexed sampler, the memory-mapped split, collate with padding trimmed). Its data (the
``data`` column), in order of preference: the task's data where it is found without generating
anything (its source: ``official``, ``sample`` or ``generated``, e.g. a copy generated for
training); for a task with a generator in its config (ListOps), a small copy of
:data:`GENERATED_EXAMPLES` training examples made by that generator where training would put it
(``<data_dir>/generated/``, reused by later runs; ``generated``); otherwise synthetic data of the
task's shape, memory-mapped like the cache (``synthetic``).

The first batch (worker start-up) is not timed; on CUDA every batch is also copied to the
device (``non_blocking`` when pinned) and synchronised, which is what pinned memory speeds up.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lra.bench.probes import is_oom, set_threads, synchronizer
from lra.bench.step import compose_config
from lra.bench.synthetic import synthetic_task_data
from lra.bench.worker import WorkerHooks
from lra.data import DataNotFoundError, TaskData, load_task


GENERATED_EXAMPLES = 2000  # ListOps: enough for 50 batches of 32 plus one; one fixed size


def task_data(cfg: DictConfig, n_examples: int, tmp: Path) -> tuple[TaskData, str]:
    """(data, kind): kind is the found data's source, or 'synthetic' (module docstring)."""
    task, paths = cfg.task, cfg.paths
    options = dict(OmegaConf.to_container(task.data, resolve=True) or {}) if task.get("data") else {}
    generate = options.pop("generate", None)
    try:
        data = load_task(task.name, data_dir=paths.data_dir, cache_dir=paths.cache_dir,
                         max_len=task.max_len, **options)
        return data, data.source
    except DataNotFoundError:
        pass
    if generate:  # a small copy by the task's own generator (the split size does not matter)
        small = {**generate, "train": max(n_examples, GENERATED_EXAMPLES), "val": 8, "test": 8}
        return load_task(task.name, data_dir=paths.data_dir, cache_dir=paths.cache_dir,
                         max_len=task.max_len, generate=small, **options), "generated"
    return synthetic_task_data(task, n=n_examples, folder=tmp / "synthetic"), "synthetic"


def _time_batches(loader, count: int, device: torch.device, pin: bool) -> float:
    """Seconds to draw ``count`` batches after the first (copied to a CUDA device)."""
    sync = synchronizer(torch, device)
    batches = iter(loader)

    def draw() -> None:
        ids, mask, labels, _ = next(batches)
        if device.type == "cuda":
            for tensor in (ids, mask, labels):
                tensor.to(device, non_blocking=pin)
            sync()

    draw()  # worker start-up and the first batch: not timed
    start = time.perf_counter()
    for _ in range(count):
        draw()
    return time.perf_counter() - start


def measure_loader(spec: dict, hooks: WorkerHooks | None = None) -> dict:
    """batches/s and samples/s of one task's training loader (spec: task, workers, pin_memory,
    batches, device, threads, overrides); failures become statuses."""
    from lra.runner import build_datamodule

    set_threads(torch, spec["threads"])
    overrides = [*spec.get("overrides", ()), f"trainer.num_workers={spec['workers']}",
                 f"trainer.pin_memory={str(spec['pin_memory']).lower()}"]
    cfg = compose_config(spec["task"], None, overrides=overrides)
    count = spec["batches"]
    try:
        with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
            datamodule = build_datamodule(cfg)
            datamodule.data, kind = task_data(cfg, (count + 1) * cfg.task.batch_size, Path(tmp))
            datamodule.config.total_steps = count + 1
            loader = datamodule.train_dataloader()
            (hooks or WorkerHooks()).ready()
            seconds = _time_batches(loader, count, torch.device(spec["device"]),
                                    spec["pin_memory"])
            del loader  # stop the workers before the folder goes
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        return {"status": "oom" if is_oom(exc) else "error",
                "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"status": "ok", "error": "", "data": kind,
            "batches_per_s": count / seconds,
            "samples_per_s": count * cfg.task.batch_size / seconds}
