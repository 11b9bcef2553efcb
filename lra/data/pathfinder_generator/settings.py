"""Generator settings: the original's arguments, with LRA's values for Pathfinder-32 and
Path-X."""

from __future__ import annotations

from dataclasses import dataclass

DIFFICULTY_LENGTHS = {"easy": 6, "medium": 9, "hard": 14}

# Marker intensity before the final 0..255 scaling, against paddles at snake x paddle contrast.
# "visible": snakes2.py as written (scipy.misc.imresize returns 0..255 bytes, `/ 255` gives
# 1.0): gray discs of radius `marker_radius`. "faint": a Python 3 port whose resize returns
# 0..1 floats, so the same `/ 255` leaves at most 1/255: below one gray level after scaling,
# as in the real samples (package docstring).
MARKER_INTENSITY = {"visible": 1.0, "faint": 1.0 / 255}


@dataclass(frozen=True)
class PathfinderSettings:
    """Generator settings (names follow the original generator's arguments)."""

    resolution: int
    contour_length: int
    padding: int
    antialias_scale: int
    paddle_length: int
    paddle_thickness: float
    paddle_margins: tuple[int, ...]  # one is drawn per image
    marker_radius: float
    seed_distance: int
    continuity: float
    distractor_length: int
    num_distractors: int
    snake_contrasts: tuple[float, ...]
    paddle_contrasts: tuple[float, ...]
    markers: str = "visible"  # a key of MARKER_INTENSITY
    max_paddle_retrial: int = 2
    max_distractor_retrial: int = 4
    max_image_retrial: int = 100_000  # restarts of the two target snakes (the original: unbounded)

    def __post_init__(self) -> None:
        if self.markers not in MARKER_INTENSITY:
            raise ValueError(f"markers must be one of {sorted(MARKER_INTENSITY)}, got {self.markers!r}: "
                             "'visible' draws snakes2.py's marker discs, 'faint' matches the real samples")


def settings_for(resolution: int = 32, difficulty: str = "hard", markers: str = "visible") -> PathfinderSettings:
    """LRA's settings: Pathfinder-32 (REFERENCE §3) and Path-X / Pathfinder-128 (LRA's TFDS
    builder notes: padding 1, margins {2, 3}, seed distance 20, marker radius 3, thickness 1.5,
    antialias 2, continuity 1.8, 35 distractor paddles, snake contrast 0.9, paddle length 5)."""
    if difficulty not in DIFFICULTY_LENGTHS:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTY_LENGTHS)}, got {difficulty!r}")
    length = DIFFICULTY_LENGTHS[difficulty]
    distractor_length = length // 3
    if resolution == 32:
        return PathfinderSettings(
            resolution=32, contour_length=length, padding=1, antialias_scale=2, paddle_length=2,
            paddle_thickness=0.5, paddle_margins=(1,), marker_radius=1.5, seed_distance=7,
            continuity=1.0, distractor_length=distractor_length,
            num_distractors=20 // distractor_length, snake_contrasts=(2.0,), paddle_contrasts=(0.75,),
            markers=markers)
    if resolution == 128:
        return PathfinderSettings(
            resolution=128, contour_length=length, padding=1, antialias_scale=2, paddle_length=5,
            paddle_thickness=1.5, paddle_margins=(2, 3), marker_radius=3.0, seed_distance=20,
            continuity=1.8, distractor_length=distractor_length,
            num_distractors=35 // distractor_length, snake_contrasts=(0.9,), paddle_contrasts=(1.0,),
            markers=markers)
    raise ValueError(f"resolution must be 32 (Pathfinder) or 128 (Path-X), got {resolution}")
