"""Shared test fixtures and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real files in the official LRA formats, made by the original generators (a copy of the
# project's shared/lra-samples, kept in the repository so that a bare clone can run the tests).
SAMPLES_DIR = Path(os.environ.get("LRA_SAMPLES_DIR", REPO_ROOT / "tests" / "fixtures" / "lra-samples"))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.fail(f"LRA samples not found at {SAMPLES_DIR}; set LRA_SAMPLES_DIR to the "
                    "folder holding lra_release/ (the repository's tests/fixtures/lra-samples)")
    return SAMPLES_DIR


_TORCH_THREADS = None


@pytest.fixture(autouse=True)
def same_thread_count_for_every_test():
    """Every test starts with the worker's initial torch thread count, whatever an earlier
    test in the same pytest worker set. It guards tests that set threads themselves; the fused
    kernel restores the count that numba's OpenMP start-up resets (see
    test_fused_kernel_leaves_torch_thread_count_as_it_was), and code that also sets numba's
    threads, such as the benchmarks' measurements, runs in its own process in tests (see
    test_bench_step)."""
    import torch

    global _TORCH_THREADS
    if _TORCH_THREADS is None:
        _TORCH_THREADS = torch.get_num_threads()
    torch.set_num_threads(_TORCH_THREADS)
    yield
