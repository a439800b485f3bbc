"""The one event schema used everywhere in evssl.

Columns (numpy arrays on the I/O side):

=====  =======  ===========================================================
field  dtype    meaning
=====  =======  ===========================================================
``x``  int16    column, 0 <= x < width
``y``  int16    row, 0 <= y < height
``t``  int64    timestamp in microseconds, non-decreasing
``p``  int8     polarity: +1 = ON (brightness up), -1 = OFF (brightness down)
=====  =======  ===========================================================

plus the sensor size ``(height, width)``. Every reader converts to this schema; nothing
downstream guesses a polarity convention or a time unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIELDS = ("x", "y", "t", "p")
DTYPES: dict[str, np.dtype] = {
    "x": np.dtype(np.int16),
    "y": np.dtype(np.int16),
    "t": np.dtype(np.int64),
    "p": np.dtype(np.int8),
}
MAX_COORD = int(np.iinfo(np.int16).max)


class EventFormatError(ValueError):
    """Bad event data: names the source (file), the field and the first offending index."""

    def __init__(self, source: str, field: str, message: str, index: int | None = None) -> None:
        self.source = str(source) if source else "<memory>"
        self.field = field
        self.index = index
        where = f" at index {index}" if index is not None else ""
        super().__init__(f"{self.source}: field '{field}'{where}: {message}")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def polarity_from_bits(bits: np.ndarray) -> np.ndarray:
    """Map a 0/1 (OFF/ON) polarity column to the schema's -1/+1 int8."""
    return (np.asarray(bits).astype(np.int8) * 2 - 1).astype(np.int8)


@dataclass(frozen=True)
class Events:
    """One recording or one window of events in the evssl schema (columns, not a structured array)."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    height: int
    width: int

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        x: Any,
        y: Any,
        t: Any,
        p: Any,
        height: int,
        width: int,
        *,
        polarity: str = "pm1",
        source: str = "",
        validate: bool = True,
    ) -> Events:
        """Build events from loose arrays, converting dtypes safely.

        ``polarity`` is ``"pm1"`` for -1/+1 input or ``"01"`` for 0/1 (OFF/ON) input. Values that do not fit the
        target dtype (non-integer coordinates, NaN times, polarity outside the convention) raise
        :class:`EventFormatError` instead of being silently cast.
        """
        cols = {"x": np.asarray(x), "y": np.asarray(y), "t": np.asarray(t), "p": np.asarray(p)}
        n = len(cols["x"])
        for name, arr in cols.items():
            if arr.ndim != 1:
                raise EventFormatError(source, name, f"expected a 1-D column, got shape {arr.shape}")
            if len(arr) != n:
                raise EventFormatError(source, name, f"length {len(arr)} differs from x's length {n}")
        out: dict[str, np.ndarray] = {}
        for name in ("x", "y", "t"):
            arr = cols[name]
            if arr.dtype.kind == "f":
                bad = ~np.isfinite(arr)
                if bad.any():
                    raise EventFormatError(source, name, f"non-finite value {arr[_first(bad)]}", _first(bad))
                frac = arr != np.round(arr)
                if frac.any():
                    raise EventFormatError(source, name, f"non-integer value {arr[_first(frac)]}", _first(frac))
            elif arr.dtype.kind not in "iub" and n:
                raise EventFormatError(source, name, f"unsupported dtype {arr.dtype}")
            if name in ("x", "y") and n:
                big = (arr > MAX_COORD) | (arr < 0)
                if big.any():
                    i = _first(big)
                    raise EventFormatError(source, name, f"value {arr[i]} outside [0, {MAX_COORD}]", i)
            out[name] = arr.astype(DTYPES[name], copy=False)
        pa = cols["p"]
        if pa.dtype.kind == "f" and n:
            bad = ~np.isfinite(pa)
            if bad.any():
                raise EventFormatError(source, "p", f"non-finite value {pa[_first(bad)]}", _first(bad))
        if polarity == "01":
            bad = (pa != 0) & (pa != 1)
            if n and bad.any():
                i = _first(bad)
                raise EventFormatError(source, "p", f"value {pa[i]} is not 0/1", i)
            out["p"] = polarity_from_bits(pa) if n else np.zeros(0, np.int8)
        elif polarity == "pm1":
            bad = (pa != -1) & (pa != 1)
            if n and bad.any():
                i = _first(bad)
                raise EventFormatError(source, "p", f"value {pa[i]} is not -1/+1", i)
            out["p"] = pa.astype(np.int8, copy=False)
        else:
            raise ValueError(f"polarity must be 'pm1' or '01', got {polarity!r}")
        ev = cls(out["x"], out["y"], out["t"], out["p"], int(height), int(width))
        return ev.validate(source) if validate else ev

    @classmethod
    def empty(cls, height: int, width: int) -> Events:
        """Zero events on a sensor of the given size."""
        return cls(*(np.zeros(0, DTYPES[f]) for f in FIELDS), int(height), int(width))

    @classmethod
    def concatenate(cls, parts: list[Events]) -> Events:
        """Join windows of the same sensor in time order (no re-sorting)."""
        if not parts:
            raise ValueError("concatenate needs at least one Events")
        h, w = parts[0].height, parts[0].width
        if any((e.height, e.width) != (h, w) for e in parts):
            raise ValueError("cannot concatenate events of different sensor sizes")
        return cls(*(np.concatenate([getattr(e, f) for e in parts]) for f in FIELDS), h, w)

    # ------------------------------------------------------------------ checks
    def validate(self, source: str = "") -> Events:
        """Check dtypes, lengths, sensor bounds, time order and polarity; return self or raise EventFormatError."""
        if self.height <= 0 or self.width <= 0:
            raise EventFormatError(source, "sensor_size", f"invalid sensor size {self.height}x{self.width}")
        n = len(self.x)
        for f in FIELDS:
            arr = getattr(self, f)
            if not isinstance(arr, np.ndarray):
                raise EventFormatError(source, f, f"expected a numpy array, got {type(arr).__name__}")
            if arr.dtype != DTYPES[f]:
                raise EventFormatError(source, f, f"dtype {arr.dtype}, expected {DTYPES[f]}")
            if arr.ndim != 1 or len(arr) != n:
                raise EventFormatError(source, f, f"shape {arr.shape} does not match {n} events")
        if n == 0:
            return self
        for f, size in (("x", self.width), ("y", self.height)):
            arr = getattr(self, f)
            bad = (arr < 0) | (arr >= size)
            if bad.any():
                i = _first(bad)
                raise EventFormatError(source, f, f"value {arr[i]} outside sensor range [0, {size})", i)
        dec = np.diff(self.t) < 0
        if dec.any():
            i = _first(dec) + 1
            raise EventFormatError(source, "t", f"timestamp decreases from {self.t[i - 1]} to {self.t[i]}", i)
        badp = (self.p != 1) & (self.p != -1)
        if badp.any():
            i = _first(badp)
            raise EventFormatError(source, "p", f"polarity {self.p[i]} is not -1/+1", i)
        return self

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.x)

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def duration(self) -> int:
        """t[-1] - t[0] in microseconds (0 when fewer than two events)."""
        return int(self.t[-1] - self.t[0]) if len(self) > 1 else 0

    def __getitem__(self, index: slice | np.ndarray) -> Events:
        """Select events by a slice, an index array or a boolean mask (keeps the sensor size)."""
        return Events(self.x[index], self.y[index], self.t[index], self.p[index], self.height, self.width)

    def time_window(self, t0: int, t1: int) -> Events:
        """Events with t0 <= t < t1 (binary search, no copy)."""
        lo, hi = np.searchsorted(self.t, [t0, t1], side="left")
        return self[slice(int(lo), int(hi))]

    def replace(self, **changes: Any) -> Events:
        """A copy with some columns or the sensor size replaced (no validation)."""
        d = {f: getattr(self, f) for f in (*FIELDS, "height", "width")}
        d.update(changes)
        return Events(**d)

    def to_structured(self) -> np.ndarray:
        """A structured array with fields t, x, y, p (for interop and tests)."""
        arr = np.empty(len(self), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
        for f in FIELDS:
            arr[f] = getattr(self, f)
        return arr
