#!/usr/bin/env python
"""Benchmark attention backends: wall time and peak memory versus sequence length n.

Every registered backend (or `--backends a,b,c`) is timed on random (B, H, n, D) float32
inputs for each n in `--lengths`, in two modes:

- `fwd`:     forward pass under `torch.no_grad()` with the module in eval mode (inference);
- `fwd+bwd`: forward pass plus `out.backward(g)` for a fixed random `g`, module in train
             mode, gradients of q, k, v and of the backend's parameters (set to None before
             every call).

Each point (backend, n, mode) runs in a fresh process (multiprocessing "forkserver": forked
from a server that has imported torch and the backends but never run a tensor op; "spawn"
where forkserver is missing), so one point's peak memory, allocator state or crash cannot
leak into another. In the worker: build the module and the inputs, `--warmup` untimed calls, then `--repeats` timed calls (median and min
reported, CUDA synchronised around each call).

Peak memory (`peak_mb`) is the peak *additional* memory during the timed calls, over what the
process held just before them (inputs, parameters, interpreter, torch):

- CUDA: `torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()` after
  `torch.cuda.reset_peak_memory_stats()` (tensor memory through the caching allocator;
  excludes the CUDA context and allocator cache slack).
- CPU (Linux), method `vmhwm`: `gc.collect()` and glibc `malloc_trim(0)` (so freed heap pages
  from the warm-up are given back and re-counted when touched again), then write "5" to
  `/proc/self/clear_refs`, which resets the kernel's peak-RSS mark VmHWM to the current
  VmRSS; baseline = VmRSS; after the timed calls, peak = VmHWM - baseline. This is resident
  memory of the whole process (tensors, autograd buffers, allocator and thread-pool
  overheads), at page granularity.
- CPU fallback, method `ru_maxrss`, where clear_refs is not writable: peak =
  `getrusage().ru_maxrss` after the timed calls - VmRSS before them. ru_maxrss is a lifetime
  peak, so this includes the warm-up calls (the same computation) and would over-report if
  start-up had peaked higher. `tracemalloc` is not used: it does not see torch's allocations.

Gaps: an allocation failure (`torch.OutOfMemoryError`, `MemoryError`, the CPU allocator's
"can't allocate memory"), a worker killed by a signal (SIGKILL: most likely the kernel OOM
killer), a per-point `--timeout` (counted from the end of the worker's set-up, so it excludes
interpreter and torch start-up) or any other exception becomes a row with a status other than
"ok"; the run goes on. After an oom / timeout at some n, larger n of the same backend and mode
(and fwd+bwd at the same n after a fwd gap) are recorded as "skipped" (`--no-skip-after-gap`
runs them anyway). The exit code is 0 unless a point failed with status "error" or "crashed"
(a bug rather than a resource limit); the CSV and plots are written in every case.

`--max-memory-gb` (default "auto": 90% of MemAvailable at start on CPU, no limit on CUDA;
"none" disables) caps what a point may allocate beyond its set-up: CPU via RLIMIT_DATA (the
process's private writable virtual memory, so an over-large allocation fails cleanly with
"can't allocate memory" instead of inviting the OOM killer), CUDA via
`torch.cuda.set_per_process_memory_fraction`.

Outputs, in `--out` (default results/): `bench_<preset>_<device tag>.csv` (one row per backend
x n x mode, rewritten atomically after every point) and `..._time.png`, `..._memory.png`
(log-log, one colour per backend, fwd+bwd solid, fwd dashed).

`--summary CSV` prints Markdown tables from a benchmark CSV: time and memory ratios of a
reference backend (default lot) to others at each n, and log-log slopes of time and memory
versus n for each backend.

Test hook: the environment variable BENCH_ATTENTION_INJECT="backend:n:mode:kind[,...]" (each
field but kind may be `*`; kind is oom | error | kill | hang) makes matching workers raise
torch.OutOfMemoryError, raise RuntimeError, SIGKILL themselves or sleep, right after set-up.

Examples:
    python scripts/bench_attention.py --preset paper-latency
    python scripts/bench_attention.py --preset lra-text --backends lot,softmax,linear
    python scripts/bench_attention.py --preset scaling --option lot.n_iters=50
    python scripts/bench_attention.py --summary results/bench_paper-latency_cpu-xeon.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import importlib
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INJECT_ENV = "BENCH_ATTENTION_INJECT"
MODES = ("fwd", "fwd+bwd")
GAP_STATUSES = ("oom", "oom-killed", "timeout")  # resource limits: larger n is skipped after one
BUG_STATUSES = ("error", "crashed")  # make the exit code 1
SIZE_ARGS = ("num_heads", "head_dim", "max_len")  # set by the benchmark, not by --option


def _pow2(lo: int, hi: int) -> list[int]:
    return [2 ** e for e in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]


@dataclass(frozen=True)
class Preset:
    batch: int
    heads: int
    head_dim: int
    lengths: list[int]
    options: dict = field(default_factory=dict)  # backend -> {option: value}
    note: str = ""


# LRA presets follow REFERENCE.md §1-2 and configs/task/*.yaml, configs/model/lra_small.yaml,
# configs/task_attn/*_lot.yaml (the training settings): 2 heads x 32, each task's batch size
# and maximum length. Retrieval's shared encoder runs both documents of a pair as one batch,
# so its attention sees 2 x 16 = 32 sequences.
PRESETS: dict[str, Preset] = {
    "paper-latency": Preset(1, 16, 64, _pow2(512, 16384), {"lot": {"rank": 32, "n_iters": 5}},
                            "LOTFormer latency benchmark: B=1, H=16, D=64, r=32, 5 iterations"),
    "lra-listops": Preset(32, 2, 32, [2000], {"lot": {"rank": 4, "eps": 0.1, "n_iters": 25}},
                          "LRA ListOps training shape"),
    "lra-text": Preset(32, 2, 32, [4000], {"lot": {"rank": 32, "eps": 0.1, "n_iters": 25}},
                       "LRA Text training shape"),
    "lra-retrieval": Preset(32, 2, 32, [4000], {"lot": {"rank": 64, "eps": 0.1, "n_iters": 25}},
                            "LRA Retrieval training shape (16 pairs = 32 documents)"),
    "lra-text-retrieval": Preset(16, 2, 32, [4000], {"lot": {"rank": 64, "eps": 0.1, "n_iters": 25}},
                                 "the LOT issue's Text/Retrieval target setting: B=16, n=4000, r=64"),
    "lra-image": Preset(64, 2, 32, [1024], {"lot": {"rank": 8, "eps": 25.0, "n_iters": 3}},
                        "LRA Image training shape"),
    "lra-pathfinder": Preset(128, 2, 32, [1024], {"lot": {"rank": 64, "eps": 0.1, "n_iters": 25}},
                             "LRA Pathfinder training shape"),
    "scaling": Preset(1, 1, 32, _pow2(1024, 65536), {"lot": {"rank": 32}},
                      "one head, long sequences: is time / memory linear in n?"),
}
# LOT options copied into their own CSV columns (all options are also in the `options` JSON).
LOT_COLUMNS = ("rank", "eps", "n_iters", "grad_mode")

COLUMNS = [
    "preset", "backend", "mode", "n", "batch", "heads", "head_dim", "dtype", "status",
    "median_ms", "min_ms", "times_ms", "repeats", "warmup", "peak_mb", "baseline_mb",
    "mem_method", "options", *(f"lot_{c}" for c in LOT_COLUMNS), "device", "device_tag",
    "threads", "torch", "python", "timeout_s", "max_memory_gb", "timestamp", "error",
]


class BenchError(ValueError):
    """A usage error with a message that says what to do."""


# --------------------------------------------------------------------------------------------
# Backends and options


def import_backends() -> list[str]:
    """Import the attention package (every backend registers itself) and return the names.

    `lotformer.lot` (LOT attention) lives outside the attention package; it is imported too
    when present, so LOT is benchmarked whether or not the package imports it yet.
    """
    from lotformer.attention import available_attentions

    try:
        present = importlib.util.find_spec("lotformer.lot") is not None
    except (ImportError, ValueError):
        present = False
    if present:
        try:
            importlib.import_module("lotformer.lot")
        except Exception as exc:  # a half-written module must not stop the other backends
            print(f"warning: could not import lotformer.lot ({type(exc).__name__}: {exc}); "
                  "benchmarking without it", file=sys.stderr)
    return available_attentions()


def backend_options(name: str) -> dict[str, object]:
    """The backend's own constructor options and their defaults (sizes excluded)."""
    from lotformer.attention import attention_class

    params = inspect.signature(attention_class(name).__init__).parameters
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in params.values()
        if p.name != "self" and p.name not in SIZE_ARGS
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def parse_value(text: str) -> object:
    """'5' -> 5, '0.1' -> 0.1, 'true' -> True, 'none' -> None, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_option(text: str) -> tuple[str, str, object]:
    """'lot.n_iters=50' -> ('lot', 'n_iters', 50)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_\-]+)\.([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", text)
    if not match or not match.group(3).strip():
        raise BenchError(f"bad --option {text!r}: expected BACKEND.KEY=VALUE, "
                         "e.g. --option lot.n_iters=50")
    return match.group(1), match.group(2), parse_value(match.group(3).strip())


def resolve_backends(requested: str | None, valid: list[str]) -> list[str]:
    if not requested:
        return list(valid)
    names = [b.strip() for b in requested.split(",") if b.strip()]
    unknown = [b for b in names if b not in valid]
    if unknown:
        raise BenchError(f"unknown attention backend(s) {', '.join(unknown)}; "
                         f"valid names: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def resolve_options(backends: list[str], preset: Preset, overrides: list[str],
                    valid: list[str]) -> dict[str, dict]:
    """Per-backend options: preset values, then --option overrides, checked against the
    backend's constructor; returns the full effective options (defaults filled in)."""
    chosen: dict[str, dict] = {b: dict(preset.options.get(b, {})) for b in backends}
    for text in overrides:
        name, key, value = parse_option(text)
        if name not in valid:
            raise BenchError(f"--option {text!r}: unknown attention backend {name!r}; "
                             f"valid names: {', '.join(valid)}")
        if key in SIZE_ARGS:
            raise BenchError(f"--option {text!r}: {key} is set by the benchmark "
                             "(use --heads / --head-dim; max_len is always n)")
        if name not in chosen:
            print(f"warning: --option {text!r} is for {name}, which is not benchmarked",
                  file=sys.stderr)
            continue
        chosen[name][key] = value
    effective = {}
    for name in backends:
        defaults = backend_options(name)
        unknown = sorted(set(chosen[name]) - set(defaults))
        if unknown:
            raise BenchError(f"attention backend {name!r} has no option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(defaults) or '(none)'}")
        effective[name] = {**defaults, **chosen[name]}
    return effective


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
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------
# Worker: one point in its own process


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


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


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text)


def run_point(spec: dict, ready_path: str | None = None) -> dict:
    """Measure one (backend, n, mode) point in this process; returns the result fields."""
    import resource

    import torch

    import_backends()
    from lotformer.attention import build_attention

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    cuda = device.type == "cuda"
    train = spec["mode"] == "fwd+bwd"
    B, H, n, D = spec["batch"], spec["heads"], spec["n"], spec["head_dim"]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    result: dict = {"status": "ok", "error": ""}
    try:
        torch.manual_seed(0)
        attn = build_attention(spec["backend"], num_heads=H, head_dim=D, max_len=n,
                               **spec["options"]).to(device)
        attn.train(train)
        q, k, v = (torch.randn(B, H, n, D, device=device, dtype=dtype, requires_grad=train)
                   for _ in range(3))
        grad_out = torch.randn(B, H, n, D, device=device, dtype=dtype) if train else None
        torch.ones(64, 64, device=device) @ torch.ones(64, 64, device=device)  # start thread pools
        sync()

        limit_gb = spec.get("max_memory_gb")
        if limit_gb:
            if cuda:
                total = torch.cuda.get_device_properties(device).total_memory
                held = torch.cuda.memory_allocated(device)
                torch.cuda.set_per_process_memory_fraction(
                    min(1.0, (held + limit_gb * 2 ** 30) / total), device)
            else:
                data_kb = _status_kb("VmData") or 0
                resource.setrlimit(resource.RLIMIT_DATA,
                                   (int(data_kb * 1024 + limit_gb * 2 ** 30),
                                    resource.getrlimit(resource.RLIMIT_DATA)[1]))

        def call() -> None:
            if train:
                q.grad = k.grad = v.grad = None
                attn.zero_grad(set_to_none=True)
                out = attn(q, k, v)
                out.backward(grad_out)
            else:
                with torch.no_grad():
                    attn(q, k, v)
            sync()

        if ready_path:  # the parent's per-point timeout starts now
            Path(ready_path).touch()
        kind = _injected(spec)
        if kind == "oom":
            raise torch.OutOfMemoryError(f"injected out-of-memory ({INJECT_ENV})")
        if kind == "error":
            raise RuntimeError(f"injected error ({INJECT_ENV})")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "hang":
            time.sleep(10 ** 6)

        for _ in range(spec["warmup"]):
            call()

        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
            method = "cuda_max_allocated"
        else:
            _malloc_trim()
            method = "vmhwm" if _reset_peak_rss() else "ru_maxrss"
            baseline = (_status_kb("VmRSS") or 0) * 1024

        times = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)

        if cuda:
            peak = torch.cuda.max_memory_allocated(device)
        elif method == "vmhwm":
            peak = (_status_kb("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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


def _process_context():
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


def measure_in_subprocess(spec: dict, timeout_s: float | None, startup_s: float = 300.0) -> dict:
    """Run one point in a fresh process; turn kills, crashes and timeouts into statuses.

    The timeout counts from the worker's "ready" mark (module and inputs built), so it
    excludes start-up; set-up itself may take up to max(startup_s, timeout_s).
    """
    with tempfile.TemporaryDirectory(prefix="bench_attn_") as tmp:
        result_path, ready_path = os.path.join(tmp, "result.json"), os.path.join(tmp, "ready")
        proc = _process_context().Process(target=_worker_entry, args=(spec, result_path, ready_path),
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
        code = proc.exitcode
        if code == -signal.SIGKILL:
            return {"status": "oom-killed",
                    "error": "worker killed by SIGKILL (most likely the kernel OOM killer)"}
        if code is not None and code < 0:
            return {"status": "crashed", "error": f"worker died of signal {-code}"}
        return {"status": "crashed", "error": f"worker exited with code {code} and no result"}


def write_csv_atomic(rows: list[dict], path: Path) -> None:
    """Write the rows (columns COLUMNS, missing values empty) via a temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_results(df, path_prefix: Path, title: str) -> list[Path]:
    """`<prefix>_time.png` and `<prefix>_memory.png`: log-log vs n, one colour per backend,
    fwd+bwd solid, fwd dashed; gap points are left out (the line breaks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    backends = list(dict.fromkeys(df["backend"]))
    colors = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    for metric, label, suffix in (("median_ms", "median time per call (ms)", "time"),
                                  ("peak_mb", "peak extra memory (MiB)", "memory")):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        drawn = 0
        for backend in backends:
            for mode, style, marker in (("fwd+bwd", "-", "o"), ("fwd", "--", "s")):
                part = df[(df["backend"] == backend) & (df["mode"] == mode)].sort_values("n")
                if part.empty:
                    continue
                y = part[metric].astype(float).where((part["status"] == "ok") & (part[metric] > 0))
                if y.notna().sum() == 0:
                    continue
                ax.plot(part["n"].astype(float), y.to_numpy(dtype=float), linestyle=style,
                        marker=marker, color=colors[backend], label=f"{backend} {mode}")
                drawn += 1
        if drawn:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend(fontsize=8, ncol=2)
        else:
            ax.text(0.5, 0.5, "no successful points", ha="center", va="center",
                    transform=ax.transAxes)
        gaps = df[df["status"] != "ok"]
        if len(gaps):
            ax.text(0.01, 0.01, f"{len(gaps)} point(s) missing (oom / timeout / error / skipped): see the CSV",
                    fontsize=7, transform=ax.transAxes)
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        out = Path(f"{path_prefix}_{suffix}.png")
        fig.savefig(out, dpi=120)
        plt.close(fig)
        paths.append(out)
    return paths


# --------------------------------------------------------------------------------------------
# Summary: ratios and slopes (pure functions on a results DataFrame)


def loglog_slope(n1: float, y1: float, n2: float, y2: float) -> float:
    """Slope of log y versus log n between two points: 1 = linear, 2 = quadratic in n."""
    if not (n1 > 0 and n2 > 0 and y1 > 0 and y2 > 0) or n1 == n2:
        return float("nan")
    return math.log(y2 / y1) / math.log(n2 / n1)


def _ok(df):
    return df[df["status"] == "ok"]


def ratio_table(df, reference: str = "lot", others: list[str] | None = None,
                metric: str = "median_ms"):
    """reference / other of `metric` at each (mode, n): < 1 means the reference is cheaper.

    Returns a DataFrame with columns mode, n, `<reference>` (its own value) and one column
    `<reference>/<other>` per other backend; NaN where either point is missing or a gap.
    """
    import pandas as pd

    ok = _ok(df)
    if others is None:
        others = [b for b in dict.fromkeys(df["backend"]) if b != reference]
    table = (ok.pivot_table(index=["mode", "n"], columns="backend", values=metric, aggfunc="first")
             if len(ok) else pd.DataFrame())
    keys = sorted({(m, int(n)) for m, n in zip(df["mode"], df["n"])},
                  key=lambda k: (MODES.index(k[0]) if k[0] in MODES else 9, k[1]))
    rows = []
    for mode, n in keys:
        ref = table[reference].get((mode, n), float("nan")) if reference in table else float("nan")
        row = {"mode": mode, "n": n, reference: ref}
        for other in others:
            val = table[other].get((mode, n), float("nan")) if other in table else float("nan")
            row[f"{reference}/{other}"] = ref / val if val and val > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["mode", "n", reference, *(f"{reference}/{o}" for o in others)])


def slope_table(df, n1: int | None = None, n2: int | None = None):
    """Log-log slopes of median time and peak memory versus n for each backend and mode.

    Between n1 and n2 (defaults: the smallest and the largest n with an "ok" point for that
    backend and mode); NaN where a point is missing or a value is not positive.
    """
    import pandas as pd

    ok = _ok(df)
    rows = []
    for (backend, mode), part in df.groupby(["backend", "mode"], sort=False):
        good = ok[(ok["backend"] == backend) & (ok["mode"] == mode)].set_index("n")
        lo = n1 if n1 is not None else (int(good.index.min()) if len(good) else int(part["n"].min()))
        hi = n2 if n2 is not None else (int(good.index.max()) if len(good) else int(part["n"].max()))
        row = {"backend": backend, "mode": mode, "n1": lo, "n2": hi}
        for metric, name in (("median_ms", "time_slope"), ("peak_mb", "memory_slope")):
            if lo in good.index and hi in good.index:
                row[name] = loglog_slope(lo, float(good.at[lo, metric]), hi, float(good.at[hi, metric]))
            else:
                row[name] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["backend", "mode", "n1", "n2", "time_slope", "memory_slope"])


def markdown_table(df, floatfmt: str = ".3g") -> str:
    """A GitHub Markdown table; NaN shows as an em dash."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "—" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def summarize(csv_path: Path, reference: str = "lot", compare: list[str] | None = None,
              slope_lengths: tuple[int, int] | None = None) -> str:
    import pandas as pd

    if not csv_path.is_file():
        raise BenchError(f"--summary: no such CSV {csv_path}; run the benchmark first")
    df = pd.read_csv(csv_path)
    first = df.iloc[0] if len(df) else None
    lines = []
    if first is not None:
        lines.append(f"Preset `{first['preset']}`, {first['device']}, {first['threads']} threads, "
                     f"torch {first['torch']}, B={first['batch']} H={first['heads']} "
                     f"D={first['head_dim']}, {first['dtype']}; medians of {first['repeats']} calls.")
        lines.append("")
    present = list(dict.fromkeys(df["backend"]))
    if reference in present:
        others = [b for b in (compare or ["softmax", "sinkhorn", "linear"]) if b in present]
        for metric, what in (("median_ms", "time (ms)"), ("peak_mb", "peak memory (MiB)")):
            table = ratio_table(df, reference, others, metric).rename(
                columns={reference: f"{reference} {what}"})
            lines += [f"**{what}: {reference} ÷ other** (< 1: {reference} is cheaper)", "",
                      markdown_table(table), ""]
    else:
        lines += [f"(no {reference!r} rows in the CSV: ratios left out)", ""]
    n1, n2 = slope_lengths or (None, None)
    lines += ["**log-log slope versus n** (1 = linear, 2 = quadratic)", "",
              markdown_table(slope_table(df, n1, n2), ".2f")]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line


def _lengths(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"--lengths {text!r}: expected comma-separated integers, e.g. 512,1024") from None
    if not values or min(values) < 1:
        raise BenchError(f"--lengths {text!r}: expected positive integers")
    return sorted(set(values))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="presets: " + "; ".join(
                                    f"{k}: B={v.batch} H={v.heads} D={v.head_dim} n={v.lengths} "
                                    f"{v.options or ''}" for k, v in PRESETS.items()))
    p.add_argument("--preset", default="paper-latency", choices=sorted(PRESETS))
    p.add_argument("--backends", help="comma-separated names (default: every registered backend)")
    p.add_argument("--lengths", help="comma-separated n (default: the preset's)")
    p.add_argument("--modes", default="fwd,fwd+bwd", help="fwd, fwd+bwd or both (default)")
    p.add_argument("--batch", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--option", action="append", default=[], metavar="BACKEND.KEY=VALUE",
                   help="backend option override, repeatable, e.g. lot.n_iters=50")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per point (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2; with 0, peak memory also "
                   "counts one-off initialisation such as thread pools)")
    p.add_argument("--threads", type=int, help="torch threads (default: all usable cores)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per point after set-up; 0 = none (default 600)")
    p.add_argument("--max-memory-gb", default="auto",
                   help="per-point allocation cap beyond set-up: a number, auto or none")
    p.add_argument("--no-skip-after-gap", action="store_true",
                   help="still run larger n after an oom / timeout")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results")
    p.add_argument("--tag", help="device tag in the file names (default: from the device name)")
    p.add_argument("--summary", type=Path, metavar="CSV", help="print Markdown ratio/slope tables")
    p.add_argument("--reference", default="lot", help="--summary: backend in the numerator")
    p.add_argument("--compare", default="softmax,sinkhorn,linear", help="--summary: denominators")
    p.add_argument("--slope-lengths", help="--summary: n1,n2 for the slopes")
    return p


def run_benchmark(args: argparse.Namespace) -> int:
    context = _process_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()  # the server imports torch while this process does too
    import torch

    preset = PRESETS[args.preset]
    valid = import_backends()
    backends = resolve_backends(args.backends, valid)
    options = resolve_options(backends, preset, args.option, valid)
    lengths = _lengths(args.lengths) if args.lengths else list(preset.lengths)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise BenchError(f"--modes {args.modes!r}: choose from {', '.join(MODES)}")
    batch = args.batch or preset.batch
    heads = args.heads or preset.heads
    head_dim = args.head_dim or preset.head_dim
    if min(batch, heads, head_dim, args.repeats) < 1 or args.warmup < 0:
        raise BenchError("--batch, --heads, --head-dim and --repeats must be >= 1, --warmup >= 0")

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available in this torch build")
        device_name, kind = torch.cuda.get_device_name(torch.device(device)), "cuda"
    elif device == "cpu":
        device_name, kind = cpu_model(), "cpu"
    else:
        raise BenchError(f"--device {device!r}: use auto, cpu, cuda or cuda:<index>")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    threads = args.threads or cores
    limit = str(args.max_memory_gb).lower()
    if limit in ("none", "0", "off"):
        max_gb = None
    elif limit == "auto":
        avail = mem_available_gb() if kind == "cpu" else None
        max_gb = round(0.9 * avail, 2) if avail else None
    else:
        try:
            max_gb = float(limit)
        except ValueError:
            raise BenchError(f"--max-memory-gb {args.max_memory_gb!r}: a number, auto or none") from None
    tag = args.tag or device_tag(device_name, kind)
    prefix = args.out / f"bench_{args.preset}_{tag}"
    csv_path = prefix.with_name(prefix.name + ".csv")
    timeout = args.timeout or None

    common = {
        "preset": args.preset, "batch": batch, "heads": heads, "head_dim": head_dim,
        "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup,
        "device": device_name, "device_tag": tag, "threads": threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "timeout_s": timeout, "max_memory_gb": max_gb,
    }
    print(f"{args.preset}: B={batch} H={heads} D={head_dim} n={lengths} modes={modes} on "
          f"{device_name} ({threads} threads), backends {', '.join(backends)} -> {csv_path}",
          flush=True)
    rows: list[dict] = []
    for backend in backends:
        opts = options[backend]
        gap_from: dict[str, int] = {}  # mode -> smallest n with an oom / timeout
        for n in lengths:
            for mode in modes:
                row = {**common, "backend": backend, "mode": mode, "n": n,
                       "options": json.dumps(opts, sort_keys=True),
                       "timestamp": _dt.datetime.now().isoformat(timespec="seconds")}
                if backend == "lot":
                    row.update({f"lot_{c}": opts.get(c) for c in LOT_COLUMNS})
                earlier = [m for m in (mode, "fwd") if m in gap_from and gap_from[m] <= n]
                if earlier and not args.no_skip_after_gap:
                    m = earlier[0]
                    row.update(status="skipped", error=f"after a gap at n={gap_from[m]} ({m})")
                else:
                    spec = {"backend": backend, "n": n, "mode": mode, "batch": batch,
                            "heads": heads, "head_dim": head_dim, "dtype": args.dtype,
                            "device": device, "threads": threads, "options": opts,
                            "warmup": args.warmup, "repeats": args.repeats,
                            "max_memory_gb": max_gb}
                    row.update(measure_in_subprocess(spec, timeout))
                    if row["status"] in GAP_STATUSES:
                        gap_from.setdefault(mode, n)
                rows.append(row)
                shown = (f"{row['median_ms']:10.3f} ms {row['peak_mb']:10.2f} MiB"
                         if row["status"] == "ok" else f"{row['status']}: {row.get('error', '')}")
                print(f"  {backend:>10} n={n:<6} {mode:<7} {shown}", flush=True)
                write_csv_atomic(rows, csv_path)

    import pandas as pd

    df = pd.read_csv(csv_path)
    title = (f"{args.preset}: B={batch} H={heads} D={head_dim} {args.dtype}\n"
             f"{device_name}, {threads} threads, torch {torch.__version__}")
    for path in plot_results(df, prefix, title):
        print(f"wrote {path}")
    print(f"wrote {csv_path}")
    bugs = [r for r in rows if r["status"] in BUG_STATUSES]
    if bugs:
        print(f"{len(bugs)} point(s) failed with an error (see the error column)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.summary:
            slope = None
            if args.slope_lengths:
                values = _lengths(args.slope_lengths)
                if len(values) != 2:
                    raise BenchError("--slope-lengths: expected two lengths, e.g. 1024,8192")
                slope = (values[0], values[1])
            compare = [b.strip() for b in args.compare.split(",") if b.strip()]
            print(summarize(args.summary, args.reference, compare, slope))
            return 0
        return run_benchmark(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
