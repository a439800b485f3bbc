"""evssl.metrics: evaluation metrics as pure numpy functions (odometry, depth)."""

from evssl.metrics.odometry import (
    absolute_trajectory_error,
    depth_errors,
    kitti_odometry_errors,
    relative_pose_error,
    umeyama,
)

__all__ = [
    "absolute_trajectory_error",
    "depth_errors",
    "kitti_odometry_errors",
    "relative_pose_error",
    "umeyama",
]
