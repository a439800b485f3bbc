"""Single-pass numba decoders for the stateful event formats (EVT 2.0, EVT 3.0, ``.dat``) and the AEDAT 4.0 copy.

Each kernel walks its input once, keeps the decoder state in a small int64 array between calls, and writes the
schema's columns directly (``x``, ``y`` int16, ``t`` int64, ``p`` int8 in {-1, +1}) into caller-owned output
buffers, checking every event on the way: timestamps never decrease (across calls too), coordinates lie inside the
sensor when its size is known (``width``/``height``; pass ``BIG`` when it is not), polarity bits are valid. It stops
at the first bad event and describes it in ``err`` (see :data:`ERR_FIELDS`); the caller raises an
:class:`~evssl.events.schema.EventFormatError` naming the file, the field, the event index and the byte offset.

A kernel returns ``(next_position, events_written)`` and stops early when the output buffers are full, so the same
kernel serves a whole-file read (buffers sized for the file) and a chunked read (buffers of ``chunk_events``):
decoding resumes from the returned position with the carried state, and an EVT 3.0 vector word that does not fit
is finished on the next call (its remaining mask is part of the state), so chunks hold exactly ``len(out)`` events.

The kernels do not track the largest coordinates: a running max adds a dependency chain that costs ~40% of the
``.dat`` loop (measured), while ``x.max()`` in numpy afterwards is a fast SIMD pass, needed only when the sensor
size is inferred.

The arithmetic restates the numpy decoders of :mod:`evssl.events.io.evt2`, :mod:`~evssl.events.io.evt3` and
:mod:`~evssl.events.io.dat` (kept as the reference and the fallback without numba; the tests check equality).
Compiled on first use and cached on disk (see :func:`evssl.events._kernels._njit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evssl.events._kernels import _njit

BIG = 1 << 40  # "no sensor bound"
#: ``err`` layout: code, event index (within this call's output), input position (word / record), values a, b.
ERR_FIELDS = ("code", "index", "position", "a", "b")
ERR_NONE, ERR_T, ERR_X, ERR_Y, ERR_P = 0, 1, 2, 3, 4

# ------------------------------------------------------------------------------------------------------ EVT 2.0
#: EVT 2.0 state slots.
E2_HIGH, E2_LAST_RAW, E2_WRAPS, E2_LAST_T, E2_DROPPED, E2_FIRST_DROPPED = range(6)
E2_STATE = 6


def evt2_state() -> np.ndarray:
    """A fresh EVT 2.0 decoder state (no time base yet)."""
    s = np.zeros(E2_STATE, np.int64)
    s[[E2_HIGH, E2_LAST_RAW, E2_FIRST_DROPPED]] = -1
    s[E2_LAST_T] = np.iinfo(np.int64).min
    return s


@_njit
def evt2_decode(
    words: Any, pos: int, ox: Any, oy: Any, ot: Any, op: Any, state: Any, width: int, height: int, err: Any
) -> tuple[int, int]:
    """Decode EVT 2.0 words from ``pos`` into the output buffers (see the module doc).

    CD_OFF/CD_ON (types 0/1): t = (time_high << 6) | bits 27-22, x = bits 21-11, y = bits 10-0. TIME_HIGH (8):
    bits 27-0 are time bits 33..6; a drop by more than 2**27 counts a wrap of the 34-bit counter. CD words before the
    first TIME_HIGH are counted as dropped. Other types are skipped.
    """
    high = state[E2_HIGH]
    last_raw = state[E2_LAST_RAW]
    wraps = state[E2_WRAPS]
    last_t = state[E2_LAST_T]
    dropped = state[E2_DROPPED]
    first_dropped = state[E2_FIRST_DROPPED]
    one = np.uint64(1)
    cap = np.uint64(len(ox))
    nw = np.uint64(len(words))
    i = np.uint64(pos)  # unsigned positions: no negative-index wrap-around code in the loop
    n = np.uint64(0)
    half = np.int64(1) << 27
    while i < nw and n < cap:
        w = np.int64(words[i])
        typ = w >> 28
        if typ <= 1:
            if high < 0:
                dropped += 1
                if first_dropped < 0:
                    first_dropped = np.int64(i)
            else:
                t = (high << 6) | ((w >> 22) & 0x3F)
                x = (w >> 11) & 0x7FF
                y = w & 0x7FF
                if (t < last_t) | (x >= width) | (y >= height):
                    err[1] = np.int64(n)
                    err[2] = np.int64(i)
                    if t < last_t:
                        err[0] = 1
                        err[3] = last_t
                        err[4] = t
                    elif x >= width:
                        err[0] = 2
                        err[3] = x
                    else:
                        err[0] = 3
                        err[3] = y
                    break
                ox[n] = x
                oy[n] = y
                ot[n] = t
                op[n] = 2 * typ - 1
                n += one
                last_t = t
        elif typ == 8:
            raw = w & 0x0FFFFFFF
            if last_raw >= 0 and last_raw - raw > half:
                wraps += 1
            high = raw + (wraps << 28)
            last_raw = raw
        i += one
    pos = np.int64(i)
    state[E2_HIGH] = high
    state[E2_LAST_RAW] = last_raw
    state[E2_WRAPS] = wraps
    state[E2_LAST_T] = last_t
    state[E2_DROPPED] = dropped
    state[E2_FIRST_DROPPED] = first_dropped
    return pos, np.int64(n)


# ------------------------------------------------------------------------------------------------------ EVT 3.0
#: EVT 3.0 state slots.
(
    E3_Y,
    E3_BASE_X,
    E3_POL,
    E3_HIGH,
    E3_TIME,
    E3_LAST_RAW_HIGH,
    E3_WRAPS,
    E3_LAST_T,
    E3_PENDING,
    E3_DROPPED,
    E3_FIRST_DROPPED,
) = range(11)
E3_STATE = 11


def evt3_state() -> np.ndarray:
    """A fresh EVT 3.0 decoder state (nothing known yet)."""
    s = np.full(E3_STATE, -1, np.int64)
    s[E3_WRAPS] = 0
    s[E3_DROPPED] = 0
    s[E3_LAST_T] = np.iinfo(np.int64).min
    return s


@_njit
def _evt3_error(err: Any, n: int, pos: int, t: int, last_t: int, x: int, y: int, width: int, height: int) -> None:
    err[1] = n
    err[2] = pos
    if t < last_t:
        err[0] = 1
        err[3] = last_t
        err[4] = t
    elif y >= height:
        err[0] = 3
        err[3] = y
    else:
        err[0] = 2
        err[3] = x


@_njit
def evt3_decode(
    words: Any, pos: int, ox: Any, oy: Any, ot: Any, op: Any, state: Any, width: int, height: int, err: Any
) -> tuple[int, int]:
    """Decode EVT 3.0 words from ``pos`` into the output buffers (see the module doc and :mod:`~.evt3`).

    ADDR_Y (0) sets y; ADDR_X (2) emits one event; VECT_BASE_X (3) sets base x and polarity; VECT_12 (4) / VECT_8
    (5) emit base_x + k for every set bit k, then base_x += 12 / 8; TIME_LOW (6) sets the low 12 bits; TIME_HIGH (8)
    the high 12 bits (low restarts at 0), counting a wrap when it drops by more than 2048. Event words before the
    time, y (and, for vectors, base x) are known are counted as dropped.
    """
    y = state[E3_Y]
    base_x = state[E3_BASE_X]
    pol = state[E3_POL]
    high = state[E3_HIGH]
    time = state[E3_TIME]
    last_raw = state[E3_LAST_RAW_HIGH]
    wraps = state[E3_WRAPS]
    last_t = state[E3_LAST_T]
    pending = state[E3_PENDING]
    dropped = state[E3_DROPPED]
    first_dropped = state[E3_FIRST_DROPPED]
    one = np.uint64(1)
    cap = np.uint64(len(ox))
    nw = np.uint64(len(words))
    i = np.uint64(pos)  # unsigned positions: no negative-index wrap-around code in the loop
    n = np.uint64(0)
    while i < nw and n < cap:
        w = np.int64(words[i])
        typ = w >> 12
        val = w & 0xFFF
        if typ == 4 or typ == 5:  # VECT_12 / VECT_8
            size = 12 if typ == 4 else 8
            mask = val & (0xFFF if typ == 4 else 0xFF)
            if pending >= 0:
                mask = pending
            if time < 0 or y < 0 or base_x < 0:
                if mask != 0:
                    dropped += 1
                    if first_dropped < 0:
                        first_dropped = np.int64(i)
            elif mask != 0:
                if time < last_t or y >= height or base_x + 11 >= width:
                    # slow path: find the first bad event exactly
                    k = 0
                    while k < size:
                        if (mask >> k) & 1:
                            x = base_x + k
                            if time < last_t or y >= height or x >= width:
                                _evt3_error(err, np.int64(n), np.int64(i), time, last_t, x, y, width, height)
                                break
                        k += 1
                    if err[0] != 0:
                        break
                left = 0
                if cap - n >= np.uint64(12):  # branch-free: write all lanes, advance by the bit
                    for k in range(12):
                        ox[n] = base_x + k
                        oy[n] = y
                        ot[n] = time
                        op[n] = pol
                        n += np.uint64((mask >> k) & 1)
                else:  # near the end of the buffer: bit by bit, keep what does not fit
                    k = 0
                    while k < size:
                        if (mask >> k) & 1:
                            if n == cap:
                                left = (mask >> k) << k
                                break
                            ox[n] = base_x + k
                            oy[n] = y
                            ot[n] = time
                            op[n] = pol
                            n += one
                        k += 1
                last_t = time
                if left != 0:
                    pending = left
                    break  # resume this word (its remaining bits) on the next call
            pending = -1
            base_x += size
        elif typ == 2:  # ADDR_X
            if time < 0 or y < 0:
                dropped += 1
                if first_dropped < 0:
                    first_dropped = np.int64(i)
            else:
                x = val & 0x7FF
                if time < last_t or y >= height or x >= width:
                    _evt3_error(err, np.int64(n), np.int64(i), time, last_t, x, y, width, height)
                    break
                ox[n] = x
                oy[n] = y
                ot[n] = time
                op[n] = 2 * (val >> 11) - 1
                n += one
                last_t = time
        elif typ == 0:  # ADDR_Y
            y = val & 0x7FF
        elif typ == 3:  # VECT_BASE_X
            base_x = val & 0x7FF
            pol = 2 * (val >> 11) - 1
        elif typ == 6:  # TIME_LOW
            if high >= 0:
                time = (high << 12) | val
        elif typ == 8:  # TIME_HIGH
            if last_raw >= 0 and last_raw - val > 2048:
                wraps += 1
            high = val + (wraps << 12)
            last_raw = val
            time = high << 12
        i += one
    pos = np.int64(i)
    state[E3_Y] = y
    state[E3_BASE_X] = base_x
    state[E3_POL] = pol
    state[E3_HIGH] = high
    state[E3_TIME] = time
    state[E3_LAST_RAW_HIGH] = last_raw
    state[E3_WRAPS] = wraps
    state[E3_LAST_T] = last_t
    state[E3_PENDING] = pending
    state[E3_DROPPED] = dropped
    state[E3_FIRST_DROPPED] = first_dropped
    return pos, np.int64(n)


# ------------------------------------------------------------------------------------------------------ .dat
#: ``.dat`` state slots.
DAT_LAST_RAW, DAT_WRAPS, DAT_LAST_T = range(3)
DAT_STATE = 3


@_njit
def _record_error(
    err: Any, n: int, pos: int, p: int, x: int, y: int, t: int, last_t: int, width: int, height: int
) -> None:
    """Describe a bad ``.dat`` / AEDAT 4.0 event in ``err`` (error path only), first match in this order: polarity
    not 0/1, negative coordinate (``b = 1``), x or y outside the sensor, decreasing timestamp."""
    err[1] = n
    err[2] = pos
    if p > 1:
        err[0] = ERR_P
        err[3] = p
    elif x < 0 or y < 0:
        err[0] = ERR_X if x < 0 else ERR_Y
        err[3] = x if x < 0 else y
        err[4] = 1
    elif x >= width:
        err[0] = ERR_X
        err[3] = x
    elif y >= height:
        err[0] = ERR_Y
        err[3] = y
    else:
        err[0] = ERR_T
        err[3] = last_t
        err[4] = t


def dat_state() -> np.ndarray:
    """A fresh ``.dat`` decoder state."""
    s = np.array([-1, 0, np.iinfo(np.int64).min], np.int64)
    return s


@_njit
def dat_decode(
    rec: Any, pos: int, ox: Any, oy: Any, ot: Any, op: Any, state: Any, width: int, height: int, err: Any
) -> tuple[int, int]:
    """Decode ``.dat`` records from record ``pos``; ``rec`` is the flat uint32 array (timestamp, data, timestamp, ...).

    x = data bits 0-13, y = bits 14-27, polarity = bits 28-31 (must be 0/1); the 32-bit timestamp counts a wrap
    when it drops by more than 2**31. (A flat array and one combined check per record keep the loop tight: ~25%
    faster than (N, 2) indexing.)
    """
    last_raw = state[DAT_LAST_RAW]
    wrap = state[DAT_WRAPS] << 32
    last_t = state[DAT_LAST_T]
    count = min(len(rec) // 2 - pos, len(ox))
    half = np.int64(1) << 31
    one = np.uint64(1)
    base = np.uint64(2 * pos)
    n = np.uint64(0)
    for i in range(np.uint64(count)):  # one event per record; unsigned positions (no wrap-around code)
        r = base + i + i
        raw = np.int64(rec[r])
        d = np.int64(rec[r + one])
        if raw - last_raw < -half and last_raw >= 0:
            wrap += np.int64(1) << 32
        last_raw = raw
        t = raw + wrap
        x = d & 0x3FFF
        y = (d >> 14) & 0x3FFF
        p = d >> 28
        if (p > 1) | (t < last_t) | (x >= width) | (y >= height):
            _record_error(err, np.int64(i), pos + np.int64(i), p, x, y, t, last_t, width, height)
            break
        ox[i] = x
        oy[i] = y
        ot[i] = t
        op[i] = 2 * p - 1
        last_t = t
        n += one
    state[DAT_LAST_RAW] = last_raw
    state[DAT_WRAPS] = wrap >> 32
    state[DAT_LAST_T] = last_t
    return pos + np.int64(n), np.int64(n)


# ------------------------------------------------------------------------------------------------------ AEDAT 4.0
@_njit
def aedat4_copy(
    t: Any,
    x: Any,
    y: Any,
    p: Any,
    pos: int,
    ox: Any,
    oy: Any,
    ot: Any,
    op: Any,
    state: Any,
    width: int,
    height: int,
    err: Any,
) -> tuple[int, int]:
    """Copy AEDAT 4.0 event structs (strided field views) from ``pos`` into the output columns, checking each.

    Polarity bytes must be 0/1, coordinates non-negative and inside the sensor, timestamps non-decreasing.
    ``state`` = ``(last t,)``; error codes as for the other kernels (``ERR_P``: polarity byte,
    ``ERR_X``/``ERR_Y`` with ``b = 1``: negative coordinate).
    """
    last_t = state[0]
    one = np.uint64(1)
    cap = np.uint64(len(ox))
    ne = np.uint64(len(t))
    i = np.uint64(pos)
    n = np.uint64(0)
    while i < ne and n < cap:
        tt = np.int64(t[i])
        xx = np.int64(x[i])
        yy = np.int64(y[i])
        pp = np.int64(p[i])
        if (pp > 1) | (xx < 0) | (yy < 0) | (tt < last_t) | (xx >= width) | (yy >= height):
            _record_error(err, np.int64(n), np.int64(i), pp, xx, yy, tt, last_t, width, height)
            break
        ox[n] = xx
        oy[n] = yy
        ot[n] = tt
        op[n] = 2 * pp - 1
        n += one
        last_t = tt
        i += one
    pos = np.int64(i)
    state[0] = last_t
    return pos, np.int64(n)
