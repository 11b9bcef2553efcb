"""One benchmark point (backend, n, mode): time and peak memory, in a fresh worker process.

In the worker: build the module and random (B, H, n, D) inputs, ``warmup`` untimed calls, then
``repeats`` timed calls (median and min reported, CUDA synchronised around each call). ``fwd``
is a forward pass under ``torch.no_grad()`` in eval mode; ``fwd+bwd`` adds ``out.backward(g)``
for a fixed random ``g`` in train mode (gradients set to None before every call).

Peak memory (``peak_mb``) is the peak *additional* memory during the timed calls, over what the
process held just before them (:func:`lra.bench.probes.memory_baseline` / ``memory_peak``).
Each point runs in its own worker process (:mod:`lra.bench.worker`): kills, crashes and
timeouts become statuses.

Test hook: the environment variable BENCH_ATTENTION_INJECT="backend:n:mode:kind[,...]" (each
field but kind may be ``*``; kind is oom | error | kill | hang) makes matching workers raise
torch.OutOfMemoryError, raise RuntimeError, SIGKILL themselves or sleep, right after set-up.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

from lra.bench.presets import BenchError
from lra.bench.probes import (cap_memory, is_oom, memory_baseline, memory_peak, set_threads,
                              synchronizer)
from lra.bench.worker import WorkerHooks, measure_in_subprocess

INJECT_ENV = "BENCH_ATTENTION_INJECT"


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

    sync = synchronizer(torch, device)

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


def run_point(spec: dict, hooks: WorkerHooks | None = None) -> dict:
    """Measure one (backend, n, mode) point in this process; returns the result fields
    (status, error, times, memory and ``fields``, the module's :meth:`bench_fields`)."""
    import torch

    set_threads(torch, spec["threads"])
    device = torch.device(spec["device"])
    result: dict = {"status": "ok", "error": ""}
    try:
        call, result["fields"] = _make_call(torch, spec, device)
        cap_memory(torch, device, spec.get("max_memory_gb"))
        (hooks or WorkerHooks()).ready()  # the parent's per-point timeout starts now
        _inject_failure(torch, spec)
        for _ in range(spec["warmup"]):
            call()
        method, baseline = memory_baseline(torch, device)
        times = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        peak = memory_peak(torch, device, method)
        result.update(
            median_ms=statistics.median(times), min_ms=min(times),
            times_ms=";".join(f"{t:.4f}" for t in times),
            peak_mb=max(peak - baseline, 0) / 2 ** 20, baseline_mb=baseline / 2 ** 20,
            mem_method=method,
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a gap row
        result["status"] = "oom" if is_oom(exc) else "error"
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return result


def measure_point(spec: dict, timeout_s: float | None) -> dict:
    """One point in a fresh worker process (:func:`lra.bench.worker.measure_in_subprocess`)."""
    return measure_in_subprocess(run_point, spec, timeout_s,
                                 name=f"bench-{spec['backend']}-{spec['n']}-{spec['mode']}")
