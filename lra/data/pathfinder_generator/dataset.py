"""Writing a dataset in the official release's layout (images and text metadata)."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from lra.data.progress import progress_bar
from lra.data.pathfinder_generator.render import render_image
from lra.data.pathfinder_generator.settings import DIFFICULTY_LENGTHS, PathfinderSettings, settings_for


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
             seed: int = 0, workers: int = 1, progress: bool = True, batch: int = 0,
             markers: str = "visible") -> Path:
    """Write `n` images in the official layout under `out_dir`; returns the difficulty folder.

    The metadata file is written last (to a temporary name, then renamed), so a folder with
    `metadata/{batch}.npy` is complete. Same arguments -> byte-identical files, for any `workers`.
    markers: "visible" (snakes2.py's discs) or "faint" (as in the real samples; see settings).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    s = settings_for(resolution, difficulty, markers)
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
