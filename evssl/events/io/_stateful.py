"""Driver for the single-pass decoders of :mod:`evssl.events.io._kernels`: whole-file and chunked reads, errors.

A format is described by a :class:`Spec` (its kernel, a fresh state, where the state keeps max x / max y and the
dropped-word count, the numpy fallback). :func:`read_whole` decodes a file into one set of columns;
:func:`open_chunks` yields chunks of exactly ``chunk_events`` events. Both validate as they go (the kernels check
every event) and raise :class:`~evssl.events.schema.EventFormatError` naming the file, the field, the event index
(counted from the start of the file) and the byte offset of the word or record.

Sensor size: known before decoding when the caller or the file states it (then every event is checked against it in
the kernel); otherwise it is chosen afterwards from the largest coordinates, and a chunked read first runs the
kernel once over the file into a scratch buffer (bounded memory) to find them.

numba is required for this path; when it cannot be imported (or compiled) the readers fall back to their numpy
decoders with a one-time warning (same results, several times slower, whole-file memory).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from evssl.events.io._common import EmptyRecordingError, Opened, StreamChecks, choose_size, split_events
from evssl.events.schema import EventFormatError, Events

_KERNELS: ModuleType | bool | None = None
PREPASS_EVENTS = 1 << 20
BLOCK_ITEMS = 1 << 21  # items per block of a chunked read (8 MiB of EVT 2.0 words)


def kernels() -> ModuleType | None:
    """:mod:`evssl.events.io._kernels`, or None (warned once) when numba is unavailable."""
    global _KERNELS
    if _KERNELS is None:
        try:
            from evssl.events.io import _kernels as mod

            _KERNELS = mod
        except (ImportError, OSError) as err:  # numba missing or incompatible with this NumPy / platform
            warnings.warn(
                f"numba is unavailable ({err}); event readers fall back to slower numpy decoding", stacklevel=3
            )
            _KERNELS = False
    return _KERNELS or None


@dataclass(frozen=True)
class Spec:
    """How to run one format's kernel."""

    name: str
    kernel: str  # attribute of the kernel module
    new_state: str  # attribute of the kernel module returning a fresh state
    max_x: str  # names of the state slots in the kernel module
    max_y: str
    p_message: str = "polarity bits {a} are not 0/1"
    #: ``(state, src, body_offset) -> EventFormatError | None``: an error when words were dropped and no event was
    #: decoded (the data had no time base), else None.
    dropped_error: Callable[[np.ndarray, str, int], EventFormatError | None] | None = None


@dataclass
class Source:
    """The body of a file as fixed-size items (``dtype`` words, ``cols`` per item): whole (memory-mapped) or in
    blocks read into one reused buffer (so a chunked read does not map, and keep resident, the whole file)."""

    path: str
    src: str
    body_offset: int
    length: int  # items
    dtype: str
    cols: int = 1

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize * self.cols

    def _shape(self, n: int) -> tuple[int, ...]:
        return (n,) if self.cols == 1 else (n, self.cols)

    def array(self) -> np.ndarray:
        """All items, memory-mapped (a plain ndarray view: numba does not take the ``np.memmap`` subclass)."""
        if not self.length:
            return np.zeros(self._shape(0), self.dtype)
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.body_offset, shape=self._shape(self.length))
        return mm.view(np.ndarray)

    def blocks(self, items: int = BLOCK_ITEMS) -> Iterator[tuple[int, np.ndarray]]:
        """``(first item index, items)`` for successive blocks; the array is reused between blocks."""
        buf = np.empty(self._shape(min(items, max(self.length, 1))), self.dtype)
        with open(self.path, "rb") as f:
            f.seek(self.body_offset)
            start = 0
            while start < self.length:
                n = min(len(buf), self.length - start)
                view = buf[:n]
                got = f.readinto(memoryview(view).cast("B"))
                if got != n * self.itemsize:
                    raise EventFormatError(self.src, "word", f"file changed while reading (short read at item {start})")
                yield start, view
                start += n


def raise_error(
    spec: Spec, err: np.ndarray, source: Source, size: tuple[int, int] | None, before: int, pos0: int = 0
) -> None:
    """Turn a kernel's ``err`` into an EventFormatError (event index counted from the file start; ``pos0`` is the
    item index of the block the kernel ran on)."""
    code, index, pos, a, b = (int(v) for v in err)
    off = source.body_offset + (pos0 + pos) * source.itemsize
    where = f" ({'record' if spec.name == 'dat' else 'word'} at byte offset {off})"
    index += before
    if code == 1:
        raise EventFormatError(source.src, "t", f"timestamp decreases from {a} to {b}{where}", index)
    if code in (2, 3):
        field = "x" if code == 2 else "y"
        if b == 1:
            raise EventFormatError(source.src, field, f"negative coordinate {a}{where}", index)
        limit = (size[1] if code == 2 else size[0]) if size is not None else "?"
        raise EventFormatError(source.src, field, f"value {a} outside sensor range [0, {limit}){where}", index)
    if code == 4:
        raise EventFormatError(source.src, "p", spec.p_message.format(a=a) + where, index)
    raise EventFormatError(source.src, "word", f"decoder error code {code}{where}", index)


def _bounds(size: tuple[int, int] | None, big: int) -> tuple[int, int]:
    return (size[1], size[0]) if size is not None else (big, big)


def _buffers(n: int) -> tuple[np.ndarray, ...]:
    return np.empty(n, np.int16), np.empty(n, np.int16), np.empty(n, np.int64), np.empty(n, np.int8)


def decode_all(
    spec: Spec, source: Source, bound: tuple[int, int] | None, first_capacity: int
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Decode the whole input: ``((x, y, t, p), final state)``; buffers grow when ``first_capacity`` is too small."""
    k = kernels()
    assert k is not None
    kernel = getattr(k, spec.kernel)
    state = getattr(k, spec.new_state)()
    width, height = _bounds(bound, k.BIG)
    err = np.zeros(5, np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    pos = 0
    total = 0
    cap = max(int(first_capacity), 16)
    data = source.array()
    while True:
        bufs = _buffers(cap)
        pos, n = kernel(data, pos, *bufs, state, width, height, err)
        if err[0]:
            raise_error(spec, err, source, bound, total)
        parts.append(tuple(b[:n] for b in bufs))
        total += n
        if n < cap:  # the kernel stopped at the end of the input, not at a full buffer
            break
        remaining = source.length - pos
        if remaining <= 0 and not _pending(spec, state, k):
            break
        cap = max(remaining, 1 << 16)
    if len(parts) == 1:  # views of the buffers: pages past the last event were never touched, so cost nothing
        cols = parts[0]
    else:
        cols = tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
    return cols, state


def _pending(spec: Spec, state: np.ndarray, k: ModuleType) -> bool:
    return spec.name == "evt3" and int(state[k.E3_PENDING]) >= 0


def _max_xy(spec: Spec, state: np.ndarray) -> tuple[int, int] | None:
    k = kernels()
    mx, my = int(state[getattr(k, spec.max_x)]), int(state[getattr(k, spec.max_y)])
    return (mx, my) if mx >= 0 else None


def _no_events(spec: Spec, state: np.ndarray, source: Source, stated: tuple[int, int] | None, what: str) -> None:
    if spec.dropped_error is not None:
        dropped = spec.dropped_error(state, source.src, source.body_offset)
        if dropped is not None:
            raise dropped
    raise EmptyRecordingError(source.src, f"no events: {what}", stated)


def read_whole(
    spec: Spec,
    source: Source,
    given: tuple[int, int] | str | None,
    stated: tuple[int, int] | None,
    defaults: tuple[tuple[int, int], ...],
    first_capacity: int,
    empty_what: str,
) -> tuple[Events, bool]:
    """Decode a whole file: ``(events, size inferred)``."""
    bound = given if isinstance(given, tuple) else (stated if given is None else None)
    (x, y, t, p), state = decode_all(spec, source, bound, first_capacity)
    if not len(x):
        _no_events(spec, state, source, bound, empty_what)
    size, inferred = choose_size(given, stated, _max_xy(spec, state), defaults, source.src)
    return Events(x, y, t, p, size[0], size[1]), inferred


def new_state(spec: Spec) -> np.ndarray:
    """A fresh kernel state for ``spec``."""
    return getattr(kernels(), spec.new_state)()


def _run_blocks(
    spec: Spec, source: Source, size: tuple[int, int] | None, chunk_events: int, keep: bool, state: np.ndarray
) -> Iterator[tuple[tuple[np.ndarray, ...], int]]:
    """Run the kernel over the file block by block, filling output chunks of ``chunk_events`` events.

    Yields ``(columns, n)`` for every full chunk and a last partial one; ``state`` is updated in place.
    ``keep=False`` reuses one buffer (a pre-pass that only needs the final state).
    """
    k = kernels()
    assert k is not None
    kernel = getattr(k, spec.kernel)
    err = np.zeros(5, np.int64)
    width, height = _bounds(size, k.BIG)
    bufs = _buffers(chunk_events)
    filled = total = 0
    for pos0, block in source.blocks():
        pos = 0
        while pos < len(block) or _pending(spec, state, k):
            pos, n = kernel(block, pos, *(b[filled:] for b in bufs), state, width, height, err)
            if err[0]:
                raise_error(spec, err, source, size, total + filled, pos0)
            filled += n
            if filled == chunk_events:
                yield bufs, filled
                total += filled
                filled = 0
                if keep:
                    bufs = _buffers(chunk_events)
            elif n == 0 and pos >= len(block):
                break
    if filled or not total:
        yield bufs, filled


def open_chunks(
    spec: Spec,
    source: Source,
    given: tuple[int, int] | str | None,
    stated: tuple[int, int] | None,
    defaults: tuple[tuple[int, int], ...],
    chunk_events: int,
    empty_what: str,
) -> Opened:
    """Chunked decoding: the size first (a pre-pass when it must be inferred), then chunks of ``chunk_events``."""
    bound = given if isinstance(given, tuple) else (stated if given is None else None)
    inferred = False
    if bound is None:  # pre-pass: every event checked, nothing kept but the state
        total = 0
        state = new_state(spec)
        for _, n in _run_blocks(spec, source, None, min(PREPASS_EVENTS, chunk_events), False, state):
            total += n
        if not total:
            _no_events(spec, state, source, None, empty_what)
        size, inferred = choose_size(given, stated, _max_xy(spec, state), defaults, source.src)
    else:
        size = bound

    def chunks() -> Iterator[Events]:
        total = 0
        state = new_state(spec)
        for cols, n in _run_blocks(spec, source, size, chunk_events, True, state):
            if n:
                total += n
                yield Events(*(c[:n] if n < chunk_events else c for c in cols), size[0], size[1])
        if not total:
            _no_events(spec, state, source, bound, empty_what)

    return Opened(size, inferred, chunks())


def fallback_open(ev: Events, inferred: bool, chunk_events: int, src: str) -> Opened:
    """Chunks of an already decoded (numpy fallback) read, checked like a stream."""
    checks = StreamChecks(src, ev.sensor_size)

    def chunks() -> Iterator[Events]:
        for c in split_events(ev, chunk_events):
            yield checks.check(c)

    return Opened(ev.sensor_size, inferred, chunks())
