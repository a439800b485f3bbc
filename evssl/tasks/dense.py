r"""Dense transfer tasks: semantic segmentation, optical flow and depth on event representations.

Each task is its own LightningModule on a shared base, :class:`DenseTask`: a backbone that returns a feature
pyramid (``forward_features(x)["features"]``, fine → coarse: Swin, ResNet; a plain ViT gets a ViTDet simple feature
pyramid or a BEiT block pyramid, :mod:`evssl.nn.vitdet`) and a multi-scale decoder —
UPerNet (:class:`~evssl.nn.backbones.UPerHead`, ECDDP's segmentation head: PPM + FPN) or a U-Net decoder — whose
prediction is resized (bilinear) to the input size. ``pretrained`` loads any backbone state dict written by
``evssl export`` (:func:`~evssl.tasks.classification.load_backbone_weights`: strict, the first layer adapted when
the input channels differ, e.g. a 6-bin voxel pre-training and a 20-channel stacked-histogram downstream).

* :class:`SemanticSegmentation` — :math:`\mathcal L = \mathrm{CE} + \lambda_{dice}\,\mathcal L_{dice}` (+ an
  FCN auxiliary head on stage 3, weight 0.4 in ECDDP), ``ignore_index`` 255; metrics mIoU (macro over classes),
  mean class accuracy, pixel accuracy and per-class IoU (:class:`~evssl.metrics.segmentation.EndTaskMetrics`).
* :class:`OpticalFlow` — L1 / RAFT-style sequence loss :math:`\sum_i \gamma^{n-i}\,\overline{|f_i - f|}`
  (γ = 0.8; one prediction = plain L1); metrics EPE, outlier % (EPE > 3 px **and** > 5 % of :math:`|f|`).
* :class:`DepthEstimation` — predicts log depth; scale-invariant log loss (Eigen et al. 2014)
  :math:`\frac1n\sum g_i^2 - \frac{\lambda}{n^2}(\sum g_i)^2`, :math:`g = \log\hat d - \log d`, plus the multi-scale
  gradient-matching loss of MegaDepth (Li & Snavely 2018) :math:`\sum_s \frac{1}{n_s}\sum |\nabla_x g^s| +
  |\nabla_y g^s|` (weight 0.25 in ECDDP); metrics abs-rel :math:`\overline{|\hat d - d| / d}`, RMSE and
  :math:`\delta < 1.25`.

Pictures (W&B, tolerant of no logger): input | prediction | target for the first validation batch every
``log_images_every_n_epochs`` epochs (label palette, flow colour wheel, inverse-depth ramp;
:mod:`evssl.callbacks.dense_media`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.regression import MeanSquaredError

from evssl.metrics.segmentation import EndTaskMetrics
from evssl.nn.backbones.unet import ConvNormAct, UNetDecoder, UPerHead
from evssl.nn.frozen import FrozenInEval
from evssl.nn.vitdet import SimpleFeaturePyramid, ViTPyramidConfig, vit_feature_pyramid
from evssl.optim import OptimConfig, configure_optimization
from evssl.tasks.classification import InputAdapt, load_backbone_weights
from evssl.tasks.transfer import backbone_param_groups
from evssl.utils.hparams import as_config, batch_size_of, class_config, save_hparams

__all__ = [
    "DenseOptim",
    "DenseTask",
    "DepthEstimation",
    "OpticalFlow",
    "RegressionOptim",
    "SemanticSegmentation",
    "dice_loss",
    "flow_errors",
    "gradient_matching_loss",
    "scale_invariant_log_loss",
    "sequence_l1_loss",
]


# ======================================================================================================= losses
def dice_loss(logits: Tensor, target: Tensor, ignore_index: int | None = 255, smooth: float = 1.0) -> Tensor:
    r"""Multi-class soft Dice loss over the valid pixels of a batch (V-Net form, as mmseg's ``DiceLoss``):

    .. math:: \mathcal L_{dice} = 1 - \frac1C\sum_c \frac{2\sum_i p_{ic} t_{ic} + s}{\sum_i p_{ic}^2 + \sum_i
              t_{ic}^2 + s}

    with :math:`p = \mathrm{softmax}(\text{logits})` and :math:`t` the one-hot target; ignored pixels drop out.
    """
    c = logits.shape[1]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    prob = logits.float().softmax(dim=1)
    onehot = F.one_hot(torch.where(valid, target, 0).long(), c).permute(0, 3, 1, 2).float()
    w = valid[:, None].float()
    inter = (prob * onehot * w).sum(dim=(0, 2, 3))
    denom = (prob.pow(2) * w).sum(dim=(0, 2, 3)) + (onehot * w).sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


def sequence_l1_loss(preds: Tensor | list[Tensor], target: Tensor, valid: Tensor | None = None, gamma: float = 0.8):
    r"""RAFT/TMA sequence loss :math:`\sum_{i=1}^{n} \gamma^{n-i}\,\mathrm{mean}_{valid}|f_i - f|` (mean over the
    two channels and the valid pixels); a single prediction gives the plain L1 loss."""
    preds = [preds] if isinstance(preds, Tensor) else list(preds)
    if valid is None:
        valid = torch.ones(target.shape[0], *target.shape[2:], dtype=torch.bool, device=target.device)
    w = valid[:, None].float()
    denom = (w.sum() * target.shape[1]).clamp_min(1.0)
    n = len(preds)
    total = target.new_zeros(())
    for i, p in enumerate(preds):
        total = total + gamma ** (n - 1 - i) * ((p.float() - target.float()).abs() * w).sum() / denom
    return total


def flow_errors(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Per-valid-pixel endpoint error :math:`\|\hat f - f\|_2` and outlier indicator (EPE > 3 px and
    EPE > 0.05 :math:`\|f\|_2`, the KITTI / DSEC "Fl" definition), both flat ``(n_valid,)``."""
    epe = (pred.float() - target.float()).norm(dim=1)
    mag = target.float().norm(dim=1)
    ok = torch.isfinite(epe) if valid is None else (valid.bool() & torch.isfinite(epe))
    out = (epe > 3.0) & (epe > 0.05 * mag)
    return epe[ok], out[ok].float()


def scale_invariant_log_loss(log_pred: Tensor, log_target: Tensor, valid: Tensor, lam: float = 0.5) -> Tensor:
    r"""Scale-invariant log loss (Eigen, Puhrsch, Fergus, NeurIPS 2014, Eq. 4), per image then averaged:
    :math:`\frac1n\sum_i g_i^2 - \frac{\lambda}{n^2}\big(\sum_i g_i\big)^2`, :math:`g = \log\hat d - \log d` on the
    valid pixels (``lam = 1`` is fully scale invariant, 0 plain log-MSE)."""
    g = (log_pred.float() - log_target.float()) * valid.float()
    n = valid.float().flatten(1).sum(1).clamp_min(1.0)
    s1 = g.flatten(1).sum(1)
    s2 = g.pow(2).flatten(1).sum(1)
    has = valid.flatten(1).any(1)
    per = s2 / n - lam * (s1 / n) ** 2
    return (per * has.float()).sum() / has.float().sum().clamp_min(1.0)


def gradient_matching_loss(log_pred: Tensor, log_target: Tensor, valid: Tensor, scales: int = 4) -> Tensor:
    r"""Multi-scale scale-invariant gradient matching (Li & Snavely, MegaDepth, CVPR 2018, Eq. 3):
    :math:`\sum_{s<S} \frac{1}{n_s}\sum_i |\nabla_x R^s_i| + |\nabla_y R^s_i|` with :math:`R = \log\hat d - \log d`
    subsampled by :math:`2^s` and only pairs of valid pixels counted."""
    r = (log_pred.float() - log_target.float()) * valid.float()
    m = valid.float()
    total = r.new_zeros(())
    for s in range(scales):
        step = 2**s
        rs, ms = r[:, ::step, ::step], m[:, ::step, ::step]
        if rs.shape[-1] < 2 or rs.shape[-2] < 2:
            break
        mx = ms[:, :, 1:] * ms[:, :, :-1]
        my = ms[:, 1:, :] * ms[:, :-1, :]
        gx = (rs[:, :, 1:] - rs[:, :, :-1]).abs() * mx
        gy = (rs[:, 1:, :] - rs[:, :-1, :]).abs() * my
        total = total + (gx.sum() + gy.sum()) / ms.sum().clamp_min(1.0)
    return total


# ========================================================================================================= base
@dataclass
class DenseOptim(OptimConfig):
    """Dense-task default: AdamW, lr 2e-4, weight decay 0.05."""

    lr: float = 2e-4


@dataclass
class RegressionOptim(OptimConfig):
    """Flow / depth default: AdamW, lr 2e-4, weight decay 1e-4."""

    lr: float = 2e-4
    weight_decay: float = 1e-4


def _vit_neck(task: str, backbone: nn.Module, cfg: ViTPyramidConfig | None) -> SimpleFeaturePyramid | None:
    """``None`` for a pyramid backbone (``feature_channels``), a ViT pyramid for a plain ViT; else a clear error."""
    if getattr(backbone, "feature_channels", None):
        if cfg is not None:
            raise ValueError(f"{task}: vit_pyramid is set but {type(backbone).__name__} already has a feature pyramid")
        return None
    if all(isinstance(getattr(backbone, a, None), int) for a in ("embed_dim", "patch_size", "depth")):
        return vit_feature_pyramid(backbone, cfg)
    raise ValueError(
        f"{task} needs a backbone with feature_channels (a feature pyramid) or a ViT, got {type(backbone).__name__}"
    )


class DenseTask(FrozenInEval):
    """Backbone feature pyramid + multi-scale decoder, prediction at the input resolution.

    Args:
        backbone: any network whose ``forward_features(x)["features"]`` is a list of maps (fine -> coarse) and that
            has ``feature_channels`` (Swin, ResNet); ``in_chans`` linked from the data by the CLI.
        out_channels: prediction channels (set by the task).
        pretrained: path of a backbone state dict from ``evssl export`` (``None`` = random initialisation).
        decoder: ``"uper"`` (UPerNet, ECDDP) or ``"unet"``.
        decoder_channels: decoder width (512 in ECDDP's UPerHead).
        pool_scales: PPM scales of UPerNet ((1, 2, 3, 6)).
        decoder_norm: ``"bn"``, ``"gn"`` or ``"none"``.
        freeze_backbone: keep the backbone fixed (eval mode, no gradient): a dense probe.
        optim: optimiser, schedule and weight-decay policy (:class:`~evssl.optim.OptimConfig`, default
            :class:`DenseOptim`; flow and depth :class:`RegressionOptim`).
        backbone_lr_scale: lr multiplier of the backbone.
        log_images_every_n_epochs: log input | prediction | target pictures every n epochs (0 = never).
        log_images_num_samples: samples per picture log.
        layer_decay: layer-wise lr decay of a ViT backbone (BEiT / MAE ``layer_id`` rule,
            :func:`~evssl.tasks.transfer.backbone_param_groups`; ECDP segmentation uses 0.75); ``None`` = off.
            The ViT pyramid and the decoder train at the full lr.
        input_adapt: when the pretrained input layer has other input channels: ``"mean"`` (channel mean, repeated)
            or ``"reinit"`` (keep the fresh patch embedding, as ECDDP's segmentation transfer;
            :func:`~evssl.tasks.classification.adapt_state_dict`).
        vit_pyramid: how a plain ViT backbone (no ``feature_channels``) is turned into a stride 4/8/16/32 pyramid
            (:class:`~evssl.nn.vitdet.ViTPyramidConfig`, default: ViTDet simple feature pyramid from the last map,
            256 channels). The pyramid is part of the head: it trains even with ``freeze_backbone``, and it is not
            exported with the backbone.
    """

    target_key: str = ""

    def __init__(
        self,
        backbone: nn.Module,
        out_channels: int,
        pretrained: str | None = None,
        decoder: Literal["uper", "unet"] = "uper",
        decoder_channels: int = 128,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        decoder_norm: Literal["bn", "gn", "none"] = "bn",
        freeze_backbone: bool = False,
        optim: DenseOptim | None = None,
        backbone_lr_scale: float = 1.0,
        log_images_every_n_epochs: int = 1,
        log_images_num_samples: int = 4,
        layer_decay: float | None = None,
        input_adapt: InputAdapt = "mean",
        vit_pyramid: ViTPyramidConfig | None = None,
    ) -> None:
        super().__init__()
        save_hparams(self, inspect.currentframe())
        self.neck = _vit_neck(type(self).__name__, backbone, vit_pyramid)
        channels = self.neck.feature_channels if self.neck is not None else list(backbone.feature_channels)
        self.feature_channels: list[int] = list(channels)
        self.backbone = backbone
        self.layer_decay = layer_decay
        self.pretrained_meta: dict[str, Any] = {}
        if pretrained:
            self.pretrained_meta = load_backbone_weights(backbone, pretrained, input_adapt=input_adapt)
        self.decoder_channels = int(decoder_channels)
        self.decoder_norm = decoder_norm
        if decoder == "uper":
            self.decoder: nn.Module = UPerHead(channels, out_channels, decoder_channels, pool_scales, norm=decoder_norm)
        elif decoder == "unet":
            self.decoder = UNetDecoder(channels, out_channels, decoder_channels, norm=decoder_norm)
        else:
            raise ValueError(f"decoder must be 'uper' or 'unet', got {decoder!r}")
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            if not pretrained:
                rank_zero_warn(f"{type(self).__name__}: freeze_backbone without `pretrained` freezes random weights")
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.optim = as_config(DenseOptim, optim)
        self.backbone_lr_scale = backbone_lr_scale
        self.log_images_every_n_epochs = int(log_images_every_n_epochs)
        self.log_images_num_samples = int(log_images_num_samples)

    # ------------------------------------------------------------------------------------------------- model
    def frozen_modules(self) -> list[nn.Module]:
        """A frozen backbone stays in eval mode."""
        return [self.backbone] if self.freeze_backbone else []

    def features(self, x: Tensor) -> list[Tensor]:
        """The feature pyramid: the backbone's, or the ViT pyramid on the ViT's maps (no backbone autograd when
        frozen; the ViT pyramid always trains)."""
        kwargs = {"out_blocks": self.neck.block_indices} if self.neck is not None and self.neck.block_indices else {}
        if self.freeze_backbone:
            with torch.no_grad():
                out = self.backbone.forward_features(x, **kwargs)
        else:
            out = self.backbone.forward_features(x, **kwargs)
        return self.neck.forward_vit(out) if self.neck is not None else list(out["features"])

    def forward(self, x: Tensor) -> Tensor:
        """Raw decoder output ``(B, out_channels, H, W)`` at the input resolution."""
        feats = self.features(x)
        return self.decoder(feats, tuple(x.shape[-2:]))

    def backbone_for_export(self) -> nn.Module:
        """The (fine-tuned) backbone, for ``evssl export``."""
        return self.backbone

    def backbone_config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` of the backbone."""
        return class_config(self.backbone, self.hparams.get("backbone"))

    def extra_modules(self) -> list[nn.Module]:
        """Task-specific trainable modules besides backbone and decoder (e.g. an auxiliary head)."""
        return []

    def configure_optimizers(self) -> dict[str, Any]:
        """Decoder (+ extra heads, ViT pyramid) and, unless frozen, the backbone at ``lr * backbone_lr_scale``
        (times the layer decay when ``layer_decay`` is set)."""
        extra = [*self.extra_modules(), *([self.neck] if self.neck is not None else [])]
        head = [*self.decoder.parameters(), *(p for m in extra for p in m.parameters())]
        groups: list[dict[str, Any]] = [{"name": "decoder", "params": head}]
        if not self.freeze_backbone:
            groups = self._backbone_groups() + groups
        exclude = list(self.backbone.parameters()) if self.freeze_backbone else ()
        return configure_optimization(self, groups, self.optim, exclude=exclude)

    def _backbone_groups(self) -> list[dict[str, Any]]:
        """Backbone group specs: one group, or the BEiT layer-decay groups of a ViT (``layer_decay``)."""
        return backbone_param_groups(
            self.backbone,
            lr_scale=self.backbone_lr_scale,
            layer_decay=self.layer_decay,
            weight_decay=self.optim.weight_decay,
            policy=self.optim,
        )

    # ----------------------------------------------------------------------------------------- subclass hooks
    def compute_loss(self, batch: dict[str, Any], out: Any) -> dict[str, Tensor]:
        """``{"loss": ..., <parts>}`` of a batch given :meth:`predict_output`."""
        raise NotImplementedError

    def update_metrics(self, stage: str, batch: dict[str, Any], out: Any) -> None:
        """Update the ``stage`` metrics."""
        raise NotImplementedError

    def log_metrics(self, stage: str, batch_size: int) -> None:
        """Log the ``stage`` metric objects (epoch level)."""
        raise NotImplementedError

    def pictures(self, batch: dict[str, Any], out: Any, i: int) -> list[Any]:
        """Prediction and target pictures of sample ``i``."""
        raise NotImplementedError

    def predict_output(self, x: Tensor) -> Any:
        """What the loss and metrics consume (default: :meth:`forward`)."""
        return self(x)

    # --------------------------------------------------------------------------------------------------- steps
    def _step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> Tensor:
        out = self.predict_output(batch["input"].float())
        losses = self.compute_loss(batch, out)
        bs = batch_size_of(batch)
        train = stage == "train"
        for k, v in losses.items():
            self.log(f"{stage}/{k}", v.detach(), prog_bar=k == "loss" and stage != "test", on_step=train,
                     on_epoch=True, batch_size=bs, sync_dist=not train)  # fmt: skip
        self.update_metrics(stage, batch, out)
        self.log_metrics(stage, bs)
        if stage == "val" and batch_idx == 0:
            self._log_pictures(batch, out)
        return losses["loss"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Task loss on ``batch["input"]`` and the batch's dense target."""
        loss = self._step(batch, "train", batch_idx)
        if self._trainer is not None and self.trainer.optimizers:
            lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("train/lr", lr, batch_size=batch_size_of(batch))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss and metrics (``val/...``), pictures of the first batch."""
        self._step(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss and metrics (``test/...``)."""
        self._step(batch, "test", batch_idx)

    def _log_pictures(self, batch: dict[str, Any], out: Any) -> None:
        every = self.log_images_every_n_epochs
        if every <= 0 or self._trainer is None or not self.trainer.is_global_zero or not self.trainer.loggers:
            return
        if self.current_epoch % every:
            return
        from evssl.callbacks.dense_media import side_by_side
        from evssl.callbacks.media import log_images, signed_to_rgb

        images = []
        for i in range(min(self.log_images_num_samples, batch["input"].shape[0])):
            ev = signed_to_rgb(batch["input"][i].detach().float().sum(0).cpu().numpy())
            images.append(side_by_side([ev, *self.pictures(batch, out, i)]))
        name = type(self).__name__.lower()
        log_images(self.trainer, f"val/{name}", images, captions=["input | prediction | target"] * len(images))


# ================================================================================================ segmentation
class _FCNHead(nn.Module):
    """mmseg ``FCNHead`` (one 3x3 conv + norm + ReLU, dropout, 1x1 classifier) for the auxiliary loss."""

    def __init__(self, cin: int, cout: int, channels: int, norm: str = "bn") -> None:
        super().__init__()
        self.conv = ConvNormAct(cin, channels, 3, norm)  # type: ignore[arg-type]
        self.drop = nn.Dropout2d(0.1)
        self.cls = nn.Conv2d(channels, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.drop(self.conv(x)))


class SemanticSegmentation(DenseTask):
    """Semantic segmentation (ECDDP's DSEC-Semantic / DDD17 protocol): UPerNet on the backbone pyramid.

    Loss: cross-entropy + ``dice_weight`` x :func:`dice_loss` (ECDDP: 1 and 1), ignoring ``ignore_index``; with
    ``aux_weight > 0`` an FCN head on the third feature map adds ``aux_weight`` x the same loss (ECDDP: 0.4).
    Metrics (``val/`` and ``test/``, once per epoch; :class:`~evssl.metrics.segmentation.EndTaskMetrics` on one
    confusion matrix): ``miou`` (macro; classes absent from both prediction and target of the whole split are
    skipped, as the official EvDistill ``evaluate.py`` and torchmetrics' ``MulticlassJaccardIndex``), ``macc`` (mean
    class accuracy), ``pixel_acc`` and ``iou_<c>``.

    Args:
        num_semantic_classes: classes of the label maps (11 for the synthetic sets: background + 10 shapes; 11 for
            DSEC-Semantic). Named so that the CLI's ``data.num_classes`` link (recording labels) does not reach it.
        ignore_index: label of unlabelled pixels (255).
        dice_weight: weight of the Dice loss. aux_weight: weight of the auxiliary FCN loss (0 = no aux head).
        target_key: batch key of the label map (``"semantic"``).
        Other arguments: :class:`DenseTask`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_semantic_classes: int = 11,
        ignore_index: int = 255,
        dice_weight: float = 1.0,
        aux_weight: float = 0.0,
        target_key: str = "semantic",
        optim: DenseOptim | None = None,
        **kwargs: Any,
    ) -> None:
        if num_semantic_classes < 2:
            raise ValueError(f"num_semantic_classes must be >= 2, got {num_semantic_classes}")
        super().__init__(backbone, num_semantic_classes, optim=optim if optim is not None else DenseOptim(), **kwargs)
        self.num_semantic_classes = int(num_semantic_classes)
        self.ignore_index = int(ignore_index)
        self.dice_weight = float(dice_weight)
        self.aux_weight = float(aux_weight)
        self.target_key = target_key
        chans = self.feature_channels
        self.aux_head = (
            _FCNHead(
                chans[min(2, len(chans) - 1)],
                num_semantic_classes,
                max(self.decoder_channels // 2, 16),
                self.decoder_norm,
            )
            if aux_weight > 0
            else None
        )
        c = self.num_semantic_classes
        self.eval_metrics = nn.ModuleDict(
            {stage: EndTaskMetrics("segmentation", c, self.ignore_index) for stage in ("val", "test")}
        )

    def extra_modules(self) -> list[nn.Module]:
        return [self.aux_head] if self.aux_head is not None else []

    def predict_output(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.features(x)
        out = {"logits": self.decoder(feats, tuple(x.shape[-2:]))}
        if self.aux_head is not None and self.training:
            aux = self.aux_head(feats[min(2, len(feats) - 1)])
            out["aux"] = F.interpolate(aux, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        return out

    def _seg_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
        if self.dice_weight > 0:
            ce = ce + self.dice_weight * dice_loss(logits, target, self.ignore_index)
        return ce

    def compute_loss(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        target = batch[self.target_key].long()
        loss = self._seg_loss(out["logits"], target)
        parts = {"loss_main": loss.detach()}
        if "aux" in out:
            aux = self._seg_loss(out["aux"], target)
            parts["loss_aux"] = aux.detach()
            loss = loss + self.aux_weight * aux
        return {"loss": loss, **parts}

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, Tensor]) -> None:
        if stage == "train":
            return
        self.eval_metrics[stage].update(out["logits"], batch[self.target_key])

    def log_metrics(self, stage: str, batch_size: int) -> None:
        """Nothing per step: the confusion-matrix metrics are logged at the epoch's end."""

    def on_validation_epoch_end(self) -> None:
        self.eval_metrics["val"].log_epoch(self.log, "val/")

    def on_test_epoch_end(self) -> None:
        self.eval_metrics["test"].log_epoch(self.log, "test/")

    def pictures(self, batch: dict[str, Any], out: dict[str, Tensor], i: int) -> list[Any]:
        from evssl.callbacks.dense_media import label_to_rgb

        c = self.num_semantic_classes
        return [
            label_to_rgb(out["logits"][i].argmax(0), c, self.ignore_index),
            label_to_rgb(batch[self.target_key][i], c, self.ignore_index),
        ]


# ==================================================================================================== flow
class OpticalFlow(DenseTask):
    """Optical flow from one event window (ECDDP's MVSEC / DSEC flow protocol, single-shot decoder).

    The decoder predicts ``flow_scale`` x (dx, dy) in pixels at the input resolution. Loss: :func:`sequence_l1_loss`
    (one prediction = L1 over valid pixels and both channels). Metrics: ``epe`` (mean endpoint error over all valid
    pixels of the split) and ``outlier`` (% of valid pixels with EPE > 3 px and > 5 % of the true magnitude).

    Args:
        flow_scale: multiplier of the decoder output (helps when flows are large).
        gamma: sequence-loss decay (used when several predictions are returned).
        target_key: batch key of the flow ``(B, 2, H, W)`` (``"flow"``); ``"<target_key>_valid"`` ``(B, H, W)``
            bool is used as the valid mask when present (else: finite pixels).
        Other arguments: :class:`DenseTask`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        flow_scale: float = 1.0,
        gamma: float = 0.8,
        target_key: str = "flow",
        optim: RegressionOptim | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, 2, optim=optim if optim is not None else RegressionOptim(), **kwargs)
        self.flow_scale = float(flow_scale)
        self.gamma = float(gamma)
        self.target_key = target_key
        for stage in ("val", "test"):
            setattr(self, f"{stage}_epe", MeanMetric())
            setattr(self, f"{stage}_outlier", MeanMetric())

    def predict_output(self, x: Tensor) -> Tensor:
        return self(x) * self.flow_scale

    def _valid(self, batch: dict[str, Any]) -> Tensor:
        flow = batch[self.target_key]
        valid = torch.isfinite(flow).all(dim=1)
        extra = batch.get(f"{self.target_key}_valid")
        return valid & extra.bool() if extra is not None else valid

    def compute_loss(self, batch: dict[str, Any], out: Tensor) -> dict[str, Tensor]:
        valid = self._valid(batch)
        target = torch.nan_to_num(batch[self.target_key].float())
        loss = sequence_l1_loss(out, target, valid, self.gamma)
        epe, _ = flow_errors(out.detach(), target, valid)
        return {"loss": loss, "batch_epe": epe.mean() if epe.numel() else loss.detach() * 0}

    def update_metrics(self, stage: str, batch: dict[str, Any], out: Tensor) -> None:
        if stage == "train":
            return
        epe, outlier = flow_errors(out, batch[self.target_key], self._valid(batch))
        if epe.numel():
            getattr(self, f"{stage}_epe").update(epe)
            getattr(self, f"{stage}_outlier").update(outlier * 100.0)

    def log_metrics(self, stage: str, batch_size: int) -> None:
        if stage == "train":
            return
        self.log(f"{stage}/epe", getattr(self, f"{stage}_epe"), on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch_size)  # fmt: skip
        self.log(f"{stage}/outlier", getattr(self, f"{stage}_outlier"), on_step=False, on_epoch=True,
                 batch_size=batch_size)  # fmt: skip

    def pictures(self, batch: dict[str, Any], out: Tensor, i: int) -> list[Any]:
        from evssl.callbacks.dense_media import flow_to_rgb

        target = batch[self.target_key][i]
        norm = float(torch.nan_to_num(target.float()).norm(dim=0).max().clamp_min(1e-6))
        return [flow_to_rgb(out[i], norm), flow_to_rgb(target, norm)]


# =================================================================================================== depth
class DepthEstimation(DenseTask):
    """Monocular depth from events (ECDDP's MVSEC protocol after HMNet): the decoder predicts log depth.

    Loss: :func:`scale_invariant_log_loss` (weight 1, ``si_lambda``) + ``gradient_weight`` x
    :func:`gradient_matching_loss` (0.25, 4 scales). Metrics over valid pixels (finite, ``min_depth < d <=
    max_depth``): ``abs_rel`` :math:`\\overline{|\\hat d - d|/d}`, ``rmse`` :math:`\\sqrt{\\overline{(\\hat d - d)^2}}`
    and ``delta1`` = fraction with :math:`\\max(\\hat d/d, d/\\hat d) < 1.25`.

    Args:
        si_lambda: λ of the scale-invariant loss (0.5 = Eigen et al.).
        gradient_weight: weight of the gradient-matching loss. gradient_scales: its scales.
        min_depth, max_depth: valid range of the ground truth (and clamp range of the prediction).
        target_key: batch key of the depth ``(B, H, W)`` in metres (``"depth"``).
        Other arguments: :class:`DenseTask`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        si_lambda: float = 0.5,
        gradient_weight: float = 0.25,
        gradient_scales: int = 4,
        min_depth: float = 1e-3,
        max_depth: float = 1e3,
        target_key: str = "depth",
        optim: RegressionOptim | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, 1, optim=optim if optim is not None else RegressionOptim(), **kwargs)
        self.si_lambda = float(si_lambda)
        self.gradient_weight = float(gradient_weight)
        self.gradient_scales = int(gradient_scales)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.target_key = target_key
        for stage in ("val", "test"):
            setattr(self, f"{stage}_abs_rel", MeanMetric())
            setattr(self, f"{stage}_rmse", MeanSquaredError(squared=False))
            setattr(self, f"{stage}_delta1", MeanMetric())

    def predict_output(self, x: Tensor) -> Tensor:
        """Predicted log depth ``(B, H, W)``."""
        return self(x)[:, 0]

    def _valid(self, depth: Tensor) -> Tensor:
        return torch.isfinite(depth) & (depth > self.min_depth) & (depth <= self.max_depth)

    def compute_loss(self, batch: dict[str, Any], out: Tensor) -> dict[str, Tensor]:
        depth = batch[self.target_key].float()
        valid = self._valid(depth)
        log_t = torch.log(torch.where(valid, depth, torch.ones_like(depth)))
        si = scale_invariant_log_loss(out, log_t, valid, self.si_lambda)
        loss = si
        parts = {"loss_si": si.detach()}
        if self.gradient_weight > 0:
            gm = gradient_matching_loss(out, log_t, valid, self.gradient_scales)
            loss = loss + self.gradient_weight * gm
            parts["loss_grad"] = gm.detach()
        return {"loss": loss, **parts}

    def depth(self, out: Tensor) -> Tensor:
        """Metric depth from the predicted log depth, clamped to ``[min_depth, max_depth]``."""
        return out.float().clamp(max=torch.log(torch.tensor(self.max_depth)).item()).exp().clamp_min(self.min_depth)

    def update_metrics(self, stage: str, batch: dict[str, Any], out: Tensor) -> None:
        if stage == "train":
            return
        depth = batch[self.target_key].float()
        valid = self._valid(depth)
        if not valid.any():
            return
        d, p = depth[valid], self.depth(out)[valid]
        getattr(self, f"{stage}_abs_rel").update((p - d).abs() / d)
        getattr(self, f"{stage}_rmse").update(p, d)
        getattr(self, f"{stage}_delta1").update((torch.maximum(p / d, d / p) < 1.25).float())

    def log_metrics(self, stage: str, batch_size: int) -> None:
        if stage == "train":
            return
        for name in ("abs_rel", "rmse", "delta1"):
            self.log(f"{stage}/{name}", getattr(self, f"{stage}_{name}"), on_step=False, on_epoch=True,
                     prog_bar=name == "abs_rel", batch_size=batch_size)  # fmt: skip

    def pictures(self, batch: dict[str, Any], out: Tensor, i: int) -> list[Any]:
        from evssl.callbacks.dense_media import depth_to_rgb

        depth = batch[self.target_key][i]
        return [depth_to_rgb(self.depth(out[i])), depth_to_rgb(depth, self._valid(depth.float()))]
