"""The paper-table presets (configs/experiment/lra/), multi-GPU (trainer=ddp), the Slurm
launcher, and the sweep commands that EXPERIMENTS.md documents."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT
from tests.helpers import CONFIG_DIR, compose_train

TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
ATTNS = ["lot", "softmax", "sinkhorn", "linear", "performer", "nystrom", "linformer", "skyformer"]
PRESET_DIR = CONFIG_DIR / "experiment" / "lra"
PRESETS = [f"{task}_{attn}" for task, attn in itertools.product(TASKS, ATTNS)]


def test_one_preset_per_table_cell():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_thin(preset):
    """A preset only picks the task and backend and sets the tag: settings live in task/,
    attn/ and task_attn/ and are not duplicated."""
    text = (PRESET_DIR / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    node = OmegaConf.create(text)
    task, attn = preset.split("_")
    assert OmegaConf.to_container(node) == {
        "defaults": [{"override /task": task}, {"override /attn": attn}], "tag": f"lra/{preset}"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_to_its_cell(preset):
    """`experiment=lra/<task>_<attn>` is exactly `task=<task> attn=<attn>` plus the tag."""
    task, attn = preset.split("_")
    cfg = compose_train([f"experiment=lra/{preset}"])
    assert (cfg.task.name, cfg.attn.name, cfg.tag) == (task, attn, f"lra/{preset}")
    plain = compose_train([f"task={task}", f"attn={attn}", f"tag=lra/{preset}"])
    assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(plain, resolve=True)


@pytest.mark.parametrize("task,rank,eps,n_iters", [
    ("listops", 4, 0.1, 25), ("text", 32, 0.1, 25), ("retrieval", 64, 0.1, 25),
    ("image", 8, 25.0, 3), ("pathfinder", 64, 0.1, 25), ("pathx", 64, 0.1, 25),
])
def test_lot_presets_carry_per_task_settings(task, rank, eps, n_iters):
    cfg = compose_train([f"experiment=lra/{task}_lot"])
    assert (cfg.attn.rank, cfg.attn.eps, cfg.attn.n_iters) == (rank, eps, n_iters)
    # ... and the command line still wins over them.
    cfg = compose_train([f"experiment=lra/{task}_lot", "attn.rank=2", "seed=3"])
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
def test_presets_train_with_the_paper_settings(task):
    cfg = compose_train([f"experiment=lra/{task}_softmax"])
    assert (cfg.task.max_len, cfg.task.num_classes, cfg.task.batch_size, cfg.optim.lr,
            cfg.sched.warmup_steps, cfg.trainer.max_steps,
            cfg.trainer.val_check_interval) == PAPER_SETTINGS[task]
    assert (cfg.model.dim, cfg.model.depth, cfg.model.num_heads, cfg.model.mlp_dim) == (64, 2, 2, 128)
    assert cfg.task.dual is (task == "retrieval")


def test_ddp_trainer_composes_and_inherits_defaults():
    default = compose_train([]).trainer
    cfg = compose_train(["experiment=lra/text_lot", "trainer=ddp", "trainer.devices=2"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp", 2, "auto")
    for key in ("gradient_clip_val", "precision", "num_nodes", "max_steps", "val_check_interval",
                "num_workers", "log_every_n_steps"):
        assert cfg.trainer[key] == default[key], key
    assert cfg.trainer.max_steps == 50000 and cfg.attn.rank == 32
    assert compose_train(["trainer=ddp"]).trainer.devices == "auto"


def test_ddp_trainer_builds_a_two_process_lightning_trainer(tmp_path):
    from lra.runner import build_trainer
    from lra.throughput import ThroughputMeter

    cfg = compose_train(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                         "logger=none", "callbacks/progress_bar=none"])
    trainer = build_trainer(cfg, tmp_path, ThroughputMeter())
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    assert (trainer.world_size, trainer.num_devices) == (2, 2)


def test_slurm_launcher_composes():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=lra/text_lot", "hydra/launcher=submitit_slurm",
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
        [sys.executable, "train.py", "experiment=lra/listops_lot", "hydra/launcher=submitit_slurm",
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
    """EXPERIMENTS.md's whole-table sweep: 5 tasks x 8 backends x 3 seeds. Hydra lists only the
    top level of a group, so `experiment=glob(lra/*)` matches nothing; the presets are swept as
    their own group `+experiment/lra`."""
    jobs = _sweep_jobs("+experiment/lra=glob(*,exclude=pathx_*)", "seed=0,1,2")
    presets = sorted({job[0].split("=")[1] for job in jobs})
    assert len(jobs) == 120 and presets == sorted(p for p in PRESETS if not p.startswith("pathx"))
    assert len(_sweep_jobs("+experiment/lra=glob(text_*)")) == 8  # one column
    assert len(_sweep_jobs("+experiment/lra=glob(*_lot)")) == 6  # one row, Path-X included
    assert _sweep_jobs("experiment=glob(lra/*)") == []
    assert len(_sweep_jobs("task=listops,text,retrieval,image,pathfinder",
                           "attn=" + ",".join(ATTNS), "seed=0,1,2")) == 120


def test_preset_group_override_matches_experiment_override():
    """`+experiment/lra=<cell>` (the sweep form) composes the same run as `experiment=lra/<cell>`."""
    a = compose_train(["+experiment/lra=image_lot", "seed=1"])
    b = compose_train(["experiment=lra/image_lot", "seed=1"])
    assert OmegaConf.to_container(a, resolve=True) == OmegaConf.to_container(b, resolve=True)
    assert a.attn.rank == 8 and a.tag == "lra/image_lot"
