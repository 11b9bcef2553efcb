"""The Hydra config tree: every task x backend composes, names match the registry,
per-task backend settings apply and stay overridable."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from lotformer import available_attentions
from lra.checks import check_config
from tests.conftest import REPO_ROOT
from tests.helpers import CONFIG_DIR, compose_train

# Training steps per task (REFERENCE §2), which the schedule must decay over.
TASK_STEPS = {"listops": 50000, "text": 50000, "retrieval": 50000, "image": 50000,
              "pathfinder": 60000, "pathx": 60000}
TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
ATTNS = sorted(p.stem for p in (CONFIG_DIR / "attn").glob("*.yaml"))


def test_every_task_config_exists():
    assert TASKS == ["image", "listops", "pathfinder", "pathx", "retrieval", "text"]


def test_attn_configs_match_registry():
    assert ATTNS == available_attentions()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("attn", ATTNS)
def test_every_pair_passes_the_backend_check_and_builds(task, attn):
    cfg = compose_train([f"task={task}", f"attn={attn}"])
    check_config(cfg)  # the backend's own check of its options against this task's length
    model = instantiate(cfg.model, _convert_="all")
    assert (model.max_len, model.num_classes, model.attention_name) == (
        cfg.task.max_len, cfg.task.num_classes, attn)
    schedule = instantiate(cfg.sched)
    assert schedule.keywords["total_steps"] == TASK_STEPS[task]


@pytest.mark.parametrize("task,rank,eps,n_iters", [
    ("listops", 4, 0.1, 25), ("text", 32, 0.1, 25), ("retrieval", 64, 0.1, 25),
    ("image", 8, 25.0, 3), ("pathfinder", 64, 0.1, 25),
])
def test_lot_per_task_settings_apply(task, rank, eps, n_iters):
    cfg = compose_train([f"task={task}", "attn=lot"])
    assert (cfg.attn.rank, cfg.attn.eps, cfg.attn.n_iters) == (rank, eps, n_iters)


def test_lot_per_task_settings_stay_overridable():
    cfg = compose_train(["task=text", "attn=lot", "attn.rank=16", "attn.eps=0.05", "attn.n_iters=10"])
    assert (cfg.attn.rank, cfg.attn.eps, cfg.attn.n_iters) == (16, 0.05, 10)


def test_per_task_settings_do_not_leak_to_other_backends():
    cfg = compose_train(["task=text", "attn=softmax"])
    assert "rank" not in cfg.attn


def test_listops_paper_training_settings():
    cfg = compose_train(["task=listops", "attn=lot"])
    assert (cfg.task.batch_size, cfg.optim.lr, cfg.sched.warmup_steps, cfg.trainer.max_steps,
            cfg.trainer.val_check_interval) == (32, 1e-4, 5000, 50000, 1000)
    assert list(cfg.optim.betas) == [0.9, 0.98] and cfg.trainer.gradient_clip_val == 5.0
    assert (cfg.sched.start_factor, cfg.sched.end_factor) == (0.1, 0.4)
    assert cfg.model.dim == 64 and cfg.model.depth == 2 and cfg.model.num_heads == 2


def test_quick_preset_overrides_task_and_schedule():
    cfg = compose_train(["experiment=quick"])
    assert cfg.attn.name == "lot" and cfg.attn.rank == 4  # LOT with its ListOps settings
    assert cfg.task.name == "listops" and cfg.trainer.max_steps <= 3000
    schedule = instantiate(cfg.sched).keywords  # the built schedule follows the preset
    assert schedule["warmup_steps"] < schedule["total_steps"] == cfg.trainer.max_steps
    # A backend named on the command line still wins over the preset's, so presets sweep.
    assert compose_train(["experiment=quick", "attn=softmax"]).attn.name == "softmax"
    assert sum(cfg.task.data.generate[s] for s in ("train", "val", "test")) <= 10000
    # a labelled smaller ListOps: short, shallow trees that fit task.max_len
    assert cfg.task.data.generate.max_length <= cfg.task.max_len < 2000
    assert cfg.task.data.generate.max_depth < 10


def test_unknown_group_options_list_valid_names():
    with pytest.raises(MissingConfigException, match="attn/nope"):
        compose_train(["attn=nope"])
    result = subprocess.run([sys.executable, "train.py", "attn=nope", "--cfg", "job"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Available options in 'attn'" in result.stderr and "softmax" in result.stderr
    result = subprocess.run([sys.executable, "train.py", "task=nope", "--cfg", "job"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert "Available options in 'task'" in result.stderr and "listops" in result.stderr
