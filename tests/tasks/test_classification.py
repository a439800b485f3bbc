"""Classifier: linear / finetune / scratch modes, strict pretrained loading with input adaptation, metrics."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from evssl.nn.backbones import BasicBlock, ResNet
from evssl.optim import OptimConfig
from evssl.tasks.classification import Classifier, adapt_state_dict, load_backbone_weights
from tests.helpers import TensorDataModule, TinyNet


def _trainer(**kw) -> Trainer:
    kw.setdefault("max_epochs", 2)
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _resnet(in_chans: int = 2) -> ResNet:
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], in_chans=in_chans, width=4, small_input=True)


def _save(backbone: torch.nn.Module, path) -> None:
    torch.save(backbone.state_dict(), path)


def test_linear_mode_freezes_backbone_and_batchnorm(tmp_path) -> None:
    src = _resnet()
    _save(src, tmp_path / "bb.pt")
    model = Classifier(
        _resnet(), num_classes=4, mode="linear", pretrained=str(tmp_path / "bb.pt"), optim=OptimConfig(lr=0.05)
    )
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    for k, v in src.state_dict().items():
        torch.testing.assert_close(before[k], v)  # pretrained weights loaded
    model.train()
    assert not model.backbone.training and model.head.training
    trainer = _trainer()
    trainer.fit(model, TensorDataModule(num_samples=32, classes=4))
    after = model.backbone.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # weights *and* BN running statistics unchanged
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.head.parameters()}
    assert float(trainer.callback_metrics["val/acc"]) > 0.5  # separable; chance 0.25


def test_finetune_trains_everything_and_logs_metrics() -> None:
    model = Classifier(TinyNet(2, 8), num_classes=6, mode="finetune", optim=OptimConfig(lr=0.02), label_smoothing=0.1)
    w0 = model.backbone.conv.weight.clone()
    trainer = _trainer(max_epochs=3)
    dm = TensorDataModule(num_samples=48, classes=6)
    trainer.fit(model, dm)
    assert not torch.equal(w0, model.backbone.conv.weight)
    for key in ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_top5", "train/lr"):
        assert key in trainer.callback_metrics, key
    assert float(trainer.callback_metrics["val/acc_top5"]) >= float(trainer.callback_metrics["val/acc"])
    results = trainer.test(model, dataloaders=dm.val_dataloader(), verbose=False)
    assert {"test/acc", "test/acc_top5", "test/loss"} <= set(results[0])
    preds = trainer.predict(model, dataloaders=dm.val_dataloader())
    assert preds[0]["logits"].shape == (8, 6) and torch.equal(preds[0]["pred"], preds[0]["logits"].argmax(1))


def test_top5_only_with_five_classes_and_argument_checks(tmp_path) -> None:
    model = Classifier(TinyNet(), num_classes=4, mode="scratch")
    assert model.top_k == (1,) and not hasattr(model, "val_top5")
    with pytest.raises(ValueError, match="scratch"):
        Classifier(TinyNet(), num_classes=4, mode="scratch", pretrained="x.pt")
    with pytest.raises(ValueError, match="mode"):
        Classifier(TinyNet(), num_classes=4, mode="probe")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        Classifier(TinyNet(), num_classes=4, mode="finetune", pretrained=str(tmp_path / "missing.pt"))


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path) -> None:
    state = TinyNet().state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_backbone_weights(TinyNet(), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing keys (1): fc.bias" in msg and "unexpected keys (1): extra.weight" in msg
    state = TinyNet(width=8).state_dict()
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_backbone_weights(TinyNet(width=4), tmp_path / "wide.pt")
    # a Lightning checkpoint is refused with the export hint
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.6"}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="evssl export"):
        load_backbone_weights(TinyNet(), tmp_path / "x.ckpt")


def test_input_channels_adapted_by_mean_and_repeat(tmp_path) -> None:
    src = _resnet(in_chans=2)
    _save(src, tmp_path / "bb.pt")
    (tmp_path / "bb.json").write_text(json.dumps({"backbone": {"class_path": "x"}}))
    dst = _resnet(in_chans=5)
    meta = load_backbone_weights(dst, tmp_path / "bb.pt")
    assert meta == {"backbone": {"class_path": "x"}}
    w = src.conv1.weight
    expected = w.mean(1, keepdim=True).repeat(1, 5, 1, 1) * (2 / 5)
    torch.testing.assert_close(dst.conv1.weight, expected)
    # a constant input gives the same first-layer response as before
    x2, x5 = torch.ones(1, 2, 6, 6), torch.ones(1, 5, 6, 6)
    torch.testing.assert_close(src.conv1(x2), dst.conv1(x5))
    for k, v in src.state_dict().items():
        if k != "conv1.weight":
            assert torch.equal(v, dst.state_dict()[k]), k
    assert set(adapt_state_dict(src.state_dict(), dst)) == set(dst.state_dict())


def test_layer_decay_groups_for_vit() -> None:
    from evssl.nn.backbones import vit_tiny

    torch.manual_seed(0)
    backbone = vit_tiny(in_chans=2, img_size=8, patch_size=4)
    model = Classifier(backbone, num_classes=4, mode="finetune", optim=OptimConfig(lr=1e-3), layer_decay=0.5)
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, TensorDataModule(num_samples=8, classes=4))
    lrs = {g["name"]: g["initial_lr"] for g in trainer.optimizers[0].param_groups}
    assert lrs["head"] == pytest.approx(1e-3)
    assert lrs["backbone_layer_0_decay"] == pytest.approx(1e-3 * 0.5**13)  # patch embedding: deepest decay
    assert lrs["backbone_layer_12_decay"] == pytest.approx(1e-3 * 0.5)


def test_model_ema_tracks_online_weights_once_per_optimizer_step_and_is_evaluated() -> None:
    torch.manual_seed(0)
    d = 0.9
    model = Classifier(TinyNet(2, 8), num_classes=4, mode="scratch", optim=OptimConfig("sgd", 0.05), ema_decay=d)
    assert all(not p.requires_grad for p in model.ema.parameters())
    online = torch.nn.ModuleDict({"backbone": model.backbone, "head": model.head})
    ref = {k: v.clone() for k, v in online.state_dict().items()}  # hand-rolled EMA next to the module's
    steps: list[int] = []

    class Track(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step != (steps[-1] if steps else 0):  # an optimizer step happened
                steps.append(trainer.global_step)
                for k, v in online.state_dict().items():
                    ref[k] = d * ref[k] + (1 - d) * v if v.is_floating_point() and "running" not in k else v.clone()

    trainer = _trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[Track()])
    dm = TensorDataModule(num_samples=32, classes=4)  # 4 batches of 8 -> 2 optimizer steps
    trainer.fit(model, dm)
    assert steps == [1, 2]
    ema = model.ema.state_dict()
    for k, v in ref.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(ema[k], v, rtol=1e-5, atol=1e-6)
    # the EMA differs from the online weights, and evaluation / export use it
    assert not torch.equal(ema["backbone.conv.weight"], model.backbone.conv.weight)
    model.eval()
    x = torch.randn(3, 2, 16, 16)
    torch.testing.assert_close(model(x), model.ema["head"](model.ema["backbone"](x)))
    assert model.backbone_for_export() is model.ema["backbone"]
    model.train()
    torch.testing.assert_close(model(x), model.head(model.backbone(x)))
    # checkpoints carry the EMA weights, and they are never optimised
    assert any(k.startswith("ema.") for k in model.state_dict())
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in model.ema.parameters()}
    with pytest.raises(ValueError, match="ema_decay"):
        Classifier(TinyNet(), num_classes=4, mode="scratch", ema_decay=1.0)
