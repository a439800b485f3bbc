r"""Semantic-segmentation and recognition metrics shared by the methods and the transfer tasks.

* :func:`iou_from_confusion` — the official EvDistill ``evaluate.py`` (and mmseg) form: on a confusion matrix
  ``cm[target, pred]`` (ignored pixels already dropped),
  :math:`IoU_c = \frac{CM_{cc}}{\sum_j CM_{cj} + \sum_i CM_{ic} - CM_{cc}}`, NaN for a class absent from targets and
  predictions; mIoU = ``nanmean``; pixel accuracy = trace / total.
* :func:`class_accuracy_from_confusion` — mean class accuracy :math:`\overline{CM_{cc} / \sum_j CM_{cj}}` over the
  classes seen in targets or predictions (a class only predicted scores 0): torchmetrics' ``MulticlassAccuracy``
  macro rule.
* :class:`ConfusionMatrixMetrics` — the accumulated (process-synced) confusion matrix whose ``compute()`` gives all
  of them; :class:`EndTaskMetrics` — one predictor's metrics on one split (segmentation: that matrix; recognition:
  top-1 / top-5), logged under one prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

__all__ = [
    "ConfusionMatrixMetrics",
    "EndTask",
    "EndTaskMetrics",
    "class_accuracy_from_confusion",
    "iou_from_confusion",
]

EndTask = Literal["segmentation", "recognition"]


def iou_from_confusion(cm: Tensor, exclude: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(per-class IoU, mIoU, pixel accuracy)`` of a confusion matrix ``cm[target, pred]`` (module docstring);
    class ``exclude`` (if given) gets a NaN IoU and stays out of the mean."""
    cm = cm.double()
    diag = torch.diagonal(cm)
    denom = cm.sum(0) + cm.sum(1) - diag
    iou = torch.where(denom > 0, diag / denom.clamp_min(1e-12), torch.full_like(diag, float("nan")))
    if exclude is not None:
        iou[exclude] = float("nan")
    valid = ~torch.isnan(iou)
    miou = iou[valid].mean() if valid.any() else torch.tensor(float("nan"), dtype=cm.dtype)
    acc = diag.sum() / cm.sum().clamp_min(1.0)
    return iou.float(), miou.float(), acc.float()


def class_accuracy_from_confusion(cm: Tensor) -> Tensor:
    """Mean class accuracy of ``cm[target, pred]`` over the classes present in targets or predictions (0 if none)."""
    cm = cm.double()
    diag = torch.diagonal(cm)
    rows = cm.sum(1)
    acc = torch.where(rows > 0, diag / rows.clamp_min(1e-12), torch.zeros_like(diag))
    seen = (rows + cm.sum(0)) > 0
    return (acc[seen].sum() / seen.sum().clamp_min(1)).float()


class ConfusionMatrixMetrics(MulticlassConfusionMatrix):
    """Accumulated confusion matrix (``torchmetrics.MulticlassConfusionMatrix``: ignore index, synced across
    processes) whose ``compute()`` gives ``{"iou", "miou", "pixel_acc", "macc"}`` (module docstring).

    An ``ignore_index`` inside ``[0, num_classes)`` is not a class of the score: its IoU is NaN (torchmetrics'
    ``MulticlassJaccardIndex`` rule); the usual 255 lies outside and changes nothing.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__(num_classes, ignore_index=ignore_index)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        cm = super().compute()
        inside = self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes
        iou, miou, acc = iou_from_confusion(cm, self.ignore_index if inside else None)
        return {"iou": iou, "miou": miou, "pixel_acc": acc, "macc": class_accuracy_from_confusion(cm)}


class EndTaskMetrics(nn.Module):
    """One predictor's metrics on one split, for segmentation (:class:`ConfusionMatrixMetrics`) or recognition
    (micro top-1 and top-``min(5, C)`` accuracy).

    :meth:`update` takes logits ``(B, C, H, W)`` / ``(B, C)`` and targets; :meth:`log_epoch` logs ``<prefix>miou``,
    ``<prefix>macc``, ``<prefix>pixel_acc`` and ``<prefix>iou_<c>`` for every class with an IoU (or ``<prefix>top1``,
    ``<prefix>top5``) through a LightningModule's ``log`` and resets; it logs nothing after no update.
    """

    def __init__(self, task: EndTask, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if task not in ("segmentation", "recognition"):
            raise ValueError(f"EndTaskMetrics task must be 'segmentation' or 'recognition', got {task!r}")
        self.task = task
        if task == "segmentation":
            self.seg = ConfusionMatrixMetrics(num_classes, ignore_index)
        else:
            self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
            self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def update(self, logits: Tensor, target: Tensor) -> None:
        if self.task == "segmentation":
            self.seg.update(logits.argmax(1), target.long())
        else:
            self.top1.update(logits, target.long())
            self.top5.update(logits, target.long())

    def log_epoch(self, log: Callable[..., Any], prefix: str, prog_bar: bool = True) -> None:
        """Log the epoch's values under ``prefix`` (the headline metric on the progress bar if ``prog_bar``)."""
        if self.task == "segmentation":
            if not self.seg._update_count:
                return
            out = self.seg.compute()
            log(f"{prefix}miou", out["miou"], prog_bar=prog_bar)
            log(f"{prefix}macc", out["macc"])
            log(f"{prefix}pixel_acc", out["pixel_acc"])
            for c, v in enumerate(out["iou"].tolist()):
                if v == v:  # not NaN
                    log(f"{prefix}iou_{c}", v)
            self.seg.reset()
            return
        for k in ("top1", "top5"):
            metric = getattr(self, k)
            if metric._update_count:
                log(f"{prefix}{k}", metric.compute(), prog_bar=prog_bar and k == "top1")
                metric.reset()
