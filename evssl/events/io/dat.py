"""Prophesee ``.dat`` (Event2D / CD, "Version 2"): N-Cars, Gen1 automotive, 1Mpx.

Layout:

- an ASCII header of lines that start with ``%`` (``% Data file containing ... events.``, ``% Version 2``,
  ``% Date ...``; newer files add ``% Height``/``% Width`` or ``% geometry WxH`` and ``% end``);
- when the header has a ``Version`` line: 2 bytes, the event type (0 = 2D CD event, 12 = EventCD) and the event
  size in bytes (8);
- 8-byte little-endian records: uint32 timestamp in µs, uint32 data with x = bits 0-13, y = bits 14-27,
  polarity = bits 28-31 (0/1).

The 32-bit timestamp wraps every ~71.6 min; each large drop (more than 2**31 µs) counts one wrap, so timestamps stay
absolute and non-decreasing. Any smaller decrease is an error in the file (reported with its index and offset).

Decoding: one pass of a numba kernel (:func:`evssl.events.io._kernels.dat_decode`) over the records (read in blocks);
:func:`decode_dat` is the numpy restatement (reference for the tests, fallback without numba).

Sensor size (``(height, width)``): the caller's ``sensor_size``, else the header's geometry, else the ATIS array
240x304 (N-Cars and Gen1) when every event fits, else max coordinate + 1 (these two are *inferred* sizes).
A header-only file raises :class:`~evssl.events.io._common.EmptyRecordingError`.
"""

from __future__ import annotations

import os

import numpy as np

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    SensorSize,
    build_events,
    choose_size,
    header_dict,
    header_geometry,
    max_xy,
    read_percent_header,
    source_name,
)
from evssl.events.io._stateful import Source, Spec, open_file, read_file
from evssl.events.schema import EventFormatError, Events

ATIS_SIZE = (240, 304)
RECORD_DTYPE = np.dtype([("t", "<u4"), ("data", "<u4")])
CD_TYPES = (0, 12)
WRAP = 1 << 32


SPEC = Spec("dat", "dat_decode", "dat_state", empty="header-only file", defaults=(ATIS_SIZE,), extra_capacity=0)


def _source(path: PathLike) -> tuple[Source, tuple[int, int] | None]:
    """The records after the header (a :class:`Source` of uint32 pairs), and the header's geometry."""
    src = source_name(path)
    lines, pos = read_percent_header(path, src)
    hdr = header_dict(lines)
    stated = header_geometry(hdr, src)
    size = os.path.getsize(path)
    if "version" in hdr:
        with open(path, "rb") as f:
            f.seek(pos)
            head = f.read(2)
        if len(head) < 2:
            raise EventFormatError(src, "event_type", f"file ends at byte {size} inside the event type/size")
        ev_type, ev_size = head[0], head[1]
        if ev_size != RECORD_DTYPE.itemsize:
            raise EventFormatError(src, "event_size", f"event size {ev_size} at byte {pos + 1}, expected 8")
        if ev_type not in CD_TYPES:
            raise EventFormatError(src, "event_type", f"event type {ev_type} at byte {pos} is not a CD event (0/12)")
        pos += 2
    body = size - pos
    if body % RECORD_DTYPE.itemsize:
        whole = body - body % RECORD_DTYPE.itemsize
        raise EventFormatError(
            src,
            "record",
            f"body of {body} bytes is not a multiple of 8: truncated record at byte offset {pos + whole}",
            whole // RECORD_DTYPE.itemsize,
        )
    return Source(str(path), src, pos, body // 8, "<u4", cols=2), stated


def read_dat(path: PathLike, sensor_size: SensorSize = None) -> Events:
    """Read a Prophesee ``.dat`` CD-event file (see the module doc for layout and sensor-size rule)."""
    return read_file(SPEC, path, sensor_size, _source, _read_numpy)[0]


def open_dat(path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000) -> Opened:
    """Chunked reading in bounded memory (see :func:`evssl.events.io.iter_events`)."""
    return open_file(SPEC, path, sensor_size, chunk_events, _source, _read_numpy)


def decode_dat(rec: np.ndarray, source: str = "") -> tuple[np.ndarray, ...]:
    """Decode ``(N, 2)`` uint32 records (timestamp, data) to ``(x, y, t, p_bits)`` (vectorised numpy reference)."""
    word = rec[:, 1]
    x = (word & 0x3FFF).astype(np.int64)
    y = ((word >> 14) & 0x3FFF).astype(np.int64)
    p = (word >> 28).astype(np.int64)
    bad = p > 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EventFormatError(source, "p", f"polarity bits {p[i]} are not 0/1", i)
    t = rec[:, 0].astype(np.int64)
    if len(t) > 1:
        wrapped = np.diff(t) < -(WRAP // 2)
        if wrapped.any():
            t[1:] += np.cumsum(wrapped, dtype=np.int64) * WRAP
    return x, y, t, p


def _read_numpy(source: Source, given: tuple[int, int] | str | None, stated: tuple[int, int] | None) -> tuple:
    """The numpy fallback (and reference): :func:`decode_dat`, then validation of the whole file."""
    src = source.src
    if not source.length:
        raise EmptyRecordingError(src, f"no events: {SPEC.empty}", given if isinstance(given, tuple) else stated)
    x, y, t, p = decode_dat(source.array().reshape(-1, 2), src)
    size, inferred = choose_size(given, stated, max_xy(x, y), SPEC.defaults, src)
    return build_events(x, y, t, p, size, src), inferred
