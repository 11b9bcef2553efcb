"""Paddle geometry: drawing and footprint of one paddle, the seed test's offsets, and the
candidate heads of a growth step."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw


def translate(coord, orientation: float, dist: float) -> tuple[int, int]:
    """Move (y, x) by `dist` along `orientation` (radians), rounding up as the original does."""
    return (int(math.ceil(coord[0] + dist * math.sin(orientation))),
            int(math.ceil(coord[1] + dist * math.cos(orientation))))


def flip(orientation: float) -> float:
    return orientation + math.pi if orientation < 0 else orientation - math.pi


@lru_cache(maxsize=16)
def disk_offsets(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    keep = x ** 2 + y ** 2 <= radius ** 2
    return np.stack([y[keep], x[keep]], axis=1)


def lanczos_down(hires: np.ndarray, size: int) -> np.ndarray:
    """uint8 hi-res square -> float (size, size) in [0, 1] by 8-bit Lanczos resampling."""
    small = Image.fromarray(hires, mode="L").resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float64) / 255.0


@lru_cache(maxsize=8192)
def paddle_stamp(orientation: float, length: int, thickness: float, margin: int, aa: int):
    """A paddle drawn from the centre of a (2h+1)^2 patch toward `orientation`.

    Returns (half size h, line image, footprint mask, seed offsets): the line in [0, 1], the
    footprint (line dilated by a disk of radius `margin`) in [0, 1], and the (dy, dx) offsets
    that a seed tail must find free. As in the original, these are the footprint's saturated
    pixels within a (2(length + margin) + 1)^2 window whose centre lies one pixel before the
    tail on both axes, so the test is one pixel off the drawn paddle and may be empty.
    """
    half = length + int(math.ceil(thickness)) + margin
    big, centre = 2 * half * aa + 1, half * aa
    head = translate((centre, centre), orientation, length * aa)
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).line([(centre, centre), (head[1], head[0])], fill=255,
                                width=int(round(thickness * aa)))
    hires = np.asarray(canvas) > 0
    dilated = np.zeros_like(hires)
    ys, xs = np.nonzero(hires)
    for dy, dx in disk_offsets(margin * aa):
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < big) & (xx >= 0) & (xx < big)
        dilated[yy[ok], xx[ok]] = True
    line = lanczos_down(hires.astype(np.uint8) * 255, 2 * half + 1)
    mask = lanczos_down(dilated.astype(np.uint8) * 255, 2 * half + 1)
    low, size = half - (length + margin + 1), 2 * (length + margin) + 1
    window = np.zeros_like(mask, dtype=bool)
    window[low:low + size, low:low + size] = True
    cy, cx = np.nonzero((mask >= 0.999) & window)
    return half, line, mask, np.stack([cy - half + 1, cx - half + 1], axis=1)


def reaches_every_corner(core: np.ndarray) -> bool:
    """Whether a seed test with these (dy, dx) offsets leaves the original's occupancy test
    usable: at least one offset in each closed quadrant (dy <= 0 or >= 0, dx <= 0 or >= 0).

    The original runs that test as `cv2.dilate` of the float64 mask with the offsets as
    kernel. OpenCV pads a float64 dilation with -DBL_MAX (`createMorphologyFilter` in opencv
    modules/imgproc/src/morph.cpp; morph.dispatch.cpp in OpenCV 4), so an image pixel whose
    every offset lands outside the image gets -DBL_MAX; that happens at an image corner exactly
    when the quadrant facing into the image has no offset. `find_available_coordinates` then
    sees a negative minimum and reports no free position, so the seed fails at once
    (snakes.seed_snake, and the first target seed in snakes2.initialize_two_seeds). At
    Pathfinder-32 this keeps 30 of the 360 seed orientations (up-left ones), which is why the
    real images hold about one of the five distractor snakes and why the first target snake
    starts toward the upper left.
    """
    if len(core) == 0:
        return False
    dy, dx = core[:, 0], core[:, 1]
    return all(bool(np.any(a & b)) for a in (dy <= 0, dy >= 0) for b in (dx <= 0, dx >= 0))


@lru_cache(maxsize=8192)
def seed_offsets(orientation: float, length: int, thickness: float, margin: int, aa: int) -> np.ndarray | None:
    """The seed test's (dy, dx) offsets for a paddle toward `orientation`, or None where the
    original's test finds no free position anywhere (`reaches_every_corner`)."""
    core = paddle_stamp(orientation, length, thickness, margin, aa)[3]
    return core if reaches_every_corner(core) else None


@lru_cache(maxsize=64)
def arc(step: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate head offsets on a circle of radius `step` (one per pixel of arc, rounded
    down, de-duplicated, sorted) and their orientations."""
    angles = np.deg2rad(np.arange(0, 360, 360.0 / (2 * step * math.pi)))
    offsets = np.stack([np.floor(step * np.sin(angles)), np.floor(step * np.cos(angles))], axis=1).astype(int)
    offsets = np.unique(offsets, axis=0)
    return offsets, np.arctan2(offsets[:, 0], offsets[:, 1])


@lru_cache(maxsize=4096)
def turn_weights(step: int, orientation: float, continuity: float) -> np.ndarray:
    """cos(min(continuity * turn, pi/2))^2 for every candidate of `arc(step)`."""
    _, orientations = arc(step)
    turn = np.abs(orientations - orientation)
    turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * continuity, 0.5 * math.pi)
    return np.maximum(np.cos(turn), 0) ** 2


@lru_cache(maxsize=64)
def near_index(step: int, margin: int, row: int) -> np.ndarray:
    """Flat offsets, in a canvas `row` pixels wide, of a disk of radius `margin` around every
    candidate of `arc(step)`: (candidates, disk pixels)."""
    offsets, _ = arc(step)
    disk = disk_offsets(margin)
    return (offsets[:, None, 0] + disk[None, :, 0]) * row + offsets[:, None, 1] + disk[None, :, 1]
