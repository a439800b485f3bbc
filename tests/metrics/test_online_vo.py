"""OnlineVORecorder: chaining of predicted relative poses, alignment, per-window curves and sequence means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evssl.metrics.odometry import absolute_trajectory_error, depth_errors
from evssl.metrics.online_vo import OnlineVORecorder, mean_over_sequences

N = 20  # frames 0 .. N - 1; windows of 3 frames start at 1 (as the VO data module's), frames 1 .. N - 1 are covered


def _trajectory() -> np.ndarray:
    """Camera-to-world poses on a curve: yaw and pitch change every frame, the camera moves forward in its own
    frame, and the first pose is far from the identity (so neither a missing normalisation nor a wrong composition
    order can go unnoticed)."""
    poses = np.tile(np.eye(4), (N, 1, 1))
    pos = np.array([5.0, -2.0, 3.0])
    for i in range(N):
        yaw, pitch = 0.3 + 0.08 * i, 0.05 * math.sin(i)
        ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
        poses[i, :3, :3] = ry @ rx
        poses[i, :3, 3] = pos
        pos = pos + poses[i, :3, :3] @ np.array([0.05, 0.0, 0.2])
    return poses


def _t2s(gt: np.ndarray, t: int, s: int, scale: float) -> np.ndarray:
    """Target-to-source transform ``P_s^{-1} P_t`` with its translation multiplied by ``scale`` (monocular)."""
    rel = np.linalg.inv(gt[s]) @ gt[t]
    rel[:3, 3] *= scale
    return rel


def _record(scale: float = 0.5, depth_every: int | None = 2) -> tuple[OnlineVORecorder, list[float], list[float]]:
    """Windows of :func:`_trajectory` with exact relative poses up to ``scale``; ground-truth depth on every
    ``depth_every``-th window (None: never)."""
    gt = _trajectory()
    rng = np.random.default_rng(0)
    rec = OnlineVORecorder(7, kitti_lengths=(0.5, 1.0), kitti_step=2, max_depth=50.0)
    photos, abs_rels = [], []
    starts = list(range(1, N - 2))
    for w, start in enumerate(starts):
        t = start + 1
        has_depth = depth_every is not None and w % depth_every == 0
        gt_depth = rng.uniform(1.0, 10.0, (4, 6)) if has_depth else np.zeros((4, 6))
        depth = 3.0 * gt_depth * rng.uniform(0.8, 1.2, gt_depth.shape) + 0.1  # scale-free errors
        photo = 0.1 + 0.01 * w
        rec.add(
            start,
            gt[start : start + 3],
            [_t2s(gt, t, start, scale), _t2s(gt, t, start + 2, scale)],
            depth,
            gt_depth,
            photo,
            last=w == len(starts) - 1,
        )
        photos.append(photo)
        abs_rels.append(depth_errors(depth, gt_depth, max_depth=50.0)["abs_rel"] if has_depth else math.nan)
    return rec, photos, abs_rels


def test_chained_trajectory_is_the_ground_truth_up_to_scale() -> None:
    rec, _, _ = _record(scale=0.5)
    report = rec.finish()
    assert report is not None
    gt, pred = report.media["gt"], report.media["pred"]
    assert len(gt) == len(pred) == N - 1  # frames 1 .. N - 1, each once
    np.testing.assert_allclose(gt[0], np.eye(4), atol=1e-12)  # both relative to their first pose
    np.testing.assert_allclose(pred[0], np.eye(4), atol=1e-12)
    # c2w_s = c2w_t T_t2s^-1 reproduces every rotation and the positions times the monocular scale
    np.testing.assert_allclose(pred[:, :3, :3], gt[:, :3, :3], atol=1e-9)
    np.testing.assert_allclose(pred[:, :3, 3], 0.5 * gt[:, :3, 3], atol=1e-9)
    m = report.metrics
    assert m["seq_id"] == 7
    # scale / Sim(3) alignment removes the scale: every trajectory error is ~0 ...
    for key in ("ate", "t_rel", "rpe_trans"):
        assert m[key] == pytest.approx(0.0, abs=1e-6), key
    for key in ("r_rel", "rpe_rot"):  # degrees through arccos near 1: ~1e-4 of rounding noise
        assert m[key] == pytest.approx(0.0, abs=1e-3), key
    # ... which it would not be without the Sim(3) alignment of the ATE
    assert absolute_trajectory_error(gt, pred, "none") > 0.3


def test_wrong_relative_poses_show_up_in_every_trajectory_error() -> None:
    """Control for the test above: inverted transforms (source-to-target) give large errors."""
    gt = _trajectory()
    rec = OnlineVORecorder(0, kitti_lengths=(0.5, 1.0), kitti_step=2)
    for start in range(1, N - 2):
        t = start + 1
        inv = [np.linalg.inv(_t2s(gt, t, s, 1.0)) for s in (start, start + 2)]
        rec.add(start, gt[start : start + 3], inv, np.ones((2, 2)), np.zeros((2, 2)), 0.0)
    m = rec.finish().metrics
    assert m["ate"] > 1e-3 and m["t_rel"] > 10.0 and m["r_rel"] > 100.0 and m["rpe_rot"] > 1.0


def test_per_window_curves_depth_means_and_media() -> None:
    rec, photos, abs_rels = _record(depth_every=3)
    report = rec.finish()
    assert report.curve["frame"] == list(range(2, N - 1))  # window targets, in order
    assert report.curve["photometric"] == photos
    np.testing.assert_allclose(report.curve["abs_rel"], abs_rels)  # nan where the window has no depth
    assert np.isnan(report.curve["abs_rel"][1]) and not np.isnan(report.curve["abs_rel"][0])
    assert report.metrics["photometric"] == pytest.approx(np.mean(photos))
    assert report.metrics["abs_rel"] == pytest.approx(np.nanmean(abs_rels))  # windows without depth are left out
    assert 0.0 < report.metrics["abs_rel"] < 0.2 and 0.0 < report.metrics["delta1"] <= 1.0
    assert [d["frame"] for d in report.media["depth"]] == [2, N - 2]  # first and last window


def test_no_depth_no_depth_metrics_and_short_sequences() -> None:
    rec, _, _ = _record(depth_every=None)
    report = rec.finish()
    assert "abs_rel" not in report.metrics and "rmse" not in report.metrics
    assert np.isnan(report.curve["abs_rel"]).all()
    assert OnlineVORecorder(0).finish() is None  # nothing chained
    with pytest.raises(ValueError, match="3 ground-truth poses need 2 t2s transforms, got 1"):
        OnlineVORecorder(0).add(1, np.tile(np.eye(4), (3, 1, 1)), [np.eye(4)], np.ones((2, 2)), np.ones((2, 2)), 0.0)


def test_mean_over_sequences_skips_missing_and_non_finite_values() -> None:
    res = [{"ate": 1.0, "abs_rel": float("nan")}, {"ate": 3.0}, {"ate": float("inf"), "abs_rel": 0.5}]
    out = mean_over_sequences(res)
    assert out["ate"] == 2.0 and out["abs_rel"] == 0.5 and math.isnan(out["t_rel"])
    assert set(out) == {"t_rel", "r_rel", "ate", "rpe_trans", "rpe_rot", "abs_rel", "rmse", "delta1", "photometric"}
