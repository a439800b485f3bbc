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
other streams (frames, IMU, triggers) are skipped without being decompressed. Timestamps are absolute µs since the
Unix epoch and are kept as they are. The sensor size comes from the stream's ``sizeY`` x ``sizeX`` in the XML.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    SensorSize,
    caller_size,
    check_size,
    choose_size,
    max_xy,
    read_bytes,
    source_name,
    whole_file_opened,
)
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


def read_aedat4(path: PathLike, sensor_size: SensorSize = None, *, stream_id: int | None = None) -> Events:
    """Read the polarity events of an AEDAT 4.0 file (the first EVTS stream unless ``stream_id`` is given)."""
    return _read(path, sensor_size, stream_id)[0]


def open_aedat4(
    path: PathLike, sensor_size: SensorSize = None, *, stream_id: int | None = None, chunk_events: int = 1_000_000
) -> Opened:
    """Chunked reading."""
    ev, inferred = _read(path, sensor_size, stream_id)
    return whole_file_opened(ev, inferred, chunk_events)


def _read(path: PathLike, sensor_size: SensorSize, stream_id: int | None) -> tuple[Events, bool]:
    src = source_name(path)
    given = caller_size(sensor_size, src)
    data = read_bytes(path)
    compression, table_pos, info, pos = parse_header(data, src)
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
    if table_pos > len(data):
        raise EventFormatError(
            src, "dataTablePosition", f"data table at byte {table_pos} lies beyond EOF ({len(data)} bytes): truncated"
        )
    end = table_pos if table_pos >= 0 else len(data)
    decompress = _decompressor(compression, src)
    parts: list[np.ndarray] = []
    while pos < end:
        if pos + 8 > end:
            raise EventFormatError(src, "packet", f"truncated packet header at byte {pos} (data ends at {end})")
        sid, size = struct.unpack_from("<ii", data, pos)
        if size < 0 or pos + 8 + size > end:
            raise EventFormatError(
                src, "packet", f"packet at byte {pos} declares {size} bytes, beyond the end of the data at {end}"
            )
        if sid == stream.stream_id:
            try:
                raw = decompress(data[pos + 8 : pos + 8 + size])
            except Exception as e:  # lz4 / zstd raise their own error types
                raise EventFormatError(
                    src, "packet", f"cannot decompress {COMPRESSION_NAMES.get(compression)} packet at byte {pos}: {e}"
                ) from e
            parts.append(_events_of_packet(raw, src, pos))
        pos += 8 + size
    ev = np.concatenate(parts) if parts else np.zeros(0, EVENT_DTYPE)
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
    if not len(ev):
        stated = given if isinstance(given, tuple) else stream.size
        raise EmptyRecordingError(src, f"no events in EVTS stream {stream.stream_id}", stated)
    size, inferred = choose_size(given, stream.size, max_xy(ev["x"], ev["y"]), (), src)
    out = Events(
        np.ascontiguousarray(ev["x"]),
        np.ascontiguousarray(ev["y"]),
        np.ascontiguousarray(ev["t"]),
        (p.astype(np.int8) * 2 - 1).astype(np.int8),
        size[0],
        size[1],
    )
    return out.validate(src), inferred
