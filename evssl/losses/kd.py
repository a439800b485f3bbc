r"""Knowledge-distillation and reconstruction losses of EvDistill (Wang et al., CVPR 2021), as pure functions.

The paper's exact equations were not available (see ``shared/reference/evdistill_brave_vo.md`` §1.4); each form
below names its source. Notation: :math:`z^S, z^T` student / teacher logits, :math:`f^S, f^T` feature maps
``(B, C, H, W)``, :math:`\tau` a temperature, :math:`p(z/\tau)` the softmax over classes.

* :func:`logit_kd` — temperature KD (Hinton et al. 2015), per pixel for segmentation:
  :math:`\tau^2\,\overline{\mathrm{KL}\big(p(z^T/\tau)\,\|\,p(z^S/\tau)\big)}` over the valid pixels (or samples).
* :func:`spatial_softmax_kl` — distribution matching, per-channel spatial softmax (channel-wise distillation form,
  Shu et al. ICCV 2021; evssl choice for EvDistill's "matching their distributions"):
  :math:`\frac{\tau^2}{BC}\sum_{b,c}\mathrm{KL}\big(\mathrm{softmax}_{hw}(f^T_{bc}/\tau)\,\|\,
  \mathrm{softmax}_{hw}(f^S_{bc}/\tau)\big)`.
* :func:`moment_matching` — the other distribution form: first and second moments of every channel over space,
  :math:`\overline{(\mu^S_{bc} - \mu^T_{bc})^2} + \overline{(\sigma^S_{bc} - \sigma^T_{bc})^2}` (zero whenever the
  per-channel spatial distributions have equal mean and spread, e.g. spatially permuted maps).
* :func:`affinity_matrix` / :func:`affinity_kd` — affinity-graph KD (structured KD pair-wise form, Liu et al.
  CVPR 2019): nodes are spatial positions after average pooling to at most ``max_nodes``,
  :math:`a_{ij} = \frac{\langle f_i, f_j\rangle}{\|f_i\|\|f_j\|}`,
  :math:`\mathcal L_{AG} = \frac{1}{N^2}\sum_{ij}(a^S_{ij} - a^T_{ij})^2`; memory is O(B N²).
* :func:`l1_reconstruction`, :func:`ssim_loss` — BMR reconstruction terms where real pairs exist.

Teacher tensors are detached by default (``detach_teacher=True``): KD sends gradient only into the student side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "affinity_kd",
    "affinity_matrix",
    "l1_reconstruction",
    "logit_kd",
    "moment_matching",
    "pool_to_nodes",
    "spatial_softmax_kl",
    "ssim",
    "ssim_loss",
]


def _match_size(student: Tensor, teacher: Tensor) -> Tensor:
    """Student map resized (bilinear) to the teacher's spatial size when they differ."""
    if student.ndim == 4 and student.shape[-2:] != teacher.shape[-2:]:
        return F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    return student


def logit_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tau: float = 1.0,
    valid: Tensor | None = None,
    detach_teacher: bool = True,
) -> Tensor:
    r"""Temperature KD :math:`\tau^2\,\mathrm{KL}(p(z^T/\tau)\,\|\,p(z^S/\tau))`, averaged over samples (``(B, K)``
    logits) or valid pixels (``(B, K, H, W)``; ``valid`` ``(B, H, W)`` bool, ``None`` = all pixels).

    The :math:`\tau^2` factor keeps the gradient magnitude independent of :math:`\tau` (Hinton et al. 2015, Sec. 2).
    """
    if tau <= 0:
        raise ValueError(f"logit_kd temperature must be positive, got {tau}")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(f"logit_kd: student has {student_logits.shape[1]} classes, teacher {teacher_logits.shape[1]}")
    t = teacher_logits.detach() if detach_teacher else teacher_logits
    s = _match_size(student_logits, t)
    log_ps = F.log_softmax(s.float() / tau, dim=1)
    log_pt = F.log_softmax(t.float() / tau, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)  # (B,) or (B, H, W)
    if valid is not None:
        w = valid.to(kl.dtype)
        return tau**2 * (kl * w).sum() / w.sum().clamp_min(1.0)
    return tau**2 * kl.mean()


def spatial_softmax_kl(student: Tensor, teacher: Tensor, tau: float = 1.0, detach_teacher: bool = True) -> Tensor:
    r"""Per-channel spatial-softmax KL, :math:`\tau^2` scaled, mean over batch and channels (module docstring)."""
    if tau <= 0:
        raise ValueError(f"spatial_softmax_kl temperature must be positive, got {tau}")
    t = teacher.detach() if detach_teacher else teacher
    s = _match_size(student, t)
    if s.shape[:2] != t.shape[:2]:
        raise ValueError(f"spatial_softmax_kl: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
    log_ps = F.log_softmax(s.float().flatten(2) / tau, dim=-1)
    log_pt = F.log_softmax(t.float().flatten(2) / tau, dim=-1)
    return tau**2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()


def moment_matching(student: Tensor, teacher: Tensor, detach_teacher: bool = True, eps: float = 1e-6) -> Tensor:
    r"""Squared differences of per-channel spatial means and standard deviations, averaged (module docstring)."""
    t = teacher.detach() if detach_teacher else teacher
    s = _match_size(student, t)
    if s.shape[:2] != t.shape[:2]:
        raise ValueError(f"moment_matching: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
    s, t = s.float().flatten(2), t.float().flatten(2)
    mu_s, mu_t = s.mean(-1), t.mean(-1)
    sd_s = (s.var(-1, unbiased=False) + eps).sqrt()
    sd_t = (t.var(-1, unbiased=False) + eps).sqrt()
    return (mu_s - mu_t).pow(2).mean() + (sd_s - sd_t).pow(2).mean()


def pool_to_nodes(features: Tensor, max_nodes: int) -> Tensor:
    """Average-pool ``(B, C, H, W)`` so that ``H' W' <= max_nodes`` (aspect kept), returned as nodes ``(B, N, C)``.

    ``H' = max(1, floor(H * r)), W' = max(1, floor(W * r))`` with ``r = sqrt(max_nodes / (H W))`` when ``H W >
    max_nodes``, else no pooling.
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    h, w = features.shape[-2:]
    if h * w > max_nodes:
        r = math.sqrt(max_nodes / (h * w))
        hh, ww = max(1, int(h * r)), max(1, int(w * r))
        while hh * ww > max_nodes:  # guard against rounding
            if hh >= ww:
                hh -= 1
            else:
                ww -= 1
        features = F.adaptive_avg_pool2d(features, (hh, ww))
    return features.flatten(2).transpose(1, 2)


def affinity_matrix(features: Tensor, max_nodes: int = 1024, eps: float = 1e-8) -> Tensor:
    r"""Cosine affinities :math:`a_{ij} = \langle f_i, f_j\rangle / (\|f_i\| \|f_j\|)` between the spatial nodes of
    ``features`` (pooled to ``<= max_nodes``), ``(B, N, N)``: symmetric, unit diagonal (for non-zero nodes)."""
    nodes = F.normalize(pool_to_nodes(features.float(), max_nodes), dim=-1, eps=eps)
    return nodes @ nodes.transpose(1, 2)


def affinity_kd(student: Tensor, teacher: Tensor, max_nodes: int = 1024, detach_teacher: bool = True) -> Tensor:
    r""":math:`\frac{1}{N^2}\sum_{ij}(a^S_{ij} - a^T_{ij})^2` averaged over the batch; channels may differ."""
    t = teacher.detach() if detach_teacher else teacher
    s = _match_size(student, t)
    return (affinity_matrix(s, max_nodes) - affinity_matrix(t, max_nodes)).pow(2).mean()


def l1_reconstruction(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Mean absolute error :math:`\overline{|\hat x - x|}` (optionally only over samples where ``valid`` (B,))."""
    err = (pred.float() - target.float()).abs().flatten(1).mean(1)
    if valid is None:
        return err.mean()
    w = valid.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 7, sigma: float = 1.5) -> Tensor:
    r"""Per-sample SSIM (Wang et al. 2004) with a Gaussian window, ``(B,)``:
    :math:`\frac{(2\mu_x\mu_y + c_1)(2\sigma_{xy} + c_2)}{(\mu_x^2 + \mu_y^2 + c_1)(\sigma_x^2 + \sigma_y^2 + c_2)}`,
    :math:`c_1 = (0.01 L)^2, c_2 = (0.03 L)^2`, averaged over pixels and channels (reflect padding)."""
    x, y = x.float(), y.float()
    c = x.shape[1]
    k = _gaussian_window(window, sigma, c, x.device, x.dtype)
    pad = window // 2

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.pad(z, (pad,) * 4, mode="reflect"), k, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx**2
    syy = blur(y * y) - my**2
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def ssim_loss(pred: Tensor, target: Tensor, data_range: float = 1.0, valid: Tensor | None = None) -> Tensor:
    r""":math:`(1 - \mathrm{SSIM}) / 2` averaged over the (valid) samples: 0 for identical images."""
    err = (1.0 - ssim(pred, target, data_range)) / 2
    if valid is None:
        return err.mean()
    w = valid.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)
