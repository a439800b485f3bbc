"""Per-sequence bookkeeping of an online visual-odometry evaluation (the online loop of :mod:`evssl.methods.meta_vo`).

An :class:`OnlineVORecorder` takes one window of ``n`` consecutive frames ``start .. start + n - 1`` at a time (frame
step 1), centre ``c = n // 2`` the target, and chains the predicted camera-to-world trajectory from the predicted
target-to-source transforms: the first target is the identity, and a source frame not seen yet gets
``c2w_s = c2w_t T_t2s^{-1}`` from a target already placed (with windows sliding by one frame, window ``i`` places frame
``start + n - 1`` from its target). Ground-truth poses are kept per frame (first window wins). At the end of the
sequence, both trajectories are expressed relative to their first pose and scored with :mod:`evssl.metrics.odometry`:
KITTI ``t_rel`` / ``r_rel`` (scale-aligned), ATE (Sim(3) Umeyama), RPE at offset 1 (scale-aligned), and the mean
depth errors (median scaling) of the windows with ground-truth depth. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evssl.metrics.odometry import (
    KITTI_LENGTHS,
    absolute_trajectory_error,
    depth_errors,
    kitti_odometry_errors,
    relative_pose_error,
)

__all__ = ["ONLINE_VO_METRICS", "OnlineVORecorder", "SequenceReport", "mean_over_sequences"]

#: The sequence metrics averaged by :func:`mean_over_sequences`.
ONLINE_VO_METRICS = ("t_rel", "r_rel", "ate", "rpe_trans", "rpe_rot", "abs_rel", "rmse", "delta1", "photometric")


@dataclass
class SequenceReport:
    """One finished sequence: ``metrics`` (``seq_id``, odometry, photometric and, with ground-truth depth, depth
    errors), ``curve`` (per-window ``frame``, ``abs_rel``, ``photometric``) and ``media`` (``gt`` / ``pred``
    trajectories relative to their first pose, ``depth``: first and last window's ``{"frame", "pred", "gt"}``)."""

    metrics: dict[str, Any]
    curve: dict[str, Any]
    media: dict[str, Any]


class OnlineVORecorder:
    """Predictions of one sequence, window by window (:meth:`add`), and its metrics (:meth:`finish`).

    Args:
        seq_id: the sequence's id (copied into every report).
        kitti_lengths, kitti_step: segment lengths and first-frame step of the KITTI errors.
        max_depth: upper bound of valid ground-truth depth (the depth network's ``max_depth``).
    """

    def __init__(
        self, seq_id: int, kitti_lengths: Sequence[float] = KITTI_LENGTHS, kitti_step: int = 10, max_depth: float = 80.0
    ) -> None:
        self.seq_id = seq_id
        self.kitti_lengths, self.kitti_step, self.max_depth = tuple(kitti_lengths), int(kitti_step), float(max_depth)
        self.pred: dict[int, np.ndarray] = {}  # frame index -> predicted camera-to-world
        self.gt: dict[int, np.ndarray] = {}
        self.window_frame: list[int] = []
        self.window_abs_rel: list[float] = []
        self.window_photometric: list[float] = []
        self.depth_err: list[dict[str, float]] = []
        self.media: list[dict[str, Any]] = []

    def add(
        self,
        start_frame: int,
        gt_poses: np.ndarray,
        t2s: Sequence[np.ndarray],
        depth: np.ndarray,
        gt_depth: np.ndarray,
        photometric: float,
        last: bool = False,
    ) -> None:
        """Record one window: ``gt_poses`` ``(n, 4, 4)`` camera-to-world of its frames, ``t2s`` the ``n - 1``
        predicted target-to-source transforms (sources in frame order), ``depth`` / ``gt_depth`` ``(H, W)`` of the
        target (ground truth <= 0 = none), the window's photometric loss; ``last``: the sequence's last window."""
        n = len(gt_poses)
        if len(t2s) != n - 1:
            raise ValueError(
                f"OnlineVORecorder.add: {n} ground-truth poses need {n - 1} t2s transforms, got {len(t2s)}"
            )
        c = n // 2
        frames_idx = [int(start_frame) + j for j in range(n)]
        for j, f in enumerate(frames_idx):
            self.gt.setdefault(f, gt_poses[j])
        tgt = frames_idx[c]
        src = [f for j, f in enumerate(frames_idx) if j != c]
        if not self.pred:
            self.pred[tgt] = np.eye(4)
        if tgt in self.pred:
            for f, t in zip(src, t2s):
                if f not in self.pred:
                    self.pred[f] = self.pred[tgt] @ np.linalg.inv(t)  # c2w_s = c2w_t T_t2s^-1
        if (gt_depth > 0).any():
            e = depth_errors(depth, gt_depth, max_depth=self.max_depth)
            self.depth_err.append(e)
            self.window_abs_rel.append(e["abs_rel"])
        else:
            self.window_abs_rel.append(float("nan"))
        self.window_photometric.append(photometric)
        self.window_frame.append(tgt)
        if len(self.media) < 1 or last:
            self.media.append({"frame": tgt, "pred": depth, "gt": gt_depth})

    def finish(self) -> SequenceReport | None:
        """The sequence's report (see :class:`SequenceReport`); ``None`` when fewer than two poses were chained."""
        if len(self.pred) < 2:
            return None
        frames = sorted(f for f in self.pred if f in self.gt)
        pred = np.stack([self.pred[f] for f in frames])
        gt = np.stack([self.gt[f] for f in frames])
        gt = np.linalg.inv(gt[0]) @ gt  # both start at the identity frame of the first pose
        pred = np.linalg.inv(pred[0]) @ pred
        kitti = kitti_odometry_errors(gt, pred, self.kitti_lengths, self.kitti_step, align="scale")
        metrics: dict[str, Any] = {
            "seq_id": self.seq_id,
            "t_rel": kitti["t_rel"],
            "r_rel": kitti["r_rel"],
            "ate": absolute_trajectory_error(gt, pred, "sim3"),
            **relative_pose_error(gt, pred, 1, align="scale"),
            "photometric": float(np.mean(self.window_photometric)),
        }
        if self.depth_err:
            for key in ("abs_rel", "rmse", "delta1"):
                metrics[key] = float(np.mean([e[key] for e in self.depth_err]))
        curve = {
            "seq_id": self.seq_id,
            "frame": list(self.window_frame),
            "abs_rel": list(self.window_abs_rel),
            "photometric": list(self.window_photometric),
        }
        return SequenceReport(metrics, curve, {"seq_id": self.seq_id, "gt": gt, "pred": pred, "depth": self.media})


def mean_over_sequences(results: Sequence[dict[str, Any]], keys: Sequence[str] = ONLINE_VO_METRICS) -> dict[str, float]:
    """Mean of each of ``keys`` over the sequences where it is present and finite (``nan`` where it is nowhere)."""
    out: dict[str, float] = {}
    for key in keys:
        vals = [r[key] for r in results if np.isfinite(r.get(key, np.nan))]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    return out
