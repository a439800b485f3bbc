"""Pictures of online visual odometry for a person to look at: top-view trajectories and depth maps.

:func:`trajectory_top_view` draws the ground-truth (white) and the predicted (orange, Sim(3)-aligned to the ground
truth with Umeyama) camera centres projected onto the ground plane (x, z of the camera frame of the first pose:
x right, z forward) into an ``(H, W, 3)`` uint8 image, start points marked. :class:`VOMedia` logs, after an online
test epoch of :class:`~evssl.methods.meta_vo.MetaVO`, one trajectory picture per sequence (``test/trajectory``) and
``predicted | ground-truth`` depth pictures of the first and last window of each sequence (``test/depth``), plus a
W&B table-free line of per-window abs-rel (``test/window_abs_rel`` as an image of the curve).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer

from evssl.callbacks.dense_media import depth_to_rgb, side_by_side
from evssl.callbacks.media import log_images
from evssl.metrics.odometry import umeyama

__all__ = ["VOMedia", "curve_image", "trajectory_top_view"]

_GT = np.array([235, 235, 235], np.uint8)
_PRED = np.array([255, 140, 0], np.uint8)


def _line(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, color: np.ndarray) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]), 1)) + 1
    xs = np.rint(np.linspace(p0[0], p1[0], n)).astype(int)
    ys = np.rint(np.linspace(p0[1], p1[1], n)).astype(int)
    ok = (xs >= 0) & (xs < img.shape[1]) & (ys >= 0) & (ys < img.shape[0])
    img[ys[ok], xs[ok]] = color


def _polyline(img: np.ndarray, pts: np.ndarray, color: np.ndarray) -> None:
    for a, b in itertools.pairwise(pts):
        _line(img, a, b, color)
    if len(pts):
        x, y = np.rint(pts[0]).astype(int)
        img[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = color


def trajectory_top_view(gt: np.ndarray, pred: np.ndarray, size: int = 256, align: bool = True) -> np.ndarray:
    """Top view (x right, z up in the picture) of camera-to-world poses ``gt``, ``pred`` ``(N, 4, 4)``."""
    g = np.asarray(gt, np.float64)[:, :3, 3]
    p = np.asarray(pred, np.float64)[:, :3, 3]
    if align and len(p) >= 3:
        s, r, t = umeyama(p, g)
        p = s * p @ r.T + t
    both = np.concatenate([g, p])[:, [0, 2]]
    lo, hi = both.min(0), both.max(0)
    span = float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-9))
    margin = 12

    def to_px(q: np.ndarray) -> np.ndarray:
        xy = (q[:, [0, 2]] - lo) / span * (size - 2 * margin) + margin
        return np.stack([xy[:, 0], size - 1 - xy[:, 1]], 1)

    img = np.full((size, size, 3), 24, np.uint8)
    _polyline(img, to_px(g), _GT)
    _polyline(img, to_px(p), _PRED)
    return img


def curve_image(values: list[float], height: int = 96, width: int = 256) -> np.ndarray:
    """A line plot (no axes) of ``values`` scaled to their finite range: per-window error over frame index."""
    v = np.asarray(values, np.float64)
    img = np.full((height, width, 3), 24, np.uint8)
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return img
    lo, hi = float(v[ok].min()), float(v[ok].max())
    x = np.linspace(4, width - 5, len(v))
    y = height - 5 - (np.where(ok, v, lo) - lo) / max(hi - lo, 1e-12) * (height - 10)
    _polyline(img, np.stack([x, y], 1)[ok], _PRED)
    return img


class VOMedia(Callback):
    """Log trajectories, depth maps and error curves after an online test epoch of ``MetaVO`` (any logger that
    takes images; W&B offline by default). ``max_sequences`` caps the pictures per epoch."""

    def __init__(self, max_sequences: int = 4) -> None:
        self.max_sequences = int(max_sequences)

    def render(self, pl_module: Any) -> dict[str, tuple[list[np.ndarray], list[str]]]:
        """``{key: (images, captions)}`` from the module's ``online_media`` / ``online_curves``."""
        media = list(getattr(pl_module, "online_media", []))[: self.max_sequences]
        curves = list(getattr(pl_module, "online_curves", []))[: self.max_sequences]
        out: dict[str, tuple[list[np.ndarray], list[str]]] = {
            "trajectory": ([], []),
            "depth": ([], []),
            "curve": ([], []),
        }
        for m in media:
            out["trajectory"][0].append(trajectory_top_view(m["gt"], m["pred"]))
            out["trajectory"][1].append(f"sequence {m['seq_id']}: ground truth (white) vs prediction (orange, Sim(3))")
            for d in m["depth"]:
                valid = d["gt"] > 0
                pic = side_by_side([depth_to_rgb(d["pred"]), depth_to_rgb(d["gt"], valid)])
                out["depth"][0].append(pic)
                out["depth"][1].append(f"sequence {m['seq_id']} frame {d['frame']}: prediction | ground truth")
        for c in curves:
            out["curve"][0].append(curve_image(c["abs_rel"]))
            out["curve"][1].append(f"sequence {c['seq_id']}: depth abs-rel per window (frame {c['frame'][0]}..)")
        return out

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        flush = getattr(pl_module, "flush_online", None)
        if callable(flush):  # callbacks run before the module's own epoch-end hook
            flush()
        for key, (images, captions) in self.render(pl_module).items():
            if images:
                log_images(trainer, f"test/{key}", images, captions=captions)
