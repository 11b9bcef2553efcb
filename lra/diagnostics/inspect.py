"""`scripts/inspect_attention.py` as functions: load models, run fixed examples, write results.

A subject is one model to inspect: a run directory (its config from results.json or
.hydra/config.yaml, its best checkpoint), a checkpoint file (the config of the run directory
it sits in), or an untrained model of any task x backend (`init_subject`). Checkpoints are
read with `lra.runner.load_checkpoint` (weights only). Every subject sees the same first K test
examples, taken from the first subject's data. Problems a user can fix raise `InspectError`
with one paragraph that says what to do.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from lotformer.attention import available_attentions
from lotformer.attention.base import DENSE_MAP_MAX_LEN
from lra.bench.presets import CONFIG_DIR
from lra.checkpoints import load_checkpoint
from lra.diagnostics.probe import METRICS, LayerMap, attention_maps, fixed_batch, head_rows, layer_rows
from lra.errors import UserError
from lra.module import LRAModule
from lra.results import RECORD_NAME
from lra.runner import build_datamodule
from lra.tables.records import backend_title

TASKS = tuple(sorted(path.stem for path in (CONFIG_DIR / "task").glob("*.yaml")))
CSV_FIELDS = ("run", "task", "backend", "layer", "head", *METRICS)


class InspectError(UserError):
    """A path, checkpoint or setting the inspection cannot use (the message says what to do)."""


@dataclass
class Subject:
    """One model to inspect, in eval mode, with the train config that made it (for the data)."""

    label: str  # e.g. "LOT" (plus the run directory when two subjects share a backend)
    task: str
    backend: str
    cfg: DictConfig
    model: LRAModule
    source: str  # the checkpoint, or "untrained (seed s)"
    maps: list[LayerMap] = field(default_factory=list)  # filled by `inspect`


def compose_config(overrides: list[str]) -> DictConfig:
    """configs/train.yaml composed with command-line style overrides (as train.py would)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def run_config(run_dir: Path) -> DictConfig | None:
    """The run's train config: results.json `config`, else .hydra/config.yaml, else None."""
    record, hydra_config = run_dir / RECORD_NAME, run_dir / ".hydra" / "config.yaml"
    config = json.loads(record.read_text()).get("config") if record.is_file() else None
    if config:
        return with_datamodule(OmegaConf.create(config))
    return with_datamodule(OmegaConf.load(hydra_config)) if hydra_config.is_file() else None


def with_datamodule(cfg: DictConfig) -> DictConfig:
    """A run config written before configs/datamodule/ existed gets its node (which reads the
    task, paths, trainer and seed the run used)."""
    if "datamodule" in cfg:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.datamodule = OmegaConf.load(CONFIG_DIR / "datamodule" / "default.yaml")
    return cfg


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (the record's `best_checkpoint`, else the newest
    checkpoints/best-*.ckpt, else checkpoints/last.ckpt)."""
    record = run_dir / RECORD_NAME
    named = json.loads(record.read_text()).get("best_checkpoint") if record.is_file() else None
    candidates = [Path(named), run_dir / "checkpoints" / Path(named).name] if named else []
    candidates += sorted((run_dir / "checkpoints").glob("best*.ckpt"),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    candidates.append(run_dir / "checkpoints" / "last.ckpt")
    for path in candidates:
        if path.is_file():
            return path
    raise InspectError(
        f"run directory {run_dir} has no checkpoint (no checkpoints/best-*.ckpt or last.ckpt): "
        "the run failed or stopped before its first validation. Inspect another run, pass a "
        "checkpoint file, or use --init --task T --attn A for an untrained model.")


def resolve(path: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint) for a run directory or a checkpoint file."""
    path = Path(path)
    if path.is_dir() and run_config(path) is not None:
        return path, best_checkpoint(path)
    if path.is_file():
        return (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path
    raise InspectError(
        f"{path} is neither a run directory (one with results.json or .hydra/config.yaml, e.g. "
        "outputs/runs/<date>/<time>) nor a checkpoint file (<run dir>/checkpoints/*.ckpt). "
        "Pass one of those, or --init --task T --attn A for an untrained model.")


def load_subject(path: str | Path, task: str | None = None) -> Subject:
    """The model of a run directory or checkpoint, its weights loaded; `task`: the task asked
    for (an InspectError when the run trained another one)."""
    run_dir, checkpoint = resolve(path)
    state = load_checkpoint(checkpoint, trust=False, purpose="cannot inspect")
    cfg = run_config(run_dir)
    if cfg is None:
        if task is None:
            raise InspectError(
                f"checkpoint {checkpoint} is not inside a run directory with a config "
                "(results.json or .hydra/config.yaml), so its task and data are unknown: pass "
                "its run directory, or name the task with --task T.")
        cfg = compose_config([f"task={task}"])
    model_config = (state.get("hyper_parameters") or {}).get("model")
    if not isinstance(model_config, dict) or "state_dict" not in state:
        raise InspectError(f"{checkpoint} is not a checkpoint of this project's LRA model (it "
                           "has no model hyper-parameters or state_dict); pass a run's "
                           "checkpoints/best-*.ckpt or last.ckpt.")
    check_task(checkpoint, model_config, cfg, task)
    model = LRAModule(model_config)
    model.load_state_dict(state["state_dict"])
    return Subject(backend_title(model.config.attention_name), cfg.task.name,
                   model.config.attention_name, cfg, model.eval(), str(checkpoint))


def check_task(checkpoint: Path, model_config: dict, cfg: DictConfig, task: str | None) -> None:
    """InspectError when the checkpoint is of another task than `task`, or does not fit the
    task of its config (another vocabulary, number of classes or document count)."""
    if task and task != cfg.task.name:
        raise InspectError(
            f"checkpoint {checkpoint} is of task {cfg.task.name} (its run's config), not "
            f"{task}. Drop --task {task}, or pass a run of task {task}.")
    shape = {key: model_config.get(key) for key in ("vocab_size", "num_classes", "dual")}
    wanted = {key: cfg.task[key] for key in shape}
    if shape != wanted:
        raise InspectError(
            f"checkpoint {checkpoint} is of another task than {cfg.task.name}: its model has "
            f"{shape}, the task {wanted}. Pass a run of task {cfg.task.name}, or name the "
            "checkpoint's own task with --task.")


def init_subject(task: str, attn: str, overrides: list[str] = (), seed: int = 0) -> Subject:
    """An untrained model of `task` x `attn` (seeded), with extra train-config overrides."""
    if attn not in available_attentions():
        raise InspectError(f"unknown attention backend {attn!r} for --init; valid names: "
                           f"{', '.join(available_attentions())}.")
    if task not in TASKS:
        raise InspectError(f"unknown task {task!r} for --init; valid tasks: {', '.join(TASKS)}.")
    cfg = compose_config([f"task={task}", f"attn={attn}", f"seed={seed}", *overrides])
    torch.manual_seed(seed)
    model = LRAModule(instantiate(cfg.model, _convert_="all"))
    return Subject(backend_title(attn), task, attn, cfg, model.eval(),
                   f"untrained (seed {seed})")


def with_data_dir(cfg: DictConfig, data_dir: str | None) -> DictConfig:
    """cfg reading its data from `data_dir` (and its cache under it); None: unchanged."""
    if data_dir is None:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.data_dir, cfg.paths.cache_dir = str(data_dir), str(Path(data_dir) / ".cache")
    return cfg


def examples(cfg: DictConfig, count: int, max_len: int | None):
    """(ids, mask, labels, indices) of the first `count` test examples, cut to `max_len`."""
    if max_len is not None and not 1 <= max_len <= DENSE_MAP_MAX_LEN:
        raise InspectError(f"--max-len {max_len} must be between 1 and the dense-map limit "
                           f"DENSE_MAP_MAX_LEN = {DENSE_MAP_MAX_LEN}.")
    split = build_datamodule(cfg).load().splits["test"]
    batch = fixed_batch(split, count, max_len)
    if batch[0].shape[-1] > DENSE_MAP_MAX_LEN:
        raise InspectError(
            f"the first {count} test examples of {cfg.task.name} have up to "
            f"{batch[0].shape[-1]} tokens, more than the dense-map limit DENSE_MAP_MAX_LEN = "
            f"{DENSE_MAP_MAX_LEN} (an (N, N) map per head). Pass --max-len N (N <= "
            f"{DENSE_MAP_MAX_LEN}) to inspect the first N tokens of each example.")
    return batch


def inspect(subjects: list[Subject], batch) -> list[dict[str, Any]]:
    """Run the batch through every subject (filling `maps`); the per-head CSV rows."""
    tasks = {s.task for s in subjects}
    if len(tasks) > 1:
        raise InspectError("the runs are of different tasks (" + ", ".join(
            f"{s.label}: {s.task}" for s in subjects) + "); inspect one task at a time.")
    distinct_labels(subjects)
    rows = []
    for subject in subjects:
        subject.maps = attention_maps(subject.model, batch[0], batch[1])
        rows += [{"run": subject.label, "task": subject.task, "backend": subject.backend, **row}
                 for row in head_rows(subject.maps)]
    return rows


def distinct_labels(subjects: list[Subject]) -> None:
    """Give subjects that share a backend title their source as well."""
    titles = [s.label for s in subjects]
    for subject in subjects:
        if titles.count(subject.label) > 1:
            subject.label = f"{subject.label} ({Path(subject.source).parent.parent.name or subject.source})"


def write_tables(out: Path, subjects: list[Subject], rows: list[dict], batch) -> list[Path]:
    """diagnostics.csv (per run, layer, head) and diagnostics.json (also per-layer means)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "diagnostics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    lengths = batch[1].reshape(len(batch[3]), -1).sum(dim=-1)  # (K,) tokens per example
    runs = []
    for subject in subjects:
        heads = [{k: v for k, v in r.items() if k not in ("run", "task", "backend")}
                 for r in rows if r["run"] == subject.label]
        runs.append({"label": subject.label, "task": subject.task, "backend": subject.backend,
                     "source": subject.source, "layers": layer_rows(heads), "heads": heads})
    summary = {"examples": {"split": "test", "indices": batch[3].tolist(),
                            "tokens": lengths.tolist()}, "runs": runs}
    (out / "diagnostics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [out / "diagnostics.csv", out / "diagnostics.json"]


def inspect_to(out: Path, subjects: list[Subject], count: int = 4, max_len: int | None = None,
               data_dir: str | None = None, figures: int = 4) -> list[Path]:
    """The whole inspection: the first `count` test examples of the first subject's data
    through every subject; writes diagnostics.csv and .json (over all `count` examples),
    example<i>.png for the first `figures` of them, and summary.png."""
    from lra.diagnostics.plots import plot_example, plot_summary

    if not subjects:
        raise InspectError("nothing to inspect: pass run directories or checkpoints, or "
                           "--init --task T --attn A.")
    batch = examples(with_data_dir(subjects[0].cfg, data_dir), count, max_len)
    rows = inspect(subjects, batch)
    written = write_tables(out, subjects, rows, batch)
    labels = [s.label for s in subjects]
    task = subjects[0].task
    for i, index in enumerate(batch[3].tolist()[:figures]):
        written.append(plot_example([s.maps for s in subjects], labels, i, len(batch[3]),
                                    out / f"example{i}.png",
                                    f"{task}, test example {index}: attention maps (rows = "
                                    "queries, columns = keys, colour scale per panel)"))
    runs = json.loads((out / "diagnostics.json").read_text())["runs"]
    written.append(plot_summary(runs, out / "summary.png",
                                f"{task}: attention diagnostics per layer, mean over heads and "
                                f"{len(batch[3])} test examples"))
    return written
