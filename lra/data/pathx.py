"""Path-X: Pathfinder at 128x128 (16384 pixel tokens), Long Range Arena (Tay et al. 2021).

Same reader as `lra.data.pathfinder`, with `resolution=128` (`pathfinder128/...`) by default.
Token ids: id = pixel + 1 (1..256; 0 is padding), so vocab_size >= 257.
"""

from __future__ import annotations

from pathlib import Path

from lra.data import pathfinder
from lra.data.base import Located
from lra.data.pathfinder import OFFICIAL_SIZES, read, source_of, split_sizes  # noqa: F401  (the task's reader)

RESOLUTION = 128


def locate(data_dir: str | Path, *, difficulty: str = "hard", split_seed: int = 0,
           generate: dict | None = None) -> Located:
    """`pathfinder128/<difficulty dir>/` under data_dir; options as in `pathfinder.locate`."""
    return pathfinder.locate(data_dir, difficulty=difficulty, resolution=RESOLUTION,
                             split_seed=split_seed, generate=generate)
