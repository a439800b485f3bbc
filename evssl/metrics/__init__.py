"""evssl.metrics: evaluation metrics (odometry and depth as pure numpy functions; segmentation / recognition)."""

from evssl.metrics.odometry import (
    absolute_trajectory_error,
    depth_errors,
    kitti_odometry_errors,
    relative_pose_error,
    umeyama,
)
from evssl.metrics.segmentation import (
    ConfusionMatrixMetrics,
    EndTaskMetrics,
    class_accuracy_from_confusion,
    iou_from_confusion,
)

__all__ = [
    "ConfusionMatrixMetrics",
    "EndTaskMetrics",
    "absolute_trajectory_error",
    "class_accuracy_from_confusion",
    "depth_errors",
    "iou_from_confusion",
    "kitti_odometry_errors",
    "relative_pose_error",
    "umeyama",
]
