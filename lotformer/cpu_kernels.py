"""Fused CPU kernel for the Sinkhorn scaling updates (numba), used by :mod:`lotformer.sinkhorn`.

On a fixed kernel K (P problems of n x m), a row update is ``u = a / (K v)`` and a column update
``v = b / (K^T u)``. With BLAS each is one pass over K, so an iteration reads every kernel twice.
Here a row update followed by a column update is ONE pass: row i's dot product gives ``u_i``,
which is added into the column sums ``K^T u`` while the row is still in cache; the problems run
in parallel, one per thread, each kernel staying in its core's cache.

Drift bound: a kernel is accurate while the scalings stay near where it was built (its floored
entries stay negligible). The side the kernel was stabilised for (v for a row-stabilised kernel,
u for a column-stabilised one) starts at 1 on live lines; the other side is set by the block's
first update. Every later update is checked against ``[ref e^-drift, ref e^drift]``; the first
update that leaves that range is NOT kept: the block stops before it, and the caller rebuilds a
kernel stabilised for that update's side, on which it is exact. Problems stop independently; the
state after ``min(done)`` updates is returned for all (every update's u or v goes to a history,
so a problem that went further is rolled back to that point). numba compiles on first use
(about a second) and caches the machine code in ``__pycache__`` beside this file.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from numba import njit, prange

ROW, COL = 0, 1
SEGMENT = 16  # half-updates per kernel call: bounds the history kept for the roll-back
_ran_in_pid: int | None = None  # the process that started numba's thread pool


def usable_in_this_process() -> bool:
    """False in a child forked after the kernel ran: numba refuses to run parallel code there
    (GNU OpenMP is not fork-safe), so the caller must take another path."""
    return _ran_in_pid is None or _ran_in_pid == os.getpid()


@njit(cache=True)
def _check(x, lo, hi, set_ref, up):  # pragma: no cover - compiled by numba
    """With set_ref: bounds [x / up, x * up]; else whether lo <= x <= hi everywhere."""
    if set_ref:
        for i in range(len(x)):
            lo[i] = x[i] / up
            hi[i] = x[i] * up
        return True
    for i in range(len(x)):
        if x[i] < lo[i] or x[i] > hi[i]:
            return False
    return True


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _segment(K, a, b, u_hist, v_hist, kinds, lo_u, hi_u, lo_v, hi_v, set_ref, up, tiny,
             done):  # pragma: no cover - compiled by numba
    """Run ``kinds`` on each problem from u_hist[:, 0], v_hist[:, 0]; the state after each row
    (column) update goes to the next u_hist (v_hist) slot. done[p] = updates kept for problem p.
    With ``set_ref`` the first update sets the bounds of its side (the block's first update);
    ``up`` = e^drift, ``tiny`` = the smallest normal number (denominator clamp)."""
    P, n, m = K.shape
    L = len(kinds)
    zero = K.dtype.type(0)
    for p in prange(P):
        ap, bp = a[p], b[p]
        # a problem without mass on one side has a zero plan whatever the scalings do: its
        # updates are kept unchecked, so it never forces kernel rebuilds on the whole batch
        check = ap.sum() > zero and bp.sum() > zero
        cs = np.empty(m, dtype=K.dtype)
        r = 0  # row updates kept
        c = 0  # column updates kept
        t = 0
        while t < L:
            first = set_ref and t == 0
            if kinds[t] == ROW:
                fuse = t + 1 < L and kinds[t + 1] == COL
                vp, u_new = v_hist[p, c], u_hist[p, r + 1]
                cs[:] = zero
                for i in range(n):
                    s = zero
                    for j in range(m):
                        s += K[p, i, j] * vp[j]
                    ui = ap[i] / max(s, tiny)
                    u_new[i] = ui
                    if fuse:
                        for j in range(m):
                            cs[j] += ui * K[p, i, j]
                if check and not _check(u_new, lo_u[p], hi_u[p], first, up):
                    break
                r += 1
                t += 1
                if not fuse:
                    continue
            else:
                u_cur = u_hist[p, r]
                cs[:] = zero
                for i in range(n):
                    ui = u_cur[i]
                    for j in range(m):
                        cs[j] += ui * K[p, i, j]
            # the column update from cs
            v_new = v_hist[p, c + 1]
            for j in range(m):
                v_new[j] = bp[j] / max(cs[j], tiny)
            if check and not _check(v_new, lo_v[p], hi_v[p], set_ref and t == 0, up):
                break
            c += 1
            t += 1
        done[p] = t


@torch.compiler.disable  # numba's dispatcher cannot be traced: torch.compile runs this eagerly
def scaling_updates(K: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                    v: torch.Tensor, kinds: tuple[str, ...], drift: float) -> int:
    """Run the half-updates ``kinds`` ("row" / "col") on the kernel K while they stay within the
    drift bound; returns how many were kept, with u and v (in place) the state after them.

    K (P, n, m), a and u (P, n, 1), b and v (P, 1, m): contiguous CPU tensors of one float dtype.
    The starting u (block opening with a column update) or v (opening with a row update) must be
    filled in: 1 on live lines, 0 on zero-mass ones.
    """
    global _ran_in_pid
    _ran_in_pid = os.getpid()
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return _run_segments(K, a, b, u, v, kinds, drift)
    finally:
        # numba's OpenMP layer, started by the first parallel call in a process, resets the
        # OpenMP thread count that torch reads: give torch back the count the caller had.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _run_segments(K: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                  v: torch.Tensor, kinds: tuple[str, ...], drift: float) -> int:
    """scaling_updates' work, in segments of SEGMENT half-updates."""
    Kn = K.numpy()
    P, n, m = Kn.shape
    an, bn = a.numpy().reshape(P, n), b.numpy().reshape(P, m)
    un, vn = u.numpy().reshape(P, n), v.numpy().reshape(P, m)
    codes = np.array([ROW if k == "row" else COL for k in kinds], dtype=np.int8)
    up = Kn.dtype.type(np.exp(drift))
    tiny = Kn.dtype.type(torch.finfo(K.dtype).tiny)
    # bounds of the side given at the start (1 on live lines -> [e^-drift, e^drift], 0 -> [0, 0])
    lo_u, hi_u = un / up, un * up
    lo_v, hi_v = vn / up, vn * up
    kept = 0
    while kept < len(codes):
        seg = codes[kept:kept + SEGMENT]
        rows = int((seg == ROW).sum())
        u_hist = np.empty((P, rows + 1, n), dtype=Kn.dtype)
        v_hist = np.empty((P, len(seg) - rows + 1, m), dtype=Kn.dtype)
        u_hist[:, 0], v_hist[:, 0] = un, vn
        done = np.empty(P, dtype=np.int64)
        _segment(Kn, an, bn, u_hist, v_hist, seg, lo_u, hi_u, lo_v, hi_v, kept == 0, up, tiny,
                 done)
        d = int(done.min())
        r = int((seg[:d] == ROW).sum())
        un[:] = u_hist[:, r]
        vn[:] = v_hist[:, d - r]
        kept += d
        if d < len(seg):
            break
    return kept
