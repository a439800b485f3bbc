"""Event-level augmentations: per-sample numpy functions on :class:`Events` (run in DataLoader workers).

Every random function takes an explicit ``rng: np.random.Generator`` (seeded per sample by the data pipeline), so a
sample's augmentation is reproducible and independent of worker scheduling. Every output is a valid
:class:`Events` (schema dtypes, in-range coordinates, non-decreasing ``t``, polarity ±1).

Geometric functions (:func:`flip_x`, :func:`flip_y`, :func:`crop` / :func:`random_crop`, :func:`translate` /
:func:`shift`, :func:`rescale`) accept ``return_params=True`` and then return ``(events, params)``; ``params`` is a
small JSON-able dict that :func:`apply_to_image` (or :func:`apply_crop_to_image`, :func:`apply_flip_to_image`)
applies to a paired frame, mask or dense label, so they stay aligned with the events.

Temporal augmentations work on the events' own span ``[t_first, t_last]`` unless given a ``window``: ``time_flip``
mirrors about the span's middle, noise stays inside it, and ``time_scale`` stretches about ``t_first``. A sample's
``"window"`` used later by a representation is not updated, so events that ``time_scale`` pushes outside it land in
the first or last temporal bin; keep factors near 1 or scale before choosing the window.

=====================  =======================================================================================
function               what (``W x H`` sensor, window ``[t0, t1)``; default window ``[t_first, t_last + 1)``)
=====================  =======================================================================================
flip_x / flip_y        ``x' = W - 1 - x`` / ``y' = H - 1 - y``
crop / random_crop     keep ``top <= y < top + h``, ``left <= x < left + w``; ``x' = x - left``; sensor ``h x w``
translate / shift      ``x' = x + dx``, ``y' = y + dy``; events leaving the frame dropped; sensor unchanged
rescale                ``x' = ⌊x · W' / W⌋`` (integer); events landing on one pixel are merged (no interpolation)
time_flip              ``t' = t0 + (t1 - 1) - t`` in reversed order, ``p' = -p`` (ECDP ``random_time_flip``)
polarity_flip          ``p' = -p``
drop_by_count          drop ``round(ratio · N)`` events chosen uniformly (EventDrop "random drop")
drop_by_time           drop a random contiguous span of ``ratio · (t1 - t0)`` µs (EventDrop "drop by time")
drop_by_area           drop a random ``round(ratio·H) x round(ratio·W)`` rectangle (EventDrop "drop by area")
add_noise              uniform random events (count or per-pixel density) merged in time order
add_correlated_noise   ECDP ``add_correlated_events``: jittered copies of random events, merged in time order
time_scale             ``t' = t0 + round((t - t0) · factor)``
=====================  =======================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from evssl.events.schema import Events

__all__ = [
    "AddCorrelatedNoise",
    "AddNoise",
    "CenterCrop",
    "Compose",
    "DropByArea",
    "DropByCount",
    "DropByTime",
    "EventDrop",
    "EventTransform",
    "FlipX",
    "FlipY",
    "Identity",
    "PolarityFlip",
    "RandomApply",
    "RandomChoice",
    "RandomCrop",
    "RandomShift",
    "Rescale",
    "TimeFlip",
    "TimeScale",
    "add_correlated_noise",
    "add_noise",
    "apply_crop_to_image",
    "apply_flip_to_image",
    "apply_to_image",
    "center_crop",
    "crop",
    "drop_by_area",
    "drop_by_count",
    "drop_by_time",
    "flip_x",
    "flip_y",
    "polarity_flip",
    "random_crop",
    "rescale",
    "shift",
    "time_flip",
    "time_scale",
    "translate",
]

Params = dict[str, Any]
Range = float | tuple[float, float]


# ---------------------------------------------------------------------------------------------------- helpers
def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as (height, width); an int means a square."""
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _window(ev: Events, window: tuple[int, int] | None) -> tuple[int, int] | None:
    """[t0, t1) of the sample: the given window, else [t_first, t_last + 1); None for no events and no window."""
    if window is not None:
        t0, t1 = int(window[0]), int(window[1])
        if t1 <= t0:
            raise ValueError(f"empty time window [{t0}, {t1})")
        return t0, t1
    if len(ev) == 0:
        return None
    return int(ev.t[0]), int(ev.t[-1]) + 1


def _draw(value: Range, rng: np.random.Generator) -> float:
    """A number, or a uniform draw from a ``(low, high)`` range."""
    if isinstance(value, tuple | list):
        lo, hi = value
        return float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    return float(value)


def _check_ratio(ratio: float, name: str = "ratio") -> float:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {ratio}")
    return ratio


def _merge(ev: Events, extra: Events) -> Events:
    """Insert ``extra`` (any order) into ``ev`` keeping ``t`` non-decreasing; ties keep the original events first."""
    if len(extra) == 0:
        return ev
    order = np.argsort(extra.t, kind="stable")
    extra = extra[order]
    pos = np.searchsorted(ev.t, extra.t, side="right")
    cols = {f: np.insert(getattr(ev, f), pos, getattr(extra, f)) for f in ("x", "y", "t", "p")}
    return Events(**cols, height=ev.height, width=ev.width)


# ---------------------------------------------------------------------------------------------------- geometric
def flip_x(ev: Events, return_params: bool = False) -> Events | tuple[Events, Params]:
    """Horizontal mirror ``x' = W - 1 - x`` (order unchanged)."""
    out = ev.replace(x=(ev.width - 1 - ev.x).astype(np.int16))
    return (out, {"op": "flip_x"}) if return_params else out


def flip_y(ev: Events, return_params: bool = False) -> Events | tuple[Events, Params]:
    """Vertical mirror ``y' = H - 1 - y`` (order unchanged)."""
    out = ev.replace(y=(ev.height - 1 - ev.y).astype(np.int16))
    return (out, {"op": "flip_y"}) if return_params else out


def crop(
    ev: Events, top: int, left: int, height: int, width: int, return_params: bool = False
) -> Events | tuple[Events, Params]:
    """Keep events with ``top <= y < top + height`` and ``left <= x < left + width``, re-indexed to the crop.

    ``x' = x - left``, ``y' = y - top``; the sensor becomes ``height x width``. The rectangle must lie on the sensor.
    """
    if height <= 0 or width <= 0 or top < 0 or left < 0 or top + height > ev.height or left + width > ev.width:
        raise ValueError(f"crop ({top}, {left}, {height}, {width}) does not fit the {ev.height}x{ev.width} sensor")
    keep = (ev.x >= left) & (ev.x < left + width) & (ev.y >= top) & (ev.y < top + height)
    sub = ev[keep]
    out = Events((sub.x - left).astype(np.int16), (sub.y - top).astype(np.int16), sub.t, sub.p, int(height), int(width))
    params = {"op": "crop", "top": int(top), "left": int(left), "height": int(height), "width": int(width)}
    return (out, params) if return_params else out


def random_crop(
    ev: Events, size: int | Sequence[int], rng: np.random.Generator, return_params: bool = False
) -> Events | tuple[Events, Params]:
    """:func:`crop` of ``size`` = (h, w) at a uniformly random position (``top ~ U{0..H-h}``, ``left ~ U{0..W-w}``)."""
    h, w = _hw(size)
    if h > ev.height or w > ev.width:
        raise ValueError(f"crop size {h}x{w} exceeds the {ev.height}x{ev.width} sensor")
    top = int(rng.integers(0, ev.height - h + 1))
    left = int(rng.integers(0, ev.width - w + 1))
    return crop(ev, top, left, h, w, return_params=return_params)


def center_crop(ev: Events, size: int | Sequence[int], return_params: bool = False) -> Events | tuple[Events, Params]:
    """:func:`crop` of ``size`` = (h, w) at the centre (``top = (H - h) // 2``, ``left = (W - w) // 2``)."""
    h, w = _hw(size)
    if h > ev.height or w > ev.width:
        raise ValueError(f"crop size {h}x{w} exceeds the {ev.height}x{ev.width} sensor")
    return crop(ev, (ev.height - h) // 2, (ev.width - w) // 2, h, w, return_params=return_params)


def translate(ev: Events, dx: int, dy: int, return_params: bool = False) -> Events | tuple[Events, Params]:
    """``x' = x + dx``, ``y' = y + dy``; events leaving the frame are dropped, the sensor size is kept."""
    x = ev.x.astype(np.int32) + int(dx)
    y = ev.y.astype(np.int32) + int(dy)
    keep = (x >= 0) & (x < ev.width) & (y >= 0) & (y < ev.height)
    out = Events(x[keep].astype(np.int16), y[keep].astype(np.int16), ev.t[keep], ev.p[keep], ev.height, ev.width)
    return (out, {"op": "shift", "dx": int(dx), "dy": int(dy)}) if return_params else out


def shift(
    ev: Events, max_shift: int, rng: np.random.Generator, return_params: bool = False
) -> Events | tuple[Events, Params]:
    """:func:`translate` by ``dx, dy ~ U{-max_shift..max_shift}`` (ECDP ``random_shift_events``, max 20 px)."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    return translate(ev, dx, dy, return_params=return_params)


def rescale(ev: Events, size: int | Sequence[int], return_params: bool = False) -> Events | tuple[Events, Params]:
    """Map the events to a ``size`` = (h, w) sensor: ``x' = ⌊x · w / W⌋``, ``y' = ⌊y · h / H⌋`` (exact integers).

    Down-scaling merges events that land on one pixel (they stay separate events; nothing is averaged or interpolated);
    up-scaling leaves gaps. ECDP rescales N-ImageNet 640x480 → 224x224 this way (``reshape_method: no_sample``).
    """
    h, w = _hw(size)
    if h <= 0 or w <= 0 or h > np.iinfo(np.int16).max or w > np.iinfo(np.int16).max:
        raise ValueError(f"invalid target size {h}x{w}")
    x = (ev.x.astype(np.int64) * w // ev.width).astype(np.int16)
    y = (ev.y.astype(np.int64) * h // ev.height).astype(np.int16)
    out = Events(x, y, ev.t, ev.p, h, w)
    params = {"op": "rescale", "height": h, "width": w, "src_height": ev.height, "src_width": ev.width}
    return (out, params) if return_params else out


# -------------------------------------------------------------------------------------------------- time, polarity
def time_flip(ev: Events, window: tuple[int, int] | None = None) -> Events:
    """Play the window backwards: ``t' = t0 + (t1 - 1) - t`` in reversed order (non-decreasing), ``p' = -p``.

    The window ``[t0, t1)`` maps onto itself (its first and last timestamps swap). Reversing time turns brightness
    increases into decreases, hence the polarity inversion (ECDP ``random_time_flip``).
    """
    win = _window(ev, window)
    if win is None:
        return ev
    t0, t1 = win
    return Events(
        ev.x[::-1].copy(),
        ev.y[::-1].copy(),
        (t0 + (t1 - 1) - ev.t[::-1]).astype(np.int64),
        (-ev.p[::-1]).astype(np.int8),
        ev.height,
        ev.width,
    )


def polarity_flip(ev: Events) -> Events:
    """``p' = -p`` (ON ↔ OFF)."""
    return ev.replace(p=(-ev.p).astype(np.int8))


def time_scale(ev: Events, factor: float, origin: int | None = None) -> Events:
    """Stretch time about ``origin`` (default the first timestamp): ``t' = origin + round((t - origin) · factor)``.

    ``factor > 0``; rounding is monotone, so ``t'`` stays non-decreasing.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if len(ev) == 0:
        return ev
    o = int(ev.t[0]) if origin is None else int(origin)
    t = o + np.rint((ev.t - o).astype(np.float64) * factor).astype(np.int64)
    return ev.replace(t=t)


# ---------------------------------------------------------------------------------------------------- drop
def drop_by_count(ev: Events, ratio: float, rng: np.random.Generator) -> Events:
    """Drop exactly ``round(ratio · N)`` events chosen uniformly without replacement (order kept)."""
    _check_ratio(ratio)
    n = len(ev)
    k = round(ratio * n)
    if k == 0:
        return ev
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, size=k, replace=False)] = False
    return ev[keep]


def drop_by_time(ev: Events, ratio: float, rng: np.random.Generator, window: tuple[int, int] | None = None) -> Events:
    """Drop the events in a random span ``[s, s + L)`` with ``L = round(ratio · (t1 - t0))``, ``s ~ U{t0..t1 - L}``."""
    _check_ratio(ratio)
    win = _window(ev, window)
    if win is None:
        return ev
    t0, t1 = win
    span = round(ratio * (t1 - t0))
    if span == 0:
        return ev
    s = int(rng.integers(t0, t1 - span + 1))
    lo, hi = np.searchsorted(ev.t, [s, s + span], side="left")
    if lo == hi:
        return ev
    return Events.concatenate([ev[:lo], ev[hi:]])


def drop_by_area(ev: Events, ratio: float, rng: np.random.Generator) -> Events:
    """Drop the events in a random ``round(ratio·H) x round(ratio·W)`` rectangle lying on the sensor.

    ``ratio`` is per side, as in EventDrop (the dropped area is ``ratio²`` of the sensor).
    """
    _check_ratio(ratio)
    h, w = round(ratio * ev.height), round(ratio * ev.width)
    if h == 0 or w == 0:
        return ev
    top = int(rng.integers(0, ev.height - h + 1))
    left = int(rng.integers(0, ev.width - w + 1))
    inside = (ev.x >= left) & (ev.x < left + w) & (ev.y >= top) & (ev.y < top + h)
    return ev[~inside]


# ---------------------------------------------------------------------------------------------------- noise
def add_noise(
    ev: Events,
    rng: np.random.Generator,
    count: int | None = None,
    density: float | None = None,
    window: tuple[int, int] | None = None,
) -> Events:
    """Add uniform random events (shot noise), merged in time order.

    ``count`` events, or ``round(density · H · W)`` (noise events per pixel). Each has ``x ~ U{0..W-1}``,
    ``y ~ U{0..H-1}``, ``t ~ U{t0..t1-1}`` and ``p = ±1`` with probability ½. Without events and without ``window``
    there is no time span to fill, and ``ev`` is returned unchanged.
    """
    if (count is None) == (density is None):
        raise ValueError("give exactly one of count or density")
    k = int(count) if count is not None else round(float(density) * ev.height * ev.width)  # type: ignore[arg-type]
    if k < 0:
        raise ValueError(f"noise count must be >= 0, got {k}")
    win = _window(ev, window)
    if k == 0 or win is None:
        return ev
    t0, t1 = win
    noise = Events(
        rng.integers(0, ev.width, k).astype(np.int16),
        rng.integers(0, ev.height, k).astype(np.int16),
        rng.integers(t0, t1, k).astype(np.int64),
        (rng.integers(0, 2, k) * 2 - 1).astype(np.int8),
        ev.height,
        ev.width,
    )
    return _merge(ev, noise)


def add_correlated_noise(
    ev: Events,
    rng: np.random.Generator,
    count: int | tuple[int, int] = (100, 5000),
    xy_std: float = 1.5,
    t_std_us: float = 1000.0,
    min_events: int = 1000,
) -> Events:
    """ECDP's ``add_correlated_events``: add jittered copies of randomly chosen events, merged in time order.

    When the sample has at least ``min_events`` events, draw ``k ~ U{min(lo, N-1)..min(hi, N)-1}`` for
    ``count = (lo, hi)`` (ECDP: 100, 5000; an int is an exact count, capped at N), pick ``k`` distinct events and copy
    them with ``x += N(0, xy_std)``, ``y += N(0, xy_std)``, ``t += N(0, t_std_us)`` and the same polarity. Coordinates
    are rounded to the nearest pixel and clipped to the sensor, timestamps rounded and clipped to
    ``[t_first, t_last]`` (ECDP clips coordinates to the largest observed ones and leaves ``t`` unclipped; clipping
    to the sensor and the observed span keeps the noise inside the sample's window). Fewer events: unchanged.
    """
    n = len(ev)
    if n < max(min_events, 2):
        return ev
    if isinstance(count, tuple | list):
        lo, hi = min(int(count[0]), n - 1), min(int(count[1]), n)
        k = int(rng.integers(lo, hi)) if hi > lo else lo
    else:
        k = min(int(count), n)
    if k <= 0:
        return ev
    pick = rng.choice(n, size=k, replace=False)
    x = np.rint(ev.x[pick] + rng.normal(0.0, xy_std, k)).clip(0, ev.width - 1).astype(np.int16)
    y = np.rint(ev.y[pick] + rng.normal(0.0, xy_std, k)).clip(0, ev.height - 1).astype(np.int16)
    t = np.rint(ev.t[pick] + rng.normal(0.0, t_std_us, k)).clip(ev.t[0], ev.t[-1]).astype(np.int64)
    return _merge(ev, Events(x, y, t, ev.p[pick].copy(), ev.height, ev.width))


# ---------------------------------------------------------------------------------------------------- images
def _spatial_axes(channels_last: bool) -> tuple[int, int]:
    return (-3, -2) if channels_last else (-2, -1)


def _flip(img: Any, axis: int) -> Any:
    if isinstance(img, torch.Tensor):
        return torch.flip(img, dims=(axis,))
    return np.flip(img, axis=axis).copy()


def _slice(img: Any, axis: int, start: int, stop: int) -> Any:
    index = [slice(None)] * img.ndim
    index[axis] = slice(start, stop)
    return img[tuple(index)]


def apply_flip_to_image(img: Any, params: Params, channels_last: bool = False) -> Any:
    """Apply a ``flip_x`` / ``flip_y`` params dict to an image (numpy or torch; ``(..., H, W)`` or ``(..., H, W, C)``
    with ``channels_last``)."""
    ay, ax = _spatial_axes(channels_last)
    if params["op"] == "flip_x":
        return _flip(img, ax)
    if params["op"] == "flip_y":
        return _flip(img, ay)
    raise ValueError(f"not a flip: {params}")


def apply_crop_to_image(img: Any, params: Params, channels_last: bool = False) -> Any:
    """Apply a ``crop`` params dict: ``img[..., top:top+h, left:left+w]`` (a view)."""
    if params["op"] != "crop":
        raise ValueError(f"not a crop: {params}")
    ay, ax = _spatial_axes(channels_last)
    img = _slice(img, ay, params["top"], params["top"] + params["height"])
    return _slice(img, ax, params["left"], params["left"] + params["width"])


def _apply_shift(img: Any, params: Params, channels_last: bool) -> Any:
    ay, ax = _spatial_axes(channels_last)
    h, w = img.shape[ay], img.shape[ax]
    dx, dy = params["dx"], params["dy"]
    out = torch.zeros_like(img) if isinstance(img, torch.Tensor) else np.zeros_like(img)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src = _slice(_slice(img, ay, max(0, -dy), h - max(0, dy)), ax, max(0, -dx), w - max(0, dx))
    dst = _slice(_slice(out, ay, max(0, dy), h - max(0, -dy)), ax, max(0, dx), w - max(0, -dx))
    dst[...] = src
    return out


def _apply_rescale(img: Any, params: Params, channels_last: bool) -> Any:
    """Nearest-neighbour resize consistent with the event mapping: target pixel i takes source ⌊(i + ½) S / T⌋."""
    ay, ax = _spatial_axes(channels_last)
    rows = ((np.arange(params["height"]) + 0.5) * params["src_height"] / params["height"]).astype(np.int64)
    cols = ((np.arange(params["width"]) + 0.5) * params["src_width"] / params["width"]).astype(np.int64)
    if isinstance(img, torch.Tensor):
        img = img.index_select(img.ndim + ay, torch.as_tensor(rows, device=img.device))
        return img.index_select(img.ndim + ax, torch.as_tensor(cols, device=img.device))
    return np.take(np.take(img, rows, axis=ay), cols, axis=ax)


def apply_to_image(img: Any, params: Params | Sequence[Params | None] | None, channels_last: bool = False) -> Any:
    """Apply geometric params (one dict, or a list in application order, ``None`` entries skipped) to an image.

    ``img`` is numpy or torch with spatial axes ``(H, W)`` last (default) or ``(H, W, C)`` (``channels_last``).
    Shifts fill with zeros; rescaling samples the nearest pixel (right for masks and labels; no interpolation).
    """
    if params is None:
        return img
    if isinstance(params, dict):
        params = [params]
    for prm in params:
        if prm is None:
            continue
        op = prm["op"]
        if op in ("flip_x", "flip_y"):
            img = apply_flip_to_image(img, prm, channels_last)
        elif op == "crop":
            img = apply_crop_to_image(img, prm, channels_last)
        elif op == "shift":
            img = _apply_shift(img, prm, channels_last)
        elif op == "rescale":
            img = _apply_rescale(img, prm, channels_last)
        else:
            raise ValueError(f"unknown geometric op {op!r}")
    return img


# ---------------------------------------------------------------------------------------------------- config classes
class EventTransform:
    """Base of the config classes: ``t(ev, rng) -> Events``, applied with probability ``p``.

    :meth:`apply` returns ``(events, params)`` where ``params`` is a list of the geometric params dicts applied (empty
    for non-geometric transforms or when skipped), for :func:`apply_to_image`.
    """

    p: float = 1.0

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        raise NotImplementedError

    def apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        """Apply (with probability ``p``) and return the events plus the geometric params list."""
        if self.p < 1.0 and rng.random() >= self.p:
            return ev, []
        return self._apply(ev, rng)

    def __call__(self, ev: Events, rng: np.random.Generator) -> Events:
        return self.apply(ev, rng)[0]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _prob(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p must be in [0, 1], got {p}")
    return float(p)


class Identity(EventTransform):
    """No change."""

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return ev, []


class FlipX(EventTransform):
    """:func:`flip_x` with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out, prm = flip_x(ev, return_params=True)
        return out, [prm]


class FlipY(EventTransform):
    """:func:`flip_y` with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out, prm = flip_y(ev, return_params=True)
        return out, [prm]


class RandomCrop(EventTransform):
    """:func:`random_crop` to ``size`` = (height, width) (always applied: it changes the sensor size)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _hw(size)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out, prm = random_crop(ev, self.size, rng, return_params=True)
        return out, [prm]


class CenterCrop(EventTransform):
    """:func:`center_crop` to ``size`` = (height, width) (the deterministic evaluation twin of RandomCrop)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _hw(size)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out, prm = center_crop(ev, self.size, return_params=True)
        return out, [prm]


class RandomShift(EventTransform):
    """:func:`shift` by up to ``max_shift`` pixels in x and y, with probability ``p`` (ECDP: 20 px, always)."""

    def __init__(self, max_shift: int = 20, p: float = 1.0) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out, prm = shift(ev, self.max_shift, rng, return_params=True)
        return out, [prm]


class Rescale(EventTransform):
    """:func:`rescale` to ``size`` = (height, width) (always applied)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _hw(size)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out, prm = rescale(ev, self.size, return_params=True)
        return out, [prm]


class TimeFlip(EventTransform):
    """:func:`time_flip` (with polarity inversion) with probability ``p`` (ECDP: 0.5)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return time_flip(ev), []


class PolarityFlip(EventTransform):
    """:func:`polarity_flip` with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return polarity_flip(ev), []


class DropByCount(EventTransform):
    """:func:`drop_by_count` with ``ratio`` (a number or a uniform ``(low, high)`` range), probability ``p``."""

    def __init__(self, ratio: float | tuple[float, float] = (0.1, 0.9), p: float = 1.0) -> None:
        self.ratio = ratio
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return drop_by_count(ev, _draw(self.ratio, rng), rng), []


class DropByTime(EventTransform):
    """:func:`drop_by_time` with ``ratio`` of the window (number or ``(low, high)`` range), probability ``p``."""

    def __init__(self, ratio: float | tuple[float, float] = (0.1, 0.9), p: float = 1.0) -> None:
        self.ratio = ratio
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return drop_by_time(ev, _draw(self.ratio, rng), rng), []


class DropByArea(EventTransform):
    """:func:`drop_by_area` with per-side ``ratio`` (number or ``(low, high)`` range), probability ``p``."""

    def __init__(self, ratio: float | tuple[float, float] = (0.05, 0.25), p: float = 1.0) -> None:
        self.ratio = ratio
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return drop_by_area(ev, _draw(self.ratio, rng), rng), []


class EventDrop(EventTransform):
    """EventDrop (Gu et al., IJCAI 2021): one of identity / drop by time / drop by area / drop by count, uniformly.

    Ratios as in the EventDrop code: time and count ``U{0.1, ..., 0.9}``, area per side ``U{0.05, ..., 0.25}``. When
    every event would be dropped, the original sample is kept (as there).
    """

    def __init__(self, p: float = 1.0) -> None:
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        option = int(rng.integers(0, 4))
        if option == 0:
            return ev, []
        if option == 1:
            out = drop_by_time(ev, int(rng.integers(1, 10)) / 10.0, rng)
        elif option == 2:
            out = drop_by_area(ev, int(rng.integers(1, 6)) / 20.0, rng)
        else:
            out = drop_by_count(ev, int(rng.integers(1, 10)) / 10.0, rng)
        return (out if len(out) else ev), []


class AddNoise(EventTransform):
    """:func:`add_noise`: uniform noise events, ``density`` per pixel (number or range) or an exact ``count``."""

    def __init__(
        self, density: float | tuple[float, float] | None = 0.01, count: int | None = None, p: float = 1.0
    ) -> None:
        if (density is None) == (count is None):
            raise ValueError("give exactly one of density or count")
        self.density = density
        self.count = count
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        if self.count is not None:
            return add_noise(ev, rng, count=self.count), []
        return add_noise(ev, rng, density=_draw(self.density, rng)), []  # type: ignore[arg-type]


class AddCorrelatedNoise(EventTransform):
    """:func:`add_correlated_noise` (ECDP's correlated-event augmentation), probability ``p``."""

    def __init__(
        self,
        count: int | tuple[int, int] = (100, 5000),
        xy_std: float = 1.5,
        t_std_us: float = 1000.0,
        min_events: int = 1000,
        p: float = 1.0,
    ) -> None:
        self.count = count
        self.xy_std = float(xy_std)
        self.t_std_us = float(t_std_us)
        self.min_events = int(min_events)
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        out = add_correlated_noise(ev, rng, self.count, self.xy_std, self.t_std_us, self.min_events)
        return out, []


class TimeScale(EventTransform):
    """:func:`time_scale` by ``factor`` (number or uniform ``(low, high)`` range), probability ``p``."""

    def __init__(self, factor: float | tuple[float, float] = (0.8, 1.25), p: float = 1.0) -> None:
        self.factor = factor
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        return time_scale(ev, _draw(self.factor, rng)), []


class Compose(EventTransform):
    """Apply ``transforms`` in order (each with its own probability); params lists are concatenated."""

    def __init__(self, transforms: list[EventTransform]) -> None:
        self.transforms = list(transforms)
        self.p = 1.0

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        params: list[Params] = []
        for t in self.transforms:
            ev, prm = t.apply(ev, rng)
            params.extend(prm)
        return ev, params


class RandomApply(Compose):
    """With probability ``p`` apply all ``transforms`` in order, else none."""

    def __init__(self, transforms: list[EventTransform], p: float = 0.5) -> None:
        super().__init__(transforms)
        self.p = _prob(p)


class RandomChoice(EventTransform):
    """Apply one of ``transforms``, chosen uniformly (or with ``weights``)."""

    def __init__(self, transforms: list[EventTransform], weights: list[float] | None = None, p: float = 1.0) -> None:
        if not transforms:
            raise ValueError("RandomChoice needs at least one transform")
        if weights is not None and len(weights) != len(transforms):
            raise ValueError("weights and transforms differ in length")
        self.transforms = list(transforms)
        self.weights = weights
        self.p = _prob(p)

    def _apply(self, ev: Events, rng: np.random.Generator) -> tuple[Events, list[Params]]:
        w = None if self.weights is None else np.asarray(self.weights, np.float64) / np.sum(self.weights)
        i = int(rng.choice(len(self.transforms), p=w))
        return self.transforms[i].apply(ev, rng)
