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
    attrs: format, version, num_recordings, classes (JSON list), attrs (JSON dict), store_id (random hex, new for
           every writer session; readers check it on every reopen, see :class:`EventStore`)

Millisecond index: for a recording with first timestamp ``t_first``, entry ``k`` is the first local event index
with ``t >= t_first + 1000 * k`` (``k = 0 .. (t_last - t_first) // 1000 + 1``; see
:func:`evssl.events.slicing.ms_index`). :meth:`EventStore.window` reads two entries and binary-searches inside at
most one millisecond of events, so a window costs O(1) in the recording length (plus the events it returns). The
index costs 8 bytes per millisecond of recording before compression (sparse gaps compress to almost nothing). The
writer builds it incrementally from streamed chunks in pieces of bounded size (memory never grows with the span) and
refuses recordings spanning more than ``max_span_us`` (24 h by default: longer is almost always a corrupt timestamp).
Readers validate the table and the index against the columns when a store is opened.

Compression: ``hdf5plugin.Blosc(cname="zstd")`` by default, byte-shuffle for ``t`` (sorted int64) and bit-shuffle
for ``x``, ``y``, ``p``. ``hdf5plugin`` is imported here, so any code that opens a store has the filters registered.

Writing is atomic: :class:`StoreWriter` writes ``<path>.tmp-<pid>``, fsyncs it and ``os.replace``-s it onto
``path``; an exception inside ``with StoreWriter(...)`` removes the temporary file and leaves ``path`` untouched.
Temporary files of dead writers are removed by the next writer of ``path``; before every write the writer checks
the free space and the file-size limit, so a full disk is a :class:`StoreWriteError`, not a crash inside HDF5.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from evssl.events.schema import DTYPES, FIELDS, EventFormatError, Events
from evssl.events.slicing import MS, ms_bin

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
#: Longest recording (last minus first timestamp, µs) a writer accepts by default: 24 h. The ms index costs 8 bytes
#: per millisecond of span on disk before compression (86.4 M entries, 691 MB, at the limit); a longer span is almost
#: always a corrupt timestamp (a 14 KB file with one event 1e11 µs late). ``max_span_us=None`` lifts the limit.
DEFAULT_MAX_SPAN_US = 24 * 3600 * 1_000_000
#: ms-index entries computed per step while streaming: the index of a span with long gaps is built and written in
#: pieces of this many entries, so its memory is bounded whatever the span.
_MS_PIECE = 1 << 20
#: Whole-index validation when a store is opened reads at most this many ms-index entries (32 MiB); larger indices
#: get their per-recording end points checked at open and every entry on use.
_MS_VALIDATE_ENTRIES = 1 << 22


class StoreFormatError(ValueError):
    """A file that is not (or no longer) a valid evssl event store; the message names the file and what is wrong."""


class StoreChangedError(StoreFormatError):
    """The file at a store's path is no longer the store whose recording table a reader holds (it was replaced)."""


class StoreWriteError(OSError):
    """Writing a store failed (e.g. the disk is full); the message names the store, nothing was written at ``path``.

    ``hdf5_failed`` is True when HDF5 itself hit the failure (rather than the writer's free-space check before the
    write); HDF5 may then crash when its handles are released, so a command line should exit right after reporting.
    """

    hdf5_failed = False

    def __str__(self) -> str:
        return str(self.strerror if self.strerror is not None else super().__str__())


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


def _store_id(f: h5py.File) -> str | None:
    v = f.attrs.get("store_id")
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _fingerprint(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _validate_table(path: Path, tab: dict[str, np.ndarray], n_events: int, n_ms: int) -> None:
    """The recording table must describe disjoint, in-bounds ranges consistent with each recording's time span."""
    r = len(tab["name"])
    if not r:
        return

    def bad(k: int, what: str) -> StoreFormatError:
        return StoreFormatError(f"{path}: corrupt store, recording {k} ({str(tab['name'][k])!r}): {what}")

    off, num = tab["event_offset"], tab["num_events"]
    moff, mcnt = tab["ms_offset"], tab["ms_count"]
    t0, t1 = tab["t_start"], tab["t_end"]
    h, w = tab["height"], tab["width"]
    checks = [
        (
            (num < 0) | (off < 0) | (off + num > n_events),
            lambda k: f"events {off[k]}..{off[k] + num[k]} outside the {n_events} stored events",
        ),
        (
            (mcnt < 1) | (moff < 0) | (moff + mcnt > n_ms),
            lambda k: f"ms index {moff[k]}..{moff[k] + mcnt[k]} outside the {n_ms} stored entries",
        ),
        ((h < 1) | (w < 1) | (h > 32768) | (w > 32768), lambda k: f"sensor size {h[k]}x{w[k]} outside 1..32768"),
        (t1 < t0, lambda k: f"t_end {t1[k]} before t_start {t0[k]}"),
    ]
    want = np.where(num > 0, (t1 - t0) // MS + 2, 1)
    checks.append(
        (mcnt != want, lambda k: f"ms index has {mcnt[k]} entries, its span {t0[k]}..{t1[k]} needs {want[k]}")
    )
    for mask, msg in checks:
        if mask.any():
            raise bad(int(np.flatnonzero(mask)[0]), msg(int(np.flatnonzero(mask)[0])))
    for start, count, what in ((off, num, "events"), (moff, mcnt, "ms index")):
        order = np.lexsort((count, start))
        s_, c_ = start[order], count[order]
        nz = c_ > 0
        s_, c_, order = s_[nz], c_[nz], order[nz]
        overlap = s_[1:] < s_[:-1] + c_[:-1]
        if overlap.any():
            k = int(np.flatnonzero(overlap)[0])
            raise bad(int(order[k + 1]), f"its {what} overlap those of recording {int(order[k])}")


def _validate_ms_index(path: Path, tab: dict[str, np.ndarray], ms: h5py.Dataset, n_ms: int) -> None:
    """Each recording's ms index starts at 0, ends at its event count and (when read whole) never decreases."""
    r = len(tab["name"])
    if not r:
        return
    moff, mcnt, num = tab["ms_offset"], tab["ms_count"], tab["num_events"]
    if n_ms <= _MS_VALIDATE_ENTRIES:
        idx = ms[...]
        first, last = idx[moff], idx[moff + mcnt - 1]
        owner = np.full(n_ms, -1, np.int64)
        for k in np.flatnonzero(mcnt > 1):  # a cheap loop: one slice assignment per recording
            owner[moff[k] : moff[k] + mcnt[k]] = k
        inner = (owner[1:] == owner[:-1]) & (owner[1:] >= 0)
        dec = inner & (idx[1:] < idx[:-1])
        if dec.any():
            j = int(np.flatnonzero(dec)[0])
            k = int(owner[j])
            raise StoreFormatError(
                f"{path}: corrupt store, recording {k} ({str(tab['name'][k])!r}): ms index decreases at entry "
                f"{j + 1 - moff[k]} ({idx[j]} -> {idx[j + 1]})"
            )
    else:
        points = np.unique(np.concatenate([moff, moff + mcnt - 1]))
        values = ms[points]  # one increasing point selection
        first = values[np.searchsorted(points, moff)]
        last = values[np.searchsorted(points, moff + mcnt - 1)]
    wrong = (first != 0) | (last != num)
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        raise StoreFormatError(
            f"{path}: corrupt store, recording {k} ({str(tab['name'][k])!r}): ms index runs {first[k]}..{last[k]}, "
            f"expected 0..{num[k]} (its event count)"
        )


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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Remove ``<path>.tmp-<pid>`` files left by writers that no longer run.

    Returns ``(removed, active)``: the stale files removed and the temporary files of processes still alive (another
    writer, left untouched; this process's own is neither).
    """
    path = Path(path)
    removed: list[Path] = []
    active: list[Path] = []
    if not path.parent.is_dir():
        return removed, active
    prefix = f"{path.name}.tmp-"
    for cand in sorted(path.parent.glob(f"{path.name}.tmp-*")):
        tail = cand.name[len(prefix) :]
        if not tail.isdigit() or int(tail) == os.getpid():
            continue
        if _pid_alive(int(tail)):
            active.append(cand)
            continue
        try:
            cand.unlink()
            removed.append(cand)
        except FileNotFoundError:
            pass
        except OSError as e:
            warnings.warn(f"{cand}: stale temporary store of a dead writer, cannot be removed ({e})", stacklevel=2)
    return removed, active


#: Free space (and room below a ``ulimit -f`` file-size limit) kept beyond every write: HDF5 must never hit a full
#: disk itself, since closing a file whose writes failed can crash the library (seen as a segfault at exit).
_ROOM_MARGIN = 8 << 20


def _check_room(tmp_path: Path, nbytes: int, name: Path | None = None) -> None:
    """Raise :class:`StoreWriteError` (naming ``name``, the store) before a write of ``nbytes`` to ``tmp_path`` that
    the disk or the file-size limit cannot hold."""
    need = int(nbytes) + _ROOM_MARGIN
    try:
        st = os.statvfs(tmp_path.parent)
        free = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        free = None
    if free is not None and free < need:
        raise StoreWriteError(
            errno.ENOSPC,
            f"{name or tmp_path}: cannot write the store: the disk is full ({free / 1e6:.1f} MB free, a write of up to "
            f"{nbytes / 1e6:.1f} MB plus {_ROOM_MARGIN >> 20} MB of headroom needed); nothing was written",
        )
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return
    if soft != resource.RLIM_INFINITY:
        size = tmp_path.stat().st_size if tmp_path.exists() else 0
        if size + need > soft:
            raise StoreWriteError(
                errno.EFBIG,
                f"{name or tmp_path}: cannot write the store: the disk is full or a file size limit was reached "
                f"(ulimit -f {soft / 1e6:.1f} MB; the store would exceed it); nothing was written",
            )


def _write_error(path: Path, e: BaseException) -> StoreWriteError:
    text = str(e)
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    if full or any(k in text for k in ("No space left", "File too large", "errno = 28", "errno = 27", "quota")):
        why = "the disk is full (or a file size limit was reached)"
    else:
        why = "the file cannot be written"
    first = text.splitlines()[0] if text else ""
    err = StoreWriteError(getattr(e, "errno", None), f"{path}: cannot write the store: {why} ({first})")
    err.hdf5_failed = True  # HDF5 itself saw the failure: its handles may not close cleanly
    return err


def _check_sorted(where: str, field: str, t: np.ndarray) -> None:
    dec = np.diff(t) < 0
    if dec.any():
        i = int(np.flatnonzero(dec)[0]) + 1
        raise EventFormatError(where, field, f"timestamp decreases from {t[i - 1]} to {t[i]}", i)


class _Appender:
    """Buffers rows for datasets of equal length and writes them in whole chunks (no partial-chunk rewrites).

    ``before_write(nbytes)`` (optional) is called with the uncompressed size of every write before HDF5 sees it
    (the writer's free-space check).
    """

    def __init__(self, datasets: list[h5py.Dataset], chunk: int, before_write: Any = None) -> None:
        self.datasets = datasets
        self.before_write = before_write
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
        if self.before_write is not None:
            self.before_write(sum(k * ds.dtype.itemsize * int(np.prod(ds.shape[1:])) for ds in self.datasets))
        for ds, parts in zip(self.datasets, self.parts):
            data = parts[0] if len(parts) == 1 else np.concatenate(parts)
            ds.resize(end, axis=0)
            ds[self.written : end] = data[:k]
            parts[:] = [data[k:]] if len(data) > k else []
        self.written = end
        self.buffered -= k

    def rollback(self, length: int) -> None:
        """Forget every row from ``length`` on (buffered or already written; written ones are truncated)."""
        length = int(length)
        if length >= self.length:
            return
        if length >= self.written:
            keep = length - self.written
            for parts in self.parts:
                data = parts[0] if len(parts) == 1 else np.concatenate(parts)
                parts[:] = [data[:keep]] if keep else []
            self.buffered = keep
            return
        for ds, parts in zip(self.datasets, self.parts):
            ds.resize(length, axis=0)
            parts.clear()
        self.written, self.buffered = length, 0


def check_class_lists(stores: dict[str, list[str]] | list[tuple[str, list[str]]]) -> None:
    """Refuse stores whose class lists differ (labels are indices into them, so they must mean the same classes).

    ``stores`` maps a name (e.g. the path, or ``"train"``) to its class list; stores without classes (unlabelled)
    are ignored. Raises ``ValueError`` naming the first difference, e.g. ``test.h5 has class 'digit_7' at index 1
    where train.h5 has 'digit_2'`` (convert the second with ``--classes-from`` the first).
    """
    items = [(str(k), list(v)) for k, v in (stores.items() if isinstance(stores, dict) else stores) if len(v)]
    if len(items) < 2:
        return
    ref_name, ref = items[0]
    for name, cls in items[1:]:
        if cls == ref:
            continue
        for j in range(max(len(ref), len(cls))):
            a = ref[j] if j < len(ref) else None
            b = cls[j] if j < len(cls) else None
            if a != b:
                if a is None:
                    what = f"{name} has class {b!r} at index {j}, beyond the {len(ref)} classes of {ref_name}"
                elif b is None:
                    what = f"{name} has {len(cls)} classes, {ref_name} also has {a!r} at index {j}"
                else:
                    what = f"{name} has class {b!r} at index {j} where {ref_name} has {a!r}"
                raise ValueError(
                    f"class lists differ: {what}; labels would mean different classes "
                    f"(convert {name} with `evssl convert ... --classes-from {ref_name}`)"
                )


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
        max_span_us: refuse a recording whose last timestamp lies more than this after its first (default
            :data:`DEFAULT_MAX_SPAN_US`, 24 h; ``None``: no limit). The ms index is built and written in bounded
            pieces, so memory never depends on the span; this limit bounds the index's size on disk and catches
            corrupt timestamps.

    Stale temporary files: ``<path>.tmp-<pid>`` files whose writer process no longer exists (a killed ``convert``)
    are removed when a writer for ``path`` starts; they are listed in :attr:`removed_stale`. Temporary files of live
    processes are left alone (and listed in :attr:`active_writers`).

    Every finished store gets a new random ``store_id`` attribute (also after an append), which
    :class:`EventStore` checks whenever it reopens the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        append: bool = False,
        compression: str = "blosc-zstd",
        clevel: int = 3,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        max_span_us: int | None = DEFAULT_MAX_SPAN_US,
    ) -> None:
        compression_kwargs(compression, clevel)  # validate early
        self.path = Path(path)
        self.tmp_path = Path(f"{self.path}.tmp-{os.getpid()}")
        self.compression = compression
        self.clevel = int(clevel)
        self.chunk_events = max(int(chunk_events), 1)
        self.max_span_us = None if max_span_us is None else int(max_span_us)
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.removed_stale, self.active_writers = clean_stale_temporaries(self.path)
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
        room = self._before_write
        self._events = _Appender([f[f"events/{c}"] for c in FIELDS], f["events/t"].chunks[0], room)
        self._ms = _Appender([f["ms_to_idx"]], f["ms_to_idx"].chunks[0], room)
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
            self._optional[key] = _Appender([self._f[n] for n in names], chunk_rows, self._before_write)
        return self._optional[key]

    def _before_write(self, nbytes: int) -> None:
        _check_room(self.tmp_path, nbytes, self.path)

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
        events: Events | Iterable[Events],
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
        validate: bool = True,
    ) -> int:
        """Append one recording and return its index.

        Everything is checked before anything is written, so a failed ``add`` (an :class:`EventFormatError` naming
        the recording and the field) leaves the writer usable. Streamed chunks are checked as they arrive; when one
        fails (or the iterator raises), everything this ``add`` wrote is rolled back and the writer stays usable.

        Args:
            events: one :class:`Events`, or an iterable of chunks of one recording in time order (all with the same
                sensor size; e.g. ``evssl.events.io.iter_events``), written as they arrive (memory bounded by one
                chunk; the ms index is built incrementally). Both give the same store. Validated here (dtypes,
                bounds, time order, polarity, sensor size within int16, span within ``max_span_us``).
            name: recording name (e.g. the path relative to the data set root).
            label: class index, -1 when unlabelled.
            source, split: free-form origin and split name ("train", "val", ...).
            frames, frame_t: (F,H,W,3) uint8 RGB and their (F,) µs timestamps.
            semantic, flow, depth, dense_t: (D,H,W) uint8, (D,2,H,W) float, (D,H,W) float and their (D,) µs times.
            poses, pose_t: (P,4,4) camera-to-world matrices and their (P,) µs times.
            intrinsics: (3,3) camera matrix. embedding: (E,) float vector (e.g. an image embedding of a frame).
            validate: check every event (set False only for chunks an evssl reader has validated already; the
                sensor size, the time order across chunks and the span limit are checked either way).
        """
        self._check_open()
        if not isinstance(name, str):
            raise TypeError(f"recording name must be a str, got {type(name).__name__}")
        where = f"recording {name!r}"
        streamed = not isinstance(events, Events)
        if streamed and (not isinstance(events, Iterable) or isinstance(events, (str, bytes, np.ndarray))):
            raise EventFormatError(
                where, "events", f"expected evssl Events (or chunks of them), got {type(events).__name__}"
            )
        if not streamed and validate:
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
        row: dict[str, Any] = {"name": name, "source": str(source), "split": str(split), "label": label}
        row.update(self._write_events([events] if not streamed else events, where, validate))
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

    def _write_events(self, chunks: Iterable[Events], where: str, validate: bool = True) -> dict[str, int]:
        """Append a recording's events chunk by chunk and build its ms index incrementally; the table row fields.

        Millisecond index, streamed: with ``t_first`` the first timestamp, entry ``k`` is the first index with
        ``t >= t_first + 1000 k``. Once the events up to timestamp ``T`` are seen, every entry with
        ``t_first + 1000 k <= T`` is final, and it lies in the newest chunk (earlier chunks end before that bound),
        so each chunk adds entries ``k_done .. (T - t_first) // 1000`` by a ``searchsorted`` in that chunk (in
        pieces of at most ``_MS_PIECE`` entries, so a long gap costs bounded memory). The last entry,
        ``k = (t_last - t_first) // 1000 + 1``, is the event count. This equals
        :func:`evssl.events.slicing.ms_index` of the concatenated timestamps.
        """
        ev0, ms0 = self._events.length, self._ms.length
        n = 0
        size: tuple[int, int] | None = None
        t_first = t_last = 0
        k_done = 0
        try:
            for ev in chunks:
                if not isinstance(ev, Events):
                    raise EventFormatError(where, "events", f"chunk is {type(ev).__name__}, expected evssl Events")
                if size is None:
                    size = (int(ev.height), int(ev.width))
                    for field, v in (("height", size[0]), ("width", size[1])):
                        if not 0 < v <= np.iinfo(np.int16).max + 1:
                            raise EventFormatError(
                                where, "sensor_size", f"{field} {v} outside 1..32768 (int16 coordinates)"
                            )
                elif (ev.height, ev.width) != size:
                    raise EventFormatError(
                        where,
                        "sensor_size",
                        f"chunk at event {n} has size {ev.height}x{ev.width}, earlier {size[0]}x{size[1]}",
                    )
                if validate:
                    ev.validate(where if not n else f"{where} (chunk starting at event {n})")
                if not len(ev):
                    continue
                t = ev.t
                if n == 0:
                    t_first = int(t[0])
                elif int(t[0]) < t_last:
                    raise EventFormatError(where, "t", f"timestamp decreases from {t_last} to {int(t[0])}", n)
                t_end = int(t[-1])
                if self.max_span_us is not None and t_end - t_first > self.max_span_us:
                    i = int(np.searchsorted(t, t_first + self.max_span_us, side="right"))
                    late = int(t[i]) - t_first
                    raise EventFormatError(
                        where,
                        "t",
                        f"timestamp {int(t[i])} lies {late} µs ({late / 3.6e9:.1f} h) after the first ({t_first}), "
                        f"beyond the {self.max_span_us / 3.6e9:g} h limit on a recording's span (a corrupt "
                        "timestamp? raise max_span_us / --max-span-hours to accept it)",
                        n + i,
                    )
                k_hi = (t_end - t_first) // MS
                try:
                    self._events.append([getattr(ev, c) for c in FIELDS])
                    for k0 in range(k_done, k_hi + 1, _MS_PIECE):
                        bounds = t_first + MS * np.arange(k0, min(k0 + _MS_PIECE, k_hi + 1), dtype=np.int64)
                        self._ms.append([n + np.searchsorted(t, bounds, side="left").astype(np.int64)])
                except OSError as e:
                    self._abort()
                    if isinstance(e, StoreWriteError):
                        raise
                    raise _write_error(self.path, e) from e
                k_done = max(k_done, k_hi + 1)
                n += len(ev)
                t_last = t_end
            if size is None:
                raise EventFormatError(where, "events", "no chunks (an empty recording is one empty Events)")
            self._ms.append([np.array([n], np.int64)])
        except StoreWriteError:
            raise
        except BaseException:
            if not self._closed:
                self._events.rollback(ev0)
                self._ms.rollback(ms0)
            raise
        return {
            "height": size[0],
            "width": size[1],
            "event_offset": ev0,
            "num_events": n,
            "t_start": t_first if n else 0,
            "t_end": t_last if n else 0,
            "ms_offset": ms0,
            "ms_count": self._ms.length - ms0,
        }

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
            self._f.attrs["store_id"] = uuid.uuid4().hex
            self._f.flush()
            self._f.close()
            _fsync_path(self.tmp_path)
            os.replace(self.tmp_path, self.path)
            _fsync_path(self.path.parent, directory=True)
            self._closed = True
        except OSError as e:
            self._abort()
            if isinstance(e, StoreWriteError):
                raise
            raise _write_error(self.path, e) from e
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
    keeps the path and the store identity, so the store can be handed to spawned workers too.

    Identity: every reopen (lazy open, fork, unpickling) checks that the file at ``path`` is still the store whose
    table this reader holds, by the ``store_id`` attribute every :class:`StoreWriter` session writes (stores written
    before it existed: by inode, size and modification time). A replaced file (a re-convert, an append) raises
    :class:`StoreChangedError`; the old table is never applied to new data.

    Validation at open: the table's offsets and counts must lie inside the event columns and the ms index, not
    overlap, and agree with each recording's time span; the ms index itself is checked (every entry when it has at
    most 4 Mi entries, else each recording's end points at open and every entry a lookup uses).

    Args:
        path: the store file.
        expect_id: raise :class:`StoreChangedError` unless the file's ``store_id`` is this (e.g. the id a data
            module recorded when it read the store's labels and splits).

    Attributes:
        path: the file. classes: class names. attrs: store-level metadata. labels: (R,) int64. splits, names: (R,) str.
        store_id: the identity written by the writer (``None`` for stores written before it existed).
    """

    def __init__(self, path: str | os.PathLike[str], *, expect_id: str | None = None) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        with _open_h5(self.path) as f:
            _check_store_file(f, self.path)
            self.store_id: str | None = _store_id(f)
            self._fingerprint = _fingerprint(self.path)
            if expect_id is not None and self.store_id != expect_id:
                raise StoreChangedError(
                    f"{self.path}: the file was replaced (store id {self.store_id} instead of the expected "
                    f"{expect_id}); the recording table read earlier no longer applies, set the data up again"
                )
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
            _validate_table(self.path, tab, n_events, n_ms)
            _validate_ms_index(self.path, tab, f["ms_to_idx"], n_ms)
        self._tab = tab
        self.labels: np.ndarray = tab["label"]
        self.splits: np.ndarray = tab["split"]
        self.names: np.ndarray = tab["name"]
        self.num_events: np.ndarray = tab["num_events"]

    # ------------------------------------------------------------------ file handling
    def _check_identity(self, f: h5py.File) -> None:
        if self.store_id is not None:
            now = _store_id(f)
            if now != self.store_id:
                raise StoreChangedError(
                    f"{self.path}: the file was replaced after its recording table was read (store id {self.store_id} "
                    f"is now {now}); open the store again (a new EventStore, or set the data module up again)"
                )
        elif _fingerprint(self.path) != self._fingerprint:
            raise StoreChangedError(
                f"{self.path}: the file changed (inode, size or modification time) after its recording table was "
                "read; open the store again (a new EventStore, or set the data module up again)"
            )

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
            f = _open_h5(self.path)
            try:
                self._check_identity(f)
            except BaseException:
                f.close()
                raise
            self._file = f
            self._pid = pid
            self._ds = {}
        ds = self._ds.get(name)
        if ds is None:
            ds = self._ds[name] = self._file[name]
        return ds

    def _read(self, name: str, a: int, b: int, i: int) -> np.ndarray:
        """Rows ``a:b`` of dataset ``name`` for recording ``i``; a failed read names the store and the recording."""
        ds = self._dset(name)
        try:
            return ds[a:b]
        except (OSError, RuntimeError, ValueError) as e:
            raise StoreFormatError(
                f"{self.path}: recording {i} ({str(self._tab['name'][i])!r}): cannot read {name}[{a}:{b}] "
                f"(corrupt or truncated store? {type(e).__name__}: {e})"
            ) from e

    def close(self) -> None:
        """Close the HDF5 handle of this process (it re-opens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._ds = None, None, {}

    def __getstate__(self) -> dict[str, Any]:
        if self.store_id is None:  # a store written before store ids: fall back to the file's stat fingerprint
            return {"path": str(self.path), "store_id": None, "fingerprint": self._fingerprint}
        return {"path": str(self.path), "store_id": self.store_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], expect_id=state.get("store_id"))  # type: ignore[misc]
        if state.get("store_id") is None and state.get("fingerprint") not in (None, self._fingerprint):
            raise StoreChangedError(f"{self.path}: the file changed after the pickled reader read its table")

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
        cols = {c: self._read(f"events/{c}", a, b, i) for c in ("x", "y", "p")}
        cols["t"] = self._read("events/t", a, b, i) if t is None else t
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
            k0, k1 = min(ks), max(ks)
            if k1 - k0 <= 4 * _MS_CHUNK:
                span = self._read("ms_to_idx", base + k0, base + k1 + 2, i)
                entries = {k: (int(span[k - k0]), int(span[k - k0 + 1])) for k in ks}
            else:
                for k in ks:
                    pair = self._read("ms_to_idx", base + k, base + k + 2, i)
                    entries[k] = (int(pair[0]), int(pair[1]))
            for k, (lo, hi) in entries.items():
                if not 0 <= lo <= hi <= n:
                    raise StoreFormatError(
                        f"{self.path}: recording {i} ({str(self._tab['name'][i])!r}): corrupt ms index, entries "
                        f"{k}..{k + 1} are ({lo}, {hi}), not inside 0..{n} in order"
                    )
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
        ts = self._read("events/t", off + lo, off + hi, i)
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
        ts = self._read("events/t", off + a_lo, off + b_hi, i)  # covers both refinements and the result
        if a_hi > b_hi or b_lo < a_lo:
            raise StoreFormatError(f"{self.path}: recording {i}: corrupt ms index (window bounds out of order)")
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
    "DEFAULT_MAX_SPAN_US",
    "DENSE_KEYS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "EventStore",
    "RecordingInfo",
    "StoreChangedError",
    "StoreFormatError",
    "StoreWriteError",
    "StoreWriter",
    "check_class_lists",
    "clean_stale_temporaries",
    "compression_kwargs",
]
