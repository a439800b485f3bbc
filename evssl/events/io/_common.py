"""Helpers shared by the format readers: file access, sensor-size resolution, header parsing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from evssl.events.schema import MAX_COORD, EventFormatError, Events

PathLike = str | os.PathLike
#: ``(height, width)``, ``None`` (the format's default rule) or ``"fit"`` (max coordinate + 1).
SensorSize = tuple[int, int] | str | None


def read_bytes(path: PathLike) -> bytes:
    """The whole file as bytes (``FileNotFoundError`` when it is missing)."""
    with open(path, "rb") as f:
        return f.read()


class EmptyRecordingError(EventFormatError):
    """A file that holds no events at all (empty, header-only, or only non-event words).

    A subclass of :class:`EventFormatError`, so callers that treat any bad file alike need nothing new; callers that
    may accept 0-event recordings (``evssl convert --allow-empty``) catch this one. ``sensor_size`` is the size the
    file states (header, XML, metadata) or the caller gave, ``None`` when neither exists.
    """

    def __init__(self, source: str, message: str, sensor_size: tuple[int, int] | None = None) -> None:
        super().__init__(source, "events", message)
        self.sensor_size = sensor_size


class Probe(NamedTuple):
    """What :func:`evssl.events.io.probe_events` reports: the format, the sensor size and how the size was found.

    ``inferred`` is True when neither the caller nor the file stated the size, i.e. it was guessed from the events
    (a format default chosen because every event fits it, or max coordinate + 1).
    """

    format: str
    height: int
    width: int
    inferred: bool


def check_size(height: object, width: object, source: str, field: str = "sensor_size") -> tuple[int, int]:
    """A sensor size as ``(height, width)`` ints in ``[1, 32767]`` (the schema's int16 coordinates), else raise.

    Non-integral values (``480.5``, ``"480"`` strings are accepted only when they are decimal integers) and sizes
    outside the int16 range raise :class:`EventFormatError` naming ``source`` and ``field``.
    """
    out = []
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, (bool, np.bool_)):
            raise EventFormatError(source, field, f"{name} {v!r} is not an integer")
        if isinstance(v, str):
            if not v.strip().isdigit():
                raise EventFormatError(source, field, f"{name} {v!r} is not a positive integer")
            v = int(v.strip())
        elif isinstance(v, (float, np.floating)):
            if not np.isfinite(v) or v != round(v):
                raise EventFormatError(source, field, f"{name} {v!r} is not an integer")
            v = int(v)
        elif isinstance(v, (int, np.integer)):
            v = int(v)
        else:
            raise EventFormatError(source, field, f"{name} {v!r} is not an integer")
        if not 1 <= v <= MAX_COORD:
            raise EventFormatError(source, field, f"{name} {v} outside [1, {MAX_COORD}] (int16 coordinates)")
        out.append(v)
    return out[0], out[1]


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


def caller_size(sensor_size: SensorSize, source: str) -> tuple[int, int] | str | None:
    """The caller's ``sensor_size`` checked: ``(height, width)`` ints, ``"fit"`` or ``None``."""
    if isinstance(sensor_size, str):
        if sensor_size != "fit":
            raise ValueError(f"sensor_size must be (height, width), 'fit' or None, got {sensor_size!r}")
        return sensor_size
    if sensor_size is None:
        return None
    if len(sensor_size) != 2:
        raise ValueError(f"sensor_size must be (height, width), got {sensor_size!r}")
    return check_size(sensor_size[0], sensor_size[1], source)


def choose_size(
    sensor_size: SensorSize,
    stated: tuple[int, int] | None,
    max_xy: tuple[int, int] | None,
    defaults: tuple[tuple[int, int], ...] = (),
    source: str = "",
) -> tuple[tuple[int, int], bool]:
    """``(size, inferred)``: the caller's size, else the file's ``stated`` one, else a default / max + 1.

    ``max_xy`` is ``(max x, max y)`` of the events (``None`` for none). Order: ``sensor_size`` (``(h, w)``; ``"fit"``
    forces max + 1), then ``stated``, then the first of ``defaults`` that holds every event, then max + 1 (1x1 when
    there are no events). ``inferred`` is True for the last two (the size was guessed from the events).
    """
    given = caller_size(sensor_size, source)
    fit = (max_xy[1] + 1, max_xy[0] + 1) if max_xy is not None else (1, 1)
    if given == "fit":
        return check_size(*fit, source, "sensor_size"), True
    if given is not None:
        return given, False  # type: ignore[return-value]
    if stated is not None:
        return stated, False
    for size in defaults:
        if max_xy is None or (max_xy[0] < size[1] and max_xy[1] < size[0]):
            return size, True
    return check_size(*fit, source, "sensor_size"), True


def max_xy(x: np.ndarray, y: np.ndarray) -> tuple[int, int] | None:
    """``(max x, max y)``, or None for no events."""
    return (int(x.max()), int(y.max())) if len(x) else None


def resolve_size(
    sensor_size: SensorSize,
    x: np.ndarray,
    y: np.ndarray,
    defaults: tuple[tuple[int, int], ...] = (),
    source: str = "",
) -> tuple[int, int]:
    """Pick the sensor size: the caller's, else the first default that fits, else max + 1 (see :func:`choose_size`).

    ``sensor_size`` is ``(height, width)``, ``"fit"`` (max coordinate + 1) or ``None`` (try ``defaults`` in order).
    """
    return choose_size(sensor_size, None, max_xy(x, y), defaults, source)[0]


def split_events(ev: Events, chunk_events: int) -> Iterator[Events]:
    """``ev`` as consecutive chunks of ``chunk_events`` events (views, no copy); the last may be shorter."""
    for start in range(0, len(ev), chunk_events):
        yield ev[start : start + chunk_events]


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
    """Split a Prophesee ``%`` ASCII header from the binary body (one linear pass).

    The header is the run of lines that start with ``%``; it ends at the first line that does not, or right after a
    ``% end`` line. Returns the header lines (without ``%`` and surrounding blanks) and the body's byte offset.
    """
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    lines, pos, _ = _scan_header(data, 0, [], source, final=True)
    return lines, pos


def _scan_header(data: bytes | bytearray, pos: int, lines: list[str], source: str, final: bool) -> tuple:
    """Parse header lines of ``data`` from ``pos``: ``(lines, pos, complete)``.

    ``complete`` is False when ``data`` ends inside the header (a line without its end of line, or right after a
    whole line) and more bytes may follow (``final=False``); with ``final=True`` an unterminated line raises.
    """
    n = len(data)
    while pos < n and data[pos] == 0x25:  # '%'
        end = data.find(b"\n", pos)
        if end < 0:
            if not final:
                return lines, pos, False
            raise EventFormatError(source, "header", f"header line at byte {pos} has no end of line")
        line = bytes(data[pos + 1 : end]).decode("latin-1").strip()
        pos = end + 1
        lines.append(line)
        if line.lower() == "end":
            return lines, pos, True
    return lines, pos, pos < n or final


HEADER_BLOCK = 1 << 16


def read_percent_header(path: PathLike, source: str) -> tuple[list[str], int]:
    """The ``%`` header of a file read in blocks and parsed once, linearly (see :func:`parse_percent_header`).

    Blocks are appended to one growing buffer and each line is scanned once, so a multi-megabyte header costs
    one pass over its bytes (not one re-scan per block).
    """
    buf = bytearray()
    lines: list[str] = []
    pos = 0
    with open(path, "rb") as f:
        block = HEADER_BLOCK
        while True:
            more = f.read(block)
            buf += more
            lines, pos, complete = _scan_header(buf, pos, lines, source, final=not more)
            if complete:
                return lines, pos
            block = min(block * 2, 1 << 24)


def header_dict(lines: list[str]) -> dict[str, str]:
    """``% key value`` header lines as a dict (lower-case keys; the first occurrence wins)."""
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(" ")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def header_geometry(hdr: dict[str, str], source: str = "") -> tuple[int, int] | None:
    """``(height, width)`` from Prophesee header lines, if present; a malformed or out-of-range one raises.

    Understands ``% Height H`` + ``% Width W``, ``% geometry WxH`` and ``% format EVT3;height=H;width=W``. A size that
    is present but not a pair of integers in [1, 32767] raises :class:`EventFormatError` naming the header field.
    """
    if "height" in hdr or "width" in hdr:
        return check_size(hdr.get("height", "<missing>"), hdr.get("width", "<missing>"), source, "header.height/width")
    if "geometry" in hdr:
        m = re.fullmatch(r"\s*(\S+)\s*x\s*(\S+)\s*", hdr["geometry"])
        if not m:
            raise EventFormatError(source, "header.geometry", f"{hdr['geometry']!r} is not WIDTHxHEIGHT")
        return check_size(m.group(2), m.group(1), source, "header.geometry")
    pairs = (kv.split("=", 1) for kv in hdr.get("format", "").split(";") if "=" in kv)
    fmt = {k.strip().lower(): v.strip() for k, v in pairs}
    if "height" in fmt or "width" in fmt:
        return check_size(fmt.get("height", "<missing>"), fmt.get("width", "<missing>"), source, "header.format")
    return None


def source_name(path: PathLike) -> str:
    """The string every error message uses for a file."""
    return str(Path(path))


@dataclass
class Opened:
    """A file opened for chunked reading: its sensor size (and whether that was inferred) and the chunk iterator.

    ``chunks`` is a generator that has not started: nothing beyond the header (and, where the size must be inferred,
    one bounded-memory pre-pass) has been read yet. Its concatenation equals the format's ``read_*`` result.
    """

    size: tuple[int, int]
    inferred: bool
    chunks: Iterator[Events]


def whole_file_opened(ev: Events, inferred: bool, chunk_events: int) -> Opened:
    """:class:`Opened` for a small format read whole and split into chunks."""
    return Opened(ev.sensor_size, inferred, split_events(ev, chunk_events))


def check_chunk_events(chunk_events: int) -> int:
    """``chunk_events`` as a positive int."""
    n = int(chunk_events)
    if n <= 0 or n != chunk_events:
        raise ValueError(f"chunk_events must be a positive integer, got {chunk_events!r}")
    return n


def validate_chunk(ev: Events, source: str, offset: int, last_t: int | None) -> None:
    """:meth:`Events.validate` for one chunk of a stream: indices in errors count from the stream's start.

    ``offset`` is the stream index of the chunk's first event and ``last_t`` the previous chunk's last timestamp
    (``None`` for the first chunk), so a decrease across the boundary is caught too.
    """
    n = len(ev)
    if not n:
        return
    for f, size in (("x", ev.width), ("y", ev.height)):
        arr = getattr(ev, f)
        bad = (arr < 0) | (arr >= size)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EventFormatError(source, f, f"value {arr[i]} outside sensor range [0, {size})", offset + i)
    t = ev.t
    if last_t is not None and t[0] < last_t:
        raise EventFormatError(source, "t", f"timestamp decreases from {last_t} to {t[0]}", offset)
    dec = t[1:] < t[:-1]
    if dec.any():
        i = int(np.flatnonzero(dec)[0]) + 1
        raise EventFormatError(source, "t", f"timestamp decreases from {t[i - 1]} to {t[i]}", offset + i)
    badp = (ev.p != 1) & (ev.p != -1)
    if badp.any():
        i = int(np.flatnonzero(badp)[0])
        raise EventFormatError(source, "p", f"polarity {ev.p[i]} is not -1/+1", offset + i)


class StreamChecks:
    """Running checks over a stream of chunks: global indices, time order across chunks, the empty-file case."""

    def __init__(self, source: str, size: tuple[int, int]) -> None:
        self.source, self.size = source, size
        self.count = 0
        self.last_t: int | None = None

    def check(self, ev: Events) -> Events:
        """Validate ``ev`` as the next chunk and advance."""
        validate_chunk(ev, self.source, self.count, self.last_t)
        if len(ev):
            self.count += len(ev)
            self.last_t = int(ev.t[-1])
        return ev

    def finish(self, stated: tuple[int, int] | None, what: str = "the file holds no events") -> None:
        """Raise :class:`EmptyRecordingError` (carrying the ``stated`` size) when no event was seen."""
        if not self.count:
            raise EmptyRecordingError(self.source, f"no events: {what}", stated)


def rechunk(pieces: Iterator[tuple[np.ndarray, ...]], chunk_events: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Column tuples of any lengths regrouped into tuples of exactly ``chunk_events`` rows (the last may be short).

    Memory held: at most one output chunk plus one input piece.
    """
    held: list[tuple[np.ndarray, ...]] = []
    n_held = 0
    for piece in pieces:
        n = len(piece[0])
        start = 0
        while n - start:
            take = min(chunk_events - n_held, n - start)
            held.append(tuple(a[start : start + take] for a in piece))
            n_held += take
            start += take
            if n_held == chunk_events:
                yield held[0] if len(held) == 1 else tuple(np.concatenate(c) for c in zip(*held))
                held, n_held = [], 0
    if n_held:
        yield held[0] if len(held) == 1 else tuple(np.concatenate(c) for c in zip(*held))
