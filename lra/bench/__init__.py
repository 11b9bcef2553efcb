"""Attention benchmark: wall time and peak memory of the registered backends versus n.

One module per job: :mod:`~lra.bench.presets` (the settings, read from configs/ and the
registry), :mod:`~lra.bench.measure` (one point in a fresh worker process), :mod:`~lra.bench.run`
(the loop over points, gaps and the CSV), :mod:`~lra.bench.results` (CSV columns, ratio and slope
summaries) and :mod:`~lra.bench.plots`. The command line is scripts/bench_attention.py.
"""

from lra.bench.presets import BenchError, Preset, presets, resolve_backends, resolve_options
from lra.bench.results import COLUMNS, summarize
from lra.bench.run import BenchRequest, run_benchmark

__all__ = ["COLUMNS", "BenchError", "BenchRequest", "Preset", "presets", "resolve_backends",
           "resolve_options", "run_benchmark", "summarize"]
