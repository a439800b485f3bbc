"""Prophesee ``.dat`` (Event2D / CD, "Version 2"): N-Cars, Gen1 automotive, 1Mpx.

Layout:

- an ASCII header of lines that start with ``%`` (``% Data file containing ... events.``, ``% Version 2``,
  ``% Date ...``; newer files add ``% Height``/``% Width`` or ``% geometry WxH`` and ``% end``);
- when the header has a ``Version`` line: 2 bytes, the event type (0 = 2D CD event, 12 = EventCD) and the event
  size in bytes (8);
- 8-byte little-endian records: uint32 timestamp in µs, uint32 data with x = bits 0-13, y = bits 14-27,
  polarity = bits 28-31 (0/1).

The 32-bit timestamp wraps every ~71.6 min; each large drop (more than 2**31 µs) counts one wrap, so timestamps stay
absolute and non-decreasing. Any smaller decrease is an error in the file (reported with its index).

Sensor size (``(height, width)``): the caller's ``sensor_size``, else the header's geometry, else the ATIS array
240x304 (N-Cars and Gen1) when every event fits, else max coordinate + 1.
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
    header_dict,
    header_geometry,
    max_xy,
    parse_percent_header,
    read_bytes,
    source_name,
    whole_file_opened,
)
from evssl.events.schema import EventFormatError, Events

ATIS_SIZE = (240, 304)
RECORD_DTYPE = np.dtype([("t", "<u4"), ("data", "<u4")])
CD_TYPES = (0, 12)
WRAP = 1 << 32


def read_dat(path: PathLike, sensor_size: SensorSize = None) -> Events:
    """Read a Prophesee ``.dat`` CD-event file (see the module doc for layout and sensor-size rule)."""
    return _read(path, sensor_size)[0]


def open_dat(path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000) -> Opened:
    """Chunked reading."""
    ev, inferred = _read(path, sensor_size)
    return whole_file_opened(ev, inferred, chunk_events)


def _read(path: PathLike, sensor_size: SensorSize) -> tuple[Events, bool]:
    src = source_name(path)
    given = caller_size(sensor_size, src)
    data = read_bytes(path)
    lines, pos = parse_percent_header(data, src)
    hdr = header_dict(lines)
    stated = header_geometry(hdr, src)
    if "version" in hdr:
        if len(data) < pos + 2:
            raise EventFormatError(src, "event_type", f"file ends at byte {len(data)} inside the event type/size")
        ev_type, ev_size = data[pos], data[pos + 1]
        if ev_size != RECORD_DTYPE.itemsize:
            raise EventFormatError(src, "event_size", f"event size {ev_size} at byte {pos + 1}, expected 8")
        if ev_type not in CD_TYPES:
            raise EventFormatError(src, "event_type", f"event type {ev_type} at byte {pos} is not a CD event (0/12)")
        pos += 2
    body = len(data) - pos
    if body % RECORD_DTYPE.itemsize:
        whole = body - body % RECORD_DTYPE.itemsize
        raise EventFormatError(
            src,
            "record",
            f"body of {body} bytes is not a multiple of 8: truncated record at byte offset {pos + whole}",
            whole // RECORD_DTYPE.itemsize,
        )
    if not body:
        raise EmptyRecordingError(src, "no events: header-only file", given if isinstance(given, tuple) else stated)
    rec = np.frombuffer(data, dtype=RECORD_DTYPE, offset=pos)
    word = rec["data"]
    x = (word & 0x3FFF).astype(np.int64)
    y = ((word >> 14) & 0x3FFF).astype(np.int64)
    p = (word >> 28).astype(np.int64)
    bad = p > 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EventFormatError(src, "p", f"polarity bits {p[i]} are not 0/1", i)
    t = rec["t"].astype(np.int64)
    if len(t) > 1:
        wrapped = np.diff(t) < -(WRAP // 2)
        if wrapped.any():
            t[1:] += np.cumsum(wrapped, dtype=np.int64) * WRAP
    size, inferred = choose_size(given, stated, max_xy(x, y), (ATIS_SIZE,), src)
    return build_events(x, y, t, p, size, src), inferred
