"""evssl convert: labelled folders, list files, single files, failures (nothing written), append, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evssl.events import io as event_io
from evssl.events.convert import ConvertError, convert, convert_summary, main_convert
from evssl.events.io.store import EventStore
from evssl.events.schema import Events

H, W = 10, 12


def _write_npz(path: Path, seed: int, n: int = 50) -> Events:
    rng = np.random.default_rng(seed)
    ev = Events.from_arrays(
        rng.integers(0, W, n),
        rng.integers(0, H, n),
        np.sort(rng.integers(0, 10_000, n)),
        rng.integers(0, 2, n),
        H,
        W,
        polarity="01",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=ev.x, y=ev.y, t=ev.t, p=ev.p, size=[H, W])
    return ev


def _detect(path, **kw):
    if Path(path).suffix != ".npz":
        raise ValueError(f"{path}: unknown event format")
    return "npz"


def _read(path, format=None, **kw):
    _detect(path)
    with np.load(path) as z:
        if "broken" in z:
            raise ValueError("broken file")
        h, w = (int(v) for v in z["size"])
        return Events.from_arrays(z["x"], z["y"], z["t"], z["p"], h, w, source=str(path))


@pytest.fixture
def fake_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny .npz reader standing in for evssl.events.io.read_events (convert's logic is what is tested here)."""
    monkeypatch.setattr(event_io, "read_events", _read, raising=False)
    monkeypatch.setattr(event_io, "detect_format", _detect, raising=False)
    # convert streams through iter_events/probe_events when the readers provide them; the fake reads whole
    monkeypatch.delattr(event_io, "iter_events", raising=False)
    monkeypatch.delattr(event_io, "probe_events", raising=False)


def _assert_same(a: Events, b: Events) -> None:
    for f in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_labelled_folder(tmp_path: Path, fake_io: None) -> None:
    root = tmp_path / "data"
    evs = {
        "dog/c.npz": _write_npz(root / "dog/c.npz", 1),
        "cat/a.npz": _write_npz(root / "cat/a.npz", 2),
        "cat/sub/b.npz": _write_npz(root / "cat/sub/b.npz", 3),
    }
    (root / "cat/README.md").write_text("not events")
    (root / ".cache").mkdir()
    _write_npz(root / ".cache/hidden.npz", 4)
    with pytest.raises(ConvertError, match=r"1 of 4 input file\(s\).*\n.*README\.md: not a recognised event file"):
        convert([root], tmp_path / "out" / "store.h5", progress=False, split="train")
    out = convert([root], tmp_path / "out" / "store.h5", progress=False, split="train", skip_unreadable=True)
    s = EventStore(out)
    assert s.classes == ["cat", "dog"]
    assert s.names.tolist() == ["cat/a.npz", "cat/sub/b.npz", "dog/c.npz"]
    assert s.labels.tolist() == [0, 0, 1]
    assert s.splits.tolist() == ["train"] * 3
    assert s.attrs["skipped_files"] == 1 and s.attrs["skipped"][0][0] == str(root / "cat/README.md")
    for k, name in enumerate(s.names):
        _assert_same(s.events(k), evs[str(name)])
        assert s.info(k).source == str(root / name)


def test_two_folders_are_prefixed_and_flat_folder_unlabelled(tmp_path: Path, fake_io: None) -> None:
    _write_npz(tmp_path / "a/x.npz", 1)
    _write_npz(tmp_path / "b/x.npz", 2)
    s = EventStore(convert([tmp_path / "a", tmp_path / "b"], tmp_path / "s.h5", progress=False))
    assert s.names.tolist() == ["a/x.npz", "b/x.npz"] and s.labels.tolist() == [-1, -1] and s.classes == []


def test_list_file_and_cli(tmp_path: Path, fake_io: None, capsys: pytest.CaptureFixture) -> None:
    e1 = _write_npz(tmp_path / "rec/one.npz", 1)
    e2 = _write_npz(tmp_path / "rec/two.npz", 2)
    e3 = _write_npz(tmp_path / "rec/three.npz", 3)
    lst = tmp_path / "files.txt"
    lst.write_text("# path label\nrec/one.npz zebra\n\nrec/two.npz ant\nrec/three.npz zebra\n")
    out = tmp_path / "list.h5"
    assert main_convert(["--list", str(lst), "--out", str(out), "--no-progress", "--split", "val"]) == 0
    assert "3 recordings" in capsys.readouterr().out
    s = EventStore(out)
    assert s.classes == ["ant", "zebra"] and s.labels.tolist() == [1, 0, 1]
    assert s.names.tolist() == ["rec/one.npz", "rec/two.npz", "rec/three.npz"]
    assert s.splits.tolist() == ["val"] * 3
    for k, ev in enumerate((e1, e2, e3)):
        _assert_same(s.events(k), ev)
    # integer labels keep their value (class indices), named "0".."K-1" unless a class-names file is given
    lst.write_text(f"{tmp_path / 'rec/one.npz'} 7\nrec/two.npz 3\nrec/three.npz\n")
    s = EventStore(convert([], tmp_path / "ints.h5", list_file=lst, progress=False))
    assert s.labels.tolist() == [7, 3, -1] and s.classes == [str(k) for k in range(8)]
    lst.write_text("rec/missing.npz 1\n")
    with pytest.raises(ConvertError, match=r"files\.txt:1.*missing\.npz"):
        convert([], tmp_path / "bad.h5", list_file=lst, progress=False)


def test_single_files_with_labels_and_append(tmp_path: Path, fake_io: None) -> None:
    f1, f2, f3 = (tmp_path / f"{k}.npz" for k in range(3))
    for k, f in enumerate((f1, f2, f3)):
        _write_npz(f, k)
    out = tmp_path / "s.h5"
    convert([f1, f2], out, labels=["dog", "cat"], progress=False)
    s = EventStore(out)
    assert s.classes == ["cat", "dog"] and s.labels.tolist() == [1, 0]
    convert([f3], out, labels=["bird"], append=True, progress=False)
    s = EventStore(out)
    assert s.classes == ["cat", "dog", "bird"] and s.labels.tolist() == [1, 0, 2]  # existing indices kept
    assert s.names.tolist() == ["0.npz", "1.npz", "2.npz"]
    with pytest.raises(ConvertError, match="2 labels for 1 files"):
        convert([f1], tmp_path / "x.h5", labels=[0, 1], progress=False)


def test_failing_file_names_it_and_writes_nothing(tmp_path: Path, fake_io: None) -> None:
    root = tmp_path / "data"
    _write_npz(root / "a/good.npz", 1)
    (root / "b").mkdir()
    np.savez(root / "b" / "bad.npz", broken=[1])
    out = tmp_path / "s.h5"
    with pytest.raises(ConvertError, match=r"b/bad\.npz.*broken file"):
        convert([root], out, progress=False)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # an existing store is left untouched, also when appending
    convert([root / "a"], out, progress=False)
    before = out.read_bytes()
    for append in (False, True):
        with pytest.raises(ConvertError, match=r"bad\.npz"):
            convert([root], out, progress=False, append=append, overwrite=not append)
        assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "s.h5"]
    with pytest.raises(ConvertError, match=r"nope\.npz"):
        convert([tmp_path / "nope.npz"], tmp_path / "n.h5", progress=False)
    with pytest.raises(ConvertError, match="no input recordings"):
        convert([], tmp_path / "n.h5", progress=False)


def test_real_reader_bin40(tmp_path: Path) -> None:
    """With the real readers: N-MNIST-style 40-bit .bin files in a labelled folder."""
    if not hasattr(event_io, "read_events"):
        pytest.skip("evssl.events.io.read_events not available yet")
    root = tmp_path / "nmnist"
    want = {}
    for cls, seed in (("0", 1), ("1", 2)):
        rng = np.random.default_rng(seed)
        n = 40
        x, y = rng.integers(0, 34, n), rng.integers(0, 34, n)
        t, p = np.sort(rng.integers(0, 1 << 20, n)), rng.integers(0, 2, n)
        rec = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
        (root / cls).mkdir(parents=True)
        (root / cls / "00001.bin").write_bytes(rec.tobytes())
        want[cls] = (x, y, t, p * 2 - 1)
    s = EventStore(convert([root], tmp_path / "n.h5", progress=False))
    assert s.classes == ["0", "1"] and s.labels.tolist() == [0, 1]
    for k, cls in enumerate(("0", "1")):
        ev = s.events(k)
        assert (ev.height, ev.width) == (34, 34)
        for col, ref in zip((ev.x, ev.y, ev.t, ev.p), want[cls]):
            np.testing.assert_array_equal(col, ref)


# ------------------------------------------------------------------------------------------- paired embeddings
def test_embeddings_pair_by_file_stem_from_npz_pt_and_folder(tmp_path: Path, fake_io: None) -> None:
    import torch

    for k, name in enumerate(("n01_1", "n01_2", "n02_7")):
        _write_npz(tmp_path / "ev" / name[:3] / f"{name}.npz", seed=k)
    vec = {name: np.arange(4, dtype=np.float32) + 10 * k for k, name in enumerate(("n01_1", "n01_2", "n02_7"))}
    # ECDP's extract_clip_feature.py layout: one .pt dict per class folder, keys = image file names
    (tmp_path / "emb" / "n01").mkdir(parents=True)
    torch.save({f"{k}.JPEG": torch.from_numpy(vec[k])[None] for k in ("n01_1", "n01_2")}, tmp_path / "emb/n01/f.pt")
    np.savez(tmp_path / "emb" / "n02.npz", n02_7=vec["n02_7"])
    out = convert([tmp_path / "ev"], tmp_path / "s.h5", progress=False, embeddings=tmp_path / "emb")
    with EventStore(out) as s:
        for i in range(len(s)):
            stem = Path(s.info(i).name).stem
            np.testing.assert_array_equal(s.embedding(i), vec[stem])
    # the CLI flag does the same
    assert main_convert([str(tmp_path / "ev"), "-o", str(tmp_path / "c.h5"), "--embeddings", str(tmp_path / "emb"),
                         "--no-progress"]) == 0  # fmt: skip
    with EventStore(tmp_path / "c.h5") as s:
        assert all(s.info(i).has_embedding for i in range(len(s)))


def test_missing_or_inconsistent_embeddings_name_the_file_and_write_nothing(tmp_path: Path, fake_io: None) -> None:
    from evssl.events.convert import load_embeddings

    _write_npz(tmp_path / "ev" / "a.npz", seed=0)
    _write_npz(tmp_path / "ev" / "b.npz", seed=1)
    np.savez(tmp_path / "emb.npz", a=np.ones(4, np.float32))
    out = tmp_path / "s.h5"
    with pytest.raises(ConvertError, match=r"b\.npz: no embedding for file stem 'b'.*1 of 2"):
        convert([tmp_path / "ev"], out, progress=False, embeddings=tmp_path / "emb.npz")
    assert not out.exists()
    np.savez(tmp_path / "bad.npz", a=np.ones(4, np.float32), b=np.ones(5, np.float32))
    with pytest.raises(ConvertError, match=r"bad\.npz: embedding 'b' has length 5"):
        load_embeddings(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", a=np.array([1.0, np.nan], np.float32))
    with pytest.raises(ConvertError, match=r"nan\.npz: embedding 'a' has non-finite"):
        load_embeddings(tmp_path / "nan.npz")
    (tmp_path / "dup").mkdir()
    np.savez(tmp_path / "dup" / "1.npz", a=np.ones(2, np.float32))
    np.savez(tmp_path / "dup" / "2.npz", **{"a.jpg": np.ones(2, np.float32)})
    with pytest.raises(ConvertError, match=r"2\.npz: embedding for stem 'a' is also defined in .*1\.npz"):
        load_embeddings(tmp_path / "dup")


# ------------------------------------------------------------------------------------------- reliability (issue 13)
def _store(path: Path, n_rec: int = 3, classes=("cat", "dog")) -> list[Events]:
    from evssl.events.io.store import StoreWriter

    evs = []
    with StoreWriter(path) as w:
        w.set_classes(list(classes))
        for k in range(n_rec):
            rng = np.random.default_rng(k)
            ev = Events.from_arrays(rng.integers(0, W, 40), rng.integers(0, H, 40), np.sort(rng.integers(0, 5000, 40)),
                                    rng.integers(0, 2, 40), H, W, polarity="01")  # fmt: skip
            w.add(ev, name=f"rec{k}", label=k % 2, split="train" if k else "val", embedding=np.full(2, k, np.float32))
            evs.append(ev)
    return evs


def test_store_input_contributes_every_recording_and_out_may_not_be_an_input(tmp_path: Path) -> None:
    src = tmp_path / "s.h5"
    evs = _store(src)
    out = convert([src], tmp_path / "copy.h5", progress=False)
    s = EventStore(out)
    assert s.names.tolist() == ["rec0", "rec1", "rec2"] and s.classes == ["cat", "dog"]
    assert s.labels.tolist() == [0, 1, 0] and s.splits.tolist() == ["val", "train", "train"]
    for k, ev in enumerate(evs):
        _assert_same(s.events(k), ev)
        np.testing.assert_array_equal(s.embedding(k), np.full(2, k, np.float32))
    before = src.read_bytes()
    for kw in ({"overwrite": True}, {"append": True}):
        with pytest.raises(ConvertError, match=r"s\.h5: the output is also an input"):
            convert([src], src, progress=False, **kw)
    assert src.read_bytes() == before and len(EventStore(src)) == 3


def test_unreadable_files_fail_the_conversion_naming_every_one(tmp_path: Path, fake_io: None) -> None:
    root = tmp_path / "data"
    _write_npz(root / "a/good.npz", 1)
    for name in ("b/bad1.npz", "b/bad2.npz"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / name, broken=[1])
    out = tmp_path / "s.h5"
    with pytest.raises(ConvertError, match=r"2 of 3 input file\(s\)") as err:
        convert([root], out, progress=False)
    assert "bad1.npz: broken file" in str(err.value) and "bad2.npz: broken file" in str(err.value)
    assert not out.exists()
    summary = convert_summary([root], out, progress=False, skip_unreadable=True)
    assert summary.recordings == 1 and [Path(p).name for p, _ in summary.skipped] == ["bad1.npz", "bad2.npz"]
    assert "skipped 2 unreadable file(s)" in summary.lines()[0]
    assert EventStore(out).names.tolist() == ["a/good.npz"]


def test_empty_recordings_are_refused_unless_allowed(tmp_path: Path, fake_io: None) -> None:
    _write_npz(tmp_path / "ev/full.npz", 1)
    _write_npz(tmp_path / "ev/empty.npz", 2, n=0)
    with pytest.raises(ConvertError, match=r"empty\.npz: 0 events .*--allow-empty"):
        convert([tmp_path / "ev"], tmp_path / "s.h5", progress=False)
    s = EventStore(convert([tmp_path / "ev"], tmp_path / "s.h5", progress=False, allow_empty=True))
    assert s.num_events.tolist() == [0, 50]


def test_existing_out_needs_force_and_append_refuses_present_names(tmp_path: Path, fake_io: None) -> None:
    f = tmp_path / "a.npz"
    _write_npz(f, 1)
    out = tmp_path / "s.h5"
    convert([f], out, progress=False)
    with pytest.raises(ConvertError, match=r"s\.h5 already exists; pass --force .* or --append"):
        convert([f], out, progress=False)
    convert([f], out, progress=False, overwrite=True)
    with pytest.raises(ConvertError, match=r"recording 'a\.npz' .* is already in the store"):
        convert([f], out, progress=False, append=True)
    assert len(EventStore(out)) == 1


def test_label_rule_errors_name_the_line(tmp_path: Path, fake_io: None) -> None:
    for name in ("a", "b", "my file"):
        _write_npz(tmp_path / f"{name}.npz", 1)
    lst = tmp_path / "files.txt"
    bad = {
        "a.npz 0\nb.npz dog\n": r"files\.txt:2 \(b\.npz\): label 'dog' mixes with .*files\.txt:1 \(a\.npz\): label 0",
        "a.npz 1\nb.npz -7\n": r"files\.txt:2: label -7 is negative",
        "a.npz 1.5\n": r"files\.txt:1: label '1\.5' is a number but not an integer",
    }
    for text, message in bad.items():
        lst.write_text(text)
        with pytest.raises(ConvertError, match=message):
            convert([], tmp_path / "x.h5", list_file=lst, progress=False)
    # paths with spaces: unlabelled as a whole line, tab-separated or quoted with a label
    lst.write_text("my file.npz\n")
    assert EventStore(convert([], tmp_path / "x.h5", list_file=lst, progress=False)).names.tolist() == ["my file.npz"]
    lst.write_text('my file.npz\tdog\n"my file.npz" cat\n')
    s = EventStore(convert([], tmp_path / "y.h5", list_file=lst, progress=False))
    assert s.classes == ["cat", "dog"] and s.labels.tolist() == [1, 0]
    # integer labels with a class-names file
    names = tmp_path / "classes.txt"
    names.write_text("zero\none\n")
    lst.write_text("a.npz 1\nb.npz 0\n")
    s = EventStore(convert([], tmp_path / "z.h5", list_file=lst, classes=names, progress=False))
    assert s.classes == ["zero", "one"] and s.labels.tolist() == [1, 0]
    lst.write_text("a.npz 2\n")
    with pytest.raises(ConvertError, match=r"files\.txt:1 \(a\.npz\): class index 2 is out of range for the 2 classes"):
        convert([], tmp_path / "w.h5", list_file=lst, classes=names, progress=False)


def test_classes_from_keeps_indices_stable_across_stores(tmp_path: Path, fake_io: None) -> None:
    """Issue 18 §5: a test folder lacking a class keeps the train store's indices."""
    for cls in ("digit_0", "digit_2", "digit_7"):
        _write_npz(tmp_path / "train" / cls / "x.npz", 1)
    for cls in ("digit_0", "digit_7"):
        _write_npz(tmp_path / "test" / cls / "x.npz", 2)
    train = convert([tmp_path / "train"], tmp_path / "train.h5", progress=False)
    plain = EventStore(convert([tmp_path / "test"], tmp_path / "plain.h5", progress=False))
    assert plain.labels.tolist() == [0, 1]  # digit_7 would become index 1: the silent shift
    test = EventStore(convert([tmp_path / "test"], tmp_path / "test.h5", classes=train, progress=False))
    assert test.classes == ["digit_0", "digit_2", "digit_7"] and test.labels.tolist() == [0, 2]
    _write_npz(tmp_path / "other" / "digit_9" / "x.npz", 3)
    with pytest.raises(ConvertError, match=r"class 'digit_9' is not in .*train\.h5"):
        convert([tmp_path / "other"], tmp_path / "o.h5", classes=train, progress=False)


def test_list_file_without_list_flag_is_detected(tmp_path: Path, fake_io: None, capsys) -> None:
    _write_npz(tmp_path / "rec/one.npz", 1)
    lst = tmp_path / "list.txt"
    lst.write_text("rec/one.npz cat\n")
    assert main_convert([str(lst), "--out", str(tmp_path / "s.h5"), "--no-progress"]) == 0
    assert "reading" in capsys.readouterr().err and EventStore(tmp_path / "s.h5").classes == ["cat"]


def test_summary_says_larger_when_the_store_is_larger() -> None:
    from evssl.events.convert import size_line

    assert size_line(1300, 100) == ", 13.0x smaller than raw columns"
    assert size_line(13, 65).startswith(", 5.0x larger than raw columns")


def test_streamed_convert_equals_a_whole_file_conversion(tmp_path: Path, fake_io: None) -> None:
    """Issue 14: chunked reading (any chunk size) writes the store a whole-file read writes, dataset by dataset."""
    import h5py

    from evssl.events.io.store import StoreWriter

    for k in range(3):
        _write_npz(tmp_path / "ev" / f"{k}.npz", k, n=500 + 300 * k)
    whole = tmp_path / "whole.h5"
    with StoreWriter(whole) as w:  # today's conversion: one read_events per file, one add
        for k in range(3):
            p = tmp_path / "ev" / f"{k}.npz"
            w.add(_read(p), name=f"{k}.npz", label=-1, source=str(p), split="")
        w.set_attrs(converted_with="evssl convert", skipped_files=0, skipped=[])
    streamed = convert([tmp_path / "ev"], tmp_path / "streamed.h5", progress=False, chunk_read=97)

    def datasets(path: Path) -> dict:
        out = {}
        with h5py.File(path, "r", locking=False) as f:
            f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
            out["attrs"] = {k: str(v) for k, v in f.attrs.items() if k != "store_id"}
        return out

    a, b = datasets(whole), datasets(streamed)
    assert a.keys() == b.keys() and a.pop("attrs") == b.pop("attrs")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_sensor_size_turns_out_of_range_events_into_errors(tmp_path: Path) -> None:
    """Issue 13 §4 with the real bin40 reader: --sensor-size H W is passed to the reader."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 34, 40), rng.integers(0, 34, 40)
    x[7] = 33
    t, p = np.sort(rng.integers(0, 1 << 20, 40)), rng.integers(0, 2, 40)
    rec = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    f = tmp_path / "00001.bin"
    f.write_bytes(rec.tobytes())
    with pytest.raises(
        ConvertError, match=r"00001\.bin: field 'x' at index \d+: value \d+ outside sensor range \[0, 20\)"
    ):
        convert([f], tmp_path / "s.h5", progress=False, sensor_size=(20, 20))
    s = EventStore(convert([f], tmp_path / "s.h5", progress=False, sensor_size=(40, 40)))
    assert s.info(0).sensor_size == (40, 40)
    with pytest.raises(SystemExit) as e:
        main_convert([str(f), "-o", str(tmp_path / "t.h5"), "--sensor-size", "100000", "2"])
    assert e.value.code == 2


def test_real_readers_empty_files_and_inferred_sizes(tmp_path: Path) -> None:
    """Header-only files are refused unless --allow-empty; sizes guessed from the events are reported."""
    if not hasattr(event_io, "iter_events"):
        pytest.skip("evssl.events.io.iter_events not available yet")
    (tmp_path / "header_only.raw").write_bytes(b"% evt 2.0\n% end\n")
    with pytest.raises(ConvertError, match=r"header_only\.raw: .*no events.*--allow-empty"):
        convert([tmp_path / "header_only.raw"], tmp_path / "s.h5", progress=False)
    s = convert_summary([tmp_path / "header_only.raw"], tmp_path / "s.h5", progress=False, allow_empty=True)
    assert s.recordings == 1 and EventStore(tmp_path / "s.h5").num_events.tolist() == [0]
    rng = np.random.default_rng(0)
    x, y, t, p = (
        rng.integers(0, 30, 40),
        rng.integers(0, 30, 40),
        np.sort(rng.integers(0, 1 << 20, 40)),
        rng.integers(0, 2, 40),
    )
    rec = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    (tmp_path / "a.bin").write_bytes(rec.tobytes())
    s = convert_summary([tmp_path / "a.bin"], tmp_path / "b.h5", progress=False)
    assert s.inferred == [("a.bin", (34, 34))] and "34x34 for 1 (e.g. a.bin)" in s.lines()[0]
    assert convert_summary([tmp_path / "a.bin"], tmp_path / "c.h5", progress=False, sensor_size=(34, 34)).inferred == []
