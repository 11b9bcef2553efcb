"""The datamodule config group builds the data module; the keys users override reach it."""

from __future__ import annotations

from pathlib import Path

from lra.datamodule import DataConfig, LRADataModule
from lra.runner import build_datamodule
from tests.helpers import compose_train


def test_datamodule_group_builds_the_config_from_task_paths_and_trainer(tmp_path):
    cfg = compose_train([
        "task=pathfinder", "attn=softmax", "task.batch_size=12", "task.max_len=256",
        "trainer.num_workers=3", "trainer.eval_batch_size=5", "seed=7", "task.max_steps=9",
        f"paths.data_dir={tmp_path / 'd'}", f"paths.cache_dir={tmp_path / 'c'}",
        "task.data.difficulty=easy", "task.data.generate={n: 20, seed: 1}",
    ])
    module = build_datamodule(cfg)
    assert isinstance(module, LRADataModule)
    assert module.config == DataConfig(
        task="pathfinder", data_dir=tmp_path / "d", cache_dir=tmp_path / "c", max_len=256,
        batch_size=12, eval_batch_size=5, num_workers=3, seed=7, total_steps=9,
        options={"difficulty": "easy", "split_seed": 0, "generate": {"n": 20, "seed": 1}})


def test_datamodule_defaults_follow_the_task():
    config = build_datamodule(compose_train(["task=listops", "attn=softmax"])).config
    assert (config.batch_size, config.eval_batch_size, config.max_len, config.total_steps) == (
        32, 32, 2000, 50000)  # eval_batch_size null: the training batch
    assert config.cache_dir == Path(config.data_dir) / ".cache"
    assert config.options["generate"]["train"] == 96000 and config.trim_padding


def test_a_task_without_a_data_node_gets_no_reader_options():
    cfg = compose_train(["task=retrieval", "attn=softmax", "~task.data"])
    assert build_datamodule(cfg).config.options == {}
