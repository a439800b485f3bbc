"""Issue 18's whole path through the ``evssl`` command on tiny fixtures: convert a train and a test store from an
N-Cars-layout tree, pre-train without labels, export, linear-probe on the train labels, test on the other store."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_fit_config

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def _ncars_tree(root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "sets"))
    from sets_fixtures import write_dat

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, cls in enumerate(("background", "cars")):
            for k in range(8):
                n = 300
                t = np.sort(rng.integers(0, 100_000, n))
                x = rng.integers(0, 60, n) + 60 * label  # the class decides which half of the crop fires
                y, p = rng.integers(0, 100, n), rng.integers(0, 2, n)
                write_dat(root / f"n-cars_{split}/{cls}/obj_{k:06d}_td.dat", x, y, t, p)


def _cfg(tmp_path: Path, name: str, model: dict, data: dict) -> Path:
    return write_fit_config(tmp_path, name, model, data, (25, 30), max_epochs=2, logger=False)


def _data_plan(caplog: pytest.LogCaptureFixture) -> str:
    """The one "evssl data:" record of a run (logged once per data module through Lightning's rank-zero logger)."""
    plans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evssl data:")]
    assert len(plans) == 1, [r.getMessage()[:80] for r in caplog.records]
    return plans[0]


def test_convert_pretrain_without_labels_export_probe_test_on_another_store(tmp_path, capsys, caplog, monkeypatch):
    import logging

    from evssl.cli import main

    caplog.set_level(logging.INFO)

    monkeypatch.setenv("WANDB_MODE", "disabled")
    _ncars_tree(tmp_path / "ncars")
    train, test = tmp_path / "train.h5", tmp_path / "test.h5"
    for split, out in (("train", train), ("test", test)):
        args = ["convert", "--dataset", "ncars", str(tmp_path / "ncars"), "--out", str(out), "--dataset-splits", split]
        assert main(args) == 0
    tiny = {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}}
    pre = _cfg(
        tmp_path,
        "pre",
        {"class_path": "tests.helpers.TinyBYOL", "init_args": {"backbone": tiny}},
        {"train": str(train), "labels": "ignore"},
    )
    caplog.clear()
    assert main(["fit", "--config", str(pre)]) == 0
    plan = _data_plan(caplog)  # the logged data plan: sources of each split, which labels the batches carry
    assert "train: train.h5 split 'train' minus the automatic validation split (14 recordings)" in plan
    assert "val: train.h5 automatic 0.1 of split 'train' (2 recordings)" in plan
    assert "labels: ignore: batches carry no 'label'" in plan
    ckpt = next((tmp_path / "runs" / "pre").rglob("*.ckpt"))
    assert main(["export", str(ckpt), "--out", str(tmp_path / "bb.pt")]) == 0
    probe_model = {
        "class_path": "evssl.tasks.Classifier",
        "init_args": {"mode": "linear", "pretrained": str(tmp_path / "bb.pt"), "backbone": tiny, "optim": {"lr": 1e-2}},
    }
    probe = _cfg(tmp_path, "probe", probe_model, {"train": str(train)})
    caplog.clear()
    assert main(["fit", "--config", str(probe)]) == 0
    assert "labels: use: batches carry the stores' 'label' (2 classes: background, car)" in _data_plan(caplog)
    pckpt = next((tmp_path / "runs" / "probe").rglob("*.ckpt"))
    capsys.readouterr()
    caplog.clear()
    assert main(["test", "--config", str(probe), "--ckpt_path", str(pckpt), "--data.init_args.test", str(test)]) == 0
    captured = capsys.readouterr()
    assert "test: test.h5 split 'test' (16 recordings)" in _data_plan(caplog)
    line = [ln for ln in captured.out.splitlines() if "test/acc" in ln]
    assert line, captured.out[-2000:]
    acc = float(line[0].split()[-1])
    assert 0.0 <= acc <= 1.0
