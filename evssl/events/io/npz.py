"""numpy event files: N-ImageNet ``.npz`` and generic ``.npz`` / ``.npy`` event arrays.

Accepted layouts (first match wins):

- N-ImageNet (Kim et al., ICCV 2021), compressed: key ``event_data``, a structured array with fields
  ``x, y, t, p`` (t an integer in µs; p bool or 0/1). Sensor 480x640 (a Samsung DVS Gen3 moved over a monitor).
- N-ImageNet, uncompressed: keys ``x_pos, y_pos, timestamp, polarity``.
- Generic ``.npz``: separate arrays ``x, y, t, p`` (``ts``/``timestamp`` and ``pol``/``polarity`` also accepted),
  optionally ``height``/``width`` or ``sensor_size`` = (height, width).
- ``.npy``: a structured array with fields ``x, y, t, p`` (e.g. the expelliarmus reference decodes), or a plain
  (N, 4) array whose column order is given by ``columns`` (default ``"xytp"``, the EST N-Caltech101/N-Cars layout
  with t in seconds and p in -1/+1).

Time unit (``time_unit``): ``"auto"`` treats integer timestamps as µs and float timestamps as seconds when any of
them has a fractional part, else as µs (a float column of whole seconds must be passed with ``time_unit="s"``);
``"s"``, ``"ms"``, ``"us"``, ``"ns"`` force a unit. Float times are rounded to the nearest µs. Polarity: values
in {0, 1} (or bool) are OFF/ON; values in {-1, +1} are kept; anything else is an error.

Sensor size (``(height, width)``): the caller's ``sensor_size``, else the file's own, else 480x640 for the
N-ImageNet layouts, else max coordinate + 1 (these last two are *inferred*). A file size (``sensor_size``,
``height``/``width``) that is not a pair of integers in [1, 32767] raises naming the key. Zero events raise
:class:`~evssl.events.io._common.EmptyRecordingError`.
"""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    SensorSize,
    caller_size,
    check_coords,
    check_size,
    choose_size,
    max_xy,
    source_name,
    whole_file_opened,
)
from evssl.events.schema import EventFormatError, Events

NIMAGENET_SIZE = (480, 640)
_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
TIME_SCALE = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}
_ALIASES = {
    "x": ("x", "x_pos"),
    "y": ("y", "y_pos"),
    "t": ("t", "ts", "timestamp", "timestamps"),
    "p": ("p", "pol", "polarity", "polarities"),
}


def _pick(names: list[str] | tuple[str, ...], field: str) -> str | None:
    return next((n for n in _ALIASES[field] if n in names), None)


def _columns_from_npz(z: np.lib.npyio.NpzFile, src: str) -> tuple[dict[str, np.ndarray], tuple[int, int] | None, bool]:
    """Columns, the file's own sensor size (if any) and whether it is an N-ImageNet file."""
    keys = list(z.files)
    if "event_data" in keys:
        arr = z["event_data"]
        return _columns_from_structured(arr, src), None, True
    names = {f: _pick(keys, f) for f in "xytp"}
    missing = [f for f, n in names.items() if n is None]
    if missing:
        raise EventFormatError(src, missing[0], f"no array for field '{missing[0]}' among keys {keys}")
    cols = {f: z[n] for f, n in names.items()}
    size = None
    if "sensor_size" in keys:
        hw = np.asarray(z["sensor_size"]).ravel()
        if hw.size != 2 or hw.dtype.kind not in "iuf":
            raise EventFormatError(src, "sensor_size", f"expected 2 numbers (height, width), got {hw.dtype} {hw.shape}")
        size = check_size(hw[0].item(), hw[1].item(), src, "sensor_size")
    elif "height" in keys or "width" in keys:
        vals = []
        for key in ("height", "width"):
            if key not in keys:
                raise EventFormatError(src, key, "the file has 'height' or 'width' but not both")
            v = np.asarray(z[key])
            if v.size != 1 or v.dtype.kind not in "iuf":
                raise EventFormatError(src, key, f"expected one number, got {v.dtype} {v.shape}")
            vals.append(v.ravel()[0].item())
        size = check_size(vals[0], vals[1], src, "height/width")
    return cols, size, "x_pos" in keys


def _columns_from_structured(arr: np.ndarray, src: str) -> dict[str, np.ndarray]:
    names = arr.dtype.names or ()
    out = {}
    for f in "xytp":
        n = _pick(names, f)
        if n is None:
            raise EventFormatError(src, f, f"structured array has no field for '{f}' (fields: {list(names)})")
        out[f] = arr[n]
    return out


def _to_us(t: np.ndarray, time_unit: str, src: str) -> np.ndarray:
    t = np.asarray(t).ravel()
    if time_unit not in ("auto", *TIME_SCALE):
        raise ValueError(f"time_unit must be 'auto' or one of {sorted(TIME_SCALE)}, got {time_unit!r}")
    if t.dtype.kind in "iub":
        if time_unit in ("auto", "us"):
            return t.astype(np.int64)
        if time_unit == "ns":
            return (t.astype(np.int64) + 500) // 1000
        return t.astype(np.int64) * int(TIME_SCALE[time_unit])
    if t.dtype.kind != "f":
        raise EventFormatError(src, "t", f"unsupported timestamp dtype {t.dtype}")
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EventFormatError(src, "t", f"non-finite timestamp {t[i]}", i)
    unit = time_unit
    if unit == "auto":
        unit = "s" if (t != np.round(t)).any() else "us"
    return np.rint(t.astype(np.float64) * TIME_SCALE[unit]).astype(np.int64)


def _polarity(p: np.ndarray) -> tuple[np.ndarray, str]:
    p = np.asarray(p).ravel()
    if p.dtype == bool:
        return p.astype(np.int8), "01"
    if len(p) and p.min() < 0:
        return p, "pm1"
    return p, "01"


def read_npz(
    path: PathLike,
    sensor_size: SensorSize = None,
    *,
    time_unit: str = "auto",
    columns: str = "xytp",
) -> Events:
    """Read an N-ImageNet ``.npz`` or a generic ``.npz``/``.npy`` event array (see the module doc for the rules)."""
    return _read(path, sensor_size, time_unit, columns)[0]


def open_npz(
    path: PathLike,
    sensor_size: SensorSize = None,
    *,
    time_unit: str = "auto",
    columns: str = "xytp",
    chunk_events: int = 1_000_000,
) -> Opened:
    """Chunked reading (numpy files are loaded whole by numpy anyway: read, then split)."""
    ev, inferred = _read(path, sensor_size, time_unit, columns)
    return whole_file_opened(ev, inferred, chunk_events)


def _read(path: PathLike, sensor_size: SensorSize, time_unit: str, columns: str) -> tuple[Events, bool]:
    src = source_name(path)
    given = caller_size(sensor_size, src)
    file_size: tuple[int, int] | None = None
    nimagenet = False
    try:
        loaded = np.load(path, allow_pickle=False)
    except _LOAD_ERRORS as e:  # truncated zip / npy header, pickled objects
        raise EventFormatError(src, "file", f"cannot load as .npz/.npy: {e}") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded as z:
            try:
                cols, file_size, nimagenet = _columns_from_npz(z, src)
            except EventFormatError:
                raise
            except _LOAD_ERRORS as e:  # zlib / zip member errors surface here
                raise EventFormatError(src, "file", f"corrupt .npz member: {e}") from e
    elif loaded.dtype.names:
        cols = _columns_from_structured(loaded, src)
    elif loaded.ndim == 2 and loaded.shape[1] == 4:
        if sorted(columns) != sorted("xytp"):
            raise ValueError(f"columns must be a permutation of 'xytp', got {columns!r}")
        cols = {f: loaded[:, columns.index(f)] for f in "xytp"}
    else:
        raise EventFormatError(src, "file", f"expected a structured or (N, 4) array, got {loaded.dtype} {loaded.shape}")
    t = _to_us(cols["t"], time_unit, src)
    p, polarity = _polarity(cols["p"])
    x = np.asarray(cols["x"]).ravel()
    y = np.asarray(cols["y"]).ravel()
    for name, arr in (("x", x), ("y", y)):
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise EventFormatError(src, name, f"non-integer coordinate {arr[i]}", i)
        if len(arr) and arr.min() < 0:
            i = int(np.flatnonzero(arr < 0)[0])
            raise EventFormatError(src, name, f"negative coordinate {arr[i]}", i)
    check_coords(x, y, src)
    x = x.astype(np.int64)
    y = y.astype(np.int64)
    if not len(x):
        stated = given if isinstance(given, tuple) else file_size
        raise EmptyRecordingError(src, "no events: the arrays are empty", stated)
    defaults = (NIMAGENET_SIZE,) if nimagenet else ()
    size, inferred = choose_size(given, file_size, max_xy(x, y), defaults, src)
    return Events.from_arrays(x, y, t, p, size[0], size[1], polarity=polarity, source=src), inferred
