"""What a reproduction runs: named sets of cells (sets.yaml), the runs (cell x seed) with their
Hydra overrides, and every check of the request that can fail before anything starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig

from lotformer.attention import available_attentions
from lra.data import TASKS, task_module
from lra.data.base import DataNotFoundError
from lra.errors import UserError

SETS_FILE = Path(__file__).with_name("sets.yaml")
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
EVALS_WHEN_SHORTENED = 10  # validations over a shortened schedule (the paper: every 1000 steps)


class ReproduceError(UserError):
    """A request that cannot run (unknown name, missing data, bad number); says what to change."""


@dataclass(frozen=True)
class Cell:
    """One table cell: `task=X attn=Y`, written `X/Y`."""

    task: str
    backend: str

    @property
    def name(self) -> str:
        return f"{self.task}/{self.backend}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        task, sep, backend = text.strip().partition("/")
        if not sep or not task or not backend:
            raise ReproduceError(f"cell {text!r} is not TASK/BACKEND, e.g. listops/lot")
        cell = cls(task, backend)
        cell.check()
        return cell

    def check(self) -> None:
        if self.task not in TASKS:
            raise ReproduceError(f"cell {self.name}: unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        if self.backend not in available_attentions():
            raise ReproduceError(f"cell {self.name}: unknown backend {self.backend!r}; backends: "
                                 f"{', '.join(available_attentions())}")


@dataclass(frozen=True)
class RunSpec:
    """One run: a cell at a seed, with every override train.py gets."""

    cell: Cell
    seed: int
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.cell.task}_{self.cell.backend}_s{self.seed}"


@dataclass
class Plan:
    """A checked request: the runs, and the settings the report states."""

    set_name: str
    description: str
    cells: list[Cell]
    seeds: list[int]
    runs: list[RunSpec]
    tolerance: float
    jobs: int
    max_steps: dict[str, int] | None = None  # task (or '*') -> steps of a shortened schedule
    budget_minutes: float | None = None
    extra_overrides: list[str] = field(default_factory=list)
    task_overrides: dict[str, list[str]] = field(default_factory=dict)  # of the chosen tasks
    given_tasks: list[str] = field(default_factory=list)  # tasks whose overrides came as TASK:key=value
    data_notes: list[str] = field(default_factory=list)  # per task: found where, or generated


def read_sets(path: Path = SETS_FILE) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """(set name -> {description, cells, seeds, task_overrides}, task -> overrides for any
    cells) from a sets file; a set's own task_overrides replace the common ones of that task."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    common = {task: list(v) for task, v in (raw.get("task_overrides") or {}).items()}
    sets = {}
    for name, entry in raw["sets"].items():
        cells = entry.get("cells") or [f"{t}/{b}" for t in entry["tasks"] for b in entry["backends"]]
        sets[name] = {"description": entry.get("description", ""), "cells": cells,
                      "seeds": [int(s) for s in entry.get("seeds", [0])],
                      "task_overrides": {**common, **(entry.get("task_overrides") or {})}}
    return sets, common


def choose_cells(set_name: str, cells: str | None, sets: dict[str, dict]) -> list[Cell]:
    """The cells of --cells (comma-separated TASK/BACKEND) if given, else of the named set."""
    if cells:
        chosen = [Cell.parse(text) for text in cells.split(",") if text.strip()]
    elif set_name in sets:
        chosen = [Cell.parse(text) for text in sets[set_name]["cells"]]
    else:
        raise ReproduceError(f"unknown set {set_name!r}; sets: {', '.join(sets)} "
                             f"(defined in {SETS_FILE}), or name cells with --cells TASK/BACKEND,...")
    if not chosen:
        raise ReproduceError("--cells names no cell; give TASK/BACKEND pairs, e.g. listops/lot,listops/softmax")
    return list(dict.fromkeys(chosen))


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (distinct, in order)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ReproduceError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise ReproduceError("--seeds names no seed; give e.g. 0,1,2")
    return list(dict.fromkeys(seeds))


def parse_max_steps(text: str | None) -> dict[str, int] | None:
    """--max-steps: 'N' (every task) or 'TASK=N,...' (only those tasks shortened) -> task -> N
    ('*' for every task); None keeps the paper's schedule."""
    if text is None:
        return None
    steps = {}
    for part in str(text).split(","):
        task, _, value = part.strip().rpartition("=")
        if task and task not in TASKS:
            raise ReproduceError(f"--max-steps {text!r}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        try:
            steps[task or "*"] = int(value)
        except ValueError:
            raise ReproduceError(f"--max-steps {text!r}: give N or TASK=N,... e.g. listops=2500,pathfinder=100") from None
        if steps[task or "*"] < 1:
            raise ReproduceError(f"--max-steps {text!r}: give at least 1 step (or leave it out for "
                                 "the paper's schedule)")
    return steps


def check_numbers(*, tolerance: float, jobs: int, budget_minutes: float | None) -> None:
    """Numbers that make no sense are refused with what would."""
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ReproduceError(f"--tolerance {tolerance}: give a positive number of accuracy points, e.g. 2")
    if jobs < 1:
        raise ReproduceError(f"--jobs {jobs}: give at least 1 parallel run")
    if budget_minutes is not None and not (budget_minutes > 0 and math.isfinite(budget_minutes)):
        raise ReproduceError(f"--budget-minutes {budget_minutes}: give a positive number of minutes "
                             "(or leave it out for no time limit)")


def compose(overrides: list[str]) -> DictConfig:
    """configs/train.yaml composed with overrides, as train.py would; errors are ReproduceErrors."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ReproduceError(f"the overrides {' '.join(overrides)} do not compose: {err}") from None


def shortened_overrides(cfg: DictConfig, max_steps: int | None) -> list[str]:
    """The configured schedule (the paper's unless overridden) compressed to max_steps: warmup
    scaled by max_steps / configured steps, about EVALS_WHEN_SHORTENED validations (never less
    often than configured). [] for None."""
    if max_steps is None:
        return []
    task = cfg.task
    ratio = max_steps / task.max_steps
    warmup = max(1, round(task.warmup_steps * ratio))
    every = max(1, min(task.eval_every, max_steps // EVALS_WHEN_SHORTENED))
    return [f"task.max_steps={max_steps}", f"task.warmup_steps={warmup}", f"task.eval_every={every}"]


def time_limit(budget_minutes: float | None, runs: int, jobs: int) -> list[str]:
    """trainer.max_time for one run: its share of the budget (runs go in waves of `jobs`), 85% of
    it for training, the rest for data, the first steps and the test pass."""
    if budget_minutes is None:
        return []
    seconds = int(budget_minutes * 60 * 0.85 / math.ceil(runs / jobs))
    if seconds < 60:
        raise ReproduceError(f"--budget-minutes {budget_minutes}: {runs} runs in {jobs} parallel jobs "
                             f"leave {seconds} s of training per run; give at least "
                             f"{math.ceil(runs / jobs * 60 / 0.85 / 60)} minutes, fewer seeds or more jobs")
    hours, rest = divmod(seconds, 3600)
    return [f"trainer.max_time=00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"]


def data_note(cfg: DictConfig) -> tuple[str, str | None]:
    """(where a task's data is, or that it will be generated; why it cannot run, or None)."""
    task = cfg.task.name
    options = dict(cfg.task.get("data") or {})
    generate = options.pop("generate", None)
    try:
        located = task_module(task).locate(Path(cfg.paths.data_dir), **options)
    except DataNotFoundError as err:
        if generate:
            return (f"{task}: no release copy under {cfg.paths.data_dir}; generated with {dict(generate)} "
                    "(a copy made before is reused)"), None
        return "", f"{task}: {err}"
    except (TypeError, ValueError) as err:
        return "", f"{task}: data options {options}: {err}"
    folder = Path(sorted(str(p) for p in located.files.values())[0]).parent
    return f"{task}: {located.source or 'release'} copy found at {folder}", None


def split_overrides(overrides) -> tuple[list[str], dict[str, list[str]]]:
    """(overrides for every run, task -> overrides for that task's runs only): `TASK:key=value`
    applies to TASK, e.g. `pathfinder:task.data.generate={n: 4000, seed: 0}`."""
    common, per_task = [], {}
    for text in overrides:
        head, sep, rest = text.partition(":")
        if sep and head.isidentifier():  # a bare name before the first ':' (key=value has '=' or '.')
            if head not in TASKS:
                raise ReproduceError(f"override {text!r}: unknown task {head!r} before ':'; tasks: "
                                     f"{', '.join(TASKS)} (TASK:key=value applies to that task's runs)")
            per_task.setdefault(head, []).append(rest)
        else:
            common.append(text)
    return common, per_task


def check_run_config(cell: Cell, cfg: DictConfig) -> None:
    """The runner's own checks (e.g. LOT rank against the length), before anything starts."""
    from lra.checks import check_config

    try:
        check_config(cfg)
    except UserError as err:
        raise ReproduceError(f"cell {cell.name}: {err}") from None


def make_plan(*, set_name: str = "default", cells: str | None = None, seeds: str | None = None,
              tolerance: float, jobs: int, max_steps: int | str | None = None,
              budget_minutes: float | None = None, overrides: list[str] = (),
              sets_file: Path = SETS_FILE) -> Plan:
    """Check the whole request and list its runs; a ReproduceError says what is wrong."""
    check_numbers(tolerance=tolerance, jobs=jobs, budget_minutes=budget_minutes)
    steps = parse_max_steps(max_steps)
    sets, common = read_sets(sets_file)
    chosen = choose_cells(set_name, cells, sets)
    named = sets.get(set_name, {}) if not cells else {}
    task_overrides = named.get("task_overrides", common)
    seed_list = parse_seeds(seeds) if seeds else named.get("seeds", [0])
    limit = time_limit(budget_minutes, len(chosen) * len(seed_list), jobs)
    tag = f"tag=reproduce/{set_name if not cells else 'cells'}"
    common, per_task = split_overrides(overrides)
    task_overrides = {**task_overrides, **per_task}  # the user's data options replace the set's
    runs, notes, missing = [], {}, {}
    for cell in chosen:
        base = [f"task={cell.task}", f"attn={cell.backend}", *task_overrides.get(cell.task, [])]
        schedule = shortened_overrides(compose(base + common), (steps or {}).get(cell.task, (steps or {}).get("*")))
        full = [*base, tag, *schedule, *limit, *common]  # the user's overrides win
        cfg = compose(full)
        check_run_config(cell, cfg)
        if cell.task not in notes:
            notes[cell.task], problem = data_note(cfg)
            missing.update({cell.task: problem} if problem else {})
        runs += [RunSpec(cell, seed, (*full, f"seed={seed}")) for seed in seed_list]
    if missing:
        raise ReproduceError("no data for " + ", ".join(missing) + ", so these cells cannot run "
                             "(leave them out with --cells, or get the data): " + " ".join(missing.values()))
    return Plan(set_name=set_name if not cells else "cells", description=named.get("description", ""),
                cells=chosen, seeds=seed_list, runs=runs, tolerance=tolerance, jobs=jobs,
                max_steps=steps, budget_minutes=budget_minutes, extra_overrides=common,
                task_overrides={t: v for t, v in task_overrides.items() if t in notes},
                given_tasks=[t for t in per_task if t in notes],
                data_notes=[n for n in notes.values() if n])
