"""Training throughput and peak memory, measured during `fit`."""

from __future__ import annotations

import resource
import sys
import time

import lightning as L
import torch


TOTALS = ("seconds", "samples", "tokens", "steps")


class ThroughputMeter(L.Callback):
    """Times training batches and counts samples and valid tokens.

    The first `warmup_batches` are left out of the rate when later batches exist (runs too
    short for that are measured over all their batches).
    """

    def __init__(self, warmup_batches: int = 2, earlier: dict | None = None) -> None:
        """earlier: `totals()` of the run's earlier segments (a resumed run), added in."""
        self.warmup_batches = warmup_batches
        self.batches: list[tuple[float, int, int]] = []  # (seconds, samples, valid tokens)
        self.earlier = {key: (earlier or {}).get(key, 0) for key in TOTALS}
        self._start = 0.0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(trainer)
        _, mask, labels, _ = batch
        self.batches.append((time.perf_counter() - self._start, len(labels), int(mask.sum())))

    def totals(self) -> dict:
        """Seconds, samples, tokens and count of the measured batches, earlier segments included."""
        measured = self.batches[self.warmup_batches:] or self.batches
        mine = {"seconds": sum(b[0] for b in measured), "samples": sum(b[1] for b in measured),
                "tokens": sum(b[2] for b in measured), "steps": len(measured)}
        return {key: self.earlier[key] + mine[key] for key in TOTALS}

    def summary(self, world_size: int = 1) -> dict:
        """Samples/s and tokens/s over the measured batches of the whole run (all segments;
        times world size for DDP)."""
        totals = self.totals()
        if totals["seconds"] <= 0:
            return {"train_samples_per_s": None, "train_tokens_per_s": None, "measured_steps": 0}
        return {
            "train_samples_per_s": world_size * totals["samples"] / totals["seconds"],
            "train_tokens_per_s": world_size * totals["tokens"] / totals["seconds"],
            "measured_steps": totals["steps"],
        }


_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def reset_peak_memory() -> None:
    """Start a run's peak-memory window: the CUDA allocator's peak and, on Linux, the process's
    resident high-water mark (VmHWM, reset by writing 5 to /proc/self/clear_refs).

    A process that runs several jobs (a joblib sweep worker, a notebook) then reports each run's
    own peak, not the largest of all the runs it has hosted.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:  # not Linux, or not allowed: peak_memory falls back to ru_maxrss
        pass


def _resident_high_water_mark() -> int | None:
    """VmHWM of this process in bytes (Linux), or None."""
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_memory(device: torch.device) -> dict:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU since the last
    :func:`reset_peak_memory` (``cpu_peak_rss``; ``cpu_max_rss``, the peak over the process's
    whole life, where the high-water mark cannot be read)."""
    if device.type == "cuda":
        return {"peak_bytes": torch.cuda.max_memory_allocated(device), "kind": "cuda_max_allocated"}
    hwm = _resident_high_water_mark()
    if hwm is not None:
        return {"peak_bytes": hwm, "kind": "cpu_peak_rss"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return {"peak_bytes": rss * scale, "kind": "cpu_max_rss"}
