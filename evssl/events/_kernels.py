"""Fused single-pass CPU kernels (numba) behind :mod:`evssl.events.representations`.

Each kernel reads numpy views of the flat :class:`~evssl.events.batch.EventBatch` columns (``x, y`` int16, ``t``
int64, ``p`` int8, ``batch_index`` int64, per-sample ``t_start, t_end`` int64) once and accumulates into a
preallocated, zeroed float32 grid ``(B, C, H, W)`` (flattened), with the torch path's arithmetic operation for
operation, so the two paths agree to float32 rounding of the accumulation order. Work goes in blocks of
:data:`BLOCK` events, in two phases:

1. a branch-free loop (SIMD-vectorised by LLVM) computes every event's flat grid index and value(s) into small
   cache-resident buffers, and checks the coordinates;
2. a scalar loop adds the values into the grid.

The accumulation is random access into megabytes (a 480x640x5 voxel grid is 6 MB, beyond L2), i.e. bound by cache
misses; kept apart from the arithmetic, the loop is short enough for the CPU to keep many misses in flight
(measured on 1M uniform events, 480x640x5: 2.7 ms in two phases, 5.5 ms as one per-event loop; software prefetch
gained nothing more). Loop positions are unsigned on purpose: with signed ones numba emits wrap-around code for
negative indices, which halves the speed of the vectorised loop.

Memory safety: a kernel never writes outside the grid. It returns ``-1``, or the position of an event whose
coordinates or sample index are out of range (the caller raises). As in the torch path, ``batch_index`` is taken
to be non-decreasing: a range whose first and last events have the same sample index is one sample.

Kernels are single-threaded (no ``prange``; the data pipeline runs one per DataLoader worker) and release the GIL.
They compile on first use (about 3 s of CPU for all three, once) and are cached on disk (see :func:`_njit`); a
process then loads them in ~0.25 s, mostly ``import numba``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

BLOCK = 4096  # events per block: index and values of a block stay in L1/L2


def _njit(fn: Callable[..., Any]) -> Any:
    """``numba.njit`` with an on-disk cache (in-tree ``__pycache__``, else the user cache dir or
    ``NUMBA_CACHE_DIR``), and without one when no cache directory is writable (read-only install and home):
    numba raises then at decoration time, and every process compiles again on first use."""
    options = {"nogil": True, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(fn)


# ---------------------------------------------------------------------------------------------------- scatter loops
# Positions are unsigned: no wrap-around code for negative indices. Phase 1 guarantees every index is in range.
@_njit
def _scatter_add2(out: Any, idx: Any, lo: Any, hi: Any, m: int, step: int) -> None:
    """``out[idx] += lo; out[idx + step] += hi`` for the first ``m`` entries."""
    step = np.uint64(step)
    for i in range(m):
        k = np.uint64(i)
        j = np.uint64(idx[k])
        out[j] += lo[k]
        out[j + step] += hi[k]


@_njit
def _scatter_add1(out: Any, idx: Any, val: Any, m: int) -> None:
    """``out[idx] += val`` for the first ``m`` entries."""
    for i in range(m):
        k = np.uint64(i)
        out[np.uint64(idx[k])] += val[k]


@_njit
def _scatter_count(out: Any, idx: Any, m: int) -> None:
    """``out[idx] += 1`` for the first ``m`` entries."""
    one = np.float32(1.0)
    for i in range(m):
        out[np.uint64(idx[np.uint64(i)])] += one


@_njit
def _scatter_max(out: Any, idx: Any, val: Any, m: int) -> None:
    """``out[idx] = max(out[idx], val)`` for the first ``m`` entries."""
    for i in range(m):
        k = np.uint64(i)
        j = np.uint64(idx[k])
        if val[k] > out[j]:
            out[j] = val[k]


@_njit
def _run_end(bi: Any, s: int, e: int) -> int:
    """End of the run of events of sample ``bi[s]`` in ``[s, e)``."""
    b = bi[s]
    if bi[e - 1] == b:
        return e
    r = s + 1
    while r < e and bi[r] == b:
        r += 1
    return r


@_njit
def _batch_count(t_start: Any, t_end: Any, out: Any, sample_size: int) -> int:
    """Number of samples a kernel may write: those with a window and a grid."""
    return min(t_start.shape[0], t_end.shape[0], out.shape[0] // max(sample_size, 1))


# ---------------------------------------------------------------------------------------------------- voxel grid
@_njit
def _voxel_index(
    x: Any, y: Any, t: Any, p: Any, s: int, e: int, o: int, t0: int, scale: float, top: float, last_bin: int,
    base: int, height: int, width: int, idx: Any, lo: Any, hi: Any,
) -> bool:  # fmt: skip
    """Phase 1 of :func:`voxel_grid` for the events ``[s, e)`` of one sample into buffer slots ``o, o + 1, ...``.

    ``t* = clamp(f32(f64(t - t0) * scale), 0, top)``; lower bin ``k = min(⌊t*⌋, last_bin)`` with
    ``last_bin = bins - 2`` (so t* = bins - 1 puts weight 1 on the upper bin: the same cell and value as the torch
    path's lower bin ``bins - 1`` with weight ``p - p·0``, and no spare plane is needed); upper weight ``w = t* - k``
    (exact); values ``p - p·w`` and ``p·w`` in float32 as the torch path. True when an event lies off the sensor.
    """
    hw = height * width
    zero = np.float32(0.0)
    bad = False
    for m in range(e - s):
        i = np.uint64(s + m)  # unsigned positions: no wrap-around code for negative indices (2x faster loop)
        j = np.uint64(o + m)
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        bad |= (xi < 0) | (xi >= width) | (yi < 0) | (yi >= height)
        tn = np.float32(np.float64(t[i] - t0) * scale)
        tn = min(max(tn, zero), top)
        k = min(np.int64(tn), last_bin)
        pf = np.float32(p[i])
        pw = pf * (tn - np.float32(k))
        idx[j] = base + k * hw + yi * width + xi
        lo[j] = pf - pw
        hi[j] = pw
    return bad


@_njit
def voxel_grid(
    x: Any, y: Any, t: Any, p: Any, bi: Any, t_start: Any, t_end: Any, bins: int, height: int, width: int,
    out: Any, idx: Any, lo: Any, hi: Any,
) -> int:  # fmt: skip
    """Signed, temporally bilinear voxel grid, added into ``out`` (float32, ``B * bins * H * W``, zeroed).

    ``idx, lo, hi``: scratch buffers of one block (``idx`` uint32 when the grid has < 2**32 cells, else uint64).
    Per sample ``scale = (bins - 1) / f64(max(t_end - 1 - t_start, 1))`` and ``t* = f64(t - t_start) * scale``
    rounded to float32, as the torch path. Returns -1, or the position of an invalid event.
    """
    hw = height * width
    plane = bins * hw
    nbatch = _batch_count(t_start, t_end, out, plane)
    scale = np.empty(nbatch, np.float64)
    for b in range(nbatch):
        scale[b] = (bins - 1) / np.float64(max(t_end[b] - 1 - t_start[b], 1))
    top = np.float32(bins - 1)
    last_bin = max(bins - 2, 0)  # bins == 1: t* = 0, lo = p (hi = 0 is not scattered)
    blk = idx.shape[0]
    n = x.shape[0]
    for s in range(0, n, blk):
        e = min(n, s + blk)
        r = s
        while r < e:
            b = bi[r]
            if b < 0 or b >= nbatch:
                return r
            re = _run_end(bi, r, e)
            if _voxel_index(
                x, y, t, p, r, re, r - s, t_start[b], scale[b], top, last_bin, b * plane, height, width, idx, lo, hi
            ):
                return r
            r = re
        if bins == 1:
            _scatter_add1(out, idx, lo, e - s)
        else:
            _scatter_add2(out, idx, lo, hi, e - s, hw)
    return -1


# ---------------------------------------------------------------------------------------------------- count grids
@_njit
def _count_index(
    x: Any, y: Any, t: Any, p: Any, s: int, e: int, o: int, t0: int, duration: float, bins: int, base: int,
    height: int, width: int, idx: Any,
) -> bool:  # fmt: skip
    """Phase 1 of :func:`stacked_histogram`: channel ``2k + (p < 0)`` with the time slice
    ``k = ⌊clamp(f64(t - t0) · bins / duration, 0, bins - 1)⌋`` (``k = 0`` when ``bins == 1``)."""
    hw = height * width
    top = np.float64(bins - 1)
    bad = False
    for m in range(e - s):
        i = np.uint64(s + m)
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        bad |= (xi < 0) | (xi >= width) | (yi < 0) | (yi >= height)
        c = np.int64(p[i] < 0)
        if bins > 1:
            kf = np.float64(t[i] - t0) * bins / duration
            c += 2 * np.int64(min(max(kf, 0.0), top))
        idx[np.uint64(o + m)] = base + c * hw + yi * width + xi
    return bad


@_njit
def stacked_histogram(
    x: Any, y: Any, t: Any, p: Any, bi: Any, t_start: Any, t_end: Any, bins: int, height: int, width: int,
    out: Any, idx: Any,
) -> int:  # fmt: skip
    """ON/OFF event counts per time slice, added into ``out`` (float32, ``B * 2 * bins * H * W``, zeroed);
    ``bins == 1`` is the two-channel histogram. Per sample ``duration = f64(max(t_end - t_start, 1))``, as the
    torch path. Returns -1, or the position of an invalid event."""
    hw = height * width
    plane = 2 * bins * hw
    nbatch = _batch_count(t_start, t_end, out, plane)
    duration = np.empty(nbatch, np.float64)
    for b in range(nbatch):
        duration[b] = np.float64(max(t_end[b] - t_start[b], 1))
    blk = idx.shape[0]
    n = x.shape[0]
    for s in range(0, n, blk):
        e = min(n, s + blk)
        r = s
        while r < e:
            b = bi[r]
            if b < 0 or b >= nbatch:
                return r
            re = _run_end(bi, r, e)
            if _count_index(x, y, t, p, r, re, r - s, t_start[b], duration[b], bins, b * plane, height, width, idx):
                return r
            r = re
        _scatter_count(out, idx, e - s)
    return -1


# ---------------------------------------------------------------------------------------------------- time surface
@_njit
def _surface_index(
    x: Any, y: Any, t: Any, p: Any, s: int, e: int, o: int, t_ref: int, neg_inv_tau: float, base: int,
    height: int, width: int, idx: Any, val: Any,
) -> bool:  # fmt: skip
    """Phase 1 of :func:`time_surface`: channel ``p < 0``, value ``exp(f32(min(f64(t_ref - t) · (-1/τ), 0)))``."""
    hw = height * width
    bad = False
    for m in range(e - s):
        i = np.uint64(s + m)
        j = np.uint64(o + m)
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        bad |= (xi < 0) | (xi >= width) | (yi < 0) | (yi >= height)
        dt = min(np.float64(t_ref - t[i]) * neg_inv_tau, 0.0)
        idx[j] = base + np.int64(p[i] < 0) * hw + yi * width + xi
        val[j] = np.exp(np.float32(dt))
    return bad


@_njit
def time_surface(
    x: Any, y: Any, t: Any, p: Any, bi: Any, t_start: Any, t_end: Any, neg_inv_tau: float, height: int,
    width: int, out: Any, idx: Any, val: Any,
) -> int:  # fmt: skip
    """Per pixel and polarity the maximum of the events' decayed values, into ``out`` (float32,
    ``B * 2 * H * W``, zeroed); ``t_ref = t_end - 1`` per sample. Returns -1, or the position of an invalid event."""
    hw = height * width
    plane = 2 * hw
    nbatch = _batch_count(t_start, t_end, out, plane)
    blk = idx.shape[0]
    n = x.shape[0]
    for s in range(0, n, blk):
        e = min(n, s + blk)
        r = s
        while r < e:
            b = bi[r]
            if b < 0 or b >= nbatch:
                return r
            re = _run_end(bi, r, e)
            if _surface_index(x, y, t, p, r, re, r - s, t_end[b] - 1, neg_inv_tau, b * plane, height, width, idx, val):
                return r
            r = re
        _scatter_max(out, idx, val, e - s)
    return -1
