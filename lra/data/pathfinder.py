"""Pathfinder (Linsley et al. 2018) and Path-X, as packaged by the Long Range Arena (Tay et al.
2021): is there a path between the two markers? 2 classes.

Official layout (any depth under the data dir):
`pathfinder{32|128}/<difficulty dir>/imgs/<batch>/sample_<i>.png` (8-bit grayscale) and
`metadata/<batch>.npy`, one row per image: `imgs/<batch> sample_<i>.png <index> <label> ...`
(label = column 3, 0-based). The release's metadata files are PLAIN TEXT despite the extension;
the original generator writes the same rows as a binary `.npy` string array. Both are read.

Difficulty dirs: easy = `curv_contour_length_6` (the release calls it `curv_baseline`),
medium = `curv_contour_length_9`, hard = `curv_contour_length_14` (the LRA task; default).
Pathfinder-32 sequences have 1024 pixels, Path-X (`pathfinder128`) 16384.

Splits: a seeded permutation of all listed images, 80% train / 10% val / 10% test.
Images that are empty (all pixels 0, e.g. `pathfinder32/curv_baseline/imgs/0/sample_172.png`),
missing or unreadable are dropped and counted in TaskData.notes; a split left with no
readable image is an error saying how many could be read (such a split is never cached).
The cache is keyed by the metadata files (size, mtime); rewrite them if images change.

Token ids: id = pixel + 1 (1..256; 0 is padding), row-major, so vocab_size >= 257.
When the images are missing, `locate(..., generate={...})` writes a copy with
`lra.data.pathfinder_generator` (source "generated").
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from lra.data import pathfinder_generator as generator
from lra.data import sources
from lra.data.base import (
    DataNotFoundError,
    Located,
    MalformedDataError,
    SplitArrays,
    TaskData,
    check_labels,
    generate_options,
)
from lra.data.progress import progress_bar

NUM_CLASSES = 2
PIXEL_OFFSET = 1  # id = pixel + PIXEL_OFFSET
VOCAB_SIZE = 256 + PIXEL_OFFSET
DIFFICULTY_DIRS = {
    "easy": ("curv_contour_length_6", "curv_baseline"),
    "medium": ("curv_contour_length_9",),
    "hard": ("curv_contour_length_14",),
}
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1}  # test: the rest
OFFICIAL_MIN_IMAGES = 190_000  # the release has ~200k images per difficulty
GENERATED_MARKER = "generator.json"  # written by the generator beside imgs/ and metadata/
PARALLEL_MIN_IMAGES = 4000  # decode in worker processes from this many images on
NPY_MAGIC = b"\x93NUMPY"


# ----------------------------------------------------------------------------- locate
def _release_folder(data_dir: Path, resolution: int, difficulty: str) -> Path | None:
    for name in DIFFICULTY_DIRS[difficulty]:
        folder = sources.find_dir(data_dir, f"pathfinder{resolution}/{name}", required=["metadata"])
        if folder is not None:
            return folder
    return None


def _metadata_files(folder: Path) -> dict[str, Path]:
    def order(path: Path):
        return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)

    files = sorted((p for p in (folder / "metadata").glob("*.npy") if p.is_file()), key=order)
    return {f"metadata/{p.name}": p for p in files}


def locate(data_dir: str | Path, *, difficulty: str = "hard", resolution: int = 32, split_seed: int = 0,
           generate: dict | None = None) -> Located:
    """The release folder of `difficulty` at `resolution` under data_dir, else (with
    `generate`) a generated copy.

    difficulty: easy | medium | hard (contour length 6 / 9 / 14).
    resolution: 32 (Pathfinder) or 128 (Path-X).
    split_seed: seed of the 80/10/10 split.
    generate: {n, seed, workers, markers}; the copy lives in
      `data_dir/generated/pathfinder{res}-{difficulty}_n{n}_seed{seed}[_markers-faint]/` and later
      runs reuse it. markers: "visible" (default, snakes2.py's discs) or "faint" (as in the real
      samples: below one gray level, see `lra.data.pathfinder_generator`).
    """
    if difficulty not in DIFFICULTY_DIRS:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTY_DIRS)}, got {difficulty!r}")
    if resolution not in (32, 128):
        raise ValueError(f"resolution must be 32 (pathfinder) or 128 (pathx), got {resolution}")
    data_dir = Path(data_dir)
    settings = {"difficulty": difficulty, "resolution": resolution, "split_seed": int(split_seed)}
    folder = _release_folder(data_dir, resolution, difficulty)
    if folder is not None and _metadata_files(folder):
        generated = (folder / GENERATED_MARKER).is_file()
        return Located(files=_metadata_files(folder), source="generated" if generated else None,
                       settings={**settings, "folder": str(folder.resolve())})
    task = "pathfinder" if resolution == 32 else "pathx"
    if not generate:
        dirs = " or ".join(DIFFICULTY_DIRS[difficulty])
        raise DataNotFoundError(
            f"{'Pathfinder' if resolution == 32 else 'Path-X'} ({difficulty}) not found: searched "
            f"{data_dir.resolve()} (any depth) for pathfinder{resolution}/{dirs}/metadata/*.npy. Put the "
            "LRA release there (https://storage.googleapis.com/long-range-arena/lra_release.gz, extracted "
            "with `tar xzf lra_release.gz -C $LRA_DATA_DIR`) or set LRA_DATA_DIR, or generate images with "
            f"`python scripts/prepare_data.py generate pathfinder --out $LRA_DATA_DIR --n 200000 "
            f"--resolution {resolution} --difficulty {difficulty} --workers 8` "
            f"(or set the option `generate: {{n: ..., seed: 0}}` of task {task})."
        )
    generate = generate_options(generate, "{n: 200000, seed: 0}")
    n, seed, markers = int(generate["n"]), int(generate.get("seed", 0)), str(generate.get("markers", "visible"))
    generator.settings_for(resolution, difficulty, markers)  # checks the option before anything is written
    suffix = "" if markers == "visible" else f"_markers-{markers}"
    out = data_dir / "generated" / f"pathfinder{resolution}-{difficulty}_n{n}_seed{seed}{suffix}"
    folder = generator.dataset_folder(out, resolution, difficulty)
    if not _metadata_files(folder):
        out.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if not _metadata_files(folder):
                generate_release(out, n, resolution=resolution, difficulty=difficulty, seed=seed,
                                 workers=int(generate.get("workers", 1)), markers=markers)
    return Located(files=_metadata_files(folder), source="generated",
                   settings={**settings, "folder": str(folder.resolve())},
                   notes=[f"Pathfinder-{resolution} generated ({n} images, seed {seed}, {markers} markers) in {folder}"])


def generate_release(out_dir: str | Path, n: int, *, resolution: int = 32, difficulty: str = "hard",
                     seed: int = 0, workers: int = 1, progress: bool = True, markers: str = "visible") -> Path:
    """Generate `n` images in the official layout under out_dir and mark the copy as generated."""
    folder = generator.dataset_folder(out_dir, resolution, difficulty)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GENERATED_MARKER).write_text(json.dumps(
        {"n": n, "seed": seed, "resolution": resolution, "difficulty": difficulty,
         "settings": asdict(generator.settings_for(resolution, difficulty, markers))}, indent=2))
    return generator.generate(out_dir, n, resolution=resolution, difficulty=difficulty, seed=seed,
                              workers=workers, progress=progress, markers=markers)


# ----------------------------------------------------------------------------- metadata
def read_metadata(path: str | Path) -> list[tuple[str, str, int]]:
    """Rows (subfolder, file name, label) of one metadata file, text or binary .npy."""
    path = Path(path)
    with open(path, "rb") as handle:
        binary = handle.read(len(NPY_MAGIC)) == NPY_MAGIC
    rows: list[tuple[int, list[str]]] = []
    if binary:
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise MalformedDataError(f"{path}: unreadable .npy metadata ({err})") from None
        if array.ndim != 2:
            raise MalformedDataError(f"{path}: metadata array has shape {array.shape}, expected (rows, columns)")
        rows = [(i + 1, [str(v) for v in row]) for i, row in enumerate(array)]
        unit = "row"
    else:
        with open(path, encoding="utf-8", errors="replace") as handle:
            rows = [(i, line.split()) for i, line in enumerate(handle, start=1) if line.strip()]
        unit = "line"
    out = []
    for number, fields in rows:
        if len(fields) < 4:
            raise MalformedDataError(f"{path} {unit} {number}: expected at least 4 columns "
                                     f"(subfolder, file, index, label), got {len(fields)}")
        try:
            label = int(fields[3])
        except ValueError:
            raise MalformedDataError(f"{path} {unit} {number}: label {fields[3]!r} is not an integer") from None
        if not 0 <= label < NUM_CLASSES:
            raise MalformedDataError(f"{path} {unit} {number}: label {label} is outside 0..{NUM_CLASSES - 1}")
        out.append((fields[0], fields[1], label))
    return out


# ----------------------------------------------------------------------------- images
OK, EMPTY, UNREADABLE, WRONG_SIZE = 0, 1, 2, 3


def _decode_chunk(job: tuple[list[str], int]) -> tuple[np.ndarray, list[int]]:
    """Worker: decode PNGs -> (uint8 (k, side*side) pixels, per-image status)."""
    paths, side = job
    pixels = np.zeros((len(paths), side * side), dtype=np.uint8)
    status = []
    for row, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                array = np.asarray(image if image.mode == "L" else image.convert("L"))
        except (OSError, ValueError, SyntaxError):
            status.append(UNREADABLE)
            continue
        if array.shape != (side, side):
            status.append(WRONG_SIZE)
            continue
        pixels[row] = array.reshape(-1)
        status.append(EMPTY if not pixels[row].any() else OK)
    return pixels, status


def _decode_all(paths: list[str], side: int, label: str):
    """Yield (start index, pixels, status) chunks in order, decoding in parallel for many images."""
    chunk = 256 if side <= 32 else 32
    jobs = [(paths[i:i + chunk], side) for i in range(0, len(paths), chunk)]
    workers = int(os.environ.get("LRA_DATA_WORKERS", min(8, os.cpu_count() or 1)))
    pool = None
    if len(paths) >= PARALLEL_MIN_IMAGES and workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        results = pool.imap(_decode_chunk, jobs) if pool else map(_decode_chunk, jobs)
        with progress_bar(f"decoding {label}", len(paths), len(paths) >= PARALLEL_MIN_IMAGES) as advance:
            for index, (pixels, status) in enumerate(results):
                yield index * chunk, pixels, status
                advance(len(status))
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _compact(ids: np.ndarray, labels: np.ndarray, keep: np.ndarray):
    """Drop rows where keep is False, in place (no second copy of a memory-mapped array)."""
    index = np.flatnonzero(keep)
    if len(index) == len(keep):
        return ids, labels
    for start in range(0, len(index), 4096):
        block = index[start:start + 4096]
        ids[start:start + len(block)] = ids[block]  # block[j] >= start + j: reads run ahead of writes
    return ids[: len(index)], labels[index]


def _check_readable(folder: Path, located: Located, total: int, keep: dict[str, np.ndarray],
                    counts: dict[int, list[str]]) -> None:
    """Raise (one paragraph: how many images could be read, which split is left empty, what to
    restore) if a split has no readable image; such a split must never reach the cache."""
    empty = [split for split, kept in keep.items() if not kept.any()]
    if not empty:
        return
    readable = sum(int(kept.sum()) for kept in keep.values())
    listed = f"{total} images listed in {folder}/metadata ({len(located.files)} file(s))"
    if any(len(kept) == 0 for kept in keep.values()):  # too few listed for 80/10/10
        raise MalformedDataError(
            f"only {listed}: the 80/10/10 split leaves the {', '.join(empty)} split empty; list at "
            "least 10 images (a complete release or a larger generated copy)."
        )
    bad = counts[UNREADABLE] + counts[EMPTY]
    why = (f"{len(counts[UNREADABLE])} missing or unreadable, {len(counts[EMPTY])} all-zero"
           + (f", e.g. {bad[0]}" if bad else ""))
    scope = "" if readable == 0 else f", which leaves the {', '.join(empty)} split empty"
    raise MalformedDataError(
        f"{readable} of {listed} could be read ({why}){scope}; restore the images under "
        f"{folder}/imgs (re-extract the release's pathfinder{int(located.settings['resolution'])} "
        "folder, or regenerate a generated copy) and run again; nothing was cached."
    )


def read(located: Located, *, max_len: int | None = None) -> TaskData:
    """Decode all listed images into a seeded 80/10/10 split."""
    folder = Path(located.settings["folder"])
    side = int(located.settings["resolution"])
    max_len = max_len or side * side
    entries: list[tuple[str, int]] = []
    for meta in located.files.values():
        entries += [(str(folder / sub / name), label) for sub, name, label in read_metadata(meta)]
    if not entries:
        raise MalformedDataError(f"{folder}/metadata: no images listed")
    total = len(entries)
    order = np.random.default_rng(int(located.settings["split_seed"])).permutation(total)
    sizes = split_counts(total)
    n_train, n_val = sizes["train"], sizes["val"]
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, total)}
    split_of = np.empty(total, dtype=np.int8)
    position = np.empty(total, dtype=np.int64)
    for code, (lo, hi) in enumerate(bounds.values()):
        split_of[order[lo:hi]] = code
        position[order[lo:hi]] = np.arange(hi - lo)
    names = list(bounds)
    ids = {s: sources.allocate((hi - lo, max_len), np.int16) for s, (lo, hi) in bounds.items()}
    labels = {s: np.zeros(hi - lo, dtype=np.int64) for s, (lo, hi) in bounds.items()}
    keep = {s: np.zeros(hi - lo, dtype=bool) for s, (lo, hi) in bounds.items()}
    counts = {EMPTY: [], UNREADABLE: []}
    width = min(max_len, side * side)
    for start, pixels, status in _decode_all([p for p, _ in entries], side, folder.name):
        for offset, state in enumerate(status):
            i = start + offset
            if state == WRONG_SIZE:
                raise MalformedDataError(f"{entries[i][0]}: image is not {side}x{side}; "
                                         f"pathfinder{side} images must all have that size")
            if state != OK:
                counts[state].append(entries[i][0])
                continue
            split, row = names[split_of[i]], position[i]
            ids[split][row, :width] = pixels[offset, :width]
            ids[split][row, :width] += PIXEL_OFFSET
            labels[split][row] = entries[i][1]
            keep[split][row] = True
    _check_readable(folder, located, total, keep, counts)
    splits = {}
    for split in names:
        split_ids, split_labels = _compact(ids[split], labels[split], keep[split])
        splits[split] = SplitArrays(ids=split_ids, labels=check_labels(split_labels, NUM_CLASSES, str(folder)))
    notes = list(located.notes)
    if counts[EMPTY]:
        notes.append(f"skipped {len(counts[EMPTY])} empty (all-zero) images, e.g. {counts[EMPTY][0]}")
    if counts[UNREADABLE]:
        notes.append(f"skipped {len(counts[UNREADABLE])} missing or unreadable images, e.g. {counts[UNREADABLE][0]}")
    if max_len < side * side:
        notes.append(f"images truncated to the first {max_len} of {side * side} pixels")
    return TaskData(splits=splits, source=source_of(located, {"all": total}), location=str(folder),
                    notes=notes)


def split_counts(total: int) -> dict[str, int]:
    """The 80/10/10 split of `total` listed images (before skipping unreadable ones)."""
    n_train, n_val = int(total * SPLIT_FRACTIONS["train"]), int(total * SPLIT_FRACTIONS["val"])
    return {"train": n_train, "val": n_val, "test": total - n_train - n_val}


OFFICIAL_SIZES = split_counts(OFFICIAL_MIN_IMAGES)  # each split of a copy of the release is this large


def split_sizes(located: Located) -> dict[str, int]:
    """Split sizes from the metadata files, without decoding an image."""
    return split_counts(sum(len(read_metadata(path)) for path in located.files.values()))


def source_of(located: Located, sizes: dict[str, int]) -> str:
    """generated, else official for a copy of the release's size, else sample."""
    return located.source or ("official" if sum(sizes.values()) >= OFFICIAL_MIN_IMAGES else "sample")
