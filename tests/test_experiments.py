"""Table cells (task=X attn=Y), presets, multi-GPU (trainer=ddp), the Slurm
launcher, and the sweep commands that EXPERIMENTS.md documents."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lotformer.attention import available_attentions
from tests.conftest import REPO_ROOT
from tests.helpers import CONFIG_DIR, compose_train

TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
ATTNS = available_attentions()  # every registered backend has its table cells
PRESET_DIR = CONFIG_DIR / "experiment"


def test_presets_carry_settings():
    """A preset exists only to carry settings: each one composes to something other than the
    task and backend it selects (a table cell needs no preset: it is task=X attn=Y)."""
    presets = sorted(p.relative_to(PRESET_DIR).with_suffix("").as_posix()
                     for p in PRESET_DIR.rglob("*.yaml"))
    assert presets == ["quick"]
    for preset in presets:
        cfg = compose_train([f"experiment={preset}"])
        plain = compose_train([f"task={cfg.task.name}", f"attn={cfg.attn.name}"])
        differing = {key for key in cfg if cfg[key] != plain[key]}
        assert differing & {"task", "trainer", "model", "optim", "sched"}, preset


@pytest.mark.parametrize("task,rank,eps,n_iters", [
    ("listops", 4, 0.1, 25), ("text", 32, 0.1, 25), ("retrieval", 64, 0.1, 25),
    ("image", 8, 25.0, 3), ("pathfinder", 64, 0.1, 25), ("pathx", 64, 0.1, 25),
])
def test_lot_cells_carry_per_task_settings(task, rank, eps, n_iters):
    cfg = compose_train([f"task={task}", "attn=lot"])
    assert (cfg.attn.rank, cfg.attn.eps, cfg.attn.n_iters) == (rank, eps, n_iters)
    # ... and the command line still wins over them.
    cfg = compose_train([f"task={task}", "attn=lot", "attn.rank=2", "seed=3"])
    assert (cfg.attn.rank, cfg.seed) == (2, 3)


# REFERENCE §2: max len, classes, batch, lr, warmup, steps, eval every.
PAPER_SETTINGS = {
    "listops": (2000, 10, 32, 1e-4, 5000, 50000, 1000),
    "text": (4000, 2, 32, 1e-4, 4000, 50000, 1000),
    "retrieval": (4000, 2, 16, 1e-4, 5000, 50000, 1000),
    "image": (1024, 10, 64, 1e-3, 1000, 50000, 50),
    "pathfinder": (1024, 2, 128, 1e-4, 5000, 60000, 1000),
}


@pytest.mark.parametrize("task", sorted(PAPER_SETTINGS))
def test_cells_train_with_the_paper_settings(task):
    cfg = compose_train([f"task={task}", "attn=softmax"])
    assert (cfg.task.max_len, cfg.task.num_classes, cfg.task.batch_size, cfg.optim.lr,
            cfg.sched.warmup_steps, cfg.trainer.max_steps,
            cfg.trainer.val_check_interval) == PAPER_SETTINGS[task]
    assert (cfg.model.dim, cfg.model.depth, cfg.model.num_heads, cfg.model.mlp_dim) == (64, 2, 2, 128)
    assert cfg.task.dual is (task == "retrieval")


def test_ddp_trainer_composes_and_inherits_defaults():
    default = compose_train([]).trainer
    cfg = compose_train(["task=text", "attn=lot", "trainer=ddp", "trainer.devices=2"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp", 2, "auto")
    for key in ("gradient_clip_val", "precision", "num_nodes", "max_steps", "val_check_interval",
                "num_workers", "log_every_n_steps"):
        assert cfg.trainer[key] == default[key], key
    assert cfg.trainer.max_steps == 50000 and cfg.attn.rank == 32
    assert compose_train(["trainer=ddp"]).trainer.devices == "auto"


def test_ddp_trainer_builds_a_two_process_lightning_trainer(tmp_path):
    from lra.runner import build_trainer, with_run_dir
    from lra.throughput import ThroughputMeter

    cfg = compose_train(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                         "logger=none", "callbacks/progress_bar=none"])
    trainer = build_trainer(with_run_dir(cfg, tmp_path), [ThroughputMeter()], logger=False)
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    assert (trainer.world_size, trainer.num_devices) == (2, 2)


def test_slurm_launcher_composes():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            "task=text", "attn=lot", "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=1440",
            "trainer=ddp", "trainer.devices=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node,
            launcher.timeout_min) == ("gpu", 2, 2, 1440)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "submitit_slurm"
    # Each job still gets its own directory (hence its own results.json) under the sweep dir.
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
    assert subdir == "${hydra.job.num}_${task.name}_${attn.name}_s${seed}"


def test_slurm_launcher_on_the_command_line():
    result = subprocess.run(
        [sys.executable, "train.py", "task=listops", "attn=lot", "hydra/launcher=submitit_slurm",
         "hydra.launcher.partition=gpu", "--cfg", "hydra", "--package", "hydra.launcher"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "partition: gpu" in result.stdout


def _sweep_jobs(*overrides: str) -> list[list[str]]:
    """The jobs a `-m` sweep with these overrides launches (Hydra's basic sweeper)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_documented_sweeps_expand_to_the_table():
    """EXPERIMENTS.md's sweeps: the whole table is 5 tasks x every backend x 3 seeds; globs over
    the task and attn groups pick the cells."""
    jobs = _sweep_jobs("task=glob(*,exclude=pathx)", "attn=glob(*)", "seed=0,1,2", "tag=lra")
    cells = sorted({(job[0].split("=")[1], job[1].split("=")[1]) for job in jobs})
    assert len(jobs) == 5 * len(ATTNS) * 3
    assert cells == sorted(itertools.product([t for t in TASKS if t != "pathx"], ATTNS))
    assert len(_sweep_jobs("task=text", "attn=glob(*)")) == len(ATTNS)  # one column
    assert len(_sweep_jobs("task=glob(*)", "attn=lot")) == 6  # one row, Path-X included
    assert len(_sweep_jobs("task=pathx", "attn=glob(*)", "seed=0,1,2")) == 3 * len(ATTNS)
    assert len(_sweep_jobs("task=listops,text,retrieval,image,pathfinder",
                           "attn=" + ",".join(ATTNS), "seed=0,1,2")) == 5 * len(ATTNS) * 3


def test_documented_commands_name_no_missing_preset():
    """Every `experiment=<name>` in the docs is a config file."""
    import re

    for doc in ("README.md", "EXPERIMENTS.md", "configs/README.md"):
        for name in re.findall(r"experiment=([\w/]+)", (REPO_ROOT / doc).read_text()):
            assert (PRESET_DIR / f"{name}.yaml").is_file(), (doc, name)
