"""Per-run peak memory: a process hosting several runs reports each run's own peak."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lra.throughput import peak_memory, reset_peak_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_peak_is_reset_between_runs_in_one_process():
    reset_peak_memory()
    big = np.ones(400 * 2**20 // 8)  # 400 MiB resident
    first = peak_memory(torch.device("cpu"))
    del big
    reset_peak_memory()
    second = peak_memory(torch.device("cpu"))
    assert first["kind"] == second["kind"] == "cpu_peak_rss"
    assert first["peak_bytes"] - second["peak_bytes"] > 300 * 2**20
