"""Shared pieces of the data-set converters: errors that name file and key, a 16-bit PNG codec, seeded splits, and
the bounded-memory writer of long recordings.

Long recordings (DSEC, MVSEC, E-TartanAir sequences hold 10^8-10^9 events) are read in chunks and written through
:class:`~evssl.events.io.store.StoreWriter`'s public ``add`` as consecutive *parts* of at most ``max_events``
events (:func:`write_long_recording`). A recording that fits in one part keeps its own name; otherwise the parts
are called ``<name>#part000``, ``<name>#part001``, ... and the store attribute ``recording_parts`` maps ``<name>``
to its part count. Frames, dense ground truth and poses go with the part whose time range holds their timestamp
(part ``k`` covers ``[t_first(k), t_first(k+1))``; the first part also takes earlier items, the last later ones), and
they are loaded lazily per part, so memory stays at one part (``max_events`` events, about ``max_bytes`` with its
maps). Streaming inside one recording would need a streaming writer API; parts keep to the public ``add``.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evssl.events.convert import ConvertError
from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events

PathLike = str | os.PathLike

#: Events per stored part of a long recording (x, y, t, p columns: 13 bytes/event, ~260 MB at 2e7).
DEFAULT_MAX_EVENTS = 20_000_000
#: Bytes (events + frames / dense maps / poses) per stored part of a long recording.
DEFAULT_MAX_BYTES = 1 << 30
#: Events read per chunk from a long HDF5 recording.
READ_CHUNK = 2_000_000


class DatasetError(ConvertError):
    """A data set's file is missing, or has a missing/wrong key; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------------- checks
def need_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DatasetError` naming it and what it should hold."""
    if not Path(path).is_file():
        raise DatasetError(f"{path}: missing {what}")
    return Path(path)


def need_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`DatasetError`."""
    if not Path(path).is_dir():
        raise DatasetError(f"{path}: missing folder ({what})")
    return Path(path)


def need_key(group: Any, key: str, path: PathLike) -> Any:
    """``group[key]`` of an h5py group / npz file, or a :class:`DatasetError` naming the file, the key and what is
    there instead."""
    try:
        present = key in group
    except (TypeError, ValueError):
        present = False
    if not present:
        try:
            keys = sorted(group.keys()) if hasattr(group, "keys") else sorted(group.files)
        except Exception:
            keys = []
        where = getattr(group, "name", "/") or "/"
        raise DatasetError(f"{path}: missing key {key!r} (under {where!r}: {keys[:12]})")
    return group[key]


def check_array(
    arr: Any,
    path: PathLike,
    key: str,
    *,
    kinds: str | None = None,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
) -> Any:
    """Check an array's dtype kind(s) (numpy ``dtype.kind`` letters), rank and shape; error names file and key."""
    dt = getattr(arr, "dtype", None)
    shp = tuple(getattr(arr, "shape", ()))
    if kinds is not None and (dt is None or dt.kind not in kinds):
        raise DatasetError(f"{path}: key {key!r} has dtype {dt}, expected a dtype of kind {kinds!r}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and len(shp) != ndim:
        raise DatasetError(f"{path}: key {key!r} has shape {shp}, expected {ndim} dimensions")
    if shape is not None and any(s is not None and s != a for s, a in zip(shape, shp)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise DatasetError(f"{path}: key {key!r} has shape {shp}, expected {want}")
    return arr


def read_int_lines(path: Path, columns: int = 1, delimiter: str | None = None) -> np.ndarray:
    """Integer table of a text file (``#`` comments skipped), (N,) for one column else (N, columns); errors name the
    file and the line."""
    need_file(path, "timestamps file")
    rows = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in (line.split(delimiter) if delimiter else line.replace(",", " ").split()) if p.strip()]
        if len(parts) < columns:
            raise DatasetError(f"{path}:{lineno}: expected {columns} integer column(s), got {raw!r}")
        try:
            rows.append([int(p.strip()) for p in parts[:columns]])
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: not an integer timestamp in {raw!r}") from e
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, columns)
    return arr[:, 0] if columns == 1 else arr


# ---------------------------------------------------------------------------------------------------- PNG
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _unfilter_loop(raw: np.ndarray, height: int, stride: int, bpp: int, out: np.ndarray) -> int:
    """Undo the PNG scanline filters (None, Sub, Up, Average, Paeth; PNG spec §9) in place into ``out``.

    Returns -1 on success, else the row with an unknown filter type. Plain loops, compiled by numba when available.
    """
    for r in range(height):
        base = r * (stride + 1)
        ftype = raw[base]
        if ftype > 4:
            return r
        for i in range(stride):
            x = np.int32(raw[base + 1 + i])
            a = np.int32(out[r, i - bpp]) if i >= bpp else np.int32(0)
            b = np.int32(out[r - 1, i]) if r > 0 else np.int32(0)
            c = np.int32(out[r - 1, i - bpp]) if (r > 0 and i >= bpp) else np.int32(0)
            if ftype == 1:
                x += a
            elif ftype == 2:
                x += b
            elif ftype == 3:
                x += (a + b) // 2
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                x += a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[r, i] = x & 0xFF
    return -1


try:
    import numba

    _unfilter_kernel = numba.njit(cache=True, nogil=True)(_unfilter_loop)
except ImportError:  # pragma: no cover - numba is a dependency; the loop still works, slowly
    _unfilter_kernel = _unfilter_loop


def _unfilter(raw: np.ndarray, height: int, stride: int, bpp: int, path: PathLike) -> np.ndarray:
    out = np.zeros((height, stride), np.uint8)
    bad = int(_unfilter_kernel(raw, height, stride, bpp, out))
    if bad >= 0:
        raise DatasetError(f"{path}: PNG row {bad} has unknown filter type {raw[bad * (stride + 1)]}")
    return out


def read_png(path: PathLike) -> np.ndarray:
    """Decode a non-interlaced 8- or 16-bit gray / gray+alpha / RGB / RGBA PNG (palette PNGs via Pillow).

    Returns (H, W) for one channel, else (H, W, C), in the **file's channel order** (R, G, B[, A]); uint8 or uint16.
    Written here because Pillow truncates 16-bit RGB PNGs (DSEC optical flow) to 8 bits.
    """
    data = Path(path).read_bytes()
    if data[:8] != _PNG_SIG:
        raise DatasetError(f"{path}: not a PNG file (bad signature)")
    pos, idat, hdr = 8, [], None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if hdr is None:
        raise DatasetError(f"{path}: PNG without IHDR chunk")
    width, height, depth, color, _, _, interlace = hdr
    if color == 3 or depth < 8:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    if interlace or color not in _CHANNELS or depth not in (8, 16):
        raise DatasetError(f"{path}: unsupported PNG (bit depth {depth}, colour type {color}, interlace {interlace})")
    ch = _CHANNELS[color]
    bpp = ch * depth // 8
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as e:
        raise DatasetError(f"{path}: corrupt PNG image data ({e})") from e
    if raw.size != height * (width * bpp + 1):
        raise DatasetError(f"{path}: PNG image data has {raw.size} bytes, expected {height * (width * bpp + 1)}")
    img = _unfilter(raw, height, width * bpp, bpp, path)
    if depth == 16:
        img = img.view(">u2").astype(np.uint16)
    img = img.reshape(height, width, ch)
    return img[..., 0] if ch == 1 else img


def write_png(path: PathLike, img: np.ndarray) -> None:
    """Write a (H, W) or (H, W, C) uint8/uint16 array as a PNG (filter 0), channels in the given order."""
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_png needs uint8 or uint16, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    h, w, ch = img.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    depth = 16 if img.dtype == np.uint16 else 8
    rows = img.astype(">u2").view(np.uint8) if depth == 16 else img
    rows = rows.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(t: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)

    png = _PNG_SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


# ---------------------------------------------------------------------------------------------------- splits
def stratified_split(labels: np.ndarray, fractions: Sequence[float], names: Sequence[str], seed: int) -> np.ndarray:
    """Per class, a seeded permutation cut into consecutive parts of the given fractions (last part takes the rest).

    ``np.random.default_rng([seed, class])`` permutes the (sorted) members of each class, so adding a class does
    not change the split of the others. Returns the split name of every item.
    """
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} split names")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    labels = np.asarray(labels)
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        perm = members[np.random.default_rng([int(seed), int(c)]).permutation(len(members))]
        cuts = np.round(np.cumsum(fractions)[:-1] * len(members)).astype(int)
        for name, part in zip(names, np.split(perm, cuts)):
            out[part] = name
    return out.astype(str)


def evenly_spaced(items: Sequence[Any], k: int | None) -> list[Any]:
    """``k`` items spread evenly over the sorted sequence (indices ``round(j (N-1)/(k-1))``), all when ``k`` is None."""
    items = list(items)
    if k is None or k >= len(items):
        return items
    if k <= 0:
        return []
    if k == 1:
        return [items[0]]
    idx = np.round(np.arange(k) * (len(items) - 1) / (k - 1)).astype(int)
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------------------------------- long recordings
@dataclass
class Timed:
    """Items with timestamps, loaded lazily: ``load(indices) -> array`` with one row per index.

    ``key`` is the :meth:`StoreWriter.add` argument (``frames``, ``semantic``, ``flow``, ``depth``, ``poses``).
    """

    key: str
    t: np.ndarray
    load: Callable[[np.ndarray], np.ndarray]
    item_bytes: int = 0


@dataclass(frozen=True)
class Part:
    """One stored part of a long recording: store index, name and the time range ``[t_lo, t_hi)`` it owns."""

    index: int
    name: str
    t_lo: float
    t_hi: float


_TIME_ARG = {"frames": "frame_t", "poses": "pose_t", "semantic": "dense_t", "flow": "dense_t", "depth": "dense_t"}


def write_long_recording(
    writer: StoreWriter,
    name: str,
    chunks: Iterable[Events],
    *,
    timed: Sequence[Timed] = (),
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    **add_kw: Any,
) -> list[Part]:
    """Write one long recording from an iterator of time-ordered event chunks, in parts of at most ``max_events``.

    A part ends at ``max_events`` events, or at the first chunk boundary where its events (13 B each) plus its
    timed items (``item_bytes`` each) reach ``max_bytes``. See the module docstring for part names and how frames /
    dense maps / poses are assigned. Dense keys must share their timestamps (the store keeps one ``dense_t`` per
    recording). Returns the stored :class:`Part` s (the caller records ``{name: len(parts)}`` in the
    ``recording_parts`` store attribute when there are several).
    """
    if max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    dense_t = [tm.t for tm in timed if _TIME_ARG[tm.key] == "dense_t"]
    if any(len(t) != len(dense_t[0]) or (t != dense_t[0]).any() for t in dense_t[1:]):
        raise ValueError(f"recording {name!r}: the dense maps do not share their timestamps")
    parts: list[Part] = []
    buf: list[Events] = []
    count = 0
    part_t0 = -np.inf
    last_seen: Events | None = None

    def flush(t_next: int | None, last: bool) -> None:
        nonlocal buf, count, part_t0
        assert last_seen is not None
        ev = Events.concatenate(buf) if buf else Events.empty(last_seen.height, last_seen.width)
        lo = -np.inf if not parts else part_t0
        hi = np.inf if t_next is None else t_next
        extra: dict[str, Any] = {}
        for tm in timed:
            sel = np.flatnonzero((tm.t >= lo) & (tm.t < hi))
            if len(sel):
                extra[tm.key] = tm.load(sel)
                extra[_TIME_ARG[tm.key]] = tm.t[sel]
        label = name if (last and not parts) else f"{name}#part{len(parts):03d}"
        parts.append(Part(writer.add(ev, name=label, **add_kw, **extra), label, lo, hi))
        buf, count = [], 0
        part_t0 = -np.inf if t_next is None else t_next

    def part_bytes(t_next: int) -> int:
        lo = -np.inf if not parts else part_t0
        size = 13 * count
        for tm in timed:
            a, b = np.searchsorted(tm.t, [lo, t_next], side="left")
            size += int(b - a) * tm.item_bytes
        return size

    for ev in chunks:
        last_seen = ev
        while len(ev):
            if count >= max_events or (count and part_bytes(int(ev.t[0])) >= max_bytes):
                flush(int(ev.t[0]), last=False)
            k = min(len(ev), max_events - count)
            buf.append(ev[:k])
            count += k
            ev = ev[k:]
    if last_seen is None:
        raise ValueError(f"recording {name!r}: no event chunks")
    flush(None, last=True)
    return parts


def writer_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`StoreWriter` options among converter options."""
    return {k: options[k] for k in ("compression", "clevel", "chunk_events") if options.get(k) is not None}


@dataclass(frozen=True)
class FileItem:
    """One file-per-sample recording: its path, store name, label index and split."""

    path: Path
    name: str
    label: int
    split: str


def write_file_items(
    out: PathLike,
    items: Sequence[FileItem],
    classes: Sequence[str],
    read: Callable[[Path], Events],
    *,
    attrs: Mapping[str, Any],
    progress: bool = False,
    **writer_kw: Any,
) -> Path:
    """Write file-per-sample recordings (N-Cars, N-Caltech101, N-ImageNet) into one store, atomically.

    A file that fails to read raises :class:`DatasetError` naming it; nothing is written at ``out`` then.
    """
    from tqdm import tqdm

    out = Path(out)
    if not items:
        raise DatasetError(f"no recordings to write into {out}")
    with StoreWriter(out, **writer_kw) as w:
        w.set_classes(list(classes))
        w.set_attrs(**attrs)
        for it in tqdm(items, desc=f"convert → {out.name}", unit="file", disable=not progress):
            try:
                ev = read(it.path)
            except DatasetError:
                raise
            except Exception as e:
                raise DatasetError(f"{it.path}: cannot convert ({type(e).__name__}: {e})") from e
            w.add(ev, name=it.name, label=it.label, source=str(it.path), split=it.split)
    return out
