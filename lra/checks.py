"""Checks of a composed config, before any data or model is built, and of the data against
it, once the data is read. Each failure is a ConfigError whose one paragraph names the
setting, the value, and what to set instead."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lotformer.attention import attention_class
from lra.data import TaskData, task_module
from lra.errors import ConfigError

# Numeric settings: key -> (integer?, smallest allowed value, lower bound excluded?).
NUMBERS: dict[str, tuple[bool, float | None, bool]] = {
    "seed": (True, None, False),
    "task.batch_size": (True, 1, False),
    "task.max_len": (True, 1, False),
    "task.vocab_size": (True, 2, False),
    "task.num_classes": (True, 2, False),
    "task.lr": (False, 0, True),
    "task.warmup_steps": (True, 0, False),
    "task.max_steps": (True, 1, False),
    "task.eval_every": (True, 1, False),
    "trainer.max_steps": (True, 1, False),
    "trainer.val_check_interval": (True, 1, False),
    "trainer.num_workers": (True, 0, False),
    "trainer.log_every_n_steps": (True, 1, False),
    "nonfinite_skip_limit": (False, 0, False),
}


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as err:  # noqa: BLE001 - an interpolation that cannot resolve
        raise ConfigError(f"{key}: {err}") from None


def check_number(key: str, value: Any, integer: bool, low: float | None, strict: bool) -> None:
    """`value` of setting `key` is a finite number (an integer if `integer`) above `low`."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ConfigError(f"{key}={value!r} is not {kind}: set {key} to {kind}"
                          + (f" {'>' if strict else '>='} {low}" if low is not None else "") + ".")
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"{key}={value} is out of range: it must be {'>' if strict else '>='} {low}.")


def check_attention_option_types(name: str, options: dict[str, Any]) -> None:
    """Each option given to backend `name` has the type of its default (int, float or bool),
    so `attn.rank=abc` is named here rather than failing deep inside the backend."""
    signature = inspect.signature(attention_class(name).__init__)
    for key, value in options.items():
        param = signature.parameters.get(key)
        default = None if param is None else param.default
        if isinstance(default, bool):
            good, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            good, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            good, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            continue
        if not good:
            raise ConfigError(f"attn.{key}={value!r} is not {kind} (backend {name!r}, default "
                              f"{default!r}): set attn.{key} to {kind}.")


def check_config(cfg: DictConfig) -> None:
    """Reject settings that are malformed or cannot work together."""
    for key, rule in NUMBERS.items():
        if OmegaConf.select(cfg, key, default="__absent__") != "__absent__":
            check_number(key, _value(cfg, key), *rule)
    task, attn, t = cfg.task, cfg.attn, cfg.trainer
    world = int(t.devices if isinstance(t.devices, int) else 1) * int(t.num_nodes)
    if task.batch_size < world or task.batch_size % world:
        raise ConfigError(
            f"task.batch_size={task.batch_size} cannot be split over {world} device(s): the batch "
            "size is global, so set it to a multiple of trainer.devices x trainer.num_nodes.")
    shortest = getattr(task_module(task.name), "MIN_MAX_LEN", 1)
    if task.max_len < shortest:
        raise ConfigError(f"task.max_len={task.max_len} is shorter than one {task.name} example "
                          f"({shortest} tokens, which may not be cut): set task.max_len >= {shortest}.")
    options = {key: value for key, value in attn.items() if key != "name"}
    check_attention_option_types(attn.name, options)
    try:
        attention_class(attn.name).check_options(options, max_len=task.max_len)
    except ValueError as err:  # the backend's own check, against this task
        raise ConfigError(str(err)) from None
    if cfg.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"on_nonfinite must be 'stop' or 'skip', got {cfg.on_nonfinite!r}")
    for flag in ("trust_checkpoint", "reevaluate"):
        if not isinstance(cfg.get(flag, False), bool):
            raise ConfigError(f"{flag} must be true or false, got {cfg.get(flag)!r}")
    check_accelerator(t.accelerator)


def check_accelerator(accelerator: str) -> None:
    """A GPU accelerator asked for on a machine without one: say so, and how to run anyway."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Use "
            "trainer.accelerator=auto (or cpu) to run on the CPU, or run on a machine with a GPU.")


def check_data_fits(cfg: DictConfig, data: TaskData) -> None:
    """The data's token ids and labels fit the model's vocabulary and classes."""
    task = cfg.task
    for split, arrays in data.splits.items():
        if arrays.ids.size and int(arrays.ids.max()) >= task.vocab_size:
            top = int(arrays.ids.max())
            raise ConfigError(
                f"task.vocab_size={task.vocab_size} is too small for the {task.name} data: its "
                f"{split} split has token id {top}. Set task.vocab_size={top + 1} or more (the "
                f"task's own value is in configs/task/{task.name}.yaml).")
        if len(arrays.labels) and int(arrays.labels.max()) >= task.num_classes:
            top = int(arrays.labels.max())
            raise ConfigError(
                f"task.num_classes={task.num_classes} is too small for the {task.name} data: its "
                f"{split} split has label {top}. Set task.num_classes={top + 1} or more (the "
                f"task's own value is in configs/task/{task.name}.yaml).")
