"""EventDataModule sources (issue 18 §2-3): train/val/test from different stores, lists of stores, the automatic
validation split of a train-only store, ``labels: ignore``, and the CLI path ``evssl test --data.init_args.test``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from evssl.data.datamodules import EventDataModule
from evssl.data.sources import ConcatStoreDataset, DropLabels, StoreSource, auto_val_split, parse_sources
from evssl.events.io.store import EventStore, StoreWriter
from evssl.events.schema import Events

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def _store(path: Path, n: int, split: str | list[str], classes=("background", "car"), seed: int = 0) -> Path:
    """A tiny labelled store (16x16 sensor, 200 events per 60 ms recording); label k % len(classes)."""
    rng = np.random.default_rng(seed)
    splits = [split] * n if isinstance(split, str) else split
    with StoreWriter(path) as w:
        w.set_classes(list(classes))
        for k in range(n):
            t = np.sort(rng.integers(0, 60_000, 200))
            label = k % len(classes)
            x = rng.integers(0, 8, 200) + 8 * label  # class = which half of the sensor fires
            ev = Events.from_arrays(x, rng.integers(0, 16, 200), t, rng.choice([-1, 1], 200), 16, 16)
            w.add(ev, name=f"r{k:03d}", label=label, split=splits[k])
    return path


def _dm(**kw) -> EventDataModule:
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_workers", 0)
    return EventDataModule(**kw)


def test_parse_sources():
    assert parse_sources(None) == []
    assert parse_sources("a.h5") == [StoreSource(Path("a.h5"), None)]
    assert parse_sources("data/a.h5:test") == [StoreSource(Path("data/a.h5"), "test")]
    assert parse_sources(["a.h5:train", "b.h5"]) == [StoreSource(Path("a.h5"), "train"), StoreSource(Path("b.h5"))]


def test_auto_val_split_is_stratified_and_seeded():
    labels = np.repeat([0, 1, -1], [50, 30, 3])
    held = auto_val_split(labels, 0.1, seed=0)
    assert [held[labels == c].sum() for c in (0, 1, -1)] == [5, 3, 1]
    np.testing.assert_array_equal(held, auto_val_split(labels, 0.1, seed=0))
    assert (held != auto_val_split(labels, 0.1, seed=1)).any()
    assert not auto_val_split(labels, 0.0, seed=0).any()


def test_train_only_store_gets_a_logged_automatic_validation_split(tmp_path, capsys):
    path = _store(tmp_path / "train.h5", 40, "train")
    dm = _dm(source=str(path))
    dm.setup("fit")
    tr, va = dm.datasets["train"].indices, dm.datasets["val"].indices
    assert len(va) == 4 and len(tr) == 36 and not set(tr) & set(va)  # 10 %, held out of training
    assert np.bincount(EventStore(path).labels[va]).tolist() == [2, 2]  # stratified
    np.testing.assert_array_equal(dm.split_indices("val"), va)
    text = dm.describe()
    assert "automatic 0.1 of split 'train'" in text and "held out of training" in text and "seed 0" in text
    assert "labels: use" in text and "2 classes: background, car" in text
    # the same through explicit sources
    dm2 = _dm(train=str(path))
    dm2.setup("fit")
    np.testing.assert_array_equal(np.sort(dm2.datasets["val"].indices), np.sort(va))
    assert next(iter(dm2.val_dataloader()))["label"].shape == (4,)
    # no validation at all
    dm3 = _dm(train=str(path), val_fraction=0.0)
    dm3.setup("fit")
    assert "val" not in dm3.datasets and len(dm3.datasets["train"]) == 40 and dm3.val_dataloader() == []


def test_train_and_test_from_different_stores_and_lists(tmp_path):
    a = _store(tmp_path / "a.h5", 20, "train")
    b = _store(tmp_path / "b.h5", 10, "train", seed=1)
    t = _store(tmp_path / "t.h5", 8, ["test"] * 6 + ["other"] * 2, seed=2)
    dm = _dm(train=[str(a), str(b)], test=str(t))
    dm.setup("fit")
    dm.setup("test")
    train = dm.datasets["train"]
    assert isinstance(train, ConcatStoreDataset) and len(train) == 18 + 8
    assert len(dm.datasets["val"]) == 2 + 2  # automatic split of each store (at least one per class: 5 * 0.1 -> 1)
    assert dm.datasets["test"].store_path == t and len(dm.datasets["test"]) == 6  # its 'test' split
    batch = next(iter(dm.test_dataloader()))
    assert batch["label"].shape == (4,)
    sample = train[(0, 20)]  # the third item of b.h5
    assert sample["index"] == dm.plan["train"][1][1][2]
    assert dm.num_classes == 2 and dm.store_sensor_size == (16, 16)
    # a named split, and a store whose splits do not include the stage's
    dm2 = _dm(train=str(a), test=f"{t}:other")
    dm2.setup("test")
    assert len(dm2.datasets["test"]) == 2
    mixed = _store(tmp_path / "m.h5", 4, ["x", "y", "x", "y"])
    with pytest.raises(ValueError, match=r"has splits \['x', 'y'\] but not 'test'.*name one as"):
        _dm(train=str(a), test=str(mixed)).setup("test")
    with pytest.raises(ValueError, match=r"split 'nope' not in store"):
        _dm(train=f"{a}:nope").setup("fit")
    # evssl test without a test source says how to give one
    dm3 = _dm(train=str(a))
    dm3.setup("test")
    with pytest.raises(ValueError, match=r"no test data: give it with --data.init_args.test"):
        dm3.test_dataloader()


def test_a_store_with_its_own_val_split_keeps_it(tmp_path):
    a = _store(tmp_path / "a.h5", 10, ["train"] * 7 + ["val"] * 3)
    for spec in (str(a), f"{a}:train"):
        dm = _dm(train=spec)
        dm.setup("fit")
        assert len(dm.datasets["train"]) == 7 and len(dm.datasets["val"]) == 3
        assert "automatic" not in dm.describe()


def test_stores_with_different_class_lists_are_refused(tmp_path):
    a = _store(tmp_path / "a.h5", 4, "train")
    c = _store(tmp_path / "c.h5", 4, "test", classes=("car", "background"))
    with pytest.raises(ValueError, match=r"number their classes differently: class 0 is 'background' in one"):
        _dm(train=str(a), test=str(c)).setup("test")
    _dm(train=str(a), test=str(c), labels="ignore").setup("test")  # no labels: nothing to mismatch


def test_labels_ignore_drops_every_label_key(tmp_path):
    a = _store(tmp_path / "a.h5", 12, "train")
    dm = _dm(train=str(a), labels="ignore")
    assert dm.num_classes == 0
    dm.setup("fit")
    assert isinstance(dm.datasets["train"], DropLabels)
    batch = next(iter(dm.train_dataloader()))
    assert "label" not in batch and "events" in batch
    assert "labels: ignore" in dm.describe()
    with pytest.raises(ValueError, match="labels must be 'use' or 'ignore'"):
        _dm(train=str(a), labels="maybe")


def _config(tmp_path: Path, model: dict, data: dict) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path / "runs"),
        },
        "model": model,
        "data": {
            "class_path": "evssl.data.EventDataModule",
            "init_args": {
                "batch_size": 4,
                "num_workers": 0,
                "representation": {"class_path": "evssl.events.representations.Histogram"},
                **data,
            },
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_fit_on_one_store_then_test_on_another(tmp_path, capsys, monkeypatch):
    from evssl.cli import main

    monkeypatch.setenv("WANDB_MODE", "disabled")
    train = _store(tmp_path / "train.h5", 16, "train")
    test = _store(tmp_path / "test.h5", 8, "test", seed=5)
    model = {
        "class_path": "evssl.tasks.Classifier",
        "init_args": {
            "mode": "scratch",
            "backbone": {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}},
        },
    }
    cfg = _config(tmp_path, model, {"train": str(train)})
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = next((tmp_path / "runs").rglob("*.ckpt"))
    capsys.readouterr()
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt), "--data.init_args.test", str(test)]) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out


def test_cli_label_free_pretraining_builds_no_probe(tmp_path, monkeypatch):
    from evssl.cli import EvsslCLI

    monkeypatch.setenv("WANDB_MODE", "disabled")
    train = _store(tmp_path / "train.h5", 8, "train")
    model = {
        "class_path": "tests.helpers.TinyBYOL",
        "init_args": {"backbone": {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}}},
    }
    cfg = _config(tmp_path, model, {"train": str(train)})
    assert EvsslCLI(args=["--config", str(cfg)], run=False).model.probe is not None  # labels: use -> probe
    cli = EvsslCLI(args=["--config", str(cfg), "--data.init_args.labels", "ignore"], run=False)
    assert cli.model.probe is None and cli.datamodule.num_classes == 0
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)  # pre-trains on the labelled store without its labels
    assert "train/probe_loss" not in cli.trainer.callback_metrics
