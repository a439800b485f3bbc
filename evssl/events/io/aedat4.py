"""AEDAT 4.0 (``.aedat4``, iniVation DV): polarity events of the first EVTS stream.

Layout:

- magic ``#!AER-DAT4.0\\r\\n`` (14 bytes), an int32 LE header length N, then N bytes of an ``IOHeader`` flatbuffer
  (file identifier ``IOHE``): field 0 compression (int32: 0 none, 1 LZ4, 2 LZ4 high, 3 Zstd, 4 Zstd high), field 1
  dataTablePosition (int64 offset of the trailing packet index, or -1), field 2 infoNode (an XML string describing
  every stream: ``typeIdentifier`` EVTS/FRME/IMUS/TRIG, ``sizeX``/``sizeY``, ``source``, ``tsOffset``);
- packets up to dataTablePosition (or EOF): int32 LE stream id, int32 LE byte size, then that many bytes, compressed
  with the file's compression (LZ4 = the standard LZ4 *frame* format);
- a decompressed packet is a size-prefixed flatbuffer (uint32 size, uint32 root offset, 4-byte identifier). For
  EVTS, root-table field 0 is a vector (uint32 count) of 16-byte structs ``{int64 t, int16 x, int16 y,
  uint8 polarity, 3 pad bytes}``.

The flatbuffers are walked by hand (root offset -> table -> vtable -> field offset), so no flatbuffers package is
needed; LZ4 frames are decoded with the ``lz4`` package, Zstd with ``zstandard`` when it is installed. Packets of
other streams (frames, IMU, triggers) are skipped without being decompressed. The structs of each packet are copied
into the schema columns by a numba kernel (:func:`evssl.events.io._kernels.aedat4_copy`) that checks every event
(polarity byte 0/1, coordinates >= 0 and inside the sensor, timestamps non-decreasing) on the way; a chunked read
handles one packet at a time. Timestamps are absolute µs since the
Unix epoch and are kept as they are. The sensor size comes from the stream's ``sizeY`` x ``sizeX`` in the XML.
"""

from __future__ import annotations

import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    SensorSize,
    caller_size,
    check_chunk_events,
    check_size,
    choose_size,
    max_xy,
    read_bytes,
    source_name,
)
from evssl.events.io._stateful import MaxXY, buffers, fallback_open, kernels
from evssl.events.schema import EventFormatError, Events

MAGIC = b"#!AER-DAT4.0\r\n"
EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1"), ("pad", "V3")])
COMPRESSION_NAMES = {0: "none", 1: "LZ4", 2: "LZ4 high", 3: "Zstd", 4: "Zstd high"}


@dataclass(frozen=True)
class StreamInfo:
    """One output stream of an AEDAT4 file, as described by the infoNode XML."""

    stream_id: int
    type_identifier: str
    size: tuple[int, int] | None  # (height, width)
    source: str
    attrs: dict[str, str]


class _Buf:
    """Bounds-checked little-endian reads from a flatbuffer (errors name the file, the field and the offset)."""

    def __init__(self, data: bytes, src: str, what: str, base: int = 0) -> None:
        self.data, self.src, self.what, self.base = data, src, what, base

    def unpack(self, fmt: str, off: int, field: str) -> int:
        size = struct.calcsize(fmt)
        if off < 0 or off + size > len(self.data):
            raise EventFormatError(
                self.src,
                field,
                f"{self.what}: offset {off} (+{size} bytes) is outside its {len(self.data)} bytes "
                f"(file offset {self.base})",
            )
        return struct.unpack_from(fmt, self.data, off)[0]

    def table_field(self, table: int, index: int, field: str) -> int | None:
        """Absolute position of field ``index`` of the table at ``table`` (None when absent/default)."""
        vtable = table - self.unpack("<i", table, field)
        vsize = self.unpack("<H", vtable, field)
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        rel = self.unpack("<H", vtable + slot, field)
        return table + rel if rel else None


def parse_header(data: bytes, src: str) -> tuple[int, int, str, int]:
    """Magic and IOHeader: ``(compression, data_table_position, info_xml, first_packet_offset)``."""
    if data[: len(MAGIC)] != MAGIC:
        raise EventFormatError(src, "magic", f"file does not start with {MAGIC!r} (got {data[:14]!r})", 0)
    if len(data) < len(MAGIC) + 4:
        raise EventFormatError(src, "header_size", f"file ends at byte {len(data)} inside the header length")
    (n,) = struct.unpack_from("<i", data, len(MAGIC))
    start = len(MAGIC) + 4
    if n < 8 or start + n > len(data):
        raise EventFormatError(src, "header_size", f"IOHeader length {n} at byte {len(MAGIC)} runs past EOF")
    hb = _Buf(data[start : start + n], src, "IOHeader", start)
    root = hb.unpack("<I", 0, "IOHeader")
    if hb.data[4:8] != b"IOHE":
        raise EventFormatError(src, "IOHeader", f"file identifier {hb.data[4:8]!r} at byte {start + 4}, expected IOHE")
    pos = hb.table_field(root, 0, "compression")
    compression = hb.unpack("<i", pos, "compression") if pos is not None else 0
    pos = hb.table_field(root, 1, "dataTablePosition")
    table_pos = hb.unpack("<q", pos, "dataTablePosition") if pos is not None else -1
    pos = hb.table_field(root, 2, "infoNode")
    info = ""
    if pos is not None:
        spos = pos + hb.unpack("<I", pos, "infoNode")
        slen = hb.unpack("<I", spos, "infoNode")
        if spos + 4 + slen > len(hb.data):
            raise EventFormatError(src, "infoNode", f"string of {slen} bytes at byte {start + spos} runs past header")
        info = hb.data[spos + 4 : spos + 4 + slen].decode("utf-8", errors="replace")
    return compression, table_pos, info, start + n


def parse_streams(info_xml: str, src: str = "") -> list[StreamInfo]:
    """Streams described by the infoNode XML (``<node name="outInfo">`` children), in stream-id order."""
    if not info_xml.strip():
        return []
    try:
        root = ET.fromstring(info_xml)
    except ET.ParseError as e:
        raise EventFormatError(src, "infoNode", f"invalid XML: {e}") from e
    streams = []
    for out in root.iter("node"):
        if out.get("name") != "outInfo":
            continue
        for node in out.findall("node"):
            name = node.get("name", "")
            if not name.lstrip("-").isdigit():
                continue
            attrs = {a.get("key", ""): (a.text or "") for a in node.iter("attr")}
            size = None
            if "sizeX" in attrs or "sizeY" in attrs:
                field = f"infoNode.{name}.sizeY/sizeX"
                size = check_size(attrs.get("sizeY", "<missing>"), attrs.get("sizeX", "<missing>"), src, field)
            streams.append(StreamInfo(int(name), attrs.get("typeIdentifier", ""), size, attrs.get("source", ""), attrs))
    return sorted(streams, key=lambda s: s.stream_id)


def _lz4_frames(data: bytes) -> bytes:
    """Decompress every LZ4 frame in ``data`` (a packet normally holds one; trailing bytes must be frames too)."""
    import lz4.frame

    view = memoryview(data)
    out = []
    off = 0
    while off < len(view):
        chunk, used = lz4.frame.decompress(view[off:], return_bytes_read=True)
        if used <= 0:
            raise RuntimeError(f"LZ4 frame at packet offset {off} consumed no bytes")
        out.append(chunk)
        off += used
    return b"".join(out)


def _decompressor(compression: int, src: str) -> Callable[[bytes], bytes]:
    if compression == 0:
        return lambda b: b
    if compression in (1, 2):
        return _lz4_frames
    if compression in (3, 4):
        try:
            import zstandard
        except ImportError as e:
            raise EventFormatError(
                src, "compression", "file is Zstd-compressed: install the 'zstandard' package to read it"
            ) from e
        dctx = zstandard.ZstdDecompressor()
        return lambda b: dctx.decompressobj().decompress(b)
    raise EventFormatError(src, "compression", f"unknown compression code {compression}")


def _events_of_packet(raw: bytes, src: str, offset: int) -> np.ndarray:
    buf = _Buf(raw, src, f"EVTS packet at byte {offset}", offset)
    size = buf.unpack("<I", 0, "packet")
    if size + 4 > len(raw):
        raise EventFormatError(src, "packet", f"EVTS flatbuffer size {size} exceeds its packet (byte {offset})")
    if raw[8:12] != b"EVTS":
        raise EventFormatError(src, "packet", f"identifier {raw[8:12]!r} in packet at byte {offset}, expected EVTS")
    table = 4 + buf.unpack("<I", 4, "packet")
    pos = buf.table_field(table, 0, "elements")
    if pos is None:
        return np.zeros(0, EVENT_DTYPE)
    vec = pos + buf.unpack("<I", pos, "elements")
    count = buf.unpack("<I", vec, "elements")
    if vec + 4 + count * EVENT_DTYPE.itemsize > len(raw):
        raise EventFormatError(src, "elements", f"{count} events run past the packet at byte {offset}")
    return np.frombuffer(raw, dtype=EVENT_DTYPE, count=count, offset=vec + 4)


@dataclass(frozen=True)
class _Layout:
    """Where the packets of an AEDAT 4.0 file lie and how to read the chosen EVTS stream."""

    src: str
    stream: StreamInfo
    compression: int
    first: int  # byte offset of the first packet
    end: int  # end of the packet area (the data table, or EOF)


def _layout(path: PathLike, stream_id: int | None) -> _Layout:
    """Parse magic, IOHeader and stream XML (reading only the header bytes) and pick the EVTS stream."""
    src = source_name(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if head[: len(MAGIC)] == MAGIC and len(head) == len(MAGIC) + 4:
            (n,) = struct.unpack_from("<i", head, len(MAGIC))
            if 0 < n <= file_size:
                head += f.read(n)
    compression, table_pos, info, pos = parse_header(head, src)
    streams = parse_streams(info, src)
    evts = [s for s in streams if s.type_identifier == "EVTS"]
    if stream_id is None:
        if not evts:
            raise EventFormatError(src, "infoNode", f"no EVTS stream among {[s.type_identifier for s in streams]}")
        stream = evts[0]
    else:
        stream = next((s for s in streams if s.stream_id == stream_id), None)
        if stream is None or stream.type_identifier != "EVTS":
            raise EventFormatError(src, "stream_id", f"stream {stream_id} is not an EVTS stream of this file")
    if 0 <= table_pos < pos:
        raise EventFormatError(src, "dataTablePosition", f"data table at byte {table_pos} lies inside the header")
    if table_pos > file_size:
        raise EventFormatError(
            src, "dataTablePosition", f"data table at byte {table_pos} lies beyond EOF ({file_size} bytes): truncated"
        )
    end = table_pos if table_pos >= 0 else file_size
    return _Layout(src, stream, compression, pos, end)


def _no_events(src: str, lay: _Layout, size: tuple[int, int] | None) -> EmptyRecordingError:
    """The error for an events stream without events (``size``: the sensor size known so far, if any)."""
    return EmptyRecordingError(src, f"no events in EVTS stream {lay.stream.stream_id}", size)


def _packets(lay: _Layout, fetch: Callable[[int, int], Any]) -> Iterator[tuple[np.ndarray, int]]:
    """``(event structs, packet byte offset)`` of every packet of the chosen stream; others are skipped unread.

    ``fetch(offset, n)`` returns ``n`` bytes of the file (a view of the whole file, or a read).
    """
    src, end, pos = lay.src, lay.end, lay.first
    decompress = _decompressor(lay.compression, src)
    while pos < end:
        if pos + 8 > end:
            raise EventFormatError(src, "packet", f"truncated packet header at byte {pos} (data ends at {end})")
        sid, size = struct.unpack_from("<ii", fetch(pos, 8))
        if size < 0 or pos + 8 + size > end:
            raise EventFormatError(
                src, "packet", f"packet at byte {pos} declares {size} bytes, beyond the end of the data at {end}"
            )
        if sid == lay.stream.stream_id:
            try:
                raw = decompress(fetch(pos + 8, size))
            except Exception as e:  # lz4 / zstd raise their own error types
                raise EventFormatError(
                    src,
                    "packet",
                    f"cannot decompress {COMPRESSION_NAMES.get(lay.compression)} packet at byte {pos}: {e}",
                ) from e
            ev = _events_of_packet(raw, src, pos)
            if len(ev):
                yield ev, pos
        pos += 8 + size


def _copy_error(err: np.ndarray, src: str, index: int, packet: int, size: tuple[int, int] | None) -> None:
    code, _, _, a, b = (int(v) for v in err)
    where = f" (in packet at byte {packet})"
    if code == 4:
        raise EventFormatError(src, "p", f"polarity byte {a} is not 0/1{where}", index)
    if code in (2, 3):
        field = "x" if code == 2 else "y"
        if b == 1:
            raise EventFormatError(src, field, f"negative coordinate {a}{where}", index)
        limit = (size[1] if code == 2 else size[0]) if size is not None else "?"
        raise EventFormatError(src, field, f"value {a} outside sensor range [0, {limit}){where}", index)
    raise EventFormatError(src, "t", f"timestamp decreases from {a} to {b}{where}", index)


class _Copier:
    """Copies packet structs into schema columns with the numba kernel, checking every event."""

    def __init__(self, src: str, size: tuple[int, int] | None, track_max: bool = True) -> None:
        from evssl.events.io import _kernels as k

        self.k, self.src, self.size = k, src, size
        self.width, self.height = (size[1], size[0]) if size is not None else (k.BIG, k.BIG)
        self.state = np.array([np.iinfo(np.int64).min], np.int64)
        self.max = MaxXY()
        self.track_max = track_max and size is None
        self.err = np.zeros(5, np.int64)
        self.count = 0  # events copied so far (for error indices)

    def copy(self, ev: np.ndarray, start: int, out: tuple[np.ndarray, ...], at: int, packet: int) -> int:
        """Copy ``ev[start:]`` into ``out[*][at:]`` (as much as fits); return the number copied."""
        _, n = self.k.aedat4_copy(
            ev["t"],
            ev["x"],
            ev["y"],
            ev["p"],
            start,
            *(o[at:] for o in out),
            self.state,
            self.width,
            self.height,
            self.err,
        )
        if self.err[0]:
            _copy_error(self.err, self.src, self.count + int(self.err[1]), packet, self.size)
        self.count += n
        if self.track_max:  # the size will be inferred from the largest coordinates
            self.max.update(out[0][at : at + n], out[1][at : at + n])
        return n

    @property
    def max_xy(self) -> tuple[int, int] | None:
        return self.max.value


def read_aedat4(path: PathLike, sensor_size: SensorSize = None, *, stream_id: int | None = None) -> Events:
    """Read the polarity events of an AEDAT 4.0 file (the first EVTS stream unless ``stream_id`` is given)."""
    return _read(path, sensor_size, stream_id)[0]


def open_aedat4(
    path: PathLike, sensor_size: SensorSize = None, *, stream_id: int | None = None, chunk_events: int = 1_000_000
) -> Opened:
    """Chunked reading in bounded memory: packets are read, decompressed and copied one at a time.

    Without a caller ``sensor_size`` or one in the stream's XML, a pre-pass over the packets finds the largest
    coordinates first.
    """
    chunk_events = check_chunk_events(chunk_events)
    if kernels() is None:
        ev, inferred = _read(path, sensor_size, stream_id)
        return fallback_open(ev, inferred, chunk_events, source_name(path))
    src = source_name(path)
    given = caller_size(sensor_size, src)
    lay = _layout(path, stream_id)
    stated = lay.stream.size
    bound = given if isinstance(given, tuple) else (stated if given is None else None)
    inferred = False
    if bound is None:
        copier = _Copier(src, None)
        scratch = buffers(1 << 16)
        for ev, off in _file_packets(path, lay):
            start = 0
            while start < len(ev):
                start += copier.copy(ev, start, scratch, 0, off)
        if not copier.count:
            raise _no_events(src, lay, None)
        size, inferred = choose_size(given, stated, copier.max_xy, (), src)
    else:
        size = bound

    def chunks() -> Iterator[Events]:
        copier = _Copier(src, size)
        out = buffers(chunk_events)
        filled = 0
        for ev, off in _file_packets(path, lay):
            start = 0
            while start < len(ev):
                n = copier.copy(ev, start, out, filled, off)
                start += n
                filled += n
                if filled == chunk_events:
                    yield Events(*out, size[0], size[1])
                    out = buffers(chunk_events)
                    filled = 0
        if filled:
            yield Events(*(o[:filled] for o in out), size[0], size[1])
        if not copier.count:
            raise _no_events(src, lay, bound)

    return Opened(size, inferred, chunks())


def _file_packets(path: PathLike, lay: _Layout) -> Iterator[tuple[np.ndarray, int]]:
    """:func:`_packets` reading the file packet by packet (bounded memory)."""
    with open(path, "rb") as f:

        def fetch(pos: int, n: int) -> bytes:
            f.seek(pos)
            return f.read(n)

        yield from _packets(lay, fetch)


LZ4_FRAME_MAGIC = 0x184D2204


def _capacity(lay: _Layout, data: memoryview) -> int | None:
    """An upper bound on the events of the stream from the packet headers alone, or None when it cannot be had.

    Uncompressed packets hold at most size / 16 events; LZ4 frames whose header states the content size hold at most
    content size / 16. Anything unusual (no content size, Zstd, a malformed packet) gives None: the caller then
    decompresses first and counts (the main pass reports malformed packets).
    """
    if lay.compression not in (0, 1, 2):
        return None
    total = 0
    pos = lay.first
    while pos + 8 <= lay.end:
        sid, size = struct.unpack_from("<ii", data, pos)
        if size < 0 or pos + 8 + size > lay.end:
            return None
        if sid == lay.stream.stream_id:
            if lay.compression == 0:
                total += size // EVENT_DTYPE.itemsize
            else:
                if size < 14:
                    return None
                magic, flg = struct.unpack_from("<IB", data, pos + 8)
                if magic != LZ4_FRAME_MAGIC or not flg & 0x08:  # no content size in the frame header
                    return None
                (content,) = struct.unpack_from("<Q", data, pos + 14)
                total += content // EVENT_DTYPE.itemsize
        pos += 8 + size
    return total


def _read(path: PathLike, sensor_size: SensorSize, stream_id: int | None) -> tuple[Events, bool]:
    src = source_name(path)
    given = caller_size(sensor_size, src)
    lay = _layout(path, stream_id)
    data = memoryview(read_bytes(path))
    stated = lay.stream.size
    bound = given if isinstance(given, tuple) else (stated if given is None else None)
    capacity = _capacity(lay, data) if kernels() is not None else None
    if capacity is not None:  # one pass: decompress a packet, copy it while it is in cache, drop it
        copier = _Copier(src, bound, track_max=False)
        out = buffers(capacity)
        at = 0
        for ev, off in _packets(lay, lambda pos, n: data[pos : pos + n]):
            if at + len(ev) > capacity:
                raise EventFormatError(src, "elements", f"packet at byte {off} holds more events than its frame size")
            at += copier.copy(ev, 0, out, at, off)
        if not at:
            raise _no_events(src, lay, given if isinstance(given, tuple) else stated)
        cols = tuple(c[:at] for c in out)
        size, inferred = choose_size(given, stated, max_xy(cols[0], cols[1]) if bound is None else None, (), src)
        return Events(*cols, size[0], size[1]), inferred
    if kernels() is None:
        packets = [ev for ev, _ in _packets(lay, lambda pos, n: data[pos : pos + n])]
        if not packets:
            raise _no_events(src, lay, given if isinstance(given, tuple) else stated)
        return _read_numpy(np.concatenate(packets), given, stated, src)
    # the count is unknown: decompress and copy packet by packet into parts, then join them (one more copy of the
    # columns, but no decompressed file held in memory and every packet copied while it is in cache)
    copier = _Copier(src, bound, track_max=False)
    parts: list[tuple[np.ndarray, ...]] = []
    out = buffers(PART_EVENTS)
    at = 0
    for ev, off in _packets(lay, lambda pos, n: data[pos : pos + n]):
        start = 0
        while start < len(ev):
            n = copier.copy(ev, start, out, at, off)
            start += n
            at += n
            if at == PART_EVENTS:
                parts.append(out)
                out, at = buffers(PART_EVENTS), 0
    parts.append(tuple(c[:at] for c in out))
    total = sum(len(p[0]) for p in parts)
    if not total:
        raise _no_events(src, lay, given if isinstance(given, tuple) else stated)
    if len(parts) == 1:
        cols = parts[0]
    else:
        cols = buffers(total)
        for c, dst in enumerate(cols):
            np.concatenate([p[c] for p in parts], out=dst)
    size, inferred = choose_size(given, stated, max_xy(cols[0], cols[1]) if bound is None else None, (), src)
    return Events(*cols, size[0], size[1]), inferred


PART_EVENTS = 1 << 20


def _read_numpy(ev: np.ndarray, given: Any, stated: tuple[int, int] | None, src: str) -> tuple[Events, bool]:
    """The numpy fallback (and reference) for the checks and the column copy."""
    p = ev["p"]
    bad = p > 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EventFormatError(src, "p", f"polarity byte {p[i]} is not 0/1", i)
    for name in ("x", "y"):
        neg = ev[name] < 0
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise EventFormatError(src, name, f"negative coordinate {ev[name][i]}", i)
    size, inferred = choose_size(given, stated, max_xy(ev["x"], ev["y"]), (), src)
    out = Events(
        np.ascontiguousarray(ev["x"]),
        np.ascontiguousarray(ev["y"]),
        np.ascontiguousarray(ev["t"]),
        (p.astype(np.int8) * 2 - 1).astype(np.int8),
        size[0],
        size[1],
    )
    return out.validate(src), inferred
