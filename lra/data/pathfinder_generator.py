"""Pathfinder image generator: the contour-integration stimuli of Linsley et al. (2018),
"Learning long-range spatial dependencies with horizontal gated-recurrent units", with the
settings the Long Range Arena (Tay et al. 2021) used for Pathfinder-32 and Path-X (128x128).

Written from the published algorithm (the `snakes2` generator). An image holds two target
"snakes" (chains of short line segments, "paddles") and a few short distractor snakes; two
circular markers sit on snake ends. Label 1: both markers lie on the same snake; label 0: one
marker on each target snake.

Algorithm, per image:
1. Occupancy mask `M` with a `padding`-wide border marked occupied.
2. Seed the first target snake: a random orientation (whole degrees) and a random free tail
   position, at least 2 * seed_distance from the border, where the paddle's footprint hits no
   occupied pixel (tested one pixel off, as the original does). As in the original, a seed
   whose test OpenCV answers with -DBL_MAX fails outright (`_reaches_every_corner`: at
   Pathfinder-32 only 30 of 360 orientations pass), and the image restarts. The second
   snake's tail lies `seed_distance` away in a random direction.
3. Grow both snakes `contour_length - 1` times, alternating. A step from the snake's pivot
   `p` (a point `margin` beyond the last paddle's head) takes candidate heads on the circle of
   radius `paddle_length + margin` around `p` (one per pixel of arc), weighted by
   `cos(min(continuity * turn, pi/2))^2` (turn = change of direction) times
   `1 - dilate(M, disk(margin))` at the candidate; the paddle is drawn from the sampled head
   back toward `p`. It is kept when it does not overlap occupied pixels (max(M + its mask) <
   1.8), else resampled up to `max_paddle_retrial` times; a dead end restarts the image.
   A paddle's own footprint enters `M` only once the next paddle is placed, so consecutive
   paddles of a snake may touch.
4. Add `num_distractors` snakes of `distractor_length` paddles the same way (seeded anywhere
   free, with the same seed test), each retried up to `max_distractor_retrial` times and
   skipped when it cannot fit: at Pathfinder-32 about 1 of the 5 fits, as in the real data.
5. Draw the markers (discs of radius `marker_radius`) on the first tip of one target snake and
   the last tip of the same snake (label 1) or of the other one (label 0).
6. Scale to 0..255 by the image maximum (as `scipy.misc.imsave` did) and save an 8-bit PNG.

Paddles and markers are rendered at `antialias_scale` times the resolution and downsampled
with a Lanczos filter. Target paddles have brightness paddle_contrast x snake_contrast,
distractors snake_contrast. As in the original, only the second target snake's last
paddle enters the occupancy mask, and a seed's free-position test uses the paddle footprint's
saturated pixels one pixel off the tail (see `_paddle`). Differences from the original code:
labels are balanced exactly (a seeded permutation rather than a coin flip per image), and
every image has its own random stream derived from (seed, image index), so output does not
depend on the number of workers.

Sources: drewlinsley/pathfinder `snakes2.py` (two_snakes, initialize_two_seeds, draw_circle,
from_wrapper) and `snakes.py` (seed_snake, extend_snake, get_coords_cmf, draw_line_n_mask,
binary_dilate_custom = cv2.dilate); LRA's settings from the docstrings of
google-research/long-range-arena `lra_benchmarks/data/pathfinder.py` (Pathfinder32: window 32,
padding 1, paddle length 2, thickness 0.5, margin 1, marker radius 1.5, antialias 2, seed
distance 7, continuity 1.0, distractor length 14 // 3, 20 // that distractor snakes, snake
contrast 2, paddle contrast 0.75; everything else the wrapper's defaults). Images are rendered
at 32x32 (paddles and markers at 2x, Lanczos-downsampled), not downsampled from a large render.

Comparison with the 60 real Pathfinder-32 samples in tests/fixtures/lra-samples (hard set),
`python -m lra.data.pathfinder_generator --compare <their imgs/0> -n 300` (`pixel_statistics`;
ours: 300 images, seed 0, labels alternating). "before": without the OpenCV seed rule.

| statistic                         | before | ours   | ours, no markers | real   |
|-----------------------------------|--------|--------|------------------|--------|
| fraction of pixels > 0            | 0.4683 | 0.3576 | 0.3300           | 0.3470 |
| fraction of pixels > 128          | 0.1082 | 0.0832 | 0.0761           | 0.0740 |
| mean intensity (0..255)           | 28.11  | 20.68  | 18.99            | 18.12  |
| pieces (groups of pixels > 64)    | 17.97  | 13.83  | 14.33            | 14.28  |
| discs (2x2 blocks all > 150)      | 2.01   | 2.02   | 0.06             | 0.03   |
| distractor snakes placed (of 5)   | 4.6    | 1.1    | 1.1              | ~1 (a) |

(a) the real images match ours with 1 distractor snake and no markers (tests), and sit between
ours with 1 and with 2 distractor snakes in fraction of pixels > 0.

What remains is the markers: 58 of 60 real images show no bright disc, yet snakes2.py draws
each marker as a disc of radius 1.5 px at intensity 1.0 against target paddles at 1.5 and
distractors at 2.0, i.e. a ~3 px blob of gray 128-170 after scaling (ours: 2.02 per image). No
LRA parameter changes that. A Python 3 port that resizes the 0/1 circle as floats (PIL mode
"F" or skimage, giving 0..1 instead of `scipy.misc.imresize`'s 0..255 bytes) but keeps the
`/ 255` draws markers of at most 1/255, below one gray level after scaling: invisible, which is
what the samples show. We keep the visible markers of snakes2.py (without them the label can't
be read from the pixels); so the fraction > 128 and the mean stay 12-14% above the samples,
and within 5% without markers (tests record both).

Output layout (the official release's): `pathfinder{res}/curv_contour_length_{L}/imgs/0/
sample_{i}.png` and `metadata/0.npy`, a PLAIN TEXT file despite its name, one line per image:
`imgs/0 sample_{i}.png {i} {label} {continuity} {contour_length} {distractor_length}
{paddle_length} {paddle_thickness} {margin} {number of paddle contrasts}`.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lra.data.progress import progress_bar

DIFFICULTY_LENGTHS = {"easy": 6, "medium": 9, "hard": 14}


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
    max_paddle_retrial: int = 2
    max_distractor_retrial: int = 4
    max_image_retrial: int = 100_000  # restarts of the two target snakes (the original: unbounded)


def settings_for(resolution: int = 32, difficulty: str = "hard") -> PathfinderSettings:
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
            num_distractors=20 // distractor_length, snake_contrasts=(2.0,), paddle_contrasts=(0.75,))
    if resolution == 128:
        return PathfinderSettings(
            resolution=128, contour_length=length, padding=1, antialias_scale=2, paddle_length=5,
            paddle_thickness=1.5, paddle_margins=(2, 3), marker_radius=3.0, seed_distance=20,
            continuity=1.8, distractor_length=distractor_length,
            num_distractors=35 // distractor_length, snake_contrasts=(0.9,), paddle_contrasts=(1.0,))
    raise ValueError(f"resolution must be 32 (Pathfinder) or 128 (Path-X), got {resolution}")


# ----------------------------------------------------------------------------- geometry
def _translate(coord, orientation: float, dist: float) -> tuple[int, int]:
    """Move (y, x) by `dist` along `orientation` (radians), rounding up as the original does."""
    return (int(math.ceil(coord[0] + dist * math.sin(orientation))),
            int(math.ceil(coord[1] + dist * math.cos(orientation))))


def _flip(orientation: float) -> float:
    return orientation + math.pi if orientation < 0 else orientation - math.pi


@lru_cache(maxsize=16)
def _disk_offsets(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    keep = x ** 2 + y ** 2 <= radius ** 2
    return np.stack([y[keep], x[keep]], axis=1)


def _lanczos_down(hires: np.ndarray, size: int) -> np.ndarray:
    """uint8 hi-res square -> float (size, size) in [0, 1] by 8-bit Lanczos resampling."""
    small = Image.fromarray(hires, mode="L").resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float64) / 255.0


@lru_cache(maxsize=8192)
def _paddle(orientation: float, length: int, thickness: float, margin: int, aa: int):
    """A paddle drawn from the centre of a (2h+1)^2 patch toward `orientation`.

    Returns (half size h, line image, footprint mask, seed offsets): the line in [0, 1], the
    footprint (line dilated by a disk of radius `margin`) in [0, 1], and the (dy, dx) offsets
    that a seed tail must find free. As in the original, these are the footprint's saturated
    pixels within a (2(length + margin) + 1)^2 window whose centre lies one pixel before the
    tail on both axes, so the test is one pixel off the drawn paddle and may be empty.
    """
    half = length + int(math.ceil(thickness)) + margin
    big, centre = 2 * half * aa + 1, half * aa
    head = _translate((centre, centre), orientation, length * aa)
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).line([(centre, centre), (head[1], head[0])], fill=255,
                                width=int(round(thickness * aa)))
    hires = np.asarray(canvas) > 0
    dilated = np.zeros_like(hires)
    ys, xs = np.nonzero(hires)
    for dy, dx in _disk_offsets(margin * aa):
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < big) & (xx >= 0) & (xx < big)
        dilated[yy[ok], xx[ok]] = True
    line = _lanczos_down(hires.astype(np.uint8) * 255, 2 * half + 1)
    mask = _lanczos_down(dilated.astype(np.uint8) * 255, 2 * half + 1)
    low, size = half - (length + margin + 1), 2 * (length + margin) + 1
    window = np.zeros_like(mask, dtype=bool)
    window[low:low + size, low:low + size] = True
    cy, cx = np.nonzero((mask >= 0.999) & window)
    return half, line, mask, np.stack([cy - half + 1, cx - half + 1], axis=1)


def _reaches_every_corner(core: np.ndarray) -> bool:
    """Whether a seed test with these (dy, dx) offsets leaves the original's occupancy test
    usable: at least one offset in each closed quadrant (dy <= 0 or >= 0, dx <= 0 or >= 0).

    The original runs that test as `cv2.dilate` of the float64 mask with the offsets as
    kernel. OpenCV pads a float64 dilation with -DBL_MAX (`createMorphologyFilter`, opencv
    modules/imgproc/src/morph.cpp, morph.dispatch.cpp in OpenCV 4), so an image pixel whose every offset lands outside the
    image gets -DBL_MAX; that happens at an image corner exactly when the quadrant facing into
    the image has no offset. `find_available_coordinates` then sees a negative minimum and
    reports no free position, so the seed fails at once (snakes.seed_snake, and the first target
    seed in snakes2.initialize_two_seeds). At Pathfinder-32 this keeps 30 of the 360 seed
    orientations (up-left ones), which is why the real images hold about one of the five
    distractor snakes and why the first target snake starts toward the upper left.
    """
    if len(core) == 0:
        return False
    dy, dx = core[:, 0], core[:, 1]
    return all(bool(np.any(a & b)) for a in (dy <= 0, dy >= 0) for b in (dx <= 0, dx >= 0))


@lru_cache(maxsize=64)
def _arc(step: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate head offsets on a circle of radius `step` (one per pixel of arc, rounded
    down, de-duplicated, sorted) and their orientations."""
    angles = np.deg2rad(np.arange(0, 360, 360.0 / (2 * step * math.pi)))
    offsets = np.stack([np.floor(step * np.sin(angles)), np.floor(step * np.cos(angles))], axis=1).astype(int)
    offsets = np.unique(offsets, axis=0)
    return offsets, np.arctan2(offsets[:, 0], offsets[:, 1])


@lru_cache(maxsize=4096)
def _turn_weights(step: int, orientation: float, continuity: float) -> np.ndarray:
    """cos(min(continuity * turn, pi/2))^2 for every candidate of `_arc(step)`."""
    _, orientations = _arc(step)
    turn = np.abs(orientations - orientation)
    turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * continuity, 0.5 * math.pi)
    return np.maximum(np.cos(turn), 0) ** 2


@lru_cache(maxsize=64)
def _near_index(step: int, margin: int, row: int) -> np.ndarray:
    """Flat offsets, in a canvas `row` pixels wide, of a disk of radius `margin` around every
    candidate of `_arc(step)`: (candidates, disk pixels)."""
    offsets, _ = _arc(step)
    disk = _disk_offsets(margin)
    return (offsets[:, None, 0] + disk[None, :, 0]) * row + offsets[:, None, 1] + disk[None, :, 1]


# ----------------------------------------------------------------------------- canvas
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
        return _paddle(round(orientation, 12), s.paddle_length, s.paddle_thickness, self.margin,
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
        `_paddle`); none when the original's test reports none for any position: no saturated
        footprint pixel, or no offset toward one image corner (`_reaches_every_corner`)."""
        _, _, _, core = self.paddle(orientation)
        if not _reaches_every_corner(core):
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
          target: bool = False) -> _Snake | None:
    """First paddle of a snake at a random free position (with its own layer if `target`)."""
    s, rng = canvas.s, canvas.rng
    length, margin = s.paddle_length, canvas.margin
    if stop_below is not None and float((canvas.mask <= 0.3).mean()) < stop_below:
        return None
    for _ in range(s.max_paddle_retrial + 1):
        orientation = _random_orientation(rng)
        free = canvas.free_tails(orientation, border)
        if len(free) == 0:
            return None
        tail = tuple(int(v) for v in free[int(rng.integers(len(free)))])
        head = _translate(tail, orientation, length)
        pivot = _translate(head, _flip(orientation), length + margin)
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
        head = _translate(tail, orientation, length)
        pivot = _translate(head, _flip(orientation), length + margin)
        if canvas.inside(tail) and canvas.inside(head) and canvas.inside(pivot):
            layer = np.zeros_like(canvas.image_full)
            return _Snake(tail, pivot, orientation, canvas.draw(tail, orientation, contrast, layer), layer)
    return None


def _extend(canvas: _Canvas, snake: _Snake, contrast: float) -> bool:
    """Add one paddle to `snake`; False at a dead end."""
    s, rng = canvas.s, canvas.rng
    length, margin, n = s.paddle_length, canvas.margin, s.resolution
    pivot = _translate(snake.pivot, snake.orientation, length + 2 * margin)
    step = length + margin
    offsets, orientations = _arc(step)
    weight = _turn_weights(step, round(snake.orientation, 12), s.continuity)
    if not (-step <= pivot[0] < n + step and -step <= pivot[1] < n + step):
        return False  # no candidate can be inside the image
    # Occupancy dilated by a disk of radius `margin`, read at the candidates only.
    row = canvas.mask_full.shape[1]
    base = (pivot[0] + canvas.pad) * row + pivot[1] + canvas.pad
    near = canvas.mask_flat[_near_index(step, margin, row) + base].max(axis=1)
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
        if not canvas.overlaps(head, _flip(orientation)):
            footprint = canvas.draw(head, _flip(orientation), contrast, snake.layer)
            canvas.commit(snake.footprint)
            snake.footprint, snake.pivot, snake.orientation, snake.head = footprint, pivot, orientation, head
            return True
    return False


def _two_snakes(canvas: _Canvas) -> tuple[_Snake, _Snake] | None:
    s = canvas.s
    mu = list(canvas.rng.permutation(list(s.snake_contrasts) * 2))[:2]
    first = _seed(canvas, canvas.choice(s.paddle_contrasts) * mu[0], 2 * s.seed_distance, None, target=True)
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
    return _lanczos_down(disk.astype(np.uint8) * 255, resolution)


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
    image = np.maximum(canvas.image, markers)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / (high - low)) if high > low else np.zeros_like(image)
    return Stimulus(image=(np.clip(scaled, 0, 255) + 0.5).astype(np.uint8), margin=margin,
                    snakes=np.stack([canvas.crop(snake.layer) for snake in snakes]),
                    markers=(tuple(ends[0]), tuple(ends[1])), marker_snakes=(origin, terminal))


def render_image(s: PathfinderSettings, rng: np.random.Generator, label: int) -> tuple[np.ndarray, int]:
    """One stimulus: (uint8 (res, res) image, paddle margin used)."""
    stimulus = render_stimulus(s, rng, label)
    return stimulus.image, stimulus.margin


# ----------------------------------------------------------------------------- dataset
def dataset_folder(out_dir: str | Path, resolution: int, difficulty: str) -> Path:
    """`out_dir/pathfinder{res}/curv_contour_length_{L}`, the official layout."""
    return Path(out_dir) / f"pathfinder{resolution}" / f"curv_contour_length_{DIFFICULTY_LENGTHS[difficulty]}"


def balanced_labels(n: int, seed: int) -> np.ndarray:
    """n labels, half 0 and half 1 (one more 0 when n is odd), in a seeded random order."""
    return np.random.default_rng([seed, 0x5EED]).permutation(np.arange(n) % 2).astype(int)


def _render_chunk(job: tuple) -> list[tuple[int, int, int]]:
    """Worker: render images start..stop-1, write their PNGs; return (index, label, margin)."""
    settings, seed, start, labels, folder = job
    s = PathfinderSettings(**settings)
    out = []
    for offset, label in enumerate(labels):
        index = start + offset
        rng = np.random.default_rng([seed, index])  # each image's own stream
        image, margin = render_image(s, rng, int(label))
        Image.fromarray(image, mode="L").save(Path(folder) / f"sample_{index}.png", format="PNG")
        out.append((index, int(label), margin))
    return out


def metadata_line(s: PathfinderSettings, batch: int, index: int, label: int, margin: int) -> str:
    return (f"imgs/{batch} sample_{index}.png {index} {label} {float(s.continuity)} {s.contour_length} "
            f"{s.distractor_length} {s.paddle_length} {float(s.paddle_thickness)} {margin} "
            f"{len(s.paddle_contrasts)}")


def generate(out_dir: str | Path, n: int, *, resolution: int = 32, difficulty: str = "hard",
             seed: int = 0, workers: int = 1, progress: bool = True, batch: int = 0) -> Path:
    """Write `n` images in the official layout under `out_dir`; returns the difficulty folder.

    The metadata file is written last (to a temporary name, then renamed), so a folder with
    `metadata/{batch}.npy` is complete. Same arguments -> byte-identical files, for any `workers`.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    s = settings_for(resolution, difficulty)
    folder = dataset_folder(out_dir, resolution, difficulty)
    images = folder / "imgs" / str(batch)
    images.mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    labels = balanced_labels(n, seed)
    workers = max(1, min(int(workers), n))
    chunk = max(1, min(200, -(-n // (workers * 4))))
    jobs = [(asdict(s), seed, start, labels[start:start + chunk].tolist(), str(images))
            for start in range(0, n, chunk)]
    rows: list[tuple[int, int, int]] = []
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap_unordered(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
        with progress_bar(f"generating pathfinder{resolution} {difficulty}", n, progress) as advance:
            for part in results:
                rows += part
                advance(len(part))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    rows.sort()
    target = folder / "metadata" / f"{batch}.npy"
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text("".join(metadata_line(s, batch, i, label, margin) + "\n" for i, label, margin in rows))
    os.replace(tmp, target)
    return folder


# ----------------------------------------------------------------------------- comparison
def pixel_statistics(images: np.ndarray) -> dict[str, float]:
    """Statistics of uint8 images (N, H, W), averaged over images: fraction of non-zero
    pixels, fraction > 128, mean intensity (0..255); `pieces`, 8-connected groups of pixels
    > 64 (paddles and runs of touching paddles); `stroke`, the largest group once the one-pixel
    gaps between a snake's paddles are bridged (3x3 dilation), as a fraction of the image (the
    long target paths and what touches them); `discs`, 8-connected groups of 2x2 blocks all
    > 150 (marker discs: a paddle is 1-2 pixels wide, so it rarely makes one)."""
    from scipy import ndimage  # a dev dependency: only this comparison needs it

    eight = np.ones((3, 3), dtype=bool)

    def groups(mask: np.ndarray) -> int:
        return ndimage.label(mask, structure=eight)[1]

    def stroke(mask: np.ndarray) -> float:
        labels, count = ndimage.label(ndimage.binary_dilation(mask, structure=eight), structure=eight)
        return float(np.bincount(labels.ravel())[1:].max()) / mask.size if count else 0.0

    blocks = np.minimum(np.minimum(images[:, :-1, :-1], images[:, 1:, :-1]),
                        np.minimum(images[:, :-1, 1:], images[:, 1:, 1:]))  # (N, H-1, W-1)
    return {"nonzero": float((images > 0).mean()), "bright": float((images > 128).mean()),
            "mean": float(images.mean()),
            "pieces": float(np.mean([groups(im > 64) for im in images])),
            "stroke": float(np.mean([stroke(im > 64) for im in images])),
            "discs": float(np.mean([groups(b > 150) for b in blocks]))}


def sample_images(n: int, resolution: int = 32, difficulty: str = "hard", seed: int = 0) -> np.ndarray:
    """(n, res, res) uint8 images rendered in memory, labels alternating 0, 1, ..."""
    s = settings_for(resolution, difficulty)
    return np.stack([render_image(s, np.random.default_rng([seed, i]), i % 2)[0] for i in range(n)])


def load_images(folder: str | Path) -> np.ndarray:
    """All `sample_*.png` of a folder as (N, H, W) uint8, in index order."""
    files = sorted(Path(folder).glob("sample_*.png"), key=lambda f: int(f.stem.split("_")[1]))
    return np.stack([np.asarray(Image.open(f)) for f in files])


def _compare(real_dir: str, n: int, seed: int) -> None:
    """Print ours-vs-real statistics (the table in the module docstring)."""
    real, ours = pixel_statistics(load_images(real_dir)), pixel_statistics(sample_images(n, seed=seed))
    print(f"{'statistic':<10}{'ours':>10}{'real':>10}{'ours/real':>11}")
    for key in real:
        ratio = f"{ours[key] / real[key]:>11.2f}" if real[key] else f"{'-':>11}"
        print(f"{key:<10}{ours[key]:>10.4f}{real[key]:>10.4f}{ratio}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", metavar="REAL_DIR", required=True,
                        help="folder of real sample_*.png (e.g. tests/fixtures/lra-samples/lra_release/"
                             "pathfinder32/curv_contour_length_14/imgs/0)")
    parser.add_argument("-n", type=int, default=300, help="images to generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _compare(args.compare, args.n, args.seed)
