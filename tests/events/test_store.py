"""The evssl HDF5 event store: round trip, O(1) windows, atomic writes, append, fork safety, bad files."""

from __future__ import annotations

import itertools
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from evssl.events.io.store import (
    COMPRESSIONS,
    EventStore,
    RecordingInfo,
    StoreFormatError,
    StoreWriter,
)
from evssl.events.schema import EventFormatError, Events

H, W = 12, 16


def make_events(rng: np.random.Generator, n: int, t0: int = 0, span: int = 50_000) -> Events:
    t = np.sort(rng.integers(t0, t0 + span, n))
    return Events.from_arrays(
        rng.integers(0, W, n), rng.integers(0, H, n), t, rng.integers(0, 2, n), H, W, polarity="01"
    )


def assert_events_equal(a: Events, b: Events) -> None:
    assert (a.height, a.width) == (b.height, b.width)
    for f in ("x", "y", "t", "p"):
        ca, cb = getattr(a, f), getattr(b, f)
        assert ca.dtype == cb.dtype, f
        np.testing.assert_array_equal(ca, cb, err_msg=f)


def extras(rng: np.random.Generator, k: int) -> dict:
    """All optional arrays for one recording (k varies the lengths)."""
    return dict(
        frames=rng.integers(0, 256, (k + 1, 6, 8, 3), dtype=np.uint8),
        frame_t=np.arange(k + 1) * 1000,
        semantic=rng.integers(0, 5, (k + 2, 6, 8), dtype=np.uint8),
        flow=rng.normal(size=(k + 2, 2, 6, 8)).astype(np.float32),
        depth=rng.random((k + 2, 6, 8)).astype(np.float32),
        dense_t=np.arange(k + 2) * 500,
        poses=rng.normal(size=(k + 3, 4, 4)),
        pose_t=np.arange(k + 3) * 100,
        intrinsics=np.eye(3) * (k + 1),
        embedding=rng.normal(size=7).astype(np.float32),
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_round_trip_all_arrays(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.h5"
    evs = [make_events(rng, n) for n in (300, 0, 1, 2000)]
    opt = [extras(rng, 0), {}, extras(rng, 2), {"frames": None, "depth": extras(rng, 1)["depth"], "dense_t": [0, 5, 9]}]
    with StoreWriter(path, chunk_events=128) as w:
        w.set_classes(["a", "b"])
        w.set_attrs(generator={"seed": 3}, note="x")
        for k, (ev, o) in enumerate(zip(evs, opt)):
            assert w.add(ev, name=f"dir/rec{k}", label=k % 2, source=f"src{k}", split="train" if k else "val", **o) == k
    assert path.exists() and not list(tmp_path.glob("*.tmp-*"))
    s = EventStore(path)
    assert len(s) == 4 and s.classes == ["a", "b"] and s.attrs == {"generator": {"seed": 3}, "note": "x"}
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 1, 0, 1]
    assert s.splits.tolist() == ["val", "train", "train", "train"]
    for k, (ev, o) in enumerate(zip(evs, opt)):
        assert_events_equal(s.events(k), ev)
        info = s.info(k)
        assert isinstance(info, RecordingInfo)
        assert (info.name, info.label, info.source, info.height, info.width) == (f"dir/rec{k}", k % 2, f"src{k}", H, W)
        assert info.num_events == len(ev)
        assert (info.t_start, info.t_end) == ((int(ev.t[0]), int(ev.t[-1])) if len(ev) else (0, 0))
        assert info.has_frames == (o.get("frames") is not None)
        assert info.has_poses == ("poses" in o) and info.has_embedding == ("embedding" in o)
        assert info.has_dense == ("dense_t" in o)
        if o.get("frames") is not None:
            np.testing.assert_array_equal(s.frames(k), o["frames"])
            np.testing.assert_array_equal(s.frames(k, -1), o["frames"][-1])
            np.testing.assert_array_equal(s.frame_times(k), o["frame_t"])
            assert s.frame_times(k).dtype == np.int64
        else:
            assert s.frames(k).shape == (0, 6, 8, 3) and len(s.frame_times(k)) == 0
        for key in ("semantic", "flow", "depth"):
            if key in o:
                np.testing.assert_array_equal(s.dense(k, key), o[key])
                np.testing.assert_array_equal(s.dense(k, key, 1), o[key][1])
                np.testing.assert_array_equal(s.dense_times(k), o["dense_t"])
            else:
                with pytest.raises(KeyError, match=key):
                    s.dense(k, key)
        if "poses" in o:
            m, t = s.poses(k)
            np.testing.assert_array_equal(m, o["poses"])
            np.testing.assert_array_equal(t, o["pose_t"])
            np.testing.assert_array_equal(s.intrinsics(k), o["intrinsics"])
            np.testing.assert_array_equal(s.embedding(k), o["embedding"])
            assert s.embedding(k).dtype == np.float32
        else:
            assert s.poses(k)[0].shape == (0, 4, 4) and s.intrinsics(k) is None and s.embedding(k) is None
    assert_events_equal(s.events(3, 10, -5), evs[3][10:-5])
    assert len(s.events(1)) == 0 and len(s.window(1, 0, 10**9)) == 0
    with pytest.raises(IndexError):
        s.info(4)
    assert s.index_of("dir/rec2") == 2
    s.close()


def test_window_matches_brute_force(tmp_path: Path, rng: np.random.Generator) -> None:
    # duplicate timestamps, gaps of many ms, events exactly on ms boundaries, several chunks per recording
    dense = make_events(rng, 3000, t0=10_000, span=20_000)
    t = np.sort(np.concatenate([[5_000, 5_000, 6_000, 7_000, 7_999, 8_000], 5_000 + 1000 * rng.integers(0, 30, 50)]))
    gappy = Events.from_arrays(np.zeros(len(t)), np.zeros(len(t)), t, np.ones(len(t)), H, W)
    single = Events.from_arrays([1], [2], [123_456], [-1], H, W)
    evs = [dense, gappy, single, Events.empty(H, W)]
    path = tmp_path / "w.h5"
    with StoreWriter(path, chunk_events=256) as w:
        for k, ev in enumerate(evs):
            w.add(ev, name=str(k))
    s = EventStore(path)
    for k, ev in enumerate(evs):
        tf = int(ev.t[0]) if len(ev) else 0
        tl = int(ev.t[-1]) if len(ev) else 0
        queries = [tf + 1000 * j for j in range(-2, 40)]  # on millisecond boundaries
        queries += [tf - 1, tf, tf + 1, tl - 1, tl, tl + 1, tl + 1000, -(10**12), 10**12]
        queries += rng.integers(tf - 5000, tl + 5000, 150).tolist()
        for q in queries:
            assert s.index_at(k, q) == np.searchsorted(ev.t, q), (k, q)
        pairs = [(a, b) for a in queries[::3] for b in queries[1::7]]  # includes t1 <= t0 (empty) windows
        for t0, t1 in pairs:
            got = s.window(k, t0, t1)
            want = ev[(ev.t >= t0) & (ev.t < t1)]
            assert_events_equal(got, want)


def test_append_keeps_old_recordings_bit_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "a.h5"
    old = [make_events(rng, n) for n in (500, 77)]
    with StoreWriter(path, chunk_events=64) as w:
        w.set_classes(["c0", "c1"])
        w.set_attrs(version="one")
        for k, ev in enumerate(old):
            w.add(ev, name=f"old{k}", label=k, **extras(rng, k))
    before = EventStore(path)
    snap = [(before.events(k), before.frames(k), before.dense(k, "flow"), before.poses(k)) for k in range(2)]
    before.close()
    new = make_events(rng, 333)
    with StoreWriter(path, append=True) as w:
        assert w.num_recordings == 2
        w.set_attrs(more=1)
        assert w.add(new, name="new", label=1, **extras(rng, 4)) == 2
    s = EventStore(path)
    assert len(s) == 3 and s.classes == ["c0", "c1"] and s.attrs == {"version": "one", "more": 1}
    for k in range(2):
        ev, fr, fl, (pm, pt) = snap[k]
        np.testing.assert_array_equal(s.poses(k)[1], pt)
        assert_events_equal(s.events(k), ev)
        np.testing.assert_array_equal(s.frames(k), fr)
        np.testing.assert_array_equal(s.dense(k, "flow"), fl)
        np.testing.assert_array_equal(s.poses(k)[0], pm)
        assert s.info(k).name == f"old{k}"
    assert_events_equal(s.events(2), new)
    assert_events_equal(s.window(2, int(new.t[10]), int(new.t[200])), new[10:200])
    assert s.frames(2).shape == (5, 6, 8, 3)


def test_exception_in_with_leaves_original_untouched(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "x.h5"
    with StoreWriter(path) as w:
        w.add(make_events(rng, 100), name="keep")
    original = path.read_bytes()
    for append in (False, True):
        with pytest.raises(RuntimeError, match="boom"), StoreWriter(path, append=append) as w:
            w.add(make_events(rng, 100), name="lost")
            raise RuntimeError("boom")
        assert path.read_bytes() == original
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    # a fresh path that failed is not created at all
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "new.h5") as w:
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]


def test_bad_input_to_add_names_recording_and_field(tmp_path: Path, rng: np.random.Generator) -> None:
    ev = make_events(rng, 10)
    path = tmp_path / "b.h5"
    with StoreWriter(path) as w:
        bad = ev.replace(x=ev.x.astype(np.int32))
        with pytest.raises(EventFormatError, match=r"recording 'r1'.*field 'x'.*int32"):
            w.add(bad, name="r1")
        with pytest.raises(EventFormatError, match=r"recording 'r2'.*field 't'"):
            w.add(ev.replace(t=ev.t[::-1].copy()), name="r2")  # not validated: time goes backwards
        with pytest.raises(EventFormatError, match=r"recording 'r3'.*frame_t.*length 2.*3"):
            w.add(ev, name="r3", frames=np.zeros((3, 4, 4, 3), np.uint8), frame_t=[0, 1])
        with pytest.raises(EventFormatError, match=r"recording 'r4'.*'frames'.*float64"):
            w.add(ev, name="r4", frames=np.zeros((1, 4, 4, 3)), frame_t=[0])
        with pytest.raises(EventFormatError, match=r"recording 'r5'.*frame_t.*missing"):
            w.add(ev, name="r5", frames=np.zeros((1, 4, 4, 3), np.uint8))
        with pytest.raises(EventFormatError, match=r"recording 'r6'.*dense_t"):
            w.add(ev, name="r6", depth=np.zeros((1, 4, 4), np.float32))
        with pytest.raises(EventFormatError, match=r"recording 'r7'.*'poses'.*shape"):
            w.add(ev, name="r7", poses=np.zeros((2, 3, 4)), pose_t=[0, 1])
        with pytest.raises(EventFormatError, match=r"recording 'r8'.*'events'"):
            w.add(ev.to_structured(), name="r8")  # type: ignore[arg-type]
        assert w.add(ev, name="ok", frames=np.zeros((2, 4, 5, 3), np.uint8), frame_t=[0, 1]) == 0
        with pytest.raises(EventFormatError, match=r"recording 'r9'.*'frames'.*\(6, 5, 3\).*\(4, 5, 3\)"):
            w.add(ev, name="r9", frames=np.zeros((1, 6, 5, 3), np.uint8), frame_t=[0])
        assert w.add(ev, name="ok2") == 1  # failed adds wrote nothing
    s = EventStore(path)
    assert s.names.tolist() == ["ok", "ok2"]
    assert_events_equal(s.events(1), ev)


class _WindowDataset(torch.utils.data.Dataset):
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return 2 * len(self.store)

    def __getitem__(self, k: int) -> dict:
        i = k % len(self.store)
        info = self.store.info(i)
        ev = self.store.window(i, info.t_start, info.t_start + 20_000)
        return {"n": len(ev), "tsum": int(ev.t.sum()), "pid": os.getpid()}


def test_pickle_and_dataloader_fork(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "p.h5"
    evs = [make_events(rng, 200) for _ in range(6)]
    with StoreWriter(path) as w:
        for k, ev in enumerate(evs):
            w.add(ev, name=str(k), label=k)
    s = EventStore(path)
    s.events(0)  # the parent holds an open handle before forking
    state = pickle.dumps(s)
    assert len(state) < 200 and b"p.h5" in state  # only the path travels
    s2 = pickle.loads(state)
    assert_events_equal(s2.events(3), evs[3])
    assert s2.labels.tolist() == list(range(6))
    dl = torch.utils.data.DataLoader(
        _WindowDataset(s), batch_size=3, num_workers=2, multiprocessing_context="fork", shuffle=False
    )
    got = [b for b in dl]
    ns = torch.cat([b["n"] for b in got]).tolist()
    tsums = torch.cat([b["tsum"] for b in got]).tolist()
    pids = set(torch.cat([b["pid"] for b in got]).tolist())
    want = []
    for k in range(12):
        ev = evs[k % 6]
        want.append(ev.time_window(int(ev.t[0]), int(ev.t[0]) + 20_000))
    assert ns == [len(e) for e in want]
    assert tsums == [int(e.t.sum()) for e in want]
    assert os.getpid() not in pids
    assert_events_equal(s.events(5), evs[5])  # parent handle still fine


def test_not_a_store_gives_clear_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(StoreFormatError, match=r"notes\.h5.*not an evssl event store.*HDF5"):
        EventStore(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(StoreFormatError, match=r"plain\.h5.*'format' attribute"):
        EventStore(plain)
    partial = tmp_path / "partial.h5"
    with h5py.File(partial, "w") as f:
        f.attrs["format"] = "evssl.events.store"
        f.attrs["version"] = 1
        f["events/x"] = np.zeros(3, np.int16)
    with pytest.raises(StoreFormatError, match=r"partial\.h5.*missing dataset.*events/y.*ms_to_idx"):
        EventStore(partial)
    good = tmp_path / "good.h5"
    with StoreWriter(good, compression="none") as w:
        w.add(make_events(rng, 5000), name="r")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(StoreFormatError, match=r"truncated\.h5"):
        EventStore(truncated)
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        EventStore(tmp_path / "missing.h5")
    with pytest.raises(StoreFormatError, match=r"plain\.h5"):
        StoreWriter(plain, append=True)
    assert not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressions_round_trip(tmp_path: Path, rng: np.random.Generator, compression: str) -> None:
    ev = make_events(rng, 3000)
    path = tmp_path / f"{compression}.h5"
    with StoreWriter(path, compression=compression, clevel=1, chunk_events=1024) as w:
        w.add(ev, name="r", frames=np.ones((1, 4, 4, 3), np.uint8), frame_t=[0])
    s = EventStore(path)
    assert_events_equal(s.events(0), ev)
    assert_events_equal(s.window(0, 1000, 30_000), ev.time_window(1000, 30_000))
    with pytest.raises(ValueError, match="unknown compression"):
        StoreWriter(tmp_path / "y.h5", compression="brotli")


def test_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "e.h5"
    with StoreWriter(path) as w:
        w.set_classes(["only"])
    s = EventStore(path)
    assert len(s) == 0 and s.classes == ["only"] and s.labels.shape == (0,) and s.splits.shape == (0,)


# ------------------------------------------------------------------------------------------- reliability (issue 13)
def _write(path: Path, evs: list[Events], **kw) -> None:
    with StoreWriter(path, **kw) as w:
        for k, ev in enumerate(evs):
            w.add(ev, name=f"r{k}", label=k)


def test_replaced_file_is_detected_by_readers_pickles_and_datasets(tmp_path: Path, rng: np.random.Generator) -> None:
    """A reader never applies its table to a file that replaced the one it read (issue 13 §2)."""
    from evssl.data.datasets import StoreDataset
    from evssl.events.io.store import StoreChangedError

    path = tmp_path / "s.h5"
    _write(path, [make_events(rng, 500), make_events(rng, 300)])
    reader = EventStore(path)  # table read, file closed until the first event read
    state = pickle.dumps(reader)
    old_id = reader.store_id
    assert isinstance(old_id, str) and len(old_id) == 32
    ds = StoreDataset(path, [0, 1], sampler=lambda store, i, rng, train: store.events(i), train=False,
                      store_id=old_id)  # fmt: skip
    # the file is replaced (a re-convert): 34x34 events, other counts
    xy = rng.integers(0, 34, (2, 900))
    new = [Events.from_arrays(xy[0], xy[1], np.arange(900), rng.integers(0, 2, 900), 34, 34, polarity="01")]
    with StoreWriter(path) as w:
        w.add(new[0], name="other", label=0)
    assert EventStore(path).store_id != old_id
    with pytest.raises(StoreChangedError, match=r"s\.h5: the file was replaced"):
        reader.events(0)
    with pytest.raises(StoreChangedError, match="replaced"):
        pickle.loads(state)
    with pytest.raises(StoreChangedError, match="replaced"):
        ds[0]
    # an append also replaces the file (new identity)
    fresh = EventStore(path)
    with StoreWriter(path, append=True) as w:
        w.add(make_events(rng, 10), name="more")
    with pytest.raises(StoreChangedError):
        fresh.window(0, 0, 100)


def test_corrupt_offsets_and_ms_index_are_refused_at_open(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.h5"
    _write(path, [make_events(rng, 400), make_events(rng, 400, t0=10_000)])
    EventStore(path)
    cases = {
        "recordings/event_offset": (lambda a: a.__setitem__(1, 100), r"recording 1 \('r1'\): its events overlap"),
        "recordings/ms_count": (lambda a: a.__setitem__(0, a[0] - 1), r"recording 0 .*ms index has \d+ entries"),
        "recordings/num_events": (lambda a: a.__setitem__(1, 10**6), r"recording 1 .*outside the 800 stored"),
        "ms_to_idx": (lambda a: a.__setitem__(5, 399), r"recording 0 .*ms index decreases at entry 6"),
    }
    for name, (corrupt, message) in cases.items():
        bad = tmp_path / f"bad_{name.replace('/', '_')}.h5"
        bad.write_bytes(path.read_bytes())
        with h5py.File(bad, "r+") as f:
            arr = f[name][...]
            corrupt(arr)
            f[name][...] = arr
        with pytest.raises(StoreFormatError, match=message):
            EventStore(bad)
    # an ms index whose end does not match the event count (would return another recording's events)
    bad = tmp_path / "bad_end.h5"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "r+") as f:
        off, cnt = int(f["recordings/ms_offset"][1]), int(f["recordings/ms_count"][1])
        f["ms_to_idx"][off + cnt - 1] = 700
    with pytest.raises(StoreFormatError, match=r"recording 1 .*ms index runs 0\.\.700, expected 0\.\.400"):
        EventStore(bad)


def test_failed_chunk_read_names_store_and_recording(tmp_path: Path, rng: np.random.Generator, monkeypatch) -> None:
    path = tmp_path / "s.h5"
    _write(path, [make_events(rng, 100), make_events(rng, 100)])
    s = EventStore(path)

    class Broken:
        def __getitem__(self, key):
            raise OSError("Can't synchronously read data (filter returned failure during read)")

    monkeypatch.setattr(s, "_dset", lambda name: Broken())
    with pytest.raises(StoreFormatError, match=r"s\.h5: recording 1 \('r1'\): cannot read events/x\[100:200\]"):
        s.events(1)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
        out["attrs"] = np.array(sorted((k, str(v)) for k, v in f.attrs.items() if k != "store_id"))
    return out


def test_streamed_add_writes_the_same_store_as_whole_recordings(tmp_path: Path, rng: np.random.Generator) -> None:
    """Chunks of any size (empty ones too, gaps of many ms) give the store a whole-recording add gives (issue 14)."""
    evs = [make_events(rng, 3000, span=200_000), Events.empty(H, W), make_events(rng, 1), make_events(rng, 700)]
    gap = make_events(rng, 50, t0=5_000_000, span=1000)  # a 5 s gap inside a recording
    evs.append(Events.concatenate([evs[3], gap]))
    whole, streamed = tmp_path / "whole.h5", tmp_path / "streamed.h5"
    with StoreWriter(whole, chunk_events=256) as w:
        for k, ev in enumerate(evs):
            w.add(ev, name=f"r{k}", label=k, embedding=np.full(3, k, np.float32))
    with StoreWriter(streamed, chunk_events=256) as w:
        for k, ev in enumerate(evs):
            cuts = np.sort(rng.integers(0, len(ev) + 1, 6)) if len(ev) else np.zeros(0, int)
            bounds = [0, *cuts.tolist(), len(ev)]
            chunks = (ev[a:b] for a, b in itertools.pairwise(bounds))  # includes empty chunks
            w.add(chunks, name=f"r{k}", label=k, embedding=np.full(3, k, np.float32))
    a, b = _datasets(whole), _datasets(streamed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    from evssl.events.slicing import ms_index

    for k, ev in enumerate(evs):
        o, c = int(b["recordings/ms_offset"][k]), int(b["recordings/ms_count"][k])
        np.testing.assert_array_equal(b["ms_to_idx"][o : o + c], ms_index(ev.t))
        assert_events_equal(EventStore(streamed).events(k), ev)


def test_failed_stream_rolls_back_and_the_writer_stays_usable(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.h5"
    ev = make_events(rng, 5000)

    def broken():
        yield ev[:3000]
        raise EventFormatError("file.raw", "t", "truncated", 3000)

    with StoreWriter(path, chunk_events=256) as w:
        w.add(ev[:100], name="a")
        with pytest.raises(EventFormatError, match="truncated"):
            w.add(broken(), name="b")
        w.add(ev, name="c")
    s = EventStore(path)
    assert s.names.tolist() == ["a", "c"]
    assert_events_equal(s.events(1), ev)
    assert s.index_at(1, int(ev.t[2500])) == int(np.searchsorted(ev.t, ev.t[2500]))


def test_index_memory_is_bounded_and_implausible_spans_refused(tmp_path: Path, monkeypatch) -> None:
    """Issue 13 §3: the ms index of a long span is built in bounded pieces; a span beyond the limit is refused."""
    import tracemalloc

    import evssl.events.io.store as store_mod

    two = Events.from_arrays([1, 2], [3, 4], [0, 10**11], [0, 1], H, W, polarity="01")  # 1e11 µs = 27.8 h
    with pytest.raises(
        EventFormatError, match=r"field 't' at index 1: timestamp 100000000000 lies .*27\.8 h.*24 h limit"
    ):
        with StoreWriter(tmp_path / "x.h5") as w:
            w.add(two, name="late")
    assert not (tmp_path / "x.h5").exists()
    # 4e9 µs span: a dense index of 4M entries (32 MB) if built at once; pieces of 64 Ki entries keep it small
    monkeypatch.setattr(store_mod, "_MS_PIECE", 1 << 16)
    ev = Events.from_arrays([1, 2, 3], [3, 4, 5], [0, 7, 4 * 10**9], [0, 1, 1], H, W, polarity="01")
    tracemalloc.start()
    with StoreWriter(tmp_path / "long.h5", max_span_us=None) as w:
        w.add(ev, name="long")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak
    s = EventStore(tmp_path / "long.h5")
    assert s.window(0, 0, 10).t.tolist() == [0, 7] and s.window(0, 10, 4 * 10**9 + 1).t.tolist() == [4 * 10**9]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    path = tmp_path / "s.h5"
    stale = tmp_path / f"s.h5.tmp-{proc.pid}"
    stale.write_bytes(b"half a store")
    alive = tmp_path / f"s.h5.tmp-{os.getppid()}"
    alive.write_bytes(b"another writer")
    with StoreWriter(path) as w:
        assert w.removed_stale == [stale] and w.active_writers == [alive]
        w.add(Events.empty(H, W), name="e")
    assert not stale.exists() and alive.exists()


def test_write_failure_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, rng: np.random.Generator, monkeypatch
) -> None:
    """A full disk (mocked: a dataset write raising ENOSPC) gives StoreWriteError naming the store."""
    import errno

    from evssl.events.io.store import StoreWriteError

    path = tmp_path / "s.h5"

    def full(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    w = StoreWriter(path, chunk_events=64)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(StoreWriteError, match=r"s\.h5: cannot write the store: the disk is full"):
        w.add(make_events(rng, 1000), name="a")
    monkeypatch.undo()
    assert not path.exists() and not list(tmp_path.iterdir())


def test_check_class_lists_names_the_first_difference() -> None:
    from evssl.events.io.store import check_class_lists

    check_class_lists({"train.h5": ["a", "b"], "val.h5": ["a", "b"], "unlabelled.h5": []})
    with pytest.raises(ValueError, match=r"test\.h5 has class 'digit_7' at index 1 where train\.h5 has 'digit_2'"):
        check_class_lists({"train.h5": ["digit_0", "digit_2", "digit_7"], "test.h5": ["digit_0", "digit_7"]})
    with pytest.raises(ValueError, match=r"--classes-from train\.h5"):
        check_class_lists([("train.h5", ["a"]), ("test.h5", ["a", "b"])])
