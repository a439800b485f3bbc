"""N-MNIST / N-Caltech101 ``.bin`` (and slayerPytorch ``.bs2``): 40-bit big-endian ATIS records.

Layout (no header; the file is a sequence of 5-byte records, so its size is a multiple of 5):

- byte 0: x (0-based), byte 1: y (0-based)
- byte 2 bit 7: polarity (1 = ON)
- byte 2 bits 6..0, byte 3, byte 4: a 23-bit timestamp in µs, most significant bits first.

A record with ``y == 240`` is a timestamp-overflow marker (Orchard's reference readers, tonic): it is dropped and
``2**13`` µs is added to the timestamp of every later record. The class label lives in the directory or file name,
never in the file.

Sensor size (``(height, width)``): the caller's ``sensor_size``; by default N-MNIST's 34x34 when every event fits,
else the full ATIS array 240x304 (N-Caltech101 samples are crops of varying size inside it; every 8-bit x and every
non-marker y < 240 fits); ``"fit"`` gives max coordinate + 1. Both defaults are *inferred* sizes (the file states
none). An empty file raises :class:`~evssl.events.io._common.EmptyRecordingError`.
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
    read_bytes,
    source_name,
    whole_file_opened,
)
from evssl.events.schema import EventFormatError, Events

RECORD_BYTES = 5
OVERFLOW_Y = 240
OVERFLOW_INCREMENT = 1 << 13
NMNIST_SIZE = (34, 34)
ATIS_SIZE = (240, 304)


def decode_bin40(data: bytes | np.ndarray, source: str = "") -> tuple[np.ndarray, ...]:
    """Decode 40-bit records to ``(x, y, t, p_bits)`` numpy columns (overflow markers applied and dropped)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if buf.size % RECORD_BYTES:
        whole = buf.size - buf.size % RECORD_BYTES
        raise EventFormatError(
            source,
            "record",
            f"size {buf.size} bytes is not a multiple of {RECORD_BYTES}: truncated record at byte offset {whole}",
            whole // RECORD_BYTES,
        )
    rec = buf.reshape(-1, RECORD_BYTES)
    x = rec[:, 0]
    y = rec[:, 1]
    b2 = rec[:, 2]
    p = b2 >> 7
    t = ((b2 & 0x7F).astype(np.int64) << 16) | (rec[:, 3].astype(np.int64) << 8) | rec[:, 4].astype(np.int64)
    marker = y == OVERFLOW_Y
    if marker.any():
        t += np.cumsum(marker, dtype=np.int64) * OVERFLOW_INCREMENT
        keep = ~marker
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    return x, y, t, p


def _read(path: PathLike, sensor_size: SensorSize) -> tuple[Events, bool]:
    src = source_name(path)
    given = caller_size(sensor_size, src)
    x, y, t, p = decode_bin40(read_bytes(path), src)
    if not len(x):
        raise EmptyRecordingError(src, "no events: the file is empty", given if isinstance(given, tuple) else None)
    size, inferred = choose_size(given, None, max_xy(x, y), (NMNIST_SIZE, ATIS_SIZE), src)
    return build_events(x, y, t, p, size, src), inferred


def read_bin40(path: PathLike, sensor_size: SensorSize = None) -> Events:
    """Read an N-MNIST / N-Caltech101 40-bit ``.bin`` file (see the module doc for the sensor-size rule)."""
    return _read(path, sensor_size)[0]


def open_bin40(path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000) -> Opened:
    """Chunked reading (the files are small: read whole, then split)."""
    ev, inferred = _read(path, sensor_size)
    return whole_file_opened(ev, inferred, chunk_events)
