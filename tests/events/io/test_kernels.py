"""The numba kernels against the numpy reference decoders, chunk/block boundaries, errors and bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import evssl.events.io._stateful as stateful
from evssl.events.io import EmptyRecordingError, iter_events, read_events
from evssl.events.schema import EventFormatError, Events
from tests.conftest import REAL_DATA
from tests.events.io import encoders as enc
from tests.events.io.helpers import assert_same, write

RAW_REAL = [
    "expelliarmus/evt2_sample.raw",
    "expelliarmus/evt3_sample.raw",
    "expelliarmus-18f239a/evt3_sample.raw",
    "expelliarmus-18f239a/dat_sample.dat",
    "tonic/sample_ncars.dat",
    "tonic/sample.aedat4",
    "event-vision-library/sample.aedat4",
]


@pytest.fixture
def numpy_only(monkeypatch):
    """Readers as without numba: the numpy reference decoders."""
    monkeypatch.setattr(stateful, "_KERNELS", False)


def read_numpy(path: Path, monkeypatch, **kw) -> Events:
    with monkeypatch.context() as m:
        m.setattr(stateful, "_KERNELS", False)
        return read_events(path, **kw)


def encoded(tmp_path: Path, seed: int = 3) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    ev = enc.random_events(2500, 720, 1280, rng, t0=(1 << 24) - 4000, max_dt=6, unique=True)
    dense = np.sort(rng.choice(1280, 900, replace=False)).astype(np.int16)
    rows = Events(dense, np.full(900, 9, np.int16), np.full(900, 5000, np.int64), np.ones(900, np.int8), 720, 1280)
    small = enc.random_events(2000, 240, 304, rng, t0=(1 << 32) - 3000, max_dt=4)  # .dat timestamps wrap
    return {
        "e2": write(tmp_path, "e2.raw", enc.encode_evt2(ev, extra=("geometry 1280x720",), orphans=4, junk_every=11)),
        "e2w": write(tmp_path, "e2w.raw", enc.encode_evt2(enc.random_events(900, 480, 640, rng, t0=(1 << 34) - 900))),
        "e3": write(tmp_path, "e3.raw", enc.encode_evt3(ev, rng)),
        "e3d": write(tmp_path, "e3d.raw", enc.encode_evt3(rows, rng, junk=0.0)),
        "dat": write(tmp_path, "a.dat", enc.encode_dat(small)),
        "aedat4": write(tmp_path, "a.aedat4", enc.encode_aedat4(small, packet_events=171)),
    }


def test_kernels_equal_numpy_reference_on_encoded_files(tmp_path, monkeypatch):
    for path in encoded(tmp_path).values():
        assert_same(read_events(path), read_numpy(path, monkeypatch))


@pytest.mark.parametrize("rel", RAW_REAL)
def test_kernels_equal_numpy_reference_on_real_files(rel, monkeypatch):
    path = REAL_DATA / rel
    if not path.exists():
        pytest.skip(f"{rel} not under {REAL_DATA}")
    assert_same(read_events(path), read_numpy(path, monkeypatch))


def test_chunks_split_vector_words_time_high_periods_and_blocks(tmp_path, monkeypatch):
    files = encoded(tmp_path)
    words = np.frombuffer(files["e3d"].read_bytes()[-2 * 200 :], "<u2")
    assert ((words >> 12 == 4) & (np.bitwise_count(words & 0xFFF) > 2)).any()  # multi-event vector words
    monkeypatch.setattr(stateful, "BLOCK_ITEMS", 37)  # blocks end inside vector groups and time-high periods
    for name, path in files.items():
        whole = read_events(path)
        for chunk in (1, 2, 5, 64, 999):
            parts = list(iter_events(path, chunk_events=chunk))
            assert [len(c) for c in parts[:-1]] == [chunk] * (len(parts) - 1), name
            assert_same(Events.concatenate(parts), whole)


def test_numpy_fallback_chunks_equal(tmp_path, numpy_only):
    for path in encoded(tmp_path).values():
        assert_same(Events.concatenate(list(iter_events(path, chunk_events=333))), read_events(path))


def _corrupt_t(tmp_path: Path, kind: str) -> tuple[Path, int]:
    rng = np.random.default_rng(11)
    ev = enc.random_events(3000, 240, 304, rng, t0=5000, max_dt=100, unique=kind == "evt3")
    t = ev.t.copy()
    i = 2345
    t[i] = t[i - 1] - 4096 * 3  # far enough back to change the EVT 3.0 TIME_HIGH too
    bad = ev.replace(t=t)
    data = {
        "evt2": lambda: enc.encode_evt2(bad),
        "evt3": lambda: enc.encode_evt3(bad, rng, junk=0.0),
        "dat": lambda: enc.encode_dat(bad),
        "aedat4": lambda: enc.encode_aedat4(bad, packet_events=100),
    }[kind]()
    ext = {"evt2": "raw", "evt3": "raw", "dat": "dat", "aedat4": "aedat4"}[kind]
    return write(tmp_path, f"bad_{kind}.{ext}", data), i


@pytest.mark.parametrize("kind", ["evt2", "evt3", "dat", "aedat4"])
def test_decreasing_time_names_the_same_index_whole_and_chunked(tmp_path, kind, monkeypatch):
    path, i = _corrupt_t(tmp_path, kind)
    with pytest.raises(EventFormatError, match="decreases") as whole:
        read_events(path)
    assert whole.value.field == "t" and str(path) in str(whole.value)
    if kind != "evt3":  # EVT 3.0 groups events by (t, y): the index is where the group lands in the stream
        assert whole.value.index == i
    monkeypatch.setattr(stateful, "BLOCK_ITEMS", 101)
    for chunk in (7, 1000):
        with pytest.raises(EventFormatError, match="decreases") as chunked:
            list(iter_events(path, chunk_events=chunk))
        assert chunked.value.index == whole.value.index
    assert "byte offset" in str(whole.value) or "packet at byte" in str(whole.value)
    with pytest.raises(EventFormatError, match="decreases") as ref:
        read_numpy(path, monkeypatch)
    assert ref.value.index == whole.value.index


@pytest.mark.parametrize("kind", ["evt2", "evt3", "dat", "aedat4", "text", "bin40"])
def test_caller_sensor_size_turns_outliers_into_errors(tmp_path, kind):
    rng = np.random.default_rng(2)
    ev = enc.random_events(500, 34, 34, rng, unique=True)
    x = ev.x.copy()
    x[321] = 40  # one coordinate outside the 34x34 sensor the caller declares
    bad = ev.replace(x=x)
    if kind == "evt3":
        bad = enc.random_events(500, 34, 34, rng, unique=True)
        k = 321
        bad = bad.replace(x=np.where(np.arange(500) == k, 40, bad.x).astype(np.int16))
    data = {
        "evt2": lambda: enc.encode_evt2(bad, extra=()),
        "evt3": lambda: enc.encode_evt3(bad, rng, extra=(), junk=0.0),
        "dat": lambda: enc.encode_dat(bad),
        "aedat4": lambda: enc.encode_aedat4(bad),
        "text": lambda: enc.encode_text(bad),
        "bin40": lambda: enc.encode_bin40(bad),
    }[kind]()
    ext = {"evt2": "raw", "evt3": "raw", "text": "txt", "bin40": "bin"}.get(kind, kind)
    path = write(tmp_path, f"o_{kind}.{ext}", data)
    for read in (
        lambda: read_events(path, sensor_size=(34, 34)),
        lambda: list(iter_events(path, sensor_size=(34, 34), chunk_events=50)),
    ):
        with pytest.raises(EventFormatError, match="outside sensor range") as info:
            read()
        assert info.value.field == "x" and str(path) in str(info.value)
        if kind != "evt3":
            assert info.value.index == 321


def test_evt2_without_time_high_is_an_error_not_zero_events(tmp_path):
    words = np.array([(1 << 28) | (i << 11) | 5 for i in range(50)], "<u4")
    path = write(tmp_path, "nth.raw", enc.raw_header("2.0") + words.tobytes())
    for read in (lambda: read_events(path), lambda: list(iter_events(path, chunk_events=8))):
        with pytest.raises(EventFormatError, match="no TIME_HIGH") as info:
            read()
        assert info.value.field == "time_high" and not isinstance(info.value, EmptyRecordingError)
        assert "50 CD event words" in str(info.value) and f"byte offset {len(enc.raw_header('2.0'))}" in str(info.value)


def test_evt3_without_time_high_is_an_error(tmp_path, monkeypatch):
    words = np.array([0x0000 | 3, 0x2000 | 5, 0x2000 | 6], "<u2")
    path = write(tmp_path, "nth3.raw", enc.raw_header("3.0") + words.tobytes())
    with pytest.raises(EventFormatError, match="TIME_HIGH") as info:
        read_events(path)
    assert info.value.field == "time_high"
    with pytest.raises(EventFormatError) as ref:
        read_numpy(path, monkeypatch)
    assert ref.value.field == "time_high"


def test_chunked_reads_hold_memory_bounded_by_the_chunk(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ev = enc.random_events(200_000, 480, 640, rng, t0=10, max_dt=3)
    paths = [
        write(tmp_path, "big.raw", enc.encode_evt2(ev)),
        write(tmp_path, "big.dat", enc.encode_dat(ev, header=("Version 2", "Height 480", "Width 640"))),
        write(tmp_path, "big.aedat4", enc.encode_aedat4(ev, packet_events=2000, with_other_stream=False)),
    ]
    monkeypatch.setattr(stateful, "BLOCK_ITEMS", 1 << 14)
    for path in paths:
        read_events(path)  # compile / warm up outside the measurement
        tracemalloc.start()
        n = sum(len(c) for c in iter_events(path, chunk_events=10_000))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tracemalloc.start()
        whole = read_events(path)
        whole_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n == len(whole) == len(ev)
        assert peak < 1_000_000 and whole_peak > 2_500_000, (path.name, peak, whole_peak)  # 13 bytes / event whole


@pytest.mark.parametrize(
    ("x1", "y1", "p1", "t1", "expected"),
    [
        (2, 1, 2, 2, [4, 1, 1, 2, 0]),  # polarity byte 2: code p, a = the byte
        (-3, 1, 0, 2, [2, 1, 1, -3, 1]),  # negative x: code x, b = 1
        (3, -4, 0, 2, [3, 1, 1, -4, 1]),  # negative y: code y, b = 1
        (30, 30, 0, 2, [2, 1, 1, 30, 0]),  # x and y outside: x reported
        (3, 1, 0, 0, [1, 1, 1, 5, 0]),  # decreasing t: a = last t, b = t
    ],
)
def test_aedat4_kernel_describes_the_first_fault_of_an_event(x1, y1, p1, t1, expected):
    k = pytest.importorskip("evssl.events.io._kernels")
    cols = (np.array([5, t1], np.int64), np.array([1, x1], np.int16), np.array([1, y1], np.int16))
    err = np.zeros(5, np.int64)
    state = np.array([np.iinfo(np.int64).min], np.int64)
    pos, n = k.aedat4_copy(*cols, np.array([1, p1], np.int8), 0, *stateful.buffers(8), state, 10, 10, err)
    assert (pos, n) == (1, 1)
    assert err.tolist() == expected
