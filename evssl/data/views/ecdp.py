r"""ECDP's views (official ``data/imagenet_dataset.py``): event windows with the paired RGB frame or embedding, and the
nearest random-resized crop of the transfer runs.

Pre-training order (both the official code and evssl): normalise the histogram, then make the two crops on the
device (:class:`~evssl.methods.ECDP`). Transfer order (:class:`RandomResizedCropNearest`, review E6/T5): the
official LP/FT dataset crops the **raw counts** (``img_augmentation``), then normalises by the crop's own maximum
(``event / (amax + 1)``), so ``order="crop_first"`` (default); ``"normalize_first"`` is the pre-v2 evssl order
(normalise over the full window, then crop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from evssl.data.samplers import ClassificationWindow, _resize, nearest_index, require_frames
from evssl.events.representations import EventImage, Representation, histogram
from evssl.events.schema import Events
from evssl.nn.crops import random_resized_crop_nearest

if TYPE_CHECKING:  # pragma: no cover
    from evssl.events.batch import EventBatch
    from evssl.events.io.store import EventStore

__all__ = ["TRAIN_EVENTS", "ECDPViews", "RandomResizedCropNearest", "normalize_counts"]


def normalize_counts(h: Tensor, remove_hot_pixels: bool = False, signed: bool = True) -> Tensor:
    """ECDP's normalisation of a count image ``h`` (B, 2, H, W) (steps 2-4 of
    :func:`~evssl.events.representations.event_image`): hot-pixel clip at the mean non-zero count, ``h / (max h +
    1)`` per sample and channel, then ``(h - 0.5) * 2`` when ``signed``."""
    if remove_hot_pixels:
        flat = h.flatten(1)
        h = torch.minimum(h, (flat.sum(1) / flat.sign().sum(1).clamp_min(1)).view(-1, 1, 1, 1))
    h = h / (h.amax(dim=(2, 3), keepdim=True) + 1.0)
    return (h - 0.5) * 2.0 if signed else h


#: Event key of a training sample when :class:`ECDPViews` has its own ``train_representation`` (transfer runs).
TRAIN_EVENTS = "train_events"


class RandomResizedCropNearest(Representation):
    """A representation followed by ECDP's image-level augmentation: ``RandomResizedCrop(scale=(crop_min, 1),
    NEAREST)`` + ``RandomHorizontalFlip(hflip_p)``, batched on the device (:func:`random_resized_crop_nearest`).

    For the transfer runs, as ``train_representation`` of :class:`ECDPViews` (applied to training samples only):
    ECDP linear probe ``crop_min = 0.9``, fine-tuning ``0.85``. ``size`` (H, W) defaults to the input size.
    ``order="crop_first"`` (official, module docstring) needs an :class:`EventImage`: the raw ON/OFF counts are
    cropped, then normalised by :func:`normalize_counts` with the representation's options; ``"normalize_first"``
    crops the output of any representation.
    """

    def __init__(
        self,
        representation: Representation,
        crop_min: float = 0.85,
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip_p: float = 0.5,
        size: tuple[int, int] | None = None,
        order: Literal["crop_first", "normalize_first"] = "crop_first",
    ) -> None:
        if not 0.0 < crop_min <= 1.0:
            raise ValueError(f"crop_min must be in (0, 1], got {crop_min}")
        if order not in ("crop_first", "normalize_first"):
            raise ValueError(
                f"RandomResizedCropNearest: order must be 'crop_first' or 'normalize_first', got {order!r}"
            )
        if order == "crop_first" and not isinstance(representation, EventImage):
            raise ValueError(
                "RandomResizedCropNearest: order 'crop_first' crops raw counts and needs an EventImage representation, "
                f"got {type(representation).__name__}; use order: normalize_first"
            )
        self.order = order
        self.representation = representation
        self.crop_min = float(crop_min)
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip_p = float(hflip_p)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    @property
    def channels(self) -> int:
        return int(self.representation.channels)

    def __call__(self, ev: EventBatch) -> Tensor:
        if self.order == "normalize_first":
            x = self.representation(ev)
            return random_resized_crop_nearest(x, self.size, (self.crop_min, 1.0), self.ratio, None, self.hflip_p)
        rep = self.representation
        counts = random_resized_crop_nearest(
            histogram(ev), self.size, (self.crop_min, 1.0), self.ratio, None, self.hflip_p
        )
        return normalize_counts(counts, rep.remove_hot_pixels, rep.signed)


# ======================================================================================================== views
class ECDPViews(ClassificationWindow):
    """ECDP's sampler: a window of ``num_events`` consecutive events + the paired RGB frame (or its embedding).

    Training sample (``train=True``)::

        {"events": Events (resolution), "window": (t0, t1), "label": int, "index": int,
         "frame": uint8 (3, h, w)          # rgb="frame": the frame nearest to the window centre
         | "embedding": float32 (E,)}      # rgb="embedding": the store's precomputed image embedding

    The window starts at a uniformly random event (the official ``slice_method: random``); events are rescaled to
    ``resolution`` (``x' = ⌊x·W'/W⌋``, ECDP's ``no_sample`` reshape), then augmented as ECDP's ``base_augment``:
    time flip with polarity inversion (p = ``time_flip_p``), an integer shift ``U{-s..s}`` in x and y with events
    leaving the sensor dropped, and correlated noise (``add_correlated_noise``: ``U[noise_count)`` jittered copies
    of random events when there are at least ``noise_min_events``). The data module turns ``events`` into
    ``batch["input"]`` with its representation (use :class:`~evssl.events.representations.EventImage`); the two
    crops are made on the device by :class:`ECDP`.

    Evaluation sample (``train=False``): ``{"events", "window", "label", "index"}`` — the centred window of
    ``num_events`` events, rescaled, not augmented (deterministic, unlike the official eval-time random slicing).

    Args:
        num_events: events per window (ECDP: 30 000).
        resolution: (H, W) of the model input (ECDP: 224×224); ``None`` keeps the sensor size.
        rgb: ``"frame"`` (paired frame from the store, embedded on the fly by the method's frozen encoder),
            ``"embedding"`` (precomputed, ``EventStore.embedding``) or ``"none"``.
        frame_size: (H, W) the frame is resized to (area interpolation); ``None`` keeps the stored size.
        time_flip_p: probability of the time flip.
        max_shift: shift range in pixels; ``None`` = ECDP's 20 px at 224 scaled to the resolution,
            ``max(1, round(20 · min(H, W) / 224))``.
        correlated_noise: add correlated noise events.
        noise_count, noise_xy_std, noise_t_std_us, noise_min_events: :func:`~evssl.events.augment.add_correlated_noise`
            parameters (ECDP: (100, 5000), 1.5 px, 1 ms, 1000).
        augment: replaces the ECDP augmentation above when given (``augment(ev, rng) -> Events``).
        train_representation: for transfer runs (linear probe / fine-tuning with ``rgb="none"``): the
            representation of *training* samples only, e.g. :class:`RandomResizedCropNearest` (ECDP's image-level
            crop + flip). Training events then travel under ``"train_events"`` (mapped to ``batch["input"]`` with
            this representation) while evaluation samples keep ``"events"`` and the data module's representation.
    """

    def __init__(
        self,
        num_events: int = 30_000,
        resolution: tuple[int, int] | None = (224, 224),
        rgb: Literal["frame", "embedding", "none"] = "frame",
        frame_size: tuple[int, int] | None = None,
        time_flip_p: float = 0.5,
        max_shift: int | None = None,
        correlated_noise: bool = True,
        noise_count: tuple[int, int] = (100, 5000),
        noise_xy_std: float = 1.5,
        noise_t_std_us: float = 1000.0,
        noise_min_events: int = 1000,
        augment: Callable | None = None,
        train_representation: Representation | None = None,
    ) -> None:
        super().__init__(duration_us=None, num_events=num_events, augment=augment, resolution=resolution)
        if rgb not in ("frame", "embedding", "none"):
            raise ValueError(f"rgb must be 'frame', 'embedding' or 'none', got {rgb!r}")
        if not 0.0 <= time_flip_p <= 1.0:
            raise ValueError(f"time_flip_p must be in [0, 1], got {time_flip_p}")
        if max_shift is not None and max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.rgb = rgb
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        self.time_flip_p = float(time_flip_p)
        self.max_shift = None if max_shift is None else int(max_shift)
        self.correlated_noise = bool(correlated_noise)
        self.noise_count = (int(noise_count[0]), int(noise_count[1]))
        self.noise_xy_std = float(noise_xy_std)
        self.noise_t_std_us = float(noise_t_std_us)
        self.noise_min_events = int(noise_min_events)
        self.train_representation = train_representation
        self.representations = {TRAIN_EVENTS: train_representation} if train_representation is not None else None

    def representation_keys(self) -> dict[str, str]:
        """``events`` → ``input`` (and ``train_events`` → ``input`` with ``train_representation``)."""
        keys = {"events": "input"}
        if self.train_representation is not None:
            keys[TRAIN_EVENTS] = "input"
        return keys

    def __repr__(self) -> str:
        return f"ECDPViews(num_events={self.num_events}, resolution={self.resolution}, rgb={self.rgb!r})"

    def shift_range(self, height: int, width: int) -> int:
        """Shift range in pixels for a ``height x width`` input (ECDP: 20 px at 224)."""
        if self.max_shift is not None:
            return self.max_shift
        return max(1, round(20 * min(height, width) / 224))

    def ecdp_augment(self, ev: Events, rng: np.random.Generator) -> Events:
        """ECDP's ``base_augment``: time flip (p), random shift, correlated noise — in this order."""
        from evssl.events import augment as aug

        if self.time_flip_p > 0 and rng.random() < self.time_flip_p:
            ev = aug.time_flip(ev)
        ev = aug.shift(ev, self.shift_range(ev.height, ev.width), rng)
        if self.correlated_noise:
            ev = aug.add_correlated_noise(
                ev, rng, self.noise_count, self.noise_xy_std, self.noise_t_std_us, self.noise_min_events
            )
        return ev

    def paired_rgb(self, store: EventStore, index: int, window: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``{"frame": uint8 (3, h, w)}`` nearest to the window centre, ``{"embedding": (E,)}`` or ``{}``."""
        if self.rgb == "embedding":
            emb = store.embedding(index)
            if emb is None:
                raise ValueError(f"recording {index} has no precomputed embedding (ECDPViews rgb='embedding')")
            return {"embedding": torch.from_numpy(np.asarray(emb, dtype=np.float32).copy())}
        if self.rgb == "frame":
            ft = require_frames(store, index, "ECDPViews rgb='frame'")
            frame = np.ascontiguousarray(store.frames(index, nearest_index(ft, (window[0] + window[1]) // 2)))
            img = frame.transpose(2, 0, 1)
            if self.frame_size is not None and tuple(img.shape[-2:]) != self.frame_size:
                img = np.clip(np.rint(_resize(img, self.frame_size, "area")), 0, 255).astype(np.uint8)
            return {"frame": torch.from_numpy(np.ascontiguousarray(img))}
        return {}

    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Training: augmented window + paired RGB; evaluation: the centred plain window."""
        ev, window = self.select_window(store, index, rng, train, segment)
        if self.resolution is not None and (ev.height, ev.width) != self.resolution:
            from evssl.events import augment as aug

            ev = aug.rescale(ev, self.resolution)
        sample: dict[str, Any] = {"window": window, "label": int(store.info(index).label), "index": int(index)}
        if train:
            ev = self.augment(ev, rng) if self.augment is not None else self.ecdp_augment(ev, rng)
            sample.update(self.paired_rgb(store, index, window))
            if self.train_representation is not None:
                sample[TRAIN_EVENTS] = ev
                sample[f"{TRAIN_EVENTS}_window"] = sample.pop("window")
                return sample
        sample["events"] = ev
        return sample
