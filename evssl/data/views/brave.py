r"""BraVe's views for event streams: one narrow window and K broad windows that contain it.

Temporal sampling (official ``brave/models/brave/brave.py:_brave_random_view_sampler``): the narrow start is uniform
over the whole recording (``sampling.random_sample(0, max(len, narrow))``), each broad window starts with the narrow
one, and a recording shorter than the broad window is **looped** (``media_sequences.extend_sequence`` tiles the clip)
so that the broad view is full: for events, the recording ``[t_start, t_end]`` repeats with period
``P = t_end + 1 - t_start`` and the events of ``[t0, t1)`` beyond ``t_end`` are those of ``[t0 - kP, t1 - kP)``
shifted by ``kP``. Switch: ``narrow_start="recording"`` + ``loop=True`` (official) or ``"fit"`` + ``loop=False`` (the
evssl sampler before Methods v2: the start is drawn so that the longest broad window fits inside the recording;
short recordings always start at ``t_start`` and the last ``broad - narrow`` µs never appear in a narrow view).

Photometric augmentation (official ``_transform_views``, both video views: Gaussian blur with kernel W/10 and
:math:`\sigma \sim U[0.1, 2]`, colour jitter with p = 0.8, grayscale with p = 0.2). Events have no colour, so evssl
uses event analogues (an explicit choice, documented here, switchable with ``photometric``):

* blur -> **spatial jitter**: every event moves by :math:`\mathcal N(0, \sigma^2)` pixels in x and y (rounded,
  clipped to the sensor), :math:`\sigma \sim U[0.1, 2]` per view (a Gaussian blur of the event image in
  expectation);
* colour jitter -> **count jitter** with p = 0.8: the event count is scaled by :math:`s \sim U[0.6, 1.4]` (the
  contrast range) by keeping a random :math:`s`-fraction of the events (:math:`s < 1`) or adding duplicates of a
  random :math:`(s-1)`-fraction (:math:`s > 1`), so every count-based representation is scaled by :math:`s` in
  expectation;
* grayscale -> **polarity drop** with p = 0.2: all polarities set to positive (the polarity "colour" is removed).

The presets (:data:`VIEW_PRESETS`): ``official`` (the above), ``minimal`` (crop + flip only, ``narrow_start="fit"``,
no looping: the pre-v2 evssl sampler, kept to compare against).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from evssl.data.samplers import WindowSampler, duration_window, nearest_index, pick_start, require_frames
from evssl.events.schema import Events

if TYPE_CHECKING:  # pragma: no cover
    from evssl.events.io.store import EventStore
    from evssl.events.representations import Representation

__all__ = [
    "NARROW_EVENTS",
    "VIEW_PRESETS",
    "BroadViewSpec",
    "NarrowBroadViews",
    "Photometric",
    "broad_events_key",
    "broad_key",
    "count_jitter",
    "looped_window",
    "polarity_drop",
    "resize_events",
    "sample_crop_box",
    "spatial_jitter",
]

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


# ------------------------------------------------------------------------------------------ photometric analogues
def spatial_jitter(ev: Events, sigma: float, rng: np.random.Generator) -> Events:
    """Every event moved by ``round(N(0, sigma^2))`` pixels in x and in y, clipped to the sensor (blur analogue)."""
    if sigma <= 0 or len(ev) == 0:
        return ev
    dx = np.rint(rng.normal(0.0, sigma, len(ev)))
    dy = np.rint(rng.normal(0.0, sigma, len(ev)))
    x = np.clip(ev.x.astype(np.int64) + dx.astype(np.int64), 0, ev.width - 1).astype(ev.x.dtype)
    y = np.clip(ev.y.astype(np.int64) + dy.astype(np.int64), 0, ev.height - 1).astype(ev.y.dtype)
    return ev.replace(x=x, y=y)


def count_jitter(ev: Events, scale: float, rng: np.random.Generator) -> Events:
    """The event count scaled by ``scale``: a random subset (``scale < 1``) or added duplicates (``scale > 1``).

    Time order is kept (duplicates sit next to their originals), so counts of every pixel scale by ``scale`` in
    expectation (contrast analogue).
    """
    n = len(ev)
    if n == 0 or scale == 1.0:
        return ev
    if scale < 1.0:
        keep = np.sort(rng.choice(n, size=round(n * scale), replace=False))
        return ev[keep]
    extra = rng.choice(n, size=min(n, round(n * (scale - 1.0))), replace=False)
    idx = np.sort(np.concatenate([np.arange(n), extra]), kind="stable")
    return ev[idx]


def polarity_drop(ev: Events) -> Events:
    """All polarities set to positive (grayscale analogue: the polarity channel carries nothing)."""
    return ev.replace(p=np.ones_like(ev.p))


@dataclass
class Photometric:
    """Event analogues of BraVe's photometric augmentation (module docstring); ``apply`` runs them in order.

    Args:
        sigma: range of the spatial-jitter standard deviation in pixels of the view (official blur sigma range).
        count_p: probability of the count jitter (official colour-jitter probability 0.8).
        count_range: range of the count scale (official contrast range [0.6, 1.4]).
        polarity_drop_p: probability of the polarity drop (official grayscale probability 0.2).
    """

    sigma: tuple[float, float] = (0.1, 2.0)
    count_p: float = 0.8
    count_range: tuple[float, float] = (0.6, 1.4)
    polarity_drop_p: float = 0.2

    def __call__(self, ev: Events, rng: np.random.Generator) -> Events:
        """One draw of the three augmentations (blur, colour, grayscale order of ``_transform_views``)."""
        ev = spatial_jitter(ev, float(rng.uniform(*self.sigma)), rng)
        if rng.random() < self.count_p:
            ev = count_jitter(ev, float(rng.uniform(*self.count_range)), rng)
        if rng.random() < self.polarity_drop_p:
            ev = polarity_drop(ev)
        return ev


#: Switches of :class:`NarrowBroadViews` (``None`` arguments take these values).
VIEW_PRESETS: dict[str, dict[str, Any]] = {
    "official": {"narrow_start": "recording", "loop": True, "photometric": True},
    "minimal": {"narrow_start": "fit", "loop": False, "photometric": False},
}


def looped_window(store: EventStore, index: int, t0: int, t1: int, t_start: int, t_end: int) -> Events:
    """Events of ``[t0, t1)`` in recording ``index`` repeated with period ``t_end + 1 - t_start`` (official
    ``extend_sequence``): the part past ``t_end`` is the recording again, shifted in time."""
    period = int(t_end) + 1 - int(t_start)
    if t1 <= t_end + 1 or period <= 0:
        return store.window(index, t0, t1)
    parts = []
    k = (t0 - t_start) // period
    while t_start + k * period < t1:
        a, b = max(t0, t_start + k * period), min(t1, t_start + (k + 1) * period)
        ev = store.window(index, a - k * period, b - k * period)
        parts.append(ev.replace(t=ev.t + k * period) if k else ev)
        k += 1
    return Events.concatenate(parts)


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
        preset: ``"official"`` or ``"minimal"`` (:data:`VIEW_PRESETS`; module docstring).
        narrow_start: ``"recording"`` (narrow start uniform over the recording) or ``"fit"`` (so that the longest
            broad window fits); ``None`` = the preset's.
        loop: loop recordings shorter than a broad window (``extend_sequence``); ``None`` = the preset's.
        photometric: apply :class:`Photometric` to every event view (training); ``None`` = the preset's.
        photometric_params: its ranges (default: the official ones).
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
        preset: Literal["official", "minimal"] = "official",
        narrow_start: Literal["recording", "fit"] | None = None,
        loop: bool | None = None,
        photometric: bool | None = None,
        photometric_params: Photometric | None = None,
    ) -> None:
        if preset not in VIEW_PRESETS:
            raise ValueError(f"NarrowBroadViews: unknown preset {preset!r}; expected one of {sorted(VIEW_PRESETS)}")
        table = VIEW_PRESETS[preset]
        self.preset = preset
        self.narrow_start = table["narrow_start"] if narrow_start is None else narrow_start
        self.loop = bool(table["loop"] if loop is None else loop)
        use_photometric = bool(table["photometric"] if photometric is None else photometric)
        self.photometric = (photometric_params or Photometric()) if use_photometric else None
        if self.narrow_start not in ("recording", "fit"):
            raise ValueError(f"narrow_start must be 'recording' or 'fit', got {self.narrow_start!r}")
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
            f"align={self.align!r}, preset={self.preset!r}, broad={self.broad!r})"
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

        ``"start"``: every broad window starts with the narrow window; the narrow start is uniform over the
        recording (``narrow_start="recording"``, official; broad windows may run past the end, see ``loop``) or
        drawn so that the longest broad window fits (``"fit"``). ``"random"``: the narrow start is drawn uniformly
        over the recording, then each broad window's start uniformly among the positions that contain the narrow
        window (and stay inside the recording when possible). Either way ``broad_start <= narrow_start`` and
        ``narrow_end <= broad_end``.
        """
        n = self.narrow_us
        longest = max(self.broad_duration(k) for k in range(len(self.broad)))
        if self.align == "start":
            last = t_end + 1 - (n if self.narrow_start == "recording" else longest)
            t0 = pick_start(t_start, last, rng, train, segment)
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
        ft = require_frames(store, index, "broad view with modality='frame'")
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
            ev, window = duration_window(store, index, self.eval_duration_us, rng, False, segment)
            ev = resize_events(ev, self.narrow_size(sensor))
            return {"events": ev, "window": window, "label": label, "index": int(index)}

        narrow_win, broad_wins = self.sample_windows(ts, te, rng, True, segment)
        narrow = looped_window(store, index, *narrow_win, ts, te) if self.loop else store.window(index, *narrow_win)
        narrow = self._geometry(narrow, self.narrow_size(sensor), rng)
        if self.photometric is not None:
            narrow = self.photometric(narrow, rng)
        if self.narrow_augment is not None:
            narrow = self.narrow_augment(narrow, rng)
        sample: dict[str, Any] = {NARROW_EVENTS: narrow, f"{NARROW_EVENTS}_window": narrow_win}
        for k, (spec, win) in enumerate(zip(self.broad, broad_wins)):
            size = self.broad_size(k, sensor)
            if spec.modality == "frame":
                sample[broad_key(k)] = self._frame_view(store, index, win, size, rng, True)
                continue
            ev = looped_window(store, index, *win, ts, te) if self.loop else store.window(index, *win)
            ev = self._geometry(ev, size, rng)
            if self.photometric is not None:
                ev = self.photometric(ev, rng)
            if spec.augment is not None:
                ev = spec.augment(ev, rng)
            sample[broad_events_key(k)] = ev
            sample[f"{broad_events_key(k)}_window"] = win
        sample["label"] = label
        sample["index"] = int(index)
        return sample
