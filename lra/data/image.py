"""Image: CIFAR-10 (Krizhevsky 2009) as a sequence of 1024 grayscale pixels, as in the Long
Range Arena (Tay et al. 2021). Splits 45000 train / 5000 val (the last 10% of the training set,
LRA's `train[90%:]`) / 10000 test. 10 classes.

Inputs, searched in this order (`source="auto"`):

1. "raw":  `cifar-10-batches-py/` (python pickles `data_batch_1..5`, `test_batch`), any depth.
2. "hf":   a local copy of the Hugging Face dataset `uoft-cs/cifar10` (parquet files
   `plain_text/{train,test}-*.parquet` with columns `img` (PNG bytes) and `label`) in a folder
   named `cifar10`, `uoft-cs___cifar10` or `datasets--uoft-cs--cifar10` under the data dir or in
   the Hugging Face caches.
3. "tfds": a prepared TFDS `cifar10` (ArrayRecord) read with `tfds.data_source`.

Grayscale is computed exactly as `tf.image.rgb_to_grayscale` does for uint8 input (TensorFlow
`image_ops_impl.py`): `convert_image_dtype` to float32 (x * (1/255)), a float32 dot product with
the weights [0.2989, 0.5870, 0.1140], then `convert_image_dtype` back to uint8, which multiplies
by 255.5 (`dtype.max + 0.5`) and casts, truncating toward zero. E.g. pure green (0, 255, 0) ->
trunc(0.587 * 255.5) = 149, pure red -> 76, white -> 255.

Token ids: id = gray pixel + 1, in 1..256 (0 stays the padding id; the mask is ids != 0), so
the embedding needs vocab_size >= 257. Pixels are flattened row-major.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from lra.data import safe_pickle, sources
from lra.data.base import Located, MalformedDataError, SplitArrays, TaskData, check_labels

NUM_CLASSES = 10
SEQ_LEN = 1024
MIN_MAX_LEN = SEQ_LEN  # an example is a whole image: task.max_len may not cut it
PIXEL_OFFSET = 1  # id = pixel + PIXEL_OFFSET
VOCAB_SIZE = 256 + PIXEL_OFFSET
VAL_FRACTION = 0.1
OFFICIAL_SIZES = {"train": 45000, "val": 5000, "test": 10000}
RAW_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
HF_REPO = "uoft-cs/cifar10"
TFDS_NAME = "cifar10"
PYTHON_RELEASE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


def rgb_to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB -> uint8 (...) gray with the arithmetic of tf.image.rgb_to_grayscale.

    All steps run in float32 as in TensorFlow; the three products are summed left to right
    (TensorFlow's matmul kernel may order or fuse them differently, which can only matter for a
    pixel whose scaled value lies within a float32 rounding step of an integer).
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 (..., 3) RGB, got {rgb.dtype} {rgb.shape}")
    flt = rgb.astype(np.float32) * np.float32(1.0 / 255)  # convert_image_dtype(uint8 -> float32)
    w = GRAY_WEIGHTS
    gray = flt[..., 0] * w[0] + flt[..., 1] * w[1] + flt[..., 2] * w[2]  # tensordot over channels
    return (gray * np.float32(255 + 0.5)).astype(np.uint8)  # convert_image_dtype(float32 -> uint8)


def pixels_to_ids(gray: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H*W) -> int16 (N, H*W) token ids (pixel + 1)."""
    gray = np.asarray(gray)
    return gray.reshape(len(gray), -1).astype(np.int16) + PIXEL_OFFSET


# ----------------------------------------------------------------------------- locate
def locate(data_dir: str | Path, *, source: str = "auto", search_caches: bool = True) -> Located:
    """Find CIFAR-10: python pickles, then Hugging Face files, then TFDS.

    source: "auto" (that order) or one of "raw", "hf", "tfds" to insist on one.
    search_caches: also look in the Hugging Face caches and the default TFDS data dirs.
    """
    return sources.locate_download(
        Path(data_dir), task="CIFAR-10 (task image)", source=source, search_caches=search_caches,
        raw_folder="cifar-10-batches-py", raw_required=RAW_FILES, raw_reader="pickle",
        hf_repo=HF_REPO, tfds_name=TFDS_NAME, tfds_config=None, how_to_get=(
            f"Provide one of: (1) the python version {PYTHON_RELEASE} extracted into the data dir "
            "(`tar xzf cifar-10-python.tar.gz -C $LRA_DATA_DIR`); (2) the Hugging Face parquet files of "
            "uoft-cs/cifar10 (`huggingface-cli download uoft-cs/cifar10 --repo-type dataset "
            "--local-dir $LRA_DATA_DIR/cifar10`); (3) a TFDS copy prepared as ArrayRecord "
            "(`tfds.builder('cifar10', data_dir='$LRA_DATA_DIR/tensorflow_datasets')"
            ".download_and_prepare(file_format='array_record')`)."))


# ----------------------------------------------------------------------------- read
def read_batch(path: Path) -> dict:
    """The dict pickled in one CIFAR-10 python batch file, keys as bytes (b"data", b"labels")."""
    try:
        batch = safe_pickle.load(path, clean_copy=PYTHON_RELEASE, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as err:
        raise MalformedDataError(f"{path}: not a CIFAR-10 python batch ({err!r})") from None
    if not isinstance(batch, dict):
        raise MalformedDataError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, not a dict)")
    return batch


def _read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> RGB uint8 (N, 32, 32, 3), labels (N,).

    Read with the restricted unpickler: a batch that names anything but numpy arrays is refused.
    """
    batch = read_batch(path)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise MalformedDataError(f"{path}: not a CIFAR-10 python batch ({err!r})") from None
    if data.ndim != 2 or data.shape[1] != 3 * SEQ_LEN or len(data) != len(labels):
        raise MalformedDataError(f"{path}: data has shape {data.shape} for {len(labels)} labels; "
                                 "expected (N, 3072) planar RGB rows")
    # Rows hold the red, green and blue 32x32 planes one after another.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _decode_png(blob: bytes, where: str) -> np.ndarray:
    try:
        image = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    except Exception as err:  # PIL raises many kinds
        raise MalformedDataError(f"{where}: cannot decode image ({err!r})") from None
    if image.shape != (32, 32, 3):
        raise MalformedDataError(f"{where}: image is {image.shape}, expected (32, 32, 3)")
    return image


def _read_hf(located: Located) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    files: dict[str, list[Path]] = {}
    for key, path in located.files.items():
        files.setdefault(key.rsplit("_", 1)[0], []).append(path)
    try:
        tables = sources.load_hf_files(files, ["img", "label"])
    except KeyError as err:
        raise MalformedDataError(str(err)) from None
    out = {}
    for split, table in tables.items():
        where = str(files[split][0])
        images = np.stack([_decode_png(item["bytes"], f"{where} row {i}") for i, item in enumerate(table["img"])])
        out[split] = (images, np.asarray(table["label"], dtype=np.int64))
    return out


def _read_tfds(located: Located) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    version_dir = Path(located.settings["version_dir"])
    out = {}
    for split in ("train", "test"):
        images, labels = [], []
        for example in sources.iterate_source(sources.tfds_source(version_dir, TFDS_NAME, split)):
            images.append(np.asarray(example["image"], dtype=np.uint8))
            labels.append(int(example["label"]))
        out[split] = (np.stack(images), np.asarray(labels, dtype=np.int64))
    return out


def read(located: Located, *, max_len: int = SEQ_LEN) -> TaskData:
    """Grayscale, tokenize and split: train[:90%] / train[90%:] / test."""
    if max_len < SEQ_LEN:
        raise ValueError(f"image max_len {max_len} is shorter than the {SEQ_LEN} pixels of an image")
    reader = located.settings.get("reader")
    if reader == "pickle":
        parts = [_read_pickle(located.files[name]) for name in RAW_FILES[:5]]
        rgb = {"train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
               "test": _read_pickle(located.files["test_batch"])}
        location = str(located.files["test_batch"].parent)
    elif reader == "hf":
        rgb = _read_hf(located)
        location = str(next(iter(located.files.values())).parent)
    elif reader == "tfds":
        rgb = _read_tfds(located)
        location = located.settings["version_dir"]
    else:
        raise ValueError(f"unknown image reader {reader!r}")
    arrays = {}
    for split, (images, labels) in rgb.items():
        ids = np.zeros((len(images), max_len), dtype=np.int16)
        ids[:, :SEQ_LEN] = pixels_to_ids(rgb_to_grayscale(images))
        arrays[split] = (ids, check_labels(labels, NUM_CLASSES, f"{location} ({split})"))
    train_ids, train_labels = arrays["train"]
    n_train, n_val = _train_val(len(train_ids))
    splits = {
        "train": SplitArrays(ids=train_ids[:n_train], labels=train_labels[:n_train]),
        "val": SplitArrays(ids=train_ids[n_train:], labels=train_labels[n_train:]),
        "test": SplitArrays(ids=arrays["test"][0], labels=arrays["test"][1]),
    }
    notes = list(located.notes) + [f"val is the last {VAL_FRACTION:.0%} of the training set"]
    small = {s: len(splits[s]) for s in OFFICIAL_SIZES if len(splits[s]) < OFFICIAL_SIZES[s]}
    if small:
        notes.append(f"smaller than the official CIFAR-10 LRA sizes {OFFICIAL_SIZES}: {small}")
    return TaskData(splits=splits, source=located.source, location=location, notes=notes)


def _train_val(n: int) -> tuple[int, int]:
    """Training images -> (train, val): val is the last VAL_FRACTION of them."""
    n_val = int(round(n * VAL_FRACTION))
    return n - n_val, n_val


def split_sizes(located: Located) -> dict[str, int | str]:
    """Split sizes without decoding images (the raw pickles are read for their labels)."""
    if located.settings.get("reader") == "pickle":
        counts: dict[str, int | str] = {
            "train": sum(len(_read_pickle(located.files[name])[1]) for name in RAW_FILES[:5]),
            "test": len(_read_pickle(located.files["test_batch"])[1])}
    else:
        counts = sources.raw_split_counts(located)
    train = counts.get("train", "?")
    n_train, n_val = _train_val(train) if isinstance(train, int) else ("?", "?")
    return {"train": n_train, "val": n_val, "test": counts.get("test", "?")}


def source_of(located: Located, sizes: dict[str, int | str]) -> str:
    """The download's kind (raw, hf, tfds): CIFAR-10 has no separate LRA release."""
    return located.source
