"""Device and memory probes shared by the benchmarks: what the device is, how many threads,
how much memory a measurement may take, and the peak-memory window around timed calls.

Peak memory over a window (:func:`memory_baseline` starts it, :func:`memory_peak` ends it):

- CUDA, method ``cuda_max_allocated``: ``torch.cuda.reset_peak_memory_stats()`` at the start,
  ``torch.cuda.max_memory_allocated()`` at the end (tensor memory through the caching allocator).
- CPU (Linux), method ``vmhwm``: ``gc.collect()`` and glibc ``malloc_trim(0)``, then "5" written
  to ``/proc/self/clear_refs`` resets the peak-RSS mark VmHWM to the current VmRSS (the
  baseline); the peak is VmHWM at the end (resident memory of the whole process, in pages).
- CPU fallback, method ``ru_maxrss`` (clear_refs not writable): ``getrusage().ru_maxrss``, a
  lifetime peak.
"""

from __future__ import annotations

import gc
import os
import platform
import re
from pathlib import Path

from lra.bench.presets import BenchError

# --------------------------------------------------------------------------------------------
# Device description


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_tag(device_name: str, kind: str) -> str:
    """Short file-name tag: 'cpu-intel-xeon-gold-6338', 'cuda-h100-80gb-hbm3'."""
    name = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\bnvidia\b|\bwith\b.*$", " ",
                  device_name, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return f"{kind}-{slug}" if slug else kind


def resolve_device(requested: str, torch) -> tuple[str, str, str]:
    """'auto' | 'cpu' | 'cuda[:i]' -> (device, its name, kind 'cpu' / 'cuda')."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available in this torch build")
        return device, torch.cuda.get_device_name(torch.device(device)), "cuda"
    if device == "cpu":
        return device, cpu_model(), "cpu"
    raise BenchError(f"--device {device!r}: use auto, cpu, cuda or cuda:<index>")


def default_threads(requested: int | None) -> int:
    """The requested torch thread count, or every core this process may run on."""
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(torch, threads: int) -> None:
    """Use ``threads`` threads in torch and in numba's parallel kernels (LOT on CPU); more
    threads than free cores make both spin against each other. numba is set first: starting
    its OpenMP layer resets the OpenMP thread count that torch reads."""
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except ImportError:
        pass
    torch.set_num_threads(threads)


def mem_available_gb() -> float | None:
    value = _proc_kb("/proc/meminfo", "MemAvailable")
    return None if value is None else value / 2 ** 20


def memory_cap(text: str, kind: str) -> float | None:
    """--max-memory-gb: a number of GiB, 'auto' (90% of MemAvailable on CPU) or 'none'."""
    limit = str(text).lower()
    if limit in ("none", "0", "off"):
        return None
    if limit == "auto":
        avail = mem_available_gb() if kind == "cpu" else None
        return round(0.9 * avail, 2) if avail else None
    try:
        return float(limit)
    except ValueError:
        raise BenchError(f"--max-memory-gb {text!r}: a number, auto or none") from None


def _proc_kb(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def status_kb(key: str) -> int | None:
    """A field of /proc/self/status in kB (VmRSS, VmHWM, VmData), or None."""
    return _proc_kb("/proc/self/status", key)


# --------------------------------------------------------------------------------------------
# Memory probes


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current VmRSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return status_kb("VmHWM") is not None
    except OSError:
        return False


def cap_memory(torch, device, limit_gb: float | None) -> None:
    """Cap what a measurement may allocate beyond what is held now: CUDA via the per-process
    memory fraction, CPU via RLIMIT_DATA (an over-large allocation then fails cleanly)."""
    if not limit_gb:
        return
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        held = torch.cuda.memory_allocated(device)
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, (held + limit_gb * 2 ** 30) / total), device)
    else:
        import resource

        data_kb = status_kb("VmData") or 0
        resource.setrlimit(resource.RLIMIT_DATA, (int(data_kb * 1024 + limit_gb * 2 ** 30),
                                                  resource.getrlimit(resource.RLIMIT_DATA)[1]))


def memory_baseline(torch, device) -> tuple[str, int]:
    """Start the peak-memory window: (method, baseline bytes)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated", torch.cuda.memory_allocated(device)
    _malloc_trim()
    method = "vmhwm" if _reset_peak_rss() else "ru_maxrss"
    return method, (status_kb("VmRSS") or 0) * 1024


def memory_peak(torch, device, method: str) -> int:
    """The peak in bytes since :func:`memory_baseline` (lifetime peak for ru_maxrss)."""
    if method == "cuda_max_allocated":
        return torch.cuda.max_memory_allocated(device)
    if method == "vmhwm":
        return (status_kb("VmHWM") or 0) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronizer(torch, device):
    """A no-argument function that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def is_oom(exc: BaseException) -> bool:
    """Whether an exception means out of memory (CUDA, CPU allocator or RLIMIT_DATA)."""
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text)
