"""Shared parts of the Prophesee ``.raw`` readers: ASCII header, EVT version, sensor geometry, word access."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from evssl.events.io._common import PathLike, header_dict, header_geometry, read_percent_header, source_name
from evssl.events.io._stateful import Source
from evssl.events.schema import EventFormatError

#: Sensor sizes ``(height, width)`` by a substring of the ``plugin_name`` header (old files carry no geometry).
PLUGIN_SIZES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("genx320", (320, 320)),
    ("gen41", (720, 1280)),
    ("imx636", (720, 1280)),
    ("gen4", (720, 1280)),
    ("gen3", (480, 640)),
)


@dataclass(frozen=True)
class RawHeader:
    """The ASCII header of a ``.raw`` file: key/value lines, EVT version, geometry and where the body starts."""

    fields: dict[str, str]
    version: str | None
    geometry: tuple[int, int] | None
    body_offset: int


def _version(fields: dict[str, str]) -> str | None:
    if "evt" in fields:
        return fields["evt"].strip()
    m = re.match(r"\s*evt\s*(\d)(\d)?", fields.get("format", ""), re.IGNORECASE)
    if m:
        return f"{m.group(1)}.{m.group(2) or '0'}"
    return None


_HEADER_CACHE: dict[tuple, RawHeader] = {}


def _file_key(path: PathLike) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def read_raw_header(path: PathLike) -> RawHeader:
    """Parse the ``%`` header of a Prophesee ``.raw`` file (version from ``% evt X.Y`` or ``% format EVTn``).

    One linear pass over the header bytes (:func:`~evssl.events.io._common.read_percent_header`). The result is
    remembered for the file (keyed by path, inode, size and mtime), so format detection and the reader that follows
    parse it once.
    """
    key = _file_key(path)
    cached = _HEADER_CACHE.get(key)
    if cached is not None:
        return cached
    src = source_name(path)
    lines, pos = read_percent_header(path, src)
    fields = header_dict(lines)
    geometry = header_geometry(fields, src)
    if geometry is None:
        plugin = fields.get("plugin_name", "").lower()
        geometry = next((size for key_, size in PLUGIN_SIZES if key_ in plugin), None)
    header = RawHeader(fields, _version(fields), geometry, pos)
    if len(_HEADER_CACHE) > 64:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[key] = header
    return header


def raw_words(path: PathLike, header: RawHeader, dtype: str) -> np.ndarray:
    """The body of a ``.raw`` file as little-endian words (memory-mapped; a partial last word is an error)."""
    n = body_words(path, header, dtype)
    if n == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=header.body_offset)


def body_words(path: PathLike, header: RawHeader, dtype: str) -> int:
    """The number of ``dtype`` words in the body of a ``.raw`` file (a partial last word is an error)."""
    src = source_name(path)
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
    itemsize = np.dtype(dtype).itemsize
    body = size - header.body_offset
    if body % itemsize:
        whole = body - body % itemsize
        raise EventFormatError(
            src,
            "word",
            f"body of {body} bytes is not a multiple of {itemsize}: truncated word at byte offset "
            f"{header.body_offset + whole}",
            whole // itemsize,
        )
    return body // itemsize


def check_version(header: RawHeader, expected: str, source: str) -> None:
    """Raise when the header names an EVT version other than ``expected`` (a missing version is accepted)."""
    if header.version is not None and header.version != expected:
        raise EventFormatError(source, "evt", f"header says EVT {header.version}, this reader decodes EVT {expected}")


def raw_source(path: PathLike, version: str, dtype: str) -> tuple[Source, tuple[int, int] | None]:
    """The body of an EVT ``version`` ``.raw`` file as a :class:`~evssl.events.io._stateful.Source` of ``dtype``
    words, and the geometry its header states (the header's EVT version is checked first)."""
    src = source_name(path)
    header = read_raw_header(path)
    check_version(header, version, src)
    n = body_words(path, header, dtype)
    return Source(str(path), src, header.body_offset, n, dtype), header.geometry
