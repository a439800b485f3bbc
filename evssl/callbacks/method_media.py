"""Pictures of what the pre-training methods see (logged to W&B / TensorBoard by :func:`log_images`).

* :func:`log_ecdp_views`: ECDP's two masked views (kept patches bright);
* :func:`log_ecddp_contexts`: ECDDP's K-means contexts on the full view and transported into a global crop (composed
  by :func:`ecddp_context_pictures`);
* :func:`evdistill_media`: EvDistill's crafted pairs and predictions (drawn by
  :class:`~evssl.callbacks.evdistill_media.EvDistillImageLogger`).

The methods call these from their first training batch of every n-th epoch (ECDP ``log_views_every_n_epochs``, ECDDP
``context.log_every_n_epochs``) when :func:`should_log_pictures` allows it (a logger, rank 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from evssl.callbacks.dense_media import context_overlay, side_by_side
from evssl.callbacks.media import log_images, signed_to_rgb, tensor_to_rgb
from evssl.nn.generators import frame01
from evssl.nn.masking import keep_mask

__all__ = [
    "ecddp_context_pictures",
    "evdistill_media",
    "log_ecddp_contexts",
    "log_ecdp_views",
    "masked_view_picture",
    "should_log_pictures",
]


def should_log_pictures(module: LightningModule, every_n_epochs: int) -> bool:
    """True on rank 0, with a logger, every ``every_n_epochs`` epochs (never when it is <= 0)."""
    if every_n_epochs <= 0 or module._trainer is None or not module.trainer.loggers:
        return False
    return module.current_epoch % every_n_epochs == 0 and module.trainer.is_global_zero


def masked_view_picture(view: Tensor, keep_index: Tensor, patch_size: int, min_side: int = 128) -> np.ndarray:
    """Colour picture (H', W', 3) uint8 of one signed event-image view (2, H, W) with its kept patches highlighted.

    ON counts red, OFF counts blue on white (:func:`~evssl.callbacks.media.tensor_to_rgb`); masked patches are
    washed out towards grey; the picture is enlarged (nearest) until its shorter side is at least ``min_side``.
    """
    counts = ((view.detach().float().cpu() + 1.0) / 2.0).clamp_min(0.0)
    rgb = tensor_to_rgb(counts, mode="onoff").astype(np.float32)
    h, w = rgb.shape[:2]
    gh, gw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    kept = keep_mask(keep_index.detach().cpu()[None], gh * gw)[0].reshape(gh, gw).numpy()
    kept = np.repeat(np.repeat(kept, patch_size, 0), patch_size, 1)[:h, :w, None]
    rgb = np.where(kept, rgb, 0.25 * rgb + 0.75 * 150.0)
    scale = max(1, math.ceil(min_side / max(1, min(h, w))))
    rgb = np.repeat(np.repeat(rgb, scale, 0), scale, 1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def log_ecdp_views(module: LightningModule, out: dict[str, Tensor], patch_size: int, num_samples: int) -> None:
    """``train/ecdp_views``: query | momentum view of the first ``num_samples`` samples of an ECDP step ``out``."""
    images, captions = [], []
    for i in range(min(num_samples, out["view_q"].shape[0])):
        a = masked_view_picture(out["view_q"][i], out["keep_q"][i], patch_size)
        b = masked_view_picture(out["view_k"][i], out["keep_k"][i], patch_size)
        gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
        images.append(np.concatenate([a, gap, b], axis=1))
        captions.append(f"sample {i}: query view | momentum view (kept patches bright)")
    log_images(module.trainer, "train/ecdp_views", images, captions=captions)


def ecddp_context_pictures(
    views: dict[str, Any], tgt: dict[str, Tensor], num_clusters: int, num_samples: int
) -> tuple[list[np.ndarray], list[str]]:
    """Events | K-means contexts | the first global crop with its transported contexts, for the first
    ``num_samples`` samples of an ECDDP step (:meth:`~evssl.methods.ecddp.ECDDP.make_views` ``views`` and
    :meth:`~evssl.methods.ecddp.ECDDP.teacher_targets` ``tgt``); one picture and one caption per sample."""
    x, glob = views["full"], views["global"]
    b = x.shape[0]
    g = views["grid"][0]
    crop_labels = tgt["crop_membership"].float().argmax(dim=1).view(2 * b, g, g)
    images, captions = [], []
    for i in range(min(num_samples, b)):
        ev = signed_to_rgb(x[i].detach().float().sum(0).cpu().numpy())
        crop = signed_to_rgb(glob.images[i].detach().float().sum(0).cpu().numpy())
        overlays = [
            context_overlay(ev, tgt["assign"][i], num_clusters),
            context_overlay(crop, crop_labels[i], num_clusters),
        ]
        images.append(side_by_side([ev, *overlays]))
        captions.append(f"sample {i}: events | K-means contexts | global crop 1 with transported contexts")
    return images, captions


def log_ecddp_contexts(
    module: LightningModule, views: dict[str, Any], tgt: dict[str, Tensor], num_clusters: int, num_samples: int
) -> None:
    """``train/ecddp_contexts``: the pictures of :func:`ecddp_context_pictures`."""
    images, captions = ecddp_context_pictures(views, tgt, num_clusters, num_samples)
    log_images(module.trainer, "train/ecddp_contexts", images, captions=captions)


@torch.no_grad()
def evdistill_media(module: Any, batch: dict[str, Any], num: int = 4) -> dict[str, Tensor]:
    """CPU tensors of the first ``num`` samples of an EvDistill batch: ``events``, ``e2i``, ``i2e``, ``frame``,
    ``teacher``, ``student`` (predicted labels or class ids) and ``label`` (when present)."""
    x_e = batch["input"][:num].float()
    x_a = frame01(batch["frame"][:num])
    e2i, i2e = module.crafted_pairs(x_e, x_a)
    out = {"events": x_e, "e2i": e2i, "i2e": i2e, "frame": x_a,
           "teacher": module.teacher(x_a).argmax(1), "student": module.student(x_e).argmax(1)}  # fmt: skip
    key = "semantic" if module.task == "segmentation" else "label"
    if key in batch:
        out["label"] = batch[key][:num]
    return {k: v.detach().cpu() for k, v in out.items()}
