"""Helpers shared by tests: compose the Hydra config the way train.py does."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.conftest import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    """Compose configs/train.yaml with command-line style overrides (no Hydra run dir)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides or []))


def tiny_run_overrides(tmp_path: Path, task: str = "listops", attn: str = "softmax") -> list[str]:
    """Overrides for a 2-step fit + test on a few generated ListOps examples under tmp_path."""
    return [
        f"task={task}", f"attn={attn}", "debug=fast", "logger=none", "callbacks/progress_bar=none",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'outputs'}",
        "task.batch_size=4", "task.max_len=2000",
        "task.data.generate={train: 16, val: 8, test: 8, seed: 0}",
    ]


def short_run_overrides(tmp_path: Path, attn: str = "softmax") -> list[str]:
    """tiny_run_overrides on short generated ListOps (10-60 symbols, max_len 64), for runs whose
    dense attention maps must stay cheap (attention diagnostics)."""
    tiny = [o for o in tiny_run_overrides(tmp_path, attn=attn) if not o.startswith("task.max_len")]
    return tiny + ["task.max_len=64", "+task.data.generate.min_length=10",
                   "+task.data.generate.max_length=60", "+task.data.generate.max_depth=3",
                   "+task.data.generate.max_args=4"]


def read_wandb_history_keys(path: Path) -> set[str]:
    """Metric keys logged in an offline `run-*.wandb` file.

    The file is a LevelDB-style log (7-byte ':W&B' header, 32 KiB blocks, records with a
    7-byte crc/length/type header, FULL/FIRST/MIDDLE/LAST fragments) of wandb protobuf
    `Record`s; wandb no longer ships a Python reader for it.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    blob = Path(path).read_bytes()
    assert blob[:4] == b":W&B", f"{path} is not a wandb transaction log"
    block, pos, pending, keys = 32768, 7, b"", set()
    while pos + 7 <= len(blob):
        if block - pos % block < 7:  # block trailer too small for a header: zero padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", blob[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        data, pos = blob[pos + 7:pos + 7 + length], pos + 7 + length
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
    return keys


def saved_bytes(fn) -> int:
    """Bytes of distinct storages that autograd saves for backward while running fn()."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    assert out.requires_grad
    return sum(seen.values())
