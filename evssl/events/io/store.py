"""The evssl HDF5 event store: many recordings in one chunked, compressed file with O(1) time-window lookup.

Layout (all arrays 1-D along the first axis, chunked, resizable; ``R`` recordings)::

    /events/{x,y,t,p}        concatenated event columns of every recording (int16, int16, int64, int8)
    /ms_to_idx               concatenated millisecond indices (int64, *local* event indices, see below)
    /recordings/<column>     per-recording table, R rows: name, source, split (utf-8), label, height, width,
                             event_offset, num_events, t_start, t_end, ms_offset, ms_count, frame_offset,
                             frame_count, dense_offset, dense_count, {semantic,flow,depth}_offset, pose_offset,
                             pose_count, intrinsics_index, embedding_index (int64; -1 = absent)
    /frames/{data,t}         optional (F,H,W,3) uint8 RGB frames + (F,) int64 µs, one (H,W) per store
    /dense/t                 optional (D,) int64 µs shared by the dense ground truth of a recording
    /dense/semantic          (D,H,W) uint8;  /dense/flow (D,2,H,W) float32;  /dense/depth (D,H,W) float32
    /poses/{matrix,t}        optional (P,4,4) float64 camera-to-world + (P,) int64 µs
    /intrinsics              optional (N,3,3) float64, one row per recording that has one
    /embedding               optional (N,E) float32, one row per recording that has one
    attrs: format, version, num_recordings, classes (JSON list), attrs (JSON dict)

Millisecond index: for a recording with first timestamp ``t_first``, entry ``k`` is the first local event index
with ``t >= t_first + 1000 * k`` (``k = 0 .. (t_last - t_first) // 1000 + 1``; see
:func:`evssl.events.slicing.ms_index`). :meth:`EventStore.window` reads two entries and binary-searches inside at
most one millisecond of events, so a window costs O(1) in the recording length (plus the events it returns). The
index costs 8 bytes per millisecond of recording before compression (sparse gaps compress to almost nothing).

Compression: ``hdf5plugin.Blosc(cname="zstd")`` by default, byte-shuffle for ``t`` (sorted int64) and bit-shuffle
for ``x``, ``y``, ``p``. ``hdf5plugin`` is imported here, so any code that opens a store has the filters registered.

Writing is atomic: :class:`StoreWriter` writes ``<path>.tmp-<pid>``, fsyncs it and ``os.replace``-s it onto
``path``; an exception inside ``with StoreWriter(...)`` removes the temporary file and leaves ``path`` untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from evssl.events.schema import DTYPES, FIELDS, EventFormatError, Events
from evssl.events.slicing import ms_bin, ms_index

FORMAT_NAME = "evssl.events.store"
FORMAT_VERSION = 1
COMPRESSIONS = ("blosc-zstd", "blosc-lz4", "zstd", "gzip", "none")
DENSE_KEYS = ("semantic", "flow", "depth")
#: Events per chunk of the event columns. Measured (benchmarks/loading.py, random 50 ms windows of ~4k events,
#: Blosc-ZSTD 3): 16 Ki events cost half the CPU per window of 64 Ki (154 vs 305 µs) at the same ratio (3.78 B/event).
DEFAULT_CHUNK_EVENTS = 1 << 14

_STR_COLUMNS = ("name", "source", "split")
_INT_COLUMNS = (
    "label",
    "height",
    "width",
    "event_offset",
    "num_events",
    "t_start",
    "t_end",
    "ms_offset",
    "ms_count",
    "frame_offset",
    "frame_count",
    "dense_offset",
    "dense_count",
    "semantic_offset",
    "flow_offset",
    "depth_offset",
    "pose_offset",
    "pose_count",
    "intrinsics_index",
    "embedding_index",
)
_REQUIRED = (*(f"events/{f}" for f in FIELDS), "ms_to_idx", *(f"recordings/{c}" for c in _STR_COLUMNS + _INT_COLUMNS))
_MS_CHUNK = 4096
_TABLE_CHUNK = 4096
_READ_CACHE_BYTES = 4 << 20  # per dataset; h5py's default (1 MiB) is smaller than one 64 Ki-event t chunk


class StoreFormatError(ValueError):
    """A file that is not (or no longer) a valid evssl event store; the message names the file and what is wrong."""


@dataclass(frozen=True)
class RecordingInfo:
    """Metadata of one recording of an :class:`EventStore` (no event data).

    ``t_start``/``t_end`` are the first/last timestamps in µs (both 0 for a recording without events).
    """

    name: str
    label: int
    source: str
    split: str
    height: int
    width: int
    num_events: int
    t_start: int
    t_end: int
    has_frames: bool
    has_dense: bool
    has_poses: bool
    has_embedding: bool
    index: int = -1
    num_frames: int = 0
    num_dense: int = 0
    num_poses: int = 0
    dense_keys: tuple[str, ...] = ()
    has_intrinsics: bool = False

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def duration(self) -> int:
        """``t_end - t_start`` in µs."""
        return self.t_end - self.t_start


# ---------------------------------------------------------------------------------------------------- helpers
def compression_kwargs(compression: str, clevel: int = 3, *, bitshuffle: bool = False) -> dict[str, Any]:
    """``h5py.create_dataset`` keyword arguments for a compression name in :data:`COMPRESSIONS`."""
    if compression in ("blosc-zstd", "blosc-lz4"):
        shuffle = hdf5plugin.Blosc.BITSHUFFLE if bitshuffle else hdf5plugin.Blosc.SHUFFLE
        return dict(hdf5plugin.Blosc(cname=compression[6:], clevel=int(clevel), shuffle=shuffle))
    if compression == "zstd":
        return {**dict(hdf5plugin.Zstd(clevel=int(clevel))), "shuffle": True}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": int(min(max(clevel, 0), 9)), "shuffle": True}
    if compression == "none":
        return {}
    raise ValueError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_store_file(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if fmt is None:
        raise StoreFormatError(f"{path}: not an evssl event store (HDF5 file without the 'format' attribute)")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise StoreFormatError(f"{path}: not an evssl event store (format attribute is {fmt!r}, not {FORMAT_NAME!r})")
    version = int(f.attrs.get("version", -1))
    if version > FORMAT_VERSION or version < 1:
        raise StoreFormatError(
            f"{path}: store format version {version} is not supported by this evssl (reads 1..{FORMAT_VERSION})"
        )
    missing = [name for name in _REQUIRED if name not in f]
    if missing:
        raise StoreFormatError(f"{path}: incomplete evssl event store, missing dataset(s): {', '.join(missing)}")


def _open_h5(path: Path, mode: str = "r") -> h5py.File:
    if not path.exists():
        raise FileNotFoundError(f"event store {path} does not exist")
    try:
        if mode == "r":
            # No HDF5 file locking for readers: stores are never modified in place (writers rename a finished
            # temporary file over them), and flock fails on some network file systems.
            return h5py.File(path, mode, rdcc_nbytes=_READ_CACHE_BYTES, rdcc_nslots=521, locking=False)
        return h5py.File(path, mode, libver=("v110", "latest"))
    except OSError as e:
        raise StoreFormatError(f"{path}: not an evssl event store (cannot be opened as HDF5: {e})") from e


def _read_table(f: h5py.File) -> dict[str, np.ndarray]:
    tab: dict[str, np.ndarray] = {}
    for c in _STR_COLUMNS:
        vals = f[f"recordings/{c}"].asstr()[...]
        tab[c] = np.array(list(vals), dtype=str) if len(vals) else np.zeros(0, dtype=str)
    for c in _INT_COLUMNS:
        tab[c] = f[f"recordings/{c}"][...].astype(np.int64)
    return tab


def _as_array(where: str, field: str, value: Any, dtype: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """Check kind and shape of an optional array, convert to ``dtype`` (no lossy int casts, no float->int)."""
    arr = np.asarray(value)
    target = np.dtype(dtype)
    if target.kind == "f":
        ok = arr.dtype.kind in "fiu"
    elif target == np.uint8:
        ok = arr.dtype == np.uint8
    else:
        ok = arr.dtype.kind in "iu"
    if not ok:
        raise EventFormatError(where, field, f"dtype {arr.dtype}, expected {target}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise EventFormatError(where, field, f"shape {arr.shape}, expected {want}")
    if target.kind == "i" and arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(target).max:
        raise EventFormatError(where, field, f"value {arr.max()} does not fit {target}")
    return np.ascontiguousarray(arr.astype(target, copy=False))


def _check_sorted(where: str, field: str, t: np.ndarray) -> None:
    dec = np.diff(t) < 0
    if dec.any():
        i = int(np.flatnonzero(dec)[0]) + 1
        raise EventFormatError(where, field, f"timestamp decreases from {t[i - 1]} to {t[i]}", i)


class _Appender:
    """Buffers rows for datasets of equal length and writes them in whole chunks (no partial-chunk rewrites)."""

    def __init__(self, datasets: list[h5py.Dataset], chunk: int) -> None:
        self.datasets = datasets
        self.chunk = max(int(chunk), 1)
        self.parts: list[list[np.ndarray]] = [[] for _ in datasets]
        self.written = int(datasets[0].shape[0])
        self.buffered = 0

    @property
    def length(self) -> int:
        return self.written + self.buffered

    def append(self, arrays: list[np.ndarray]) -> None:
        for parts, a in zip(self.parts, arrays):
            parts.append(a)
        self.buffered += len(arrays[0])
        if self.buffered >= self.chunk:
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        end = self.length if final else (self.length // self.chunk) * self.chunk
        k = end - self.written
        if k <= 0:
            return
        for ds, parts in zip(self.datasets, self.parts):
            data = parts[0] if len(parts) == 1 else np.concatenate(parts)
            ds.resize(end, axis=0)
            ds[self.written : end] = data[:k]
            parts[:] = [data[k:]] if len(data) > k else []
        self.written = end
        self.buffered -= k


# ---------------------------------------------------------------------------------------------------- writer
class StoreWriter:
    """Write recordings into an evssl event store, atomically.

    Use as a context manager::

        with StoreWriter("data/train.h5") as w:
            w.set_classes(["cat", "dog"])
            w.add(events, name="cat/0001.bin", label=0, split="train")

    Data goes to ``<path>.tmp-<pid>``; :meth:`close` finalises the table, fsyncs and ``os.replace``-s the file onto
    ``path`` (so readers never see a half-written store). An exception inside the ``with`` block (or in
    :meth:`close`) removes the temporary file and leaves any existing file at ``path`` untouched.

    Args:
        path: the store file.
        append: add recordings to an existing store (a new store when ``path`` does not exist). The existing file
            is first *copied* to the temporary name, so a crash while appending never corrupts the original; the
            cost is one full copy of the store (time and, temporarily, twice its disk space) per writer session, so
            append in large batches rather than one recording at a time. Existing datasets keep their compression
            and chunking; ``compression``/``chunk_events`` only apply to datasets created in this session.
        compression: one of :data:`COMPRESSIONS` (``"blosc-zstd"`` default, ``"blosc-lz4"``, ``"zstd"``,
            ``"gzip"``, ``"none"``).
        clevel: compression level.
        chunk_events: chunk length of the event columns (trades random-access decompression waste vs ratio).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        append: bool = False,
        compression: str = "blosc-zstd",
        clevel: int = 3,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
    ) -> None:
        compression_kwargs(compression, clevel)  # validate early
        self.path = Path(path)
        self.tmp_path = Path(f"{self.path}.tmp-{os.getpid()}")
        self.compression = compression
        self.clevel = int(clevel)
        self.chunk_events = max(int(chunk_events), 1)
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists():
            with _open_h5(self.path, "r") as src:
                _check_store_file(src, self.path)
            try:
                shutil.copyfile(self.path, self.tmp_path)
                self._f = _open_h5(self.tmp_path, "r+")
                tab = _read_table(self._f)
                self._table: dict[str, list[Any]] = {c: [*tab[c].tolist()] for c in tab}
                self._classes: list[str] = json.loads(self._f.attrs.get("classes", "[]"))
                self._attrs: dict[str, Any] = json.loads(self._f.attrs.get("attrs", "{}"))
            except BaseException:
                self._abort()
                raise
        else:
            if self.tmp_path.exists():
                self.tmp_path.unlink()
            self._f = h5py.File(self.tmp_path, "w", libver=("v110", "latest"))
            self._table = {c: [] for c in _STR_COLUMNS + _INT_COLUMNS}
            self._classes = []
            self._attrs = {}
            try:
                self._create_base()
            except BaseException:
                self._abort()
                raise
        f = self._f
        self._events = _Appender([f[f"events/{c}"] for c in FIELDS], f["events/t"].chunks[0])
        self._ms = _Appender([f["ms_to_idx"]], f["ms_to_idx"].chunks[0])
        self._optional: dict[str, _Appender] = {}

    # ------------------------------------------------------------------ datasets
    def _create(self, name: str, tail: tuple[int, ...], dtype: Any, chunk_rows: int, **filt: Any) -> h5py.Dataset:
        kw = filt or compression_kwargs(self.compression, self.clevel)
        return self._f.create_dataset(
            name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=(max(chunk_rows, 1), *tail), **kw
        )

    def _create_base(self) -> None:
        for c in FIELDS:
            self._create(
                f"events/{c}",
                (),
                DTYPES[c],
                self.chunk_events,
                **compression_kwargs(self.compression, self.clevel, bitshuffle=c != "t"),
            )
        self._create("ms_to_idx", (), np.int64, _MS_CHUNK)
        g = self._f.create_group("recordings")
        for c in _STR_COLUMNS:
            g.create_dataset(c, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=(_TABLE_CHUNK,))
        for c in _INT_COLUMNS:
            g.create_dataset(c, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(_TABLE_CHUNK,))

    def _check_tail(self, where: str, field: str, name: str, arr: np.ndarray) -> None:
        """Optional arrays are concatenated, so their per-row shape must match what the store already holds."""
        if name in self._f:
            tail = self._f[name].shape[1:]
            if arr.shape[1:] != tail:
                raise EventFormatError(
                    where,
                    field,
                    f"per-item shape {arr.shape[1:]} differs from {tail} already in the store "
                    f"(all {field} of one store share one shape)",
                )

    def _appender(self, names: list[str], rows: list[np.ndarray], chunk_rows: int) -> _Appender:
        """The buffered appender of a group of equal-length optional datasets (created on first use).

        ``chunk_rows`` rows per chunk for item arrays; 1-D timestamp arrays use at least 4096.
        """
        key = names[0]
        if key not in self._optional:
            for n, a in zip(names, rows):
                if n not in self._f:
                    self._create(n, a.shape[1:], a.dtype, chunk_rows if a.ndim > 1 else max(chunk_rows, 4096))
            self._optional[key] = _Appender([self._f[n] for n in names], chunk_rows)
        return self._optional[key]

    # ------------------------------------------------------------------ public API
    def set_classes(self, names: list[str]) -> None:
        """Set the class names (label ``k`` is ``names[k]``)."""
        self._check_open()
        self._classes = [str(n) for n in names]

    def set_attrs(self, **attrs: Any) -> None:
        """Merge store-level JSON-able metadata (e.g. the generator config)."""
        self._check_open()
        merged = {**self._attrs, **attrs}
        try:
            json.dumps(merged)
        except TypeError as e:
            raise TypeError(f"store attrs must be JSON-serialisable: {e}") from e
        self._attrs = merged

    @property
    def num_recordings(self) -> int:
        """Recordings written so far (including those of an appended store)."""
        return len(self._table["name"])

    def add(
        self,
        events: Events,
        *,
        name: str,
        label: int = -1,
        source: str = "",
        split: str = "",
        frames: np.ndarray | None = None,
        frame_t: np.ndarray | None = None,
        semantic: np.ndarray | None = None,
        flow: np.ndarray | None = None,
        depth: np.ndarray | None = None,
        dense_t: np.ndarray | None = None,
        poses: np.ndarray | None = None,
        pose_t: np.ndarray | None = None,
        intrinsics: np.ndarray | None = None,
        embedding: np.ndarray | None = None,
    ) -> int:
        """Append one recording and return its index.

        Everything is checked before anything is written, so a failed ``add`` (an :class:`EventFormatError` naming
        the recording and the field) leaves the writer usable.

        Args:
            events: validated here (dtypes, bounds, time order, polarity).
            name: recording name (e.g. the path relative to the data set root).
            label: class index, -1 when unlabelled.
            source, split: free-form origin and split name ("train", "val", ...).
            frames, frame_t: (F,H,W,3) uint8 RGB and their (F,) µs timestamps.
            semantic, flow, depth, dense_t: (D,H,W) uint8, (D,2,H,W) float, (D,H,W) float and their (D,) µs times.
            poses, pose_t: (P,4,4) camera-to-world matrices and their (P,) µs times.
            intrinsics: (3,3) camera matrix. embedding: (E,) float vector (e.g. an image embedding of a frame).
        """
        self._check_open()
        if not isinstance(name, str):
            raise TypeError(f"recording name must be a str, got {type(name).__name__}")
        where = f"recording {name!r}"
        if not isinstance(events, Events):
            raise EventFormatError(where, "events", f"expected evssl Events, got {type(events).__name__}")
        events.validate(where)
        try:
            label = int(label)
        except (TypeError, ValueError) as e:
            raise EventFormatError(where, "label", f"expected an int, got {label!r}") from e

        # ---- check every optional array before writing anything
        def timed(field: str, tfield: str, arr: Any, t: Any, dtype: Any, tail: tuple[int | None, ...]):
            if arr is None and t is None:
                return None
            if arr is None or t is None:
                missing, given = (field, tfield) if arr is None else (tfield, field)
                raise EventFormatError(where, missing, f"missing ({given} was given)")
            a = _as_array(where, field, arr, dtype, (None, *tail))
            tt = _as_array(where, tfield, t, np.int64, (None,))
            if len(a) != len(tt):
                raise EventFormatError(where, tfield, f"length {len(tt)} differs from {field}'s length {len(a)}")
            _check_sorted(where, tfield, tt)
            return a, tt

        fr = timed("frames", "frame_t", frames, frame_t, np.uint8, (None, None, 3))
        ps = timed("poses", "pose_t", poses, pose_t, np.float64, (4, 4))
        dense: dict[str, np.ndarray] = {}
        dense_tt: np.ndarray | None = None
        given = {"semantic": semantic, "flow": flow, "depth": depth}
        specs = {
            "semantic": (np.uint8, (None, None)),
            "flow": (np.float32, (2, None, None)),
            "depth": (np.float32, (None, None)),
        }
        for key, arr in given.items():
            if arr is None:
                continue
            if dense_t is None:
                raise EventFormatError(where, "dense_t", f"missing ({key} was given)")
            dtype, tail = specs[key]
            got = timed(key, "dense_t", arr, dense_t, dtype, tail)
            assert got is not None
            dense[key], dense_tt = got
        if dense_t is not None and not dense:
            raise EventFormatError(where, "dense_t", "given without semantic, flow or depth")
        intr = None if intrinsics is None else _as_array(where, "intrinsics", intrinsics, np.float64, (3, 3))
        emb = None if embedding is None else _as_array(where, "embedding", embedding, np.float32, (None,))
        if fr is not None:
            self._check_tail(where, "frames", "frames/data", fr[0])
        for key, arr in dense.items():
            self._check_tail(where, key, f"dense/{key}", arr)
        if emb is not None:
            self._check_tail(where, "embedding", "embedding", emb[None])

        # ---- write
        tab = self._table
        n = len(events)
        ms = ms_index(events.t)
        row: dict[str, Any] = {
            "name": name,
            "source": str(source),
            "split": str(split),
            "label": label,
            "height": events.height,
            "width": events.width,
            "event_offset": self._events.length,
            "num_events": n,
            "t_start": int(events.t[0]) if n else 0,
            "t_end": int(events.t[-1]) if n else 0,
            "ms_offset": self._ms.length,
            "ms_count": len(ms),
        }
        self._events.append([getattr(events, c) for c in FIELDS])
        self._ms.append([ms])
        row["frame_offset"], row["frame_count"] = -1, 0
        if fr is not None and len(fr[0]):
            app = self._appender(["frames/data", "frames/t"], list(fr), 1)
            row["frame_offset"], row["frame_count"] = app.length, len(fr[0])
            app.append(list(fr))
        row["dense_offset"], row["dense_count"] = -1, 0
        for key in DENSE_KEYS:
            row[f"{key}_offset"] = -1
        if dense_tt is not None and len(dense_tt):
            app = self._appender(["dense/t"], [dense_tt], 1)
            row["dense_offset"], row["dense_count"] = app.length, len(dense_tt)
            app.append([dense_tt])
            for key, arr in dense.items():
                app = self._appender([f"dense/{key}"], [arr], 1)
                row[f"{key}_offset"] = app.length
                app.append([arr])
        row["pose_offset"], row["pose_count"] = -1, 0
        if ps is not None and len(ps[0]):
            app = self._appender(["poses/matrix", "poses/t"], list(ps), 1024)
            row["pose_offset"], row["pose_count"] = app.length, len(ps[0])
            app.append(list(ps))
        row["intrinsics_index"] = -1
        if intr is not None:
            app = self._appender(["intrinsics"], [intr[None]], 256)
            row["intrinsics_index"] = app.length
            app.append([intr[None]])
        row["embedding_index"] = -1
        if emb is not None:
            app = self._appender(["embedding"], [emb[None]], 64)
            row["embedding_index"] = app.length
            app.append([emb[None]])
        for c, v in row.items():
            tab[c].append(v)
        return len(tab["name"]) - 1

    def close(self) -> None:
        """Finalise the table and attributes, fsync, and atomically rename the temporary file onto ``path``."""
        if self._closed:
            return
        try:
            self._events.flush()
            self._ms.flush()
            for app in self._optional.values():
                app.flush()
            g = self._f["recordings"]
            r = self.num_recordings
            for c in _STR_COLUMNS + _INT_COLUMNS:
                g[c].resize((r,))
                if r:
                    g[c][:] = self._table[c] if c in _STR_COLUMNS else np.asarray(self._table[c], np.int64)
            self._f.attrs["format"] = FORMAT_NAME
            self._f.attrs["version"] = FORMAT_VERSION
            self._f.attrs["num_recordings"] = r
            self._f.attrs["classes"] = json.dumps(self._classes)
            self._f.attrs["attrs"] = json.dumps(self._attrs)
            self._f.flush()
            self._f.close()
            _fsync_path(self.tmp_path)
            os.replace(self.tmp_path, self.path)
            _fsync_path(self.path.parent, directory=True)
            self._closed = True
        except BaseException:
            self._abort()
            raise

    def abort(self) -> None:
        """Discard everything written in this session (remove the temporary file; ``path`` is untouched)."""
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        f = getattr(self, "_f", None)
        if f is not None:
            try:
                f.close()
            except Exception:
                pass
        try:
            self.tmp_path.unlink()
        except FileNotFoundError:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"StoreWriter for {self.path} is closed")

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort()
        else:
            self.close()


# ---------------------------------------------------------------------------------------------------- reader
class EventStore:
    """Read an evssl event store (see the module docstring for the layout).

    The small per-recording table is read once into numpy arrays; event data is read on demand. The HDF5 file is
    opened lazily and re-opened in a forked DataLoader worker (a handle is never shared across ``fork``); pickling
    keeps only the path, so the store can be handed to spawned workers too.

    Attributes:
        path: the file. classes: class names. attrs: store-level metadata. labels: (R,) int64. splits, names: (R,) str.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        with _open_h5(self.path) as f:
            _check_store_file(f, self.path)
            tab = _read_table(f)
            self.classes: list[str] = json.loads(f.attrs.get("classes", "[]"))
            self.attrs: dict[str, Any] = json.loads(f.attrs.get("attrs", "{}"))
            n_events = int(f["events/t"].shape[0])
            n_ms = int(f["ms_to_idx"].shape[0])
            lengths = {c: int(f[f"events/{c}"].shape[0]) for c in FIELDS}
            optional = ("frames/data", "dense/t", *(f"dense/{k}" for k in DENSE_KEYS), "poses/matrix", "intrinsics")
            self._present = {name for name in (*optional, "embedding") if name in f}
        if len(set(lengths.values())) != 1:
            raise StoreFormatError(f"{self.path}: corrupt store, event columns have different lengths {lengths}")
        if len(tab["name"]) and (
            int((tab["event_offset"] + tab["num_events"]).max()) > n_events
            or int((tab["ms_offset"] + tab["ms_count"]).max()) > n_ms
        ):
            raise StoreFormatError(f"{self.path}: corrupt store, the recording table points past the event data")
        self._tab = tab
        self.labels: np.ndarray = tab["label"]
        self.splits: np.ndarray = tab["split"]
        self.names: np.ndarray = tab["name"]
        self.num_events: np.ndarray = tab["num_events"]

    # ------------------------------------------------------------------ file handling
    def _dset(self, name: str) -> h5py.Dataset:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            if self._file is not None:
                # Inherited through fork: close this process's copy (read-only, unlocked: the parent is unaffected)
                # so HDF5 cannot hand the inherited file state to the new handle.
                try:
                    self._file.close()
                except Exception:
                    pass
                self._file = None
            self._file = _open_h5(self.path)
            self._pid = pid
            self._ds = {}
        ds = self._ds.get(name)
        if ds is None:
            ds = self._ds[name] = self._file[name]
        return ds

    def close(self) -> None:
        """Close the HDF5 handle of this process (it re-opens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._ds = None, None, {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._tab["name"])

    def __repr__(self) -> str:
        return f"EventStore({str(self.path)!r}, recordings={len(self)}, classes={len(self.classes)})"

    # ------------------------------------------------------------------ metadata
    def _index(self, i: int) -> int:
        n = len(self)
        j = int(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"{self.path}: recording index {i} out of range for {n} recordings")
        return j

    def _col(self, name: str, i: int) -> int:
        return int(self._tab[name][i])

    def info(self, i: int) -> RecordingInfo:
        """Metadata of recording ``i``."""
        i = self._index(i)
        tab = self._tab
        dense_keys = tuple(k for k in DENSE_KEYS if tab[f"{k}_offset"][i] >= 0)
        return RecordingInfo(
            name=str(tab["name"][i]),
            label=self._col("label", i),
            source=str(tab["source"][i]),
            split=str(tab["split"][i]),
            height=self._col("height", i),
            width=self._col("width", i),
            num_events=self._col("num_events", i),
            t_start=self._col("t_start", i),
            t_end=self._col("t_end", i),
            has_frames=self._col("frame_count", i) > 0,
            has_dense=bool(dense_keys),
            has_poses=self._col("pose_count", i) > 0,
            has_embedding=self._col("embedding_index", i) >= 0,
            index=i,
            num_frames=self._col("frame_count", i),
            num_dense=self._col("dense_count", i),
            num_poses=self._col("pose_count", i),
            dense_keys=dense_keys,
            has_intrinsics=self._col("intrinsics_index", i) >= 0,
        )

    def index_of(self, name: str) -> int:
        """Index of the (first) recording called ``name``."""
        hits = np.flatnonzero(self.names == name)
        if not len(hits):
            raise KeyError(f"{self.path}: no recording named {name!r}")
        return int(hits[0])

    # ------------------------------------------------------------------ events
    def _read_events(self, i: int, start: int, stop: int, t: np.ndarray | None = None) -> Events:
        off = self._col("event_offset", i)
        h, w = self._col("height", i), self._col("width", i)
        if stop <= start:
            return Events.empty(h, w)
        a, b = off + start, off + stop
        cols = {c: self._dset(f"events/{c}")[a:b] for c in ("x", "y", "p")}
        cols["t"] = self._dset("events/t")[a:b] if t is None else t
        return Events(cols["x"], cols["y"], cols["t"], cols["p"], h, w)

    def events(self, i: int, start: int | None = None, stop: int | None = None) -> Events:
        """Events ``start:stop`` (Python slice semantics, negative allowed) of recording ``i``; all by default."""
        i = self._index(i)
        start, stop, _ = slice(start, stop).indices(self._col("num_events", i))
        return self._read_events(i, start, stop)

    def _ms_bounds(self, i: int, queries: list[int]) -> list[tuple[int, int]]:
        """For each query time, the local index range [lo, hi] that holds the first event with t >= query."""
        n = self._col("num_events", i)
        tf, tl = self._col("t_start", i), self._col("t_end", i)
        bins = [ms_bin(tf, tl, q) if n else None for q in queries]
        ks = [k for k in bins if k is not None]
        entries: dict[int, tuple[int, int]] = {}
        if ks:
            base = self._col("ms_offset", i)
            ms = self._dset("ms_to_idx")
            k0, k1 = min(ks), max(ks)
            if k1 - k0 <= 4 * _MS_CHUNK:
                span = ms[base + k0 : base + k1 + 2]
                entries = {k: (int(span[k - k0]), int(span[k - k0 + 1])) for k in ks}
            else:
                for k in ks:
                    pair = ms[base + k : base + k + 2]
                    entries[k] = (int(pair[0]), int(pair[1]))
        out = []
        for q, k in zip(queries, bins):
            if k is not None:
                out.append(entries[k])
            else:
                out.append((0, 0) if (n == 0 or q <= tf) else (n, n))
        return out

    def index_at(self, i: int, t: int) -> int:
        """First local event index of recording ``i`` with timestamp ``>= t`` (``num_events`` when none)."""
        i = self._index(i)
        ((lo, hi),) = self._ms_bounds(i, [int(t)])
        if hi <= lo:
            return lo
        off = self._col("event_offset", i)
        ts = self._dset("events/t")[off + lo : off + hi]
        return lo + int(np.searchsorted(ts, t, side="left"))

    def window(self, i: int, t0: int, t1: int) -> Events:
        """Events of recording ``i`` with ``t0 <= t < t1`` (µs); two index reads, no scan of the recording."""
        i = self._index(i)
        t0, t1 = int(t0), int(t1)
        n = self._col("num_events", i)
        if n == 0 or t1 <= t0 or t1 <= self._col("t_start", i) or t0 > self._col("t_end", i):
            return self._read_events(i, 0, 0)
        (a_lo, a_hi), (b_lo, b_hi) = self._ms_bounds(i, [t0, t1])
        off = self._col("event_offset", i)
        ts = self._dset("events/t")[off + a_lo : off + b_hi]  # covers both refinements and the result
        start = a_lo + int(np.searchsorted(ts[: a_hi - a_lo], t0, side="left"))
        stop = b_lo + int(np.searchsorted(ts[b_lo - a_lo : b_hi - a_lo], t1, side="left"))
        return self._read_events(i, start, stop, t=ts[start - a_lo : stop - a_lo])

    # ------------------------------------------------------------------ optional arrays
    def _rows(self, name: str, off: int, count: int, j: int | slice | None, what: str, i: int) -> np.ndarray:
        if j is None:
            return self._dset(name)[off : off + count] if count else self._dset(name)[0:0]
        if isinstance(j, slice):
            a, b, step = j.indices(count)
            return self._dset(name)[off + a : off + b][::step] if b > a else self._dset(name)[0:0]
        jj = int(j) + count if int(j) < 0 else int(j)
        if not 0 <= jj < count:
            raise IndexError(f"{self.path}: {what} index {j} out of range for recording {i} with {count} {what}")
        return self._dset(name)[off + jj]

    def frame_times(self, i: int) -> np.ndarray:
        """(F,) int64 µs timestamps of the frames of recording ``i`` (empty when it has none)."""
        i = self._index(i)
        count = self._col("frame_count", i)
        if not count:
            return np.zeros(0, np.int64)
        return self._rows("frames/t", self._col("frame_offset", i), count, None, "frames", i)

    def frames(self, i: int, j: int | slice | None = None) -> np.ndarray:
        """All frames (F,H,W,3) uint8 of recording ``i``, or frame ``j`` (H,W,3) (or a slice of them)."""
        i = self._index(i)
        count = self._col("frame_count", i)
        if "frames/data" not in self._present:
            if j is None or isinstance(j, slice):
                return np.zeros((0, 0, 0, 3), np.uint8)
            raise IndexError(f"{self.path}: recording {i} has no frames")
        return self._rows("frames/data", self._col("frame_offset", i), count, j, "frames", i)

    def dense_times(self, i: int) -> np.ndarray:
        """(D,) int64 µs timestamps of the dense ground truth of recording ``i`` (empty when it has none)."""
        i = self._index(i)
        count = self._col("dense_count", i)
        if not count:
            return np.zeros(0, np.int64)
        return self._rows("dense/t", self._col("dense_offset", i), count, None, "dense maps", i)

    def dense(self, i: int, key: str, j: int | slice | None = None) -> np.ndarray:
        """Dense ground truth ``key`` in ``semantic`` (D,H,W) uint8, ``flow`` (D,2,H,W), ``depth`` (D,H,W) float32.

        ``j`` selects one map (or a slice). Raises ``KeyError`` when recording ``i`` has no ``key``.
        """
        if key not in DENSE_KEYS:
            raise KeyError(f"unknown dense key {key!r}; choose one of {DENSE_KEYS}")
        i = self._index(i)
        off = self._col(f"{key}_offset", i)
        if off < 0:
            have = self.info(i).dense_keys
            raise KeyError(f"{self.path}: recording {i} ({self.names[i]!r}) has no {key!r} (has: {list(have)})")
        return self._rows(f"dense/{key}", off, self._col("dense_count", i), j, key, i)

    def poses(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Camera-to-world poses (P,4,4) float64 and their (P,) int64 µs timestamps (empty when none)."""
        i = self._index(i)
        count = self._col("pose_count", i)
        if not count:
            return np.zeros((0, 4, 4), np.float64), np.zeros(0, np.int64)
        off = self._col("pose_offset", i)
        return self._dset("poses/matrix")[off : off + count], self._dset("poses/t")[off : off + count]

    def intrinsics(self, i: int) -> np.ndarray | None:
        """The (3,3) float64 camera matrix of recording ``i``, or None."""
        k = self._col("intrinsics_index", self._index(i))
        return None if k < 0 else self._dset("intrinsics")[k]

    def embedding(self, i: int) -> np.ndarray | None:
        """The (E,) float32 embedding of recording ``i``, or None."""
        k = self._col("embedding_index", self._index(i))
        return None if k < 0 else self._dset("embedding")[k]


__all__ = [
    "COMPRESSIONS",
    "DEFAULT_CHUNK_EVENTS",
    "DENSE_KEYS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "EventStore",
    "RecordingInfo",
    "StoreFormatError",
    "StoreWriter",
    "compression_kwargs",
]
