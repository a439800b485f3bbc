"""Dense decoders over multi-scale backbone features (segmentation, optical flow, depth).

* :class:`UNetDecoder` -- U-Net style top-down path (Ronneberger et al., MICCAI 2015): from the coarsest map, repeatedly
  upsample x2 (bilinear), concatenate the next finer skip feature and apply two 3x3 conv-norm-ReLU layers; a 1x1
  convolution gives ``out_channels`` at the finest feature resolution, bilinearly resized to ``output_size``.
* :class:`UPerHead` -- UPerNet head (Xiao et al., ECCV 2018) as used by ECDDP for DSEC-Semantic: a pyramid pooling
  module (PSPNet, Zhao et al. CVPR 2017; scales 1, 2, 3, 6) on the coarsest map, an FPN top-down path (Lin et al.
  CVPR 2017) over all maps, all levels resized to the finest one, concatenated, fused by a 3x3 convolution, dropout
  and a 1x1 classifier.

Both take ``features`` as a list ordered fine -> coarse (e.g. Swin/ResNet strides 4, 8, 16, 32; any strides work, a
single-scale ViT map is a list of one) and ``in_channels`` the matching channel list.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvNormAct", "UNetDecoder", "UPerHead"]

Norm = Literal["bn", "gn", "none"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        # 32 groups (Wu & He 2018) when possible, with at least two channels per group (1x1 PPM maps)
        groups = next((g for g in (32, 16, 8, 4, 2) if channels % g == 0 and channels // g >= 2), 1)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (use 'bn', 'gn' or 'none')")


class ConvNormAct(nn.Sequential):
    """``Conv2d (no bias when normalised) -> norm -> ReLU``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, norm: Norm = "bn") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=norm == "none"),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


def _feature_list(features: Tensor | list[Tensor] | tuple[Tensor, ...], expected: int) -> list[Tensor]:
    """The feature maps as a list (one tensor = one map); a count other than ``expected`` is an error."""
    feats = [features] if isinstance(features, Tensor) else list(features)
    if len(feats) != expected:
        raise ValueError(f"expected {expected} feature maps, got {len(feats)}")
    return feats


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class UNetDecoder(nn.Module):
    """U-Net decoder over a feature pyramid.

    Args:
        in_channels: channels of ``features`` (fine -> coarse).
        out_channels: prediction channels (classes for segmentation, 2 for flow, 1 for depth).
        decoder_channels: width of each decoder level (one int for all, or a list fine -> coarse of the same length
            as ``in_channels``).
        norm: ``"bn"``, ``"gn"`` or ``"none"``.

    ``forward(features, output_size=None) -> (B, out_channels, H, W)``; without ``output_size`` the prediction stays
    at the finest feature resolution.
    """

    def __init__(
        self,
        in_channels: list[int] | tuple[int, ...],
        out_channels: int,
        decoder_channels: int | list[int] = 64,
        norm: Norm = "bn",
    ) -> None:
        super().__init__()
        n = len(in_channels)
        dec = [decoder_channels] * n if isinstance(decoder_channels, int) else list(decoder_channels)
        if len(dec) != n:
            raise ValueError(f"decoder_channels needs {n} entries, got {len(dec)}")
        self.in_channels = list(in_channels)
        self.bottleneck = self._double(in_channels[-1], dec[-1], norm)
        self.blocks = nn.ModuleList(self._double(dec[i + 1] + in_channels[i], dec[i], norm) for i in range(n - 1))
        self.head = nn.Conv2d(dec[0], out_channels, 1)

    @staticmethod
    def _double(cin: int, cout: int, norm: Norm) -> nn.Sequential:
        return nn.Sequential(ConvNormAct(cin, cout, 3, norm), ConvNormAct(cout, cout, 3, norm))

    def forward(
        self, features: Tensor | list[Tensor] | tuple[Tensor, ...], output_size: tuple[int, int] | None = None
    ) -> Tensor:
        feats = _feature_list(features, len(self.in_channels))
        x = self.bottleneck(feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            x = _resize(x, feats[i].shape[-2:])
            x = self.blocks[i](torch.cat([x, feats[i]], dim=1))
        x = self.head(x)
        return x if output_size is None else _resize(x, output_size)


class UPerHead(nn.Module):
    """UPerNet decode head (PPM + FPN), ECDDP's segmentation head (channels 512, pool scales 1, 2, 3, 6).

    Args:
        in_channels: channels of ``features`` (fine -> coarse).
        out_channels: prediction channels.
        channels: internal width (512 in UPerNet/ECDDP).
        pool_scales: PPM output sizes.
        dropout: dropout before the classifier (0.1 as in mmseg).
        norm: ``"bn"``, ``"gn"`` or ``"none"``. (With ``"bn"`` the scale-1 PPM branch needs a batch larger than one in
            training, as in the original.)
    """

    def __init__(
        self,
        in_channels: list[int] | tuple[int, ...],
        out_channels: int,
        channels: int = 512,
        pool_scales: tuple[int, ...] | list[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        norm: Norm = "bn",
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.pool_scales = tuple(pool_scales)
        self.ppm = nn.ModuleList(ConvNormAct(in_channels[-1], channels, 1, norm) for _ in pool_scales)
        self.ppm_bottleneck = ConvNormAct(in_channels[-1] + len(pool_scales) * channels, channels, 3, norm)
        self.lateral = nn.ModuleList(ConvNormAct(c, channels, 1, norm) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(ConvNormAct(channels, channels, 3, norm) for _ in in_channels[:-1])
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def _psp(self, x: Tensor) -> Tensor:
        outs = [x]
        for scale, conv in zip(self.pool_scales, self.ppm):
            outs.append(_resize(conv(F.adaptive_avg_pool2d(x, scale)), x.shape[-2:]))
        return self.ppm_bottleneck(torch.cat(outs, dim=1))

    def forward(
        self, features: Tensor | list[Tensor] | tuple[Tensor, ...], output_size: tuple[int, int] | None = None
    ) -> Tensor:
        feats = _feature_list(features, len(self.in_channels))
        lat = [conv(f) for conv, f in zip(self.lateral, feats[:-1])]
        lat.append(self._psp(feats[-1]))
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + _resize(lat[i], lat[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        x = self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1))
        x = self.classifier(self.dropout(x))
        return x if output_size is None else _resize(x, output_size)
