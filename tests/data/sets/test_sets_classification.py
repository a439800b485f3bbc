"""N-Cars, N-Caltech101 and N-ImageNet converters: fixtures in the documented layouts, and the real samples."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sets_fixtures import REAL_DATA, REAL_DATA_LABELLED, random_events, write_bin40, write_dat, write_nimagenet_npz

from evssl.data.sets import convert_dataset
from evssl.data.sets._common import DatasetError
from evssl.events.convert import main_convert
from evssl.events.io.store import EventStore


# ------------------------------------------------------------------------------------------------ N-Cars
def _ncars_tree(root, rng, per=3):
    truth = {}
    for split in ("train", "test"):
        for cls in ("cars", "background"):
            for k in range(per):
                ev = random_events(rng, 50 + k, 100, 120)
                rel = f"n-cars_{split}/{cls}/obj_{k:06d}_td.dat"  # names repeat across classes and splits
                write_dat(root / rel, *ev)
                truth[rel] = ev
    return truth


def test_ncars_fixture(tmp_path):
    truth = _ncars_tree(tmp_path / "ncars", np.random.default_rng(0))
    s = EventStore(convert_dataset("ncars", tmp_path / "ncars", tmp_path / "o.h5"))
    assert s.classes == ["background", "car"]
    assert len(s) == 12 and sorted(set(s.splits)) == ["test", "train"]
    for i, name in enumerate(s.names):
        x, _y, t, p = truth[name]
        ev = s.events(i)
        np.testing.assert_array_equal(ev.x, x)
        np.testing.assert_array_equal(ev.t, t)
        np.testing.assert_array_equal(ev.p, 2 * p - 1)
        assert s.labels[i] == (1 if "/cars/" in name else 0)
        assert s.info(i).sensor_size == (100, 120)
    few = EventStore(
        convert_dataset("ncars", tmp_path / "ncars", tmp_path / "few.h5", max_per_class=2, splits=("test",))
    )
    assert len(few) == 4 and set(few.splits) == {"test"}
    assert [n.rsplit("/", 1)[1] for n in few.names[:2]] == ["obj_000000_td.dat", "obj_000002_td.dat"]  # evenly spread


def test_ncars_missing_class_folder_names_it(tmp_path):
    write_dat(tmp_path / "r/train/cars/obj_0_td.dat", *random_events(np.random.default_rng(0), 5, 100, 120))
    with pytest.raises(DatasetError, match=r"train: missing class folder background/"):
        convert_dataset("ncars", tmp_path / "r", tmp_path / "o.h5", splits=("train",))
    assert not (tmp_path / "o.h5").exists()


def _ncars_real():
    root = REAL_DATA_LABELLED / "ncars-subset"
    if not (root / "DECODE_STATS.tsv").is_file():
        pytest.skip(f"{root} not found (set EVSSL_REAL_DATA_LABELLED to shared/real-data-labelled)")
    with open(root / "DECODE_STATS.tsv") as f:
        stats = {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}
    labels = dict(line.split() for line in (root / "labels.txt").read_text().splitlines() if line.strip())
    return root, stats, labels


def _check_real_ncars(s: EventStore, stats, labels) -> None:
    for i, name in enumerate(s.names):
        ev, st = s.events(i), stats[name]
        assert len(ev) == int(st["n_events"])
        assert (int(ev.t[0]), int(ev.t[-1])) == (int(st["t_first_us"]), int(st["t_last_us"]))
        assert (int(ev.x.max()), int(ev.y.max())) == (int(st["x_max"]), int(st["y_max"]))
        assert s.labels[i] == int(labels[name])
        assert s.splits[i] == name.split("/")[0]


def test_real_ncars_twenty_files(tmp_path):
    root, stats, labels = _ncars_real()
    rc = main_convert(
        ["--dataset", "ncars", str(root), "--out", str(tmp_path / "n.h5"), "--max-per-class", "5", "--no-progress"]
    )
    assert rc == 0
    s = EventStore(tmp_path / "n.h5")
    assert len(s) == 20 and np.bincount(s.labels).tolist() == [10, 10]
    _check_real_ncars(s, stats, labels)


@pytest.mark.slow
def test_real_ncars_all_2000(tmp_path):
    root, stats, labels = _ncars_real()
    s = EventStore(convert_dataset("ncars", root, tmp_path / "n.h5"))
    assert len(s) == 2000
    assert {sp: int((s.splits == sp).sum()) for sp in ("train", "test")} == {"train": 1000, "test": 1000}
    _check_real_ncars(s, stats, labels)


# ------------------------------------------------------------------------------------------------ N-Caltech101
def test_ncaltech101_fixture_split_and_background(tmp_path):
    rng = np.random.default_rng(1)
    truth = {}
    for cls, n in (("accordion", 10), ("BACKGROUND_Google", 4), ("airplanes", 20)):
        for k in range(n):
            ev = random_events(rng, 30, 180, 240, t1=300_000)
            write_bin40(tmp_path / "Caltech101" / cls / f"image_{k + 1:04d}.bin", *ev)
            truth[f"{cls}/image_{k + 1:04d}.bin"] = ev
    s = EventStore(convert_dataset("ncaltech101", tmp_path, tmp_path / "o.h5", seed=5))
    assert s.classes == ["accordion", "airplanes"]  # sorted, background left out
    assert len(s) == 30
    for i, name in enumerate(s.names):
        _x, y, t, _p = truth[name]
        np.testing.assert_array_equal(s.events(i).y, y)
        np.testing.assert_array_equal(s.events(i).t, t)
    for c, n in ((0, 10), (1, 20)):
        sp = s.splits[s.labels == c]
        assert [(sp == k).sum() for k in ("train", "val", "test")] == [
            round(0.8 * n),
            round(0.9 * n) - round(0.8 * n),
            n - round(0.9 * n),
        ]
    again = EventStore(convert_dataset("ncaltech101", tmp_path, tmp_path / "o2.h5", seed=5))
    np.testing.assert_array_equal(again.splits, s.splits)
    bg = EventStore(convert_dataset("ncaltech101", tmp_path, tmp_path / "o3.h5", include_background=True))
    assert bg.classes == ["BACKGROUND_Google", "accordion", "airplanes"]


def test_real_ncaltech101_samples(tmp_path):
    src = REAL_DATA / "EventsTools-NCaltech101"
    if not src.is_dir():
        pytest.skip(f"{src} not found (set EVSSL_REAL_DATA to shared/real-data)")
    for f, cls in (
        ("Helicopter.bin", "helicopter"),
        ("car.bin", "car_side"),
        ("chair.bin", "chair"),
        ("umbrella.bin", "umbrella"),
    ):
        (tmp_path / "root" / cls).mkdir(parents=True)
        (tmp_path / "root" / cls / "image_0001.bin").symlink_to(src / f)  # a layout, never a copy
    s = EventStore(convert_dataset("ncaltech101", tmp_path / "root", tmp_path / "o.h5", fractions=(1.0,)))
    assert s.classes == ["car_side", "chair", "helicopter", "umbrella"]
    for i in range(len(s)):
        ev = s.events(i)
        assert len(ev) > 1000 and ev.sensor_size == (180, 240)
        assert (np.diff(ev.t) >= 0).all() and set(np.unique(ev.p)) == {-1, 1}


# ------------------------------------------------------------------------------------------------ N-ImageNet
def test_nimagenet_fixture_class_index_and_mini(tmp_path):
    rng = np.random.default_rng(2)
    wnids = ["n01530575", "n01440764", "n02102040"]  # unsorted on purpose
    truth = {}
    for split, folder in (("train", "extracted_train"), ("val", "extracted_val")):
        for w in wnids:
            for k in range(2):
                ev = random_events(rng, 40, 480, 640, t1=50_000)
                name = f"{folder}/{w}/{w}_{k}.npz" if split == "train" else f"{folder}/{w}/ILSVRC2012_val_{k:08d}.npz"
                write_nimagenet_npz(tmp_path / name, *ev, compressed=(k == 0))
                truth[name] = (ev, w)
    s = EventStore(convert_dataset("nimagenet", tmp_path, tmp_path / "o.h5"))
    assert s.classes == sorted(wnids)  # official: sorted wnids, label = index of the parent folder's wnid
    assert len(s) == 12
    for i, name in enumerate(s.names):
        (x, _y, t, p), w = truth[name]
        ev = s.events(i)
        assert s.labels[i] == sorted(wnids).index(w)
        assert s.splits[i] == ("train" if name.startswith("extracted_train") else "val")
        np.testing.assert_array_equal(ev.x, x)
        np.testing.assert_array_equal(ev.t, t)  # integer µs kept
        np.testing.assert_array_equal(ev.p, 2 * p - 1)  # bool polarity -> -1/+1
        assert ev.sensor_size == (480, 640)
    mini = EventStore(convert_dataset("nimagenet", tmp_path, tmp_path / "m.h5", num_classes=2, max_per_class=1))
    assert mini.classes == sorted(wnids)[:2] and len(mini) == 4
    (tmp_path / "label_map.txt").write_text("".join(f"{k} {w} name\n" for k, w in enumerate(wnids)))
    lm = EventStore(convert_dataset("nimagenet", tmp_path, tmp_path / "l.h5", label_map=tmp_path / "label_map.txt"))
    assert lm.classes == sorted(wnids)
    # a validation variant folder under the same class index
    import shutil

    shutil.copytree(tmp_path / "extracted_val", tmp_path / "extracted_val_variant")
    var = EventStore(convert_dataset("nimagenet", tmp_path, tmp_path / "v.h5", val_folder="extracted_val_variant"))
    assert sum(n.startswith("extracted_val_variant/") for n in var.names) == 6 and var.classes == sorted(wnids)


def test_nimagenet_missing_key_names_file_and_key(tmp_path):
    p = tmp_path / "extracted_train" / "n01440764" / "n01440764_0.npz"
    p.parent.mkdir(parents=True)
    np.savez(p, x_pos=np.zeros(3, np.uint16), y_pos=np.zeros(3, np.uint16), polarity=np.ones(3, bool))
    with pytest.raises(DatasetError, match=r"n01440764_0.npz.*'t'"):
        convert_dataset("nimagenet", tmp_path, tmp_path / "o.h5", splits=("train",))
