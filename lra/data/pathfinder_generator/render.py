"""One stimulus: the canvas, the snakes (seed, growth, distractors), the markers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lra.data.pathfinder_generator.paddles import (arc, flip, lanczos_down, near_index, paddle_stamp, seed_offsets,
                                                   translate, turn_weights)
from lra.data.pathfinder_generator.settings import MARKER_INTENSITY, PathfinderSettings


class _Canvas:
    """Image being drawn plus the occupancy mask of committed paddles.

    Both live inside zero frames `pad` pixels wide (`image`, `mask` are views of the inner
    part), so a paddle patch centred on any in-bounds pixel never needs clipping; the frame is
    cropped away at the end, which equals drawing clipped patches.
    """

    def __init__(self, s: PathfinderSettings, margin: int, rng: np.random.Generator):
        self.s, self.margin, self.rng = s, margin, rng
        n = s.resolution
        # Wide enough for a paddle patch on any in-bounds pixel, and for the candidates (plus
        # their disk) around a pivot up to one arc radius off the image.
        half = s.paddle_length + int(math.ceil(s.paddle_thickness)) + margin
        self.pad = pad = half + s.paddle_length + 2 * margin + 1
        self.image_full = np.zeros((n + 2 * pad, n + 2 * pad))
        self.mask_full = np.zeros((n + 2 * pad, n + 2 * pad))
        self.image = self.image_full[pad:pad + n, pad:pad + n]
        self.mask = self.mask_full[pad:pad + n, pad:pad + n]
        self.mask_flat = self.mask_full.reshape(-1)  # a view
        self.clear()

    def clear(self) -> None:
        """Back to a blank image whose mask has only the `padding` frame occupied."""
        self.image_full.fill(0)
        self.mask_full.fill(0)
        p = self.s.padding
        self.mask[:p, :] = self.mask[-p:, :] = self.mask[:, :p] = self.mask[:, -p:] = 1

    def snapshot(self):
        return self.image_full.copy(), self.mask_full.copy()

    def restore(self, saved) -> None:
        self.image_full[...], self.mask_full[...] = saved

    def paddle(self, orientation: float):
        s = self.s
        return paddle_stamp(round(orientation, 12), s.paddle_length, s.paddle_thickness, self.margin,
                            s.antialias_scale)

    def inside(self, coord) -> bool:
        n = self.s.resolution
        return 0 <= coord[0] < n and 0 <= coord[1] < n

    def _window(self, start, half: int):
        y, x = start[0] + self.pad, start[1] + self.pad
        return slice(y - half, y + half + 1), slice(x - half, x + half + 1)

    def draw(self, start, orientation: float, contrast: float, layer: np.ndarray | None = None):
        """Draw a paddle's line from in-bounds `start` (also into `layer`, a framed canvas of
        one snake, when given); return its footprint for a later commit."""
        half, line, _, _ = self.paddle(orientation)
        for target in (self.image_full,) if layer is None else (self.image_full, layer):
            window = target[self._window(start, half)]
            np.maximum(window, contrast * line, out=window)
        return (start, orientation)

    def crop(self, full: np.ndarray) -> np.ndarray:
        """The (res, res) image part of a framed canvas."""
        return full[self.pad:self.pad + self.s.resolution, self.pad:self.pad + self.s.resolution]

    def commit(self, footprint) -> None:
        start, orientation = footprint
        half, _, mask, _ = self.paddle(orientation)
        window = self.mask_full[self._window(start, half)]
        np.maximum(window, mask, out=window)
        pad = self.pad  # what spilled into the frame is off the image: drop it
        self.mask_full[:pad], self.mask_full[-pad:] = 0, 0
        self.mask_full[:, :pad], self.mask_full[:, -pad:] = 0, 0

    def overlaps(self, start, orientation: float) -> bool:
        half, _, mask, _ = self.paddle(orientation)
        return float((self.mask_full[self._window(start, half)] + mask).max()) >= 1.8

    def free_tails(self, orientation: float, border: int) -> np.ndarray:
        """(K, 2) positions where a paddle drawn from there toward `orientation` misses every
        occupied pixel (mask > 0.3) and a `border`-wide frame (as the original tests it: see
        `paddle_stamp`); none when the original's test reports none for any position: no saturated
        footprint pixel, or no offset toward one image corner (`reaches_every_corner`)."""
        s = self.s
        core = seed_offsets(round(orientation, 12), s.paddle_length, s.paddle_thickness, self.margin,
                            s.antialias_scale)
        if core is None:
            return np.empty((0, 2), dtype=int)
        occupied = self.mask > 0.3
        if border > 0:
            occupied[:border, :] = occupied[-border:, :] = True
            occupied[:, :border] = occupied[:, -border:] = True
        n = occupied.shape[0]
        pad = int(np.abs(core).max())
        padded = np.zeros((n + 2 * pad, n + 2 * pad), dtype=bool)
        padded[pad:pad + n, pad:pad + n] = occupied
        blocked = np.zeros_like(occupied)
        for dy, dx in core:
            blocked |= padded[pad + dy:pad + dy + n, pad + dx:pad + dx + n]
        return np.argwhere(~blocked)

    def choice(self, values):
        return values[int(self.rng.integers(len(values)))] if len(values) > 1 else values[0]


class _Snake:
    def __init__(self, tail, pivot, orientation, footprint, layer=None):
        self.tail, self.pivot, self.orientation = tail, pivot, orientation
        self.footprint = footprint  # last paddle, not yet in the mask
        self.head = tail
        self.layer = layer  # framed canvas holding only this snake's lines (target snakes)


def _random_orientation(rng: np.random.Generator) -> float:
    return int(rng.integers(-180, 180)) * math.pi / 180


def _seed(canvas: _Canvas, contrast: float, border: int, stop_below: float | None,
          target: bool = False, first: np.ndarray | None = None) -> _Snake | None:
    """First paddle of a snake at a random free position (with its own layer if `target`).
    `first`: whole degrees to draw the first orientation from (see `_first_orientations`)."""
    s, rng = canvas.s, canvas.rng
    length, margin = s.paddle_length, canvas.margin
    if stop_below is not None and float((canvas.mask <= 0.3).mean()) < stop_below:
        return None
    for trial in range(s.max_paddle_retrial + 1):
        if trial == 0 and first is not None:
            orientation = int(first[int(rng.integers(len(first)))]) * math.pi / 180
        else:
            orientation = _random_orientation(rng)
        free = canvas.free_tails(orientation, border)
        if len(free) == 0:
            return None
        tail = tuple(int(v) for v in free[int(rng.integers(len(free)))])
        head = translate(tail, orientation, length)
        pivot = translate(head, flip(orientation), length + margin)
        if canvas.inside(head) and canvas.inside(pivot):
            layer = np.zeros_like(canvas.image_full) if target else None
            return _Snake(tail, pivot, orientation, canvas.draw(tail, orientation, contrast, layer), layer)
    return None


def _seed_near(canvas: _Canvas, other: _Snake, contrast: float) -> _Snake | None:
    """First paddle of the second target snake, `seed_distance` from the first one's tail."""
    s, rng = canvas.s, canvas.rng
    length, margin = s.paddle_length, canvas.margin
    for _ in range(s.max_paddle_retrial + 1):
        orientation = _random_orientation(rng)
        angle = int(rng.integers(0, 360)) * math.pi / 180
        tail = (int(round(other.tail[0] + s.seed_distance * math.sin(angle))),
                int(round(other.tail[1] + s.seed_distance * math.cos(angle))))
        head = translate(tail, orientation, length)
        pivot = translate(head, flip(orientation), length + margin)
        if canvas.inside(tail) and canvas.inside(head) and canvas.inside(pivot):
            layer = np.zeros_like(canvas.image_full)
            return _Snake(tail, pivot, orientation, canvas.draw(tail, orientation, contrast, layer), layer)
    return None


def _extend(canvas: _Canvas, snake: _Snake, contrast: float) -> bool:
    """Add one paddle to `snake`; False at a dead end."""
    s, rng = canvas.s, canvas.rng
    length, margin, n = s.paddle_length, canvas.margin, s.resolution
    pivot = translate(snake.pivot, snake.orientation, length + 2 * margin)
    step = length + margin
    offsets, orientations = arc(step)
    weight = turn_weights(step, round(snake.orientation, 12), s.continuity)
    if not (-step <= pivot[0] < n + step and -step <= pivot[1] < n + step):
        return False  # no candidate can be inside the image
    # Occupancy dilated by a disk of radius `margin`, read at the candidates only.
    row = canvas.mask_full.shape[1]
    base = (pivot[0] + canvas.pad) * row + pivot[1] + canvas.pad
    near = canvas.mask_flat[near_index(step, margin, row) + base].max(axis=1)
    heads = offsets + np.array(pivot)
    if step <= pivot[0] < n - step and step <= pivot[1] < n - step:  # every candidate inside
        pmf = (1 - near) * weight
    else:
        ok = (heads >= 0).all(axis=1) & (heads < n).all(axis=1)
        if not ok.any():
            return False
        heads, orientations = heads[ok], orientations[ok]
        pmf = (1 - near[ok]) * weight[ok]
    total = float(pmf.sum())
    if total < 1e-4:
        return False
    cmf = np.cumsum(pmf / total)
    for _ in range(s.max_paddle_retrial + 1):
        index = min(int(np.searchsorted(cmf, rng.random(), side="right")), len(cmf) - 1)
        head = (int(heads[index, 0]), int(heads[index, 1]))
        orientation = float(orientations[index])
        if not canvas.overlaps(head, flip(orientation)):
            footprint = canvas.draw(head, flip(orientation), contrast, snake.layer)
            canvas.commit(snake.footprint)
            snake.footprint, snake.pivot, snake.orientation, snake.head = footprint, pivot, orientation, head
            return True
    return False


@lru_cache(maxsize=16)
def _first_orientations(s: PathfinderSettings, margin: int) -> np.ndarray:
    """Whole degrees for which the first target seed finds a free position on a blank image.

    The original restarts the image when its first seed orientation finds none; a restart
    changes nothing else, so drawing that orientation among these alone gives images of the
    same distribution (at Pathfinder-32, 30 of 360 orientations) without ~12 restarts per image.
    """
    canvas = _Canvas(s, margin, rng=None)
    degrees = [d for d in range(-180, 180) if len(canvas.free_tails(d * math.pi / 180, 2 * s.seed_distance))]
    return np.array(degrees, dtype=int)


def _two_snakes(canvas: _Canvas) -> tuple[_Snake, _Snake] | None:
    s = canvas.s
    mu = list(canvas.rng.permutation(list(s.snake_contrasts) * 2))[:2]
    first = _seed(canvas, canvas.choice(s.paddle_contrasts) * mu[0], 2 * s.seed_distance, None, target=True,
                  first=_first_orientations(s, canvas.margin))
    if first is None:
        return None
    second = _seed_near(canvas, first, canvas.choice(s.paddle_contrasts) * mu[1])
    if second is None:
        return None
    snakes = (first, second)
    for _ in range(s.contour_length - 1):
        contrast = canvas.choice(s.paddle_contrasts)
        for snake, m in zip(snakes, mu):
            if not _extend(canvas, snake, contrast * m):
                return None
    canvas.commit(snakes[-1].footprint)  # as in the original: the first's last paddle stays out
    return snakes


def _distractor(canvas: _Canvas) -> bool:
    s = canvas.s
    saved = canvas.snapshot()
    snake = _seed(canvas, canvas.choice(s.snake_contrasts), 1, 0.01)
    ok = snake is not None
    for _ in range(s.distractor_length - 1):
        if not ok:
            break
        ok = _extend(canvas, snake, canvas.choice(s.snake_contrasts))
    if ok:
        canvas.commit(snake.footprint)
    else:
        canvas.restore(saved)
    return ok


def _marker(resolution: int, coord, radius: float, aa: int) -> np.ndarray:
    size = resolution * aa
    y, x = np.ogrid[:size, :size]
    disk = (y - coord[0] * aa) ** 2 + (x - coord[1] * aa) ** 2 <= (radius * aa) ** 2
    return lanczos_down(disk.astype(np.uint8) * 255, resolution)


@dataclass
class Stimulus:
    """One rendered stimulus with its ground truth."""

    image: np.ndarray  # uint8 (res, res), what is saved
    margin: int  # paddle margin used
    snakes: np.ndarray  # float (2, res, res): each target snake's lines alone, unscaled
    markers: tuple[tuple[int, int], tuple[int, int]]  # (y, x) pixel of each marker centre
    marker_snakes: tuple[int, int]  # index into `snakes` of the snake each marker sits on


def render_stimulus(s: PathfinderSettings, rng: np.random.Generator, label: int) -> Stimulus:
    """One stimulus with its target snakes' masks and marker positions."""
    margin = int(s.paddle_margins[int(rng.integers(len(s.paddle_margins)))])
    if len(_first_orientations(s, margin)) == 0:
        raise RuntimeError(f"no orientation lets the first target snake start; settings too tight: {s}")
    canvas = _Canvas(s, margin, rng)
    for _ in range(s.max_image_retrial):
        canvas.clear()
        snakes = _two_snakes(canvas)
        if snakes is not None:
            break
    else:
        raise RuntimeError(f"could not place two target snakes in {s.max_image_retrial} tries; "
                           f"settings too tight: {s}")
    for _ in range(s.num_distractors):
        for _ in range(s.max_distractor_retrial + 1):
            if _distractor(canvas):
                break
    origin = int(rng.integers(0, 2))
    terminal = origin if label == 1 else 1 - origin
    ends = (snakes[origin].tail, snakes[terminal].head)
    markers = np.maximum(*(_marker(s.resolution, end, s.marker_radius, s.antialias_scale) for end in ends))
    image = np.maximum(canvas.image, MARKER_INTENSITY[s.markers] * markers)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / (high - low)) if high > low else np.zeros_like(image)
    return Stimulus(image=(np.clip(scaled, 0, 255) + 0.5).astype(np.uint8), margin=margin,
                    snakes=np.stack([canvas.crop(snake.layer) for snake in snakes]),
                    markers=(tuple(ends[0]), tuple(ends[1])), marker_snakes=(origin, terminal))


def render_image(s: PathfinderSettings, rng: np.random.Generator, label: int) -> tuple[np.ndarray, int]:
    """One stimulus: (uint8 (res, res) image, paddle margin used)."""
    stimulus = render_stimulus(s, rng, label)
    return stimulus.image, stimulus.margin
