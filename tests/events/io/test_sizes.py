"""Sensor sizes are checked, not trusted; inferred sizes are reported; the % header is parsed once, linearly."""

from __future__ import annotations

import time

import numpy as np
import pytest

import evssl.events.io._prophesee as prophesee
from evssl.events.io import iter_events, probe_events, read_events
from evssl.events.schema import EventFormatError
from tests.events.io import encoders as enc
from tests.events.io.helpers import write


@pytest.fixture
def ev():
    return enc.random_events(300, 30, 40, np.random.default_rng(4), unique=True)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("geometry 100000x100000", "header.geometry"),
        ("geometry 640.5x480", "header.geometry"),
        ("geometry big", "header.geometry"),
        ("format EVT2;height=1000000000;width=640", "header.format"),
        ("format EVT2;height=480.0;width=640", "header.format"),
        ("Height 40000", "header.height/width"),
        ("Width 640", "header.height/width"),  # a width without a height
    ],
)
def test_bad_header_sizes_are_errors(tmp_path, ev, line, field):
    path = write(tmp_path, "h.raw", enc.encode_evt2(ev, extra=(line,)))
    with pytest.raises(EventFormatError) as info:
        read_events(path)
    assert info.value.field == field and str(path) in str(info.value)
    with pytest.raises(EventFormatError):
        probe_events(path)


def test_bad_dat_header_size(tmp_path, ev):
    data = enc.encode_dat(ev, header=("Version 2", "Height 1e5", "Width 640"))
    with pytest.raises(EventFormatError, match="not a positive integer") as info:
        read_events(write(tmp_path, "h.dat", data))
    assert info.value.field == "header.height/width"


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"sensor_size": np.array([100_000, 100_000])}, "sensor_size"),
        ({"sensor_size": np.array([1e9, 1e9])}, "sensor_size"),
        ({"sensor_size": np.array([480.5, 640])}, "sensor_size"),
        ({"sensor_size": np.array([480, 640, 3])}, "sensor_size"),
        ({"height": np.array(480.5), "width": np.array(640)}, "height/width"),
        ({"height": np.array(70_000), "width": np.array(640)}, "height/width"),
        ({"height": np.array(480)}, "width"),
    ],
)
def test_bad_npz_sizes_are_errors(tmp_path, ev, meta, field):
    path = tmp_path / "m.npz"
    np.savez(path, x=ev.x, y=ev.y, t=ev.t, p=ev.p, **meta)
    with pytest.raises(EventFormatError) as info:
        read_events(path)
    assert info.value.field == field and str(path) in str(info.value)


def test_bad_aedat4_xml_size(tmp_path, ev):
    data = enc.encode_aedat4(ev.replace(width=99_999))
    with pytest.raises(EventFormatError, match="outside") as info:
        read_events(write(tmp_path, "x.aedat4", data))
    assert info.value.field == "infoNode.0.sizeY/sizeX"


@pytest.mark.parametrize("size", [(100_000, 40), (30.5, 40), (0, 40), ("3e1", 40), (30, 40, 1)])
def test_bad_caller_sizes_are_errors(tmp_path, ev, size):
    path = write(tmp_path, "a.bin", enc.encode_bin40(ev))
    with pytest.raises((EventFormatError, ValueError)):
        read_events(path, sensor_size=size)
    with pytest.raises((EventFormatError, ValueError)):
        iter_events(path, sensor_size=size)


def test_a_corrupt_coordinate_no_longer_silently_changes_the_size(tmp_path, ev):
    x = ev.x.copy()
    x[100] = 200  # one corrupt coordinate on a 30x40 recording
    path = write(tmp_path, "c.bin", enc.encode_bin40(ev.replace(x=x)))
    assert tuple(probe_events(path)) == ("bin40", 240, 304, True)  # guessed: reported as inferred
    with pytest.raises(EventFormatError, match="outside sensor range") as info:
        read_events(path, sensor_size=(30, 40))
    assert (info.value.field, info.value.index) == ("x", 100)


def test_inferred_flags_per_source_of_the_size(tmp_path, ev):
    rng = np.random.default_rng(0)
    cases = {
        "a.bin": (enc.encode_bin40(ev), ("bin40", 240, 304, True)),  # ATIS: the 30x40 events exceed 34x34
        "s.raw": (enc.encode_evt2(ev, extra=("geometry 640x480",)), ("evt2", 480, 640, False)),
        "f.raw": (enc.encode_evt3(ev, rng, extra=()), ("evt3", int(ev.y.max()) + 1, int(ev.x.max()) + 1, True)),
        "a.aedat4": (enc.encode_aedat4(ev), ("aedat4", 30, 40, False)),
        "a.txt": (enc.encode_text(ev), ("text", 180, 240, True)),
    }
    for name, (data, expected) in cases.items():
        path = write(tmp_path, name, data)
        assert tuple(probe_events(path)) == expected, name
        assert iter_events(path).probe == expected
        assert tuple(probe_events(path, sensor_size=(50, 60)))[1:] == (50, 60, False)
        assert probe_events(path, sensor_size="fit").inferred


def test_multi_megabyte_header_parses_once_and_fast(tmp_path, ev, monkeypatch):
    lines = tuple(f"comment_{i:07d} some header text" for i in range(120_000))  # ~4 MB of short lines
    long_line = ("note " + "x" * 1_000_000,)  # and one 1 MB line
    data = enc.encode_evt2(ev, extra=(*lines, *long_line, "geometry 640x480"))
    assert len(data) > 5_000_000
    read_events(write(tmp_path, "small.raw", enc.encode_evt2(ev)))  # load the decoder before timing
    path = write(tmp_path, "big_header.raw", data)
    calls = []
    real = prophesee.read_percent_header
    monkeypatch.setattr(prophesee, "read_percent_header", lambda *a: calls.append(1) or real(*a))
    t0 = time.perf_counter()
    out = read_events(path)
    elapsed = time.perf_counter() - t0
    assert len(out) == len(ev) and out.sensor_size == (480, 640)
    assert len(calls) == 1  # detection and the reader share one parse
    assert elapsed < 1.0, elapsed  # the old re-scanning parser took minutes on such a header


def test_dat_header_only_and_truncated_header_line(tmp_path):
    with pytest.raises(EventFormatError, match="no end of line") as info:
        read_events(write(tmp_path, "t.dat", b"% Data file\n% Version 2"))
    assert info.value.field == "header"
