"""PretrainDiagnostics: monitor values by hand, and a tiny BraVe run that logs every diagnostic per epoch."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evssl.callbacks.diagnostics import (
    PretrainDiagnostics,
    effective_rank,
    empty_pixel_fraction,
    events_per_window,
    probe_subsets,
    std_sqrt_d,
)
from tests.helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def test_std_sqrt_d_collapse_and_spread() -> None:
    assert std_sqrt_d(torch.ones(50, 16)) == pytest.approx(0.0, abs=1e-12)
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert std_sqrt_d(z) == pytest.approx(1.0, abs=0.03)  # normalised Gaussian: std 1/√d per dimension
    # by hand: rows (1, 0), (0, 1) -> per-dim population std 0.5, mean 0.5, × √2
    assert std_sqrt_d(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5 * math.sqrt(2))


def test_effective_rank_values() -> None:
    u = torch.randn(30, 1) @ torch.randn(1, 8)
    assert effective_rank(u) == pytest.approx(1.0, abs=1e-6)  # rank one
    q = torch.linalg.qr(torch.randn(40, 5, dtype=torch.float64))[0]
    q = q - q.mean(0)  # centring keeps 5 nonzero singular values; equalise them
    uu, _, vh = torch.linalg.svd(q, full_matrices=False)
    assert effective_rank(uu @ vh) == pytest.approx(5.0, rel=1e-6)
    s = torch.tensor([3.0, 1.0])
    p = s / s.sum()
    m = torch.diag(s) @ torch.eye(2)
    m = torch.cat([m, -m])  # centred by construction, singular values √2·(3, 1)
    assert effective_rank(m) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-6)


def test_data_statistics_by_hand() -> None:
    x = torch.zeros(2, 3, 2, 2)
    x[0, 1, 0, 0] = 1.0
    x[1, :, 1, 1] = -2.0
    assert empty_pixel_fraction(x) == pytest.approx(6 / 8)
    assert events_per_window(torch.tensor([0, 0, 2, 2, 2]), 4).tolist() == [2, 0, 3, 0]


def test_diagnostics_on_a_tiny_brave_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger

    from evssl.cli_lightning import EvsslCLI

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(REPO / "experiments/smoke/brave.yaml"), "--trainer.logger", "false",
            "--trainer.callbacks", "[]", "--data.init_args.windows_per_recording", "1"]  # fmt: skip
    cli = EvsslCLI(args=args, run=False)
    diag = PretrainDiagnostics(num_train=48, num_eval=24, knn_k=5, linear=True)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=3, limit_val_batches=0,
                      logger=CSVLogger(str(tmp_path), name="", version=""), callbacks=[diag],
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1)  # fmt: skip
    trainer.fit(cli.model, datamodule=cli.datamodule)
    assert len(diag.history) == 2
    last = diag.history[-1]
    for key in ("diag/knn_acc", "diag/linear_acc", "diag/feat_std_sqrt_d", "diag/feat_effective_rank",
                "diag/proj_std_sqrt_d", "diag/proj_effective_rank", "diag/train/loss", "diag/grad_norm/backbone",
                "diag/data/events_per_window", "diag/data/empty_pixel_fraction"):  # fmt: skip
        assert key in last and math.isfinite(last[key]), key
    assert 0.0 <= last["diag/knn_acc"] <= 1.0 and 1.0 <= last["diag/proj_effective_rank"] <= 64.0
    assert 0.0 < last["diag/data/empty_pixel_fraction"] < 1.0 and last["diag/data/events_per_window"] > 0
    assert any(k.startswith("diag/train/") and k != "diag/train/loss" for k in last)  # the method's loss terms
    with open(tmp_path / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert "diag/knn_acc" in header and "diag/grad_norm/backbone" in header


def test_probe_subsets_mix_classes_of_a_class_sorted_store_and_stay_disjoint() -> None:
    """N-Cars converts class by class (500 background then 500 cars): a prefix bank and a tail query set held one
    class each, so the kNN scored exactly 0.0 whatever the features."""
    labels = np.repeat([0, 1], 500)  # store index i has class labels[i]
    bank, queries = probe_subsets(np.arange(1000), np.zeros(0, np.int64), num_train=256, num_eval=128)
    assert len(bank) == 256 and len(queries) == 128 and not set(bank) & set(queries)
    assert 0.35 < labels[bank].mean() < 0.65 and 0.3 < labels[queries].mean() < 0.7
    again = probe_subsets(np.arange(1000), np.zeros(0, np.int64), num_train=256, num_eval=128)
    assert all(np.array_equal(a, b) for a, b in zip((bank, queries), again))  # fixed across epochs
    # with an evaluation split the queries come from it; a train split no larger than the bank gives no queries
    _, q = probe_subsets(np.arange(100), np.arange(100, 150), num_train=64, num_eval=20)
    assert len(q) == 20 and q.min() >= 100
    assert len(probe_subsets(np.arange(10), np.zeros(0, np.int64), 16, 8)[1]) == 0
