"""Benchmark presets and options: shapes and backend options per preset.

The LRA presets are READ from the training configs (configs/task/<task>.yaml for the batch size
and maximum length, configs/model/lra_small.yaml for heads x head dim and
configs/task_attn/<task>_<backend>.yaml for a backend's per-task options, e.g. LOT's rank, eps
and iterations), so they cannot drift from what training uses. Backends and their options come
from the attention registry.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SIZE_ARGS = ("num_heads", "head_dim", "max_len")  # set by the benchmark, not by --option


class BenchError(ValueError):
    """A usage error with a message that says what to do."""


@dataclass(frozen=True)
class Preset:
    batch: int
    heads: int
    head_dim: int
    lengths: list[int]
    options: dict = field(default_factory=dict)  # backend -> {option: value}
    note: str = ""


def _pow2(lo: int, hi: int) -> list[int]:
    return [2 ** e for e in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]


def _yaml(*parts: str) -> dict:
    return yaml.safe_load((CONFIG_DIR.joinpath(*parts)).read_text()) or {}


def task_preset(task: str, note: str, *, count_pairs_once: bool = False) -> Preset:
    """The training shape of an LRA task: its batch size (a dual task's shared encoder runs
    both documents of a pair as one batch, so its attention sees twice as many sequences
    unless ``count_pairs_once``), its max_len, the model's heads and head dim, and every
    backend's per-task options from configs/task_attn/<task>_<backend>.yaml."""
    spec, model = _yaml("task", f"{task}.yaml"), _yaml("model", "lra_small.yaml")
    batch = spec["batch_size"] * (2 if spec.get("dual") and not count_pairs_once else 1)
    options = {path.stem[len(task) + 1:]: dict(_yaml("task_attn", path.name).get("attn", {}))
               for path in sorted((CONFIG_DIR / "task_attn").glob(f"{task}_*.yaml"))}
    return Preset(batch, model["num_heads"], model["dim"] // model["num_heads"],
                  [spec["max_len"]], options, note)


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    """Every preset by name (the configs are read once)."""
    return {
        "paper-latency": Preset(1, 16, 64, _pow2(512, 16384), {"lot": {"rank": 32, "n_iters": 5}},
                                "LOTFormer latency benchmark: B=1, H=16, D=64, r=32, 5 iterations"),
        "lra-listops": task_preset("listops", "LRA ListOps training shape"),
        "lra-text": task_preset("text", "LRA Text training shape"),
        "lra-retrieval": task_preset("retrieval",
                                     "LRA Retrieval training shape (16 pairs = 32 documents)"),
        "lra-text-retrieval": task_preset(
            "retrieval", "the LOT issue's Text/Retrieval target setting: B=16, n=4000, r=64",
            count_pairs_once=True),
        "lra-image": task_preset("image", "LRA Image training shape"),
        "lra-pathfinder": task_preset("pathfinder", "LRA Pathfinder training shape"),
        "scaling": Preset(1, 1, 32, _pow2(1024, 65536), {"lot": {"rank": 32}},
                          "one head, long sequences: is time / memory linear in n?"),
    }


def backend_names() -> list[str]:
    """Every registered backend (importing the attention package registers them all)."""
    from lotformer.attention import available_attentions

    return available_attentions()


def backend_options(name: str) -> dict[str, object]:
    """The backend's own constructor options and their defaults (sizes excluded)."""
    from lotformer.attention import attention_class

    params = inspect.signature(attention_class(name).__init__).parameters
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in params.values()
        if p.name != "self" and p.name not in SIZE_ARGS
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def parse_value(text: str) -> object:
    """'5' -> 5, '0.1' -> 0.1, 'true' -> True, 'none' -> None, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_option(text: str) -> tuple[str, str, object]:
    """'lot.n_iters=50' -> ('lot', 'n_iters', 50)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_\-]+)\.([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", text)
    if not match or not match.group(3).strip():
        raise BenchError(f"bad --option {text!r}: expected BACKEND.KEY=VALUE, "
                         "e.g. --option lot.n_iters=50")
    return match.group(1), match.group(2), parse_value(match.group(3).strip())


def resolve_backends(requested: str | None, valid: list[str]) -> list[str]:
    """'a,b' -> ['a', 'b'] checked against ``valid``; None or '' -> every valid backend."""
    if not requested:
        return list(valid)
    names = [b.strip() for b in requested.split(",") if b.strip()]
    unknown = [b for b in names if b not in valid]
    if unknown:
        raise BenchError(f"unknown attention backend(s) {', '.join(unknown)}; "
                         f"valid names: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def resolve_options(backends: list[str], preset: Preset, overrides: list[str],
                    valid: list[str]) -> dict[str, dict]:
    """Per-backend options: preset values, then --option overrides, checked against the
    backend's constructor; returns the full effective options (defaults filled in)."""
    chosen: dict[str, dict] = {b: dict(preset.options.get(b, {})) for b in backends}
    for text in overrides:
        name, key, value = parse_option(text)
        if name not in valid:
            raise BenchError(f"--option {text!r}: unknown attention backend {name!r}; "
                             f"valid names: {', '.join(valid)}")
        if key in SIZE_ARGS:
            raise BenchError(f"--option {text!r}: {key} is set by the benchmark "
                             "(use --heads / --head-dim; max_len is always n)")
        if name not in chosen:
            print(f"warning: --option {text!r} is for {name}, which is not benchmarked",
                  file=sys.stderr)
            continue
        chosen[name][key] = value
    effective = {}
    for name in backends:
        defaults = backend_options(name)
        unknown = sorted(set(chosen[name]) - set(defaults))
        if unknown:
            raise BenchError(f"attention backend {name!r} has no option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(defaults) or '(none)'}")
        effective[name] = {**defaults, **chosen[name]}
    return effective


def parse_ints(text: str, option: str, example: str, *, minimum: int = 1) -> list[int]:
    """'512,1024' -> [512, 1024] (sorted, unique, each >= minimum; '' -> []); a BenchError
    naming ``option`` otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"{option} {text!r}: expected comma-separated integers, "
                         f"e.g. {example}") from None
    if any(v < minimum for v in values):
        raise BenchError(f"{option} {text!r}: expected integers >= {minimum}")
    return sorted(set(values))


def parse_lengths(text: str) -> list[int]:
    """'512,1024' -> [512, 1024] (sorted, unique, positive)."""
    values = parse_ints(text, "--lengths", "512,1024")
    if not values:
        raise BenchError(f"--lengths {text!r}: expected positive integers")
    return values
