"""Pathfinder generator: official layout and metadata format, balance, marker semantics and
ground truth, determinism across runs and worker counts, and statistics against the real
samples (tests/fixtures/lra-samples)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lra.data import pathfinder, pathfinder_generator as gen
from lra.data.pathfinder_generator import paddles, render


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """40 hard 32x32 images, made once with one worker and once with two."""
    root = tmp_path_factory.mktemp("pf")
    one = gen.generate(root / "one", 40, seed=7, workers=1, progress=False)
    two = gen.generate(root / "two", 40, seed=7, workers=2, progress=True)
    return one, two


def test_layout_and_metadata_format(generated, samples_dir):
    folder, _ = generated
    assert folder.parts[-2:] == ("pathfinder32", "curv_contour_length_14")
    lines = (folder / "metadata" / "0.npy").read_text().splitlines()
    assert len(lines) == 40
    sample = (samples_dir / "lra_release/pathfinder32/curv_contour_length_14/metadata/0.npy").read_text()
    real = sample.splitlines()[0].split()
    for i, line in enumerate(lines):
        fields = line.split()
        assert fields[:3] == ["imgs/0", f"sample_{i}.png", str(i)]
        assert fields[3] in ("0", "1")
        assert fields[4:] == real[4:]  # 1.0 14 4 2 0.5 1 1, as in the official release
        with Image.open(folder / "imgs" / "0" / fields[1]) as im:
            assert im.mode == "L" and im.size == (32, 32)


def test_labels_are_balanced(generated):
    folder, _ = generated
    labels = [int(line.split()[3]) for line in (folder / "metadata" / "0.npy").read_text().splitlines()]
    assert labels.count(0) == labels.count(1) == 20
    assert labels != sorted(labels)  # shuffled, not 0,0,...,1,1
    assert gen.balanced_labels(7, 0).tolist().count(1) == 3


def test_same_seed_identical_bytes_for_any_worker_count(generated, tmp_path):
    one, two = generated
    for name in ["metadata/0.npy"] + [f"imgs/0/sample_{i}.png" for i in range(40)]:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    other = gen.generate(tmp_path, 5, seed=8, workers=1, progress=False)
    assert any((other / f"imgs/0/sample_{i}.png").read_bytes() != (one / f"imgs/0/sample_{i}.png").read_bytes()
               for i in range(5))


REAL_IMAGES = "lra_release/pathfinder32/curv_contour_length_14/imgs/0"
PIXEL_KEYS = ("nonzero", "bright", "mean")


@pytest.fixture(scope="module")
def real_stats(samples_dir):
    return gen.pixel_statistics(gen.load_images(samples_dir / REAL_IMAGES))


@pytest.fixture(scope="module")
def ours_stats(generated):
    """Statistics of the 40 generated hard 32x32 images."""
    images = gen.load_images(generated[0] / "imgs" / "0")
    assert images.shape == (40, 32, 32)
    assert (images.max(axis=(1, 2)) == 255).all() and np.median(images) == 0  # full range, mostly background
    return gen.pixel_statistics(images)


def test_real_sample_statistics_are_the_documented_ones(real_stats):
    assert real_stats["nonzero"] == pytest.approx(0.3470, abs=1e-4)
    assert real_stats["bright"] == pytest.approx(0.0740, abs=1e-4)
    assert real_stats["mean"] == pytest.approx(18.115, abs=1e-3)
    assert real_stats["pieces"] == pytest.approx(14.283, abs=1e-3)
    assert real_stats["stroke"] == pytest.approx(0.3825, abs=1e-3)
    assert real_stats["discs"] < 0.1  # no visible marker discs in the real samples


def test_stroke_statistics_within_10_percent_of_the_real_samples(ours_stats, real_stats):
    """Ink coverage and path structure (groups of paddles, the longest bridged stroke) match
    the real samples: the target paths and the ~1 distractor snake the original places."""
    for key in ("nonzero", "pieces", "stroke"):
        assert abs(ours_stats[key] / real_stats[key] - 1) < 0.1, (key, ours_stats[key], real_stats[key])


def test_faint_markers_every_statistic_within_10_percent_of_the_real_samples(real_stats):
    """markers="faint" (a Python 3 port's markers, below one gray level) matches the real samples
    in every statistic, brightness and marker size included: no visible discs, as in theirs."""
    ours = gen.pixel_statistics(gen.sample_images(60, seed=1, markers="faint"))
    for key in PIXEL_KEYS + ("pieces", "stroke"):
        assert abs(ours[key] / real_stats[key] - 1) < 0.1, (key, ours[key], real_stats[key])
    assert ours["discs"] < 0.2


def test_visible_markers_change_only_the_marker_discs(real_stats):
    """The default (snakes2.py's visible markers) draws the same image plus two discs: every
    pixel that differs from the faint rendering lies in a marker's footprint (the disc and its
    Lanczos fringe), so its extra brightness over the samples is the markers'. The one exception
    is the original's min-max scaling: where a marker outshines every paddle, it sets the
    scale, and the rest of the image is dimmer."""
    s_visible, s_faint = gen.settings_for(32), gen.settings_for(32, markers="faint")
    outshone = 0
    for i in range(12):
        visible = gen.render_stimulus(s_visible, np.random.default_rng([2, i]), i % 2)
        faint = gen.render_stimulus(s_faint, np.random.default_rng([2, i]), i % 2)
        assert visible.markers == faint.markers
        footprint = np.maximum(*(render._marker(32, m, s_visible.marker_radius, s_visible.antialias_scale)
                                 for m in visible.markers)) > 0
        changed = visible.image != faint.image
        rescaled = visible.image[~footprint].max() < 255  # a marker is the brightest thing
        assert changed.any() and (rescaled or not (changed & ~footprint).any()), i
        assert rescaled or (visible.image[footprint] >= faint.image[footprint]).all()
        outshone += rescaled
    assert outshone <= 4
    ours = gen.pixel_statistics(gen.sample_images(60, seed=1))
    assert 1.05 < ours["bright"] / real_stats["bright"] < 1.25  # the discs' share, documented
    assert 1.8 < ours["discs"] < 2.3


def test_unknown_marker_rendering_is_refused(tmp_path):
    with pytest.raises(ValueError, match="markers must be one of .*'faint'.*'visible'"):
        gen.settings_for(32, markers="bright")
    with pytest.raises(ValueError, match="markers must be one of"):
        pathfinder.locate(tmp_path, generate={"n": 4, "markers": "bright"})
    assert not (tmp_path / "generated").exists()  # refused before anything is written


def test_faint_copy_lives_in_its_own_folder(tmp_path):
    located = pathfinder.locate(tmp_path, generate={"n": 4, "seed": 1, "markers": "faint", "workers": 1})
    assert "_n4_seed1_markers-faint" in located.settings["folder"]
    images = gen.load_images(located.files["metadata/0.npy"].parents[1] / "imgs" / "0")
    assert images.shape == (4, 32, 32) and (images.max(axis=(1, 2)) == 255).all()


def _opencv_dilation_has_border_value(core: np.ndarray, n: int) -> bool:
    """Brute force: whether cv2.dilate of a float64 (n, n) image with these kernel offsets
    leaves some pixel at its border value -DBL_MAX (no offset lands inside the image)."""
    reached = np.zeros((n, n), dtype=bool)
    for dy, dx in core:
        reached[max(0, -dy):n - max(0, dy), max(0, -dx):n - max(0, dx)] = True
    return not reached.all()


@pytest.mark.parametrize("resolution,margin", [(32, 1), (128, 2), (128, 3)])
def test_seed_orientations_follow_opencv_float_dilation(resolution, margin):
    """The seed rule equals OpenCV's: the test fails for an orientation exactly when the
    dilation leaves a -DBL_MAX pixel (or has no kernel); at Pathfinder-32, 30 of 360 pass."""
    s = gen.settings_for(resolution)
    passing = 0
    for degree in range(-180, 180):
        core = paddles.paddle_stamp(round(degree * math.pi / 180, 12), s.paddle_length, s.paddle_thickness, margin,
                           s.antialias_scale)[3]
        usable = len(core) > 0 and not _opencv_dilation_has_border_value(core, resolution)
        assert paddles.reaches_every_corner(core) == usable, degree
        passing += usable
    assert passing == {(32, 1): 30, (128, 2): 354, (128, 3): 360}[(resolution, margin)]
    if resolution == 32:  # the first target snake starts toward the upper left, as in the original
        assert render._first_orientations(s, margin).tolist() == list(range(-150, -120))


def test_about_one_of_five_distractor_snakes_fits(monkeypatch):
    """With the original's seed test, about 1 of the 5 distractor snakes is placed at
    Pathfinder-32 (the real images look like 1, between ours with 1 and with 2)."""
    placed, distractor = [], render._distractor
    monkeypatch.setattr(render, "_distractor", lambda canvas: placed.append(distractor(canvas)) or placed[-1])
    s = gen.settings_for(32)
    for i in range(30):
        gen.render_image(s, np.random.default_rng([5, i]), i % 2)
    assert 0.6 < sum(placed) / 30 < 1.6


def test_markers_are_discs_of_the_given_radius(ours_stats):
    s = gen.settings_for(32)
    disc = render._marker(32, (12, 20), s.marker_radius, s.antialias_scale)
    assert disc.sum() == pytest.approx(math.pi * s.marker_radius ** 2, rel=0.1)  # area in pixels
    assert disc[12, 20] == disc.max() == 1.0  # centred on the snake end, full brightness
    assert 1.8 < ours_stats["discs"] < 2.3  # both markers show as bright blobs; paddles rarely


def _closed(mask: np.ndarray) -> np.ndarray:
    """Bridge the 2-pixel gaps between consecutive paddles of a snake."""
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))


@pytest.mark.parametrize("label", [0, 1])
def test_ground_truth_markers_joined_by_one_snake_only_for_label_1(label):
    """On the target snakes' own masks: label 1 joins both markers through one snake's
    paddles; label 0 puts the second marker on the other snake, and the first marker's snake
    reaches it only where the two snakes touch. The original allows that: a snake's newest
    paddle is not in the occupancy mask while the other snake grows (about 1 image in 10)."""
    s, joined = gen.settings_for(32), 0
    for seed in range(30):
        st = gen.render_stimulus(s, np.random.default_rng([3, seed]), label)
        first, second = st.marker_snakes
        assert (first == second) == (label == 1)
        assert st.snakes[first][st.markers[0]] > 0.2 and st.snakes[second][st.markers[1]] > 0.2
        assert st.image[st.markers[0]] > 150 and st.image[st.markers[1]] > 150  # visible markers
        parts, _ = ndimage.label(_closed(st.snakes[first] > 0.05), structure=np.ones((3, 3)))
        joined += parts[st.markers[0]] == parts[st.markers[1]]
    assert joined == 30 if label == 1 else joined <= 6


@pytest.mark.parametrize("label", [0, 1])
def test_markers_sit_on_the_right_snake_ends(monkeypatch, label):
    """Label 1: the markers are the two ends of one target snake; label 0: one on each."""
    snakes, marks = [], []
    real_two, real_marker = render._two_snakes, render._marker

    def spy_two(canvas):
        result = real_two(canvas)
        if result is not None:
            snakes[:] = [(s.tail, s.head) for s in result]
        return result

    def spy_marker(resolution, coord, radius, aa):
        marks.append(tuple(coord))
        return real_marker(resolution, coord, radius, aa)

    monkeypatch.setattr(render, "_two_snakes", spy_two)
    monkeypatch.setattr(render, "_marker", spy_marker)
    for seed in range(6):
        snakes.clear(), marks.clear()
        gen.render_image(gen.settings_for(32), np.random.default_rng(seed), label)
        (tail_a, head_a), (tail_b, head_b) = snakes
        same = {(tail_a, head_a), (tail_b, head_b)}
        crossed = {(tail_a, head_b), (tail_b, head_a)}
        assert (marks[0], marks[1]) in (same if label == 1 else crossed)


def test_reader_reads_generated_copy_as_generated(generated, tmp_path):
    folder, _ = generated
    (folder / pathfinder.GENERATED_MARKER).write_text("{}")
    data = pathfinder.read(pathfinder.locate(folder.parent.parent), max_len=1024)
    assert data.source == "generated"
    assert data.sizes() == {"train": 32, "val": 4, "test": 4}


def test_path_x_settings_and_image(tmp_path):
    s = gen.settings_for(128, "hard")
    assert (s.paddle_length, s.seed_distance, s.paddle_margins, s.num_distractors) == (5, 20, (2, 3), 8)
    folder = gen.generate(tmp_path, 2, resolution=128, difficulty="medium", seed=1, progress=False)
    assert folder.name == "curv_contour_length_9"
    line = (folder / "metadata/0.npy").read_text().splitlines()[0].split()
    assert line[4:8] == ["1.8", "9", "3", "5"] and line[9] in ("2", "3")
    with Image.open(folder / "imgs/0/sample_0.png") as im:
        assert im.size == (128, 128)
        assert 0.03 < (np.asarray(im) > 0).mean() < 0.4
    with pytest.raises(ValueError, match="resolution"):
        gen.settings_for(64)
