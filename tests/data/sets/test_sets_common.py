"""Shared converter pieces: PNG codec, seeded splits, long recordings written in parts, the registry and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evssl.data.sets import DATASETS, convert_dataset
from evssl.data.sets._common import (
    DatasetError,
    Timed,
    evenly_spaced,
    read_png,
    stratified_split,
    write_long_recording,
    write_png,
)
from evssl.events.io.store import EventStore, StoreWriter
from evssl.events.schema import Events


def test_png_roundtrip_8_and_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png", optimize=True)  # Pillow picks Sub/Up/Avg/Paeth filters per row
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), rgb)
    ramp = (np.add.outer(np.arange(40), np.arange(60)) % 256).astype(np.uint8)
    Image.fromarray(ramp).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), ramp)
    g16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read_png(tmp_path / "g16.png"), g16)
    rgb16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    write_png(tmp_path / "c16.png", rgb16)
    out = read_png(tmp_path / "c16.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, rgb16)
    # Pillow itself cannot keep 16-bit RGB (why evssl has its own decoder)
    assert np.asarray(Image.open(tmp_path / "c16.png")).dtype == np.uint8
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad\.png: not a PNG"):
        read_png(tmp_path / "bad.png")


def test_stratified_split_is_seeded_per_class():
    labels = np.repeat([0, 1, 2], [10, 20, 31])
    s = stratified_split(labels, (0.8, 0.1, 0.1), ("train", "val", "test"), seed=3)
    for c, n in ((0, 10), (1, 20), (2, 31)):
        got = s[labels == c]
        assert (got == "train").sum() == round(0.8 * n)
        assert (got == "val").sum() == round(0.9 * n) - round(0.8 * n)
    np.testing.assert_array_equal(s, stratified_split(labels, (0.8, 0.1, 0.1), ("train", "val", "test"), seed=3))
    assert (s != stratified_split(labels, (0.8, 0.1, 0.1), ("train", "val", "test"), seed=4)).any()
    # adding a class leaves the others' split unchanged
    s2 = stratified_split(np.concatenate([labels, [3] * 5]), (0.8, 0.1, 0.1), ("train", "val", "test"), seed=3)
    np.testing.assert_array_equal(s2[: len(labels)], s)
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, (0.5, 0.1), ("a", "b"), 0)


def test_evenly_spaced():
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced(list(range(3)), None) == [0, 1, 2]


def _chunks(n_chunks: int, per: int, step_us: int):
    for k in range(n_chunks):
        t = np.arange(per, dtype=np.int64) * (step_us // per) + k * step_us
        yield Events.from_arrays(np.zeros(per), np.zeros(per), t, np.ones(per), 4, 4)


def test_long_recording_parts_and_timed_items(tmp_path):
    loads = []

    def load(idx):
        loads.append(idx.tolist())
        return np.stack([np.full((4, 4), i, np.float32) for i in idx])

    depth_t = np.array([-5, 0, 1500, 2999, 3000, 9000, 20000], np.int64)
    with StoreWriter(tmp_path / "s.h5") as w:
        parts = write_long_recording(
            w, "seq", _chunks(6, 10, 1000), timed=[Timed("depth", depth_t, load, 64)], max_events=25, split="train"
        )
        single = write_long_recording(w, "short", _chunks(1, 5, 1000), max_events=25)
    assert [p.name for p in parts] == ["seq#part000", "seq#part001", "seq#part002"]
    assert [p.name for p in single] == ["short"]
    s = EventStore(tmp_path / "s.h5")
    assert [s.info(i).num_events for i in range(3)] == [25, 25, 10]
    np.testing.assert_array_equal(
        np.concatenate([s.events(i).t for i in range(3)]), np.concatenate([e.t for e in _chunks(6, 10, 1000)])
    )
    # part k owns [t_first(k), t_first(k+1)); first part takes earlier items, last part later ones
    t_first = [int(s.events(i).t[0]) for i in range(3)]
    assert t_first == [0, 2500, 5000]
    got = [s.dense_times(i).tolist() for i in range(3)]
    assert got == [[-5, 0, 1500], [2999, 3000], [9000, 20000]]
    np.testing.assert_array_equal(s.dense(1, "depth")[:, 0, 0], [3, 4])
    assert loads == [[0, 1, 2], [3, 4], [5, 6]]  # loaded lazily, per part
    assert set(s.splits[:3]) == {"train"}


def test_long_recording_byte_budget_cuts_parts(tmp_path):
    t = np.arange(0, 6000, 500, dtype=np.int64)  # two maps per 1000-µs chunk
    for budget, n_parts in ((2000, 6), (2500, 3)):
        with StoreWriter(tmp_path / "s.h5") as w:
            parts = write_long_recording(
                w,
                "seq",
                _chunks(6, 10, 1000),
                timed=[Timed("depth", t, lambda i: np.zeros((len(i), 4, 4), np.float32), 1000)],
                max_bytes=budget,
            )
        # one chunk: 10 events x 13 B + 2 maps x 1000 B = 2130 B; two chunks: 4260 B
        assert len(parts) == n_parts


def test_registry_rejects_unknown_names_and_options(tmp_path):
    assert {
        "ncars",
        "ncaltech101",
        "nimagenet",
        "dsec",
        "dsec_semantic",
        "dsec_flow",
        "mvsec",
        "ddd17",
        "tartanair",
    } <= set(DATASETS)
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        convert_dataset("nope", tmp_path, tmp_path / "o.h5")
    with pytest.raises(TypeError, match="takes no option 'bogus'"):
        convert_dataset("ncars", tmp_path, tmp_path / "o.h5", bogus=1)


def test_cli_dataset_errors_are_one_line(tmp_path, capsys):
    from evssl.events.convert import main_convert

    rc = main_convert(["--dataset", "ncars", str(tmp_path / "missing"), "--out", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err
    assert rc == 1 and "missing folder for split 'train'" in err and str(tmp_path / "missing") in err
    assert main_convert(["--dataset", "nope", str(tmp_path), "--out", str(tmp_path / "o.h5")]) == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err
    assert main_convert(["--dataset", "ncars", "a", "b", "--out", str(tmp_path / "o.h5")]) == 2
