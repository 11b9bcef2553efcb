"""Published reference rows (REFERENCE §4), read from published.yaml next to this module.

Which backend a row belongs to comes from the backends themselves: a row's model name is in
the `published_names` of at most one registered backend (lotformer.attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from lotformer.attention import attention_class, available_attentions

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
TASK_KEYS = ("listops", "text", "retrieval", "image", "pathfinder")


@dataclass(frozen=True)
class PublishedRow:
    """One published row: model name, short source key, its citation and scores."""

    model: str
    source: str
    citation: str
    scores: dict[str, float]  # task -> accuracy %, only the cells the source reports
    avg: float | None = None  # the average as published
    digits: int = 2  # decimals as published

    @property
    def backend(self) -> str | None:
        """The registered backend that lists this row's model among its published names."""
        return published_backend(self.model)


def read_published(path: str | Path = PUBLISHED_FILE) -> tuple[PublishedRow, ...]:
    """The rows of a published-results file, in file order."""
    blocks = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    rows = []
    for block in blocks:
        for row in block["rows"]:
            unknown = set(row) - {"model", "avg", *TASK_KEYS}
            if unknown:
                raise ValueError(f"{path}: row {row.get('model')!r} has unknown keys {sorted(unknown)}")
            rows.append(PublishedRow(
                model=row["model"], source=block["source"], citation=block["citation"],
                scores={t: float(row[t]) for t in TASK_KEYS if t in row},
                avg=None if row.get("avg") is None else float(row["avg"]),
                digits=int(block.get("digits", 2))))
    return tuple(rows)


def published_sources(rows: tuple[PublishedRow, ...]) -> dict[str, str]:
    """Source key -> citation, in the order the sources first appear."""
    return {row.source: row.citation for row in rows}


def published_backend(model: str) -> str | None:
    """The backend whose `published_names` include `model`, or None."""
    return _published_names().get(model)


def _published_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for backend in available_attentions():
        for model in getattr(attention_class(backend), "published_names", ()):
            names.setdefault(model, backend)
    return names


PUBLISHED_ROWS = read_published()
PUBLISHED_SOURCES = published_sources(PUBLISHED_ROWS)
