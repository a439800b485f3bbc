"""EvDistill pictures for W&B: event input | E2I image | frame | I2E events | teacher | student | label.

Each validation epoch (every ``every_n_epochs``), the first validation batch goes through
:func:`evssl.callbacks.method_media.evdistill_media` and one row per sample is logged under ``val/evdistill``:
the student's event input (signed red/blue), the E2I reconstruction the teacher reads, the frame, the I2E
reconstruction the student reads (from that frame), the teacher's prediction on the frame, the student's prediction
on the events, and the label map — predictions and labels in the label palette. Recognition runs caption the
predicted and true class ids instead of drawing maps. Tolerant of no logger (does nothing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from evssl.callbacks.dense_media import label_to_rgb, side_by_side
from evssl.callbacks.media import log_images, tensor_to_rgb
from evssl.callbacks.method_media import evdistill_media

__all__ = ["EvDistillImageLogger", "evdistill_rows"]


def _image(x: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (x.clamp(0, 1).permute(1, 2, 0).float().numpy() * 255.0 + 0.5).astype(np.uint8)


def evdistill_rows(media: dict[str, Tensor], num_classes: int, ignore_index: int = 255) -> tuple[list, list[str]]:
    """One side-by-side picture per sample from :func:`~evssl.callbacks.method_media.evdistill_media` tensors, and
    their captions."""
    rows, captions = [], []
    for i in range(media["events"].shape[0]):
        parts = [tensor_to_rgb(media["events"][i]), _image(media["e2i"][i]), _image(media["frame"][i]),
                 tensor_to_rgb(media["i2e"][i])]  # fmt: skip
        names = ["events", "E2I(events)", "frame", "I2E(frame)"]
        if media["student"].ndim == 3:  # segmentation maps
            parts += [label_to_rgb(media["teacher"][i], num_classes, ignore_index),
                      label_to_rgb(media["student"][i], num_classes, ignore_index)]  # fmt: skip
            names += ["teacher(frame)", "student(events)"]
            if "label" in media:
                parts.append(label_to_rgb(media["label"][i], num_classes, ignore_index))
                names.append("label")
            captions.append(" | ".join(names))
        else:
            cap = f"teacher {int(media['teacher'][i])}, student {int(media['student'][i])}"
            if "label" in media:
                cap += f", label {int(media['label'][i])}"
            captions.append(" | ".join(names) + f" — {cap}")
        rows.append(side_by_side(parts))
    return rows, captions


class EvDistillImageLogger(Callback):
    """Log EvDistill's crafted pairs and predictions of the first validation batch (module docstring).

    Args:
        num_samples: samples (rows) per log. every_n_epochs: log every n validation epochs.
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1) -> None:
        self.num_samples = int(num_samples)
        self.every_n_epochs = max(1, int(every_n_epochs))

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if batch_idx != 0 or trainer.sanity_checking or not trainer.loggers or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs or not hasattr(pl_module, "crafted_pairs"):
            return
        if not isinstance(batch, dict) or "frame" not in batch or "input" not in batch:
            return
        media = evdistill_media(pl_module, batch, self.num_samples)
        rows, captions = evdistill_rows(media, int(pl_module.n_classes), int(pl_module.ignore_index))
        log_images(trainer, "val/evdistill", rows, captions=captions)
