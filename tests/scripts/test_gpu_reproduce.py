"""scripts/gpu_reproduce.sh (issue #14's GPU runs) on a machine without a GPU: usage errors,
the refusal without CUDA, and --dry-run commands that the suite's own checks accept."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from scripts.reproduce import main as reproduce_main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_reproduce.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _commands(what: str) -> list[list[str]]:
    result = _run(what, "--dry-run")
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_usage_and_no_gpu_are_refused():
    usage = _run("everything")
    assert usage.returncode == 2 and "usage: scripts/gpu_reproduce.sh step|reproduce" in usage.stderr
    if not torch.cuda.is_available():
        no_gpu = _run("step")
        assert no_gpu.returncode == 2 and "needs a CUDA GPU" in no_gpu.stderr


def test_step_commands_name_real_options():
    bench, summary = _commands("step")
    assert bench[:3] == ["timeout", "540", bench[2]] and bench[3] == "scripts/bench_step.py"
    from scripts.bench_step import build_parser

    args = build_parser().parse_args(bench[4:])
    assert args.device == "cuda" and args.timeout == 20 and args.loader_workers == "0,4"
    assert summary[1:3] == ["scripts/bench_step.py", "--summary"] and summary[3].endswith("step_cuda.csv")


def test_reproduce_command_passes_the_planner_checks(tmp_path, capsys):
    (command,) = _commands("reproduce")
    assert command[:4] == ["timeout", "570", command[2], "scripts/reproduce.py"]
    args = [a for a in command[4:] if a != "trainer.accelerator=gpu"]  # no GPU to check it on here
    assert "trainer.accelerator=gpu" in command
    code = reproduce_main(["--dry-run", *args, f"paths.data_dir={tmp_path}"])
    assert code == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "4 runs" in out or out.count("python train.py") == 4
    assert "{'n': 20000, 'seed': 0, 'workers': 16}" in out
