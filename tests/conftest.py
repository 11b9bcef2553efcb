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

