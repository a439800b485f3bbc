"""Segmentation / recognition metrics: the official bincount mIoU, torchmetrics' rules, the logged keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from evssl.metrics.segmentation import (
    ConfusionMatrixMetrics,
    EndTaskMetrics,
    class_accuracy_from_confusion,
    iou_from_confusion,
)


def _maps(seed: int, classes: int = 6, absent: int | None = None):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, classes, (3, 17, 19), generator=g)
    target = torch.randint(0, classes + 1, (3, 17, 19), generator=g)
    target[target == classes] = 255
    target[0, :4] = 255
    if absent is not None:  # a class only predicted (never a target)
        target[target == absent] = 0
    return pred, target


def test_miou_equals_the_official_bincount_form() -> None:
    pred, target = _maps(4)
    metric = ConfusionMatrixMetrics(6, 255)
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    out = metric.compute()
    keep = target.numpy() != 255
    lab, prd = target.numpy()[keep], pred.numpy()[keep]
    hist = np.bincount(lab * 6 + prd, minlength=36).reshape(6, 6)  # the official evaluate.py computation
    ious = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
    assert out["miou"].item() == pytest.approx(float(np.nanmean(ious)), rel=1e-6)
    np.testing.assert_allclose(out["iou"].numpy(), ious, rtol=1e-6)
    assert out["pixel_acc"].item() == pytest.approx(float(np.diag(hist).sum() / hist.sum()), rel=1e-6)
    cm = torch.tensor([[3, 0, 0], [0, 0, 0], [1, 0, 2]])  # class 1 absent from targets and predictions: NaN
    iou, miou, _ = iou_from_confusion(cm)
    assert torch.isnan(iou[1]) and miou.item() == pytest.approx((3 / 4 + 2 / 3) / 2)
    iou, miou, _ = iou_from_confusion(cm, exclude=2)
    assert torch.isnan(iou[2]) and miou.item() == pytest.approx(3 / 4)


@pytest.mark.parametrize(("classes", "absent", "ignore"), [(6, None, 255), (6, 3, 255), (5, 2, 0)])
def test_equals_torchmetrics_jaccard_and_accuracy(classes: int, absent: int | None, ignore: int) -> None:
    """The transfer task's former metrics (macro Jaccard, macro / micro accuracy) give the same numbers."""
    pred, target = _maps(7, classes, absent)
    if ignore != 255:
        target[target == 255] = ignore
    metric = ConfusionMatrixMetrics(classes, ignore)
    jac = MulticlassJaccardIndex(classes, ignore_index=ignore, average="macro")
    macc = MulticlassAccuracy(classes, ignore_index=ignore, average="macro")
    pix = MulticlassAccuracy(classes, ignore_index=ignore, average="micro")
    for m in (metric, jac, macc, pix):
        m.update(pred, target)
    out = metric.compute()
    assert out["miou"].item() == pytest.approx(jac.compute().item(), rel=1e-6)
    assert out["macc"].item() == pytest.approx(macc.compute().item(), rel=1e-6)
    assert out["pixel_acc"].item() == pytest.approx(pix.compute().item(), rel=1e-6)


def test_class_accuracy_counts_a_class_only_predicted_as_zero() -> None:
    cm = torch.tensor([[2, 0, 2], [0, 0, 0], [0, 0, 0]])  # class 2 predicted, never a target; class 1 unseen
    assert class_accuracy_from_confusion(cm).item() == pytest.approx((0.5 + 0.0) / 2)


def test_end_task_metrics_log_keys_and_reset() -> None:
    logged: dict[str, float] = {}

    def log(name: str, value, prog_bar: bool = False) -> None:
        logged[name] = float(value)

    seg = EndTaskMetrics("segmentation", 3)
    seg.log_epoch(log, "val/")
    assert logged == {}  # nothing before an update
    target = torch.tensor([[[0, 1], [1, 255]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 0], [1, 2]]]), 3).permute(0, 3, 1, 2).float()
    seg.update(logits, target)
    seg.log_epoch(log, "val/teacher_")
    assert set(logged) == {"val/teacher_miou", "val/teacher_macc", "val/teacher_pixel_acc", "val/teacher_iou_0",
                           "val/teacher_iou_1"}  # fmt: skip
    assert logged["val/teacher_miou"] == pytest.approx(0.5) and logged["val/teacher_pixel_acc"] == pytest.approx(2 / 3)
    assert not seg.seg._update_count  # reset
    rec = EndTaskMetrics("recognition", 7)
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0], [5, 6, 4, 3, 2, 1, 0], [0, 1, 6, 4, 5, 2, 3]])
    rec.update(logits, torch.tensor([0, 1, 3]))  # the last target ranks third
    logged.clear()
    rec.log_epoch(log, "test/")
    assert logged == {"test/top1": pytest.approx(2 / 3), "test/top5": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="task"):
        EndTaskMetrics("detection", 3)  # type: ignore[arg-type]
