"""Ground-truth trajectory readers for the visual-odometry metrics: KITTI odometry and TartanAir pose files.

Both return camera-to-world (``T_w_c``) 4x4 float64 matrices, one per frame, so the VO metrics need no per-data-set
code:

* **KITTI odometry** ``poses/NN.txt`` (devkit ``readme.txt``, folder "poses"): one line per frame holding the 12
  numbers of the row-major 3x4 matrix ``[R | t]`` that maps points of the left rectified camera at frame ``i`` into
  frame 0 (so ``t`` is the camera position in metres; camera axes x right, y down, z forward). No timestamps (they
  are in ``sequences/NN/times.txt``).
* **TartanAir** ``pose_left.txt`` (``castacks/tartanair_tools`` ``data_type.md``): one ``tx ty tz qx qy qz qw`` line
  per frame: the camera position and a unit quaternion, **scalar last**, in the NED world frame (x forward, y right,
  z down). ``frame="ned"`` returns the file's poses unchanged; ``frame="camera"`` re-expresses them in the camera
  convention x right, y down, z forward with ``T_cam = M T_ned M^-1`` and ``M`` the axis permutation of
  ``tartanair_tools/evaluation/trajectory_transform.py::ned2cam`` (rows ``[0,1,0], [0,0,1], [1,0,0]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evssl.data.sets._common import DatasetError, PathLike, need_file

__all__ = ["NED_TO_CAMERA", "quaternion_to_matrix", "read_kitti_poses", "read_tartanair_poses", "read_times"]

#: The permutation of ``ned2cam``: camera (x right, y down, z forward) coordinates of an NED (x fwd, y right, z down)
#: vector.
NED_TO_CAMERA = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _rows(path: Path, columns: int, what: str) -> np.ndarray:
    need_file(path, what)
    rows = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != columns:
            raise DatasetError(f"{path}:{lineno}: expected {columns} numbers per line ({what}), got {len(parts)}")
        try:
            rows.append([float(v) for v in parts])
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: not a number in {raw.strip()!r}") from e
    if not rows:
        raise DatasetError(f"{path}: no poses ({what})")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path}:{int(np.flatnonzero(~np.isfinite(arr).all(1))[0]) + 1}: non-finite value")
    return arr


def read_kitti_poses(path: PathLike) -> np.ndarray:
    """KITTI odometry poses (N lines of a row-major 3x4 ``[R|t]``) as (N, 4, 4) float64 ``T_w_c`` (w = frame 0)."""
    arr = _rows(Path(path), 12, "KITTI pose: 12 numbers of a row-major 3x4 [R|t]")
    out = np.zeros((len(arr), 4, 4), np.float64)
    out[:, :3, :] = arr.reshape(-1, 3, 4)
    out[:, 3, 3] = 1.0
    return out


def quaternion_to_matrix(q: np.ndarray, scalar_last: bool = True) -> np.ndarray:
    """(N, 4) quaternions (normalised here) to (N, 3, 3) rotation matrices (Hamilton convention)."""
    q = np.asarray(q, dtype=np.float64)
    x, y, z, w = (q[:, 0], q[:, 1], q[:, 2], q[:, 3]) if scalar_last else (q[:, 1], q[:, 2], q[:, 3], q[:, 0])
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def read_tartanair_poses(path: PathLike, frame: str = "ned") -> np.ndarray:
    """TartanAir ``pose_left.txt`` (``tx ty tz qx qy qz qw`` per line, NED) as (N, 4, 4) float64 ``T_w_c``.

    Args:
        frame: ``"ned"`` (the file's frame) or ``"camera"`` (x right, y down, z forward; ``ned2cam``).
    """
    if frame not in ("ned", "camera"):
        raise ValueError(f"frame must be 'ned' or 'camera', got {frame!r}")
    path = Path(path)
    arr = _rows(path, 7, "TartanAir pose: tx ty tz qx qy qz qw")
    norm = np.linalg.norm(arr[:, 3:], axis=1)
    bad = np.flatnonzero(np.abs(norm - 1) > 1e-3)
    if len(bad):
        raise DatasetError(f"{path}: pose {int(bad[0])} has a quaternion of norm {norm[bad[0]]:.4f}, not 1")
    out = np.zeros((len(arr), 4, 4), np.float64)
    out[:, :3, :3] = quaternion_to_matrix(arr[:, 3:], scalar_last=True)
    out[:, :3, 3] = arr[:, :3]
    out[:, 3, 3] = 1.0
    if frame == "camera":
        out = NED_TO_CAMERA @ out @ np.linalg.inv(NED_TO_CAMERA)
    return out


def read_times(path: PathLike) -> np.ndarray:
    """KITTI ``times.txt`` (seconds, one per line) as (N,) int64 µs."""
    arr = _rows(Path(path), 1, "timestamp in seconds")[:, 0]
    return np.rint(arr * 1e6).astype(np.int64)
