"""Dense tasks: losses and metrics on hand-computed inputs, pictures, pretrained loading, smoke configs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evssl.callbacks.dense_media import context_overlay, depth_to_rgb, flow_to_rgb, label_to_rgb, side_by_side
from evssl.nn.backbones import SwinTransformer
from evssl.tasks.dense import (
    DepthEstimation,
    OpticalFlow,
    SemanticSegmentation,
    dice_loss,
    flow_errors,
    gradient_matching_loss,
    scale_invariant_log_loss,
    sequence_l1_loss,
)

REPO = Path(__file__).resolve().parents[2]


def tiny_swin(in_chans: int = 6) -> SwinTransformer:
    return SwinTransformer(
        in_chans=in_chans, patch_size=2, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4
    )


# --------------------------------------------------------------------------------------------------- segmentation
def test_miou_on_hand_computed_maps() -> None:
    task = SemanticSegmentation(tiny_swin(), num_semantic_classes=3, decoder_channels=8)
    target = torch.tensor([[[0, 1], [1, 255]]])
    pred = torch.tensor([[[0, 0], [1, 2]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 10
    task.update_metrics("val", {"semantic": target}, {"logits": logits})
    # class 0: |{0}| / |{0, 1}| = 1/2; class 1: 1/2; class 2 only on the ignored pixel -> not counted
    out = task.eval_metrics["val"].seg.compute()
    assert out["miou"].item() == pytest.approx(0.5)
    assert out["pixel_acc"].item() == pytest.approx(2 / 3)
    assert out["macc"].item() == pytest.approx((1.0 + 0.5) / 2)


def test_dice_and_ce_losses() -> None:
    target = torch.tensor([[[0, 1], [2, 255]]])
    perfect = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-perfect, target).item() > 0.5
    task = SemanticSegmentation(tiny_swin(), num_semantic_classes=3, decoder_channels=8, aux_weight=0.4)
    x = torch.randn(2, 6, 16, 16)
    task.train()
    out = task.predict_output(x)
    assert out["logits"].shape == (2, 3, 16, 16) and out["aux"].shape == (2, 3, 16, 16)
    losses = task.compute_loss({"semantic": torch.randint(0, 3, (2, 16, 16))}, out)
    assert set(losses) == {"loss", "loss_main", "loss_aux"}
    assert losses["loss"].item() == pytest.approx(losses["loss_main"].item() + 0.4 * losses["loss_aux"].item())


def test_segmentation_metrics_logged_once_per_test_epoch(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    torch.manual_seed(0)
    task = SemanticSegmentation(tiny_swin(), num_semantic_classes=3, decoder_channels=8, log_images_every_n_epochs=0)
    batches = [{"input": torch.randn(2, 6, 16, 16), "semantic": torch.randint(0, 3, (2, 16, 16))} for _ in range(2)]
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)  # fmt: skip
    (res,) = trainer.test(task, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None), verbose=False)
    task.eval()
    with torch.no_grad():
        pred = torch.cat([task(b["input"]).argmax(1) for b in batches]).flatten()
    target = torch.cat([b["semantic"] for b in batches]).flatten()
    hist = np.bincount(target.numpy() * 3 + pred.numpy(), minlength=9).reshape(3, 3)
    with np.errstate(invalid="ignore"):
        ious = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
    assert res["test/miou"] == pytest.approx(float(np.nanmean(ious)), rel=1e-5)
    assert res["test/pixel_acc"] == pytest.approx(float(np.diag(hist).sum() / hist.sum()), rel=1e-5)
    assert {"test/macc", "test/loss"} <= set(res)


# ----------------------------------------------------------------------------------------------------------- flow
def test_flow_errors_on_hand_computed_vectors() -> None:
    target = torch.zeros(1, 2, 1, 4)
    target[0, 0] = torch.tensor([10.0, 100.0, 0.0, 1.0])
    pred = target.clone()
    pred[0, 0, 0, 0] += 3.0  # EPE 3: not an outlier (needs > 3)
    pred[0, 1, 0, 1] += 4.0  # EPE 4 > 3 but 4 < 5 % of 100: not an outlier
    pred[0, 0, 0, 2] += 4.0  # EPE 4 > 3 and > 0: outlier
    valid = torch.tensor([[[True, True, True, False]]])
    epe, out = flow_errors(pred, target, valid)
    assert epe.tolist() == pytest.approx([3.0, 4.0, 4.0])
    assert out.tolist() == [0.0, 0.0, 1.0]
    task = OpticalFlow(tiny_swin(), decoder_channels=8)
    task.update_metrics("val", {"flow": target, "flow_valid": valid}, pred)
    assert task.val_epe.compute().item() == pytest.approx(11 / 3)
    assert task.val_outlier.compute().item() == pytest.approx(100 / 3)


def test_sequence_l1_loss() -> None:
    target = torch.zeros(1, 2, 2, 2)
    p1, p2 = torch.full_like(target, 2.0), torch.full_like(target, 1.0)
    assert sequence_l1_loss(p2, target).item() == pytest.approx(1.0)
    assert sequence_l1_loss([p1, p2], target, gamma=0.8).item() == pytest.approx(0.8 * 2 + 1)
    valid = torch.tensor([[[True, False], [False, False]]])
    p = target.clone()
    p[0, :, 0, 1] = 5.0  # only on an invalid pixel
    assert sequence_l1_loss(p, target, valid).item() == 0.0


# ---------------------------------------------------------------------------------------------------------- depth
def test_depth_metrics_on_hand_computed_values() -> None:
    task = DepthEstimation(tiny_swin(), decoder_channels=8)
    depth = torch.tensor([[[1.0, 2.0], [4.0, float("nan")]]])
    pred = torch.tensor([[[1.0, 3.0], [4.0, 9.0]]])
    task.update_metrics("val", {"depth": depth}, pred.log())
    # abs-rel: (0 + 1/2 + 0) / 3; RMSE: sqrt(1/3); delta1: 3/2 = 1.5 fails -> 2/3
    assert task.val_abs_rel.compute().item() == pytest.approx(0.5 / 3)
    assert task.val_rmse.compute().item() == pytest.approx(math.sqrt(1 / 3))
    assert task.val_delta1.compute().item() == pytest.approx(2 / 3)


def test_depth_losses() -> None:
    log_t = torch.randn(2, 8, 8)
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    shifted = log_t + 0.7  # a global scale factor in depth
    assert scale_invariant_log_loss(shifted, log_t, valid, lam=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert scale_invariant_log_loss(shifted, log_t, valid, lam=0.5).item() == pytest.approx(0.5 * 0.49, rel=1e-4)
    assert gradient_matching_loss(shifted, log_t, valid).item() == pytest.approx(0.0, abs=1e-6)
    noisy = log_t + 0.1 * torch.randn(2, 8, 8)
    assert gradient_matching_loss(noisy, log_t, valid).item() > 0
    # slow reference of the SI loss for one image with a partial mask
    valid[1, :4] = False
    g = (noisy - log_t)[1][valid[1]]
    ref0 = ((noisy - log_t)[0] ** 2).mean() - 0.5 * (noisy - log_t)[0].mean() ** 2
    ref1 = (g**2).mean() - 0.5 * g.mean() ** 2
    got = scale_invariant_log_loss(noisy, log_t, valid, lam=0.5)
    assert got.item() == pytest.approx(((ref0 + ref1) / 2).item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------------ pictures
def test_pictures() -> None:
    zero = flow_to_rgb(np.zeros((2, 3, 3)))
    assert zero.shape == (3, 3, 3) and (zero == 255).all()
    right = flow_to_rgb(np.stack([np.ones((1, 1)), np.zeros((1, 1))]))
    left = flow_to_rgb(np.stack([-np.ones((1, 1)), np.zeros((1, 1))]))
    assert right[0, 0].tolist() == [255, 0, 0] and left[0, 0, 0] == 0  # Middlebury: right red, left cyan
    lab = label_to_rgb(torch.tensor([[0, 1], [255, 2]]), 3)
    assert lab[0, 0].tolist() == [0, 0, 0] and lab[1, 0].tolist() == [128, 128, 128]
    dep = depth_to_rgb(np.array([[1.0, 2.0], [0.0, 4.0]]))
    assert dep[1, 0].tolist() == [0, 0, 0] and dep[0, 0].sum() > dep[1, 1].sum()  # near = bright
    over = context_overlay(np.full((8, 8, 3), 255, np.uint8), np.array([[0, 1], [1, 0]]), 2)
    assert over.shape == (8, 8, 3) and (over[0, 0] != over[0, 7]).any()
    assert side_by_side([over, over]).shape == (128, 258, 3)


# ----------------------------------------------------------------------------------------------- loading, configs
def test_pretrained_backbone_loads_with_channel_adaptation(tmp_path: Path) -> None:
    src = tiny_swin(in_chans=6)
    path = tmp_path / "backbone.pt"
    torch.save(src.state_dict(), path)
    task = DepthEstimation(tiny_swin(in_chans=4), pretrained=str(path), decoder_channels=8, freeze_backbone=True)
    torch.testing.assert_close(task.backbone.stages[1][0].mlp.fc1.weight, src.stages[1][0].mlp.fc1.weight)
    assert task.backbone.patch_embed.weight.shape[1] == 4
    task.train()
    assert not task.backbone.training and all(not p.requires_grad for p in task.backbone.parameters())
    assert task.predict_output(torch.randn(2, 4, 16, 24)).shape == (2, 16, 24)


@pytest.mark.parametrize("name", ["segmentation", "flow", "depth"])
def test_smoke_config_fast_dev_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evssl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["evssl"])
    main(["fit", "--config", str(REPO / f"experiments/smoke/{name}.yaml"), "--trainer.fast_dev_run", "1"])
