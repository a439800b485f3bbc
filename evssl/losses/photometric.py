"""Self-supervised view-synthesis losses for depth and ego-motion (SfMLearner / Monodepth2 family).

Pure functions on tensors (no modules, no Lightning). Conventions:

* Images ``(B, C, H, W)`` float; inverse depth ``disp`` / depth ``(B, 1, H, W)``; intrinsics ``K`` ``(B, 3, 3)`` (or
  ``(3, 3)``) in pixels of the image they come with, OpenCV pinhole (x right, y down, z forward, pixel centres at
  integer coordinates).
* ``T_t2s`` ``(B, 4, 4)`` maps a point from the *target* camera frame into the *source* camera frame
  (``X_s = R X_t + t``). With camera-to-world poses ``P_t``, ``P_s``: ``T_t2s = P_s^{-1} P_t``.

View synthesis (Zhou et al., "Unsupervised Learning of Depth and Ego-Motion from Video", CVPR 2017, Eq. 2):

    p_s ~ K T_t2s D_t(p_t) K^{-1} p_t,      Î_{s->t}(p_t) = I_s<p_s>      (bilinear sampling)

Photometric error (Godard et al., Monodepth, CVPR 2017, Eq. 4; Monodepth2, ICCV 2019, Eq. 1):

    pe(I_a, I_b) = alpha (1 - SSIM(I_a, I_b)) / 2 + (1 - alpha) |I_a - I_b|_1,      alpha = 0.85

with SSIM over 3x3 windows (average pooling, reflection padding, C1 = 0.01^2, C2 = 0.03^2) and the L1 term averaged
over channels. Edge-aware smoothness (Monodepth2, Eq. 3) on mean-normalised inverse depth ``d* = d / mean(d)``:

    L_s = mean |d_x d*| exp(-|d_x I|) + mean |d_y d*| exp(-|d_y I|)     (image gradients averaged over channels)

Per-pixel minimum reprojection and auto-masking (Monodepth2, Eq. 4 and Sec. 3.3): the loss at a pixel is the minimum
over sources of ``pe(I_t, Î_{s->t})``; a pixel is kept only where that minimum is smaller than the minimum over
sources of the *unwarped* error ``pe(I_t, I_s)`` (static camera, objects moving with the camera, texture-less areas).
Monodepth2 breaks ties with tiny random noise on the identity errors; here the identity errors get a fixed
``+1e-5`` (deterministic; a tie keeps the pixel masked out only when the warped error is larger).

Out-of-view masking (explicit choice, switchable): a synthesised pixel whose source point falls outside the source
image or behind the camera is *invalid*; with ``mask_out_of_view=True`` its warped error is replaced by ``+inf``
before the minimum (so another source wins), and pixels invalid in every source are dropped from the mean. Monodepth2
instead samples with border padding and keeps every pixel (``mask_out_of_view=False`` here, zeros padding).

Multi-scale (Monodepth2, Sec. 3.3 and Eq. 5): the inverse depth of every scale ``s`` is upsampled (bilinear) to the
target's resolution and the loss is ``(1/S) sum_s [L_p + lambda_s / 2^s L_s]`` (:func:`multiscale_view_synthesis_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "VOLossConfig",
    "axis_angle_to_matrix",
    "backproject",
    "disp_to_depth",
    "edge_aware_smoothness",
    "inverse_warp",
    "min_reprojection_loss",
    "multiscale_view_synthesis_loss",
    "photometric_error",
    "pose_vec_to_mat",
    "ssim",
    "upsampled_depth",
    "view_synthesis_loss",
]

_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2
_IDENTITY_TIE = 1e-5
_BIG = 1e4


def axis_angle_to_matrix(r: Tensor) -> Tensor:
    """Rodrigues: rotation vector ``r`` (..., 3) -> rotation matrix (..., 3, 3), differentiable also at ``r = 0``.

    ``R = I + sin(theta) K + (1 - cos(theta)) K^2``, ``K`` the cross-product matrix of ``r / theta``; the
    coefficients ``sin(theta)/theta`` and ``(1 - cos(theta))/theta^2`` use their Taylor series near 0.
    """
    theta2 = (r * r).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = torch.sqrt(theta2.clamp_min(1e-12))
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = r.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*r.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def pose_vec_to_mat(vec: Tensor) -> Tensor:
    """6-DoF vector ``(B, 6)`` = (axis-angle rotation, translation) -> ``(B, 4, 4)`` rigid transform ``[R | t]``."""
    if vec.shape[-1] != 6:
        raise ValueError(f"pose vectors must have 6 entries (rx, ry, rz, tx, ty, tz), got shape {tuple(vec.shape)}")
    rot = axis_angle_to_matrix(vec[..., :3])
    out = torch.zeros(*vec.shape[:-1], 4, 4, dtype=vec.dtype, device=vec.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = vec[..., 3:]
    out[..., 3, 3] = 1.0
    return out


def disp_to_depth(disp: Tensor, min_depth: float, max_depth: float) -> tuple[Tensor, Tensor]:
    """Sigmoid output ``disp`` in [0, 1] -> (scaled inverse depth, depth) in [min_depth, max_depth] (Monodepth2)."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    scaled = lo + (hi - lo) * disp
    return scaled, 1.0 / scaled


def _batched_k(k: Tensor, b: int) -> Tensor:
    if k.ndim == 2:
        k = k.unsqueeze(0)
    if k.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be (B, 3, 3) or (3, 3), got {tuple(k.shape)}")
    return k.expand(b, 3, 3)


def backproject(depth: Tensor, k: Tensor) -> Tensor:
    """Camera-frame 3-D points ``(B, 3, H*W)`` of every pixel: ``X = D(p) K^{-1} [u, v, 1]^T``."""
    b, _, h, w = depth.shape
    k = _batched_k(k.to(depth.dtype), b)
    v, u = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w, dtype=depth.dtype, device=depth.device)])
    rays = torch.linalg.solve(k, pix.unsqueeze(0).expand(b, 3, h * w))
    return rays * depth.reshape(b, 1, h * w)


def inverse_warp(
    src: Tensor, depth_t: Tensor, t_t2s: Tensor, k: Tensor, padding_mode: str = "zeros"
) -> tuple[Tensor, Tensor]:
    """Synthesise the target view from ``src`` (B, C, H, W) with target depth and ``T_t2s``.

    Returns ``(warped (B, C, H, W), valid (B, 1, H, W) bool)``; ``valid`` is False where the source point lies
    behind the camera (z <= 1e-3) or outside the source image (pixel centres ``[0, W-1] x [0, H-1]``).
    """
    b, _, h, w = depth_t.shape
    kb = _batched_k(k.to(depth_t.dtype), b)
    pts = backproject(depth_t, kb)
    pts_s = t_t2s[:, :3, :3] @ pts + t_t2s[:, :3, 3:]
    proj = kb @ pts_s
    z = proj[:, 2:3]
    zc = z.clamp_min(1e-3)
    u = proj[:, 0:1] / zc
    v = proj[:, 1:2] / zc
    tol = 1e-3  # float rounding at the image border
    valid = (z > 1e-3) & (u >= -tol) & (u <= w - 1 + tol) & (v >= -tol) & (v <= h - 1 + tol)
    grid = torch.cat([2.0 * u / max(w - 1, 1) - 1.0, 2.0 * v / max(h - 1, 1) - 1.0], 1)  # (B, 2, HW)
    grid = grid.transpose(1, 2).reshape(b, h, w, 2)
    warped = F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return warped, valid.reshape(b, 1, h, w)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` over 3x3 windows (average pooling, reflection padding; Monodepth2)."""
    xp, yp = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(xp, 3, 1), F.avg_pool2d(yp, 3, 1)
    sx = F.avg_pool2d(xp * xp, 3, 1) - mu_x**2
    sy = F.avg_pool2d(yp * yp, 3, 1) - mu_y**2
    sxy = F.avg_pool2d(xp * yp, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * sxy + _SSIM_C2)
    den = (mu_x**2 + mu_y**2 + _SSIM_C1) * (sx + sy + _SSIM_C2)
    return num / den


def photometric_error(pred: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """``alpha (1 - SSIM) / 2 + (1 - alpha) |pred - target|``, averaged over channels: ``(B, 1, H, W)``.

    The SSIM term is clamped to [0, 1] as in Monodepth2.
    """
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    d = ((1.0 - ssim(pred, target)) / 2.0).clamp(0.0, 1.0).mean(1, keepdim=True)
    return alpha * d + (1.0 - alpha) * l1


def edge_aware_smoothness(disp: Tensor, img: Tensor, normalize: bool = True) -> Tensor:
    """Edge-aware first-order smoothness of inverse depth ``disp`` (B, 1, H, W) guided by ``img`` (B, C, H, W).

    ``normalize``: divide ``disp`` by its per-image spatial mean first (Monodepth2, after Wang et al. 2018), which
    removes the trivial shrinking solution.
    """
    if normalize:
        disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    dx = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    dy = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    ix = (img[..., :, :-1] - img[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def min_reprojection_loss(
    target: Tensor,
    warped: Sequence[Tensor],
    sources: Sequence[Tensor] | None = None,
    valid: Sequence[Tensor] | None = None,
    *,
    alpha: float = 0.85,
    automask: bool = True,
    reduce_min: bool = True,
) -> tuple[Tensor, Tensor]:
    """Per-pixel minimum reprojection loss with auto-masking (Monodepth2 Eq. 4, Sec. 3.3); see module docstring.

    Args:
        target: ``I_t`` (B, C, H, W).
        warped: ``Î_{s->t}`` per source.
        sources: the unwarped ``I_s`` per source (needed for ``automask``).
        valid: per-source validity masks (B, 1, H, W) from :func:`inverse_warp` (None = all valid).
        automask: keep a pixel only where the best warped error beats the best unwarped error.
        reduce_min: per-pixel minimum over sources (False: their mean, SfMLearner style).

    Returns:
        ``(loss, mask)``: the mean error over kept pixels (0 when none is kept) and the kept-pixel mask (B, 1, H, W).
    """
    errs = torch.cat([photometric_error(w, target, alpha) for w in warped], 1)  # (B, S, H, W)
    if valid is not None:
        ok = torch.cat([v.to(torch.bool) for v in valid], 1)
        errs = torch.where(ok, errs, torch.full_like(errs, _BIG))
        any_ok = ok.any(1, keepdim=True)
    else:
        any_ok = torch.ones_like(errs[:, :1], dtype=torch.bool)
    if reduce_min:
        best = errs.min(1, keepdim=True).values
    else:
        best = errs.masked_fill(errs >= _BIG, 0.0).sum(1, keepdim=True) / (
            (errs < _BIG).sum(1, keepdim=True).clamp_min(1)
        )
    mask = any_ok
    if automask:
        if sources is None:
            raise ValueError("automask needs the unwarped sources")
        ident = torch.cat([photometric_error(s, target, alpha) for s in sources], 1) + _IDENTITY_TIE
        mask = mask & (best < ident.min(1, keepdim=True).values)
    m = mask.to(best.dtype)
    loss = (best * m).sum() / m.sum().clamp_min(1.0)
    return loss, mask


def view_synthesis_loss(
    target: Tensor,
    sources: Sequence[Tensor],
    depth_t: Tensor,
    disp_t: Tensor,
    t_t2s: Sequence[Tensor],
    k: Tensor,
    *,
    alpha: float = 0.85,
    smooth_weight: float = 1e-3,
    automask: bool = True,
    mask_out_of_view: bool = True,
    reduce_min: bool = True,
) -> dict[str, Tensor]:
    """``L = L_p + lambda_s L_s`` for one target frame and its sources at one scale (Monodepth2 Eq. 5 per scale).

    ``depth_t`` and ``disp_t`` at the resolution of ``target``; ``t_t2s`` one ``(B, 4, 4)`` per source. Returns
    ``{"loss", "photometric", "smoothness", "mask_fraction"}``.
    """
    pad = "zeros" if mask_out_of_view else "border"
    warped, valid = [], []
    for src, tr in zip(sources, t_t2s):
        w, v = inverse_warp(src, depth_t, tr, k, padding_mode=pad)
        warped.append(w)
        valid.append(v)
    photo, mask = min_reprojection_loss(
        target,
        warped,
        sources,
        valid if mask_out_of_view else None,
        alpha=alpha,
        automask=automask,
        reduce_min=reduce_min,
    )
    smooth = edge_aware_smoothness(disp_t, target)
    return {
        "loss": photo + smooth_weight * smooth,
        "photometric": photo,
        "smoothness": smooth,
        "mask_fraction": mask.float().mean(),
    }


def upsampled_depth(disp: Tensor, size: Sequence[int], min_depth: float, max_depth: float) -> tuple[Tensor, Tensor]:
    """:func:`disp_to_depth` of ``disp`` (B, 1, h, w) after bilinear upsampling to ``size`` (if it differs)."""
    if disp.shape[-2:] != size:
        disp = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
    return disp_to_depth(disp, min_depth, max_depth)


@dataclass
class VOLossConfig:
    """Options of :func:`multiscale_view_synthesis_loss` (Monodepth2 family): ``alpha`` SSIM weight,
    ``smooth_weight`` lambda_s (1e-3, Monodepth2), per-pixel minimum over sources (``min_reprojection``), auto-masking,
    out-of-view masking (see :func:`view_synthesis_loss`)."""

    alpha: float = 0.85
    smooth_weight: float = 1e-3
    min_reprojection: bool = True
    automask: bool = True
    mask_out_of_view: bool = True


def multiscale_view_synthesis_loss(
    disps: Sequence[Tensor],
    target: Tensor,
    sources: Sequence[Tensor],
    t_t2s: Sequence[Tensor],
    k: Tensor,
    min_depth: float,
    max_depth: float,
    cfg: VOLossConfig | None = None,
) -> dict[str, Tensor]:
    """Monodepth2's multi-scale loss (module docstring): :func:`view_synthesis_loss` at every scale of ``disps``
    (sigmoid inverse depths, finest first) upsampled to ``target``'s size, smoothness weight
    ``cfg.smooth_weight / 2^s``. Returns the means over scales of ``"loss"``, ``"photometric"`` and ``"smoothness"``.
    """
    cfg = cfg or VOLossConfig()
    total = target.new_zeros(())
    photo = target.new_zeros(())
    smooth = target.new_zeros(())
    for s, disp in enumerate(disps):
        scaled, depth = upsampled_depth(disp, target.shape[-2:], min_depth, max_depth)
        parts = view_synthesis_loss(
            target,
            sources,
            depth,
            scaled,
            t_t2s,
            k,
            alpha=cfg.alpha,
            smooth_weight=cfg.smooth_weight / 2**s,
            automask=cfg.automask,
            mask_out_of_view=cfg.mask_out_of_view,
            reduce_min=cfg.min_reprojection,
        )
        total = total + parts["loss"]
        photo = photo + parts["photometric"]
        smooth = smooth + parts["smoothness"]
    ns = len(disps)
    return {"loss": total / ns, "photometric": photo / ns, "smoothness": smooth / ns}
