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
   whose test OpenCV answers with -DBL_MAX fails outright (`paddles.reaches_every_corner`:
   at Pathfinder-32 only 30 of 360 orientations pass, all pointing up-left), and the image
   restarts; ours draws the first orientation among those that pass, which gives images of
   the same distribution without the restarts (`render._first_orientations`). The second
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
saturated pixels one pixel off the tail (see `paddle_stamp`). Differences from the original code:
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

| statistic                            | before | ours   | ours, faint      | real   |
|--------------------------------------|--------|--------|------------------|--------|
| fraction of pixels > 0               | 0.4683 | 0.3584 | 0.3355           | 0.3470 |
| fraction of pixels > 128             | 0.1082 | 0.0826 | 0.0753           | 0.0740 |
| mean intensity (0..255)              | 28.11  | 20.66  | 18.85            | 18.12  |
| pieces (groups of pixels > 64)       | 17.97  | 13.87  | 14.47            | 14.28  |
| stroke (largest bridged group, frac) | 0.557  | 0.412  | 0.396            | 0.383  |
| discs (2x2 blocks all > 150)         | 2.01   | 2.01   | 0.04             | 0.03   |
| distractor snakes placed (of 5)      | 4.6    | 1.2    | 1.2              | ~1 (a) |

(a) not countable from the pixels; the real images' statistics match ours with faint markers
within 5% (tests), and lie between those of ours forced to 1 and to 2 distractor snakes.

Markers, the one choice left to the user (`markers=`, `settings.MARKER_INTENSITY`): 58 of 60
real images show no bright disc, yet snakes2.py draws each marker as a disc of radius 1.5 px
at intensity 1.0 against paddles at 1.5, i.e. a ~3 px blob of gray 128-170 after scaling
(ours: 2.01 per image; a transcription of snakes.py/snakes2.py run here with stand-ins for
scipy.misc.imresize and cv2.dilate gave 2.0 discs and 1.1 distractor snakes per image over 8
images). No LRA parameter changes that. A Python 3 port that resizes the 0/1 circle as floats
(PIL mode "F" or skimage, giving 0..1 instead of `scipy.misc.imresize`'s 0..255 bytes) but
keeps the `/ 255` draws markers of at most 1/255, below one gray level after scaling:
invisible, which is what the samples show.
- `markers="visible"` (the default, also of `task.data.generate`): snakes2.py as written. The
  label can be read from the pixels; the fraction > 128 and the mean are 12-14% above the
  samples, and the difference lies only in the marker discs (tests).
- `markers="faint"`: the samples' rendering; every statistic, marker size included, within
  10% of them (tests). Its markers are at most one gray level, so the label is nearly
  invisible in the pixels: use it to study the samples, not to reproduce LRA's Pathfinder
  numbers, which models learn well above chance.

Speed (same machine, interleaved runs of 100 images): 5.5-6.5 images/s before, 6.8-7.3 now.

Output layout (the official release's): `pathfinder{res}/curv_contour_length_{L}/imgs/0/
sample_{i}.png` and `metadata/0.npy`, a PLAIN TEXT file despite its name, one line per image:
`imgs/0 sample_{i}.png {i} {label} {continuity} {contour_length} {distractor_length}
{paddle_length} {paddle_thickness} {margin} {number of paddle contrasts}`.
"""

from lra.data.pathfinder_generator.compare import load_images, pixel_statistics, sample_images
from lra.data.pathfinder_generator.dataset import balanced_labels, dataset_folder, generate, metadata_line
from lra.data.pathfinder_generator.render import Stimulus, render_image, render_stimulus
from lra.data.pathfinder_generator.settings import DIFFICULTY_LENGTHS, PathfinderSettings, settings_for

__all__ = ["DIFFICULTY_LENGTHS", "PathfinderSettings", "Stimulus", "balanced_labels", "dataset_folder", "generate",
           "load_images", "metadata_line", "pixel_statistics", "render_image", "render_stimulus", "sample_images",
           "settings_for"]
