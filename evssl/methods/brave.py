r"""BraVe — "Broaden Your Views for Self-Supervised Video Learning" (Recasens et al., ICCV 2021), for event streams.

One *narrow* view (a short event window at high resolution) and one or more *broad* views (long windows that contain
the narrow one, at lower resolution and possibly another representation or modality: more voxel bins, a histogram,
the paired frame) are embedded by **separate** backbones :math:`f_n, f_{b_k}`. One projector :math:`g` and one
predictor :math:`q`, **shared by all views** (the official code applies the same ``ProjectAndPredict`` module
everywhere), map every embedding to :math:`z = g(f(x))` and :math:`h = q(z)`. The loss regresses each view's
prediction onto the other view's stop-gradient projection, in both directions, for every broad view
(:func:`evssl.losses.regression.brave_loss`):

.. math::

    \mathcal{L} = \frac{1}{2K}\sum_{k=1}^{K}\Big[\ell\big(h_{b_k}, \mathrm{sg}(z_n)\big)
        + \ell\big(h_n, \mathrm{sg}(z_{b_k})\big)\Big], \qquad
    \ell(h, z) = \tfrac12\Big\|\tfrac{h}{\|h\|} - \tfrac{z}{\|z\|}\Big\|^2 = 1 - \cos(h, z).

There is no EMA target (collapse is avoided by the separate backbones, the predictor, the stop-gradient and the
batch norms in the heads); ``ema_target=True`` is an ablation that takes the targets from BYOL-style momentum copies.

Faithfulness notes (official JAX code ``brave/models/brave/{brave,modules,config}.py`` and the evssl digest §3):

* Views: :class:`NarrowBroadViews`. The broad window starts where the narrow window starts (``align="start"``,
  the digest's reading of the released code); ``align="random"`` places the narrow window uniformly inside the broad
  one, as the first public release did (``random_sample_sequence_using_video`` with the broad indices as bounds).
  Narrow ⊂ broad always. Independent random-area crops per view (area ∈ [0.3, 1], aspect ∈ [0.5, 2], then resize)
  and independent horizontal flips, applied to the events. Short recordings are not looped: a broad window that runs
  past the end of the recording is simply emptier (the representation still normalises time by the full window).
* Broad-view augmentation: :class:`RandConv` — a random convolution with an odd kernel size drawn uniformly from
  {1, 3, …, 11}, He-normal weights, C→C channels, "SAME" padding, a new kernel per sample — applied on the device to
  the broad representation tensors only (BraVe's randomly-convolved broad view; Xu et al., ICLR 2021).
* Heads: projector ``Linear(4096)→BN→ReLU→Linear(128)→BN``; predictor ``Linear(4096)→BN→ReLU→Linear(128)``.
* Optimisation: LARS (momentum 0.9, Nesterov, trust coefficient 1e-3; biases and norms excluded from weight decay
  and trust ratio), warm-up + cosine, predictor learning rate ×10 (``scale_learning_rate_by_regex``).
* Cross-replica BN: every BatchNorm (backbones, projector, predictor) becomes ``SyncBatchNorm`` in
  :meth:`BraVe.configure_model` when ``trainer.world_size > 1`` (``sync_batchnorm=True``).
* Evaluation uses the narrow backbone only (pre-projector pooled features): :meth:`BraVe.probe_features`,
  :meth:`BraVe.backbone_for_export`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from evssl.data.samplers import WindowSampler, nearest_index, pick_start
from evssl.events.schema import Events
from evssl.losses.regression import brave_loss, normalized_std
from evssl.methods.base import PretrainMethod, SSLOutput
from evssl.nn.ema import make_target
from evssl.nn.heads import byol_predictor, byol_projector
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.optim import EmaConfig, LrRule, OptimConfig, OptimizerName

if TYPE_CHECKING:  # pragma: no cover
    from evssl.events.io.store import EventStore
    from evssl.events.representations import Representation

__all__ = ["BRAVE_PRESETS", "BraVe", "BraVeOptim", "BroadViewSpec", "NarrowBroadViews", "RandConv", "sync_batchnorm_"]

#: Event key of the narrow view in a training sample; its representation lands in ``batch["input"]``.
NARROW_EVENTS = "narrow_events"


def broad_key(k: int) -> str:
    """Batch key of the ``k``-th broad view's dense tensor (representation or frame)."""
    return f"broad_{k}"


def broad_events_key(k: int) -> str:
    """Sample key of the ``k``-th broad view's events (collated to an EventBatch)."""
    return f"broad_{k}_events"


# ======================================================================================================== views
class BroadViewSpec:
    """One broad view of :class:`NarrowBroadViews`.

    Args:
        duration_us: window length; ``None`` takes the sampler's ``broad_us``. Must be >= the narrow window.
        resolution: (H, W) of the view; ``None`` = half the narrow resolution (rounded up).
        representation: representation of this view's events (e.g. ``VoxelGrid(10)`` or ``Histogram()``);
            ``None`` = the data module's representation. Ignored for ``modality="frame"``.
        modality: ``"events"`` or ``"frame"`` (the paired frame nearest to the window centre, float in [0, 1],
            (3, H, W); needs a store with frames).
        augment: extra event augmentation ``augment(ev, rng) -> Events`` for this view (training only, after the
            crop/flip), e.g. a ``Compose`` from :mod:`evssl.events.augment`.
    """

    def __init__(
        self,
        duration_us: int | None = None,
        resolution: tuple[int, int] | None = None,
        representation: Representation | None = None,
        modality: Literal["events", "frame"] = "events",
        augment: Callable | None = None,
    ) -> None:
        if modality not in ("events", "frame"):
            raise ValueError(f"modality must be 'events' or 'frame', got {modality!r}")
        if duration_us is not None and duration_us <= 0:
            raise ValueError(f"duration_us must be positive, got {duration_us}")
        self.duration_us = None if duration_us is None else int(duration_us)
        self.resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))
        self.representation = representation
        self.modality = modality
        self.augment = augment

    def __repr__(self) -> str:
        return (
            f"BroadViewSpec(duration_us={self.duration_us}, resolution={self.resolution}, "
            f"representation={self.representation!r}, modality={self.modality!r})"
        )


def sample_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    area: tuple[float, float] = (0.3, 1.0),
    aspect: tuple[float, float] = (0.5, 2.0),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """A random box ``(top, left, h, w)`` covering a fraction ∈ ``area`` of the sensor with w/h ∈ ``aspect``.

    As ``tf.image.sample_distorted_bounding_box`` in BraVe's ``random_sample_crop_window``: area and aspect ratio
    uniform, up to ``attempts`` tries, the full sensor when none fits.
    """
    for _ in range(attempts):
        a = rng.uniform(area[0], area[1]) * height * width
        r = rng.uniform(aspect[0], aspect[1])
        w = round(math.sqrt(a * r))
        h = round(math.sqrt(a / r))
        if 1 <= h <= height and 1 <= w <= width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, int(h), int(w)
    return 0, 0, int(height), int(width)


def resize_events(ev: Events, size: tuple[int, int], rng: np.random.Generator | None = None) -> Events:
    """Events mapped onto a ``size`` = (h, w) sensor.

    Down-scaling (and equal size) is :func:`evssl.events.augment.rescale` (``x' = ⌊x·w/W⌋``). Along an axis that is
    *up*-scaled (a small crop resized to the view resolution) each event lands on a uniformly random target pixel of
    its source pixel's footprint, ``x' = ⌊(x + u)·w/W⌋`` with ``u ~ U[0, 1)`` — the event analogue of image
    interpolation, without the regular holes a plain ``⌊x·w/W⌋`` leaves. ``rng=None`` uses the plain mapping.
    """
    from evssl.events import augment as aug

    h, w = int(size[0]), int(size[1])
    if (ev.height, ev.width) == (h, w):
        return ev
    up_x, up_y = w > ev.width, h > ev.height
    if rng is None or not (up_x or up_y) or len(ev) == 0:
        return aug.rescale(ev, (h, w))
    x = ev.x.astype(np.float64) + (rng.random(len(ev)) if up_x else 0.0)
    y = ev.y.astype(np.float64) + (rng.random(len(ev)) if up_y else 0.0)
    x = np.minimum(np.floor(x * w / ev.width), w - 1).astype(np.int16)
    y = np.minimum(np.floor(y * h / ev.height), h - 1).astype(np.int16)
    return Events(x, y, ev.t, ev.p, h, w)


class NarrowBroadViews(WindowSampler):
    """BraVe's view sampler: one narrow event window and K broad windows that contain it (training), or one plain
    labelled narrow window (evaluation).

    Training sample::

        {"narrow_events": Events (narrow_resolution), "narrow_events_window": (t0, t0 + narrow_us),
         "broad_k_events": Events (resolution of view k), "broad_k_events_window": (tb_k, tb_k + d_k),  # events views
         "broad_k": float tensor (3, H_k, W_k) in [0, 1],                                       # frame views
         "label": int, "index": int}

    with ``tb_k <= t0`` and ``t0 + narrow_us <= tb_k + d_k`` (narrow ⊂ broad). The data module turns
    ``narrow_events`` into ``batch["input"]`` and ``broad_k_events`` into ``batch["broad_k"]``
    (:meth:`representation_keys`, :attr:`representations`). Evaluation sample (``train=False``): ``{"events",
    "window", "label", "index"}``, a centred narrow window (``eval_duration_us``, default ``narrow_us``) over the full
    sensor rescaled to ``narrow_resolution``, no augmentation — what the online / linear probe of the narrow backbone
    sees.

    Args:
        narrow_us: narrow window length (µs). Paper: 16 frames with step 2 at 25 fps ≈ 1.28 s of video.
        broad_us: default broad window length (µs) for specs without ``duration_us``. Paper: ≈ 10.24 s (8× narrow).
        narrow_resolution: (H, W) of the narrow view; ``None`` = the sensor size. Paper: 224 (broad: 112).
        broad: the broad views (default: one event view with the data module's representation).
        narrow_representation: representation of the narrow view (and of the eval ``events``); ``None`` = the
            data module's representation (whose channels the CLI links to the narrow backbone's ``in_chans``).
        align: ``"start"`` (broad windows start with the narrow window) or ``"random"`` (narrow uniformly inside).
        crop_area, crop_aspect: random-crop ranges per view (BraVe: [0.3, 1] and [0.5, 2]); ``crop_area=(1, 1)``
            disables cropping.
        flip_p: probability of a horizontal flip, drawn independently per view.
        narrow_augment: extra event augmentation of the narrow view (training only, after crop/flip).
        eval_duration_us: evaluation window length (default ``narrow_us``).
    """

    def __init__(
        self,
        narrow_us: int = 50_000,
        broad_us: int = 200_000,
        narrow_resolution: tuple[int, int] | None = None,
        broad: list[BroadViewSpec] | None = None,
        narrow_representation: Representation | None = None,
        align: Literal["start", "random"] = "start",
        crop_area: tuple[float, float] = (0.3, 1.0),
        crop_aspect: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        narrow_augment: Callable | None = None,
        eval_duration_us: int | None = None,
    ) -> None:
        if narrow_us <= 0 or broad_us <= 0:
            raise ValueError("narrow_us and broad_us must be positive")
        if align not in ("start", "random"):
            raise ValueError(f"align must be 'start' or 'random', got {align!r}")
        if not 0 < crop_area[0] <= crop_area[1] <= 1:
            raise ValueError(f"crop_area must satisfy 0 < lo <= hi <= 1, got {crop_area}")
        self.narrow_us = int(narrow_us)
        self.broad_us = int(broad_us)
        self.narrow_resolution = (
            None if narrow_resolution is None else (int(narrow_resolution[0]), int(narrow_resolution[1]))
        )
        self.broad = list(broad) if broad else [BroadViewSpec()]
        for k in range(len(self.broad)):
            if self.broad_duration(k) < self.narrow_us:
                raise ValueError(
                    f"broad view {k} lasts {self.broad_duration(k)} µs, "
                    f"shorter than the narrow view ({self.narrow_us} µs)"
                )
        self.narrow_representation = narrow_representation
        self.align = align
        self.crop_area = (float(crop_area[0]), float(crop_area[1]))
        self.crop_aspect = (float(crop_aspect[0]), float(crop_aspect[1]))
        self.flip_p = float(flip_p)
        self.narrow_augment = narrow_augment
        self.eval_duration_us = int(eval_duration_us) if eval_duration_us else self.narrow_us
        reps: dict[str, Any] = {}
        if narrow_representation is not None:
            reps[NARROW_EVENTS] = narrow_representation
            reps["events"] = narrow_representation
        for k, spec in enumerate(self.broad):
            if spec.modality == "events" and spec.representation is not None:
                reps[broad_events_key(k)] = spec.representation
        self.representations = reps

    def __repr__(self) -> str:
        return (
            f"NarrowBroadViews(narrow_us={self.narrow_us}, narrow_resolution={self.narrow_resolution}, "
            f"align={self.align!r}, broad={self.broad!r})"
        )

    # ------------------------------------------------------------------ sizes and keys
    def broad_duration(self, k: int) -> int:
        """Window length of broad view ``k`` (µs)."""
        d = self.broad[k].duration_us
        return self.broad_us if d is None else d

    def narrow_size(self, sensor_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the narrow view."""
        return (
            self.narrow_resolution if self.narrow_resolution is not None else (int(sensor_size[0]), int(sensor_size[1]))
        )

    def broad_size(self, k: int, sensor_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of broad view ``k`` (default: half the narrow size, rounded up)."""
        res = self.broad[k].resolution
        if res is not None:
            return res
        h, w = self.narrow_size(sensor_size)
        return (h + 1) // 2, (w + 1) // 2

    def output_size(self, sensor_size: tuple[int, int]) -> tuple[int, int]:
        """Size of the narrow view (what the evaluated backbone sees)."""
        return self.narrow_size(sensor_size)

    def representation_keys(self) -> dict[str, str]:
        """``narrow_events`` (train) and ``events`` (eval) → ``input``; ``broad_k_events`` → ``broad_k``."""
        keys = {NARROW_EVENTS: "input", "events": "input"}
        for k, spec in enumerate(self.broad):
            if spec.modality == "events":
                keys[broad_events_key(k)] = broad_key(k)
        return keys

    # ------------------------------------------------------------------ time
    def sample_windows(
        self, t_start: int, t_end: int, rng: np.random.Generator, train: bool, segment: tuple[int, int] = (0, 1)
    ) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Narrow window and broad windows (``[t0, t1)`` each) inside a recording spanning ``[t_start, t_end]``.

        ``"start"``: the narrow start is drawn so that the longest broad window fits, every broad window starts
        there. ``"random"``: the narrow start is drawn uniformly over the recording, then each broad window's start
        uniformly among the positions that contain the narrow window (and stay inside the recording when possible).
        Either way ``broad_start <= narrow_start`` and ``narrow_end <= broad_end``.
        """
        n = self.narrow_us
        longest = max(self.broad_duration(k) for k in range(len(self.broad)))
        if self.align == "start":
            t0 = pick_start(t_start, t_end + 1 - longest, rng, train, segment)
            return (t0, t0 + n), [(t0, t0 + self.broad_duration(k)) for k in range(len(self.broad))]
        t0 = pick_start(t_start, t_end + 1 - n, rng, train, segment)
        broads = []
        for k in range(len(self.broad)):
            d = self.broad_duration(k)
            lo, hi = t0 + n - d, t0  # every start in [lo, hi] contains the narrow window
            lo_in, hi_in = max(lo, t_start), min(hi, t_end + 1 - d)  # ... and also stays in the recording
            if lo_in <= hi_in:
                lo, hi = lo_in, hi_in
            else:
                lo = hi = min(max(t_start, lo), hi)
            tb = int(rng.integers(lo, hi + 1)) if train else (lo + hi) // 2
            broads.append((tb, tb + d))
        return (t0, t0 + n), broads

    # ------------------------------------------------------------------ space
    def _geometry(self, ev: Events, size: tuple[int, int], rng: np.random.Generator) -> Events:
        """Random-area crop (BraVe ranges), resize to ``size``, random horizontal flip — all on the events."""
        from evssl.events import augment as aug

        top, left, h, w = sample_crop_box(ev.height, ev.width, rng, self.crop_area, self.crop_aspect)
        if (h, w) != (ev.height, ev.width):
            ev = aug.crop(ev, top, left, h, w)
        ev = resize_events(ev, size, rng)
        if self.flip_p > 0 and rng.random() < self.flip_p:
            ev = aug.flip_x(ev)
        return ev

    def _frame_view(
        self,
        store: EventStore,
        index: int,
        window: tuple[int, int],
        size: tuple[int, int],
        rng: np.random.Generator,
        train: bool,
    ) -> Tensor:
        ft = store.frame_times(index)
        if len(ft) == 0:
            raise ValueError(f"recording {index} has no frames (broad view with modality='frame')")
        frame = store.frames(index, nearest_index(ft, (window[0] + window[1]) // 2))  # (H, W, 3) uint8
        img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)
        if train:
            top, left, h, w = sample_crop_box(img.shape[1], img.shape[2], rng, self.crop_area, self.crop_aspect)
            img = img[:, top : top + h, left : left + w]
            if self.flip_p > 0 and rng.random() < self.flip_p:
                img = img.flip(-1)
        if tuple(img.shape[-2:]) != tuple(size):
            img = F.interpolate(img[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]
        return img.contiguous()

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Training: narrow + broad views; evaluation: one labelled narrow window under ``"events"``."""
        info = store.info(index)
        sensor = (int(info.height), int(info.width))
        label = int(info.label)
        ts, te = int(info.t_start), int(info.t_end)
        if not train:
            d = self.eval_duration_us
            t0 = pick_start(ts, te + 1 - d, rng, False, segment)
            ev = store.window(index, t0, t0 + d)
            size = self.narrow_size(sensor)
            ev = resize_events(ev, size)
            return {"events": ev, "window": (t0, t0 + d), "label": label, "index": int(index)}

        narrow_win, broad_wins = self.sample_windows(ts, te, rng, True, segment)
        narrow = self._geometry(store.window(index, *narrow_win), self.narrow_size(sensor), rng)
        if self.narrow_augment is not None:
            narrow = self.narrow_augment(narrow, rng)
        sample: dict[str, Any] = {NARROW_EVENTS: narrow, f"{NARROW_EVENTS}_window": narrow_win}
        for k, (spec, win) in enumerate(zip(self.broad, broad_wins)):
            size = self.broad_size(k, sensor)
            if spec.modality == "frame":
                sample[broad_key(k)] = self._frame_view(store, index, win, size, rng, True)
                continue
            ev = self._geometry(store.window(index, *win), size, rng)
            if spec.augment is not None:
                ev = spec.augment(ev, rng)
            sample[broad_events_key(k)] = ev
            sample[f"{broad_events_key(k)}_window"] = win
        sample["label"] = label
        sample["index"] = int(index)
        return sample


# ======================================================================================================== RandConv
class RandConv(nn.Module):
    """Random convolution of each sample (RandConv, Xu et al. ICLR 2021; BraVe's broad-view augmentation).

    For every sample (with probability ``p``) a kernel size ``k`` is drawn uniformly from {1, 3, …, ``max_kernel``}
    and a ``C→C`` kernel ``W ~ N(0, 2 / (C k²))`` (He-normal, fan-in) is applied with zero "SAME" padding — the
    official ``_random_convolve`` draws one kernel per clip, shared by its frames. Implemented as one grouped
    convolution over the batch (kernels zero-padded to ``max_kernel``; a centred zero-padded k×k kernel with
    padding ``max_kernel // 2`` equals the k×k "SAME" convolution). Only active in training mode; no gradient.
    """

    def __init__(self, max_kernel: int = 11, p: float = 1.0) -> None:
        super().__init__()
        if max_kernel < 1 or max_kernel % 2 == 0:
            raise ValueError(f"max_kernel must be a positive odd number, got {max_kernel}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.max_kernel = int(max_kernel)
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"max_kernel={self.max_kernel}, p={self.p}"

    @torch.no_grad()
    def kernels(
        self, batch: int, channels: int, device: Any = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B, C, C, K, K) random kernels (K = ``max_kernel``), each zero outside its centred k×k support."""
        big = self.max_kernel
        sizes = torch.arange(1, big + 1, 2, device=device)
        pick = torch.randint(len(sizes), (batch,), device=device, generator=generator)
        k = sizes[pick]  # (B,)
        coords = torch.arange(big, device=device) - big // 2
        inside = coords.abs()[None, :] <= (k[:, None] // 2)  # (B, K)
        support = (inside[:, :, None] & inside[:, None, :]).float()  # (B, K, K)
        std = torch.sqrt(2.0 / (channels * k.float() ** 2))  # He-normal with fan-in C·k²
        w = torch.randn(batch, channels, channels, big, big, device=device, generator=generator)
        return w * std[:, None, None, None, None] * support[:, None, None]

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Randomly convolve ``x`` (B, C, H, W) sample by sample (identity in eval mode or when ``p == 0``)."""
        if not self.training or self.p <= 0 or x.numel() == 0:
            return x
        b, c, h, w = x.shape
        weight = self.kernels(b, c, x.device, generator).to(x.dtype)
        out = F.conv2d(
            x.reshape(1, b * c, h, w),
            weight.reshape(b * c, c, self.max_kernel, self.max_kernel),
            padding=self.max_kernel // 2,
            groups=b,
        ).reshape(b, c, h, w)
        if self.p < 1.0:
            keep = torch.rand(b, device=x.device, generator=generator) < self.p
            out = torch.where(keep[:, None, None, None], out, x)
        return out


# ======================================================================================================== DDP
def sync_batchnorm_(module: nn.Module, process_group: Any = None) -> int:
    """Replace, in place, every BatchNorm under ``module`` by ``SyncBatchNorm`` (cross-replica BN); returns how many.

    Already-synchronised layers are left alone (idempotent), and ``module`` itself is never replaced, so objects
    shared between views (the projector, the predictor) stay shared.
    """
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child, process_group))
            count += 1
        else:
            count += sync_batchnorm_(child, process_group)
    return count


# ======================================================================================================== method
def _check_preset(preset: str) -> str:
    if preset not in BRAVE_PRESETS:
        raise ValueError(f"BraVe: unknown preset {preset!r}; expected one of {sorted(BRAVE_PRESETS)}")
    return preset


def _check_channels(x: Tensor, net: nn.Module, view: str, field: str) -> None:
    """A clear error when a view's representation and its backbone disagree on the channel count."""
    want = getattr(net, "in_chans", None)
    if isinstance(want, int) and x.dim() == 4 and x.shape[1] != want:
        raise ValueError(
            f"BraVe {view} has {x.shape[1]} channels (from its representation) but its backbone expects "
            f"in_chans={want}: set model.{field}: {x.shape[1]}"
        )


@dataclass
class BraVeOptim(OptimConfig):
    """BraVe's optimiser (``brave/training/config.py``): LARS, peak lr 1.0 (per 256 samples when
    ``lr_batch_scale``), weight decay 1e-2, 10 warm-up epochs, cosine to 0."""

    name: OptimizerName = "lars"
    lr: float = 1.0
    weight_decay: float = 1e-2
    warmup_epochs: float = 10.0


#: The faithfulness switches of :class:`BraVe` (``None`` fields take these values).
BRAVE_PRESETS: dict[str, dict[str, Any]] = {
    # official JAX code: the x10 scales the predictor's *gradient* before LARS (``_scale_by_module_name``)
    "official": {"predictor_rule": "gradient"},
    # paper text (§4.1): "the learning rate of the predictor is 10 times the base learning rate"
    "paper": {"predictor_rule": "step"},
}


class BraVe(PretrainMethod):
    """BraVe pre-training: narrow backbone ``backbone`` + one backbone per broad view, shared projector/predictor.

    Args:
        backbone: the narrow-view backbone (the one evaluated and exported); ``in_chans`` is linked from the data.
        broad_backbones: one backbone per broad view of :class:`NarrowBroadViews` (same order), never shared with
            the narrow one or with each other; each with the ``num_features`` of the narrow backbone (the projector
            is shared) and the ``in_chans`` of its view's representation.
        proj_hidden_dim, proj_dim: projector ``D → 4096 → BN → ReLU → 128 → BN`` (BraVe ``Projector``).
        pred_hidden_dim: predictor ``128 → 4096 → BN → ReLU → 128`` (BraVe ``Predictor``).
        randconv: apply :class:`RandConv` to the broad views (one bool for all, or one per broad view).
        randconv_max_kernel, randconv_p: largest kernel size (11) and probability per sample (1.0).
        predictor_lr_scale: the predictor's ×10 (an :class:`~evssl.optim.LrRule` on ``predictor.*`` appended to
            ``optim.lr_rules``).
        predictor_rule: where the ×10 acts: ``"gradient"`` (official: the gradient before LARS, so the trust ratio
            cancels it for weight matrices and it only weakens their weight decay) or ``"step"`` (the paper's
            "learning rate ×10": the update after the trust ratio). ``None`` = the preset's.
        preset: ``"official"`` (default) or ``"paper"`` (:data:`BRAVE_PRESETS`).
        ema_target: ablation — targets from EMA copies of backbones and projector (BYOL style) instead of the
            online networks; momentum ``ema.momentum → ema.momentum_end``. Off in BraVe.
        sync_batchnorm: convert every BatchNorm to SyncBatchNorm when ``trainer.world_size > 1``.
        optim, ema, probe: :class:`~evssl.methods.base.PretrainMethod`; ``optim`` defaults to :class:`BraVeOptim`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        broad_backbones: list[nn.Module],
        proj_hidden_dim: int = 4096,
        proj_dim: int = 128,
        pred_hidden_dim: int = 4096,
        randconv: bool | list[bool] = True,
        randconv_max_kernel: int = 11,
        randconv_p: float = 1.0,
        predictor_lr_scale: float = 10.0,
        predictor_rule: Literal["step", "gradient"] | None = None,
        preset: Literal["official", "paper"] = "official",
        ema_target: bool = False,
        sync_batchnorm: bool = True,
        optim: BraVeOptim | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        super().__init__(backbone, optim, ema, probe, default_optim=BraVeOptim(), default_ema=EmaConfig(0.99))
        if predictor_rule is None:
            predictor_rule = BRAVE_PRESETS[_check_preset(preset)]["predictor_rule"]
        if predictor_rule not in ("step", "gradient"):
            raise ValueError(f"BraVe: predictor_rule must be 'step' or 'gradient', got {predictor_rule!r}")
        self.predictor_rule = predictor_rule
        if predictor_lr_scale != 1.0:
            rule = LrRule(r"(^|\.)predictor\.", float(predictor_lr_scale), predictor_rule)
            self.optim = dataclasses.replace(self.optim, lr_rules=(*self.optim.lr_rules, rule))
        broad = list(broad_backbones)
        if not broad:
            raise ValueError("BraVe needs at least one broad backbone")
        if any(b is backbone for b in broad) or len({id(b) for b in broad}) != len(broad):
            raise ValueError("BraVe backbones must be separate module objects (no weight sharing between views)")
        dim = getattr(backbone, "num_features", None)
        if not isinstance(dim, int):
            raise ValueError("the narrow backbone needs an int attribute num_features")
        for k, b in enumerate(broad):
            if getattr(b, "num_features", None) != dim:
                raise ValueError(
                    f"broad backbone {k} has num_features={getattr(b, 'num_features', None)}, the narrow one {dim}: "
                    "the projector is shared by all views, so their pooled features must have the same size"
                )
        self.broad_backbones = nn.ModuleList(broad)
        self.projector = byol_projector(dim, proj_hidden_dim, proj_dim, last_bn=True)
        self.predictor = byol_predictor(proj_dim, pred_hidden_dim, proj_dim)
        flags = [bool(randconv)] * len(broad) if isinstance(randconv, bool) else [bool(f) for f in randconv]
        if len(flags) != len(broad):
            raise ValueError(f"randconv has {len(flags)} flags for {len(broad)} broad views")
        self.randconv_flags = flags
        self.randconv = RandConv(randconv_max_kernel, randconv_p)
        self.proj_dim = int(proj_dim)
        self.ema_target = bool(ema_target)
        self.sync_batchnorm = bool(sync_batchnorm)
        if self.ema_target:
            self.target_backbone = make_target(self.backbone)
            self.target_broad_backbones = make_target(self.broad_backbones)
            self.target_projector = make_target(self.projector)

    # ------------------------------------------------------------------ views → (z, h)
    def project(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, h) = (g(f), q(g(f)))`` with the projector and predictor shared by all views."""
        z = self.projector(feats)
        return z, self.predictor(z)

    def broad_inputs(self, batch: dict[str, Any]) -> list[Tensor]:
        """The broad tensors of a batch (``broad_k``), RandConv-augmented where enabled (training only)."""
        xs = []
        for k in range(len(self.broad_backbones)):
            key = broad_key(k)
            if key not in batch:
                raise KeyError(
                    f"BraVe batch has no {key!r}: use NarrowBroadViews with {len(self.broad_backbones)} broad views"
                )
            x = batch[key].float()
            _check_channels(x, self.broad_backbones[k], f"broad view {k} ({key!r})", f"broad[{k}].init_args.in_chans")
            if self.randconv_flags[k]:
                x = self.randconv(x)
            xs.append(x)
        return xs

    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """Symmetric narrow↔broad regression (BraVe eq. in the module docstring) + collapse monitor."""
        x_n = batch["input"].float()
        _check_channels(x_n, self.backbone, "narrow view ('input')", "backbone.init_args.in_chans")
        xs_b = self.broad_inputs(batch)
        f_n = self.backbone(x_n)
        z_n, h_n = self.project(f_n)
        broad_pairs: list[tuple[Tensor, Tensor]] = []
        z_bs: list[Tensor] = []
        for net, x_b in zip(self.broad_backbones, xs_b):
            z_b, h_b = self.project(net(x_b))
            broad_pairs.append((z_b, h_b))
            z_bs.append(z_b)
        if self.ema_target:
            with torch.no_grad():
                z_n_t = self.target_projector(self.target_backbone(x_n))
                broad_pairs = [
                    (self.target_projector(net(x_b)), h_b)
                    for net, x_b, (_, h_b) in zip(self.target_broad_backbones, xs_b, broad_pairs)
                ]
            narrow_pair = (z_n_t, h_n)
        else:
            narrow_pair = (z_n, h_n)
        loss, terms = brave_loss(narrow_pair, broad_pairs)

        # collapse monitor: std of L2-normalised projections over the batch, ≈ 1/sqrt(d) when healthy
        with torch.no_grad():
            stds = torch.stack([normalized_std(z) for z in (z_n, *z_bs)])
        logs = {
            **terms,
            "proj_std": stds.mean(),
            "proj_std_ratio": stds.mean() * math.sqrt(self.proj_dim),
            "proj_std_narrow": stds[0],
        }
        return SSLOutput(loss, logs, features=f_n)

    # ------------------------------------------------------------------ evaluation / export
    def probe_features(self, batch: dict[str, Any]) -> Tensor:
        """Narrow-backbone pooled features of ``batch["input"]`` (BraVe evaluates the narrow view only)."""
        return self.backbone(batch["input"].float())

    def backbone_for_export(self) -> nn.Module:
        """The narrow backbone."""
        return self.backbone

    # ------------------------------------------------------------------ optimisation
    def learnable_params(self) -> list[dict[str, Any]]:
        """Base groups (narrow backbone, probe) + broad backbones, projector and predictor."""
        return [
            *super().learnable_params(),
            {"name": "broad_backbones", "params": list(self.broad_backbones.parameters())},
            {"name": "projector", "params": list(self.projector.parameters())},
            {"name": "predictor", "params": list(self.predictor.parameters())},  # x10: an LrRule (see __init__)
        ]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """EMA pairs only in the ``ema_target`` ablation (BraVe itself has none)."""
        if not self.ema_target:
            return []
        return [
            (self.backbone, self.target_backbone),
            (self.broad_backbones, self.target_broad_backbones),
            (self.projector, self.target_projector),
        ]

    def configure_model(self) -> None:
        """Cross-replica BN (BraVe's ``cross_replica_axis``): every BatchNorm → SyncBatchNorm when world size > 1.

        Runs before the strategy wraps the model and before the optimizer is built. PyTorch's ``SyncBatchNorm`` only
        runs on accelerators (CUDA/XPU/HPU/PrivateUse1); on a CPU process group (gloo, used in tests) the layers are
        left per-process with a warning. Trainer-level ``sync_batchnorm: true`` has the same effect on GPUs.
        """
        trainer = self._trainer
        if not self.sync_batchnorm or trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
            return
        strategy = getattr(trainer, "strategy", None)
        device = getattr(strategy, "root_device", None) or self.device
        if torch.device(device).type == "cpu":
            rank_zero_warn("BraVe: SyncBatchNorm needs an accelerator; BatchNorm stays per-process on CPU")
            return
        n = sync_batchnorm_(self)
        rank_zero_info(f"BraVe: {n} BatchNorm layers converted to SyncBatchNorm (world size {trainer.world_size})")
