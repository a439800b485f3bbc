"""KITTI odometry and TartanAir pose readers (fixtures + the real samples in shared/real-data)."""

from __future__ import annotations

import numpy as np
import pytest
from sets_fixtures import REAL_DATA

from evssl.data.sets._common import DatasetError
from evssl.data.sets.poses import NED_TO_CAMERA, quaternion_to_matrix, read_kitti_poses, read_tartanair_poses


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_kitti_poses_fixture(tmp_path):
    T = np.eye(4)[None].repeat(2, 0)
    T[1, :3, :3] = _rot_z(0.3)
    T[1, :3, 3] = [1.5, -2.0, 7.25]
    lines = [" ".join(f"{v:e}" for v in m[:3].ravel()) for m in T]  # row-major 3x4, %e as the devkit prints
    (tmp_path / "00.txt").write_text("\n".join(lines) + "\n")
    got = read_kitti_poses(tmp_path / "00.txt")
    assert got.shape == (2, 4, 4) and got.dtype == np.float64
    np.testing.assert_allclose(got, T, atol=1e-6)
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: expected 12 numbers"):
        read_kitti_poses(tmp_path / "bad.txt")


def test_tartanair_poses_fixture_scalar_last_ned(tmp_path):
    # 90 degrees about z (NED down axis): q = (qx, qy, qz, qw) = (0, 0, sin 45, cos 45), scalar LAST
    h = np.sqrt(0.5)
    (tmp_path / "pose_left.txt").write_text(f"1 2 3 0 0 0 1\n4 5 6 0 0 {h} {h}\n")
    got = read_tartanair_poses(tmp_path / "pose_left.txt")
    np.testing.assert_allclose(got[0], [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
    np.testing.assert_allclose(got[1, :3, :3], _rot_z(np.pi / 2), atol=1e-12)
    np.testing.assert_allclose(got[1, :3, 3], [4, 5, 6])
    # a scalar-first reading would be a different rotation
    assert not np.allclose(quaternion_to_matrix(np.array([[0, 0, h, h]]), scalar_last=False)[0], _rot_z(np.pi / 2))
    # camera frame: NED x forward -> camera z, NED y right -> camera x, NED z down -> camera y
    cam = read_tartanair_poses(tmp_path / "pose_left.txt", frame="camera")
    np.testing.assert_allclose(cam[0, :3, 3], [2, 3, 1])
    np.testing.assert_allclose(cam, NED_TO_CAMERA @ got @ NED_TO_CAMERA.T, atol=1e-12)
    (tmp_path / "bad.txt").write_text("1 2 3 0 0 0 2\n")
    with pytest.raises(DatasetError, match="quaternion of norm 2"):
        read_tartanair_poses(tmp_path / "bad.txt")


def _real(rel: str):
    p = REAL_DATA / rel
    if not p.is_file():
        pytest.skip(f"real sample {p} not found (set EVSSL_REAL_DATA to shared/real-data)")
    return p


def test_real_kitti_poses():
    p09, p10 = (
        read_kitti_poses(_real("kitti-odometry-sample/09.txt")),
        read_kitti_poses(_real("kitti-odometry-sample/10.txt")),
    )
    assert p09.shape == (1591, 4, 4) and p10.shape == (1201, 4, 4)
    for T in (p09, p10):
        np.testing.assert_allclose(T[0], np.eye(4), atol=1e-5)  # frame 0 is the world frame
        R = T[:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-4)
    assert p10[-1, 0, 3] == pytest.approx(545.24, abs=0.01)


def test_real_tartanair_poses():
    T = read_tartanair_poses(_real("tartanair-sample/pose_gt.txt"))
    assert T.shape == (734, 4, 4)
    R = T[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    raw = np.loadtxt(_real("tartanair-sample/pose_gt.txt"))
    np.testing.assert_allclose(T[:, :3, 3], raw[:, :3])
