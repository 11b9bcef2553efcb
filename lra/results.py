"""Reading and writing results records (`results.json`, one per run directory), and the
provenance a record carries (code version, software versions, device).

The record's fields are defined once, by `lra.record.RunRecord`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lra.record import SCHEMA_VERSION, RunRecord

RECORD_NAME = "results.json"


def write_record(run_dir: str | Path, record: RunRecord | dict[str, Any]) -> Path:
    """Write `record` to run_dir/results.json atomically (temp file + rename); a dict is
    written as given (tests write odd records this way)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RECORD_NAME
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".json", dir=run_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            data = record.to_dict() if isinstance(record, RunRecord) else {"schema": SCHEMA_VERSION, **record}
            json.dump(finite_json(data), handle, indent=2, default=str, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None: strict JSON (no bare NaN),
    which every JSON reader accepts. The record's status and error say why a value is missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def read_record(path: str | Path) -> dict[str, Any]:
    """Read one record (a results.json path or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    with open(path) as handle:
        return json.load(handle)


def find_records(*roots: str | Path) -> list[Path]:
    """All results.json files under the given run directories, sorted."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if root.is_file() and root.name == RECORD_NAME:
            found.add(root)
        elif root.is_dir():
            found.update(root.rglob(RECORD_NAME))
    return sorted(found)


def git_info(repo: str | Path | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the code that ran, or nulls outside a git checkout."""
    repo = Path(repo or Path(__file__).resolve().parents[1])

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str]:
    """Versions of the software that ran."""
    import lightning

    try:
        from importlib.metadata import version

        suite = version("lotformer-lra")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        suite = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": lightning.__version__, "lotformer_lra": suite}


def device_info() -> dict[str, Any]:
    """The device the run trained on."""
    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0),
                "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(),
            "count": 1, "threads": torch.get_num_threads()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
