"""The results record: one `results.json` per run, written by `lra.runner`, read by the tables.

`RunRecord` is the one definition of the record's fields. `to_dict` is what is written;
`from_dict` reads any record written so far (older records lack `cell`, `schema` and `schedule`, failed
runs have no measurements) and rejects only what cannot be used at all, with the reason.
Keys it does not know are kept in `extra`, so reading and writing again loses nothing.
Values inside the sections are kept as written; the tables check the numbers they use.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("completed", "failed", "diverged")  # diverged: see lra.runner.judge_divergence


class RecordError(ValueError):
    """A results record that cannot be used at all (the message says why)."""


@dataclass
class DataInfo:
    """Where the data came from (lra.data.base.SOURCES), the split sizes, reader notes."""

    source: str | None = None
    location: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Metrics:
    """Accuracies are fractions in [0, 1]; val_acc is the best validation accuracy."""

    val_acc: float | None = None
    test_acc: float | None = None
    test_loss: float | None = None
    majority_test_acc: float | None = None  # always predicting the test split's commonest label


@dataclass
class Throughput:
    """Training throughput, summed over DDP processes (lra.throughput.ThroughputMeter)."""

    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    measured_steps: int = 0


@dataclass
class Memory:
    """Peak memory: kind cuda_max_allocated (tensors), cpu_peak_rss (the process since the run
    started) or cpu_max_rss (the process's whole life, where the former cannot be read)."""

    peak_bytes: int | None = None
    kind: str | None = None


@dataclass
class Schedule:
    """How long the run trained against the paper's schedule for its task (REFERENCE §2).
    shortened: fewer steps than the paper's (None when the paper's count is not known); such
    a run is not comparable with published numbers."""

    max_steps: int | None = None
    paper_max_steps: int | None = None
    warmup_steps: int | None = None
    eval_every: int | None = None
    shortened: bool | None = None

    @classmethod
    def of_run(cls, *, steps: int, paper_max_steps: int | None, **settings: int) -> Schedule:
        """The schedule of a run that trained `steps` steps (a time limit may stop it early)."""
        shortened = None if paper_max_steps is None else steps < paper_max_steps
        return cls(paper_max_steps=paper_max_steps, shortened=shortened, **settings)


SECTIONS = {"data": DataInfo, "metrics": Metrics, "throughput": Throughput, "memory": Memory,
            "schedule": Schedule}
OBJECTS = ("attention_options", "config", "versions", "git", "device", "diagnostics")  # free-form objects


@dataclass
class RunRecord:
    """One run: what ran (task, backend and options, seed, config, code, device), how it
    ended (status, error) and what it measured (the sections, None for a failed run)."""

    task: str
    attention: str
    seed: int | None = None
    status: str = "completed"
    tag: str | None = None
    error: str | None = None
    attention_options: dict[str, Any] | None = None
    data: DataInfo | None = None
    metrics: Metrics | None = None
    throughput: Throughput | None = None
    memory: Memory | None = None
    schedule: Schedule | None = None  # absent in records written before it existed
    wall_time_s: float | None = None  # the whole run: all its segments (each up to its last checkpoint)
    steps: int | None = None
    resumed_from: str | None = None  # the checkpoint the last segment resumed from
    resumes: int = 0  # how many times the run was resumed (segments - 1)
    segments: list[dict[str, Any]] = field(default_factory=list)  # lra.resume.RunLedger.segment
    reevaluated: str | None = None  # when the test was repeated with reevaluate=true
    skipped_nonfinite_batches: int | None = None
    best_checkpoint: str | None = None
    learning_curve: str | None = None  # learning_curve.png in the run dir (CSV logger runs)
    precision: str | None = None
    # Attention diagnostics of the best checkpoint on a fixed batch (lra.diagnostics.callback):
    # split, indices, tokens, checkpoint, per-layer and per-head rows; None when not computed.
    diagnostics: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    git: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    run_dir: str | None = None
    created: str | None = None
    record_path: str | None = None
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know
    path: str | None = field(default=None, compare=False)  # the file it was read from; not written

    @property
    def cell(self) -> str:
        """The table cell this run belongs to: `<task>/<attention>` (= task=X attn=Y)."""
        return f"{self.task}/{self.attention}"

    @property
    def label(self) -> str:
        return f"{self.cell} seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to results.json."""
        out = {"schema": self.schema, "cell": self.cell}
        for f in dataclasses.fields(self):
            if f.name not in ("schema", "extra", "path"):
                value = getattr(self, f.name)
                out[f.name] = asdict(value) if dataclasses.is_dataclass(value) else value
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, raw: Any, path: str | None = None) -> RunRecord:
        """A record as written (any version so far); RecordError says why one is unusable."""
        problem = record_problem(raw)
        if problem:
            raise RecordError(problem)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "path"}
        values = {k: v for k, v in raw.items() if k in known}
        for name, section in SECTIONS.items():
            if values.get(name) is not None:
                values[name] = _section(section, values[name])
        extra = {k: v for k, v in raw.items() if k not in known and k != "cell"}
        return cls(**values, extra=extra, path=path)


def _section(kind: type, raw: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in raw.items() if k in names})


def _required() -> list[str]:
    return [f.name for f in dataclasses.fields(RunRecord)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def record_problem(raw: Any) -> str | None:
    """Why `raw` cannot be read as a RunRecord, or None when it can (derived from the fields:
    the required names are non-empty strings, sections and objects are JSON objects)."""
    if not isinstance(raw, dict):
        return f"not a JSON object ({type(raw).__name__})"
    hints = typing.get_type_hints(RunRecord)
    for name in _required():
        if not isinstance(raw.get(name), hints[name]) or not raw[name]:
            return f"no {name!r} name"
    for name in (*SECTIONS, *OBJECTS):
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            return f"{name!r} is not an object"
    return None
