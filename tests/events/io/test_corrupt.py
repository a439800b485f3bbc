"""Truncated or corrupt files raise EventFormatError naming the file, the field and where; never a partial read."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from evssl.events.io import detect_format, read_events
from evssl.events.io.aedat4 import read_aedat4
from evssl.events.io.evt2 import read_evt2
from evssl.events.io.evt3 import read_evt3
from evssl.events.schema import EventFormatError, Events
from tests.events.io import encoders as enc
from tests.events.io.helpers import write


@pytest.fixture
def ev() -> Events:
    return enc.random_events(400, 180, 240, np.random.default_rng(7), t0=1_000, max_dt=30, unique=True)


def raises(path: Path, field: str, *words: str, **kw) -> EventFormatError:
    """Reading ``path`` raises an EventFormatError for ``field`` whose message names the file and ``words``."""
    with pytest.raises(EventFormatError) as info:
        read_events(path, **kw)
    err = info.value
    assert str(path) in str(err)
    assert err.field == field, str(err)
    for w in words:
        assert w in str(err), str(err)
    return err


@pytest.mark.parametrize("cut", [1, 2, 4])
def test_truncated_bin(tmp_path, ev, cut):
    data = enc.encode_bin40(ev)
    err = raises(write(tmp_path, "t.bin", data[:-cut]), "record", "multiple of 5", f"offset {len(data) - 5}")
    assert err.index == len(ev) - 1


def test_truncated_dat(tmp_path, ev):
    data = enc.encode_dat(ev)
    raises(write(tmp_path, "t.dat", data[:-3]), "record", "truncated record at byte offset")
    bad = bytearray(data)
    bad[bad.index(b"Version 2\n") + 11] = 16  # event size byte
    raises(write(tmp_path, "s.dat", bytes(bad)), "event_size", "expected 8")


@pytest.mark.parametrize(("encode", "reader", "cut"), [("evt2", read_evt2, 3), ("evt3", read_evt3, 1)])
def test_truncated_raw(tmp_path, ev, encode, reader, cut):
    data = enc.encode_evt2(ev) if encode == "evt2" else enc.encode_evt3(ev, np.random.default_rng(0))
    path = write(tmp_path, f"t_{encode}.raw", data[:-cut])
    raises(path, "word", "truncated word at byte offset")
    with pytest.raises(EventFormatError, match="truncated word"):
        reader(path)


def test_raw_versions(tmp_path, ev):
    body = enc.encode_evt2(ev, extra=("plugin_name hal_plugin_gen3_fx3",))
    path = write(tmp_path, "v.raw", body.replace(b"% evt 2.0", b"% evt 4.0"))
    raises(path, "evt", "unknown EVT version '4.0'")
    path = write(tmp_path, "n.raw", body.replace(b"% evt 2.0\n", b""))
    raises(path, "evt", "no '% evt X.Y'")
    assert read_evt2(path).sensor_size == (480, 640)  # the explicit reader needs no version line
    with pytest.raises(EventFormatError, match=r"header says EVT 2\.0"):
        read_evt3(write(tmp_path, "w.raw", body))


def test_aedat4_truncated_and_corrupt(tmp_path, ev):
    data = enc.encode_aedat4(ev, data_table=False, with_other_stream=False)
    raises(write(tmp_path, "t.aedat4", data[:-5]), "packet", "beyond the end of the data")
    raises(write(tmp_path, "h.aedat4", data[: -1 - len(data) // 2]), "packet")
    with_table = enc.encode_aedat4(ev)
    table = with_table.index(b"\xde\xad\xbe\xef")
    raises(write(tmp_path, "d.aedat4", with_table[: table - 3]), "dataTablePosition", "beyond EOF")
    assert len(read_aedat4(write(tmp_path, "e.aedat4", with_table[:table]))) == len(ev)  # only the index is gone
    # break the LZ4 frame magic of the first packet
    first = 18 + struct.unpack_from("<i", data, 14)[0]
    bad = bytearray(data)
    bad[first + 8 : first + 12] = b"\0\0\0\0"
    raises(write(tmp_path, "z.aedat4", bytes(bad)), "packet", f"packet at byte {first}", "LZ4")
    raises(write(tmp_path, "m.aedat4", b"#!AER-DAT3.1\r\n" + data[14:]), "magic", format="aedat4")
    raises(write(tmp_path, "s.aedat4", data[:40]), "header_size", "runs past EOF")


def test_aedat4_zstd_needs_zstandard(tmp_path, ev, monkeypatch):
    data = enc.encode_aedat4(ev, compression=0, with_other_stream=False)
    # rewrite the compression field of the IOHeader (first table field) to 3 = Zstd
    hdr = 18
    root = struct.unpack_from("<I", data, hdr)[0]
    vtable = root - struct.unpack_from("<i", data, hdr + root)[0]
    field = root + struct.unpack_from("<H", data, hdr + vtable + 4)[0]
    bad = bytearray(data)
    struct.pack_into("<i", bad, hdr + field, 3)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails even where it is installed
    with pytest.raises(EventFormatError, match="install the 'zstandard' package"):
        read_aedat4(write(tmp_path, "zstd.aedat4", bytes(bad)))


def test_text_errors(tmp_path):
    raises(write(tmp_path, "c.txt", b"0.1 1 2 1\n0.2 1 2\n"), "line", "line 1 has 3 columns")
    raises(write(tmp_path, "x.txt", b"0.1 1 2 1\n0.2 1 2 1\n0.3 1 y 1\n"), "line", "'y'", "line 2")
    raises(write(tmp_path, "d.txt", b"0.1 1 2 1\n0.2.5 1 2 1\n"), "line", "line 1")
    raises(write(tmp_path, "f.txt", b"0.1 1.5 2 1\n"), "x", "non-integer")
    raises(write(tmp_path, "p.txt", b"0.1 1 2 3\n"), "p", "not 0/1")
    raises(write(tmp_path, "b.txt", b"0.1 1 2 1\n9999999999.999999999 1 2 1\n"), "line", "too large", "line 1")
    raises(write(tmp_path, "l.txt", b"99999999999.999999999 1 2 1\n"), "line", "more than 19 digits", "line 0")


def test_decreasing_timestamps_name_the_index(tmp_path, ev):
    t = ev.t.copy()
    t[123] = t[122] - 5
    err = raises(write(tmp_path, "dec.bin", enc.encode_bin40(ev.replace(t=t))), "t", "decreases")
    assert err.index == 123
    err = raises(write(tmp_path, "dec.txt", enc.encode_text(ev.replace(t=t))), "t", "decreases")
    assert err.index == 123


def test_out_of_sensor_and_npz_errors(tmp_path, ev):
    raises(write(tmp_path, "o.bin", enc.encode_bin40(ev)), "x", "outside sensor range", sensor_size=(180, 100))
    path = tmp_path / "k.npz"
    np.savez(path, x=ev.x, y=ev.y, t=ev.t)
    raises(path, "p", "no array for field 'p'")
    good = tmp_path / "g.npz"
    np.savez_compressed(good, event_data=enc.nimagenet_array(ev))
    raises(write(tmp_path, "tr.npz", good.read_bytes()[:-20]), "file")


def test_detect_format(tmp_path, ev):
    rng = np.random.default_rng(0)
    cases = {
        "a.bin": enc.encode_bin40(ev),
        "a.dat": enc.encode_dat(ev),
        "a.txt": enc.encode_text(ev),
        "a.aedat4": enc.encode_aedat4(ev),
        "e2.raw": enc.encode_evt2(ev),
        "e3.raw": enc.encode_evt3(ev, rng),
        "aedat_no_ext": enc.encode_aedat4(ev),
        "evt3_no_ext": enc.encode_evt3(ev, rng),
        "dat_no_ext": enc.encode_dat(ev),
    }
    expected = ["bin40", "dat", "text", "aedat4", "evt2", "evt3", "aedat4", "evt3", "dat"]
    got = [detect_format(write(tmp_path, name, data)) for name, data in cases.items()]
    assert got == expected
    np.save(tmp_path / "a.npy", ev.to_structured())
    (tmp_path / "a.npy").rename(tmp_path / "npy_no_ext")
    assert detect_format(tmp_path / "npy_no_ext") == "npz"
    with pytest.raises(EventFormatError, match=r"AEDAT 2\.0/3\.1"):
        detect_format(write(tmp_path, "old.aedat", b"#!AER-DAT2.0\r\n"))
    with pytest.raises(EventFormatError, match="pass format="):
        detect_format(write(tmp_path, "what.xyz", b"\0\1\2\3\4"))
    assert len(read_events(tmp_path / "what.xyz", format="nmnist", sensor_size="fit")) == 1
    with pytest.raises(ValueError, match="unknown event format"):
        read_events(tmp_path / "a.bin", format="mp4")
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "missing.bin")
