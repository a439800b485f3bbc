"""MetaVO: meta-training step, online loop order (instrumented dataset), checkpoint safety, smoke configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader

from evssl.data.collate import collate_events
from evssl.data.sequences import OnlineSequenceDataset, VODataModule
from evssl.methods.meta_vo import MetaConfig, MetaVO, MetaVOOptim, NetworkConfig, OnlineConfig
from evssl.metrics.online_vo import OnlineVORecorder
from evssl.nn.backbones.resnet import BasicBlock, ResNet
from tests.helpers import REPO, cli_env

NET = NetworkConfig(decoder_channels=(4, 4, 8, 8, 16), num_scales=2, pose_hidden=16, min_depth=0.5, max_depth=20.0)


def _model(meta: bool = True, online: bool = True, first_order: bool = False, **kw) -> MetaVO:
    torch.manual_seed(0)
    backbone = ResNet(BasicBlock, (1, 1, 1, 1), 3, small_input=True, width=8)
    return MetaVO(
        backbone,
        network=NET,
        meta=MetaConfig(enabled=meta, first_order=first_order),
        online=OnlineConfig(enabled=online, kitti_lengths=(0.05, 0.1), kitti_step=2, **kw),
        optim=MetaVOOptim(lr=1e-3),
    )


@pytest.fixture(scope="module")
def dm() -> VODataModule:
    d = VODataModule(
        train_source="synthetic:vo_tiny:default",
        test_source="synthetic:vo_tiny:night",
        num_windows=3,
        snippets_per_sequence=1,
        max_test_windows=4,
        batch_size=2,
    )
    d.setup("fit")
    d.setup("test")
    return d


def _batch(dm: VODataModule, n: int = 2):
    return collate_events([dm.datasets["train"][i] for i in range(n)])


def test_meta_objective_differs_from_plain_and_first_order(dm: VODataModule) -> None:
    batch = _batch(dm)
    grads = {}
    for name, kw in {"second": {}, "first": {"first_order": True}, "plain": {"meta": False}}.items():
        m = _model(**kw)
        m.train()
        loss, logs = m.snippet_objective(batch)
        assert torch.isfinite(loss)
        loss.backward()
        grads[name] = torch.cat([p.grad.reshape(-1) for p in m.net.parameters() if p.grad is not None])
        if name != "plain":
            assert -1.0 <= float(logs["grad_cos"]) <= 1.0 and "outer_loss" in logs
    assert not torch.allclose(grads["second"], grads["first"])
    assert not torch.allclose(grads["first"], grads["plain"])
    rel = (grads["second"] - grads["first"]).norm() / grads["first"].norm()
    assert rel < 0.5  # the second-order term is a correction, not a different gradient


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []


class _InstrumentedOnline(OnlineSequenceDataset):
    def __init__(self, base: OnlineSequenceDataset, log: _Recorder) -> None:
        self.__dict__.update(base.__dict__)
        self.log = log

    def __getitem__(self, k: int):
        self.log.events.append(("read", int(k)))
        return super().__getitem__(k)


class _DM(LightningDataModule):
    def __init__(self, ds) -> None:
        super().__init__()
        self.ds = ds

    def test_dataloader(self):
        return DataLoader(self.ds, batch_size=1, shuffle=False, collate_fn=collate_events)

    predict_dataloader = test_dataloader


def _trainer(**kw) -> Trainer:
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_online_loop_never_reads_a_window_before_predicting_the_previous(dm: VODataModule, monkeypatch) -> None:
    log = _Recorder()
    ds = _InstrumentedOnline(dm.datasets["test"], log)
    model = _model()
    original = OnlineVORecorder.add

    def record(self, *a, **k):
        log.events.append(("predict", len([e for e in log.events if e[0] == "predict"])))
        return original(self, *a, **k)

    monkeypatch.setattr(OnlineVORecorder, "add", record)
    before = copy.deepcopy(model.state_dict())
    _trainer(inference_mode=False).test(model, datamodule=_DM(ds))
    reads = [k for e, k in log.events if e == "read"]
    assert reads == list(range(len(ds)))  # every window once, in order
    for i in range(len(ds) - 1):
        assert log.events.index(("read", i + 1)) > log.events.index(("predict", i))
    # adaptation and feature statistics never reach the module's weights or buffers (hence no checkpoint)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert len(model.online_results) == len({i for i, _ in ds.items})
    assert all(r["t_rel"] == r["t_rel"] for r in model.online_results)  # finite
    assert {"abs_rel", "ate", "rpe_trans"} <= set(model.online_results[0])


def test_online_adaptation_changes_later_predictions_and_resets_per_sequence(dm: VODataModule) -> None:
    ds = dm.datasets["test"]
    outs = {}
    for online in (False, True):
        model = _model(online=online, lr=1.0)
        preds = _trainer(inference_mode=False).predict(model, datamodule=_DM(ds))
        outs[online] = preds
    first = [i for i, p in enumerate(outs[True]) if p["window_index"] == 0]
    # the first window of every sequence is predicted by the trained weights in both runs
    for i in first:
        torch.testing.assert_close(outs[True][i]["depth"], outs[False][i]["depth"])
    later = [i for i, p in enumerate(outs[True]) if p["window_index"] == 2]
    assert any((outs[True][i]["depth"] - outs[False][i]["depth"]).abs().max() > 1e-4 for i in later)


def test_online_needs_gradients(dm: VODataModule) -> None:
    with pytest.raises(RuntimeError, match="inference_mode: false"):
        _trainer(inference_mode=True).test(_model(), datamodule=_DM(dm.datasets["test"]))


@pytest.mark.parametrize("name", ["meta_vo", "meta_vo_events"])
def test_smoke_config_fit_then_online_test_through_console_script(name: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("evssl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "evssl.cli"]
    cfg = str(REPO / "experiments" / "smoke" / f"{name}.yaml")
    quick = ["--trainer.max_steps", "2", "--trainer.limit_test_batches", "4"]
    proc = subprocess.run(
        [*cmd, "fit", "--config", cfg, *quick], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpt
    proc = subprocess.run(
        [*cmd, "test", "--config", cfg, *quick, "--ckpt_path", str(ckpt[0])],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "test/t_rel" in proc.stdout and "test/abs_rel" in proc.stdout
    # the DepthNet encoder exports as a plain backbone
    proc = subprocess.run(
        [*cmd, "export", str(ckpt[0]), "--out", str(tmp_path / "bb.pt")],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    from evssl.export import load_exported_backbone

    net = load_exported_backbone(tmp_path / "bb.pt")  # rebuilt from the JSON, weights loaded strictly
    assert isinstance(net, ResNet) and net.in_chans == (3 if name == "meta_vo" else 5)


def test_vo_media_pictures() -> None:
    import numpy as np

    from evssl.callbacks.vo_media import VOMedia, curve_image, trajectory_top_view

    gt = np.tile(np.eye(4), (10, 1, 1))
    gt[:, 0, 3] = np.linspace(0, 1, 10)
    img = trajectory_top_view(gt, gt * 1.0)
    assert img.shape == (256, 256, 3) and (img == [255, 140, 0]).all(-1).sum() > 50
    assert curve_image([0.1, 0.3, float("nan"), 0.2]).shape == (96, 256, 3)

    class M:
        def __init__(self) -> None:
            depth = [{"frame": 1, "pred": np.ones((4, 6)), "gt": np.ones((4, 6))}]
            self.online_media = [{"seq_id": 0, "gt": gt, "pred": gt, "depth": depth}]
            self.online_curves = [{"seq_id": 0, "frame": [1, 2], "abs_rel": [0.1, 0.2], "photometric": [0.1, 0.1]}]

    out = VOMedia().render(M())
    assert len(out["trajectory"][0]) == 1 and len(out["depth"][0]) == 1 and len(out["curve"][0]) == 1


def _analytic_and_numeric(model, params, direction, batch, eps: float) -> tuple[float, float]:
    grads = torch.autograd.grad(model.snippet_objective(batch)[0], params)
    analytic = float(sum((g * d).sum() for g, d in zip(grads, direction)))

    def at(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        value = float(model.snippet_objective(batch)[0])
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return value

    return analytic, (at(1.0) - at(-1.0)) / (2 * eps)


def test_meta_gradient_of_the_real_networks_matches_finite_differences(dm: VODataModule) -> None:
    """Directional derivative of the second-order snippet meta-objective of the real networks (ConvLSTM state
    back-propagated, BN in train mode, alpha = 1, float64) equals the central finite difference.

    Auto-masking and out-of-view masking are switched off here: they make the loss discontinuous in the parameters
    (a pixel enters or leaves the mean), and ReLU kinks make the gradient discontinuous, so a finite difference needs
    a tiny step (1e-7 in float64; at 1e-5 it already crosses kinks of the inner gradient at alpha = 1).
    """
    from evssl.methods.meta_vo import VOLossConfig

    gen = torch.Generator().manual_seed(0)
    batch = _batch(dm, 1)
    batch = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in batch.items()}
    results = {}
    direction = None
    for bptt in (True, False):
        model = _model()
        model.meta_cfg.bptt = bptt
        model.loss_cfg = VOLossConfig(automask=False, mask_out_of_view=False)
        model.double().train()
        params = [p for p in model.net.parameters() if p.requires_grad]
        if direction is None:
            direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        results[bptt] = _analytic_and_numeric(model, params, direction, batch, 1e-7)
    analytic, numeric = results[True]
    assert abs(analytic) > 1e-3
    assert numeric == pytest.approx(analytic, rel=1e-5)
    # truncating the recurrent gradient at window boundaries (the default) is an approximation of the same derivative
    assert results[False][1] == pytest.approx(numeric, rel=1e-6)
    assert results[False][0] != pytest.approx(numeric, rel=1e-5)


def test_presets_fill_only_the_unset_switches() -> None:
    backbone = ResNet(BasicBlock, (1, 1, 1, 1), 3, small_input=True, width=8)
    paper = MetaVO(backbone, network=NET, preset="paper")
    assert (paper.meta_cfg.first_order, paper.meta_cfg.inner_lr, paper.online_cfg.lr) == (False, 1e-4, 1e-4)
    small = MetaVO(backbone, network=NET, meta=MetaConfig(inner_lr=0.5), online=OnlineConfig(lr=0.25))
    assert (small.meta_cfg.inner_lr, small.online_cfg.lr) == (0.5, 0.25)  # explicit values win
    assert float(small.inner_lr) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"MetaVO\.meta: unknown preset 'other'"):
        MetaVO(backbone, network=NET, preset="other")  # type: ignore[arg-type]
