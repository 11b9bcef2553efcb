"""Finding and opening task inputs that are not single release files: folders at any depth,
local Hugging Face copies (parquet or the `datasets` arrow cache), prepared TFDS data sources,
and output arrays too large to build in memory.

Nothing here touches the network: Hugging Face files are read with
`datasets.load_dataset("parquet" | "arrow", data_files=...)` and TFDS with
`tfds.data_source(..., download=False)`, which reads ArrayRecord files without TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lra.data.base import DataNotFoundError, Located, walk_folders

# ----------------------------------------------------------------------------- folders
def find_dirs(root: Path, names: Iterable[str], max_depth: int = 4) -> list[Path]:
    """Folders under `root` (itself included) whose name is in `names`, shallowest first.

    Breadth-first like `find_file`; matches are not searched below.
    """
    names = set(names)
    return [folder for folder in walk_folders(root, max_depth, stop_below=lambda f: f.name in names)
            if folder.name in names]


def find_dir(root: Path, relative: str, max_depth: int = 4,
             required: Iterable[str] = ()) -> Path | None:
    """First folder `<somewhere under root>/<relative>` that contains every path in `required`."""
    required = list(required)
    for folder in walk_folders(root, max_depth):
        candidate = folder / relative
        if candidate.is_dir() and all((candidate / r).exists() for r in required):
            return candidate
    return None


# ----------------------------------------------------------------------------- search order
SOURCE_CHOICES = ("auto", "raw", "hf", "tfds")


def locate_download(data_dir: Path, *, task: str, source: str, search_caches: bool,
                    raw_folder: str, raw_required: list[str], raw_reader: str, hf_repo: str,
                    tfds_name: str, tfds_config: str | None, how_to_get: str) -> Located:
    """Find a task that comes as a raw download folder, Hugging Face files or a TFDS copy.

    source: "auto" tries them in that order; "raw", "hf" or "tfds" insists on one. A miss
    raises DataNotFoundError listing every place searched and `how_to_get`.
    """
    if source not in SOURCE_CHOICES:
        raise ValueError(f"{task} source must be one of {SOURCE_CHOICES}, got {source!r}")
    data_dir = Path(data_dir)
    searched = [f"{data_dir.resolve()}/**/{raw_folder}/{{{','.join(raw_required)}}}"]
    if source in ("auto", "raw"):
        folder = find_dir(data_dir, raw_folder, required=raw_required)
        if folder is not None:
            files = {name.replace("/", "_"): folder / name for name in raw_required}
            return Located(files=files, source="raw", settings={"reader": raw_reader})
    if source in ("auto", "hf"):
        found, where = find_hf_files(data_dir, hf_repo, search_caches=search_caches)
        searched += where
        if found is not None:
            files = {f"{split}_{i}": path for split, paths in found.items() for i, path in enumerate(paths)}
            return Located(files=files, source="hf", settings={"reader": "hf"})
    if source in ("auto", "tfds"):
        version_dir, where = find_tfds(data_dir, tfds_name, tfds_config, search_caches=search_caches)
        searched += where
        if version_dir is not None:
            return Located(files=tfds_files(version_dir), source="tfds",
                           settings={"reader": "tfds", "version_dir": str(version_dir.resolve())})
    raise DataNotFoundError(
        f"{task} not found{'' if source == 'auto' else f' as source {source!r}'}; searched: "
        f"{'; '.join(searched)}. {how_to_get} Then run `python scripts/prepare_data.py status`."
    )


# ----------------------------------------------------------------------------- Hugging Face
def hf_cache_dirs() -> list[Path]:
    """The local Hugging Face hub and `datasets` caches (they may not exist)."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", home / "hub")))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets"))
    return [hub, datasets_cache]


def hf_folder_names(repo_id: str) -> set[str]:
    """Folder names a local copy of hub dataset `repo_id` (e.g. 'stanfordnlp/imdb') goes by."""
    owner, name = repo_id.split("/")
    return {name, f"{owner}___{name}", f"datasets--{owner}--{name}"}


_SPLIT_TOKEN = re.compile(r"[-_.]")


def _split_of(path: Path) -> str | None:
    """'train' / 'test' for HF file names like `train-00000-of-00001.parquet`,
    `imdb-train.arrow` or `train/0000.parquet`; None for other splits (e.g. unsupervised)."""
    tokens = set(_SPLIT_TOKEN.split(path.name.lower()))
    for split in ("train", "test"):
        if split in tokens:
            return split
    if path.parent.name in ("train", "test") and not tokens & {"unsupervised", "validation"}:
        return path.parent.name
    return None


def find_hf_files(data_dir: Path, repo_id: str, *, search_caches: bool = True
                  ) -> tuple[dict[str, list[Path]] | None, list[str]]:
    """Train/test parquet (or arrow) files of a local copy of `repo_id`, and the places searched.

    Looked for in folders named like the dataset under `data_dir` (any depth) and, with
    `search_caches`, in the Hugging Face caches. Returns ({"train": [...], "test": [...]}, searched).
    """
    names = hf_folder_names(repo_id)
    roots = find_dirs(data_dir, names)
    searched = [f"{Path(data_dir).resolve()}/**/{{{','.join(sorted(names))}}}/**/*.parquet|*.arrow"]
    if search_caches:
        for cache in hf_cache_dirs():
            searched.append(f"{cache}/{{{','.join(sorted(names))}}}")
            roots += [cache / n for n in sorted(names) if (cache / n).is_dir()]
    for root in roots:
        groups: dict[Path, dict[str, list[Path]]] = {}
        for pattern in ("*.parquet", "*.arrow"):
            for path in sorted(root.rglob(pattern)):
                split = _split_of(path)
                if split is None:
                    continue
                key = path.parent.parent if path.parent.name in ("train", "test") else path.parent
                groups.setdefault(key, {}).setdefault(split, []).append(path)
        complete = [(key, files) for key, files in groups.items() if set(files) == {"train", "test"}]
        if complete:
            # Several snapshots or versions: take the most recently written one.
            key, files = max(complete, key=lambda kv: max(p.stat().st_mtime for f in kv[1].values() for p in f))
            return files, searched
    return None, searched


def load_hf_files(files: dict[str, list[Path]], columns: list[str]) -> dict[str, dict[str, list]]:
    """Read local parquet/arrow files with `datasets` (offline) -> {split: {column: values}}."""
    import datasets

    kind = "arrow" if all(p.suffix == ".arrow" for f in files.values() for p in f) else "parquet"
    out: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="lra-hf-") as cache_dir:
        loaded = datasets.load_dataset(kind, data_files={s: [str(p) for p in f] for s, f in files.items()},
                                       cache_dir=cache_dir)
        for split, table in loaded.items():
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise KeyError(f"{[str(p) for p in files[split]]}: columns {missing} missing "
                               f"(found {table.column_names})")
            if "img" in columns or "image" in columns:  # keep encoded image bytes, decode ourselves
                table = table.cast_column(next(c for c in ("img", "image") if c in columns),
                                          datasets.Image(decode=False))
            out[split] = {c: list(table[c]) for c in columns}
    return out


# ----------------------------------------------------------------------------- TFDS
def tfds_default_dirs() -> list[Path]:
    """TFDS data dirs outside the project: $TFDS_DATA_DIR and ~/tensorflow_datasets."""
    dirs = [Path(os.environ["TFDS_DATA_DIR"])] if os.environ.get("TFDS_DATA_DIR") else []
    return dirs + [Path.home() / "tensorflow_datasets"]


def _version_key(path: Path) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in path.name.split("."))


def find_tfds(data_dir: Path, name: str, config: str | None = None, *, search_caches: bool = True
              ) -> tuple[Path | None, list[str]]:
    """The prepared version folder `<tfds dir>/<name>[/<config>]/<version>/` with its
    `dataset_info.json` (highest version first), and the places searched."""
    sub = f"{config}/" if config else ""
    roots = find_dirs(data_dir, [name])
    searched = [f"{Path(data_dir).resolve()}/**/{name}/{sub}<version>/dataset_info.json"]
    if search_caches:
        for folder in tfds_default_dirs():
            searched.append(f"{folder}/{name}/{sub}<version>/dataset_info.json")
            if (folder / name).is_dir():
                roots.append(folder / name)
    for root in roots:
        base = root / config if config else root
        versions = sorted((p.parent for p in base.glob("*/dataset_info.json")), key=_version_key, reverse=True)
        if versions:
            return versions[0], searched
    return None, searched


def tfds_files(version_dir: Path) -> dict[str, Path]:
    """The files of a prepared TFDS dataset that key the cache."""
    files = {"dataset_info": version_dir / "dataset_info.json"}
    for path in sorted(version_dir.glob("*.array_record-*")):
        files[path.name] = path
    return files


def tfds_source(version_dir: Path, name: str, split: str):
    """A random-access TFDS data source for one split of the prepared dataset in `version_dir`.

    Uses `tfds.data_source(name, data_dir=..., split=...)` (no TensorFlow needed); a version
    other than the one the installed TFDS defines is opened from its folder instead.
    """
    info = json.loads((version_dir / "dataset_info.json").read_text())
    if info.get("fileFormat", "tfrecord") != "array_record":
        raise ValueError(
            f"{version_dir} holds TFRecord files; tfds.data_source needs ArrayRecord. Prepare it with "
            f"`tfds.builder('{name}', data_dir=...).download_and_prepare(file_format='array_record')`."
        )
    import tensorflow_datasets as tfds

    # <data_dir>/<name>/<version> or <data_dir>/<name>/<config>/<version>
    data_dir = version_dir.parents[1] if version_dir.parent.name == name else version_dir.parents[2]
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
        if Path(builder.data_dir).resolve() != version_dir.resolve():
            raise FileNotFoundError(builder.data_dir)
        return tfds.data_source(name, data_dir=str(data_dir), split=split, download=False)
    except Exception:  # another version or config than the installed TFDS defines
        return tfds.builder_from_directory(str(version_dir)).as_data_source(split=split)


def iterate_source(source, batch: int = 512) -> Iterator[dict]:
    """Examples of a TFDS data source in order, fetched in batches."""
    for start in range(0, len(source), batch):
        keys = list(range(start, min(start + batch, len(source))))
        yield from (source.__getitems__(keys) if hasattr(source, "__getitems__") else (source[k] for k in keys))


# ----------------------------------------------------------------------------- arrays
IN_MEMORY_LIMIT = 1 << 30  # bytes; larger outputs are built in an anonymous temporary file


def allocate(shape: tuple[int, ...], dtype=np.int16) -> np.ndarray:
    """A zeroed array; above IN_MEMORY_LIMIT bytes it is memory-mapped onto an unlinked
    temporary file (freed when the array is), so e.g. Path-X (200k x 16384) needs no 6 GB of RAM."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= IN_MEMORY_LIMIT:
        return np.zeros(shape, dtype=dtype)
    handle = tempfile.TemporaryFile(prefix="lra-array-")
    return np.memmap(handle, dtype=dtype, mode="w+", shape=shape)


def raw_split_counts(located: Located) -> dict[str, int | str]:
    """Examples per split of a download found by `locate_download` ("?" where the files do not
    say it cheaply), read from folder listings and metadata, not from the examples.

    Readers: aclImdb (one .txt per review under <split>_<label>), hf (parquet row counts),
    tfds (dataset_info.json shard lengths); others count nothing here.
    """
    files, reader = located.files, located.settings.get("reader")
    counts: dict[str, int | str] = {}
    if reader == "aclImdb":
        for key, folder in files.items():
            split = key.rsplit("_", 1)[0]
            counts[split] = int(counts.get(split, 0)) + len(list(folder.glob("*.txt")))
    elif reader == "hf":
        import pyarrow.parquet as pq

        for key, path in files.items():
            split = key.rsplit("_", 1)[0]
            if path.suffix != ".parquet":
                counts[split] = "?"
            elif counts.get(split) != "?":
                counts[split] = int(counts.get(split, 0)) + pq.ParquetFile(path).metadata.num_rows
    elif reader == "tfds":
        info = json.loads(files["dataset_info"].read_text())
        for split in info.get("splits", []):
            counts[split["name"]] = sum(int(n) for n in split.get("shardLengths", []))
    return counts
