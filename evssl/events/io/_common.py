"""Helpers shared by the format readers: file access, sensor-size resolution, header parsing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from evssl.events.schema import EventFormatError, Events

PathLike = str | os.PathLike
#: ``(height, width)``, ``None`` (the format's default rule) or ``"fit"`` (max coordinate + 1).
SensorSize = tuple[int, int] | str | None


def read_bytes(path: PathLike) -> bytes:
    """The whole file as bytes (``FileNotFoundError`` when it is missing)."""
    with open(path, "rb") as f:
        return f.read()


def fit_size(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """Smallest ``(height, width)`` holding every event (1x1 for an empty stream)."""
    h = int(y.max()) + 1 if len(y) else 1
    w = int(x.max()) + 1 if len(x) else 1
    return h, w


def fits(x: np.ndarray, y: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether every event lies inside a sensor of ``size = (height, width)``."""
    if not len(x):
        return True
    return int(x.max()) < size[1] and int(y.max()) < size[0]


def resolve_size(
    sensor_size: SensorSize,
    x: np.ndarray,
    y: np.ndarray,
    defaults: tuple[tuple[int, int], ...] = (),
    source: str = "",
) -> tuple[int, int]:
    """Pick the sensor size: the caller's, else the first default that fits, else max + 1.

    ``sensor_size`` is ``(height, width)``, ``"fit"`` (max coordinate + 1) or ``None`` (try ``defaults`` in order).
    """
    if isinstance(sensor_size, str):
        if sensor_size != "fit":
            raise ValueError(f"sensor_size must be (height, width), 'fit' or None, got {sensor_size!r}")
        return fit_size(x, y)
    if sensor_size is not None:
        if len(sensor_size) != 2:
            raise ValueError(f"sensor_size must be (height, width), got {sensor_size!r}")
        h, w = (int(v) for v in sensor_size)
        if h <= 0 or w <= 0:
            raise EventFormatError(source, "sensor_size", f"invalid sensor size {h}x{w}")
        return h, w
    for size in defaults:
        if fits(x, y, size):
            return size
    return fit_size(x, y)


def build_events(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p_bits: np.ndarray,
    size: tuple[int, int],
    source: str,
) -> Events:
    """Events from decoded columns (0/1 polarity), cast to the schema and validated against ``source``."""
    ev = Events(
        x.astype(np.int16, copy=False),
        y.astype(np.int16, copy=False),
        t.astype(np.int64, copy=False),
        (p_bits.astype(np.int8) * 2 - 1).astype(np.int8, copy=False),
        int(size[0]),
        int(size[1]),
    )
    return ev.validate(source)


def check_coords(x: np.ndarray, y: np.ndarray, source: str) -> None:
    """Coordinates must fit the schema's int16 before casting (raise naming the first bad index)."""
    for name, arr in (("x", x), ("y", y)):
        if len(arr):
            bad = arr > np.iinfo(np.int16).max
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise EventFormatError(source, name, f"value {arr[i]} does not fit int16", i)


def parse_percent_header(data: bytes | memoryview, source: str) -> tuple[list[str], int]:
    """Split a Prophesee ``%`` ASCII header from the binary body.

    The header is the run of lines that start with ``%``; it ends at the first line that does not, or right after a
    ``% end`` line. Returns the header lines (without ``%`` and surrounding blanks) and the body's byte offset.
    """
    lines: list[str] = []
    pos = 0
    n = len(data)
    while pos < n and data[pos] == 0x25:  # '%'
        end = bytes(data[pos : min(n, pos + 65536)]).find(b"\n")
        if end < 0:
            raise EventFormatError(source, "header", f"header line at byte {pos} has no end of line")
        line = bytes(data[pos + 1 : pos + end]).decode("latin-1").strip()
        pos += end + 1
        lines.append(line)
        if line.lower() == "end":
            break
    return lines, pos


def header_dict(lines: list[str]) -> dict[str, str]:
    """``% key value`` header lines as a dict (lower-case keys; the first occurrence wins)."""
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(" ")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def header_geometry(hdr: dict[str, str]) -> tuple[int, int] | None:
    """``(height, width)`` from Prophesee header lines, if present.

    Understands ``% Height H`` + ``% Width W``, ``% geometry WxH`` and ``% format EVT3;height=H;width=W``.
    """
    h, w = hdr.get("height", ""), hdr.get("width", "")
    if h.isdigit() and w.isdigit():
        return int(h), int(w)
    m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", hdr.get("geometry", ""))
    if m:
        return int(m.group(2)), int(m.group(1))
    fmt = dict(kv.split("=", 1) for kv in hdr.get("format", "").split(";") if "=" in kv)
    h, w = fmt.get("height", "").strip(), fmt.get("width", "").strip()
    if h.isdigit() and w.isdigit():
        return int(h), int(w)
    return None


def source_name(path: PathLike) -> str:
    """The string every error message uses for a file."""
    return str(Path(path))
