"""PretrainMethod: parameter groups, schedules, batch-size scaling, EMA once per optimizer step, probe, export."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

import evssl.methods.base as base
from evssl.methods.base import PretrainMethod
from evssl.nn.probe import ProbeConfig
from evssl.optim import EmaConfig, OptimConfig, WarmupCosineScheduler, param_groups, warmup_cosine
from tests.helpers import TensorDataModule, TinyBYOL, TinyNet


def _trainer(**kw) -> Trainer:
    kw.setdefault("max_epochs", 1)
    kw.setdefault("enable_checkpointing", any(type(c).__name__ == "ModelCheckpoint" for c in kw.get("callbacks", [])))
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


_OPTIM = {"optimizer": "name", "lr": "lr", "weight_decay": "weight_decay", "lr_batch_scale": "lr_batch_scale",
          "warmup_epochs": "warmup_epochs"}  # fmt: skip


def _method(**kw) -> TinyBYOL:
    """TinyBYOL from flat keywords, grouped into OptimConfig / EmaConfig / ProbeConfig."""
    torch.manual_seed(0)
    optim = OptimConfig(**{_OPTIM[k]: kw.pop(k) for k in list(kw) if k in _OPTIM})
    ema = EmaConfig(kw.pop("ema_momentum", 0.996), kw.pop("ema_momentum_end", 1.0))
    probe = ProbeConfig(classes=kw.pop("probe_classes", 4), lr=kw.pop("probe_lr", 1e-3))
    return TinyBYOL(TinyNet(2, 8), optim=optim, ema=ema, probe=probe, **kw)


def _groups(opt: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in opt.param_groups}


def test_param_groups_decay_lr_scale_probe_and_ema_exclusion() -> None:
    model = _method(lr=0.1, weight_decay=0.05, probe_lr=0.3)
    trainer = _trainer(max_steps=4)
    trainer.fit(model, TensorDataModule())  # builds the optimizer through configure_optimizers
    groups = _groups(trainer.optimizers[0])
    assert set(groups) == {
        "backbone",
        "backbone_no_wd",
        "probe",
        "probe_no_wd",
        "projector",
        "projector_no_wd",
        "predictor",
        "predictor_no_wd",
    }
    # no weight decay on biases / norms, and they skip LARS adaptation
    for name, g in groups.items():
        if name.endswith("_no_wd"):
            assert g["weight_decay"] == 0 and all(p.ndim <= 1 for p in g["params"]) and not g["lars_adapt"]
    assert groups["backbone"]["weight_decay"] == 0.05
    assert all(p.ndim > 1 for p in groups["backbone"]["params"])
    # probe: own lr, no weight decay; predictor: lr_scale 2 (lrs are the initial ones times the schedule factor)
    assert groups["probe"]["weight_decay"] == 0.0
    assert groups["probe"]["initial_lr"] == pytest.approx(0.3)
    assert groups["predictor"]["initial_lr"] == pytest.approx(0.2)
    assert groups["backbone"]["initial_lr"] == pytest.approx(0.1)
    # EMA targets: never in the optimizer, never require grad
    in_opt = {id(p) for g in groups.values() for p in g["params"]}
    for _, target in model.momentum_pairs():
        for p in target.parameters():
            assert not p.requires_grad and id(p) not in in_opt
    # every trainable parameter is optimised exactly once
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(in_opt) == len(trainable) == sum(len(g["params"]) for g in groups.values())


def test_ema_target_in_a_group_is_an_error_and_leftovers_are_added() -> None:
    model = _method()
    model.setup("fit")
    bad = [{"name": "oops", "params": list(model.target_backbone.parameters())}]
    for p in model.target_backbone.parameters():
        p.requires_grad_(True)  # even when someone re-enabled grads
    with pytest.raises(ValueError, match="EMA target"):
        param_groups(model, bad, OptimConfig(lr=1.0, weight_decay=0.0), exclude=model._ema_targets())
    model.setup("fit")
    groups = param_groups(
        model, [{"name": "backbone", "params": model.backbone.parameters()}], OptimConfig(lr=1.0, weight_decay=0.1)
    )
    names = {g["name"] for g in groups}
    assert "other" in names and "other_no_wd" in names  # projector, predictor, probe were not listed
    with pytest.raises(ValueError, match="in optimizer groups"):
        param_groups(
            model,
            [{"name": "a", "params": model.probe.parameters()}, {"name": "b", "params": model.probe.parameters()}],
            OptimConfig(lr=1.0, weight_decay=0.0),
        )


def test_warmup_cosine_scheduler_values_weight_decay_schedule_and_resume() -> None:
    p = nn.Parameter(torch.zeros(3, 3))
    opt = torch.optim.AdamW([{"params": [p], "lr": 1.0, "weight_decay": 0.04, "wd_scale": 1.0}])
    sched = WarmupCosineScheduler(opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1, weight_decay=0.04,
                                  weight_decay_end=0.4)  # fmt: skip
    lrs, wds = [], []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        wds.append(opt.param_groups[0]["weight_decay"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.5)  # linear warm-up from 0
    assert lrs[2] == pytest.approx(1.0)  # peak right after warm-up
    expected = [warmup_cosine(s, 10, 2, 1.0, 0.1) for s in range(10)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert wds[0] == pytest.approx(0.04) and wds[5] == pytest.approx(0.04 + 0.36 * 0.5)
    assert all(a < b for a, b in itertools.pairwise(wds))
    # resume: a fresh scheduler loading the state continues the same curve
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([{"params": [p], "lr": 1.0, "weight_decay": 0.04, "wd_scale": 1.0}])
    sched2 = WarmupCosineScheduler(opt2, total_steps=10, warmup_steps=2, min_lr_ratio=0.1, weight_decay=0.04,
                                   weight_decay_end=0.4)  # fmt: skip
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch == 10
    assert sched2.factor() == pytest.approx(sched.factor())


def test_lr_batch_scale_uses_global_batch_and_schedule_length_follows_trainer() -> None:
    model = _method(lr=0.512, lr_batch_scale=True, warmup_epochs=1.0)
    dm = TensorDataModule(num_samples=32, batch_size=8)  # 4 batches per epoch
    trainer = _trainer(max_epochs=3, accumulate_grad_batches=2, limit_val_batches=0)
    trainer.fit(model, dm)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == 6  # 3 epochs x 4 batches / accumulate 2
    assert sched.warmup_steps == 2  # one epoch = 2 optimizer steps
    groups = _groups(trainer.optimizers[0])
    assert groups["backbone"]["initial_lr"] == pytest.approx(0.512 * 16 / 256)  # batch 8 x accumulate 2
    assert groups["probe"]["initial_lr"] == pytest.approx(model.probe_config.lr)  # absolute lr: not scaled
    assert trainer.global_step == 6


@pytest.mark.parametrize("kind", ["fast_dev_run", "max_steps"])
def test_schedule_with_fast_dev_run_and_max_steps(kind: str) -> None:
    model = _method(warmup_epochs=0.5)
    trainer = _trainer(fast_dev_run=True) if kind == "fast_dev_run" else _trainer(max_steps=3, max_epochs=-1)
    trainer.fit(model, TensorDataModule())
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == (1 if kind == "fast_dev_run" else 3)
    assert model._total_steps == sched.total_steps


def test_ema_updates_once_per_optimizer_step_under_accumulation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float]] = []
    real = base.ema_update_

    def counting(online: nn.Module, target: nn.Module, m: float) -> None:
        calls.append((id(online), m))
        real(online, target, m)

    monkeypatch.setattr(base, "ema_update_", counting)
    model = _method(ema_momentum=0.9, ema_momentum_end=1.0)
    dm = TensorDataModule(num_samples=48, batch_size=8)  # 6 batches per epoch
    trainer = _trainer(max_epochs=1, accumulate_grad_batches=3, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 2
    pairs = len(model.momentum_pairs())
    assert len(calls) == 2 * pairs  # once per optimizer step and pair, not once per batch
    momenta = [m for _, m in calls[::pairs]]
    assert momenta == pytest.approx([model.ema_momentum_at(0), model.ema_momentum_at(1)])
    assert momenta[0] == pytest.approx(0.9) and momenta[1] == pytest.approx(0.95)  # cosine 0.9 -> 1 over 2 steps


def test_ema_target_is_the_moving_average_of_the_online_weights() -> None:
    model = _method(ema_momentum=0.5, ema_momentum_end=0.5, lr=0.05)
    online0 = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    seen: list[dict[str, torch.Tensor]] = []
    original = model.optimizer_step

    def step(*args, **kwargs):
        original(*args, **kwargs)
        seen.append({k: v.clone() for k, v in model.backbone.state_dict().items()})

    model.optimizer_step = step  # type: ignore[method-assign]
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, TensorDataModule())
    # target_k = 0.5 target_{k-1} + 0.5 online_k, target_0 = online_0 (the copy)
    expected = {k: v.clone() for k, v in online0.items()}
    for online in seen:
        for k in expected:  # TinyNet has parameters only (GroupNorm, no buffers)
            expected[k] = 0.5 * expected[k] + 0.5 * online[k]
    target = model.target_backbone.state_dict()
    assert len(seen) == 2
    for k, v in expected.items():
        torch.testing.assert_close(target[k], v)
    assert all(p.grad is None for p in model.target_backbone.parameters())


def test_online_probe_learns_and_is_logged() -> None:
    model = _method(probe_lr=0.05, lr=1e-3)
    trainer = _trainer(max_epochs=4)
    trainer.fit(model, TensorDataModule(num_samples=64, classes=4))
    acc = float(trainer.callback_metrics["val/probe_acc"])
    assert acc > 0.5  # separable class means; chance is 0.25
    assert "train/probe_loss" in trainer.callback_metrics
    assert "train/ema_momentum" in trainer.callback_metrics and "train/lr" in trainer.callback_metrics


def test_no_probe_without_classes_and_export_defaults() -> None:
    model = _method(probe_classes=0)
    assert model.probe is None
    assert model.backbone_for_export() is model.backbone
    cfg = model.backbone_config()
    assert cfg["class_path"] == "tests.helpers.TinyNet" and cfg["init_args"] == {"in_chans": 2, "width": 8}
    # modules are not pickled into the hyper-parameters (checkpoints stay weights_only-loadable)
    assert "backbone" not in model.hparams and model.hparams["probe"]["classes"] == 0
    with pytest.raises(NotImplementedError):
        PretrainMethod(TinyNet()).ssl_step({}, 0)


def test_lars_optimizer_excludes_norms_and_probe() -> None:
    model = _method(optimizer="lars", lr=0.1, weight_decay=1e-6)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, TensorDataModule())
    opt = trainer.optimizers[0]
    assert type(opt).__name__ == "LARS"
    groups = _groups(opt)
    assert not groups["probe"]["lars_adapt"] and not groups["backbone_no_wd"]["lars_adapt"]
    assert groups["backbone"]["lars_adapt"]


def test_samplers_and_representations_satisfy_the_protocols() -> None:
    from evssl.data.samplers import ClassificationWindow, RepresentationProtocol, SamplerProtocol
    from evssl.data.views import ECDPViews, NarrowBroadViews
    from evssl.events.representations import EventImage, VoxelGrid

    for sampler in (ClassificationWindow(duration_us=1000), NarrowBroadViews(), ECDPViews()):
        assert isinstance(sampler, SamplerProtocol)
    for rep in (VoxelGrid(3), EventImage()):
        assert isinstance(rep, RepresentationProtocol) and isinstance(rep.channels, int)
    assert not isinstance(object(), SamplerProtocol)


def test_ssl_step_must_return_an_ssl_output() -> None:
    class Bad(TinyBYOL):
        def ssl_step(self, batch, batch_idx):  # type: ignore[override]
            return {"loss": torch.zeros(())}

    model = Bad(TinyNet(2, 8))
    with pytest.raises(TypeError, match="SSLOutput"):
        model.training_step({"input": torch.zeros(2, 2, 8, 8)}, 0)


def test_probe_can_be_switched_off_and_announces_itself(caplog: pytest.LogCaptureFixture) -> None:
    off = TinyBYOL(TinyNet(2, 8), probe=ProbeConfig(enabled=False, classes=4))
    assert off.probe is None and not any(g["name"] == "probe" for g in off.learnable_params())
    model = _method(probe_classes=4)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    with caplog.at_level("INFO"):
        trainer.fit(model, TensorDataModule())
    lines = [r.getMessage() for r in caplog.records if "online probe" in r.getMessage()]
    assert len(lines) == 1 and "labels" in lines[0] and "probe.enabled: false" in lines[0]


def test_resume_with_a_larger_max_steps_stretches_the_schedule(tmp_path) -> None:
    """Issue 13 item 6: resuming a 4-step run as an 8-step run must not train the extra steps at lr 0."""
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    class LrTrace(Callback):
        def __init__(self) -> None:
            self.lrs: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def run(max_steps: int, ckpt: str | None = None) -> tuple[Trainer, LrTrace]:
        trace = LrTrace()
        callbacks = [trace, ModelCheckpoint(dirpath=tmp_path)]
        trainer = _trainer(max_steps=max_steps, max_epochs=-1, limit_val_batches=0, callbacks=callbacks)
        trainer.fit(_method(lr=0.1), TensorDataModule(), ckpt_path=ckpt)
        return trainer, trace

    run(4)
    ckpt = next(tmp_path.glob("*.ckpt"))
    longer, trace = run(8, str(ckpt))
    sched = longer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == 8 and longer.global_step == 8
    assert trace.lrs == pytest.approx([0.1 * warmup_cosine(s, 8, 0) for s in range(4, 8)])
    assert min(trace.lrs) > 0.0
    assert longer.lightning_module._total_steps == 8  # the EMA momentum schedule follows the new length too


def test_warmup_epochs_with_max_steps_and_no_epoch_limit_is_one_loader_length() -> None:
    """``max_steps`` with ``max_epochs=-1`` (how ``evssl benchmark`` runs): Lightning gives the step count without
    loading the train loader, which used to make one warm-up "epoch" the whole run (warm-up never ending)."""
    model = _method(warmup_epochs=1.0)
    trainer = _trainer(max_steps=12, max_epochs=-1, limit_val_batches=0)
    trainer.fit(model, TensorDataModule(num_samples=32, batch_size=8))  # 4 batches per epoch
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert (sched.total_steps, sched.warmup_steps) == (12, 4)
    assert trainer.global_step == 12
