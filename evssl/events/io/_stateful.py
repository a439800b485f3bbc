"""Driver for the single-pass decoders of :mod:`evssl.events.io._kernels`: whole-file and chunked reads, errors.

A format is described by a :class:`Spec` (its kernel, its fresh state, the polarity message and the error for a
stream whose event words were all dropped). :func:`read_whole` decodes a file into one set of columns;
:func:`open_chunks` yields chunks of exactly ``chunk_events`` events. Both validate as they go (the kernels check
every event) and raise :class:`~evssl.events.schema.EventFormatError` naming the file, the field, the event index
(counted from the start of the file) and the byte offset of the word or record.

Sensor size: known before decoding when the caller or the file states it (then every event is checked against it in
the kernel); otherwise it is chosen afterwards from the largest coordinates (numpy ``max``), and a chunked read first
runs the kernel once over the file into a scratch buffer (bounded memory) to find them.

Input: the body is read in blocks into one reused buffer (:data:`WHOLE_BLOCK_ITEMS` for a whole-file read, small
enough to stay in L2; :data:`BLOCK_ITEMS` for a chunked read), never memory-mapped whole, so a chunked read of a
large file keeps neither the file nor its decode resident.

numba is required for this path; when it cannot be imported (or compiled) the readers fall back to their numpy
decoders with a one-time warning (same results, several times slower, whole-file memory).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

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
    source_name,
    split_events,
)
from evssl.events.schema import EventFormatError, Events

_KERNELS: ModuleType | bool | None = None
PREPASS_EVENTS = 1 << 20
BLOCK_ITEMS = 1 << 21  # items per block of a chunked read (8 MiB of EVT 2.0 words)
WHOLE_BLOCK_ITEMS = 1 << 17  # items per block of a whole-file read (the input buffer stays in L2)


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
    p_message: str = "polarity bits {a} are not 0/1"
    #: ``(state, src, body_offset) -> EventFormatError | None``: an error when words were dropped and no event was
    #: decoded (the data had no time base), else None.
    dropped_error: Callable[[np.ndarray, str, int], EventFormatError | None] | None = None
    empty: str = "no CD events in the stream"  # what an event-less file is, for EmptyRecordingError
    defaults: tuple[tuple[int, int], ...] = ()  # sensor sizes tried before max + 1 (:func:`choose_size`)
    extra_capacity: int = 16  # first whole-read buffer = items + this (an EVT 3.0 vector word emits several)


@dataclass
class Source:
    """The body of a file as fixed-size items (``dtype`` words, ``cols`` per item): in blocks read into one reused
    buffer (the kernels), or whole and memory-mapped (the numpy reference decoders)."""

    path: str
    src: str
    body_offset: int
    length: int  # items
    dtype: str
    cols: int = 1

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize * self.cols

    def array(self) -> np.ndarray:
        """All items as one flat array (``cols`` words per item), memory-mapped (a plain ndarray view: numba does
        not take the ``np.memmap`` subclass)."""
        if not self.length:
            return np.zeros(0, self.dtype)
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.body_offset, shape=(self.length * self.cols,))
        return mm.view(np.ndarray)

    def blocks(self, items: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first item index, flat words of the items)`` for successive blocks (:data:`BLOCK_ITEMS` items each
        unless ``items`` is given); the buffer is reused."""
        per = min(items or BLOCK_ITEMS, max(self.length, 1))
        buf = np.empty(per * self.cols, self.dtype)
        with open(self.path, "rb") as f:
            f.seek(self.body_offset)
            start = 0
            while start < self.length:
                n = min(per, self.length - start)
                view = buf[: n * self.cols]
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


def buffers(n: int) -> tuple[np.ndarray, ...]:
    """Output columns ``(x, y, t, p)`` for ``n`` events, carved out of one allocation (t first, 8-byte aligned).

    One large allocation gets transparent huge pages where four smaller ones get many 4 KiB page faults (measured:
    ~4 ms less per 10M events). The columns share that buffer, so it is freed when all four are.
    """
    buf = np.empty(13 * n, np.uint8)
    t = buf[: 8 * n].view(np.int64)
    x = buf[8 * n : 10 * n].view(np.int16)
    y = buf[10 * n : 12 * n].view(np.int16)
    p = buf[12 * n : 13 * n].view(np.int8)
    return x, y, t, p


def decode_all(
    spec: Spec, source: Source, bound: tuple[int, int] | None, first_capacity: int
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Decode the whole input: ``((x, y, t, p), final state)``; buffers grow when ``first_capacity`` is too small.

    The input is read in blocks of :data:`WHOLE_BLOCK_ITEMS` into one reused, cache-resident buffer (faster than
    memory-mapping the file: no page faults on the input, and the kernel reads from L2).
    """
    k = kernels()
    assert k is not None
    kernel = getattr(k, spec.kernel)
    state = getattr(k, spec.new_state)()
    width, height = _bounds(bound, k.BIG)
    err = np.zeros(5, np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    total = filled = 0
    cap = max(int(first_capacity), 16)
    bufs = buffers(cap)
    for pos0, block in source.blocks(WHOLE_BLOCK_ITEMS):
        items = len(block) // source.cols
        pos = 0
        while pos < items or _pending(spec, state, k):
            if filled == cap:  # more events than the first estimate (EVT 3.0 vectors): a new part
                parts.append(bufs)
                total += filled
                cap = max(source.length - pos0 - pos, 1 << 16)
                bufs, filled = buffers(cap), 0
            pos, n = kernel(block, pos, *(b[filled:] for b in bufs), state, width, height, err)
            if err[0]:
                raise_error(spec, err, source, bound, total + filled, pos0)
            filled += n
    parts.append(tuple(b[:filled] for b in bufs))
    if len(parts) == 1:  # views of the buffers: pages past the last event were never touched, so cost nothing
        cols = parts[0]
    else:
        cols = tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
    return cols, state


def _pending(spec: Spec, state: np.ndarray, k: ModuleType) -> bool:
    return spec.name == "evt3" and int(state[k.E3_PENDING]) >= 0


class MaxXY:
    """Running (max x, max y) over chunks (numpy's SIMD max; ``None`` before any event)."""

    def __init__(self) -> None:
        self.value: tuple[int, int] | None = None

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x):
            mx, my = int(x.max()), int(y.max())
            self.value = (mx, my) if self.value is None else (max(mx, self.value[0]), max(my, self.value[1]))


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
    mxy = max_xy(x, y) if bound is None else None  # the size is known: no need to look
    size, inferred = choose_size(given, stated, mxy, defaults, source.src)
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
    bufs = buffers(chunk_events)
    filled = total = 0
    for pos0, block in source.blocks():
        pos = 0
        items = len(block) // source.cols
        while pos < items or _pending(spec, state, k):
            pos, n = kernel(block, pos, *(b[filled:] for b in bufs), state, width, height, err)
            if err[0]:
                raise_error(spec, err, source, size, total + filled, pos0)
            filled += n
            if filled == chunk_events:
                yield bufs, filled
                total += filled
                filled = 0
                if keep:
                    bufs = buffers(chunk_events)
            elif n == 0 and pos >= items:
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
        mxy = MaxXY()
        for cols, n in _run_blocks(spec, source, None, min(PREPASS_EVENTS, chunk_events), False, state):
            total += n
            mxy.update(cols[0][:n], cols[1][:n])
        if not total:
            _no_events(spec, state, source, None, empty_what)
        size, inferred = choose_size(given, stated, mxy.value, defaults, source.src)
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


#: ``path -> (body source, geometry stated by the header)`` of a format.
SourceOf = Callable[[PathLike], tuple[Source, tuple[int, int] | None]]
#: ``(source, given, stated) -> (events, size inferred)``: a format's numpy reference decoder (fallback without numba).
NumpyRead = Callable[[Source, tuple[int, int] | str | None, tuple[int, int] | None], tuple[Events, bool]]


def read_file(
    spec: Spec, path: PathLike, sensor_size: SensorSize, source_of: SourceOf, numpy_read: NumpyRead
) -> tuple[Events, bool]:
    """Whole-file read of a kernel format: ``(events, size inferred)`` by the kernels, else by ``numpy_read``."""
    given = caller_size(sensor_size, source_name(path))
    source, stated = source_of(path)
    if kernels() is not None:
        first = source.length + spec.extra_capacity
        return read_whole(spec, source, given, stated, spec.defaults, first, spec.empty)
    return numpy_read(source, given, stated)


def open_file(
    spec: Spec, path: PathLike, sensor_size: SensorSize, chunk_events: int, source_of: SourceOf, numpy_read: NumpyRead
) -> Opened:
    """Chunked read of a kernel format in bounded memory (without numba: the numpy read, split into chunks)."""
    chunk_events = check_chunk_events(chunk_events)
    if kernels() is None:
        ev, inferred = read_file(spec, path, sensor_size, source_of, numpy_read)
        return fallback_open(ev, inferred, chunk_events, source_name(path))
    given = caller_size(sensor_size, source_name(path))
    source, stated = source_of(path)
    return open_chunks(spec, source, given, stated, spec.defaults, chunk_events, spec.empty)


def fallback_open(ev: Events, inferred: bool, chunk_events: int, src: str) -> Opened:
    """Chunks of an already decoded (numpy fallback) read, checked like a stream."""
    checks = StreamChecks(src, ev.sensor_size)

    def chunks() -> Iterator[Events]:
        for c in split_events(ev, chunk_events):
            yield checks.check(c)

    return Opened(ev.sensor_size, inferred, chunks())
