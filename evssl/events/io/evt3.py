"""Prophesee EVT 3.0 ``.raw``: stateful 16-bit little-endian words after a ``%`` ASCII header.

Word type = bits 15-12; the decoder state is the current y, the vector base x and polarity, and the time base:

- ``0x0`` EVT_ADDR_Y: y = bits 10-0 (bit 11, the master/slave system type, is ignored).
- ``0x2`` EVT_ADDR_X: x = bits 10-0, polarity = bit 11; emits one event at (x, y, time).
- ``0x3`` VECT_BASE_X: base x = bits 10-0, polarity = bit 11; emits nothing.
- ``0x4`` VECT_12 / ``0x5`` VECT_8: bits 11-0 / 7-0 are a validity mask; set bit k emits (base_x + k, y, polarity);
  afterwards base_x += 12 / 8.
- ``0x6`` EVT_TIME_LOW: low 12 bits of the 24-bit µs time base.
- ``0x8`` EVT_TIME_HIGH: high 12 bits; time = ``(high << 12) | low``. A new TIME_HIGH starts its period at low = 0
  (as Prophesee's reference decoder does) until the next TIME_LOW.
- ``0xA`` EXT_TRIGGER, ``0xE`` OTHERS, ``0x7`` CONTINUED_4, ``0xF`` CONTINUED_12 and anything else: skipped.

Wrap-around: the 24-bit base wraps every 16.78 s. A wrap is counted when TIME_HIGH goes *down* by more than half
its range (4095 -> 0); nothing is added when TIME_LOW wraps, because the sensor sends the new TIME_HIGH first.
A smaller step down is not a wrap: timestamps then decrease and the reader raises, naming the event index.
Events whose time, y or vector base is not yet known (before the first TIME_HIGH / ADDR_Y / VECT_BASE_X) are
dropped; a stream in which that state never arrives (event words, but not one decodable event) is an error naming
the missing word, not 0 events.

Decoding: one pass of a numba kernel (:func:`evssl.events.io._kernels.evt3_decode`) over the body (read in blocks),
writing and checking the schema columns directly. The numpy restatement below (:func:`decode_evt3`) is kept as the
reference the tests compare against and as the fallback without numba. Its vectorised decoding: each state
variable is forward-filled by looking up, with ``np.searchsorted`` over the
positions of the words that set it, the last such word before every event word (a vectorised forward fill); the
vector base x is the last VECT_BASE_X value plus the cumulative 12/8 increments of the vector words since then;
masks are unpacked to a (words, 16) bit matrix whose flat ``nonzero`` gives the events in stream order.
The numpy decoder takes the memory-mapped body in chunks with the state carried between them.

Sensor size (``(height, width)``): the caller's ``sensor_size``, else the header geometry, else one implied by
``% plugin_name`` (gen41 / imx636 = 720x1280), else max + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    SensorSize,
    build_events,
    choose_size,
    max_xy,
)
from evssl.events.io._prophesee import raw_source
from evssl.events.io._stateful import Source, Spec, open_file, read_file
from evssl.events.schema import EventFormatError, Events

CHUNK_WORDS = 1 << 22
ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8, TIME_LOW, TIME_HIGH = 0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8


@dataclass
class _State:
    """Decoder state carried from one chunk to the next (-1 = not known yet)."""

    y: int = -1
    base_x: int = -1
    pol: int = -1
    high: int = -1  # extended time high (wraps included), in units of 4096 µs
    time: int = -1  # current time in µs (high * 4096 + low)
    last_raw_high: int = -1
    wraps: int = 0


def _decode_chunk(w: np.ndarray, s: _State) -> tuple[np.ndarray, ...]:
    """Decode one chunk of words given the state before it; update ``s`` to the state after it.

    Every state variable is looked up as "the last word that set it before this one": ``searchsorted`` over the
    positions of the setting words, with the carried state prepended at index 0 of the value arrays, so that
    ``values_c[searchsorted(pos, emit)]`` is the forward-filled state at every emitting word.
    """
    n = len(w)
    typ = w >> 12
    val = (w & 0x0FFF).astype(np.int64)
    is_x = typ == ADDR_X
    is_v12 = typ == VECT_12
    is_v = is_v12 | (typ == VECT_8)
    is_th = typ == TIME_HIGH

    # ---- time: TIME_HIGH sets t = high * 4096 (low restarts at 0); TIME_LOW sets t = high * 4096 + low
    th_pos = np.flatnonzero(is_th)
    th_raw = val[th_pos]
    prev = th_raw
    if len(th_raw):
        prev = np.concatenate(([th_raw[0] if s.last_raw_high < 0 else s.last_raw_high], th_raw[:-1]))
    wraps = s.wraps + np.cumsum(prev - th_raw > 2048, dtype=np.int64)
    th_ext_c = np.concatenate(([s.high], th_raw + wraps * 4096))
    t_pos = np.flatnonzero(is_th | (typ == TIME_LOW))
    t_val = val[t_pos]
    t_is_th = is_th[t_pos]
    high_at = th_ext_c[np.searchsorted(th_pos, t_pos, side="right")]  # a TIME_HIGH counts for itself
    time_c = np.concatenate(([s.time], high_at * 4096 + np.where(t_is_th, 0, t_val)))

    # ---- y, vector base x (+ the 12/8 increments of the vector words since) and vector polarity
    y_pos = np.flatnonzero(typ == ADDR_Y)
    y_c = np.concatenate(([s.y], val[y_pos] & 0x7FF))
    b_pos = np.flatnonzero(typ == VECT_BASE_X)
    b_val = val[b_pos]
    v_pos = np.flatnonzero(is_v)
    cum_v_c = np.concatenate(([0], np.cumsum(np.where(is_v12[v_pos], 12, 8), dtype=np.int64)))
    base_c = np.concatenate(([s.base_x], b_val & 0x7FF))
    base_cum_c = np.concatenate(([0], cum_v_c[np.searchsorted(v_pos, b_pos)]))
    pol_c = np.concatenate(([s.pol], b_val >> 11))

    # ---- emitting words; those before the time and y are known (only at the very start) are dropped
    cut = 0
    if s.time < 0:
        cut = int(th_pos[0]) if len(th_pos) else n
    if s.y < 0:
        cut = max(cut, int(y_pos[0]) if len(y_pos) else n)
    emit = np.flatnonzero(is_x | is_v)
    emit = emit[np.searchsorted(emit, cut) :]
    t = time_c[np.searchsorted(t_pos, emit)]
    y = y_c[np.searchsorted(y_pos, emit)]
    e_val = val[emit]
    e_is_v = is_v[emit]
    start_x = e_val & 0x7FF
    pol = e_val >> 11
    mask = np.where(e_is_v, e_val & np.where(is_v12[emit], 0xFFF, 0xFF), 1)
    if len(v_pos):
        v_pos_e = emit[e_is_v]
        k_b = np.searchsorted(b_pos, v_pos_e)
        k_v = np.searchsorted(v_pos, v_pos_e)
        start_x[e_is_v] = base_c[k_b] + (cum_v_c[k_v] - base_cum_c[k_b])
        pol[e_is_v] = pol_c[k_b]
        if s.base_x < 0:  # vectors before the first VECT_BASE_X have no base: drop them
            first = int(b_pos[0]) if len(b_pos) else n
            mask[e_is_v & (emit < first)] = 0
    bits = np.unpackbits(mask.astype("<u2").view(np.uint8).reshape(-1, 2), axis=1, bitorder="little")
    flat = np.flatnonzero(bits.view(bool))
    rows = flat >> 4
    x = start_x[rows] + (flat & 15)

    # ---- carry the state to the next chunk
    if len(th_pos):
        s.high = int(th_ext_c[-1])
        s.last_raw_high = int(th_raw[-1])
        s.wraps = int(wraps[-1])
    if len(t_pos):
        s.time = int(time_c[-1])
    if len(y_pos):
        s.y = int(y_c[-1])
    total = int(cum_v_c[-1])
    if len(b_pos):
        s.base_x = int(base_c[-1]) + total - int(base_cum_c[-1])
        s.pol = int(pol_c[-1])
    elif s.base_x >= 0:
        s.base_x += total
    return x, y[rows], t[rows], pol[rows]


def decode_evt3(words: np.ndarray, chunk_words: int = CHUNK_WORDS) -> tuple[np.ndarray, ...]:
    """Decode EVT 3.0 words to ``(x, y, t, p_bits)`` columns (vectorised per chunk, state carried across)."""
    state = _State()
    parts = [
        _decode_chunk(np.asarray(words[i : i + chunk_words], dtype=np.uint16), state)
        for i in range(0, len(words), chunk_words)
    ]
    if not parts:
        return tuple(np.zeros(0, np.int64) for _ in range(4))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def _dropped_error(state: np.ndarray, src: str, body_offset: int) -> EventFormatError | None:
    """Event words but no state to decode any of them: an error naming what never came, not 0 events."""
    from evssl.events.io import _kernels as k

    dropped = int(state[k.E3_DROPPED])
    if not dropped:
        return None
    if state[k.E3_HIGH] < 0:
        field, what = "time_high", "no TIME_HIGH word (time base)"
    elif state[k.E3_Y] < 0:
        field, what = "addr_y", "no EVT_ADDR_Y word (row)"
    else:
        field, what = "vect_base_x", "no VECT_BASE_X word (vector base)"
    off = body_offset + 2 * int(state[k.E3_FIRST_DROPPED])
    return EventFormatError(
        src, field, f"{dropped} event words but {what} before them (first event word at byte offset {off})"
    )


SPEC = Spec("evt3", "evt3_decode", "evt3_state", dropped_error=_dropped_error)


def _source(path: PathLike) -> tuple[Source, tuple[int, int] | None]:
    return raw_source(path, "3.0", "<u2")


def read_evt3(path: PathLike, sensor_size: SensorSize = None) -> Events:
    """Read a Prophesee EVT 3.0 ``.raw`` file (see the module doc for layout, state and sensor-size rule)."""
    return read_file(SPEC, path, sensor_size, _source, _read_numpy)[0]


def open_evt3(path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000) -> Opened:
    """Chunked reading in bounded memory (see :func:`evssl.events.io.iter_events`)."""
    return open_file(SPEC, path, sensor_size, chunk_events, _source, _read_numpy)


def _read_numpy(source: Source, given: tuple[int, int] | str | None, stated: tuple[int, int] | None) -> tuple:
    """The numpy fallback (and reference): :func:`decode_evt3`, then validation of the whole file."""
    src = source.src
    words = source.array()
    x, y, t, p = decode_evt3(words)
    if not len(x):
        typ = words >> 12
        emit = np.flatnonzero((typ == ADDR_X) | (((typ == VECT_12) | (typ == VECT_8)) & ((words & 0xFFF) > 0)))
        if len(emit):
            raise EventFormatError(
                src,
                "time_high"
                if not (typ == TIME_HIGH).any()
                else "addr_y"
                if not (typ == ADDR_Y).any()
                else "vect_base_x",
                f"{len(emit)} event words but no state (time base, row, vector base) before them "
                f"(first event word at byte offset {source.body_offset + 2 * int(emit[0])})",
            )
        raise EmptyRecordingError(src, f"no events: {SPEC.empty}", given if isinstance(given, tuple) else stated)
    size, inferred = choose_size(given, stated, max_xy(x, y), (), src)
    return build_events(x, y, t, p, size, src), inferred
