"""Statistics to compare generated images with real samples, and the `--compare` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lra.data.pathfinder_generator.render import render_image
from lra.data.pathfinder_generator.settings import MARKER_INTENSITY, settings_for


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


def sample_images(n: int, resolution: int = 32, difficulty: str = "hard", seed: int = 0,
                  markers: str = "visible") -> np.ndarray:
    """(n, res, res) uint8 images rendered in memory, labels alternating 0, 1, ..."""
    s = settings_for(resolution, difficulty, markers)
    return np.stack([render_image(s, np.random.default_rng([seed, i]), i % 2)[0] for i in range(n)])


def load_images(folder: str | Path) -> np.ndarray:
    """All `sample_*.png` of a folder as (N, H, W) uint8, in index order."""
    files = sorted(Path(folder).glob("sample_*.png"), key=lambda f: int(f.stem.split("_")[1]))
    return np.stack([np.asarray(Image.open(f)) for f in files])


def _compare(real_dir: str, n: int, seed: int, markers: str) -> None:
    """Print ours-vs-real statistics (the table in the package docstring)."""
    real = pixel_statistics(load_images(real_dir))
    ours = pixel_statistics(sample_images(n, seed=seed, markers=markers))
    print(f"{'statistic':<10}{'ours':>10}{'real':>10}{'ours/real':>11}")
    for key in real:
        ratio = f"{ours[key] / real[key]:>11.2f}" if real[key] else f"{'-':>11}"
        print(f"{key:<10}{ours[key]:>10.4f}{real[key]:>10.4f}{ratio}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lra.data.pathfinder_generator",
                                     description="Compare generated Pathfinder images with real samples")
    parser.add_argument("--compare", metavar="REAL_DIR", required=True,
                        help="folder of real sample_*.png (e.g. tests/fixtures/lra-samples/lra_release/"
                             "pathfinder32/curv_contour_length_14/imgs/0)")
    parser.add_argument("-n", type=int, default=300, help="images to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markers", choices=tuple(MARKER_INTENSITY), default="visible",
                        help="marker rendering of the generated images (see settings.MARKER_INTENSITY)")
    args = parser.parse_args(argv)
    _compare(args.compare, args.n, args.seed, args.markers)
