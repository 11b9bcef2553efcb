"""ListOps (Nangia & Bowman 2018, as packaged by the Long Range Arena, Tay et al. 2021).

Official files: `listops-1000/basic_{train,val,test}.tsv` with header `Source\\tTarget`.
When they are missing, `generate` writes the same layout with the LRA generator algorithm:
operators MIN, MAX, MED (integer median), SM (sum mod 10) over digits 0-9, random trees of
depth <= 10, kept when 500 < length < 2000 and de-duplicated.

Token ids (fixed; 0 is padding): digits '0'..'9' -> 1..10, '[MIN' 11, '[MAX' 12, '[MED' 13,
'[SM' 14, ']' 15. Parentheses are deleted before splitting on white space.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from filelock import FileLock

from lra.data.base import (
    SPLITS,
    DataNotFoundError,
    Located,
    MalformedDataError,
    SplitArrays,
    TaskData,
    check_labels,
    count_lines,
    generate_options,
    find_file,
    pad_rows,
    release_source,
)
from lra.data.progress import progress_bar

NUM_CLASSES = 10
RELEASE_FILES = {split: f"listops-1000/basic_{split}.tsv" for split in SPLITS}
# Written beside the TSVs by `write_release`: marks a copy as generated, not official.
GENERATED_MARKER = "generator.json"
OFFICIAL_SIZES = {"train": 96000, "val": 2000, "test": 2000}

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
VOCAB: dict[str, int] = {str(d): d + 1 for d in range(10)}
VOCAB.update({op: 11 + i for i, op in enumerate(OPERATORS)})
VOCAB[CLOSE] = 15
ID_TO_TOKEN = {i: t for t, i in VOCAB.items()}


# ----------------------------------------------------------------------------- tokenizer
def tokenize(source: str) -> list[int]:
    """ListOps source string -> token ids (parentheses dropped)."""
    return [VOCAB[token] for token in source.replace("(", " ").replace(")", " ").split()]


def detokenize(ids) -> str:
    """Token ids -> space-separated symbols (padding dropped)."""
    return " ".join(ID_TO_TOKEN[int(i)] for i in ids if int(i) != 0)


# ----------------------------------------------------------------------------- generator
def _evaluate(op: str, values: list[int]) -> int:
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        return int(np.median(values))
    return sum(values) % 10  # [SM


def _generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int):
    """Return (string, value, length) of a random tree (length counts symbols, not parens)."""
    if depth < max_depth and rng.random() <= 0.25:
        n_args = rng.randint(2, max_args)
        children = [_generate_tree(rng, depth + 1, max_depth, max_args) for _ in range(n_args)]
        op = rng.choice(OPERATORS)
        # Left-nested pairs: ( ( ( [OP a ) b ) ] ), as the LRA generator writes them.
        text = f"( {op} {children[0][0]} )"
        for child in children[1:]:
            text = f"( {text} {child[0]} )"
        text = f"( {text} {CLOSE} )"
        value = _evaluate(op, [child[1] for child in children])
        return text, value, 2 + sum(child[2] for child in children)
    digit = rng.randrange(10)
    return str(digit), digit, 1


@dataclass(frozen=True)
class TreeOptions:
    """The shape of generated trees. The defaults are the LRA generator's; smaller values make
    a shorter, easier ListOps (e.g. the demo's). A tree is kept when
    min_length < length < max_length (length counts symbols, not parentheses)."""

    min_length: int = 500
    max_length: int = 2000
    max_depth: int = 10
    max_args: int = 10

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task.data.generate.{key} must be an int >= 1, got {value!r}")
        if self.max_length - self.min_length < 2:
            raise ValueError(f"task.data.generate: no tree length lies strictly between min_length="
                             f"{self.min_length} and max_length={self.max_length}; use "
                             "max_length >= min_length + 2")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, options: dict) -> TreeOptions:
        """The tree options among `options` (e.g. task.data.generate); other keys are ignored."""
        return cls(**{name: options[name] for name in cls.names() if name in options})

    def changed(self) -> dict[str, int]:
        """The options that differ from the LRA values (they name a generated copy)."""
        lra = TreeOptions()
        return {key: value for key, value in asdict(self).items() if value != getattr(lra, key)}


def generate_examples(n: int, seed: int, *, trees: TreeOptions = TreeOptions(),
                      exclude: set[str] | None = None, progress: bool = False,
                      description: str = "generating ListOps") -> list[tuple[str, int]]:
    """`n` distinct (source, target) pairs drawn with the tree options `trees`."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    examples: list[tuple[str, int]] = []
    with progress_bar(description, n, progress) as advance:
        while len(examples) < n:
            text, value, length = _generate_tree(rng, 1, trees.max_depth, trees.max_args)
            if trees.min_length < length < trees.max_length and text not in seen:
                seen.add(text)
                examples.append((text, value))
                advance(1)
    return examples


def write_release(out_dir: str | Path, sizes: dict[str, int], seed: int, progress: bool = True,
                  trees: TreeOptions = TreeOptions()) -> Path:
    """Write `out_dir/listops-1000/basic_{split}.tsv` in the official format; returns the folder.

    Splits are drawn from one stream so no example appears twice across splits. Each file is
    written to a temporary name and renamed, so a half-written file is never left behind.
    """
    folder = Path(out_dir) / "listops-1000"
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for offset, split in enumerate(SPLITS):
        examples = generate_examples(sizes[split], seed * 1000 + offset, exclude=seen, progress=progress,
                                     description=f"generating ListOps {split}", trees=trees)
        seen.update(text for text, _ in examples)
        target = folder / f"basic_{split}.tsv"
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["Source", "Target"])
            writer.writerows(examples)
        os.replace(tmp, target)
    marker = {"generator": "LRA ListOps algorithm (lra.data.listops)", "seed": seed, "sizes": sizes,
              **trees.changed()}
    (folder / GENERATED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return folder


# ----------------------------------------------------------------------------- reader
def read_tsv(path: str | Path, max_len: int) -> SplitArrays:
    """Read one official (or generated) ListOps TSV into padded ids and labels."""
    path = Path(path)
    rows, labels = [], []
    # ListOps is ASCII; a stray non-ASCII byte is reported with its line instead of failing decode.
    with open(path, newline="", encoding="ascii", errors="surrogateescape") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header != ["Source", "Target"]:
            raise MalformedDataError(f"{path}:1: expected header 'Source<TAB>Target', got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise MalformedDataError(f"{path}:{line_no}: expected 2 tab-separated columns, got {len(row)}")
            try:
                rows.append(tokenize(row[0]))
                labels.append(int(row[1]))
            except (KeyError, ValueError) as err:
                raise MalformedDataError(f"{path}:{line_no}: cannot parse row ({err!r}); "
                                         f"tokens must be {sorted(VOCAB)} and the target 0-9") from None
            if not 0 <= labels[-1] < NUM_CLASSES:  # file line, 1-based with the header as line 1
                raise MalformedDataError(
                    f"{path}:{line_no}: label {labels[-1]} is outside 0..{NUM_CLASSES - 1}; a ListOps "
                    "target is the value of its expression, a digit 0-9: correct or remove that line, "
                    "or use an unmodified copy of the release (or a generated one)."
                )
    if not rows:
        raise MalformedDataError(f"{path}: no examples after the header")
    return SplitArrays(ids=pad_rows(rows, max_len), labels=check_labels(np.array(labels), NUM_CLASSES, str(path)))


def find_release(data_dir: str | Path) -> dict[str, Path] | None:
    """Paths of the three official split files under data_dir (any nesting), or None."""
    found = {split: find_file(Path(data_dir), rel) for split, rel in RELEASE_FILES.items()}
    return found if all(found.values()) else None


def locate(data_dir: str | Path, *, generate: dict | None = None) -> Located:
    """The official files if present under data_dir, else (with `generate`) generated ones.

    `generate`: {train, val, test, seed} and optionally the fields of :class:`TreeOptions`
    (min_length, max_length, max_depth, max_args; the LRA values are the defaults). The generated
    copy lives in `data_dir/generated/listops_<sizes>_seed<seed>[_<options>]/` and later runs
    reuse it.
    """
    files = find_release(data_dir)
    if files is not None:
        generated = (files["train"].parent / GENERATED_MARKER).is_file()
        return Located(files=files, source="generated" if generated else None)
    if not generate:
        raise DataNotFoundError(
            f"ListOps not found: searched {Path(data_dir).resolve()} (any depth) for "
            f"{', '.join(RELEASE_FILES.values())}. Put the LRA release (lra_release.gz from the "
            "Long Range Arena repository) there or set LRA_DATA_DIR, or generate it with "
            "`python scripts/prepare_data.py generate listops --out $LRA_DATA_DIR`."
        )
    generate = generate_options(generate, "{train: 96000, val: 2000, test: 2000, seed: 0}")
    unknown = sorted(set(generate) - {*SPLITS, "seed", *TreeOptions.names()})
    if unknown:
        raise ValueError(f"task.data.generate: unknown key(s) {', '.join(unknown)}; valid keys: "
                         f"{', '.join([*SPLITS, 'seed', *TreeOptions.names()])}")
    sizes = {split: int(generate[split]) for split in SPLITS}
    seed = int(generate.get("seed", 0))
    trees = TreeOptions.from_options(generate)
    name = f"listops_{sizes['train']}-{sizes['val']}-{sizes['test']}_seed{seed}"
    name += "".join(f"_{key}{value}" for key, value in sorted(trees.changed().items()))
    out = Path(data_dir) / "generated" / name
    files = {split: out / rel for split, rel in RELEASE_FILES.items()}
    if not all(path.is_file() for path in files.values()):
        out.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if not all(path.is_file() for path in files.values()):
                write_release(out, sizes, seed, trees=trees)
    return Located(files=files, source="generated",
                   notes=[f"ListOps generated with the LRA algorithm (seed {seed}) in {out}"])


def read(located: Located, *, max_len: int) -> TaskData:
    """Read all splits; a release copy smaller than the official one is marked `sample`."""
    splits = {split: read_tsv(path, max_len) for split, path in located.files.items()}
    source = source_of(located, {s: len(a) for s, a in splits.items()})
    return TaskData(splits=splits, source=source, location=str(located.files["train"].parent),
                    notes=list(located.notes))


def split_sizes(located: Located) -> dict[str, int]:
    """Split sizes of located files without reading them (one header line per TSV)."""
    return {split: count_lines(path, header=True) for split, path in located.files.items()}


def source_of(located: Located, sizes: dict[str, int | str]) -> str:
    """generated, else official when the splits are the official release's sizes, else sample."""
    return located.source or release_source(sizes, OFFICIAL_SIZES)
