r"""EvDistill's teacher stage and the DeepLab networks both EvDistill stages share.

:class:`EvDistillTeacher` trains the image teacher :math:`\mathcal L_T = \mathrm{CE}(T(x_a), y_a)` on labelled
frames only; :class:`~evssl.methods.evdistill.EvDistill` loads its checkpoint (``teacher.*`` keys) and freezes it.
Teacher and student are one family (official code: DeepLabV3+, ResNet-101, output stride 16):
:func:`build_deeplab` makes :class:`~evssl.nn.deeplab.DeepLabV3Plus` for segmentation or
:class:`~evssl.nn.deeplab.DeepLabClassifier` for recognition with the head sizes of
:class:`~evssl.methods.evdistill_options.HeadConfig`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from evssl.methods.evdistill_options import EvDistillOptim, HeadConfig
from evssl.metrics.segmentation import EndTask, EndTaskMetrics
from evssl.nn.deeplab import DeepLabClassifier, DeepLabV3Plus
from evssl.nn.generators import frame01
from evssl.optim import configure_optimization
from evssl.utils.hparams import as_config, batch_size_of, save_hparams

__all__ = [
    "EvDistillTeacher",
    "build_deeplab",
    "end_task_classes",
    "load_teacher_weights",
]


def build_deeplab(task: EndTask, backbone: nn.Module, classes: int, head: HeadConfig) -> nn.Module:
    """DeepLabV3+ (segmentation) or the pooled-logit recognition variant on ``backbone``."""
    if task == "segmentation":
        return DeepLabV3Plus(
            backbone, classes, head.aspp_channels, head.aspp_rates, head.aspp_dropout,
            head.decoder_channels, head.low_level_channels, 0, tuple(head.decoder_dropouts),
        )  # fmt: skip
    if task == "recognition":
        return DeepLabClassifier(backbone, classes, head.aspp_channels, head.aspp_rates, head.aspp_dropout)
    raise ValueError(f"EvDistill task must be 'segmentation' or 'recognition', got {task!r}")


def end_task_classes(task: EndTask, num_semantic_classes: int, num_classes: int) -> int:
    """The class count of ``task`` (``num_semantic_classes`` or ``num_classes``), at least 2."""
    n = num_semantic_classes if task == "segmentation" else num_classes
    if n < 2:
        key = "num_semantic_classes" if task == "segmentation" else "num_classes"
        raise ValueError(f"EvDistill {task} needs {key} >= 2, got {n}")
    return int(n)


def load_teacher_weights(teacher: nn.Module, path: str | Path) -> None:
    """Load an :class:`EvDistillTeacher` checkpoint (its ``teacher.*`` keys) or a plain state dict of the teacher
    network into ``teacher``, strictly; errors name the file."""
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
        teacher.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{path}: teacher weights do not fit teacher_backbone / head: {first}") from None


class EvDistillTeacher(LightningModule):
    """EvDistill teacher stage: :math:`\\mathcal L_T = \\mathrm{CE}(T(x_a), y_a)` on labelled frames only.

    The teacher network is ``self.teacher`` (DeepLabV3+ or the recognition variant on ``backbone``, 3 input
    channels); :class:`~evssl.methods.evdistill.EvDistill` loads it from this module's checkpoint (``teacher.*``
    keys). Batches need ``"frame"`` (uint8) and the labels under ``target_key`` (``"semantic"`` /
    ``"frame_semantic"`` for segmentation, ``"label"`` / ``"frame_label"`` for recognition). Metrics
    (:class:`~evssl.metrics.segmentation.EndTaskMetrics`): ``val/miou``, ``val/macc``, ``val/pixel_acc``,
    ``val/iou_<c>`` (or ``val/top1``, ``val/top5``) of the teacher on frames.

    Args:
        backbone: the teacher's encoder (e.g. ``ResNet(..., output_stride=16)``). Under the CLI its ``in_chans`` is
            linked from ``data.in_channels``, so a teacher-stage config sets a 3-channel representation
            (``VoxelGrid(bins=3)``; the event tensor itself is unused) — or build it in Python with ``in_chans=3``.
        task, num_semantic_classes, num_classes, ignore_index: as :class:`~evssl.methods.evdistill.EvDistill`.
        head: DeepLab head sizes. target_key: batch key of the labels (``None`` = by task).
        optim: optimisation (:class:`~evssl.methods.evdistill_options.EvDistillOptim`,
            :func:`~evssl.optim.configure_optimization`; the skeleton code's SGD 0.9 / 1e-2 / wd 5e-4 poly schedule
            is a cosine here).
    """

    def __init__(
        self,
        backbone: nn.Module,
        task: EndTask = "segmentation",
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
        self.n_classes = end_task_classes(task, num_semantic_classes, num_classes)
        self.ignore_index = int(ignore_index)
        self.head_config = as_config(HeadConfig, head)
        self.optim = as_config(EvDistillOptim, optim)
        if getattr(backbone, "in_chans", 3) != 3:
            raise ValueError(
                f"EvDistillTeacher reads RGB frames: backbone.in_chans must be 3, got {backbone.in_chans} "
                "(under the CLI, give the data module a 3-channel representation, e.g. VoxelGrid(bins=3))"
            )
        self.teacher = build_deeplab(task, backbone, self.n_classes, self.head_config)
        self.target_key = target_key
        self.eval_metrics = nn.ModuleDict(
            {stage: EndTaskMetrics(task, self.n_classes, self.ignore_index) for stage in ("val", "test")}
        )

    def _target(self, batch: dict[str, Any]) -> Tensor:
        keys = [self.target_key] if self.target_key else (
            ["frame_semantic", "semantic"] if self.task == "segmentation" else ["frame_label", "label"])  # fmt: skip
        for k in keys:
            if k in batch:
                return batch[k].long()
        raise KeyError(f"EvDistillTeacher: the batch has none of the label keys {keys} (has {sorted(batch)})")

    def forward(self, frame: Tensor) -> Tensor:
        """Teacher logits of frames (uint8 or float in [0, 1])."""
        return self.teacher(frame01(frame))

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
        self.eval_metrics[stage].update(logits, target)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.eval_metrics["val"].log_epoch(self.log, "val/")

    def on_test_epoch_end(self) -> None:
        self.eval_metrics["test"].log_epoch(self.log, "test/")

    def configure_optimizers(self) -> dict[str, Any]:
        net = self.teacher
        heads = [p for n, p in net.named_parameters() if not n.startswith("backbone.")]
        head = {"name": "head", "params": heads, "lr_scale": float(self.optim.head_lr_scale)}
        groups = [{"name": "backbone", "params": list(net.backbone.parameters())}, head]
        return configure_optimization(self, groups, self.optim)

    def backbone_for_export(self) -> nn.Module:
        """The teacher's encoder (``evssl export`` of a teacher-stage checkpoint)."""
        return self.teacher.backbone
