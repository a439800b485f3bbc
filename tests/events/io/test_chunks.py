"""Chunked reading: iter_events chunks concatenate to read_events exactly; probe_events; empty recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evssl.events.io import EmptyRecordingError, iter_events, probe_events, read_events
from evssl.events.schema import EventFormatError, Events
from tests.conftest import REAL_DATA
from tests.events.io import encoders as enc
from tests.events.io.helpers import assert_same, write

REAL = [
    "tonic/sample_nmnist.bin",
    "event-vision-library/faces_easy_0001.bin",
    "EventsTools-NCaltech101/umbrella.bin",
    "expelliarmus-18f239a/dat_sample.dat",
    "tonic/sample_ncars.dat",
    "expelliarmus/evt2_sample.raw",
    "expelliarmus/evt3_sample.raw",
    "expelliarmus-18f239a/evt3_sample.raw",
    "tonic/sample.aedat4",
    "event-vision-library/sample.aedat4",
    "event-vision-library/event.txt",
    "expelliarmus-18f239a/dat_sample.npy",
]


def check_chunks(path: Path, chunk_events: int, **kw) -> list[Events]:
    whole = read_events(path, **kw)
    chunks = iter_events(path, chunk_events=chunk_events, **kw)
    parts = list(chunks)
    assert all(len(c) == chunk_events for c in parts[:-1]) and 0 < len(parts[-1]) <= chunk_events
    assert_same(Events.concatenate(parts), whole)
    assert (chunks.probe.height, chunks.probe.width) == whole.sensor_size
    return parts


@pytest.mark.parametrize("rel", REAL)
def test_real_recordings_concatenate_exactly(rel):
    path = REAL_DATA / rel
    if not path.exists():
        pytest.skip(f"{rel} not under {REAL_DATA}")
    kw = {"sensor_size": (240, 304)} if rel.endswith(".npy") else {}
    n = len(read_events(path, **kw))
    for chunk in sorted({max(1, n // 7 + 3), 4096, 65_537}):
        if chunk < n or chunk == 65_537:
            check_chunks(path, chunk, **kw)


def test_encoded_files_concatenate_exactly(tmp_path):
    rng = np.random.default_rng(5)
    ev = enc.random_events(3000, 180, 240, rng, t0=500, max_dt=20, unique=True)
    files = {
        "a.bin": enc.encode_bin40(ev),
        "a.dat": enc.encode_dat(ev),
        "a.txt": enc.encode_text(ev),
        "a.aedat4": enc.encode_aedat4(ev, packet_events=333),
        "e2.raw": enc.encode_evt2(ev, orphans=2, junk_every=13),
        "e3.raw": enc.encode_evt3(ev, rng),
    }
    for name, data in files.items():
        path = write(tmp_path, name, data)
        for chunk in (1, 7, 1000, 5000):
            check_chunks(path, chunk)


def test_probe_reports_inferred_sizes(tmp_path):
    rng = np.random.default_rng(0)
    ev = enc.random_events(200, 100, 120, rng)
    path = write(tmp_path, "a.dat", enc.encode_dat(ev))
    assert tuple(probe_events(path)) == ("dat", 240, 304, True)  # ATIS default: guessed from the events
    assert tuple(probe_events(path, sensor_size=(100, 120))) == ("dat", 100, 120, False)
    path = write(tmp_path, "g.dat", enc.encode_dat(ev, header=("Version 2", "Height 100", "Width 120")))
    assert tuple(probe_events(path)) == ("dat", 100, 120, False)
    path = write(tmp_path, "e.raw", enc.encode_evt2(ev, extra=()))
    fit = (int(ev.y.max()) + 1, int(ev.x.max()) + 1)
    assert tuple(probe_events(path)) == ("evt2", *fit, True)
    path = write(tmp_path, "p.raw", enc.encode_evt2(ev, extra=("plugin_name hal_plugin_gen3_fx3",)))
    assert tuple(probe_events(path)) == ("evt2", 480, 640, False)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("e.bin", b""),
        ("e.dat", b"% Data file containing Event2D events.\n% Version 2\n\x00\x08"),
        ("e.raw", enc.raw_header("2.0", ("format EVT2;height=480;width=640",))),
        ("e3.raw", enc.raw_header("3.0")),
        ("e.txt", b"# nothing\n"),
        ("e.aedat4", enc.encode_aedat4(Events.empty(240, 320))),
    ],
)
def test_empty_and_header_only_files_raise_empty_recording(tmp_path, name, data):
    path = write(tmp_path, name, data)
    with pytest.raises(EmptyRecordingError, match="no events") as info:
        read_events(path)
    assert isinstance(info.value, EventFormatError) and str(path) in str(info.value)
    with pytest.raises(EmptyRecordingError):
        list(iter_events(path))
    if name == "e.raw":
        assert info.value.sensor_size == (480, 640)
