"""EvDistill samples: an event window and a labelled frame, paired (same recording) or unpaired (another one).

EvDistill (Wang et al., CVPR 2021) learns an event student from a teacher trained on labelled images, with
*unlabelled, unpaired* event data. :class:`CrossModalPairs` builds that setting from any store with frames:

* ``pairing="unpaired"`` (default): at training time the frame, its semantic mask and its class label come from a
  **different** recording than the event window — the partner of recording ``i`` is ``perm[(k + 1) mod n]`` where
  ``perm`` is a seeded permutation of the ``n`` recordings of ``i``'s split and ``i = perm[k]`` (a cyclic shift of a
  permutation: a derangement, so no recording is its own partner, and every frame is used exactly once per pass).
  ``resample_each_epoch=True`` instead draws the partner uniformly among the other recordings of the split from the
  item's generator (keyed by seed, epoch, recording). Events and frame get independent random crops / flips.
* ``pairing="paired"``: the frame nearest to the window end of the same recording, with the same crop / flip
  (pixel-aligned: reconstruction terms and mutual distillation may use it).
* ``use_event_labels=False`` (default): a training sample carries no label of its event window (no ``"semantic"``,
  no ``"label"``), so nothing can leak into the student; ``True`` adds them (an "upper bound" mode).
* Evaluation (``train=False``) is always paired and labelled: the student is scored on the events with their own
  labels, the teacher (reference row) on the recording's own frame.

Sample keys: ``"events"``, ``"window"``, ``"index"`` (event recording), ``"frame"`` (3, H, W) uint8, ``"frame_index"``,
``"frame_label"``, ``"frame_semantic"`` (H, W) when ``"semantic"`` is in ``dense_keys``, ``"paired"`` (bool), and
``"semantic"`` / ``"label"`` of the events when labelled (evaluation or ``use_event_labels``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evssl.data.samplers import DenseWindow, WindowSampler

if TYPE_CHECKING:  # pragma: no cover
    from evssl.events.io.store import EventStore

__all__ = ["CrossModalPairs", "Pairing", "derangement_partners"]

Pairing = Literal["paired", "unpaired"]


def derangement_partners(ids: np.ndarray, seed: int) -> dict[int, int]:
    """``{id: partner}`` from a seeded permutation ``perm`` of ``ids``: ``partner(perm[k]) = perm[(k + 1) % n]``.

    No id is its own partner (for ``n >= 2``) and the partners are a permutation of ``ids``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        raise ValueError(f"unpaired sampling needs >= 2 recordings in a split, got {len(ids)}")
    perm = np.random.default_rng(seed).permutation(ids)
    return {int(a): int(b) for a, b in zip(perm, np.roll(perm, -1), strict=True)}


class CrossModalPairs(WindowSampler):
    """Event window + frame (+ the frame's labels) for EvDistill, paired or unpaired (module docstring).

    Args:
        duration_us: event window length (µs). num_events: fixed-count window instead.
        pairing: ``"unpaired"`` (frame of another recording) or ``"paired"`` (own frame, aligned).
        use_event_labels: add the event window's own ``"semantic"`` / ``"label"`` to training samples.
        dense_keys: dense targets to read (``("semantic",)`` for segmentation, ``()`` for recognition).
        crop_size: random (train) / centred (eval) crop of events and images. hflip_p: horizontal flip probability.
        resolution: resize events and images first (stores with mixed sensor sizes).
        permutation_seed: seed of the unpaired permutation (mixed with a CRC of the split name).
        resample_each_epoch: draw a fresh partner per item and epoch instead of the fixed permutation.
        augment: non-geometric event augmentation (training only).
    """

    def __init__(
        self,
        duration_us: int | None = 50_000,
        num_events: int | None = None,
        pairing: Pairing = "unpaired",
        use_event_labels: bool = False,
        dense_keys: tuple[str, ...] = ("semantic",),
        crop_size: tuple[int, int] | None = None,
        hflip_p: float = 0.5,
        resolution: tuple[int, int] | None = None,
        permutation_seed: int = 0,
        resample_each_epoch: bool = False,
        augment: Callable | None = None,
    ) -> None:
        if pairing not in ("paired", "unpaired"):
            raise ValueError(f"CrossModalPairs pairing must be 'paired' or 'unpaired', got {pairing!r}")
        self.duration_us = duration_us
        self.num_events = num_events
        self.pairing: Pairing = pairing
        self.use_event_labels = bool(use_event_labels)
        self.dense_keys = tuple(dense_keys)
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.hflip_p = float(hflip_p)
        self.resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))
        self.permutation_seed = int(permutation_seed)
        self.resample_each_epoch = bool(resample_each_epoch)
        self.augment = augment
        common = {"duration_us": duration_us, "num_events": num_events, "resolution": self.resolution,
                  "crop_size": self.crop_size, "hflip_p": self.hflip_p}  # fmt: skip
        dense = bool(self.dense_keys)
        # the full, aligned view (evaluation; paired training) and the two halves of an unpaired sample
        self._aligned = DenseWindow(augment=augment, with_frames=True, with_dense=dense, dense_keys=self.dense_keys,
                                    **common)  # fmt: skip
        self._events_only = DenseWindow(augment=augment, with_frames=False, with_dense=dense and use_event_labels,
                                        dense_keys=self.dense_keys, **common)  # fmt: skip
        self._frame_only = DenseWindow(with_frames=True, with_dense=dense, dense_keys=self.dense_keys, **common)
        self._partners: dict[tuple[str, str], dict[int, int]] = {}

    def output_size(self, sensor_size: tuple[int, int]) -> tuple[int, int]:
        """``crop_size``, else ``resolution``, else the sensor size."""
        return self._aligned.output_size(sensor_size)

    # ------------------------------------------------------------------ partners
    def split_members(self, store: EventStore, index: int) -> tuple[str, np.ndarray]:
        """The split name of recording ``index`` and every recording of that split (all when the store has none)."""
        splits = np.asarray(store.splits).astype(str)
        name = str(splits[index]) if len(splits) else ""
        return name, np.flatnonzero(splits == name) if len(splits) else np.arange(len(store))

    def partner(self, store: EventStore, index: int, rng: np.random.Generator) -> int:
        """The recording whose frame (and labels) go with the event window of ``index`` when unpaired."""
        name, ids = self.split_members(store, index)
        if self.resample_each_epoch:
            others = ids[ids != index]
            if len(others) == 0:
                raise ValueError(f"unpaired sampling: split {name!r} of {store.path} has a single recording")
            return int(others[rng.integers(len(others))])
        key = (str(store.path), name)
        if key not in self._partners:
            self._partners[key] = derangement_partners(ids, self.permutation_seed ^ zlib.crc32(name.encode()))
        return self._partners[key][int(index)]

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """One EvDistill sample of recording ``index`` (keys in the module docstring)."""
        if not train or self.pairing == "paired":
            s = self._aligned(store, index, rng, train, segment)
            out = {"events": s["events"], "window": s["window"], "index": s["index"], "frame": s["frame"],
                   "frame_index": s["index"], "frame_label": s["label"], "paired": True}  # fmt: skip
            if "semantic" in s:
                out["frame_semantic"] = s["semantic"]
            if not train or self.use_event_labels:
                out["label"] = s["label"]
                if "semantic" in s:
                    out["semantic"] = s["semantic"].clone()
            return out
        j = self.partner(store, index, rng)
        ev = self._events_only(store, index, rng, train, segment)
        fr_rng = np.random.default_rng(rng.integers(2**63))
        fr = self._frame_only(store, j, fr_rng, train)
        out = {"events": ev["events"], "window": ev["window"], "index": int(index), "frame": fr["frame"],
               "frame_index": int(j), "frame_label": fr["label"], "paired": False}  # fmt: skip
        if "semantic" in fr:
            out["frame_semantic"] = fr["semantic"]
        if self.use_event_labels:
            out["label"] = ev["label"]
            if "semantic" in ev:
                out["semantic"] = ev["semantic"]
        return out
