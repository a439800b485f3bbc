"""Prophesee EVT 2.0 ``.raw``: 32-bit little-endian words after a ``%`` ASCII header.

Word type = bits 31-28:

- ``0x0`` CD_OFF / ``0x1`` CD_ON: bits 27-22 = the 6 low timestamp bits, bits 21-11 = x, bits 10-0 = y; the type is
  the polarity.
- ``0x8`` EVT_TIME_HIGH: bits 27-0 = timestamp bits 33..6, so t = ``(time_high << 6) | low6`` (a 34-bit µs counter).
- ``0xA`` EXT_TRIGGER, ``0xE`` OTHERS, ``0xF`` CONTINUED and anything else: skipped.

CD words before the first TIME_HIGH have unknown high bits and are dropped. When TIME_HIGH drops by more than half
its range the 34-bit counter wrapped (every ~4.8 h) and 2**34 µs is added from there on; a smaller step down makes
timestamps decrease, which raises naming the event index. Decoding is vectorised and runs over the memory-mapped
body in chunks, carrying the time base between chunks.

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
    caller_size,
    choose_size,
    max_xy,
    source_name,
    whole_file_opened,
)
from evssl.events.io._prophesee import check_version, raw_words, read_raw_header
from evssl.events.schema import Events

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


def read_evt2(path: PathLike, sensor_size: SensorSize = None) -> Events:
    """Read a Prophesee EVT 2.0 ``.raw`` file (see the module doc for layout and sensor-size rule)."""
    return _read(path, sensor_size)[0]


def open_evt2(path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000) -> Opened:
    """Chunked reading."""
    ev, inferred = _read(path, sensor_size)
    return whole_file_opened(ev, inferred, chunk_events)


def _read(path: PathLike, sensor_size: SensorSize) -> tuple[Events, bool]:
    src = source_name(path)
    given = caller_size(sensor_size, src)
    header = read_raw_header(path)
    check_version(header, "2.0", src)
    x, y, t, p = decode_evt2(raw_words(path, header, "<u4"))
    if not len(x):
        raise EmptyRecordingError(src, "no events", given if isinstance(given, tuple) else header.geometry)
    size, inferred = choose_size(given, header.geometry, max_xy(x, y), (), src)
    return build_events(x, y, t, p, size, src), inferred
