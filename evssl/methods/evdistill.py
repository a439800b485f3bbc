r"""EvDistill (Wang, Chae, Yoon, Kim, Yoon, *EvDistill: Asynchronous Events to End-task Learning via Bidirectional
Reconstruction-guided Cross-modal Knowledge Distillation*, CVPR 2021, arXiv 2111.12341).

An event **student** learns an end task (semantic segmentation, or recognition) from a frozen image **teacher**
trained on labelled frames, with unlabelled and — by default — unpaired event data. The official repository
(``addisonwang2013/evdistill``) ships evaluation code only; this is a complete training implementation. Notation:
:math:`x_e` event representation, :math:`x_a` frame in :math:`[0, 1]`, :math:`y_a` the frame's labels, :math:`T`
teacher, :math:`S` student, :math:`G_{ei}` E2I, :math:`G_{ie}` I2E.

**Networks** (official code: DeepLabV3+, ResNet-101, output stride 16, 6 DDD17 classes): teacher and student are the
same family, :class:`~evssl.nn.deeplab.DeepLabV3Plus` (or :class:`~evssl.nn.deeplab.DeepLabClassifier` for
recognition) on any ResNet of :mod:`evssl.nn.backbones` (``output_stride=16``); the student's encoder is
``backbone`` (``in_chans`` linked from the event representation), the teacher's is ``teacher_backbone`` (3
channels).

**Teacher stage**: :class:`EvDistillTeacher` trains :math:`\mathcal L_T = \mathrm{CE}(T(x_a), y_a)` on frames only;
``teacher_checkpoint`` loads it into :class:`EvDistill`, where it is frozen (eval mode, ``requires_grad=False``, not
in the optimizer, not exported).

**BMR** (bidirectional modality reconstruction): two trainable generators, E2I :math:`G_{ei}` (events -> an image
the teacher reads, sigmoid range :math:`[0, 1]`) and I2E :math:`G_{ie}` (frame -> an event tensor the student reads);
small U-Nets by default (:class:`~evssl.nn.generators.UNetGenerator`), any module by ``class_path``. Crafted pairs
:math:`(x_e, G_{ei}(x_e))` and :math:`(G_{ie}(x_a), x_a)`. Losses of one batch (weights in :class:`KDConfig`,
:class:`BMRConfig`, :class:`LossConfig`):

.. math::
    \mathcal L = \underbrace{\lambda_{ce}\,\mathrm{CE}(S(G_{ie}(x_a)), y_a)}_{\text{task on crafted events}}
      + \sum_{(s, t)\in P} \big[\lambda_{kd}\,\mathcal L_{KD}(s, t) + \lambda_{dm}\,\mathcal L_{DM}(s, t)
      + \lambda_{ag}\,\mathcal L_{AG}(s, t)\big]
      + \lambda_{rec}\,[\|G_{ei}(x_e) - x_a\|_1 + \|G_{ie}(x_a) - x_e\|_1]_{\text{paired}}
      + \lambda_{cyc}\,[\|G_{ei}(G_{ie}(x_a)) - x_a\|_1 + \|G_{ie}(G_{ei}(x_e)) - x_e\|_1]
      (+ \lambda_{md}\,\mathcal L_{MD} + \lambda_{ev}\,\mathrm{CE}(S(x_e), y_e))

with the pairs :math:`P = \{(S(x_e), T(G_{ei}(x_e))),\ (S(G_{ie}(x_a)), T(x_a))\}` ("event" and "image" pair),
:math:`\mathcal L_{KD}` temperature logit KD (per pixel, :math:`\tau^2`), :math:`\mathcal L_{DM}` distribution
matching of a chosen stage (per-channel spatial-softmax KL or moment matching) and :math:`\mathcal L_{AG}` the
affinity-graph loss (cosine affinities of pooled spatial nodes) — :mod:`evssl.losses.kd`. The reconstruction term is
on only for samples whose frame is the event window's own (``batch["paired"]``); the event-label CE only with
``use_event_labels=True`` (an upper bound, off by default; the student otherwise never sees an event label).
:math:`\mathcal L_{MD}` (mutual distillation, paired samples only) is the symmetric KL between the student's
predictions on :math:`x_e` and on :math:`G_{ie}(x_a)` (evssl's form of the paper's MD variant).

Where the paper's equations were not available, each choice is a switch with its source: ``preset`` sets them in
one place (:data:`PRESETS`): ``paper`` (what the abstract states: BMR trained end to end by the task and KD losses,
so the event-pair KD gradient also flows through the frozen teacher into E2I; no cycle term), ``official`` (as
``paper``, with the affinity graph on the 1x1 ``pointwise`` projection of the logits that the official
``DeepLab_Dual`` declares "used to compute the affinity matrix"), ``small`` (evssl's CPU recipe: adds the cycle term so
that unpaired generators get a reconstruction signal, τ = 2).

Evaluation (student only, on events with their own labels): confusion-matrix mIoU with ignore index (the official
``evaluate.py``: ``IoU_c = CM_cc / (Σ_j CM_cj + Σ_i CM_ic − CM_cc)``, ``nanmean`` over classes), pixel accuracy and
per-class IoU; recognition: top-1 / top-5. The teacher on the frames is logged as the reference row
(``val/teacher_*``).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from evssl.losses.kd import (
    affinity_kd,
    l1_reconstruction,
    logit_kd,
    moment_matching,
    spatial_softmax_kl,
    ssim_loss,
)
from evssl.methods.base import PretrainMethod, SSLOutput, apply_preset
from evssl.nn.deeplab import DeepLabClassifier, DeepLabV3Plus, PointwiseProjection
from evssl.nn.generators import OutputActivation, UNetGenerator
from evssl.nn.probe import ProbeConfig
from evssl.optim import OptimConfig, configure_optimization
from evssl.utils.hparams import as_config, batch_size_of, save_hparams

__all__ = [
    "PRESETS",
    "BMRConfig",
    "ConfusionMatrixMetrics",
    "EvDistill",
    "EvDistillOptim",
    "EvDistillTeacher",
    "HeadConfig",
    "KDConfig",
    "LossConfig",
    "Preset",
    "iou_from_confusion",
    "naive_e2i",
    "naive_i2e",
]

Task = Literal["segmentation", "recognition"]
Preset = Literal["paper", "official", "small"]
Stage = Literal["aspp", "decoder", "logits", "pointwise", "layer1", "layer2", "layer3", "layer4"]


# ================================================================================================ option groups
@dataclass
class HeadConfig:
    """DeepLab head sizes shared by teacher and student (official: ASPP 256, rates 6/12/18, decoder 256, 48)."""

    aspp_channels: int = 256
    aspp_rates: tuple[int, int, int] = (6, 12, 18)
    aspp_dropout: float = 0.5
    decoder_channels: int = 256
    low_level_channels: int = 48
    decoder_dropouts: tuple[float, float] = (0.5, 0.1)


@dataclass
class BMRConfig:
    """Bidirectional modality reconstruction (E2I and I2E generators).

    Attributes:
        enabled: learnable generators; ``False`` replaces them by the fixed maps :func:`naive_e2i` /
            :func:`naive_i2e` (the "BMR off" ablation; evssl choice — the paper's ablation setting is not available).
        width, depth: default U-Net generators' first width and levels.
        e2i_activation: E2I output range (``sigmoid`` = frames in [0, 1], the official loader's ``ToTensor``).
        i2e_activation, i2e_scale: I2E output range; match the event representation (``sigmoid`` for
            ``Histogram(normalize=True)`` in [0, 1], ``tanh`` with a scale for signed voxel grids).
        rec_weight: L1 reconstruction on paired samples. ssim_weight: ``(1 - SSIM) / 2`` on the E2I image (paired).
        cycle_weight: L1 cycle consistency ``G_ei(G_ie(x_a)) ≈ x_a``, ``G_ie(G_ei(x_e)) ≈ x_e`` (evssl choice;
            ``None`` = preset).
        kd_through_teacher: the event-pair KD gradient flows through the frozen teacher into E2I (the abstract: BMR
            is trained end to end by the task and KD losses); ``False`` detaches the teacher's side (``None`` =
            preset).
    """

    enabled: bool = True
    width: int = 16
    depth: int = 2
    e2i_activation: OutputActivation = "sigmoid"
    i2e_activation: OutputActivation = "sigmoid"
    i2e_scale: float = 1.0
    rec_weight: float = 1.0
    ssim_weight: float = 0.0
    cycle_weight: float | None = None
    kd_through_teacher: bool | None = None


@dataclass
class KDConfig:
    """The three KD families, each with its weight (0 = off), plus optional mutual distillation.

    Attributes:
        logit_weight, tau: temperature logit KD (``None`` τ = preset).
        dist_weight, dist_form, dist_stage, dist_tau: distribution matching; ``spatial_softmax`` (per-channel
            spatial-softmax KL) or ``moments`` (per-channel mean / std); ``None`` form = preset.
        affinity_weight, affinity_stage, affinity_nodes: affinity-graph KD on a stage, pooled to at most
            ``affinity_nodes`` nodes (memory O(B N²)); ``pointwise`` = the 1x1 projection of the logits.
        pairs: which crafted pairs are distilled: ``"event"`` (S(x_e) vs T(E2I(x_e))), ``"image"`` (S(I2E(x_a))
            vs T(x_a)).
        mutual_weight: mutual distillation between S(x_e) and S(I2E(x_a)) on paired samples (0 = off).
    """

    logit_weight: float = 1.0
    tau: float | None = None
    dist_weight: float = 1.0
    dist_form: Literal["spatial_softmax", "moments"] | None = None
    dist_stage: Stage = "decoder"
    dist_tau: float = 1.0
    affinity_weight: float = 1.0
    affinity_stage: Stage | None = None
    affinity_nodes: int = 256
    pairs: tuple[str, ...] = ("event", "image")
    mutual_weight: float = 0.0


@dataclass
class LossConfig:
    """Task terms: CE on I2E-crafted events with the frame's labels; CE on the events' own labels (upper bound)."""

    ce_weight: float = 1.0
    event_label_weight: float = 1.0


@dataclass
class EvDistillOptim(OptimConfig):
    """EvDistill default optimisation: AdamW, lr 1e-3, weight decay 1e-4 (the DeepLab skeleton of the official code
    uses SGD 0.9, lr 1e-2, wd 5e-4 — the paper-scale configs set that)."""

    weight_decay: float = 1e-4


#: The faithfulness switches of each preset (fields left ``None`` in the option groups take these values).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"tau": 1.0, "dist_form": "spatial_softmax", "affinity_stage": "decoder", "cycle_weight": 0.0,
              "kd_through_teacher": True},
    "official": {"tau": 1.0, "dist_form": "spatial_softmax", "affinity_stage": "pointwise", "cycle_weight": 0.0,
                 "kd_through_teacher": True},
    "small": {"tau": 2.0, "dist_form": "spatial_softmax", "affinity_stage": "decoder", "cycle_weight": 1.0,
              "kd_through_teacher": True},
}  # fmt: skip


def resolve_preset(preset: str, bmr: BMRConfig, kd: KDConfig) -> tuple[BMRConfig, KDConfig]:
    """Fill the ``None`` switches of ``bmr`` and ``kd`` from :data:`PRESETS` (explicit values win)."""
    return apply_preset(bmr, PRESETS, preset, "EvDistill"), apply_preset(kd, PRESETS, preset, "EvDistill")


# ================================================================================================ pure helpers
def iou_from_confusion(cm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(per-class IoU, mIoU, pixel accuracy)`` of a confusion matrix ``cm[target, pred]`` (official
    ``evaluate.py``): :math:`IoU_c = \frac{CM_{cc}}{\sum_j CM_{cj} + \sum_i CM_{ic} - CM_{cc}}` (NaN for a class
    absent from targets and predictions), mIoU = nanmean, pixel accuracy = trace / total."""
    cm = cm.double()
    diag = torch.diagonal(cm)
    denom = cm.sum(0) + cm.sum(1) - diag
    iou = torch.where(denom > 0, diag / denom.clamp_min(1e-12), torch.full_like(diag, float("nan")))
    valid = ~torch.isnan(iou)
    miou = iou[valid].mean() if valid.any() else torch.tensor(float("nan"), dtype=cm.dtype)
    acc = diag.sum() / cm.sum().clamp_min(1.0)
    return iou.float(), miou.float(), acc.float()


def naive_e2i(x_e: Tensor) -> Tensor:
    r"""Fixed "BMR off" E2I: :math:`\sum_c |x_{e,c}|` scaled to [0, 1] per sample (by its maximum), as 3 channels."""
    m = x_e.abs().sum(1, keepdim=True)
    m = m / m.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
    return m.expand(-1, 3, -1, -1)


def naive_i2e(x_a: Tensor, channels: int) -> Tensor:
    r"""Fixed "BMR off" I2E: the grey frame :math:`\bar x_a` (mean over RGB) repeated over the event channels."""
    return x_a.mean(1, keepdim=True).expand(-1, channels, -1, -1)


class ConfusionMatrixMetrics(MulticlassConfusionMatrix):
    """Accumulated confusion matrix (``torchmetrics.MulticlassConfusionMatrix``, ignore index, synced across
    processes) whose ``compute()`` gives ``{"iou", "miou", "pixel_acc"}`` (:func:`iou_from_confusion`)."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__(num_classes, ignore_index=ignore_index)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        iou, miou, acc = iou_from_confusion(super().compute())
        return {"iou": iou, "miou": miou, "pixel_acc": acc}


def _frame01(frame: Tensor) -> Tensor:
    """uint8 frames (B, 3, H, W) -> float in [0, 1] (the official loader: ``ToTensor``, no mean/std)."""
    return frame.float() / 255.0 if not frame.is_floating_point() else frame.float()


def _build_net(task: Task, backbone: nn.Module, classes: int, head: HeadConfig) -> nn.Module:
    if task == "segmentation":
        return DeepLabV3Plus(
            backbone, classes, head.aspp_channels, head.aspp_rates, head.aspp_dropout,
            head.decoder_channels, head.low_level_channels, 0, tuple(head.decoder_dropouts),
        )  # fmt: skip
    if task == "recognition":
        return DeepLabClassifier(backbone, classes, head.aspp_channels, head.aspp_rates, head.aspp_dropout)
    raise ValueError(f"EvDistill task must be 'segmentation' or 'recognition', got {task!r}")


def _classes(task: Task, num_semantic_classes: int, num_classes: int) -> int:
    n = num_semantic_classes if task == "segmentation" else num_classes
    if n < 2:
        key = "num_semantic_classes" if task == "segmentation" else "num_classes"
        raise ValueError(f"EvDistill {task} needs {key} >= 2, got {n}")
    return int(n)


class _EvalMixin:
    """Student / teacher metrics shared by :class:`EvDistill` and :class:`EvDistillTeacher`."""

    task: Task
    n_classes: int
    ignore_index: int

    def _make_metrics(self, names: tuple[str, ...]) -> None:
        for stage in ("val", "test"):
            for who in names:
                if self.task == "segmentation":
                    m: nn.Module = ConfusionMatrixMetrics(self.n_classes, self.ignore_index)
                    setattr(self, f"{stage}_{who}_seg", m)
                else:
                    setattr(self, f"{stage}_{who}_top1", MulticlassAccuracy(self.n_classes, top_k=1, average="micro"))
                    k = min(5, self.n_classes)
                    setattr(self, f"{stage}_{who}_top5", MulticlassAccuracy(self.n_classes, top_k=k, average="micro"))

    def _update(self, stage: str, who: str, logits: Tensor, target: Tensor) -> None:
        if self.task == "segmentation":
            getattr(self, f"{stage}_{who}_seg").update(logits.argmax(1), target.long())
        else:
            getattr(self, f"{stage}_{who}_top1").update(logits, target.long())
            getattr(self, f"{stage}_{who}_top5").update(logits, target.long())

    def _log_epoch(self, stage: str, who: str, prefix: str) -> None:
        log = self.log  # type: ignore[attr-defined]
        if self.task == "segmentation":
            metric = getattr(self, f"{stage}_{who}_seg")
            if not metric._update_count:
                return
            out = metric.compute()
            log(f"{stage}/{prefix}miou", out["miou"], prog_bar=not prefix)
            log(f"{stage}/{prefix}pixel_acc", out["pixel_acc"])
            for c, v in enumerate(out["iou"].tolist()):
                if v == v:  # not NaN
                    log(f"{stage}/{prefix}iou_{c}", v)
            metric.reset()
        else:
            for k in ("top1", "top5"):
                metric = getattr(self, f"{stage}_{who}_{k}")
                if metric._update_count:
                    log(f"{stage}/{prefix}{k}", metric.compute(), prog_bar=not prefix and k == "top1")
                    metric.reset()


# ================================================================================================ teacher stage
class EvDistillTeacher(_EvalMixin, LightningModule):
    """EvDistill teacher stage: :math:`\\mathcal L_T = \\mathrm{CE}(T(x_a), y_a)` on labelled frames only.

    The teacher network is ``self.teacher`` (DeepLabV3+ or the recognition variant on ``backbone``, 3 input
    channels); :class:`EvDistill` loads it from this module's checkpoint (``teacher.*`` keys). Batches need
    ``"frame"`` (uint8) and the labels under ``target_key`` (``"semantic"`` / ``"frame_semantic"`` for
    segmentation, ``"label"`` / ``"frame_label"`` for recognition). Metrics: ``val/miou``, ``val/pixel_acc``,
    ``val/iou_<c>`` (or ``val/top1``, ``val/top5``) of the teacher on frames.

    Args:
        backbone: the teacher's encoder (e.g. ``ResNet(..., output_stride=16)``). Under the CLI its ``in_chans`` is
            linked from ``data.in_channels``, so a teacher-stage config sets a 3-channel representation
            (``VoxelGrid(bins=3)``; the event tensor itself is unused) — or build it in Python with ``in_chans=3``.
        task, num_semantic_classes, num_classes, ignore_index: as :class:`EvDistill`.
        head: DeepLab head sizes. target_key: batch key of the labels (``None`` = by task).
        optim: optimisation (:class:`EvDistillOptim`, :func:`~evssl.optim.configure_optimization`; the skeleton
            code's SGD 0.9 / 1e-2 / wd 5e-4 poly schedule is a cosine here).
    """

    def __init__(
        self,
        backbone: nn.Module,
        task: Task = "segmentation",
        num_semantic_classes: int = 11,
        num_classes: int = 0,
        ignore_index: int = 255,
        head: HeadConfig | None = None,
        target_key: str | None = None,
        optim: EvDistillOptim | None = None,
    ) -> None:
        super().__init__()
        save_hparams(self, inspect.currentframe())
        self.task = task
        self.n_classes = _classes(task, num_semantic_classes, num_classes)
        self.ignore_index = int(ignore_index)
        self.head_config = as_config(HeadConfig, head)
        self.optim = as_config(EvDistillOptim, optim)
        if getattr(backbone, "in_chans", 3) != 3:
            raise ValueError(
                f"EvDistillTeacher reads RGB frames: backbone.in_chans must be 3, got {backbone.in_chans} "
                "(under the CLI, give the data module a 3-channel representation, e.g. VoxelGrid(bins=3))"
            )
        self.teacher = _build_net(task, backbone, self.n_classes, self.head_config)
        self.target_key = target_key
        self._make_metrics(("teacher",))

    def _target(self, batch: dict[str, Any]) -> Tensor:
        keys = [self.target_key] if self.target_key else (
            ["frame_semantic", "semantic"] if self.task == "segmentation" else ["frame_label", "label"])  # fmt: skip
        for k in keys:
            if k in batch:
                return batch[k].long()
        raise KeyError(f"EvDistillTeacher: the batch has none of the label keys {keys} (has {sorted(batch)})")

    def forward(self, frame: Tensor) -> Tensor:
        """Teacher logits of frames (uint8 or float in [0, 1])."""
        return self.teacher(_frame01(frame))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["frame"])
        loss = F.cross_entropy(logits.float(), self._target(batch), ignore_index=self.ignore_index)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size_of(batch))
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        logits = self(batch["frame"])
        target = self._target(batch)
        self.log(f"{stage}/loss", F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index),
                 batch_size=batch_size_of(batch), sync_dist=True)  # fmt: skip
        self._update(stage, "teacher", logits, target)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", "teacher", "")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", "teacher", "")

    def configure_optimizers(self) -> dict[str, Any]:
        net = self.teacher
        heads = [p for n, p in net.named_parameters() if not n.startswith("backbone.")]
        groups = [{"name": "backbone", "params": list(net.backbone.parameters())}, {"name": "head", "params": heads}]
        return configure_optimization(self, groups, self.optim)

    def backbone_for_export(self) -> nn.Module:
        """The teacher's encoder (``evssl export`` of a teacher-stage checkpoint)."""
        return self.teacher.backbone


# ================================================================================================ the method
class EvDistill(_EvalMixin, PretrainMethod):
    """EvDistill: frozen image teacher -> event student through BMR-crafted pairs and three KD families.

    The full objective and the sources of every choice are in the module docstring.

    Args:
        backbone: the student's encoder (``in_chans`` linked from the event representation by the CLI); ``evssl
            export`` writes it, and it loads into :class:`~evssl.tasks.SemanticSegmentation` by ``pretrained``.
        teacher_backbone: the teacher's encoder (3 channels), same family as the student.
        task: ``"segmentation"`` (DeepLabV3+) or ``"recognition"`` (pooled logits).
        num_semantic_classes: segmentation classes (6 on DDD17, 11 on the synthetic sets).
        num_classes: recognition classes (linked from ``data.num_classes``).
        ignore_index: unlabelled pixels (255).
        teacher_checkpoint: an :class:`EvDistillTeacher` checkpoint (``teacher.*`` keys) or a plain state dict of
            the teacher network, loaded at ``setup``; ``None`` leaves the teacher random (warned: smoke runs only).
        preset: ``"paper"``, ``"official"`` or ``"small"`` (:data:`PRESETS`).
        head: DeepLab head sizes of both networks. bmr, kd, loss: option groups (:class:`BMRConfig`,
            :class:`KDConfig`, :class:`LossConfig`).
        e2i, i2e: generator modules (``None`` = :class:`~evssl.nn.generators.UNetGenerator` from ``bmr``).
        use_event_labels: train the student also on its events' own labels (upper bound; the sampler must provide
            them, :class:`~evssl.data.views.evdistill.CrossModalPairs` ``use_event_labels``).
        head_lr_scale: lr multiplier of the student's ASPP + decoder (the official skeleton uses 10).
        optim: optimisation (:class:`EvDistillOptim`). There is no online probe: EvDistill evaluates the student
            itself (mIoU / top-1 on events), so the CLI's ``probe.classes`` link has no target here.
    """

    def __init__(
        self,
        backbone: nn.Module,
        teacher_backbone: nn.Module,
        task: Task = "segmentation",
        num_semantic_classes: int = 11,
        num_classes: int = 0,
        ignore_index: int = 255,
        teacher_checkpoint: str | None = None,
        preset: Preset = "paper",
        head: HeadConfig | None = None,
        bmr: BMRConfig | None = None,
        kd: KDConfig | None = None,
        loss: LossConfig | None = None,
        e2i: nn.Module | None = None,
        i2e: nn.Module | None = None,
        use_event_labels: bool = False,
        head_lr_scale: float = 1.0,
        optim: EvDistillOptim | None = None,
    ) -> None:
        super().__init__(backbone, optim=optim, probe=ProbeConfig(enabled=False), default_optim=EvDistillOptim())
        save_hparams(self, inspect.currentframe())
        for key in ("ema", "probe"):  # the base's arguments that EvDistill does not take
            self.hparams.pop(key, None)
            self._hparams_initial.pop(key, None)
        self.task = task
        self.n_classes = _classes(task, num_semantic_classes, num_classes)
        self.ignore_index = int(ignore_index)
        self.preset = preset
        self.head_config = as_config(HeadConfig, head)
        self.bmr, self.kd = resolve_preset(preset, as_config(BMRConfig, bmr), as_config(KDConfig, kd))
        self.loss_config = as_config(LossConfig, loss)
        self.use_event_labels = bool(use_event_labels)
        self.head_lr_scale = float(head_lr_scale)
        self.teacher_checkpoint = teacher_checkpoint
        bad = set(self.kd.pairs) - {"event", "image"}
        if bad:
            raise ValueError(f"EvDistill kd.pairs must be drawn from ('event', 'image'), got {sorted(bad)}")
        ev_ch = getattr(backbone, "in_chans", None)
        if not isinstance(ev_ch, int):
            raise ValueError("EvDistill needs backbone.in_chans (the event representation's channels)")
        if getattr(teacher_backbone, "in_chans", 3) != 3:
            raise ValueError(f"EvDistill's teacher reads RGB frames: teacher_backbone.in_chans must be 3, "
                             f"got {teacher_backbone.in_chans}")  # fmt: skip
        self.event_channels = ev_ch
        self.student = _build_net(task, backbone, self.n_classes, self.head_config)
        self.teacher = _build_net(task, teacher_backbone, self.n_classes, self.head_config)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.e2i: nn.Module | None = None
        self.i2e: nn.Module | None = None
        if self.bmr.enabled:
            b = self.bmr
            self.e2i = e2i if e2i is not None else UNetGenerator(ev_ch, 3, b.width, b.depth, b.e2i_activation)
            self.i2e = i2e if i2e is not None else UNetGenerator(3, ev_ch, b.width, b.depth, b.i2e_activation,
                                                                 b.i2e_scale)  # fmt: skip
        elif e2i is not None or i2e is not None:
            raise ValueError("EvDistill: e2i / i2e generators given with bmr.enabled=false")
        uses_pointwise = "pointwise" in (self.kd.affinity_stage, self.kd.dist_stage)
        self.pointwise = PointwiseProjection(self.n_classes) if uses_pointwise else None
        # distribution matching needs equal channels: a 1x1 adapter on the student side when they differ
        self.dist_adapter = self._make_adapter() if self.kd.dist_weight > 0 else None
        self._teacher_loaded = False
        self._make_metrics(("student", "teacher"))

    # ------------------------------------------------------------------------------------------------ setup
    def _make_adapter(self) -> nn.Module | None:
        """A 1x1 conv from the student's to the teacher's channels at ``kd.dist_stage`` when they differ (probed
        with a zero input in eval mode, so no BN statistics change)."""
        stage = self.kd.dist_stage
        probed = [m for m in (self.student, self.teacher, self.pointwise) if m is not None]
        modes = [m.training for m in probed]
        with torch.no_grad():
            for m in probed:
                m.eval()
            xs = torch.zeros(1, self.event_channels, 32, 32)
            cs = self._stage(self.student.forward_all(xs), stage).shape[1]
            ct = self._stage(self.teacher.forward_all(torch.zeros(1, 3, 32, 32)), stage).shape[1]
        for m, mode in zip(probed, modes, strict=True):
            m.train(mode)
        return None if cs == ct else nn.Conv2d(cs, ct, 1)

    def load_teacher(self, path: str | Path) -> None:
        """Load teacher weights (``EvDistillTeacher`` checkpoint or plain state dict), strictly; then freeze."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"EvDistill teacher_checkpoint not found: {path} (train it with "
                                    "experiments/evdistill/teacher_*.yaml)")  # fmt: skip
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: teacher_checkpoint holds no state dict")
        if any(k.startswith("teacher.") for k in state):
            state = {k[len("teacher.") :]: v for k, v in state.items() if k.startswith("teacher.")}
        try:
            self.teacher.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"{path}: teacher weights do not fit teacher_backbone / head: {first}") from None
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._teacher_loaded = True

    def setup(self, stage: str) -> None:
        """Load the teacher checkpoint once (a resumed checkpoint then overwrites it with the same weights)."""
        super().setup(stage)
        if self.teacher_checkpoint and not self._teacher_loaded:
            self.load_teacher(self.teacher_checkpoint)
        elif not self.teacher_checkpoint and stage == "fit":
            rank_zero_warn("EvDistill: no teacher_checkpoint; distilling from a random teacher (smoke runs only)")
        self.teacher.requires_grad_(False)

    def train(self, mode: bool = True) -> EvDistill:
        """The teacher stays in eval mode (frozen BN statistics, no dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    # ------------------------------------------------------------------------------------------------ parts
    def learnable_params(self) -> list[dict[str, Any]]:
        """Student encoder, student head (``head_lr_scale``), generators, projections; never the teacher."""
        groups = super().learnable_params()
        head = [p for n, p in self.student.named_parameters() if not n.startswith("backbone.")]
        groups.append({"name": "student_head", "params": head, "lr_scale": self.head_lr_scale})
        gens = [p for m in (self.e2i, self.i2e) if m is not None for p in m.parameters()]
        if gens:
            groups.append({"name": "bmr", "params": gens})
        extra = [p for m in (self.pointwise, self.dist_adapter) if m is not None for p in m.parameters()]
        if extra:
            groups.append({"name": "kd_projections", "params": extra})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        """The base optimizer over :meth:`learnable_params`; teacher parameters are excluded (an error if listed)."""
        self.teacher.requires_grad_(False)
        out = configure_optimization(self, self.learnable_params(), self.optim, exclude=list(self.teacher.parameters()))
        self._total_steps = out["lr_scheduler"]["scheduler"].total_steps
        return out

    def backbone_for_export(self) -> nn.Module:
        """The student's encoder alone (no teacher, no generators)."""
        return self.backbone

    def crafted_pairs(self, x_e: Tensor, x_a: Tensor) -> tuple[Tensor, Tensor]:
        """``(E2I(x_e), I2E(x_a))``: an image for the teacher (3 ch, [0, 1]) and events for the student."""
        if self.e2i is not None and self.i2e is not None:
            return self.e2i(x_e), self.i2e(x_a)
        return naive_e2i(x_e), naive_i2e(x_a, self.event_channels)

    def _stage(self, out: dict[str, Any], stage: str) -> Tensor:
        if stage == "logits":
            return out["logits_lowres"] if "logits_lowres" in out else out["logits"][..., None, None]
        if stage == "pointwise":
            if self.pointwise is None:
                raise ValueError("pointwise stage without the projection")
            z = out["logits_lowres"] if "logits_lowres" in out else out["logits"][..., None, None]
            return self.pointwise(z)
        if stage.startswith("layer"):
            return out["features"][int(stage[5:]) - 1]
        return out[stage]

    def _kd_terms(self, s: dict[str, Any], t: dict[str, Any], through_teacher: bool) -> dict[str, Tensor]:
        kd = self.kd
        det = not through_teacher
        out: dict[str, Tensor] = {}
        if kd.logit_weight > 0:
            out["logit"] = logit_kd(s["logits"], t["logits"], float(kd.tau), detach_teacher=det)  # type: ignore[arg-type]
        if kd.dist_weight > 0:
            fs, ft = self._stage(s, kd.dist_stage), self._stage(t, kd.dist_stage)
            if self.dist_adapter is not None:
                fs = self.dist_adapter(fs)
            if kd.dist_form == "moments":
                out["dist"] = moment_matching(fs, ft, detach_teacher=det)
            else:
                out["dist"] = spatial_softmax_kl(fs, ft, kd.dist_tau, detach_teacher=det)
        if kd.affinity_weight > 0:
            fs, ft = self._stage(s, kd.affinity_stage), self._stage(t, kd.affinity_stage)  # type: ignore[arg-type]
            out["affinity"] = affinity_kd(fs, ft, kd.affinity_nodes, detach_teacher=det)
        return out

    # ------------------------------------------------------------------------------------------------ training
    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """The objective of the module docstring on one batch (``"input"``, ``"frame"``, frame labels, ``"paired"``)."""
        x_e = batch["input"].float()
        x_a = _frame01(batch["frame"])
        y_a = batch["frame_semantic" if self.task == "segmentation" else "frame_label"].long()
        b = x_e.shape[0]
        paired = torch.as_tensor(batch.get("paired", torch.zeros(b, dtype=torch.bool)), device=x_e.device).bool()
        xa_hat, xe_hat = self.crafted_pairs(x_e, x_a)
        s_e = self.student.forward_all(x_e)
        s_c = self.student.forward_all(xe_hat)
        through = bool(self.bmr.kd_through_teacher) and self.e2i is not None
        self.teacher.eval()
        if through:
            t_c = self.teacher.forward_all(xa_hat)  # frozen weights; the gradient reaches E2I
        else:
            with torch.no_grad():
                t_c = self.teacher.forward_all(xa_hat.detach())
        with torch.no_grad():
            t_a = self.teacher.forward_all(x_a)

        lc, kd, bm = self.loss_config, self.kd, self.bmr
        logs: dict[str, Tensor] = {}
        ce = F.cross_entropy(s_c["logits"].float(), y_a, ignore_index=self.ignore_index)
        total = lc.ce_weight * ce
        logs["ce_crafted"] = ce.detach()
        if self.use_event_labels:
            key = "semantic" if self.task == "segmentation" else "label"
            if key not in batch:
                raise KeyError(f"EvDistill use_event_labels=true but the batch has no {key!r} "
                               "(set the sampler's use_event_labels too)")  # fmt: skip
            ce_e = F.cross_entropy(s_e["logits"].float(), batch[key].long(), ignore_index=self.ignore_index)
            total = total + lc.event_label_weight * ce_e
            logs["ce_events"] = ce_e.detach()
        weights = {"logit": kd.logit_weight, "dist": kd.dist_weight, "affinity": kd.affinity_weight}
        pairs = {"event": (s_e, t_c, through), "image": (s_c, t_a, False)}
        for name in kd.pairs:
            s, t, thr = pairs[name]
            for term, value in self._kd_terms(s, t, thr).items():
                total = total + weights[term] * value
                logs[f"kd_{term}_{name}"] = value.detach()
        if self.e2i is not None and self.i2e is not None:
            if bm.rec_weight > 0 and paired.any():
                rec = l1_reconstruction(xa_hat, x_a, paired) + l1_reconstruction(xe_hat, x_e, paired)
                total = total + bm.rec_weight * rec
                logs["rec_l1"] = rec.detach()
            if bm.ssim_weight > 0 and paired.any():
                ss = ssim_loss(xa_hat, x_a, 1.0, paired)
                total = total + bm.ssim_weight * ss
                logs["rec_ssim"] = ss.detach()
            if bm.cycle_weight and bm.cycle_weight > 0:
                cyc = l1_reconstruction(self.e2i(xe_hat), x_a) + l1_reconstruction(self.i2e(xa_hat), x_e)
                total = total + bm.cycle_weight * cyc
                logs["cycle_l1"] = cyc.detach()
        if kd.mutual_weight > 0 and paired.any():
            m = paired
            za, zb = s_e["logits"][m], s_c["logits"][m]
            md = 0.5 * (logit_kd(za, zb, 1.0, detach_teacher=False) + logit_kd(zb, za, 1.0, detach_teacher=False))
            total = total + kd.mutual_weight * md
            logs["mutual"] = md.detach()
        return SSLOutput(loss=total, logs=logs)

    # ------------------------------------------------------------------------------------------------ evaluation
    def forward(self, x_e: Tensor) -> Tensor:
        """Student prediction on events (what runs at test time)."""
        return self.student(x_e)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        key = "semantic" if self.task == "segmentation" else "label"
        if key in batch:
            logits = self.student(batch["input"].float())
            self._update(stage, "student", logits, batch[key])
        fkey = "frame_semantic" if self.task == "segmentation" else "frame_label"
        if "frame" in batch and (fkey in batch or key in batch):
            with torch.no_grad():
                t = self.teacher(_frame01(batch["frame"]))
            self._update(stage, "teacher", t, batch[fkey] if fkey in batch else batch[key])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Student on events (``val/miou`` ...), teacher on frames (``val/teacher_miou`` ...)."""
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """As :meth:`validation_step`, under ``test/``."""
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", "student", "")
        self._log_epoch("val", "teacher", "teacher_")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", "student", "")
        self._log_epoch("test", "teacher", "teacher_")

    @torch.no_grad()
    def media(self, batch: dict[str, Any], num: int = 4) -> dict[str, Tensor]:
        """Tensors for pictures of the first ``num`` samples: ``events``, ``e2i``, ``i2e``, ``frame``, ``teacher``,
        ``student`` (predicted labels or class ids), ``label`` (when present)."""
        x_e = batch["input"][:num].float()
        x_a = _frame01(batch["frame"][:num])
        e2i, i2e = self.crafted_pairs(x_e, x_a)
        out = {"events": x_e, "e2i": e2i, "i2e": i2e, "frame": x_a,
               "teacher": self.teacher(x_a).argmax(1), "student": self.student(x_e).argmax(1)}  # fmt: skip
        key = "semantic" if self.task == "segmentation" else "label"
        if key in batch:
            out["label"] = batch[key][:num]
        return {k: v.detach().cpu() for k, v in out.items()}

    def option_groups(self) -> dict[str, dict[str, Any]]:
        """The resolved option groups (after the preset), for logs and reports."""
        return {"head": asdict(self.head_config), "bmr": asdict(self.bmr), "kd": asdict(self.kd),
                "loss": asdict(self.loss_config)}  # fmt: skip
