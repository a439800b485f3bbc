"""Small, deliberately simple encoders for every readable format, written from the byte layouts.

They let round-trip tests (random events -> bytes -> reader -> equal) run without the real recordings. They are
test helpers: per-event Python loops are fine here (the inputs are a few thousand events).
"""

from __future__ import annotations

import struct

import lz4.frame
import numpy as np

from evssl.events.schema import Events


def random_events(
    n: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    t0: int = 0,
    max_dt: int = 50,
    unique: bool = False,
) -> Events:
    """``n`` random events with non-decreasing t starting at ``t0`` (optionally unique per (t, y, p, x))."""
    t = t0 + np.cumsum(rng.integers(0, max_dt + 1, n)).astype(np.int64)
    x = rng.integers(0, width, n).astype(np.int16)
    y = rng.integers(0, height, n).astype(np.int16)
    p = rng.choice(np.array([-1, 1], np.int8), n)
    if unique:  # sort by (t, y, p, x) and drop duplicates: the order an EVT 3.0 decoder emits
        key = np.stack([t, y.astype(np.int64), p.astype(np.int64), x.astype(np.int64)])
        order = np.lexsort(key[::-1])
        t, x, y, p = t[order], x[order], y[order], p[order]
        keep = np.ones(n, bool)
        keep[1:] = (np.diff(t) != 0) | (np.diff(y) != 0) | (np.diff(p) != 0) | (np.diff(x) != 0)
        t, x, y, p = t[keep], x[keep], y[keep], p[keep]
    return Events(x, y, t, p, height, width)


def bits(p: np.ndarray) -> np.ndarray:
    """Polarity ±1 -> 0/1."""
    return (np.asarray(p) > 0).astype(np.int64)


# ---------------------------------------------------------------------------------------------- N-MNIST .bin
def encode_bin40(ev: Events, markers_before: tuple[int, ...] = ()) -> bytes:
    """40-bit records; an overflow marker (y=240) is inserted before each event index in ``markers_before``.

    Each marker makes the reader add 2**13 µs to every later event, so later stored timestamps are lowered to match.
    """
    out = bytearray()
    k = 0
    for i in range(len(ev)):
        while k < len(markers_before) and markers_before[k] == i:
            out += bytes([0, 240, 0, 0, 0])
            k += 1
        t = int(ev.t[i]) - k * (1 << 13)
        assert 0 <= t < (1 << 23), "timestamp does not fit 23 bits"
        out += bytes([int(ev.x[i]), int(ev.y[i]), (int(ev.p[i] > 0) << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


# ---------------------------------------------------------------------------------------------- Prophesee .dat
def encode_dat(ev: Events, header: tuple[str, ...] = ("Data file containing Event2D events.", "Version 2")) -> bytes:
    """``%`` header, type/size bytes (when a Version line is present), 8-byte records (t modulo 2**32)."""
    head = b"".join(f"% {line}\n".encode() for line in header)
    if any(line.startswith("Version") for line in header):
        head += bytes([0, 8])
    rec = np.empty(len(ev), dtype=[("t", "<u4"), ("d", "<u4")])
    rec["t"] = (ev.t % (1 << 32)).astype(np.uint32)
    rec["d"] = (ev.x.astype(np.uint32) | (ev.y.astype(np.uint32) << 14) | (bits(ev.p).astype(np.uint32) << 28)).astype(
        np.uint32
    )
    return head + rec.tobytes()


# ---------------------------------------------------------------------------------------------- EVT 2.0
def raw_header(version: str, extra: tuple[str, ...] = ()) -> bytes:
    """A Prophesee ``.raw`` ASCII header."""
    lines = ("Date 2024-01-01 00:00:00", f"evt {version}", *extra)
    return b"".join(f"% {line}\n".encode() for line in lines)


def encode_evt2(
    ev: Events,
    *,
    extra: tuple[str, ...] = ("format EVT2;height=480;width=640",),
    orphans: int = 0,
    junk_every: int = 0,
) -> bytes:
    """EVT 2.0 words: TIME_HIGH whenever t >> 6 changes, CD words with the 6 low bits.

    ``orphans`` CD words are written before the first TIME_HIGH (the reader must drop them); every ``junk_every``
    events an EXT_TRIGGER and an OTHERS word are inserted (the reader must skip them).
    """
    words: list[int] = [(1 << 28) | (5 << 11) | 7] * orphans
    high = None
    for i in range(len(ev)):
        t = int(ev.t[i])
        th = (t >> 6) & 0x0FFFFFFF
        if th != high:
            words.append((0x8 << 28) | th)
            high = th
        if junk_every and i % junk_every == 0:
            words += [(0xA << 28) | 0x123, (0xE << 28) | 0x456]
        words.append((int(ev.p[i] > 0) << 28) | ((t & 0x3F) << 22) | (int(ev.x[i]) << 11) | int(ev.y[i]))
    return raw_header("2.0", extra) + np.array(words, dtype="<u4").tobytes()


# ---------------------------------------------------------------------------------------------- EVT 3.0
def encode_evt3(
    ev: Events,
    rng: np.random.Generator,
    *,
    extra: tuple[str, ...] = ("format EVT3;height=720;width=1280",),
    junk: float = 0.05,
) -> bytes:
    """EVT 3.0 words for events sorted by (t, y, p, x) without duplicates (see ``random_events(unique=True)``).

    Per group of equal (t, y, p): TIME_HIGH when the high part changes (this resets the low part to 0),
    TIME_LOW when the low part differs, ADDR_Y (random system-type bit) when y changes, then the xs as a random
    mix of single ADDR_X words and VECT_BASE_X followed by VECT_12 / VECT_8 masks. Random EXT_TRIGGER / OTHERS /
    CONTINUED words are sprinkled in. Times are written modulo 2**24, so the TIME_HIGH wraps are exercised.
    """
    words: list[int] = []
    high = low = cur_y = None

    def maybe_junk() -> None:
        if rng.random() < junk:
            words.append(int(rng.choice([0xA000 | 0x21, 0xE000 | 0x5, 0x7000 | 0xF, 0xF000 | 0xABC])))

    n = len(ev)
    i = 0
    while i < n:
        t, y, p = int(ev.t[i]), int(ev.y[i]), int(ev.p[i] > 0)
        j = i
        while j < n and int(ev.t[j]) == int(ev.t[i]) and int(ev.y[j]) == y and int(ev.p[j] > 0) == p:
            j += 1
        xs = [int(v) for v in ev.x[i:j]]
        th, tl = (t >> 12) & 0xFFF, t & 0xFFF
        if th != high:
            words.append(0x8000 | th)
            high, low = th, 0
        if tl != low:
            words.append(0x6000 | tl)
            low = tl
        maybe_junk()
        if y != cur_y:
            words.append(0x0000 | (int(rng.integers(0, 2)) << 11) | y)
            cur_y = y
        k = 0
        while k < len(xs):
            if rng.random() < 0.4:
                words.append(0x2000 | (p << 11) | xs[k])
                k += 1
                continue
            base = xs[k]
            words.append(0x3000 | (p << 11) | base)
            while k < len(xs) and rng.random() < 0.8:
                size = 12 if rng.random() < 0.5 else 8
                mask = 0
                while k < len(xs) and xs[k] < base + size:
                    mask |= 1 << (xs[k] - base)
                    k += 1
                words.append((0x4000 if size == 12 else 0x5000) | mask)
                base += size
            maybe_junk()
        i = j
    return raw_header("3.0", extra) + np.array(words, dtype="<u2").tobytes()


# ---------------------------------------------------------------------------------------------- AEDAT 4.0
def _flatbuffer_table(fields: list[bytes | None]) -> tuple[bytes, list[int], bytes]:
    """(vtable, field offsets inside the table, table body) for inline fields (None = absent)."""
    offsets = []
    body = b""
    for f in fields:
        if f is None:
            offsets.append(0)
        else:
            offsets.append(4 + len(body))
            body += f
    vtable = struct.pack("<HH", 4 + 2 * len(fields), 4 + len(body)) + b"".join(struct.pack("<H", o) for o in offsets)
    return vtable, offsets, body


def io_header(compression: int, data_table: int, info_xml: str) -> bytes:
    """A hand-built ``IOHeader`` flatbuffer: root offset, ``IOHE``, vtable, table, then the infoNode string."""
    vtable, offsets, body = _flatbuffer_table(
        [struct.pack("<i", compression), struct.pack("<q", data_table), b"\0" * 4]
    )
    vt_pos = 8
    table_pos = vt_pos + len(vtable)
    table_pos += (-table_pos) % 4
    table = struct.pack("<i", table_pos - vt_pos) + body
    string_pos = table_pos + len(table)
    field2 = table_pos + offsets[2]
    table = bytearray(table)
    struct.pack_into("<I", table, offsets[2], string_pos - field2)
    text = info_xml.encode()
    buf = struct.pack("<I", table_pos) + b"IOHE" + vtable
    buf += b"\0" * (table_pos - len(buf)) + bytes(table) + struct.pack("<I", len(text)) + text + b"\0"
    return buf


def _evts_flatbuffer(ev: Events) -> bytes:
    """Size-prefixed EVTS flatbuffer (offsets counted after the 4-byte size prefix, as in DV)."""
    structs = np.zeros(len(ev), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1"), ("pad", "V3")])
    structs["t"], structs["x"], structs["y"], structs["p"] = ev.t, ev.x, ev.y, bits(ev.p)
    # positions inside the buffer that follows the size prefix
    vt = 8  # after root offset + identifier
    table = 16  # vtable is 6 bytes + 2 pad
    vec = 24  # table = soffset(4) + uoffset(4)
    inner = struct.pack("<I", table) + b"EVTS"
    inner += struct.pack("<HHH", 6, 8, 4) + b"\0\0"
    inner += struct.pack("<iI", table - vt, vec - (table + 4))
    inner += struct.pack("<I", len(ev)) + structs.tobytes()
    return struct.pack("<I", len(inner)) + inner


def aedat4_xml(streams: list[tuple[int, str, tuple[int, int] | None]]) -> str:
    """infoNode XML for ``(stream id, typeIdentifier, (height, width) or None)`` streams."""
    nodes = []
    for sid, kind, size in streams:
        info = f'<attr key="source" type="string">TEST_{sid}</attr>'
        if size is not None:
            info = f'<attr key="sizeX" type="int">{size[1]}</attr><attr key="sizeY" type="int">{size[0]}</attr>' + info
        nodes.append(
            f'<node name="{sid}" path="/out/{sid}/"><attr key="compression" type="string">LZ4</attr>'
            f'<attr key="typeIdentifier" type="string">{kind}</attr>'
            f'<node name="info" path="/out/{sid}/info/">{info}</node></node>'
        )
    return f'<dv version="2.0"><node name="outInfo" path="/out/">{"".join(nodes)}</node></dv>'


def encode_aedat4(
    ev: Events,
    *,
    packet_events: int = 500,
    compression: int = 1,
    with_other_stream: bool = True,
    data_table: bool = True,
) -> bytes:
    """An AEDAT 4.0 file: magic, IOHeader, EVTS packets (stream 0, LZ4 frames) interleaved with junk IMUS packets
    (stream 2, not even valid LZ4: the reader must skip them unread), then a trailing fake data table."""
    streams = [(0, "EVTS", (ev.height, ev.width))]
    if with_other_stream:
        streams.append((2, "IMUS", None))
    xml = aedat4_xml(streams)
    packets = b""
    for start in range(0, max(len(ev), 1), packet_events):
        fb = _evts_flatbuffer(ev[start : start + packet_events])
        payload = lz4.frame.compress(fb) if compression == 1 else fb
        packets += struct.pack("<ii", 0, len(payload)) + payload
        if with_other_stream:
            packets += struct.pack("<ii", 2, 7) + b"notlz4!"
    # the header length must be known to place the data table: build twice
    header = io_header(compression, 0, xml)
    prefix_len = 14 + 4 + len(header)
    table_pos = prefix_len + len(packets) if data_table else -1
    header = io_header(compression, table_pos, xml)
    out = b"#!AER-DAT4.0\r\n" + struct.pack("<i", len(header)) + header + packets
    if data_table:
        out += b"\xde\xad\xbe\xef" * 5  # stands in for the packet index; must not be read as packets
    return out


# ---------------------------------------------------------------------------------------------- text, numpy
def encode_text(ev: Events, *, float_noise: bool = False) -> bytes:
    """``t[s] x y p`` lines with 9 fractional digits. ``float_noise`` writes t - 1 ns (as float64 printing does)."""
    lines = []
    for t, x, y, p in zip(ev.t.tolist(), ev.x.tolist(), ev.y.tolist(), bits(ev.p).tolist()):
        ns = t * 1000 - (1 if float_noise and t > 0 else 0)
        lines.append(f"{ns // 10**9}.{ns % 10**9:09d} {x} {y} {p}")
    return ("\n".join(lines) + "\n").encode()


def nimagenet_array(ev: Events) -> np.ndarray:
    """N-ImageNet's ``event_data`` structured array (x, y uint16; t int64 µs; p bool)."""
    arr = np.zeros(len(ev), dtype=[("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "?")])
    arr["x"], arr["y"], arr["t"], arr["p"] = ev.x, ev.y, ev.t, ev.p > 0
    return arr
