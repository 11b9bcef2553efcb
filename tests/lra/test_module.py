"""The LightningModule pieces: schedule shape, two-document head, and the optimizer and
schedule that the `optim` and `sched` config groups build."""

from __future__ import annotations

import math

import pytest
import torch

from lra.module import LRAModule, ModelConfig
from lra.runner import build_module
from lra.schedules import warmup_cosine
from tests.helpers import compose_train


def test_warmup_cosine_endpoints_and_shape():
    kw = dict(warmup_steps=100, total_steps=1100, start_factor=0.1, end_factor=0.4)
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(50, **kw) == pytest.approx(0.55)
    assert warmup_cosine(100, **kw) == pytest.approx(1.0)
    assert warmup_cosine(600, **kw) == pytest.approx(0.4 + 0.6 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert warmup_cosine(1100, **kw) == pytest.approx(0.4)
    assert warmup_cosine(5000, **kw) == pytest.approx(0.4)  # stays at the floor
    values = [warmup_cosine(s, **kw) for s in range(100, 1101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_dual_module_classifies_pairs_with_one_encoder():
    model = LRAModule(ModelConfig(vocab_size=20, max_len=16, num_classes=2, dual=True))
    ids = torch.randint(1, 20, (3, 2, 16))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 1, 10:] = False
    assert model(ids, mask).shape == (3, 2)
    assert model.head[0].in_features == 4 * 64
    # Swapping the documents changes u - v, so the logits are not symmetric in general.
    assert not torch.allclose(model(ids, mask), model(ids.flip(1), mask.flip(1)))


def test_encoder_rejects_input_longer_than_position_table():
    model = LRAModule(ModelConfig(vocab_size=20, max_len=8, num_classes=2))
    with pytest.raises(ValueError, match="longer than the position table"):
        model(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 9, dtype=torch.bool))


def test_model_config_is_built_from_task_model_and_attn_groups():
    module = build_module(compose_train(["task=text", "attn=lot", "model.depth=1"]))
    config = module.config
    assert (config.vocab_size, config.max_len, config.num_classes, config.depth) == (512, 4000, 2, 1)
    assert config.attention_name == "lot" and config.attention_options["rank"] == 32
    assert module.hparams["model"]["attention"]["rank"] == 32  # plain values in checkpoints


def test_default_optimizer_is_adamw_with_the_warmup_cosine_schedule():
    cfg = compose_train(["task=listops", "attn=softmax"])
    setup = build_module(cfg).configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["betas"] == (0.9, 0.98) or list(optimizer.defaults["betas"]) == [0.9, 0.98]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * cfg.task.lr)  # warmup start
    assert setup["lr_scheduler"]["interval"] == "step"
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] > 0.1 * cfg.task.lr


def test_optim_sgd_is_used():
    cfg = compose_train(["task=listops", "attn=softmax", "optim=sgd", "optim.lr=0.5"])
    optimizer = build_module(cfg).configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["momentum"] == 0.9


class ToyOptimizer(torch.optim.SGD):
    """A stand-in optimizer named by `_target_` on the command line."""

    def __init__(self, params, lr: float, toy_flag: str) -> None:
        super().__init__(params, lr=lr)
        self.toy_flag = toy_flag


def test_a_new_optim_file_with_any_target_is_used(tmp_path):
    """A user's own `optim/toy.yaml` (here in an extra config dir) is what trains."""
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "toy.yaml").write_text(
        f"_target_: {__name__}.ToyOptimizer\n_partial_: true\nlr: 0.25\ntoy_flag: x\n")
    cfg = compose_train(["task=listops", "attn=softmax", "sched=constant", "optim=toy",
                         f"hydra.searchpath=[file://{tmp_path}]"])
    setup = build_module(cfg).configure_optimizers()
    optimizer = setup["optimizer"]
    assert isinstance(optimizer, ToyOptimizer) and optimizer.toy_flag == "x"
    optimizer.step()
    setup["lr_scheduler"]["scheduler"].step()
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_module_without_optimizer_factory_cannot_train():
    module = LRAModule(ModelConfig(vocab_size=20, max_len=8, num_classes=2))
    with pytest.raises(RuntimeError, match="without an optimizer factory"):
        module.configure_optimizers()


def _old_layout_checkpoint(module: LRAModule, **hparams) -> dict:
    """A checkpoint as LRAModule wrote it before ModelConfig (commit d0808a8): flat hparams."""
    import lightning

    return {"state_dict": module.state_dict(), "pytorch-lightning_version": lightning.__version__,
            "hparams_name": "kwargs", "hyper_parameters": hparams}


OLD_LOT_HPARAMS = {  # what LRAModule(vocab_size=20, max_len=16, num_classes=3, attention="lot",
    # attention_options={"rank": 4}, on_nonfinite="skip").hparams held at d0808a8^
    "vocab_size": 20, "max_len": 16, "num_classes": 3, "dual": False, "dim": 64, "depth": 2,
    "num_heads": 2, "mlp_dim": 128, "dropout": 0.1, "head_hidden": 128, "attention": "lot",
    "attention_options": {"rank": 4}, "lr": 0.0001, "betas": [0.9, 0.98], "adam_eps": 1e-08,
    "weight_decay": 0.0, "warmup_steps": 0, "total_steps": 1, "start_factor": 0.1,
    "end_factor": 0.4, "on_nonfinite": "skip"}


def test_a_checkpoint_in_the_layout_before_model_config_loads(tmp_path):
    torch.manual_seed(0)
    source = LRAModule(ModelConfig(vocab_size=20, max_len=16, num_classes=3,
                                   attention={"name": "lot", "rank": 4}), on_nonfinite="skip").eval()
    path = tmp_path / "old.ckpt"
    torch.save(_old_layout_checkpoint(source, **OLD_LOT_HPARAMS), path)
    loaded = LRAModule.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
    assert loaded.config == source.config and loaded.on_nonfinite == "skip"
    ids = torch.randint(1, 20, (2, 16))
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.testing.assert_close(loaded(ids, mask), source(ids, mask), rtol=0, atol=0)


def test_a_checkpoint_in_an_unknown_layout_says_what_to_do(tmp_path):
    from lra.errors import CheckpointError

    source = LRAModule(ModelConfig(vocab_size=20, max_len=16, num_classes=3))
    path = tmp_path / "other.ckpt"
    torch.save(_old_layout_checkpoint(source, **OLD_LOT_HPARAMS, hidden_size=64), path)
    with pytest.raises(CheckpointError) as err:
        LRAModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path}: its hyper-parameters are in neither layout")
    assert "unknown keys: ['hidden_size']" in message and "retrain" in message
    assert "\n" not in message
