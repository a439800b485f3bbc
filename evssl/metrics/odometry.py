"""Visual-odometry and depth metrics: KITTI odometry t_rel / r_rel, ATE (Sim(3)/SE(3) Umeyama), RPE, depth errors.

numpy, float64, poses are camera-to-world ``(N, 4, 4)`` (KITTI ``poses/XX.txt`` rows reshaped to 3x4 plus
``[0, 0, 0, 1]``).

* **KITTI odometry** (Geiger et al. 2012, devkit ``evaluate_odometry.cpp``, restated): ``dist[i]`` is the path length
  up to frame ``i``; for every first frame ``f`` in steps of ``step`` (10) frames and every segment length ``L`` in
  ``lengths`` (100, 200, ..., 800 m) the last frame ``l`` is the first with ``dist[l] > dist[f] + L``; the error is
  ``E = (P_f^{-1} P_l)^{-1} (G_f^{-1} G_l)`` (P prediction, G ground truth), ``t_err = |t(E)| / L`` and
  ``r_err = angle(R(E)) / L`` with ``angle = arccos(clip((tr R - 1) / 2, -1, 1))``. ``t_rel`` is the mean ``t_err``
  in percent, ``r_rel`` the mean ``r_err`` in degrees per 100 m (mean over all segments of all lengths, as the devkit's
  sequence average). Monocular predictions are first scale-aligned (``align="scale"``: the least-squares scale
  ``s = <G, P> / <P, P>`` of the positions, a common choice for monocular VO, e.g. Zhan et al. 2018), or aligned
  with Sim(3) (``align="sim3"``), or not (``"none"``).
* **ATE**: RMSE of position differences after aligning the predicted positions to the ground truth with Umeyama
  (1991): ``min_{s,R,t} sum |g_i - (s R p_i + t)|^2`` (``with_scale=False``: SE(3)).
* **RPE** at frame offset ``delta``: ``E_i = (G_i^{-1} G_{i+delta})^{-1} (P_i^{-1} P_{i+delta})``; RMSE of
  ``|t(E_i)|`` and mean rotation angle of ``R(E_i)`` in degrees (Sturm et al., TUM RGB-D benchmark, 2012).
* **Depth** (Eigen et al. 2014): abs-rel ``mean |d - g| / g``, sq-rel ``mean (d - g)^2 / g``, RMSE, RMSE(log),
  ``delta_k`` = fraction with ``max(d/g, g/d) < 1.25^k``; over valid ground truth (``min_depth < g < max_depth``),
  predictions clipped to the same range; ``median_scaling`` multiplies the prediction by ``median(g) / median(d)``
  (monocular, Zhou et al. 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "absolute_trajectory_error",
    "depth_errors",
    "kitti_odometry_errors",
    "path_lengths",
    "relative_pose_error",
    "rotation_angle",
    "scale_align",
    "umeyama",
]

KITTI_LENGTHS = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)


def _poses(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 3 and p.shape[1:] == (3, 4):
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (p.shape[0], 1, 4))
        p = np.concatenate([p, bottom], axis=1)
    if p.ndim != 3 or p.shape[1:] != (4, 4):
        raise ValueError(f"{name}: poses must be (N, 4, 4) or (N, 3, 4), got shape {p.shape}")
    return p


def rotation_angle(r: np.ndarray) -> np.ndarray:
    """Angle (radians) of rotation matrices ``(..., 3, 3)``: ``arccos(clip((tr R - 1) / 2, -1, 1))``."""
    tr = np.trace(r, axis1=-2, axis2=-1)
    return np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))


def path_lengths(poses: np.ndarray) -> np.ndarray:
    """Cumulative distance travelled (N,): ``dist[0] = 0``, ``dist[i] = dist[i-1] + |c_i - c_{i-1}|``."""
    c = _poses(poses, "poses")[:, :3, 3]
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))])


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``(s, R, t)`` with ``dst ~ s R src + t`` for point sets ``(N, 3)`` (Umeyama 1991, Eqs. 40-42)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama needs two (N, 3) point sets, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / n
    u, d, vt = np.linalg.svd(cov)
    sgn = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[2, 2] = -1.0
    r = u @ sgn @ vt
    var_s = (xs**2).sum() / n
    s = float(np.trace(np.diag(d) @ sgn) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * r @ mu_s
    return s, r, t


def scale_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Predicted poses with positions multiplied by ``s = <G, P> / <P, P>`` (positions relative to the first)."""
    pred, gt = _poses(pred, "pred").copy(), _poses(gt, "gt")
    p = pred[:, :3, 3] - pred[:1, :3, 3]
    g = gt[:, :3, 3] - gt[:1, :3, 3]
    den = float((p * p).sum())
    s = float((g * p).sum()) / den if den > 0 else 1.0
    pred[:, :3, 3] = pred[:1, :3, 3] + s * p
    return pred


def _sim3_apply(pred: np.ndarray, s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = pred.copy()
    out[:, :3, :3] = r @ pred[:, :3, :3]
    out[:, :3, 3] = s * pred[:, :3, 3] @ r.T + t
    return out


def _align(pred: np.ndarray, gt: np.ndarray, align: str) -> np.ndarray:
    if align == "none":
        return pred
    if align == "scale":
        return scale_align(pred, gt)
    if align in ("sim3", "se3"):
        s, r, t = umeyama(pred[:, :3, 3], gt[:, :3, 3], with_scale=align == "sim3")
        return _sim3_apply(pred, s, r, t)
    raise ValueError(f"align must be 'none', 'scale', 'se3' or 'sim3', got {align!r}")


def kitti_odometry_errors(
    gt: np.ndarray,
    pred: np.ndarray,
    lengths: Sequence[float] = KITTI_LENGTHS,
    step: int = 10,
    align: str = "scale",
) -> dict[str, float]:
    """KITTI odometry errors (see module docstring): ``{"t_rel" (%), "r_rel" (deg/100 m), "num_segments"}``.

    ``nan`` when the trajectory is shorter than every segment length.
    """
    gt, pred = _poses(gt, "gt"), _poses(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of poses, got {gt.shape[0]} and {pred.shape[0]}")
    pred = _align(pred, gt, align)
    dist = path_lengths(gt)
    t_errs, r_errs = [], []
    for f in range(0, len(gt), max(1, int(step))):
        for length in lengths:
            after = np.flatnonzero(dist > dist[f] + length)
            if len(after) == 0:
                continue
            last = int(after[0])
            dg = np.linalg.inv(gt[f]) @ gt[last]
            dp = np.linalg.inv(pred[f]) @ pred[last]
            e = np.linalg.inv(dp) @ dg
            t_errs.append(np.linalg.norm(e[:3, 3]) / length)
            r_errs.append(rotation_angle(e[:3, :3]) / length)
    if not t_errs:
        return {"t_rel": float("nan"), "r_rel": float("nan"), "num_segments": 0}
    return {
        "t_rel": float(np.mean(t_errs) * 100.0),
        "r_rel": float(np.degrees(np.mean(r_errs)) * 100.0),
        "num_segments": len(t_errs),
    }


def absolute_trajectory_error(gt: np.ndarray, pred: np.ndarray, align: str = "sim3") -> float:
    """ATE: RMSE of positions after ``align`` (``"sim3"`` Umeyama with scale, ``"se3"``, ``"scale"``, ``"none"``)."""
    gt, pred = _poses(gt, "gt"), _poses(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of poses, got {gt.shape[0]} and {pred.shape[0]}")
    p = _align(pred, gt, align)
    return float(np.sqrt(np.mean(np.sum((p[:, :3, 3] - gt[:, :3, 3]) ** 2, axis=1))))


def relative_pose_error(gt: np.ndarray, pred: np.ndarray, delta: int = 1, align: str = "none") -> dict[str, float]:
    """RPE at frame offset ``delta``: ``{"rpe_trans" (RMSE, units of gt), "rpe_rot" (mean, degrees)}``."""
    gt, pred = _poses(gt, "gt"), _poses(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of poses, got {gt.shape[0]} and {pred.shape[0]}")
    if len(gt) <= delta:
        return {"rpe_trans": float("nan"), "rpe_rot": float("nan")}
    pred = _align(pred, gt, align)
    dg = np.linalg.inv(gt[:-delta]) @ gt[delta:]
    dp = np.linalg.inv(pred[:-delta]) @ pred[delta:]
    e = np.linalg.inv(dg) @ dp
    return {
        "rpe_trans": float(np.sqrt(np.mean(np.sum(e[:, :3, 3] ** 2, axis=1)))),
        "rpe_rot": float(np.degrees(np.mean(rotation_angle(e[:, :3, :3])))),
    }


def depth_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    median_scaling: bool = True,
) -> dict[str, float]:
    """Eigen et al. depth errors over valid ground truth (see module docstring)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"depth prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    ok = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if not ok.any():
        nan = float("nan")
        return dict.fromkeys(("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"), nan)
    d, g = pred[ok], gt[ok]
    if median_scaling:
        d = d * (np.median(g) / max(np.median(d), 1e-12))
    d = np.clip(d, min_depth, max_depth)
    ratio = np.maximum(d / g, g / d)
    return {
        "abs_rel": float(np.mean(np.abs(d - g) / g)),
        "sq_rel": float(np.mean((d - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((d - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(d) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }
