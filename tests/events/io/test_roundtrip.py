"""Round trips: random events -> hand-written encoder -> reader -> the same events, for every format."""

from __future__ import annotations

import numpy as np
import pytest

from evssl.events.io import read_events
from evssl.events.io._prophesee import raw_words, read_raw_header
from evssl.events.io.aedat4 import read_aedat4
from evssl.events.io.bin40 import read_bin40
from evssl.events.io.dat import read_dat
from evssl.events.io.evt2 import decode_evt2, read_evt2
from evssl.events.io.evt3 import decode_evt3, read_evt3
from evssl.events.io.npz import read_npz
from evssl.events.io.text import read_text
from evssl.events.schema import Events
from tests.events.io import encoders as enc
from tests.events.io.helpers import assert_same, write


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ------------------------------------------------------------------------------------------------ bin40
def test_bin40_roundtrip_nmnist_size(tmp_path, rng):
    ev = enc.random_events(700, 34, 34, rng)
    out = read_bin40(write(tmp_path, "a.bin", enc.encode_bin40(ev)))
    assert_same(out, ev)
    assert read_events(tmp_path / "a.bin").sensor_size == (34, 34)


def test_bin40_overflow_markers_add_8192(tmp_path, rng):
    ev = enc.random_events(600, 180, 240, rng, t0=30_000, max_dt=200)
    data = enc.encode_bin40(ev, markers_before=(100, 100, 350))
    assert len(data) == 5 * (len(ev) + 3)
    out = read_bin40(write(tmp_path, "m.bin", data), sensor_size=(180, 240))
    assert_same(out, ev)


def test_bin40_marker_semantics_by_hand(tmp_path):
    # event (1, 2, ON, t=5), marker, event (3, 4, OFF, t=7): the second reads as 7 + 2**13
    data = bytes([1, 2, 0x80, 0, 5, 0, 240, 0, 0, 0, 3, 4, 0x00, 0, 7])
    out = read_bin40(write(tmp_path, "h.bin", data))
    assert out.t.tolist() == [5, 7 + 8192]
    assert out.x.tolist() == [1, 3] and out.y.tolist() == [2, 4] and out.p.tolist() == [1, -1]


def test_bin40_default_size_atis_and_fit(tmp_path, rng):
    ev = enc.random_events(300, 173, 151, rng)
    path = write(tmp_path, "c.bin", enc.encode_bin40(ev))
    assert read_bin40(path).sensor_size == (240, 304)
    assert read_bin40(path, sensor_size="fit").sensor_size == (int(ev.y.max()) + 1, int(ev.x.max()) + 1)
    assert read_bin40(path, sensor_size=(180, 240)).sensor_size == (180, 240)


def test_bin40_empty_file(tmp_path):
    from evssl.events.io import EmptyRecordingError

    with pytest.raises(EmptyRecordingError, match="no events") as info:
        read_bin40(write(tmp_path, "e.bin", b""))
    assert info.value.sensor_size is None


# ------------------------------------------------------------------------------------------------ dat
def test_dat_roundtrip_with_header_geometry(tmp_path, rng):
    ev = enc.random_events(900, 720, 1280, rng)
    hdr = ("Data file containing EventCD events.", "Version 2", "Height 720", "Width 1280", "end")
    out = read_dat(write(tmp_path, "a.dat", enc.encode_dat(ev, header=hdr)))
    assert_same(out, ev)


def test_dat_timestamp_wrap_is_counted(tmp_path, rng):
    ev = enc.random_events(500, 100, 120, rng, t0=(1 << 32) - 10_000, max_dt=60)
    assert ev.t[0] < (1 << 32) < ev.t[-1]
    out = read_dat(write(tmp_path, "w.dat", enc.encode_dat(ev)))
    np.testing.assert_array_equal(out.t, ev.t - 0)  # absolute: the first t is below 2**32, nothing to subtract
    assert out.sensor_size == (240, 304)


def test_dat_without_version_has_no_type_bytes(tmp_path, rng):
    ev = enc.random_events(50, 100, 120, rng)
    out = read_dat(write(tmp_path, "v1.dat", enc.encode_dat(ev, header=("Data file containing Event2D events.",))))
    assert_same(out, ev, size=False)


# ------------------------------------------------------------------------------------------------ EVT 2.0
def test_evt2_roundtrip_drops_orphans_and_skips_junk(tmp_path, rng):
    ev = enc.random_events(3000, 480, 640, rng, t0=123_456, max_dt=40)
    path = write(tmp_path, "a.raw", enc.encode_evt2(ev, orphans=3, junk_every=97))
    out = read_evt2(path)
    assert_same(out, ev)
    assert_same(read_events(path), ev)


def test_evt2_chunking_and_34bit_wrap(tmp_path, rng):
    ev = enc.random_events(2000, 480, 640, rng, t0=(1 << 34) - 20_000, max_dt=30)
    path = write(tmp_path, "w.raw", enc.encode_evt2(ev, extra=("plugin_name hal_plugin_gen3_fx3",)))
    words = raw_words(path, read_raw_header(path), "<u4")
    whole = decode_evt2(words)
    for chunk in (1, 7, 333):
        for a, b in zip(whole, decode_evt2(words, chunk_words=chunk)):
            np.testing.assert_array_equal(a, b)
    out = read_evt2(path)
    assert out.sensor_size == (480, 640)  # from the plugin name
    np.testing.assert_array_equal(out.t, ev.t - ((ev.t[0] >> 34) << 34))


# ------------------------------------------------------------------------------------------------ EVT 3.0
def test_evt3_roundtrip_vectors_and_junk(tmp_path, rng):
    ev = enc.random_events(4000, 720, 1280, rng, t0=777, max_dt=3, unique=True)
    data = enc.encode_evt3(ev, rng)
    body = len(enc.raw_header("3.0", ("format EVT3;height=720;width=1280",)))
    words = np.frombuffer(data[body:], "<u2") >> 12
    assert {0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8} <= set(words.tolist())  # every word type is exercised
    out = read_evt3(write(tmp_path, "a.raw", data))
    assert_same(out, ev)


def test_evt3_dense_rows_use_vectors(tmp_path, rng):
    # runs of neighbouring x on one row: VECT_12 / VECT_8 masks with many bits set
    n = 600
    x = np.sort(rng.choice(1280, n, replace=False)).astype(np.int16)
    ev = Events(x, np.full(n, 5, np.int16), np.full(n, 99, np.int64), np.ones(n, np.int8), 720, 1280)
    out = read_evt3(write(tmp_path, "d.raw", enc.encode_evt3(ev, rng, junk=0.0)))
    assert_same(out, ev)


def test_evt3_time_high_wraps(tmp_path, rng):
    ev = enc.random_events(3000, 720, 1280, rng, t0=2 * (1 << 24) - 30_000, max_dt=40, unique=True)
    assert ev.t[-1] > 2 * (1 << 24)
    path = write(tmp_path, "w.raw", enc.encode_evt3(ev, rng))
    out = read_evt3(path)
    np.testing.assert_array_equal(out.t, ev.t - ((int(ev.t[0]) >> 24) << 24))
    assert_same(out.replace(t=ev.t), ev)


def test_evt3_state_carried_across_chunks(tmp_path, rng):
    ev = enc.random_events(1500, 720, 1280, rng, t0=(1 << 24) - 3000, max_dt=5, unique=True)
    path = write(tmp_path, "c.raw", enc.encode_evt3(ev, rng))
    words = raw_words(path, read_raw_header(path), "<u2")
    whole = decode_evt3(words)
    assert len(whole[0]) == len(ev)
    for chunk in (1, 2, 5, 64, 1001):
        for a, b in zip(whole, decode_evt3(words, chunk_words=chunk)):
            np.testing.assert_array_equal(a, b)


def test_evt3_time_high_resets_low_and_events_before_state_are_dropped(tmp_path):
    words = [
        0x2000 | 5,  # ADDR_X before any time/y: dropped
        0x8000 | 1,  # TIME_HIGH 1 -> t = 4096
        0x2000 | 6,  # ADDR_X before any y: dropped
        0x0000 | 3,  # y = 3
        0x4000 | 0b1,  # VECT_12 before any VECT_BASE_X: dropped
        0x6000 | 4095,  # TIME_LOW -> t = 4096 + 4095
        0x2800 | 7,  # ON event x=7 @ 8191
        0x8000 | 2,  # TIME_HIGH 2 (low resets to 0) -> 8192
        0x2000 | 8,  # OFF x=8 @ 8192 (not 8192 + 4095)
        0x3800 | 100,  # base x 100, ON
        0x4000 | 0b100000000101,  # x = 100, 102, 111; base -> 112
        0x5000 | 0b10000001,  # x = 112, 119; base -> 120
        0x6000 | 1,  # t = 8193
        0x2000 | 9,
    ]
    data = enc.raw_header("3.0", ("format EVT3;height=720;width=1280",)) + np.array(words, "<u2").tobytes()
    out = read_evt3(write(tmp_path, "h.raw", data))
    assert out.x.tolist() == [7, 8, 100, 102, 111, 112, 119, 9]
    assert out.y.tolist() == [3] * 8
    assert out.t.tolist() == [8191, 8192, 8192, 8192, 8192, 8192, 8192, 8193]
    assert out.p.tolist() == [1, -1, 1, 1, 1, 1, 1, -1]


# ------------------------------------------------------------------------------------------------ AEDAT 4.0
@pytest.mark.parametrize("compression", [0, 1])
def test_aedat4_roundtrip(tmp_path, rng, compression):
    ev = enc.random_events(1234, 260, 346, rng, t0=1_600_000_000_000_000)
    path = write(tmp_path, "a.aedat4", enc.encode_aedat4(ev, compression=compression, packet_events=300))
    out = read_aedat4(path)
    assert_same(out, ev)
    assert out.t.dtype == np.int64 and out.t[0] == ev.t[0]  # absolute µs kept


def test_aedat4_no_data_table_and_explicit_stream(tmp_path, rng):
    ev = enc.random_events(100, 240, 320, rng)
    path = write(tmp_path, "b.aedat4", enc.encode_aedat4(ev, data_table=False, with_other_stream=False))
    assert_same(read_aedat4(path, stream_id=0), ev)
    assert_same(read_events(path), ev)


# ------------------------------------------------------------------------------------------------ text
def test_text_roundtrip_exact_microseconds(tmp_path, rng):
    ev = enc.random_events(800, 180, 240, rng, t0=12_345_678_901, max_dt=7)
    assert_same(read_text(write(tmp_path, "e.txt", enc.encode_text(ev))), ev)
    # float-printed timestamps one nanosecond low still round to the right microsecond
    assert_same(read_text(write(tmp_path, "f.txt", enc.encode_text(ev, float_noise=True))), ev)


def test_text_exact_path_matches_fast_path(tmp_path, rng, monkeypatch):
    import evssl.events.io.text as text_mod

    # epoch seconds with 9 decimals exceed the float-exact bound: the digit parser must take over
    ev = enc.random_events(400, 180, 240, rng, t0=1_600_000_000_123_456, max_dt=9)
    epoch = write(tmp_path, "epoch.txt", enc.encode_text(ev, float_noise=True))
    assert text_mod._parse_fast(epoch.read_bytes(), {"t": 0, "x": 1, "y": 2, "p": 3}, 6) is None
    assert_same(read_text(epoch), ev)
    small = enc.random_events(400, 180, 240, rng, t0=3_000_000, max_dt=9)
    path = write(tmp_path, "small.txt", enc.encode_text(small, float_noise=True))
    fast = read_text(path)
    monkeypatch.setattr(text_mod, "_parse_fast", lambda *a: None)
    assert_same(read_text(path), fast)
    assert_same(fast, small)


def test_text_chunks_comments_and_units(tmp_path, rng, monkeypatch):
    import evssl.events.io.text as text_mod

    ev = enc.random_events(300, 180, 240, rng)
    body = b"# t x y p\n\n" + enc.encode_text(ev)
    monkeypatch.setattr(text_mod, "CHUNK_BYTES", 64)
    assert_same(read_text(write(tmp_path, "c.txt", body)), ev)
    lines = [f"{x},{y},{t},{int(p > 0)}" for x, y, t, p in zip(ev.x, ev.y, ev.t, ev.p)]
    path = write(tmp_path, "u.csv", ("\n".join(lines)).encode())  # no final newline
    assert_same(read_text(path, columns="xytp", time_unit="us"), ev)
    assert_same(read_events(path, columns="xytp", time_unit="us"), ev)


def test_text_rounding_half_up_and_exponent_fallback(tmp_path):
    out = read_text(write(tmp_path, "r.txt", b"0.0000005 1 2 1\n0.0000014999 1 2 0\n12.0000025 3 4 1\n"))
    assert out.t.tolist() == [1, 1, 12_000_003]  # exact decimal, half up
    assert out.p.tolist() == [1, -1, 1]
    out = read_text(write(tmp_path, "x.txt", b"1.2e-6 1 2 1\n3E-6 1 2 0\n"))  # exponent: float fallback
    assert out.t.tolist() == [1, 3]
    out = read_text(write(tmp_path, "m.txt", b"0.5 1 2 1\n2.0004 1 2 1\n"), time_unit="ms")
    assert out.t.tolist() == [500, 2000]
    out = read_text(write(tmp_path, "n.txt", b"1499 1 2 1\n1500 1 2 1\n"), time_unit="ns")
    assert out.t.tolist() == [1, 2]


# ------------------------------------------------------------------------------------------------ numpy
def test_nimagenet_npz(tmp_path, rng):
    ev = enc.random_events(500, 480, 640, rng)
    path = tmp_path / "n.npz"
    np.savez_compressed(path, event_data=enc.nimagenet_array(ev))
    out = read_npz(path)
    assert_same(out, ev)
    assert_same(read_events(path), ev)


def test_nimagenet_uncompressed_keys_and_generic(tmp_path, rng):
    ev = enc.random_events(200, 480, 640, rng)
    path = tmp_path / "u.npz"
    np.savez(path, x_pos=ev.x.astype(np.uint16), y_pos=ev.y, timestamp=ev.t, polarity=ev.p > 0)
    assert_same(read_npz(path), ev)
    path = tmp_path / "g.npz"
    np.savez(path, x=ev.x, y=ev.y, t=ev.t / 1e6, p=ev.p, sensor_size=np.array([500, 700]))
    out = read_npz(path)
    assert_same(out.replace(height=480, width=640), ev)
    assert out.sensor_size == (500, 700)


def test_npy_structured_and_est_layout(tmp_path, rng):
    ev = enc.random_events(200, 180, 240, rng)
    path = tmp_path / "s.npy"
    np.save(path, ev.to_structured())
    assert_same(read_npz(path, sensor_size=(180, 240)), ev)
    est = np.stack([ev.x, ev.y, ev.t / 1e6, ev.p], axis=1).astype(np.float64)  # EST: x, y, t [s], p ±1
    path = tmp_path / "est.npy"
    np.save(path, est)
    assert_same(read_events(path, sensor_size=(180, 240)), ev)
    out = read_npz(path, sensor_size="fit", time_unit="s")
    assert_same(out, ev, size=False)


# ------------------------------------------------------------------------------------------------ store
def test_store_delegation(tmp_path, rng):
    store = pytest.importorskip("evssl.events.io.store")
    a = enc.random_events(300, 34, 34, rng)
    b = enc.random_events(200, 180, 240, rng)
    path = tmp_path / "s.h5"
    with store.StoreWriter(path) as w:
        w.add(a, name="first")
        w.add(b, name="second")
    assert_same(read_events(path), a)
    assert_same(read_events(path, recording=1), b)
    assert_same(read_events(path, format="h5", recording="second"), b)
