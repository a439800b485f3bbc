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
E2_HIGH, E2_LAST_RAW, E2_WRAPS, E2_LAST_T, E2_MAX_X, E2_MAX_Y, E2_DROPPED, E2_FIRST_DROPPED = range(8)
E2_STATE = 8


def evt2_state() -> np.ndarray:
    """A fresh EVT 2.0 decoder state (no time base yet)."""
    s = np.zeros(E2_STATE, np.int64)
    s[[E2_HIGH, E2_LAST_RAW, E2_LAST_T, E2_MAX_X, E2_MAX_Y, E2_FIRST_DROPPED]] = -1
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
    max_x = state[E2_MAX_X]
    max_y = state[E2_MAX_Y]
    dropped = state[E2_DROPPED]
    first_dropped = state[E2_FIRST_DROPPED]
    cap = len(ox)
    nw = len(words)
    n = 0
    half = np.int64(1) << 27
    while pos < nw and n < cap:
        w = np.int64(words[pos])
        typ = w >> 28
        if typ <= 1:
            if high < 0:
                dropped += 1
                if first_dropped < 0:
                    first_dropped = pos
            else:
                t = (high << 6) | ((w >> 22) & 0x3F)
                x = (w >> 11) & 0x7FF
                y = w & 0x7FF
                if t < last_t or x >= width or y >= height:
                    err[1] = n
                    err[2] = pos
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
                n += 1
                last_t = t
                if x > max_x:
                    max_x = x
                if y > max_y:
                    max_y = y
        elif typ == 8:
            raw = w & 0x0FFFFFFF
            if last_raw >= 0 and last_raw - raw > half:
                wraps += 1
            high = raw + (wraps << 28)
            last_raw = raw
        pos += 1
    state[E2_HIGH] = high
    state[E2_LAST_RAW] = last_raw
    state[E2_WRAPS] = wraps
    state[E2_LAST_T] = last_t
    state[E2_MAX_X] = max_x
    state[E2_MAX_Y] = max_y
    state[E2_DROPPED] = dropped
    state[E2_FIRST_DROPPED] = first_dropped
    return pos, n


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
    E3_MAX_X,
    E3_MAX_Y,
    E3_PENDING,
    E3_DROPPED,
    E3_FIRST_DROPPED,
) = range(13)
E3_STATE = 13


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
    max_x = state[E3_MAX_X]
    max_y = state[E3_MAX_Y]
    pending = state[E3_PENDING]
    dropped = state[E3_DROPPED]
    first_dropped = state[E3_FIRST_DROPPED]
    cap = len(ox)
    nw = len(words)
    n = 0
    while pos < nw and n < cap:
        w = np.int64(words[pos])
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
                        first_dropped = pos
            elif mask != 0:
                if time < last_t or y >= height or base_x + 11 >= width:
                    # slow path: find the first bad event exactly
                    k = 0
                    while k < size:
                        if (mask >> k) & 1:
                            x = base_x + k
                            if time < last_t or y >= height or x >= width:
                                _evt3_error(err, n, pos, time, last_t, x, y, width, height)
                                break
                        k += 1
                    if err[0] != 0:
                        break
                left = 0
                if cap - n >= 12:  # branch-free: write all lanes, advance by the bit
                    for k in range(12):
                        ox[n] = base_x + k
                        oy[n] = y
                        ot[n] = time
                        op[n] = pol
                        n += (mask >> k) & 1
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
                            n += 1
                        k += 1
                last_t = time
                x = np.int64(ox[n - 1])
                if x > max_x:
                    max_x = x
                if y > max_y:
                    max_y = y
                if left != 0:
                    pending = left
                    break  # resume this word (its remaining bits) on the next call
            pending = -1
            base_x += size
        elif typ == 2:  # ADDR_X
            if time < 0 or y < 0:
                dropped += 1
                if first_dropped < 0:
                    first_dropped = pos
            else:
                x = val & 0x7FF
                if time < last_t or y >= height or x >= width:
                    _evt3_error(err, n, pos, time, last_t, x, y, width, height)
                    break
                ox[n] = x
                oy[n] = y
                ot[n] = time
                op[n] = 2 * (val >> 11) - 1
                n += 1
                last_t = time
                if x > max_x:
                    max_x = x
                if y > max_y:
                    max_y = y
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
        pos += 1
    state[E3_Y] = y
    state[E3_BASE_X] = base_x
    state[E3_POL] = pol
    state[E3_HIGH] = high
    state[E3_TIME] = time
    state[E3_LAST_RAW_HIGH] = last_raw
    state[E3_WRAPS] = wraps
    state[E3_LAST_T] = last_t
    state[E3_MAX_X] = max_x
    state[E3_MAX_Y] = max_y
    state[E3_PENDING] = pending
    state[E3_DROPPED] = dropped
    state[E3_FIRST_DROPPED] = first_dropped
    return pos, n


# ------------------------------------------------------------------------------------------------------ .dat
#: ``.dat`` state slots.
DAT_LAST_RAW, DAT_WRAPS, DAT_LAST_T, DAT_MAX_X, DAT_MAX_Y = range(5)
DAT_STATE = 5


def dat_state() -> np.ndarray:
    """A fresh ``.dat`` decoder state."""
    s = np.array([-1, 0, np.iinfo(np.int64).min, -1, -1], np.int64)
    return s


@_njit
def dat_decode(
    rec: Any, pos: int, ox: Any, oy: Any, ot: Any, op: Any, state: Any, width: int, height: int, err: Any
) -> tuple[int, int]:
    """Decode ``.dat`` records (``rec`` is a (N, 2) uint32 view: timestamp, data) from ``pos``.

    x = data bits 0-13, y = bits 14-27, polarity = bits 28-31 (must be 0/1); the 32-bit timestamp counts a wrap
    when it drops by more than 2**31.
    """
    last_raw = state[DAT_LAST_RAW]
    wraps = state[DAT_WRAPS]
    last_t = state[DAT_LAST_T]
    max_x = state[DAT_MAX_X]
    max_y = state[DAT_MAX_Y]
    cap = len(ox)
    nr = rec.shape[0]
    n = 0
    half = np.int64(1) << 31
    while pos < nr and n < cap:
        raw = np.int64(rec[pos, 0])
        d = np.int64(rec[pos, 1])
        if last_raw >= 0 and raw - last_raw < -half:
            wraps += 1
        last_raw = raw
        t = raw + (wraps << 32)
        x = d & 0x3FFF
        y = (d >> 14) & 0x3FFF
        p = d >> 28
        if p > 1 or t < last_t or x >= width or y >= height:
            err[1] = n
            err[2] = pos
            if p > 1:
                err[0] = 4
                err[3] = p
            elif x >= width:
                err[0] = 2
                err[3] = x
            elif y >= height:
                err[0] = 3
                err[3] = y
            else:
                err[0] = 1
                err[3] = last_t
                err[4] = t
            break
        ox[n] = x
        oy[n] = y
        ot[n] = t
        op[n] = 2 * p - 1
        n += 1
        last_t = t
        if x > max_x:
            max_x = x
        if y > max_y:
            max_y = y
        pos += 1
    state[DAT_LAST_RAW] = last_raw
    state[DAT_WRAPS] = wraps
    state[DAT_LAST_T] = last_t
    state[DAT_MAX_X] = max_x
    state[DAT_MAX_Y] = max_y
    return pos, n


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
    ``state`` = ``(last t, max x, max y)``; error codes as for the other kernels (``ERR_P``: polarity byte,
    ``ERR_X``/``ERR_Y`` with ``b = 1``: negative coordinate).
    """
    last_t = state[0]
    max_x = state[1]
    max_y = state[2]
    cap = len(ox)
    ne = len(t)
    n = 0
    while pos < ne and n < cap:
        tt = np.int64(t[pos])
        xx = np.int64(x[pos])
        yy = np.int64(y[pos])
        pp = np.int64(p[pos])
        if pp > 1 or xx < 0 or yy < 0 or tt < last_t or xx >= width or yy >= height:
            err[1] = n
            err[2] = pos
            if pp > 1:
                err[0] = 4
                err[3] = pp
            elif xx < 0 or yy < 0:
                err[0] = 2 if xx < 0 else 3
                err[3] = xx if xx < 0 else yy
                err[4] = 1
            elif xx >= width:
                err[0] = 2
                err[3] = xx
            elif yy >= height:
                err[0] = 3
                err[3] = yy
            else:
                err[0] = 1
                err[3] = last_t
                err[4] = tt
            break
        ox[n] = xx
        oy[n] = yy
        ot[n] = tt
        op[n] = 2 * pp - 1
        n += 1
        last_t = tt
        if xx > max_x:
            max_x = xx
        if yy > max_y:
            max_y = yy
        pos += 1
    state[0] = last_t
    state[1] = max_x
    state[2] = max_y
    return pos, n
