"""Batched random-resized crops on the device, one independent box (and flip) per sample.

torchvision's ``RandomResizedCrop`` (Szegedy et al. 2015; the SimCLR / MoCo / ECDP view augmentation) draws, per
image, an area fraction ``s ~ U(scale)`` and a log-uniform aspect ratio ``r`` (``log r ~ U(log ratio)``), sets
``w = round(sqrt(s·A·r))``, ``h = round(sqrt(s·A/r))`` and places the box uniformly; after 10 failed tries it falls
back to the largest centred box whose aspect ratio lies in ``ratio``. :func:`sample_resized_crop_boxes` draws the
same distribution for a whole batch at once (10 candidates per sample, the first valid one wins).

:func:`resized_crop_nearest` resamples every box to ``out_size`` with **nearest-neighbour** interpolation —
``F.interpolate(mode="nearest")``'s rule ``src = top + ⌊dst · h / out_h⌋`` — as one gather over the batch, so event
counts are copied, never blended (ECDP: "RandomResizedCrop with nearest interpolation"). A horizontal flip is a
reversed column index in the same gather.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CropBatch",
    "crop_sampling_grid",
    "random_crop_boxes",
    "random_resized_crop_nearest",
    "random_resized_crops",
    "resample",
    "resized_crop_nearest",
    "sample_resized_crop_boxes",
    "transport_labels",
]


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U(0, 1) samples on ``device`` (drawn on the generator's device, then moved)."""
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def sample_resized_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    attempts: int = 10,
) -> Tensor:
    """Random-resized-crop boxes ``(B, 4)`` long: ``top, left, h, w`` (torchvision's ``get_params``, batched).

    Per sample: up to ``attempts`` candidates with area fraction ``~ U(scale)`` and ``log(aspect) ~ U(log ratio)``;
    the first one that fits in ``height x width`` is placed uniformly. Samples without a fitting candidate get the
    centred fallback box (full image clipped to the extreme aspect ratio).
    """
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must satisfy 0 < lo <= hi, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
    device = torch.device(device)
    area = float(height * width)
    u = _uniform((4, batch, attempts), generator, device).double()
    target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.double().argmax(dim=1, keepdim=True)  # index of the first valid candidate (0 when none is)
    found = ok.any(dim=1)
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    top = torch.floor(u[2].gather(1, first).squeeze(1) * (height - h + 1))
    left = torch.floor(u[3].gather(1, first).squeeze(1) * (width - w + 1))

    # fallback (torchvision): the whole image, clipped to the nearest admissible aspect ratio, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    ftop, fleft = (height - fh) // 2, (width - fw) // 2
    h = torch.where(found, h, torch.full_like(h, fh))
    w = torch.where(found, w, torch.full_like(w, fw))
    top = torch.where(found, top, torch.full_like(top, ftop))
    left = torch.where(found, left, torch.full_like(left, fleft))
    return torch.stack([top, left, h, w], dim=1).long()


def resized_crop_nearest(x: Tensor, boxes: Tensor, out_size: tuple[int, int], flip: Tensor | None = None) -> Tensor:
    """Crop ``boxes`` ``(B, 4)`` (top, left, h, w) out of ``x`` ``(B, C, H, W)`` and resize each to ``out_size`` with
    nearest-neighbour sampling; ``flip`` ``(B,)`` bool mirrors the result horizontally.

    Output pixel ``(r, c)`` of sample ``b`` reads ``x[b, :, top + ⌊r·h/H'⌋, left + ⌊c'·w/W'⌋]`` with ``c' = W'-1-c``
    when flipped, else ``c`` — equal to ``F.interpolate(crop, out_size, mode="nearest")`` (then ``flip(-1)``).
    """
    b, c, hh, ww = x.shape
    oh, ow = int(out_size[0]), int(out_size[1])
    boxes = boxes.to(x.device)
    top, left, h, w = boxes.unbind(1)
    rows = top[:, None] + (torch.arange(oh, device=x.device)[None, :] * h[:, None]) // oh  # (B, oh)
    cols_idx = torch.arange(ow, device=x.device)
    if flip is not None:
        cols_idx = torch.where(flip.to(x.device)[:, None], ow - 1 - cols_idx[None, :], cols_idx[None, :])
    else:
        cols_idx = cols_idx[None, :].expand(b, -1)
    cols = left[:, None] + (cols_idx * w[:, None]) // ow  # (B, ow)
    rows = rows.clamp_(0, hh - 1)
    cols = cols.clamp_(0, ww - 1)
    flat = (rows[:, :, None] * ww + cols[:, None, :]).reshape(b, 1, oh * ow).expand(-1, c, -1)
    return x.reshape(b, c, hh * ww).gather(2, flat).reshape(b, c, oh, ow)


def random_resized_crop_nearest(
    x: Tensor,
    out_size: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    hflip_p: float = 0.0,
    return_params: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """``RandomResizedCrop(out_size, scale, ratio, NEAREST)`` + ``RandomHorizontalFlip(hflip_p)`` per sample.

    ``x`` ``(B, C, H, W)``; ``out_size`` defaults to ``(H, W)``. With ``return_params`` also returns the boxes
    ``(B, 4)`` (top, left, h, w) and the flips ``(B,)`` bool.
    """
    b, _, hh, ww = x.shape
    out = (hh, ww) if out_size is None else (int(out_size[0]), int(out_size[1]))
    boxes = sample_resized_crop_boxes(b, hh, ww, scale, ratio, generator=generator, device=x.device)
    flip = _uniform((b,), generator, x.device) < hflip_p
    y = resized_crop_nearest(x, boxes, out, flip)
    return (y, boxes, flip) if return_params else y


# ================================================================================ multi-crop with sampling grids
# ECDDP (Yang et al., ECCV 2024) crops every view out of one "full" teacher view and keeps, per crop, where each of its
# pixels (and tokens) came from, so that labels computed on the full view (K-means contexts) can be carried into
# every crop. Conventions (``align_corners=False`` everywhere): pixel ``i`` of an ``n``-pixel axis covers the
# continuous interval ``[i, i + 1)`` and its centre ``i + 0.5`` has normalised coordinate ``(2 (i + 0.5) / n) - 1``.
# A crop box ``(top, left, h, w)`` (integers, pixels of the source) resampled to ``out_h x out_w`` puts output pixel
# ``(r, c)`` at the source point ``(top + (r + 0.5) h / out_h, left + (c' + 0.5) w / out_w)`` with ``c' = out_w - 1 -
# c`` when the crop is flipped horizontally, else ``c``. The same formula with the *token* grid size instead of the
# pixel size gives the source point under the centre of every token, which is what label transport samples.


def crop_sampling_grid(
    boxes: Tensor, flip: Tensor | None, out_size: tuple[int, int], in_size: tuple[int, int]
) -> Tensor:
    r"""Normalised ``grid_sample`` grid ``(B, out_h, out_w, 2)`` (``x, y`` in ``[-1, 1]``, ``align_corners=False``).

    Entry ``(b, r, c)`` is the source point under the centre of output cell ``(r, c)`` of crop ``boxes[b]`` =
    ``(top, left, h, w)`` of an ``in_size = (H, W)`` image:

    .. math::

        x = \frac{2}{W}\Big(\text{left} + (c' + \tfrac12)\frac{w}{\text{out}_w}\Big) - 1,\qquad
        y = \frac{2}{H}\Big(\text{top} + (r + \tfrac12)\frac{h}{\text{out}_h}\Big) - 1,

    with :math:`c' = \text{out}_w - 1 - c` for flipped crops. ``out_size`` may be the crop's pixel size (to resample
    the image) or its token-grid size (to transport per-token labels).
    """
    oh, ow = int(out_size[0]), int(out_size[1])
    hh, ww = int(in_size[0]), int(in_size[1])
    b = boxes.shape[0]
    boxes = boxes.to(torch.float32)
    top, left, h, w = boxes.unbind(1)
    dev = boxes.device
    r = torch.arange(oh, device=dev, dtype=torch.float32) + 0.5
    c = torch.arange(ow, device=dev, dtype=torch.float32) + 0.5
    c = c[None, :].expand(b, -1)
    if flip is not None:
        c = torch.where(flip.to(dev)[:, None], ow - c, c)
    ys = (top[:, None] + r[None, :] * h[:, None] / oh) * (2.0 / hh) - 1.0  # (B, oh)
    xs = (left[:, None] + c * w[:, None] / ow) * (2.0 / ww) - 1.0  # (B, ow)
    return torch.stack([xs[:, None, :].expand(b, oh, ow), ys[:, :, None].expand(b, oh, ow)], dim=-1)


def resample(x: Tensor, grid: Tensor, mode: str = "bilinear") -> Tensor:
    """``grid_sample(x, grid, mode, padding_mode="zeros", align_corners=False)``: crops ``(B, C, h, w)`` of ``x``."""
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=False)


def transport_labels(labels: Tensor, grid: Tensor) -> Tensor:
    """Per-cell integer labels ``(B, h, w)`` of a source map sampled at ``grid`` ``(B, oh, ow, 2)``, nearest.

    ``grid_sample(mode="nearest", align_corners=False)`` returns the label of the source cell that *contains* each
    grid point (cell ``i`` spans normalised ``[2i/n - 1, 2(i+1)/n - 1)``), so a crop token receives the label of the
    full-view token under its centre. Labels are carried as float32 and rounded back (exact for ``|label| < 2^24``).
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, h, w), got {tuple(labels.shape)}")
    src = labels[:, None].float()
    out = F.grid_sample(src, grid.float(), mode="nearest", padding_mode="border", align_corners=False)
    return out[:, 0].round().long()


class CropBatch(NamedTuple):
    """``n`` random-resized crops of each sample of a batch, crop-major: row ``i * B + b`` = crop ``i`` of sample ``b``.

    Attributes:
        images: ``(n*B, C, h, w)`` resampled crops.
        boxes: ``(n*B, 4)`` long ``(top, left, h, w)`` in source pixels.
        flip: ``(n*B,)`` bool, horizontally flipped.
        source: ``(n*B,)`` long, the sample each crop came from (``arange(B)`` repeated ``n`` times).
        token_grid: ``(n*B, h/stride, w/stride, 2)`` sampling grid of the token centres (``None`` without a stride).
    """

    images: Tensor
    boxes: Tensor
    flip: Tensor
    source: Tensor
    token_grid: Tensor | None


def random_resized_crops(
    x: Tensor,
    num_crops: int,
    size: int | tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    hflip_p: float = 0.5,
    token_stride: int | None = None,
    mode: str = "bilinear",
    generator: torch.Generator | None = None,
) -> CropBatch:
    """``num_crops`` independent ``RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip(hflip_p)`` per sample.

    Boxes follow torchvision's law (:func:`sample_resized_crop_boxes`); every crop is resampled with
    :func:`resample` (``mode``: ``"bilinear"`` as Kornia in ECDDP, or ``"nearest"``) on the grid of
    :func:`crop_sampling_grid`, batched over all crops of all samples. With ``token_stride`` the grid of the token
    centres (``size / token_stride`` per side) is returned too, for :func:`transport_labels`.
    """
    if num_crops < 0:
        raise ValueError(f"num_crops must be >= 0, got {num_crops}")
    oh, ow = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    b, c, hh, ww = x.shape
    n = num_crops * b
    boxes = sample_resized_crop_boxes(n, hh, ww, scale, ratio, generator=generator, device=x.device)
    flip = _uniform((n,), generator, x.device) < hflip_p
    source = torch.arange(b, device=x.device).repeat(num_crops)
    if n == 0:
        images = x.new_zeros(0, c, oh, ow)
    else:
        grid = crop_sampling_grid(boxes, flip, (oh, ow), (hh, ww))
        images = resample(x[source], grid, mode)
    token_grid = None
    if token_stride is not None:
        if oh % token_stride or ow % token_stride:
            raise ValueError(f"crop size {oh}x{ow} is not a multiple of the token stride {token_stride}")
        token_grid = crop_sampling_grid(boxes, flip, (oh // token_stride, ow // token_stride), (hh, ww))
    return CropBatch(images, boxes, flip, source, token_grid)


def random_crop_boxes(
    batch: int,
    height: int,
    width: int,
    size: tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Boxes ``(B, 4)`` long of a plain random crop of ``size`` (top, left uniform over all positions)."""
    h, w = int(size[0]), int(size[1])
    if h > height or w > width:
        raise ValueError(f"crop {h}x{w} larger than the {height}x{width} input")
    u = _uniform((2, batch), generator, torch.device(device))
    top = torch.floor(u[0] * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(u[1] * (width - w + 1)).clamp_(max=width - w)
    return torch.stack([top, left, torch.full_like(top, h), torch.full_like(top, w)], dim=1).long()
