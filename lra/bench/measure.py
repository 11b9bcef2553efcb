"""One benchmark point (backend, n, mode): time and peak memory, in a fresh worker process.

In the worker: build the module and random (B, H, n, D) inputs, ``warmup`` untimed calls, then
``repeats`` timed calls (median and min reported, CUDA synchronised around each call). ``fwd``
is a forward pass under ``torch.no_grad()`` in eval mode; ``fwd+bwd`` adds ``out.backward(g)``
for a fixed random ``g`` in train mode (gradients set to None before every call).

Peak memory (``peak_mb``) is the peak *additional* memory during the timed calls, over what the
process held just before them:

- CUDA: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` after
  ``torch.cuda.reset_peak_memory_stats()`` (tensor memory through the caching allocator).
- CPU (Linux), method ``vmhwm``: ``gc.collect()`` and glibc ``malloc_trim(0)``, then "5" written
  to ``/proc/self/clear_refs`` resets the peak-RSS mark VmHWM to the current VmRSS (the
  baseline); peak = VmHWM after the timed calls - baseline (resident memory of the whole
  process, at page granularity).
- CPU fallback, method ``ru_maxrss`` (clear_refs not writable): ``getrusage().ru_maxrss`` after
  the timed calls - VmRSS before them; a lifetime peak, so it includes the warm-up calls.

Each point runs in its own process (multiprocessing "forkserver": forked from a server that
imported torch and the backends but never ran a tensor op; "spawn" where forkserver is missing),
so no allocator state, thread pool or crash leaks from one point into another. Kills, crashes
and timeouts become statuses (see :func:`measure_in_subprocess`).

Test hook: the environment variable BENCH_ATTENTION_INJECT="backend:n:mode:kind[,...]" (each
field but kind may be ``*``; kind is oom | error | kill | hang) makes matching workers raise
torch.OutOfMemoryError, raise RuntimeError, SIGKILL themselves or sleep, right after set-up.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path

from lra.bench.presets import BenchError

INJECT_ENV = "BENCH_ATTENTION_INJECT"


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


def mem_available_gb() -> float | None:
    value = _proc_kb("/proc/meminfo", "MemAvailable")
    return None if value is None else value / 2 ** 20


def _proc_kb(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _status_kb(key: str) -> int | None:
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
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def _cap_memory(torch, device, limit_gb: float | None) -> None:
    """Cap what the point may allocate beyond its set-up: CUDA via the per-process memory
    fraction, CPU via RLIMIT_DATA (an over-large allocation then fails cleanly)."""
    if not limit_gb:
        return
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        held = torch.cuda.memory_allocated(device)
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, (held + limit_gb * 2 ** 30) / total), device)
    else:
        import resource

        data_kb = _status_kb("VmData") or 0
        resource.setrlimit(resource.RLIMIT_DATA, (int(data_kb * 1024 + limit_gb * 2 ** 30),
                                                  resource.getrlimit(resource.RLIMIT_DATA)[1]))


def _memory_baseline(torch, device) -> tuple[str, int]:
    """Start the peak-memory window: (method, baseline bytes)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated", torch.cuda.memory_allocated(device)
    _malloc_trim()
    method = "vmhwm" if _reset_peak_rss() else "ru_maxrss"
    return method, (_status_kb("VmRSS") or 0) * 1024


def _memory_peak(torch, device, method: str) -> int:
    if method == "cuda_max_allocated":
        return torch.cuda.max_memory_allocated(device)
    if method == "vmhwm":
        return (_status_kb("VmHWM") or 0) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------------------
# The point itself


def _injected(spec: dict) -> str | None:
    for item in filter(None, (s.strip() for s in os.environ.get(INJECT_ENV, "").split(","))):
        parts = item.split(":")
        if len(parts) != 4:
            raise BenchError(f"{INJECT_ENV} item {item!r}: expected backend:n:mode:kind")
        backend, n, mode, kind = parts
        if kind not in ("oom", "error", "kill", "hang"):
            raise BenchError(f"{INJECT_ENV} item {item!r}: kind must be oom, error, kill or hang")
        if (backend in ("*", spec["backend"]) and n in ("*", str(spec["n"]))
                and mode in ("*", spec["mode"])):
            return kind
    return None


def _inject_failure(torch, spec: dict) -> None:
    kind = _injected(spec)
    if kind == "oom":
        raise torch.OutOfMemoryError(f"injected out-of-memory ({INJECT_ENV})")
    if kind == "error":
        raise RuntimeError(f"injected error ({INJECT_ENV})")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        time.sleep(10 ** 6)


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text)


def _make_call(torch, spec: dict, device):
    """Build the module and its inputs; returns (call, bench fields). ``call()`` runs one
    forward (and backward in fwd+bwd mode) and synchronises the device."""
    from lotformer.attention import build_attention

    train = spec["mode"] == "fwd+bwd"
    dtype = getattr(torch, spec["dtype"])
    B, H, n, D = spec["batch"], spec["heads"], spec["n"], spec["head_dim"]
    torch.manual_seed(0)
    attn = build_attention(spec["backend"], num_heads=H, head_dim=D, max_len=n,
                           **spec["options"]).to(device)
    attn.train(train)
    q, k, v = (torch.randn(B, H, n, D, device=device, dtype=dtype, requires_grad=train)
               for _ in range(3))
    grad_out = torch.randn(B, H, n, D, device=device, dtype=dtype) if train else None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def call() -> None:
        if train:
            q.grad = k.grad = v.grad = None
            attn.zero_grad(set_to_none=True)
            attn(q, k, v).backward(grad_out)
        else:
            with torch.no_grad():
                attn(q, k, v)
        sync()

    torch.ones(64, 64, device=device) @ torch.ones(64, 64, device=device)  # start thread pools
    sync()
    return call, attn.bench_fields()


def run_point(spec: dict, ready_path: str | None = None) -> dict:
    """Measure one (backend, n, mode) point in this process; returns the result fields
    (status, error, times, memory and ``fields``, the module's :meth:`bench_fields`)."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    result: dict = {"status": "ok", "error": ""}
    try:
        call, result["fields"] = _make_call(torch, spec, device)
        _cap_memory(torch, device, spec.get("max_memory_gb"))
        if ready_path:  # the parent's per-point timeout starts now
            Path(ready_path).touch()
        _inject_failure(torch, spec)
        for _ in range(spec["warmup"]):
            call()
        method, baseline = _memory_baseline(torch, device)
        times = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        peak = _memory_peak(torch, device, method)
        result.update(
            median_ms=statistics.median(times), min_ms=min(times),
            times_ms=";".join(f"{t:.4f}" for t in times),
            peak_mb=max(peak - baseline, 0) / 2 ** 20, baseline_mb=baseline / 2 ** 20,
            mem_method=method,
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a gap row
        result["status"] = "oom" if _is_oom(exc) else "error"
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return result


# --------------------------------------------------------------------------------------------
# The worker process


def _worker_entry(spec: dict, result_path: str, ready_path: str) -> None:
    """Body of the per-point process: measure, then write the result file atomically."""
    try:
        result = run_point(spec, ready_path)
    except BaseException as exc:  # noqa: BLE001 - set-up failures become an error row too
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
    tmp = result_path + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, result_path)


_CONTEXT = None


def process_context():
    """A multiprocessing context whose processes start with torch already imported.

    "forkserver": a server process imports torch and the backends once (it never runs a
    tensor op or touches CUDA), and every point is a fresh fork of it, so a point costs
    milliseconds of start-up instead of seconds yet shares no allocator, thread-pool or CUDA
    state with any other point. Where forkserver is missing (Windows), "spawn".
    """
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        if "forkserver" in mp.get_all_start_methods():
            _CONTEXT = mp.get_context("forkserver")
            _CONTEXT.set_forkserver_preload(["torch", "lotformer.attention"])
        else:
            _CONTEXT = mp.get_context("spawn")
    return _CONTEXT


def _exit_status(code: int | None) -> dict:
    if code == -signal.SIGKILL:
        return {"status": "oom-killed",
                "error": "worker killed by SIGKILL (most likely the kernel OOM killer)"}
    if code is not None and code < 0:
        return {"status": "crashed", "error": f"worker died of signal {-code}"}
    return {"status": "crashed", "error": f"worker exited with code {code} and no result"}


def measure_in_subprocess(spec: dict, timeout_s: float | None, startup_s: float = 300.0) -> dict:
    """Run one point in a fresh process; turn kills, crashes and timeouts into statuses.

    The timeout counts from the worker's "ready" mark (module and inputs built), so it
    excludes start-up; set-up itself may take up to max(startup_s, timeout_s).
    """
    with tempfile.TemporaryDirectory(prefix="bench_attn_") as tmp:
        result_path, ready_path = os.path.join(tmp, "result.json"), os.path.join(tmp, "ready")
        proc = process_context().Process(
            target=_worker_entry, args=(spec, result_path, ready_path),
            name=f"bench-{spec['backend']}-{spec['n']}-{spec['mode']}")
        proc.start()
        started, ready_at = time.monotonic(), None
        while proc.is_alive():
            now = time.monotonic()
            if ready_at is None and os.path.exists(ready_path):
                ready_at = now
            status = None
            if ready_at is not None and timeout_s and now - ready_at > timeout_s:
                status = f"timeout after {timeout_s:g} s"
            elif ready_at is None and now - started > max(startup_s, timeout_s or 0):
                status = f"timeout: worker set-up took over {max(startup_s, timeout_s or 0):g} s"
            if status:
                proc.kill()
                proc.join()
                return {"status": "timeout", "error": status}
            proc.join(0.005 if now - started < 1 else 0.05)
        proc.join()
        if os.path.exists(result_path):
            return json.loads(Path(result_path).read_text())
        return _exit_status(proc.exitcode)
