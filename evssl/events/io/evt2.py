"""Prophesee EVT 2.0 ``.raw``: 32-bit little-endian words after a ``%`` ASCII header.

Word type = bits 31-28:

- ``0x0`` CD_OFF / ``0x1`` CD_ON: bits 27-22 = the 6 low timestamp bits, bits 21-11 = x, bits 10-0 = y; the type is
  the polarity.
- ``0x8`` EVT_TIME_HIGH: bits 27-0 = timestamp bits 33..6, so t = ``(time_high << 6) | low6`` (a 34-bit µs counter).
- ``0xA`` EXT_TRIGGER, ``0xE`` OTHERS, ``0xF`` CONTINUED and anything else: skipped.

CD words before the first TIME_HIGH have unknown high bits and are dropped (a recording starts with a few); a stream
whose CD words *all* come before any TIME_HIGH (no time base at all) is an error, not 0 events. When TIME_HIGH drops
by more than half its range the 34-bit counter wrapped (every ~4.8 h) and 2**34 µs is added from there on; a smaller
step down makes timestamps decrease, which raises naming the event index and byte offset.

Decoding: one pass of a numba kernel (:func:`evssl.events.io._kernels.evt2_decode`) over the body (read in blocks),
writing and checking the schema columns directly; :func:`decode_evt2` below is the vectorised numpy restatement,
kept as the reference the tests compare against and as the fallback without numba.

Sensor size (``(height, width)``): the caller's ``sensor_size``, else the header geometry (``% geometry``,
``% format EVT2;height=..;width=..``), else one implied by ``% plugin_name`` (gen3 = 480x640), else max + 1.
"""

from __future__ import annotations

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
TIME_HIGH_BITS = 28
TYPE_TIME_HIGH = 0x8


def decode_evt2(words: np.ndarray, chunk_words: int = CHUNK_WORDS) -> tuple[np.ndarray, ...]:
    """Decode EVT 2.0 words to ``(x, y, t, p_bits)`` columns (vectorised per chunk)."""
    high = -1  # extended time-high of the last TIME_HIGH (-1: none seen yet)
    last_raw = -1
    wraps = 0
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(words), chunk_words):
        w = np.asarray(words[start : start + chunk_words], dtype=np.uint32)
        typ = w >> 28
        th_pos = np.flatnonzero(typ == TYPE_TIME_HIGH)
        th_ext = np.zeros(0, np.int64)
        if len(th_pos):
            raw = (w[th_pos] & 0x0FFFFFFF).astype(np.int64)
            prev = np.concatenate(([raw[0] if last_raw < 0 else last_raw], raw[:-1]))
            wrapped = prev - raw > (1 << (TIME_HIGH_BITS - 1))
            th_ext = raw + (wraps + np.cumsum(wrapped, dtype=np.int64)) * (1 << TIME_HIGH_BITS)
        cd_pos = np.flatnonzero(typ <= 1)
        # index (into th_pos) of the last TIME_HIGH before each CD word; -1 = carried from the previous chunk
        k = np.searchsorted(th_pos, cd_pos) - 1
        hi = np.where(k >= 0, th_ext[np.maximum(k, 0)] if len(th_ext) else high, high)
        keep = hi >= 0
        cd = w[cd_pos[keep]]
        hi = hi[keep]
        t = (hi << 6) | ((cd >> 22) & 0x3F).astype(np.int64)
        parts.append(((cd >> 11) & 0x7FF, cd & 0x7FF, t, cd >> 28))
        if len(th_pos):
            high = int(th_ext[-1])
            last_raw = int(w[th_pos[-1]] & 0x0FFFFFFF)
            wraps = int(high >> TIME_HIGH_BITS)
    if not parts:
        return tuple(np.zeros(0, d) for d in (np.uint32, np.uint32, np.int64, np.uint32))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def _dropped_error(state: np.ndarray, src: str, body_offset: int) -> EventFormatError | None:
    """CD words but no TIME_HIGH before any of them: the whole stream has no time base (an error, not 0 events)."""
    from evssl.events.io import _kernels as k

    dropped = int(state[k.E2_DROPPED])
    if not dropped:
        return None
    off = body_offset + 4 * int(state[k.E2_FIRST_DROPPED])
    return EventFormatError(
        src,
        "time_high",
        f"{dropped} CD event words but no TIME_HIGH word before them, so their timestamps are unknown "
        f"(first CD word at byte offset {off})",
    )


SPEC = Spec("evt2", "evt2_decode", "evt2_state", dropped_error=_dropped_error)


def _source(path: PathLike) -> tuple[Source, tuple[int, int] | None]:
    return raw_source(path, "2.0", "<u4")


def read_evt2(path: PathLike, sensor_size: SensorSize = None) -> Events:
    """Read a Prophesee EVT 2.0 ``.raw`` file (see the module doc for layout and sensor-size rule)."""
    return read_file(SPEC, path, sensor_size, _source, _read_numpy)[0]


def open_evt2(path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000) -> Opened:
    """Chunked reading in bounded memory (see :func:`evssl.events.io.iter_events`)."""
    return open_file(SPEC, path, sensor_size, chunk_events, _source, _read_numpy)


def _read_numpy(source: Source, given: tuple[int, int] | str | None, stated: tuple[int, int] | None) -> tuple:
    """The numpy fallback (and reference): :func:`decode_evt2`, then validation of the whole file."""
    src = source.src
    words = source.array()
    x, y, t, p = decode_evt2(words)
    if not len(x):
        typ = words >> 28
        cd = np.flatnonzero(typ <= 1)
        if len(cd):
            raise EventFormatError(
                src,
                "time_high",
                f"{len(cd)} CD event words but no TIME_HIGH word before them, so their timestamps are unknown "
                f"(first CD word at byte offset {source.body_offset + 4 * int(cd[0])})",
            )
        raise EmptyRecordingError(src, f"no events: {SPEC.empty}", given if isinstance(given, tuple) else stated)
    size, inferred = choose_size(given, stated, max_xy(x, y), (), src)
    return build_events(x, y, t, p, size, src), inferred
