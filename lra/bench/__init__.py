"""Benchmarks: attention calls versus n, and whole training steps per task x backend.

Attention (scripts/bench_attention.py): :mod:`~lra.bench.presets` (the settings, read from
configs/ and the registry), :mod:`~lra.bench.measure` (one point), :mod:`~lra.bench.run` (the
loop over points, gaps and the CSV), :mod:`~lra.bench.results` (CSV columns, ratio and slope
summaries) and :mod:`~lra.bench.plots`. Whole training steps (scripts/bench_step.py):
:mod:`~lra.bench.step` (one cell), :mod:`~lra.bench.loader` (the DataLoader's rate),
:mod:`~lra.bench.synthetic` (batches of a task's shape), :mod:`~lra.bench.step_run` (the run and
its CSVs) and :mod:`~lra.bench.step_report` (Markdown tables, README section). Shared:
:mod:`~lra.bench.probes` (device, threads, memory) and :mod:`~lra.bench.worker` (one
measurement in a fresh process with a timeout).
"""

from lra.bench.presets import BenchError, Preset, presets, resolve_backends, resolve_options
from lra.bench.results import COLUMNS, summarize
from lra.bench.run import BenchRequest, run_benchmark

__all__ = ["COLUMNS", "BenchError", "BenchRequest", "Preset", "presets", "resolve_backends",
           "resolve_options", "run_benchmark", "summarize"]
