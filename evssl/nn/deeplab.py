r"""DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
ECCV 2018) on any evssl feature-pyramid backbone, and a recognition variant with pooled logits.

What the EvDistill code ships (``addisonwang2013/evdistill``, ``modeling/``, a copy of ``jfzhang95/pytorch-deeplab-
xception``), restated:

* **ASPP** on the last backbone stage (output stride 16 through a dilated last ResNet stage, see
  :class:`~evssl.nn.backbones.ResNet` ``output_stride``): a 1x1 branch, three 3x3 atrous branches with rates
  6 / 12 / 18 (12 / 24 / 36 at output stride 8) and an image-pooling branch (global average pool, 1x1 conv, upsampled
  back), each conv-BN-ReLU with ``aspp_channels`` (256) outputs; concatenated, 1x1 conv-BN-ReLU to 256, dropout 0.5.

  .. math:: \mathrm{ASPP}(x) = \mathrm{drop}\big(\phi_{1\times1}([\phi_1(x), \phi_{r_1}(x), \phi_{r_2}(x),
            \phi_{r_3}(x), \uparrow\phi_{pool}(\bar x)])\big)

* **Decoder**: the low-level feature (first stage, stride 4) projected by 1x1 conv-BN-ReLU to 48 channels, the ASPP
  output bilinearly upsampled (``align_corners=True``) to its size and concatenated, then two 3x3 conv-BN-ReLU (256,
  dropout 0.5 and 0.1) and a 1x1 classifier; the logits are upsampled bilinearly to the input size.
* Kaiming-normal init of the head's convolutions, BN weight 1 / bias 0.

:class:`DeepLabV3Plus` exposes every intermediate map (``forward_all``) because EvDistill distils on them: the
ASPP output, the decoder's penultimate 256-channel map (``"decoder"``), the stride-4 logits and the logits at input
size. The official ``DeepLab_Dual`` also has a ``pointwise`` 1x1 conv-BN-ReLU from the logits to 3 channels,
commented "used to compute the affinity matrix": :class:`PointwiseProjection`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ASPP", "DeepLabClassifier", "DeepLabV3Plus", "DeepLabV3PlusDecoder", "PointwiseProjection", "aspp_rates"]


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """Atrous rates of the three 3x3 ASPP branches: (6, 12, 18) at output stride 16, doubled at 8 (DeepLabV3)."""
    if output_stride == 16:
        return (6, 12, 18)
    if output_stride == 8:
        return (12, 24, 36)
    raise ValueError(f"DeepLab atrous rates are defined for output stride 8 or 16, got {output_stride}")


def _cbr(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
    pad = 0 if k == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _ImagePool(nn.Module):
    """Image-level branch: global average pool -> 1x1 conv-BN-ReLU -> bilinear upsample to the input size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = _cbr(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.pool(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3, Chen et al. 2017, Sec. 3.3; equation in the module docstring).

    Args:
        in_channels: channels of the last backbone stage.
        out_channels: channels of every branch and of the output (256).
        rates: atrous rates of the 3x3 branches ((6, 12, 18) at output stride 16).
        dropout: dropout after the projection (0.5).
        image_pooling: include the image-level branch.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.5,
        image_pooling: bool = True,
    ) -> None:
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        branches: list[nn.Module] = [_cbr(in_channels, out_channels, 1)]
        branches += [_cbr(in_channels, out_channels, 3, r) for r in self.rates]
        if image_pooling:
            branches.append(_ImagePool(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = _cbr(len(branches) * out_channels, out_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.out_channels = out_channels
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.project(torch.cat([b(x) for b in self.branches], dim=1)))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabV3+ decoder: 48-channel low-level projection, concat with the upsampled ASPP map, two 3x3 convs, 1x1.

    ``forward(aspp, low) -> (features, logits)``: the penultimate ``channels`` map and the logits, both at the
    low-level resolution (stride 4).
    """

    def __init__(
        self,
        low_channels: int,
        aspp_channels: int,
        num_classes: int,
        low_proj: int = 48,
        channels: int = 256,
        dropouts: tuple[float, float] = (0.5, 0.1),
    ) -> None:
        super().__init__()
        self.low = _cbr(low_channels, low_proj, 1)
        self.conv1 = _cbr(aspp_channels + low_proj, channels, 3)
        self.drop1 = nn.Dropout(dropouts[0])
        self.conv2 = _cbr(channels, channels, 3)
        self.drop2 = nn.Dropout(dropouts[1])
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.out_channels = channels
        _init(self)

    def forward(self, aspp: Tensor, low: Tensor) -> tuple[Tensor, Tensor]:
        low = self.low(low)
        x = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=True)
        x = self.drop1(self.conv1(torch.cat([x, low], dim=1)))
        feat = self.conv2(x)
        return feat, self.classifier(self.drop2(feat))


class PointwiseProjection(nn.Sequential):
    """1x1 conv-BN-ReLU from ``in_channels`` (the logits) to ``out_channels`` (3): the official ``DeepLab_Dual``
    ``pointwise`` layer, "used to compute the affinity matrix"."""

    def __init__(self, in_channels: int, out_channels: int = 3) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU())


def _check_backbone(backbone: nn.Module, low_level_index: int) -> list[int]:
    channels = list(getattr(backbone, "feature_channels", None) or [])
    if not channels or not hasattr(backbone, "forward_features"):
        raise ValueError(f"DeepLab needs a backbone with forward_features and feature_channels, got {type(backbone)}")
    if not 0 <= low_level_index < len(channels) - 1:
        raise ValueError(f"low_level_index must be in [0, {len(channels) - 2}], got {low_level_index}")
    return channels


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ segmentation network on a feature-pyramid backbone (any ``in_chans``: frames or events).

    Args:
        backbone: network with ``forward_features(x)["features"]`` (fine -> coarse) and ``feature_channels``;
            a :class:`~evssl.nn.backbones.ResNet` with ``output_stride=16`` reproduces the paper's OS16 setting.
        num_classes: output classes (6 on DDD17).
        aspp_channels: ASPP width (256). aspp_rates: atrous rates ((6, 12, 18)). aspp_dropout: 0.5.
        decoder_channels: decoder width (256). low_level_channels: low-level projection (48).
        low_level_index: which pyramid level is the low-level feature (0 = first stage, stride 4).
        decoder_dropouts: dropouts of the two decoder convs ((0.5, 0.1)).

    ``forward(x)`` returns the logits at the input size; :meth:`forward_all` returns ``{"features": pyramid,
    "aspp", "decoder" (penultimate map), "logits_lowres" (stride 4), "logits"}``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        aspp_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.5,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
        low_level_index: int = 0,
        decoder_dropouts: tuple[float, float] = (0.5, 0.1),
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        channels = _check_backbone(backbone, low_level_index)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.low_level_index = int(low_level_index)
        self.aspp = ASPP(channels[-1], aspp_channels, aspp_rates, aspp_dropout)
        self.decoder = DeepLabV3PlusDecoder(
            channels[low_level_index], aspp_channels, num_classes, low_level_channels, decoder_channels,
            tuple(decoder_dropouts),
        )  # fmt: skip
        self.in_chans = getattr(backbone, "in_chans", None)

    def forward_all(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Every map EvDistill may distil on (see the class docstring)."""
        feats = list(self.backbone.forward_features(x)["features"])
        aspp = self.aspp(feats[-1])
        dec, logits_lr = self.decoder(aspp, feats[self.low_level_index])
        logits = F.interpolate(logits_lr, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return {"features": feats, "aspp": aspp, "decoder": dec, "logits_lowres": logits_lr, "logits": logits}

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, H, W)`` at the input size."""
        return self.forward_all(x)["logits"]  # type: ignore[return-value]


class DeepLabClassifier(nn.Module):
    """Recognition variant of the same family: backbone + ASPP, global average pool, dropout, linear classifier.

    ``logits = W · mean_{hw} ASPP(f_L(x)) + b`` (evssl choice for EvDistill's N-Caltech101 experiment, whose network
    the paper does not detail; it keeps teacher and student in the DeepLab family and gives KD a spatial map — the
    ASPP output, ``"decoder"`` — for the distribution and affinity terms). ``forward_all`` returns
    ``{"features", "aspp", "decoder" (= the ASPP map), "pooled", "logits"}``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        aspp_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        channels = _check_backbone(backbone, 0)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.aspp = ASPP(channels[-1], aspp_channels, aspp_rates, aspp_dropout)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(aspp_channels, num_classes)
        self.in_chans = getattr(backbone, "in_chans", None)

    def forward_all(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Pyramid, ASPP map, pooled feature and logits ``(B, num_classes)``."""
        feats = list(self.backbone.forward_features(x)["features"])
        aspp = self.aspp(feats[-1])
        pooled = aspp.mean(dim=(2, 3))
        return {"features": feats, "aspp": aspp, "decoder": aspp, "pooled": pooled,
                "logits": self.fc(self.dropout(pooled))}  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.forward_all(x)["logits"]  # type: ignore[return-value]
