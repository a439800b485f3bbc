"""Window samplers: turn ``(store, recording index, rng, train)`` into one sample dict.

A sampler decides *which* events (and paired frames / dense labels / poses) make up one training or evaluation
sample. It is a plain class with a typed ``__init__`` so that jsonargparse can build it from YAML (``class_path``).
Samplers run inside DataLoader workers and only use numpy (plus ``torch.from_numpy`` for image-like outputs).

Conventions shared by every sampler here:

* A window is ``[t0, t1)`` in absolute microseconds of the recording; it is returned next to the events (``"window"``
  for key ``"events"``, ``"<key>_window"`` for other event keys) so representations normalise time by the window, not
  by the first/last event.
* ``train=True``: the window position is drawn from ``rng`` (uniform over all positions that fit in the recording).
  ``train=False``: the window is centred, so evaluation is deterministic (unlike ECDP's eval-time random slicing).
* ``segment=(k, n)`` (passed by :class:`~evssl.data.datasets.StoreDataset` when it draws ``n`` windows per recording)
  restricts the window start to the ``k``-th of ``n`` equal parts of the admissible range (stratified positions).
* Event augmentations (``augment(ev, rng) -> Events``) run only when ``train`` is True.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from evssl.events.schema import Events

if TYPE_CHECKING:  # pragma: no cover
    from evssl.events.io.store import EventStore

__all__ = [
    "DENSE_KEYS",
    "ClassificationWindow",
    "DenseWindow",
    "RepresentationProtocol",
    "SamplerProtocol",
    "SequenceWindows",
    "WindowSampler",
    "pick_start",
]

DENSE_KEYS = ("semantic", "flow", "depth")
Augment = Callable[[Events, np.random.Generator], Events]


@runtime_checkable
class SamplerProtocol(Protocol):
    """What the data module needs from a sampler (every :class:`WindowSampler` satisfies it).

    ``__call__(store, index, rng, train, segment)`` builds one sample dict; :meth:`output_size` gives the (H, W) of
    the events it produces for a store's sensor size; :meth:`representation_keys` maps event keys of a sample to
    the batch keys of their dense tensors. A multi-view sampler may also carry ``representations``: ``{event key:
    representation}`` overriding the data module's representation per key.
    """

    def __call__(
        self, store: EventStore, index: int, rng: np.random.Generator, train: bool, segment: tuple[int, int] = (0, 1)
    ) -> dict[str, Any]: ...

    def output_size(self, sensor_size: tuple[int, int]) -> tuple[int, int]: ...

    def representation_keys(self) -> dict[str, str]: ...


@runtime_checkable
class RepresentationProtocol(Protocol):
    """An event representation: ``rep(batch: EventBatch) -> (B, rep.channels, H, W)`` float32."""

    @property
    def channels(self) -> int: ...

    def __call__(self, ev: Any) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------------------- helpers
def pick_start(lo: int, hi: int, rng: np.random.Generator, train: bool, segment: tuple[int, int] = (0, 1)) -> int:
    """A start position in ``[lo, hi]`` (inclusive): uniform when ``train``, the centre otherwise.

    With ``segment=(k, n)`` the range is cut into ``n`` equal consecutive parts and part ``k`` is used.
    """
    lo, hi = int(lo), int(hi)
    if hi <= lo:
        return lo
    k, n = int(segment[0]), max(int(segment[1]), 1)
    span = hi - lo + 1
    a = lo + (span * k) // n
    b = max(a, lo + (span * (k + 1)) // n - 1)
    return int(rng.integers(a, b + 1)) if train else (a + b) // 2


def require_frames(store: EventStore, index: int, why: str) -> np.ndarray:
    """The frame times of recording ``index``; a recording without frames is an error naming ``why`` (the option
    that asked for them)."""
    ft = store.frame_times(index)
    if len(ft) == 0:
        raise ValueError(f"recording {index} has no frames ({why})")
    return ft


def duration_window(
    store: EventStore, index: int, duration_us: int, rng: np.random.Generator, train: bool, segment: tuple[int, int]
) -> tuple[Events, tuple[int, int]]:
    """A window of ``duration_us`` inside recording ``index`` (start by :func:`pick_start`): events, ``(t0, t1)``."""
    info = store.info(index)
    t0 = pick_start(int(info.t_start), int(info.t_end) + 1 - duration_us, rng, train, segment)
    return store.window(index, t0, t0 + duration_us), (t0, t0 + duration_us)


def nearest_index(times: np.ndarray, t: int) -> int:
    """Index of the entry of the sorted array ``times`` nearest to ``t`` (ties go to the earlier one)."""
    if len(times) == 0:
        raise ValueError("no timestamps to choose from")
    j = int(np.searchsorted(times, t, side="left"))
    if j <= 0:
        return 0
    if j >= len(times):
        return len(times) - 1
    return j - 1 if (t - times[j - 1]) <= (times[j] - t) else j


def _resize(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize a (C, H, W) or (H, W) numpy image to ``size`` = (H', W') with torch interpolation."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    squeeze = img.ndim == 2
    x = torch.from_numpy(np.ascontiguousarray(img[None] if squeeze else img)).float()[None]
    y = F.interpolate(x, size=tuple(size), mode=mode)[0]
    out = y[0] if squeeze else y
    return out.numpy()


def _rescale_events(ev: Events, size: tuple[int, int]) -> Events:
    """Events mapped onto a sensor of ``size`` = (H, W) (:func:`evssl.events.augment.rescale`)."""
    if (ev.height, ev.width) == tuple(size):
        return ev
    from evssl.events import augment

    return augment.rescale(ev, tuple(size))


def apply_geometry(paired: dict[str, np.ndarray], params: Sequence[dict[str, Any] | None]) -> dict[str, np.ndarray]:
    """Apply geometric augmentation params (``augment``'s ``return_params`` dicts, in order) to paired images.

    Frames, semantic masks, depth and flow are (..., H, W) numpy arrays; they follow
    :func:`evssl.events.augment.apply_to_image` (crop, flip, shift with zero fill, nearest rescale). The flow field
    also changes value: a horizontal (vertical) flip negates its x (y) component and a rescale scales it.
    """
    from evssl.events import augment

    out = dict(paired)
    for prm in params:
        if prm is None:
            continue
        out = {k: augment.apply_to_image(v, prm) for k, v in out.items()}
        if "flow" in out:
            op = prm["op"]
            flow = None
            if op == "flip_x":
                flow = out["flow"].copy()
                flow[0] = -flow[0]
            elif op == "flip_y":
                flow = out["flow"].copy()
                flow[1] = -flow[1]
            elif op == "rescale":
                flow = out["flow"].copy()
                flow[0] *= prm["width"] / prm["src_width"]
                flow[1] *= prm["height"] / prm["src_height"]
            if flow is not None:
                out["flow"] = flow
    return out


def _run_augment(augment: Callable, ev: Events, rng: np.random.Generator) -> tuple[Events, list[dict[str, Any]]]:
    """Run an event augmentation; with an ``augment.EventTransform`` (``.apply``) also return its geometric params."""
    apply = getattr(augment, "apply", None)
    if callable(apply):
        out, params = apply(ev, rng)
        return out, list(params)
    return augment(ev, rng), []


# ---------------------------------------------------------------------------------------------------------- base
class WindowSampler:
    """Base class of all samplers: ``sampler(store, index, rng, train) -> dict`` for one recording.

    Subclasses implement :meth:`__call__`. :meth:`representation_keys` says which event keys of a sample the data
    module turns into dense tensors and under which batch key (default ``{"events": "input"}``); a multi-view sampler
    may also set a ``representations`` dict attribute ``{event key: Representation}`` to use its own representation
    per view. :meth:`output_size` reports the sensor size of the events it produces (used for ``sensor_size``).
    """

    representations: dict[str, Any] | None = None
    resolution: tuple[int, int] | None = None  # (H, W) the events are rescaled to, when set

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Build the sample of recording ``index``."""
        raise NotImplementedError

    def representation_keys(self) -> dict[str, str]:
        """Event key -> output key of the representation in a batch."""
        return {"events": "input"}

    def output_size(self, sensor_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the produced events given the store's sensor size: ``resolution`` when set, else the store's."""
        return self.resolution if self.resolution is not None else tuple(sensor_size)  # type: ignore[return-value]


class ClassificationWindow(WindowSampler):
    """One window of a labelled recording, by duration or by event count.

    Args:
        duration_us: window length in microseconds (used when ``num_events`` is None).
        num_events: window of N consecutive events instead (ECDP: 30,000); takes precedence over ``duration_us``.
        augment: event augmentation ``augment(ev, rng) -> Events``, applied when training only.
        with_frames: add ``"frame"``, the (3, H, W) uint8 frame nearest to the window end.
        with_dense: add ``"semantic"`` (H, W) long, ``"flow"`` (2, H, W) float and ``"depth"`` (H, W) float at the
            dense timestamp nearest to the window end (only the keys listed in ``dense_keys``).
        resolution: (H, W) to rescale events (``augment.rescale``) and images to (frames: area, semantic/depth:
            nearest, flow: area with vectors scaled by the resize factors). Needed when a store mixes sensor sizes.
        dense_keys: which dense targets to read when ``with_dense`` (``None``: every one the recording has).

    Returns ``{"events", "window": (t0, t1), "label": int, "index": int}`` (+ ``"frame"``, dense keys).
    """

    def __init__(
        self,
        duration_us: int | None = 50_000,
        num_events: int | None = None,
        augment: Callable | None = None,
        with_frames: bool = False,
        with_dense: bool = False,
        resolution: tuple[int, int] | None = None,
        dense_keys: tuple[str, ...] | None = None,
    ) -> None:
        if num_events is None and (duration_us is None or duration_us <= 0):
            raise ValueError("ClassificationWindow needs a positive duration_us or num_events")
        if num_events is not None and num_events <= 0:
            raise ValueError(f"num_events must be positive, got {num_events}")
        unknown = set(dense_keys or ()) - set(DENSE_KEYS)
        if unknown:
            raise ValueError(f"unknown dense keys {sorted(unknown)}; choose from {DENSE_KEYS}")
        self.duration_us = None if duration_us is None else int(duration_us)
        self.num_events = None if num_events is None else int(num_events)
        self.augment = augment
        self.with_frames = bool(with_frames)
        self.with_dense = bool(with_dense)
        self.resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))
        self.dense_keys = None if dense_keys is None else tuple(dense_keys)

    # ------------------------------------------------------------------ pieces
    def select_window(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> tuple[Events, tuple[int, int]]:
        """The raw events of the window and the window ``(t0, t1)``."""
        info = store.info(index)
        if self.num_events is not None:
            n, k = int(info.num_events), self.num_events
            if n == 0:
                ev = store.events(index, 0, 0)
                return ev, (int(info.t_start), int(info.t_start) + 1)
            start = pick_start(0, max(n - k, 0), rng, train, segment)
            stop = min(start + k, n)
            ev = store.events(index, start, stop)
            return ev, (int(ev.t[0]), int(ev.t[-1]) + 1)
        return duration_window(store, index, int(self.duration_us), rng, train, segment)  # type: ignore[arg-type]

    def paired(self, store: EventStore, index: int, t: int) -> dict[str, np.ndarray]:
        """Frame (3, H, W) uint8 and dense targets nearest to time ``t``, as numpy (before geometry)."""
        out: dict[str, np.ndarray] = {}
        if self.with_frames:
            ft = require_frames(store, index, "with_frames=True")
            out["frame"] = np.ascontiguousarray(store.frames(index, nearest_index(ft, t)).transpose(2, 0, 1))
        if self.with_dense:
            dt = store.dense_times(index)
            if len(dt) == 0:
                raise ValueError(f"recording {index} has no dense targets (with_dense=True)")
            j = nearest_index(dt, t)
            keys = self.dense_keys if self.dense_keys is not None else store.info(index).dense_keys
            for key in keys:
                arr = store.dense(index, key, j)
                if key == "semantic":
                    arr = arr.astype(np.int64)
                else:
                    arr = arr.astype(np.float32)
                out[key] = arr
        return out

    def resize_paired(self, paired: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Resize images to ``size``: frame and flow by area (flow vectors scaled), semantic and depth by the nearest
        pixel with the rule of ``augment.apply_to_image`` (consistent with ``augment.rescale`` of the events)."""
        out = dict(paired)
        if "frame" in out:
            out["frame"] = np.clip(np.rint(_resize(out["frame"], size, "area")), 0, 255).astype(np.uint8)
        for key in ("semantic", "depth"):
            if key in out and tuple(out[key].shape[-2:]) != tuple(size):
                h, w = out[key].shape[-2:]
                prm = {"op": "rescale", "height": size[0], "width": size[1], "src_height": h, "src_width": w}
                out[key] = apply_geometry({key: out[key]}, [prm])[key]
        if "flow" in out:
            h, w = out["flow"].shape[-2:]
            flow = _resize(out["flow"], size, "area").astype(np.float32)
            flow[0] *= size[1] / w
            flow[1] *= size[0] / h
            out["flow"] = flow
        return out

    def at_resolution(self, ev: Events, paired: dict[str, np.ndarray]) -> tuple[Events, dict[str, np.ndarray]]:
        """Events and paired images rescaled to ``resolution`` (unchanged when it is ``None``)."""
        if self.resolution is None:
            return ev, paired
        return _rescale_events(ev, self.resolution), self.resize_paired(paired, self.resolution)

    def build_sample(
        self, store: EventStore, index: int, ev: Events, window: tuple[int, int], paired: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """``{"events", "window", "label", "index"}`` and the paired images as tensors."""
        sample: dict[str, Any] = {
            "events": ev,
            "window": window,
            "label": int(store.info(index).label),
            "index": int(index),
        }
        sample.update(self.to_tensors(paired))
        return sample

    @staticmethod
    def to_tensors(paired: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """numpy images -> contiguous torch tensors (frame uint8, semantic long, flow/depth float32)."""
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in paired.items()}

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Sample one window of recording ``index``."""
        ev, window = self.select_window(store, index, rng, train, segment)
        paired = self.paired(store, index, window[1]) if (self.with_frames or self.with_dense) else {}
        ev, paired = self.at_resolution(ev, paired)
        if train and self.augment is not None:
            ev, params = _run_augment(self.augment, ev, rng)
            paired = apply_geometry(paired, params)
        return self.build_sample(store, index, ev, window, paired)


class DenseWindow(ClassificationWindow):
    """A window with frame and dense targets that stay pixel-aligned under random crop and horizontal flip.

    Training: a random ``crop_size`` crop (``augment.random_crop(..., return_params=True)``) then a horizontal flip
    with probability ``hflip_p`` are applied to the events *and* to frame / semantic / flow / depth with the same
    parameters; under the flip the x-component of the flow is negated. Evaluation: a centred crop, no flip. The
    optional ``augment`` runs after the geometry (use non-geometric event augmentations here).
    """

    def __init__(
        self,
        duration_us: int | None = 50_000,
        num_events: int | None = None,
        augment: Callable | None = None,
        with_frames: bool = True,
        with_dense: bool = True,
        resolution: tuple[int, int] | None = None,
        dense_keys: tuple[str, ...] | None = None,
        crop_size: tuple[int, int] | None = None,
        hflip_p: float = 0.5,
    ) -> None:
        super().__init__(duration_us, num_events, augment, with_frames, with_dense, resolution, dense_keys)
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.hflip_p = float(hflip_p)

    def output_size(self, sensor_size: tuple[int, int]) -> tuple[int, int]:
        """``crop_size`` when set, else ``resolution`` or the sensor size."""
        return self.crop_size if self.crop_size is not None else super().output_size(sensor_size)

    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Sample one window with aligned geometric augmentation of events and paired images."""
        from evssl.events import augment as aug

        ev, window = self.select_window(store, index, rng, train, segment)
        paired = self.paired(store, index, window[1])
        ev, paired = self.at_resolution(ev, paired)
        for key, img in paired.items():
            if tuple(img.shape[-2:]) != (ev.height, ev.width):
                raise ValueError(
                    f"{key} of recording {index} is {tuple(img.shape[-2:])}, events are {(ev.height, ev.width)}; "
                    "set resolution= so both are resized to one size"
                )
        params: list[dict[str, Any]] = []
        if self.crop_size is not None:
            if train:
                ev, prm = aug.random_crop(ev, self.crop_size, rng, return_params=True)
            else:
                ev, prm = aug.center_crop(ev, self.crop_size, return_params=True)
            params.append(prm)
        if train and self.hflip_p > 0 and rng.random() < self.hflip_p:
            ev, prm = aug.flip_x(ev, return_params=True)
            params.append(prm)
        if train and self.augment is not None:
            ev, more = _run_augment(self.augment, ev, rng)
            params += more
        paired = apply_geometry(paired, params)
        return self.build_sample(store, index, ev, window, paired)


class SequenceWindows(WindowSampler):
    """``num_windows`` consecutive windows of an ordered recording (odometry / recurrent methods).

    Window ``j`` is ``[t0 + j * stride_us, t0 + j * stride_us + duration_us)``; ``t0`` is random when training and
    centred otherwise. Returns ``"events_j"`` (+ ``"events_j_window"``) for every window, ``"frames"`` (k, 3, H, W)
    uint8 (frame nearest to each window end), ``"poses"`` (k, 4, 4) float32 camera-to-world (pose nearest to each
    window end), ``"intrinsics"`` (3, 3) float32 and ``"index"``. With ``resolution`` events and frames are resized
    and the intrinsics scaled to match.
    """

    def __init__(
        self,
        num_windows: int = 3,
        duration_us: int = 50_000,
        stride_us: int = 50_000,
        augment: Callable | None = None,
        with_frames: bool = True,
        with_poses: bool = True,
        resolution: tuple[int, int] | None = None,
    ) -> None:
        if num_windows <= 0 or duration_us <= 0 or stride_us <= 0:
            raise ValueError("num_windows, duration_us and stride_us must be positive")
        self.num_windows = int(num_windows)
        self.duration_us = int(duration_us)
        self.stride_us = int(stride_us)
        self.augment = augment
        self.with_frames = bool(with_frames)
        self.with_poses = bool(with_poses)
        self.resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))

    @property
    def span_us(self) -> int:
        """Time covered by the windows: (k - 1) * stride + duration."""
        return (self.num_windows - 1) * self.stride_us + self.duration_us

    def representation_keys(self) -> dict[str, str]:
        """``events_j`` -> ``input_j``."""
        return {f"events_{j}": f"input_{j}" for j in range(self.num_windows)}

    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Sample ``num_windows`` consecutive windows with their frames and poses."""
        info = store.info(index)
        ts, te = int(info.t_start), int(info.t_end)
        t0 = pick_start(ts, te + 1 - self.span_us, rng, train, segment)
        sample: dict[str, Any] = {"index": int(index)}
        ends = []
        for j in range(self.num_windows):
            a = t0 + j * self.stride_us
            b = a + self.duration_us
            ev = store.window(index, a, b)
            if self.resolution is not None:
                ev = _rescale_events(ev, self.resolution)
            if train and self.augment is not None:
                ev = _run_augment(self.augment, ev, rng)[0]
            sample[f"events_{j}"] = ev
            sample[f"events_{j}_window"] = (a, b)
            ends.append(b)
        if self.with_frames:
            ft = require_frames(store, index, "with_frames=True")
            frames = []
            for b in ends:
                fr = np.ascontiguousarray(store.frames(index, nearest_index(ft, b)).transpose(2, 0, 1))
                if self.resolution is not None:
                    fr = np.clip(np.rint(_resize(fr, self.resolution, "area")), 0, 255).astype(np.uint8)
                frames.append(fr)
            sample["frames"] = torch.from_numpy(np.stack(frames))
        if self.with_poses:
            poses, pose_t = store.poses(index)
            if len(pose_t) == 0:
                raise ValueError(f"recording {index} has no poses (with_poses=True)")
            sel = [nearest_index(pose_t, b) for b in ends]
            sample["poses"] = torch.from_numpy(np.asarray(poses[sel], dtype=np.float32))
        k = store.intrinsics(index)
        if k is not None:
            k = np.array(k, dtype=np.float32)
            if self.resolution is not None:
                k[0] *= self.resolution[1] / info.width
                k[1] *= self.resolution[0] / info.height
            sample["intrinsics"] = torch.from_numpy(k)
        return sample
