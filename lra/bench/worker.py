"""Run one measurement in a fresh worker process, with a timeout; kills, crashes and timeouts
become statuses.

Each measurement runs in its own process (multiprocessing "forkserver": forked from a server
that imported torch and the benchmark's modules but never ran a tensor op; "spawn" where
forkserver is missing), so no allocator state, thread pool or crash leaks from one measurement
into another. The worker calls ``entry(spec, hooks)``: ``hooks.ready()`` when set-up is done
(the timeout starts), ``hooks.progress(fields)`` with what is measured so far (kept when the
worker is killed at the timeout), and returns the result fields.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_BASE_PRELOAD = ("torch", "lotformer.attention")


def write_json_atomic(path: str, fields: dict) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(fields))
    os.replace(tmp, path)


@dataclass(frozen=True)
class WorkerHooks:
    """What a measurement tells its parent; without paths (in-process runs) both do nothing."""

    ready_path: str | None = None
    progress_path: str | None = None

    def ready(self) -> None:
        """Set-up is done: the parent's timeout starts now."""
        if self.ready_path:
            Path(self.ready_path).touch()

    def progress(self, fields: dict) -> None:
        """The fields measured so far (the parent keeps them if it kills the worker)."""
        if self.progress_path:
            write_json_atomic(self.progress_path, fields)


def _worker_entry(entry: Callable, spec: dict, result_path: str, hooks: WorkerHooks) -> None:
    """Body of the worker process: measure, then write the result file atomically."""
    import multiprocessing

    # A forkserver child inherits the parent's start method; processes the measurement starts
    # (DataLoader workers) should start as in a plain Python process (fork on Linux).
    multiprocessing.set_start_method(None, force=True)
    try:
        result = entry(spec, hooks)
    except BaseException as exc:  # noqa: BLE001 - set-up failures become an error row too
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
    write_json_atomic(result_path, result)


_CONTEXT = None


def process_context(preload: tuple[str, ...] = ()):
    """A multiprocessing context whose processes start with torch (and ``preload``) imported.

    "forkserver": a server process imports the modules once (it never runs a tensor op or
    touches CUDA), and every measurement is a fresh fork of it, so one costs milliseconds of
    start-up instead of seconds yet shares no allocator, thread-pool or CUDA state with any
    other. Where forkserver is missing (Windows), "spawn". The first call fixes the preload.
    """
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        if "forkserver" in mp.get_all_start_methods():
            _CONTEXT = mp.get_context("forkserver")
            _CONTEXT.set_forkserver_preload(list(dict.fromkeys((*_BASE_PRELOAD, *preload))))
        else:
            _CONTEXT = mp.get_context("spawn")
    return _CONTEXT


def start_server(preload: tuple[str, ...] = ()) -> None:
    """Start the forkserver now, so that it imports torch while this process does too."""
    if process_context(preload).get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _exit_status(code: int | None) -> dict:
    if code == -signal.SIGKILL:
        return {"status": "oom-killed",
                "error": "worker killed by SIGKILL (most likely the kernel OOM killer)"}
    if code is not None and code < 0:
        return {"status": "crashed", "error": f"worker died of signal {-code}"}
    return {"status": "crashed", "error": f"worker exited with code {code} and no result"}


def _timed_out(started: float, ready_at: float | None, now: float, timeout_s: float | None,
               startup_s: float) -> str | None:
    if ready_at is not None and timeout_s and now - ready_at > timeout_s:
        return f"timeout after {timeout_s:g} s"
    if ready_at is None and now - started > max(startup_s, timeout_s or 0):
        return f"timeout: worker set-up took over {max(startup_s, timeout_s or 0):g} s"
    return None


def measure_in_subprocess(entry: Callable, spec: dict, timeout_s: float | None, *, name: str,
                          startup_s: float = 300.0) -> dict:
    """Run ``entry(spec, hooks)`` in a fresh process; turn kills, crashes and timeouts into
    statuses (a timeout keeps the last progress fields).

    The timeout counts from the worker's ready mark, so it excludes start-up; set-up itself
    may take up to max(startup_s, timeout_s). ``entry`` must be a module-level function.
    """
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        result_path = os.path.join(tmp, "result.json")
        hooks = WorkerHooks(os.path.join(tmp, "ready"), os.path.join(tmp, "progress.json"))
        proc = process_context().Process(target=_worker_entry,
                                         args=(entry, spec, result_path, hooks), name=name)
        proc.start()
        started, ready_at = time.monotonic(), None
        while proc.is_alive():
            now = time.monotonic()
            if ready_at is None and os.path.exists(hooks.ready_path):
                ready_at = now
            reason = _timed_out(started, ready_at, now, timeout_s, startup_s)
            if reason:
                proc.kill()
                proc.join()
                partial = (json.loads(Path(hooks.progress_path).read_text())
                           if os.path.exists(hooks.progress_path) else {})
                return {**partial, "status": "timeout", "error": reason}
            proc.join(0.005 if now - started < 1 else 0.05)
        proc.join()
        if os.path.exists(result_path):
            return json.loads(Path(result_path).read_text())
        return _exit_status(proc.exitcode)
