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
``% evt`` header line); ``read_events(path, format="evt3", sensor_size=(720, 1280))`` forces one. Every reader is
vectorised numpy, returns validated events (int16 x/y, int64 µs t, int8 ±1 p) and raises
:class:`~evssl.events.schema.EventFormatError` naming the file, the field and the offset/index on truncated or
corrupt input; it never returns a silent partial read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evssl.events.io._common import PathLike, source_name
from evssl.events.io._prophesee import read_raw_header
from evssl.events.io.aedat4 import MAGIC as AEDAT4_MAGIC
from evssl.events.io.aedat4 import read_aedat4
from evssl.events.io.bin40 import read_bin40
from evssl.events.io.dat import read_dat
from evssl.events.io.evt2 import read_evt2
from evssl.events.io.evt3 import read_evt3
from evssl.events.io.npz import read_npz
from evssl.events.io.text import read_text
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
    if not Path(path).exists():
        raise FileNotFoundError(path)
    name = detect_format(path) if format is None else ALIASES.get(format.lower(), format.lower())
    if name not in FORMATS:
        raise ValueError(f"unknown event format {format!r}; known: {sorted(FORMATS)} and aliases {sorted(ALIASES)}")
    return FORMATS[name](path, **kw)


__all__ = [
    "FORMATS",
    "detect_format",
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
