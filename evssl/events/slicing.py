"""Pure helpers to cut event streams into windows, shared by the store and the datasets.

Conventions (everywhere in evssl):

* a *time window* is a half-open pair ``(t0, t1)`` in microseconds, events with ``t0 <= t < t1``;
* a *count window* is a half-open pair ``(i0, i1)`` of event indices;
* a recording spans ``[t_first, t_last + 1)``, so its last event belongs to a window ending at ``t_last + 1``.

The millisecond index (:func:`ms_index`) follows DSEC's ``ms_to_idx``: entry ``k`` is the first event index with
``t >= t_first + 1000 * k``; a lookup reads two entries and refines with a binary search inside one millisecond of
events, so it costs O(1) in the recording length.
"""

from __future__ import annotations

import numpy as np

MS = 1000  # microseconds per index bin


def _check_positive(name: str, value: int) -> int:
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _num_windows(span: int, size: int, stride: int, include_incomplete: bool) -> int:
    """How many windows of ``size`` every ``stride`` start inside ``[0, span)``."""
    if span <= 0:
        return 0
    if span < size:
        return 1 if include_incomplete else 0
    full = (span - size) // stride + 1
    if include_incomplete and (full - 1) * stride + size < span:
        # Trailing windows (running past the end) until the last element is covered.
        full += -(-(span - ((full - 1) * stride + size)) // stride)
    return full


def windows_by_time(
    t: np.ndarray,
    duration_us: int,
    stride_us: int | None = None,
    *,
    include_incomplete: bool = False,
) -> np.ndarray:
    """Time windows of ``duration_us`` every ``stride_us`` (default: no overlap) over a recording.

    Windows start at ``t[0]``. Only windows that fit inside ``[t[0], t[-1] + 1)`` are returned unless
    ``include_incomplete`` is set, in which case just enough trailing windows running past the end are added for the
    last event to be covered (at least one window for a non-empty recording).

    Args:
        t: sorted timestamps (µs) of the recording.
        duration_us: window length (µs).
        stride_us: step between window starts (µs); ``None`` means ``duration_us``.
        include_incomplete: also return trailing windows that extend past the last event.

    Returns:
        int64 array of shape (K, 2) with rows ``(t0, t1)``, ``t1 - t0 == duration_us``.
    """
    duration_us = _check_positive("duration_us", duration_us)
    stride_us = duration_us if stride_us is None else _check_positive("stride_us", stride_us)
    t = np.asarray(t)
    if len(t) == 0:
        return np.zeros((0, 2), np.int64)
    t_first, span = int(t[0]), int(t[-1]) - int(t[0]) + 1
    k = _num_windows(span, duration_us, stride_us, include_incomplete)
    starts = t_first + stride_us * np.arange(k, dtype=np.int64)
    return np.stack([starts, starts + duration_us], axis=1)


def windows_by_count(
    n: int,
    count: int,
    stride: int | None = None,
    *,
    include_incomplete: bool = False,
) -> np.ndarray:
    """Index windows of ``count`` events every ``stride`` events (default: no overlap) over ``n`` events.

    Returns an int64 array (K, 2) of ``(i0, i1)``. Without ``include_incomplete`` every window has exactly ``count``
    events; with it, just enough trailing windows are added to cover the last event, clipped to ``n`` (a recording
    shorter than ``count`` gives one window).
    """
    count = _check_positive("count", count)
    stride = count if stride is None else _check_positive("stride", stride)
    n = int(n)
    k = _num_windows(n, count, stride, include_incomplete)
    starts = stride * np.arange(k, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + count, n)], axis=1)


def window_indices(t: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Event-index ranges ``(i0, i1)`` (K, 2) of time windows ``(t0, t1)`` (K, 2) over sorted timestamps ``t``."""
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    return np.searchsorted(np.asarray(t), windows, side="left").astype(np.int64)


def ms_index(t: np.ndarray) -> np.ndarray:
    """Millisecond index of sorted timestamps ``t`` (µs).

    Entry ``k`` is the first index with ``t >= t[0] + 1000 * k``, for ``k = 0 .. (t[-1] - t[0]) // 1000 + 1``; the
    last entry is always ``len(t)``. An empty ``t`` gives ``[0]``.

    Returns:
        int64 array of length ``(t[-1] - t[0]) // 1000 + 2`` (1 when empty).
    """
    t = np.asarray(t)
    if len(t) == 0:
        return np.zeros(1, np.int64)
    t_first = int(t[0])
    m = (int(t[-1]) - t_first) // MS + 1
    bounds = t_first + MS * np.arange(m + 1, dtype=np.int64)
    return np.searchsorted(t, bounds, side="left").astype(np.int64)


def ms_bin(t_first: int, t_last: int, t_query: int) -> int | None:
    """The millisecond-index bin ``k`` holding ``t_query``, or ``None`` when the answer is known without a lookup.

    ``None`` means ``t_query <= t_first`` (answer: index 0) or ``t_query > t_last`` (answer: ``n``); callers check
    which. Otherwise the first index with ``t >= t_query`` lies in ``[ms[k], ms[k + 1]]``.
    """
    if t_query <= t_first or t_query > t_last:
        return None
    return (int(t_query) - int(t_first)) // MS


def index_at(t: np.ndarray, ms: np.ndarray, t_query: int) -> int:
    """First index with ``t >= t_query`` using the millisecond index ``ms`` (same answer as ``searchsorted``)."""
    n = len(t)
    if n == 0:
        return 0
    k = ms_bin(int(t[0]), int(t[-1]), t_query)
    if k is None:
        return 0 if t_query <= t[0] else n
    lo, hi = int(ms[k]), int(ms[k + 1])
    return lo + int(np.searchsorted(t[lo:hi], t_query, side="left"))


def random_window(
    rng: np.random.Generator | None,
    *,
    t_start: int = 0,
    t_end: int = 0,
    num_events: int = 0,
    duration_us: int | None = None,
    count: int | None = None,
) -> tuple[int, int]:
    """A random (``rng`` given) or centred (``rng is None``) window inside one recording.

    Exactly one of ``duration_us`` (time window) and ``count`` (count window) must be set.

    * Time window: ``(t0, t0 + duration_us)`` inside ``[t_start, t_end + 1)`` where ``t_start``/``t_end`` are the
      first/last timestamps; ``t0`` is uniform over the valid integer starts. A recording shorter than the window
      gives ``t0 = t_start`` (random) or a window centred on the recording (``rng is None``).
    * Count window: ``(i0, i0 + count)`` inside ``[0, num_events)``, clipped to ``(0, num_events)`` when the
      recording has fewer events.

    Returns:
        ``(t0, t1)`` in µs for a time window, ``(i0, i1)`` event indices for a count window.
    """
    if (duration_us is None) == (count is None):
        raise ValueError("random_window needs exactly one of duration_us and count")
    if duration_us is not None:
        size = _check_positive("duration_us", duration_us)
        lo, span = int(t_start), int(t_end) - int(t_start) + 1
    else:
        size = _check_positive("count", count)  # type: ignore[arg-type]
        lo, span = 0, int(num_events)
        if span <= size:
            return 0, max(span, 0)
    slack = span - size
    if slack < 0:
        start = lo + (slack // 2 if rng is None else 0)
    elif rng is None:
        start = lo + slack // 2
    else:
        start = lo + int(rng.integers(0, slack + 1))
    return start, start + size
