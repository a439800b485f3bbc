"""Event Camera Dataset ``events.txt`` (Mueggler et al. 2017): one ``t x y p`` line per event.

``t`` is in seconds as a decimal (9 fractional digits in the ECD), ``x``/``y`` are integer pixels and ``p`` is
0/1 (-1/+1 is accepted too). Blank lines and lines starting with ``#`` are ignored; spaces, tabs and commas all
separate columns, so ``columns`` can describe other text layouts (``"xytp"``, ...).

Timestamps become integer microseconds *exactly*, rounded half up (``0.000779999`` s -> 780 µs), by one of two
vectorised paths that give the same integers:

- fast: ``np.loadtxt`` floats, then ``rint(t * 10**F)`` with F the most fractional digits in the chunk; used only
  where ``|t| * 10**F < 2**50``, which makes it provably exact (relative ECD times qualify);
- exact: a digit parser over the file's bytes (integer mantissa + fractional-digit count per token, never a float)
  for everything else, e.g. absolute epoch times with 9 decimals. It also reports a malformed line by its 0-based
  line number.

Files are processed in chunks of whole lines. Tokens in exponent notation (``1e-3``) are parsed as floats and
rounded to the nearest µs.

Sensor size (``(height, width)``): the caller's ``sensor_size``, by default the DAVIS240C's 180x240 when every event
fits, else max coordinate + 1.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np

from evssl.events.io._common import (
    EmptyRecordingError,
    Opened,
    PathLike,
    SensorSize,
    StreamChecks,
    caller_size,
    check_chunk_events,
    choose_size,
    max_xy,
    rechunk,
    source_name,
)
from evssl.events.schema import EventFormatError, Events

DAVIS240_SIZE = (180, 240)
CHUNK_BYTES = 1 << 25
TIME_EXPONENT = {"s": 6, "ms": 3, "us": 0, "ns": -3}
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_SEPARATORS = (32, 9, 10, 13, 44)  # space, tab, \n, \r, comma
_DIGITS_MAX = 19  # int64 holds every 18-digit number and 19-digit ones below 9.22e18


def _line_of(b: np.ndarray, pos: int) -> int:
    return int(np.count_nonzero(b[:pos] == 10))


def _parse_chunk(chunk: bytes, ncols: int, source: str, line0: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Tokens of a chunk as ``(mantissa, fraction_digits)``, each shaped (lines, ncols); None if it needs floats."""
    b = np.frombuffer(chunk, dtype=np.uint8)
    if not len(b):
        return np.zeros((0, ncols), np.int64), np.zeros((0, ncols), np.int64)
    newline = b == 10
    line_id = np.cumsum(newline) - newline  # line of every byte (the '\n' belongs to its line)
    line_start = np.concatenate(([0], np.flatnonzero(newline) + 1))
    comment_line = np.zeros(len(line_start), bool)
    valid = line_start < len(b)
    comment_line[valid] = b[line_start[valid]] == ord("#")
    sep = np.isin(b, _SEPARATORS) | comment_line[line_id]
    tok = ~sep
    starts = tok & np.concatenate(([True], sep[:-1]))
    start_pos = np.flatnonzero(starts)
    counts = np.bincount(line_id[start_pos], minlength=len(line_start))
    bad = (counts != 0) & (counts != ncols)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EventFormatError(source, "line", f"line {line0 + i} has {counts[i]} columns, expected {ncols}", line0 + i)
    c = b[tok]
    if not len(c):
        return np.zeros((0, ncols), np.int64), np.zeros((0, ncols), np.int64)
    tstart = np.flatnonzero(starts[tok])  # token starts as indices into c
    tid = np.cumsum(starts[tok]) - 1
    is_digit = (c >= 48) & (c <= 57)
    is_dot = c == 46
    is_sign = (c == 45) | (c == 43)
    other = ~(is_digit | is_dot | is_sign)
    if other.any():
        if np.isin(c[other], (ord("e"), ord("E"))).all():
            return None
        j = int(np.flatnonzero(tok)[np.flatnonzero(other)[0]])
        raise EventFormatError(source, "line", f"unexpected character {chr(b[j])!r} on line {line0 + _line_of(b, j)}")
    first = np.zeros(len(c), bool)
    first[tstart] = True
    misplaced_sign = is_sign & ~first
    ndig = np.add.reduceat(is_digit.astype(np.int64), tstart)
    ndot = np.add.reduceat(is_dot.astype(np.int64), tstart)
    badtok = (ndig == 0) | (ndot > 1) | (ndig > _DIGITS_MAX)
    if misplaced_sign.any() or badtok.any():
        k = int(tid[np.flatnonzero(misplaced_sign)[0]]) if misplaced_sign.any() else len(tstart)
        k = min(k, int(np.flatnonzero(badtok)[0]) if badtok.any() else k)
        j = int(np.flatnonzero(tok)[tstart[k]])
        raise EventFormatError(
            source, "line", f"malformed number (or more than {_DIGITS_MAX} digits) on line {line0 + _line_of(b, j)}"
        )
    cd = np.cumsum(is_digit)
    tend = np.concatenate((tstart[1:], [len(c)])) - 1
    after = cd[tend][tid] - cd  # digits that follow each char within its token
    mant = np.add.reduceat(np.where(is_digit, (c.astype(np.int64) - 48) * _POW10[np.minimum(after, 18)], 0), tstart)
    if (mant < 0).any():  # a 19-digit token above 2**63 - 1 wrapped around
        k = int(np.flatnonzero(mant < 0)[0])
        j = int(np.flatnonzero(tok)[tstart[k]])
        raise EventFormatError(source, "line", f"number too large for int64 on line {line0 + _line_of(b, j)}")
    mant = np.where(c[tstart] == 45, -mant, mant)
    frac = np.add.reduceat(np.where(is_dot, after, 0), tstart)
    return mant.reshape(-1, ncols), frac.reshape(-1, ncols)


def _parse_fast(data: bytes, col: dict[str, int], exponent: int) -> dict[str, np.ndarray] | None:
    """C-speed path: ``np.loadtxt`` floats, made exact by integer rounding where that is provably lossless.

    With F = the most fractional digits of any token, ``rint(t * 10**F)`` recovers every decimal exactly while
    ``|t| * 10**F < 2**50`` (two float roundings stay below 0.25). Returns None when that bound does not hold, the
    text has exponents, or ``loadtxt`` rejects it; the exact digit parser then takes over (and reports errors).
    """
    if b"e" in data or b"E" in data:
        return None
    try:
        with warnings.catch_warnings():  # a block of comments only: "input contained no data"
            warnings.simplefilter("ignore", UserWarning)
            arr = np.loadtxt(io.BytesIO(data.replace(b",", b" ")), dtype=np.float64, comments="#", ndmin=2)
    except ValueError:
        return None
    if arr.size == 0:
        return {f: np.zeros(0, np.int64) for f in "txyp"}
    if arr.shape[1] != 4 or not np.isfinite(arr).all():
        return None
    b = np.frombuffer(data, dtype=np.uint8)
    dots = np.flatnonzero(b == 46)
    digits = 0
    if len(dots):
        seps = np.concatenate((np.flatnonzero((b <= 32) | (b == 44)), [len(b)]))
        digits = int((seps[np.searchsorted(seps, dots)] - dots).max()) - 1
    t = arr[:, col["t"]]
    if digits > 15 or float(np.abs(t).max()) * 10.0**digits >= 2.0**50:
        return None
    scaled = np.rint(t * 10.0**digits).astype(np.int64)
    out = {"t": _scale(scaled, np.full(len(t), digits, np.int64), exponent, "", "t", 0)}
    for name in "xyp":
        v = arr[:, col[name]]
        if (v != np.round(v)).any() or float(np.abs(v).max()) >= 2.0**53:
            return None
        out[name] = v.astype(np.int64)
    return out


def _scale(mant: np.ndarray, frac: np.ndarray, exponent: int, source: str, field: str, index0: int) -> np.ndarray:
    """``mant * 10**(exponent - frac)`` as int64, rounded half up where digits are dropped (overflow is an error)."""
    shift = exponent - frac
    out = np.empty(len(mant), np.int64)
    up = shift >= 0
    if up.any():
        s = shift[up]
        limit = np.iinfo(np.int64).max // _POW10[np.minimum(s, 18)]
        over = (np.abs(mant[up]) > limit) | (s > 18)
        if over.any():
            i = int(np.flatnonzero(up)[np.flatnonzero(over)[0]])
            raise EventFormatError(source, field, "value does not fit int64 after unit conversion", index0 + i)
        out[up] = mant[up] * _POW10[s]
    down = ~up
    if down.any():
        d = _POW10[np.minimum(-shift[down], 18)]
        q, r = np.divmod(mant[down], d)
        out[down] = q + (2 * r >= d)
    return out


def _check_args(columns: str, time_unit: str) -> tuple[dict[str, int], int]:
    if sorted(columns) != sorted("txyp"):
        raise ValueError(f"columns must be a permutation of 'txyp', got {columns!r}")
    if time_unit not in TIME_EXPONENT:
        raise ValueError(f"time_unit must be one of {sorted(TIME_EXPONENT)}, got {time_unit!r}")
    return {name: i for i, name in enumerate(columns)}, TIME_EXPONENT[time_unit]


def _blocks(path: PathLike, col: dict[str, int], exp: int, src: str) -> Iterator[tuple[np.ndarray, ...]]:
    """Parsed ``(x, y, t, p)`` int64 columns of successive blocks of whole lines (:data:`CHUNK_BYTES` each)."""
    n_events = 0
    line0 = 0
    with open(path, "rb") as f:
        rest = b""
        eof = False
        while not eof:
            block = f.read(CHUNK_BYTES)
            eof = not block
            data = rest + block
            if not eof:  # parse whole lines only; the partial last line waits for the next block
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            if not data:
                continue
            out = _parse_block(data, col, exp, src, line0, n_events)
            n_events += len(out["t"])
            line0 += data.count(b"\n")
            yield out["x"], out["y"], out["t"], out["p"]


def _parse_block(data: bytes, col: dict[str, int], exp: int, src: str, line0: int, n_events: int) -> dict:
    fast = _parse_fast(data, col, exp)
    if fast is not None:
        return fast
    parsed = _parse_chunk(data, 4, src, line0)
    out: dict[str, np.ndarray] = {}
    if parsed is None:
        arr = np.loadtxt(io.BytesIO(data), dtype=np.float64, comments="#", ndmin=2).reshape(-1, 4)
        out["t"] = np.rint(arr[:, col["t"]] * 10.0**exp).astype(np.int64)
        for name in "xyp":
            v = arr[:, col[name]]
            frac = v != np.round(v)
            if frac.any():
                i = int(np.flatnonzero(frac)[0])
                raise EventFormatError(src, name, f"non-integer value {v[i]}", n_events + i)
            out[name] = v.astype(np.int64)
        return out
    mant, frac = parsed
    out["t"] = _scale(mant[:, col["t"]], frac[:, col["t"]], exp, src, "t", n_events)
    for name in "xyp":
        m, fr = mant[:, col[name]], frac[:, col[name]]
        exact = _scale(m, fr, 0, src, name, n_events)
        inexact = m != exact * _POW10[np.minimum(fr, 18)]
        if inexact.any():
            i = int(np.flatnonzero(inexact)[0])
            raise EventFormatError(src, name, "non-integer value", n_events + i)
        out[name] = exact
    return out


def _check_xy(x: np.ndarray, y: np.ndarray, src: str, offset: int) -> None:
    for name, arr in (("x", x), ("y", y)):
        neg = arr < 0
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise EventFormatError(src, name, f"negative value {arr[i]}", offset + i)
        big = arr > np.iinfo(np.int16).max
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise EventFormatError(src, name, f"value {arr[i]} does not fit int16", offset + i)


def read_text(
    path: PathLike,
    sensor_size: SensorSize = None,
    *,
    columns: str = "txyp",
    time_unit: str = "s",
) -> Events:
    """Read an Event Camera Dataset ``events.txt`` (or any whitespace-separated text with the given ``columns``).

    ``time_unit`` is the unit of the ``t`` column (``"s"``, ``"ms"``, ``"us"`` or ``"ns"``); it is converted
    exactly to integer µs. See the module doc for the parsing and sensor-size rules.
    """
    src = source_name(path)
    col, exp = _check_args(columns, time_unit)
    given = caller_size(sensor_size, src)
    parts = list(_blocks(path, col, exp, src))
    x, y, t, p = (np.concatenate([b[i] for b in parts]) if parts else np.zeros(0, np.int64) for i in range(4))
    if not len(x):
        raise EmptyRecordingError(src, "no events: no event lines", given if isinstance(given, tuple) else None)
    _check_xy(x, y, src, 0)
    polarity = "pm1" if len(p) and p.min() < 0 else "01"
    size, _ = choose_size(given, None, max_xy(x, y), (DAVIS240_SIZE,), src)
    return Events.from_arrays(x, y, t, p, size[0], size[1], polarity=polarity, source=src)


def open_text(
    path: PathLike,
    sensor_size: SensorSize = None,
    *,
    columns: str = "txyp",
    time_unit: str = "s",
    chunk_events: int = 1_000_000,
) -> Opened:
    """Chunked reading in bounded memory (one block of :data:`CHUNK_BYTES` text at a time).

    Without a caller ``sensor_size`` the size rule needs the largest coordinates first: the file is then parsed
    twice (a pre-pass for max x/y and the polarity convention, then the chunks). Polarity: 1 is ON, 0 and -1 are OFF;
    a file that mixes 0 and -1 raises (as :func:`read_text` does).
    """
    src = source_name(path)
    col, exp = _check_args(columns, time_unit)
    chunk_events = check_chunk_events(chunk_events)
    given = caller_size(sensor_size, src)
    stated = given if isinstance(given, tuple) else None
    inferred = False
    if stated is None:
        mx = my = -1
        count = 0
        for x, y, _, _ in _blocks(path, col, exp, src):
            _check_xy(x, y, src, count)
            count += len(x)
            if len(x):
                mx, my = max(mx, int(x.max())), max(my, int(y.max()))
        if not count:
            raise EmptyRecordingError(src, "no events: no event lines", None)
        size, inferred = choose_size(given, None, (mx, my), (DAVIS240_SIZE,), src)
    else:
        size = stated

    def chunks() -> Iterator[Events]:
        checks = StreamChecks(src, size)
        seen_zero = seen_minus = False
        pieces = rechunk(_blocks(path, col, exp, src), chunk_events)
        for x, y, t, p in pieces:
            _check_xy(x, y, src, checks.count)
            bad = (p != 0) & (p != 1) & (p != -1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise EventFormatError(src, "p", f"value {p[i]} is not 0/1 or -1/+1", checks.count + i)
            seen_zero |= bool((p == 0).any())
            seen_minus |= bool((p == -1).any())
            if seen_zero and seen_minus:
                i = int(np.flatnonzero(p == (0 if (p == 0).any() else -1))[0])
                raise EventFormatError(src, "p", "the file mixes 0/1 and -1/+1 polarities", checks.count + i)
            ev = Events(
                x.astype(np.int16),
                y.astype(np.int16),
                t.astype(np.int64, copy=False),
                np.where(p > 0, 1, -1).astype(np.int8),
                size[0],
                size[1],
            )
            yield checks.check(ev)
        checks.finish(stated, "no event lines")

    return Opened(size, inferred, chunks())
