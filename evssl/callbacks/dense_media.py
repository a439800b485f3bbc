"""Pictures of dense predictions for a person to look at: label maps, optical flow, depth, K-means contexts.

All functions take numpy arrays or tensors (any device) and return ``(H, W, 3)`` uint8 images, ready for
:func:`evssl.callbacks.media.log_images`.

* :func:`label_to_rgb` — a fixed palette (index 0 black, then well-separated hues), ``ignore_index`` grey.
* :func:`flow_to_rgb` — the Middlebury colour wheel (Baker et al., IJCV 2011): hue = direction, saturation =
  magnitude / max magnitude; written from the published wheel definition (RY 15, YG 6, GC 4, CB 11, BM 13, MR 6).
* :func:`depth_to_rgb` — inverse depth (near = bright) through a perceptual ramp; invalid pixels black.
* :func:`context_overlay` — a label map blended over an event picture (ECDDP's K-means contexts).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["context_overlay", "depth_to_rgb", "enlarge", "flow_to_rgb", "label_to_rgb", "palette", "side_by_side"]


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def palette(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours: index 0 black, then hues spaced by the golden angle with alternating brightness."""
    out = np.zeros((max(n, 1), 3), dtype=np.uint8)
    for i in range(1, n):
        h = (i * 0.618033988749895) % 1.0
        v = 1.0 if i % 2 else 0.75
        s = 0.85
        k = np.array([5.0, 3.0, 1.0])
        rgb = v - v * s * np.clip(np.minimum((k + h * 6) % 6, 4 - (k + h * 6) % 6), 0, 1)
        out[i] = np.round(rgb * 255).astype(np.uint8)
    return out


def label_to_rgb(labels: Tensor | np.ndarray, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Colour image of an integer label map ``(H, W)``; ``ignore_index`` (and out-of-range labels) grey."""
    lab = _np(labels).astype(np.int64)
    pal = palette(num_classes)
    ok = (lab >= 0) & (lab < num_classes)
    if ignore_index is not None:
        ok &= lab != ignore_index
    out = np.full((*lab.shape, 3), 128, dtype=np.uint8)
    out[ok] = pal[lab[ok]]
    return out


def _color_wheel() -> np.ndarray:
    """Middlebury colour wheel ``(55, 3)`` in [0, 255]: red -> yellow -> green -> cyan -> blue -> magenta -> red."""
    segments = [
        (15, (255, 0, 0), (255, 255, 0)),
        (6, (255, 255, 0), (0, 255, 0)),
        (4, (0, 255, 0), (0, 255, 255)),
        (11, (0, 255, 255), (0, 0, 255)),
        (13, (0, 0, 255), (255, 0, 255)),
        (6, (255, 0, 255), (255, 0, 0)),
    ]
    rows = []
    for n, a, b in segments:
        t = np.arange(n)[:, None] / n
        rows.append((1 - t) * np.array(a, float) + t * np.array(b, float))
    return np.concatenate(rows)


def flow_to_rgb(flow: Tensor | np.ndarray, max_norm: float | None = None) -> np.ndarray:
    r"""Colour image ``(H, W, 3)`` of a flow field ``(2, H, W)`` (channel 0 = dx, 1 = dy, pixels).

    Direction :math:`\alpha = \mathrm{atan2}(-dy, -dx)/\pi` picks the wheel colour (interpolated between wheel
    entries), magnitude :math:`r = |f| / \max|f|` (or ``max_norm``) blends it with white: :math:`1 - r (1 - c)`;
    non-finite vectors are black. Zero flow is white.
    """
    f = _np(flow).astype(np.float64)
    if f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got {f.shape}")
    u, v = f[0], f[1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u = np.where(bad, 0.0, u)
    v = np.where(bad, 0.0, v)
    mag = np.sqrt(u**2 + v**2)
    scale = float(max_norm) if max_norm is not None else float(mag.max())
    rad = mag / scale if scale > 0 else mag
    wheel = _color_wheel()
    ncols = len(wheel)
    a = np.arctan2(-v, -u) / np.pi  # [-1, 1]
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64) % ncols
    k1 = (k0 + 1) % ncols
    t = (fk - np.floor(fk))[..., None]
    col = ((1 - t) * wheel[k0] + t * wheel[k1]) / 255.0
    r = np.clip(rad, 0, 1)[..., None]
    col = 1 - r * (1 - col)
    col = np.where(rad[..., None] > 1, col * 0.75, col)
    out = np.round(col * 255).astype(np.uint8)
    out[bad] = 0
    return out


def depth_to_rgb(depth: Tensor | np.ndarray, valid: Tensor | np.ndarray | None = None) -> np.ndarray:
    """Colour image of a depth map ``(H, W)``: inverse depth normalised to [0, 1] over valid pixels (robust 2–98 %
    range) through a dark-blue -> magenta -> orange -> yellow ramp; invalid (non-finite, <= 0, or ``~valid``) black."""
    d = _np(depth).astype(np.float64)
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= _np(valid).astype(bool)
    inv = np.where(ok, 1.0 / np.where(ok, d, 1.0), 0.0)
    if ok.any():
        lo, hi = np.percentile(inv[ok], [2, 98])
        t = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    else:
        t = np.zeros_like(inv)
    stops = np.array([[0.05, 0.03, 0.25], [0.55, 0.1, 0.55], [0.95, 0.45, 0.2], [1.0, 0.95, 0.55]])
    x = t * (len(stops) - 1)
    i = np.clip(np.floor(x).astype(np.int64), 0, len(stops) - 2)
    f = (x - i)[..., None]
    col = (1 - f) * stops[i] + f * stops[i + 1]
    out = np.round(col * 255).astype(np.uint8)
    out[~ok] = 0
    return out


def context_overlay(
    background: np.ndarray, labels: Tensor | np.ndarray, num_labels: int, alpha: float = 0.5
) -> np.ndarray:
    """Blend the colours of a (coarse) label map over ``background`` ``(H, W, 3)`` uint8.

    ``labels`` ``(h, w)`` is upsampled to ``(H, W)`` by nearest neighbour (each token covers its ``H/h x W/w``
    block); colours from :func:`palette` shifted by one so that context 0 is not black.
    """
    lab = torch.as_tensor(_np(labels).astype(np.int64))
    hh, ww = background.shape[:2]
    up = torch.nn.functional.interpolate(lab[None, None].float(), size=(hh, ww), mode="nearest")[0, 0].long()
    colours = palette(num_labels + 1)[1:]
    col = colours[up.clamp(0, num_labels - 1).numpy()].astype(np.float32)
    out = (1 - alpha) * background.astype(np.float32) + alpha * col
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def enlarge(image: np.ndarray, min_side: int = 128) -> np.ndarray:
    """Nearest-neighbour upscaling by the smallest integer factor that makes the shorter side >= ``min_side``."""
    f = max(1, -(-min_side // max(1, min(image.shape[:2]))))
    return image if f == 1 else np.repeat(np.repeat(image, f, axis=0), f, axis=1)


def side_by_side(images: list[np.ndarray], gap: int = 2, min_side: int = 128) -> np.ndarray:
    """Concatenate ``(H, W_i, 3)`` images horizontally with a white ``gap`` (heights padded to the tallest), each
    first enlarged with :func:`enlarge` so that tiny maps stay visible."""
    images = [enlarge(im, min_side) for im in images]
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        if im.shape[0] < h:
            im = np.concatenate([im, np.full((h - im.shape[0], *im.shape[1:]), 255, np.uint8)])
        parts.append(im)
        if gap and i < len(images) - 1:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)
