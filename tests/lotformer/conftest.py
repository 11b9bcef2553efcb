"""Solver configurations that degenerate-input tests run under.

Results must not depend on the machine: the same inputs are solved with the fused numba kernel
and with the BLAS loop, each on one and on two threads.
"""

from __future__ import annotations

import pytest
import torch

import lotformer.sinkhorn as sinkhorn_module

SOLVER_CONFIGS = [("fused", 1), ("fused", 2), ("blas", 1), ("blas", 2)]


@pytest.fixture(params=SOLVER_CONFIGS, ids=[f"{path}-{threads}t" for path, threads in SOLVER_CONFIGS])
def solver_config(request, monkeypatch):
    """Sets the CPU solver path and the torch thread count for one test; restores both."""
    path, threads = request.param
    monkeypatch.setattr(sinkhorn_module, "FUSED_CPU_UPDATES", path == "fused")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield request.param
    torch.set_num_threads(before)
