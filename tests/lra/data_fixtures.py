"""Tiny input fixtures in the real formats, written by the data tests themselves (no downloads)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_tfds(data_dir: Path, name: str, splits: dict[str, list[dict]]) -> Path:
    """Write a prepared TFDS dataset (ArrayRecord) that `tfds.data_source` reads, without
    TensorFlow: examples are serialized with the builder's own features, the layout and
    `dataset_info.json` with its own DatasetInfo. Returns the version folder."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordWriter

    builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    version_dir = Path(builder.data_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    infos = []
    for split, examples in splits.items():
        template = tfds.core.ShardedFileTemplate(
            data_dir=builder.data_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            dataset_name=builder.name, split=split, filetype_suffix="array_record")
        writer = ArrayRecordWriter(str(version_dir / f"{builder.name}-{split}.array_record-00000-of-00001"),
                                   "group_size:1")
        for example in examples:
            writer.write(builder.info.features.serialize_example(example))
        writer.close()
        infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(examples)], num_bytes=0,
                                         filename_template=template))
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.info.set_file_format("array_record")
    builder.info.write_to_directory(builder.data_dir)
    return version_dir


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_cifar_pickles(folder: Path, rng: np.random.Generator, per_batch: int = 20,
                        test_size: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`cifar-10-batches-py/` with random images; returns {file: (RGB (N,32,32,3), labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, size in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test_size)]:
        rgb = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size)
        planar = rgb.transpose(0, 3, 1, 2).reshape(size, 3072)  # R plane, G plane, B plane
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": planar, b"labels": labels.tolist(), b"batch_label": name.encode()}, handle)
        out[name] = (rgb, labels)
    return out


def write_acl_imdb(root: Path, reviews: dict[str, dict[str, list[bytes]]]) -> Path:
    """`root/aclImdb/{split}/{pos,neg}/{i}_{rating}.txt` from {split: {label: [texts]}}."""
    for split, by_label in reviews.items():
        for label, texts in by_label.items():
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i, text in enumerate(texts):
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_bytes(text)
    return root / "aclImdb"


def hermetic_env(monkeypatch, tmp_path: Path) -> None:
    """Point the Hugging Face and TFDS default locations into tmp_path (no user caches)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TFDS_DATA_DIR", "LRA_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    os.makedirs(tmp_path / "home", exist_ok=True)


class RunsCommand:
    """Unpickling this object runs `command` in a shell: the payload of a crafted pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_crafted_cifar_batch(path: Path, marker: Path) -> None:
    """A CIFAR batch whose unpickling by plain `pickle.load` would create `marker`."""
    with open(path, "wb") as handle:
        pickle.dump({b"data": RunsCommand(f"touch {marker}"), b"labels": [0]}, handle)


def write_learnable_pathfinder(data_dir: Path, resolution: int, n: int, seed: int = 0) -> Path:
    """A Pathfinder release layout (`pathfinder<res>/curv_contour_length_14/`, text metadata,
    PNGs) whose labels a model learns in a few steps: negative images (label 0) are dark noise
    (pixels 0-127), positive ones (label 1) bright noise (128-255). A pipeline that loses the
    pairing of images and labels cannot fit it."""
    rng = np.random.default_rng(seed)
    folder = data_dir / f"pathfinder{resolution}" / "curv_contour_length_14"
    (folder / "imgs" / "0").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        label = i % 2
        image = rng.integers(128 * label, 128 * (label + 1), (resolution, resolution), dtype=np.uint8)
        (folder / "imgs" / "0" / f"sample_{i}.png").write_bytes(png_bytes(image))
        lines.append(f"imgs/0 sample_{i}.png {i} {label} 1.0 14 4 2 0.5 1 1\n")
    (folder / "metadata" / "0.npy").write_text("".join(lines))
    return folder
