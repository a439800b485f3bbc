"""Images for a person to look at: event representations as colour pictures, logged to W&B (or TensorBoard).

Colour convention everywhere: white background, **red = positive** polarity / signed value, **blue = negative**.
Every function here is tolerant: no logger, a logger without image support, W&B offline or disabled, or a failing
upload never interrupts training (a warning is emitted once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

__all__ = ["EventImageLogger", "events_to_rgb", "log_images", "signed_to_rgb", "tensor_to_rgb"]

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        rank_zero_warn(message)


def signed_to_rgb(pos: np.ndarray, neg: np.ndarray | None = None, *, percentile: float = 99.0) -> np.ndarray:
    """Colour image (H, W, 3) uint8 of positive (red) and negative (blue) magnitudes on white.

    ``pos`` is a signed map when ``neg`` is None (its negative part becomes ``neg``); otherwise both are
    non-negative magnitudes (e.g. ON and OFF counts). Both are scaled by one robust maximum (the ``percentile`` of
    the non-zero magnitudes) and clipped to [0, 1]; then ``R = 1 - b``, ``G = 1 - a - b``, ``B = 1 - a``.
    """
    pos = np.asarray(pos, dtype=np.float32)
    if neg is None:
        neg = np.clip(-pos, 0, None)
        pos = np.clip(pos, 0, None)
    neg = np.asarray(neg, dtype=np.float32)
    mags = np.concatenate([pos[pos > 0], neg[neg > 0]])
    scale = float(np.percentile(mags, percentile)) if mags.size else 1.0
    scale = scale if scale > 0 else 1.0
    a = np.clip(pos / scale, 0.0, 1.0)
    b = np.clip(neg / scale, 0.0, 1.0)
    rgb = np.stack([1.0 - b, np.clip(1.0 - a - b, 0.0, 1.0), 1.0 - a], axis=-1)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def tensor_to_rgb(rep: Tensor | np.ndarray, mode: str = "auto") -> np.ndarray:
    """Colour image of one representation ``(C, H, W)``.

    ``mode="onoff"``: channel 0 = ON counts (red), channel 1 = OFF counts (blue) — the histogram convention of
    :mod:`evssl.events.representations`; ``mode="signed"``: the sum over channels, positive red, negative blue
    (voxel grids, stacked signed maps). ``"auto"`` picks ``onoff`` for two non-negative channels, else ``signed``.
    """
    arr = rep.detach().float().cpu().numpy() if isinstance(rep, Tensor) else np.asarray(rep, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected a (C, H, W) representation, got shape {arr.shape}")
    if mode == "auto":
        mode = "onoff" if arr.shape[0] == 2 and float(arr.min()) >= 0 else "signed"
    if mode == "onoff":
        return signed_to_rgb(arr[0], arr[1])
    if mode == "signed":
        return signed_to_rgb(arr.sum(axis=0))
    raise ValueError(f"unknown mode {mode!r}")


def events_to_rgb(x: Any, y: Any, p: Any, height: int, width: int) -> np.ndarray:
    """Colour image of raw events: per-pixel ON count in red, OFF count in blue (numpy or torch columns)."""
    xs = np.asarray(x.cpu() if isinstance(x, Tensor) else x, dtype=np.int64)
    ys = np.asarray(y.cpu() if isinstance(y, Tensor) else y, dtype=np.int64)
    ps = np.asarray(p.cpu() if isinstance(p, Tensor) else p, dtype=np.int64)
    flat = ys * width + xs
    on = np.bincount(flat[ps > 0], minlength=height * width).reshape(height, width)
    off = np.bincount(flat[ps <= 0], minlength=height * width).reshape(height, width)
    return signed_to_rgb(on.astype(np.float32), off.astype(np.float32))


def log_images(
    trainer: Trainer | None,
    key: str,
    images: Sequence[np.ndarray | Tensor],
    *,
    captions: Sequence[str] | None = None,
    step: int | None = None,
) -> bool:
    """Log a list of images (H, W, 3) uint8 / float in [0, 1], or (3, H, W) tensors, to every capable logger.

    Uses ``logger.log_image(key, images, step, caption=...)`` (W&B) or ``logger.experiment.add_image`` (TensorBoard);
    other loggers are skipped. Only the global-zero process logs. Returns whether some logger took the images.
    Never raises for logging problems (offline, disabled, no logger): it warns once instead.
    """
    if trainer is None or not trainer.is_global_zero or not images:
        return False
    arrays = []
    for im in images:
        if isinstance(im, Tensor):
            im = im.detach().cpu()
            if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3):
                im = im.permute(1, 2, 0)
            im = im.numpy()
        im = np.asarray(im)
        if im.dtype != np.uint8:
            im = (np.clip(im.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        arrays.append(im)
    step = trainer.global_step if step is None else step
    done = False
    for logger in trainer.loggers:
        try:
            if hasattr(logger, "log_image"):
                kwargs = {"caption": list(captions)} if captions is not None else {}
                logger.log_image(key=key, images=arrays, step=step, **kwargs)
                done = True
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                for i, im in enumerate(arrays):
                    logger.experiment.add_image(f"{key}/{i}", im, global_step=step, dataformats="HWC")
                done = True
        except Exception as err:  # logging must never stop training
            _warn_once(
                f"{type(logger).__name__}:{type(err).__name__}", f"evssl: image logging to {logger} failed: {err}"
            )
    return done


class EventImageLogger(Callback):
    """Log the first validation batch's samples as pictures: raw events and the network input, side by side.

    Args:
        num_samples: samples per epoch.
        every_n_epochs: log on validation epochs ``0, n, 2n, ...``.
        input_key: batch key of the representation (``"input"``).
        events_key: batch key of the :class:`EventBatch` (``"events"``); skipped when absent.
        mode: colouring of the representation (:func:`tensor_to_rgb`).
        key: name under which the images are logged.
        min_height: small sensors are enlarged by an integer factor (nearest) to at least this many pixels.
    """

    def __init__(
        self,
        num_samples: int = 4,
        every_n_epochs: int = 1,
        input_key: str = "input",
        events_key: str = "events",
        mode: str = "auto",
        key: str = "val/events",
        min_height: int = 192,
    ) -> None:
        super().__init__()
        self.min_height = min_height
        self.num_samples = num_samples
        self.every_n_epochs = max(1, every_n_epochs)
        self.input_key = input_key
        self.events_key = events_key
        self.mode = mode
        self.key = key

    def render(self, batch: dict[str, Any]) -> tuple[list[np.ndarray], list[str]]:
        """Panels ``[events | representation]`` for the first ``num_samples`` samples of a batch."""
        images, captions = [], []
        rep = batch.get(self.input_key)
        ev = batch.get(self.events_key)
        labels = batch.get("label")
        n = self.num_samples
        if isinstance(rep, Tensor):
            n = min(n, rep.shape[0])
        elif ev is not None:
            n = min(n, ev.batch_size)
        else:
            return [], []
        for i in range(n):
            panels = []
            if ev is not None and hasattr(ev, "batch_index"):
                m = ev.batch_index == i
                panels.append(events_to_rgb(ev.x[m], ev.y[m], ev.p[m], ev.height, ev.width))
            if isinstance(rep, Tensor) and rep.ndim == 4:
                panel = tensor_to_rgb(rep[i], self.mode)
                if panels and panel.shape != panels[0].shape:
                    panels.append(np.full((panels[0].shape[0], 2, 3), 128, np.uint8))
                    h = min(panels[0].shape[0], panel.shape[0])
                    panels = [p[:h] for p in panels] + [panel[:h]]
                else:
                    panels.append(panel)
            if not panels:
                continue
            sep = np.full((panels[0].shape[0], 2, 3), 128, np.uint8)
            joined = [panels[0]]
            for p in panels[1:]:
                joined += [sep, p[: panels[0].shape[0]]]
            image = np.concatenate(joined, axis=1)
            factor = -(-self.min_height // image.shape[0]) if image.shape[0] < self.min_height else 1
            images.append(np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image)
            captions.append(f"label {int(labels[i])}" if isinstance(labels, Tensor) else f"sample {i}")
        return images, captions

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Render and log the first batch of every ``every_n_epochs``-th validation epoch (not in sanity checks)."""
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs != 0 or not isinstance(batch, dict):
            return
        try:
            images, captions = self.render(batch)
        except Exception as err:  # a picture must never stop training
            _warn_once(f"render:{type(err).__name__}", f"evssl: could not render event images: {err}")
            return
        log_images(trainer, self.key, images, captions=captions)
