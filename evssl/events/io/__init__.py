"""Event file readers: every real-world format decoded to the one :class:`~evssl.events.schema.Events` schema.

=========  =====================================================  ===========================================
name       files                                                  module
=========  =====================================================  ===========================================
bin40      N-MNIST / N-Caltech101 ``.bin``, slayer ``.bs2``       :mod:`evssl.events.io.bin40`
npz        N-ImageNet ``.npz``, generic ``.npz`` / ``.npy``       :mod:`evssl.events.io.npz`
dat        Prophesee ``.dat`` v2 (N-Cars, Gen1, 1Mpx)             :mod:`evssl.events.io.dat`
evt2       Prophesee EVT 2.0 ``.raw``                             :mod:`evssl.events.io.evt2`
evt3       Prophesee EVT 3.0 ``.raw``                             :mod:`evssl.events.io.evt3`
aedat4     iniVation AEDAT 4.0 ``.aedat4``                        :mod:`evssl.events.io.aedat4`
text       Event Camera Dataset ``events.txt``                    :mod:`evssl.events.io.text`
store      evssl HDF5 store ``.h5`` (one recording)               :mod:`evssl.events.io.store`
=========  =====================================================  ===========================================

``read_events(path)`` picks the reader from the extension and the file's first bytes (``.raw`` files by their
``% evt`` header line); ``read_events(path, format="evt3", sensor_size=(720, 1280))`` forces one. Every reader
returns validated events (int16 x/y, int64 µs t, int8 ±1 p) and raises
:class:`~evssl.events.schema.EventFormatError` naming the file, the field and the offset/index on truncated or
corrupt input; it never returns a silent partial read. A file without a single event (empty, header-only, only
non-event words) raises the subclass :class:`EmptyRecordingError`, which a caller may choose to accept.

Chunked reading: ``iter_events(path, chunk_events=1_000_000)`` yields validated :class:`Events` chunks of exactly
``chunk_events`` events (the last may be shorter) whose concatenation equals ``read_events(path)``; the large
formats (EVT 2.0, EVT 3.0, ``.dat``, AEDAT 4.0, text) hold memory bounded by the chunk size, not the file.
``probe_events(path)`` returns ``(format, height, width, inferred)``: ``inferred`` is True when the size was guessed
from the events (max + 1, or a format default they fit) rather than given by the caller or stated by the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    Probe,
    SensorSize,
    caller_size,
    check_chunk_events,
    source_name,
    whole_file_opened,
)
from evssl.events.io._prophesee import read_raw_header
from evssl.events.io.aedat4 import MAGIC as AEDAT4_MAGIC
from evssl.events.io.aedat4 import open_aedat4, read_aedat4
from evssl.events.io.bin40 import open_bin40, read_bin40
from evssl.events.io.dat import open_dat, read_dat
from evssl.events.io.evt2 import open_evt2, read_evt2
from evssl.events.io.evt3 import open_evt3, read_evt3
from evssl.events.io.npz import open_npz, read_npz
from evssl.events.io.text import open_text, read_text
from evssl.events.schema import EventFormatError, Events

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
EXTENSIONS = {
    ".bin": "bin40",
    ".bs2": "bin40",
    ".npz": "npz",
    ".npy": "npz",
    ".dat": "dat",
    ".aedat4": "aedat4",
    ".txt": "text",
    ".csv": "text",
    ".h5": "store",
    ".hdf5": "store",
}
ALIASES = {"nmnist": "bin40", "ncaltech101": "bin40", "bin": "bin40", "txt": "text", "h5": "store", "nimagenet": "npz"}


def read_store_recording(path: PathLike, recording: int | str = 0, **kw: Any) -> Events:
    """One recording of an evssl HDF5 store (by index, or by name), as :class:`Events`."""
    from evssl.events.io.store import EventStore  # lazy: h5py/hdf5plugin only when a store is read

    store = EventStore(path)
    try:
        if isinstance(recording, str):
            names = [store.info(i).name for i in range(len(store))]
            if recording not in names:
                raise EventFormatError(
                    source_name(path), "recording", f"no recording named {recording!r} ({names[:5]})"
                )
            recording = names.index(recording)
        return store.events(int(recording), **kw)
    finally:
        store.close()


def read_raw(path: PathLike, **kw: Any) -> Events:
    """A Prophesee ``.raw`` file, decoded as EVT 2.0 or 3.0 according to its header."""
    return FORMATS[_raw_format(path)](path, **kw)


FORMATS: dict[str, Callable[..., Events]] = {
    "bin40": read_bin40,
    "npz": read_npz,
    "dat": read_dat,
    "evt2": read_evt2,
    "evt3": read_evt3,
    "raw": read_raw,
    "aedat4": read_aedat4,
    "text": read_text,
    "store": read_store_recording,
}


def open_store_recording(
    path: PathLike, sensor_size: SensorSize = None, *, chunk_events: int = 1_000_000, **kw: Any
) -> Opened:
    """Chunked reading of one store recording (read whole, then split; the store has its own windowed access)."""
    if sensor_size is not None:
        kw["sensor_size"] = sensor_size
    return whole_file_opened(read_store_recording(path, **kw), False, chunk_events)


def open_raw(path: PathLike, **kw: Any) -> Opened:
    """Chunked reading of a ``.raw`` file as EVT 2.0 or 3.0 according to its header."""
    return OPENERS[_raw_format(path)](path, **kw)


OPENERS: dict[str, Callable[..., Opened]] = {
    "bin40": open_bin40,
    "npz": open_npz,
    "dat": open_dat,
    "evt2": open_evt2,
    "evt3": open_evt3,
    "raw": open_raw,
    "aedat4": open_aedat4,
    "text": open_text,
    "store": open_store_recording,
}


def _raw_format(path: PathLike) -> str:
    header = read_raw_header(path)
    versions = {"2.0": "evt2", "3.0": "evt3"}
    if header.version in versions:
        return versions[header.version]
    if header.version is None:
        raise EventFormatError(source_name(path), "evt", "no '% evt X.Y' (or '% format EVTn') line in the header")
    raise EventFormatError(
        source_name(path), "evt", f"unknown EVT version {header.version!r} (readable: {sorted(versions)})"
    )


def detect_format(path: PathLike) -> str:
    """The :data:`FORMATS` name for ``path``, from its first bytes and its extension.

    Magic numbers win over extensions (AEDAT 4.0, HDF5, numpy, zip, a ``%`` Prophesee header); ``.raw`` files map to
    ``evt2``/``evt3`` from their header. Raises :class:`EventFormatError` when the format cannot be told.
    """
    src = source_name(path)
    with open(path, "rb") as f:
        head = f.read(64)
    ext = Path(path).suffix.lower()
    if head.startswith(AEDAT4_MAGIC):
        return "aedat4"
    if head.startswith(HDF5_MAGIC):
        return "store"
    if head.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if ext == ".raw":
        return _raw_format(path)
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    if head.startswith(b"%"):  # a Prophesee header: .raw when it names an EVT version, else .dat
        return _raw_format(path) if read_raw_header(path).version is not None else "dat"
    if ext in (".aedat", ".aer"):
        raise EventFormatError(src, "format", "AEDAT 2.0/3.1 files are not supported (only AEDAT 4.0)")
    raise EventFormatError(src, "format", f"cannot tell the event format of extension {ext!r}; pass format=...")


def read_events(path: PathLike, format: str | None = None, **kw: Any) -> Events:
    """Read an event file in any supported format into :class:`Events`.

    ``format`` is a :data:`FORMATS` name (or an alias such as ``"nmnist"``, ``"txt"``); ``None`` auto-detects it with
    :func:`detect_format`. Extra keywords go to the reader (``sensor_size=(H, W)`` for every file format,
    ``time_unit``/``columns`` for text and numpy files, ``stream_id`` for AEDAT4, ``recording`` for a store).
    """
    name = _format_name(path, format)
    return FORMATS[name](path, **kw)


def _format_name(path: PathLike, format: str | None) -> str:
    if not Path(path).exists():
        raise FileNotFoundError(path)
    name = detect_format(path) if format is None else ALIASES.get(format.lower(), format.lower())
    if name not in FORMATS:
        raise ValueError(f"unknown event format {format!r}; known: {sorted(FORMATS)} and aliases {sorted(ALIASES)}")
    if name == "raw":
        name = _raw_format(path)
    return name


class EventChunks(Iterator[Events]):
    """The iterator :func:`iter_events` returns: validated :class:`Events` chunks, plus what the file is.

    ``probe`` (a :class:`Probe`: format, height, width, inferred) is known before the first chunk is read, so a
    caller can report an inferred size or allocate output first. ``close()`` releases the file early.
    """

    def __init__(self, probe: Probe, chunks: Iterator[Events]) -> None:
        self.probe = probe
        self._chunks = chunks

    def __iter__(self) -> EventChunks:
        return self

    def __next__(self) -> Events:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early (closes the underlying generator and its file)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def iter_events(
    path: PathLike,
    *,
    format: str | None = None,
    sensor_size: SensorSize = None,
    chunk_events: int = 1_000_000,
    **kw: Any,
) -> EventChunks:
    """Read an event file as consecutive validated :class:`Events` chunks in time order.

    Each chunk holds exactly ``chunk_events`` events (the last one may hold fewer); their concatenation equals
    ``read_events(path, format=format, sensor_size=sensor_size, **kw)`` exactly (columns, dtypes and sensor size).
    For EVT 2.0, EVT 3.0, ``.dat``, AEDAT 4.0 and text, memory is bounded by the chunk size (plus, for AEDAT 4.0,
    one packet), not by the file; the small formats (``.bin``, numpy, a store recording) are read whole and split.
    Errors name the file, the field and the stream index of the offending event (counted from the file's start).
    Where the sensor size has to be inferred from the events (no caller ``sensor_size``, none in the file), a
    bounded-memory pre-pass finds the largest coordinates before the first chunk. A file without events raises
    :class:`EmptyRecordingError` (before or at the end of the iteration). The returned :class:`EventChunks` carries
    ``probe`` = ``(format, height, width, inferred)``.
    """
    name = _format_name(path, format)
    chunk_events = check_chunk_events(chunk_events)
    caller_size(sensor_size, source_name(path))
    opened = OPENERS[name](path, sensor_size, chunk_events=chunk_events, **kw)
    return EventChunks(Probe(name, opened.size[0], opened.size[1], opened.inferred), opened.chunks)


def probe_events(path: PathLike, *, format: str | None = None, sensor_size: SensorSize = None, **kw: Any) -> Probe:
    """``(format, height, width, inferred)`` of an event file from its header / metadata, without decoding it.

    ``inferred`` is True when the size is not stated by the caller or the file and was derived from the events (max
    coordinate + 1, or a format default that holds every event): then the probe costs one bounded-memory pass over
    the events. An empty or header-only file raises :class:`EmptyRecordingError`.
    """
    chunks = iter_events(path, format=format, sensor_size=sensor_size, **kw)
    chunks.close()
    return chunks.probe


__all__ = [
    "FORMATS",
    "OPENERS",
    "EmptyRecordingError",
    "EventChunks",
    "Probe",
    "detect_format",
    "iter_events",
    "probe_events",
    "read_aedat4",
    "read_bin40",
    "read_dat",
    "read_events",
    "read_evt2",
    "read_evt3",
    "read_npz",
    "read_raw",
    "read_store_recording",
    "read_text",
]
