"""Pathfinder generator: official layout and metadata format, balance, marker semantics,
determinism across runs and worker counts, and resemblance to the real sample."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lra.data import pathfinder, pathfinder_generator as gen


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


def test_images_resemble_the_official_sample(generated, samples_dir):
    folder, _ = generated
    ours = np.stack([np.asarray(Image.open(folder / f"imgs/0/sample_{i}.png")) for i in range(40)])
    real_dir = samples_dir / "lra_release/pathfinder32/curv_contour_length_14/imgs/0"
    real = np.stack([np.asarray(Image.open(real_dir / f"sample_{i}.png")) for i in range(60)])
    ours_lit, real_lit = (ours > 0).sum(axis=(1, 2)), (real > 0).sum(axis=(1, 2))
    # Similar amount of drawn pixels (ours carry ~1.3x more: visible markers, more distractors).
    assert 0.8 < ours_lit.mean() / real_lit.mean() < 1.6
    assert (ours.max(axis=(1, 2)) == 255).all() and (real.max(axis=(1, 2)) == 255).all()  # full range
    assert np.median(ours) == 0 and np.median(real) == 0  # mostly background


@pytest.mark.parametrize("label", [0, 1])
def test_markers_sit_on_the_right_snake_ends(monkeypatch, label):
    """Label 1: the markers are the two ends of one target snake; label 0: one on each."""
    snakes, marks = [], []
    real_two, real_marker = gen._two_snakes, gen._marker

    def spy_two(canvas):
        result = real_two(canvas)
        if result is not None:
            snakes[:] = [(s.tail, s.head) for s in result]
        return result

    def spy_marker(resolution, coord, radius, aa):
        marks.append(tuple(coord))
        return real_marker(resolution, coord, radius, aa)

    monkeypatch.setattr(gen, "_two_snakes", spy_two)
    monkeypatch.setattr(gen, "_marker", spy_marker)
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
