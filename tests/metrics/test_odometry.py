"""Odometry and depth metrics against hand-computed values on toy trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evssl.metrics.odometry import (
    absolute_trajectory_error,
    depth_errors,
    kitti_odometry_errors,
    path_lengths,
    relative_pose_error,
    umeyama,
)


def _straight(n, step, yaw_per_frame=0.0):
    poses = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        a = yaw_per_frame * i
        poses[i, :3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        poses[i, 2, 3] = step * i
    return poses


def test_kitti_errors_hand_computed():
    """GT drives 10 m per frame along z for 100 frames. The prediction is 2 % too long per frame (scale error)
    and the camera yaw drifts by 0.01 rad per frame with the same positions."""
    gt = _straight(101, 10.0)
    pred = _straight(101, 10.2)
    # no alignment: every segment of length L (L/10 + 1 frames... first frame with dist > L is L/10 + 1 frames on)
    # spans k = L/10 + 1 frames: gt moves 10 k, pred 10.2 k, t_err = 0.2 k / L
    res = kitti_odometry_errors(gt, pred, align="none")
    errs = []
    for f in range(0, 101, 10):
        for length in range(100, 900, 100):
            k = length // 10 + 1
            if f + k <= 100:
                errs.append(0.2 * k / length)
    assert res["num_segments"] == len(errs)
    assert res["t_rel"] == pytest.approx(100 * np.mean(errs), rel=1e-9)
    assert res["r_rel"] == pytest.approx(0.0, abs=1e-9)
    # monocular scale alignment removes a pure scale error
    assert kitti_odometry_errors(gt, pred, align="scale")["t_rel"] == pytest.approx(0.0, abs=1e-9)
    # rotation drift: relative rotation of a k-frame segment is 0.01 k rad
    yaw = _straight(101, 10.0, yaw_per_frame=0.01)
    yaw[:, :3, 3] = gt[:, :3, 3]
    r = kitti_odometry_errors(gt, yaw, align="none")
    rr = [
        0.01 * (length // 10 + 1) / length
        for f in range(0, 101, 10)
        for length in range(100, 900, 100)
        if f + length // 10 + 1 <= 100
    ]
    assert r["r_rel"] == pytest.approx(np.degrees(np.mean(rr)) * 100, rel=1e-9)
    assert math.isnan(kitti_odometry_errors(gt[:5], pred[:5])["t_rel"])


def test_ate_with_sim3_alignment():
    rng = np.random.default_rng(0)
    gt = np.tile(np.eye(4), (20, 1, 1))
    gt[:, :3, 3] = np.cumsum(rng.normal(size=(20, 3)), axis=0)
    # prediction = a similarity transform of the ground truth: ATE 0 after Sim(3), not after SE(3)
    a = 0.4
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    pred = gt.copy()
    pred[:, :3, 3] = 0.5 * gt[:, :3, 3] @ r.T + np.array([1.0, -2.0, 3.0])
    pred[:, :3, :3] = r @ gt[:, :3, :3]
    assert absolute_trajectory_error(gt, pred, "sim3") == pytest.approx(0.0, abs=1e-9)
    assert absolute_trajectory_error(gt, pred, "se3") > 0.1
    s, rot, _t = umeyama(pred[:, :3, 3], gt[:, :3, 3])
    assert s == pytest.approx(2.0) and np.allclose(rot, r.T)
    # a hand-computed case: two points, prediction offset by a constant: SE(3)/Sim(3) ATE 0, none = |offset|
    g2 = np.tile(np.eye(4), (3, 1, 1))
    g2[:, 0, 3] = [0.0, 1.0, 2.0]
    p2 = g2.copy()
    p2[:, 1, 3] += 0.3
    assert absolute_trajectory_error(g2, p2, "none") == pytest.approx(0.3)
    assert absolute_trajectory_error(g2, p2, "sim3") == pytest.approx(0.0, abs=1e-9)
    # noise on one point: ATE (no alignment) = sqrt(0.2^2 / 3)
    p3 = g2.copy()
    p3[1, 2, 3] += 0.2
    assert absolute_trajectory_error(g2, p3, "none") == pytest.approx(math.sqrt(0.04 / 3))


def test_rpe_and_path_length():
    gt = _straight(5, 1.0)
    pred = _straight(5, 1.5)
    rpe = relative_pose_error(gt, pred)
    assert rpe["rpe_trans"] == pytest.approx(0.5) and rpe["rpe_rot"] == pytest.approx(0.0, abs=1e-9)
    assert path_lengths(gt)[-1] == pytest.approx(4.0)


def test_depth_errors_hand_computed():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # 0 = invalid
    pred = np.array([[1.0, 2.5], [3.0, 9.0]])
    e = depth_errors(pred, gt, median_scaling=False)
    assert e["abs_rel"] == pytest.approx((0 + 0.25 + 0.25) / 3)
    assert e["rmse"] == pytest.approx(math.sqrt((0 + 0.25 + 1.0) / 3))
    assert e["delta1"] == pytest.approx(1 / 3)  # ratios 1, 1.25 (not < 1.25), 1.333
    assert e["delta2"] == pytest.approx(1.0)
    # median scaling: medians 2.5 (pred) vs 2 (gt) -> pred * 0.8 = [0.8, 2, 2.4]
    e2 = depth_errors(pred * 7.0, gt, median_scaling=True)
    assert e2["abs_rel"] == pytest.approx((0.2 + 0 + 0.4) / 3)
    assert e2 == pytest.approx(depth_errors(pred, gt, median_scaling=True))
