"""ResNet backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) for event inputs.

ResNet-18 uses :class:`BasicBlock` (two 3x3 convolutions), ResNet-50 uses :class:`Bottleneck` (1x1 -> 3x3 -> 1x1,
4x expansion) with the stride on the 3x3 convolution ("ResNet v1.5", the common reference implementation). The stem
takes any number of input channels (event histograms, voxel grids). ``small_input=True`` replaces the 7x7/2 stem
convolution and max-pool by one 3x3/1 convolution (the CIFAR variant of SimCLR, Chen et al. ICML 2020), which keeps
tiny synthetic inputs (e.g. 32x32) from collapsing to 1x1 before the last stage.

``output_stride`` (DeepLab, Chen et al. ECCV 2018, Sec. 3.1 "atrous convolution"): the stages whose stride would
take the total stride beyond ``output_stride`` keep stride 1 and dilate their 3x3 convolutions instead (dilation
doubling per replaced stride), so e.g. ``output_stride=16`` gives a last stage at stride 16 with dilation 2, as in
the DeepLabV3+ ResNet of ``jfzhang95/pytorch-deeplab-xception`` (strides ``[1, 2, 2, 1]``, dilations ``[1, 1, 1, 2]``)
that the EvDistill code ships. ``multi_grid`` multiplies the dilation of block ``j`` of every dilated stage by
``multi_grid[j % len]`` (DeepLabV3's "Multi-Grid", ``(1, 2, 4)`` in that code, whose last stage always has three
blocks). Both default to off, which leaves the network unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from evssl.utils.hparams import records_init_args

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101"]


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut: ``relu(F(x) + x)`` (He et al. Fig. 2)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 (stride) -> 1x1 (expand x4) conv-BN block with shortcut (He et al. Fig. 5, right)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


@records_init_args
class ResNet(nn.Module):
    """ResNet feature extractor without classifier.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        in_chans: input channels.
        small_input: 3x3/1 stem without max-pool (stage strides 1, 2, 4, 8 instead of 4, 8, 16, 32).
        zero_init_residual: zero the last BN of each block (Goyal et al. 2017), so every block starts as identity.
        width: channels of the first stage (64).
        output_stride: largest total stride (8, 16, ...; ``None`` = no dilation): later stages dilate instead of
            striding (see the module docstring).
        multi_grid: per-block dilation multipliers of the dilated stages (``None`` = all 1).

    Attributes:
        num_features: pooled feature size (512 for ResNet-18, 2048 for ResNet-50).
        feature_channels: channels of the four stages; ``feature_strides``: their strides w.r.t. the input;
        ``feature_dilations``: the dilation of each stage (1 without ``output_stride``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int] | list[int],
        in_chans: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
        width: int = 64,
        output_stride: int | None = None,
        multi_grid: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if output_stride is not None and (output_stride < 1 or output_stride & (output_stride - 1)):
            raise ValueError(f"ResNet output_stride must be a power of two, got {output_stride}")
        if multi_grid is not None and (not multi_grid or min(multi_grid) < 1):
            raise ValueError(f"ResNet multi_grid must be positive integers, got {multi_grid}")
        self.in_chans = in_chans
        self.small_input = small_input
        self.output_stride = output_stride
        self.multi_grid = None if multi_grid is None else tuple(int(m) for m in multi_grid)
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cin = width
        stages = []
        channels = []
        strides = []
        dilations = []
        total = 1 if small_input else 4
        dilation = 1
        for i, n in enumerate(layers):
            planes = width * 2**i
            stride = 2 if i > 0 else 1
            if output_stride is not None and total * stride > output_stride:
                dilation *= stride  # atrous: keep the resolution, widen the receptive field
                stride = 1
            total *= stride
            blocks = []
            for j in range(n):
                d = dilation
                if dilation > 1 and self.multi_grid is not None:
                    d = dilation * self.multi_grid[j % len(self.multi_grid)]
                blocks.append(block(cin, planes, stride=stride if j == 0 else 1, dilation=d))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
            channels.append(cin)
            strides.append(total)
            dilations.append(dilation)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_channels = channels
        self.feature_strides = strides
        self.feature_dilations = dilations
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """``{"features": [c2, c3, c4, c5] (B, C_i, H_i, W_i), "pooled": (B, num_features)}``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            feats.append(x)
        return {"features": feats, "pooled": torch.flatten(self.avgpool(x), 1)}

    def forward(self, x: Tensor) -> Tensor:
        """Global-average-pooled last-stage feature ``(B, num_features)``."""
        return self.forward_features(x)["pooled"]  # type: ignore[return-value]


def resnet18(
    in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False, output_stride: int | None = None
) -> ResNet:
    """ResNet-18 (He et al. 2016, Table 1): BasicBlock x (2, 2, 2, 2); 11.18M parameters without fc (3 channels)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_chans, small_input, zero_init_residual, output_stride=output_stride)


def resnet34(
    in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False, output_stride: int | None = None
) -> ResNet:
    """ResNet-34 (He et al. 2016, Table 1): BasicBlock x (3, 4, 6, 3); 21.28M parameters without fc."""
    return ResNet(BasicBlock, (3, 4, 6, 3), in_chans, small_input, zero_init_residual, output_stride=output_stride)


def resnet50(
    in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False, output_stride: int | None = None
) -> ResNet:
    """ResNet-50 (He et al. 2016, Table 1): Bottleneck x (3, 4, 6, 3); 23.51M parameters without fc (3 channels)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_chans, small_input, zero_init_residual, output_stride=output_stride)


def resnet101(
    in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False, output_stride: int | None = None
) -> ResNet:
    """ResNet-101 (He et al. 2016, Table 1): Bottleneck x (3, 4, 23, 3); 42.50M parameters without fc (3 channels).

    EvDistill's teacher and student (DeepLabV3+, output stride 16) use it in the official code."""
    return ResNet(Bottleneck, (3, 4, 23, 3), in_chans, small_input, zero_init_residual, output_stride=output_stride)
