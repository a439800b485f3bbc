"""ResNet backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) for event inputs.

ResNet-18 uses :class:`BasicBlock` (two 3x3 convolutions), ResNet-50 uses :class:`Bottleneck` (1x1 -> 3x3 -> 1x1,
4x expansion) with the stride on the 3x3 convolution ("ResNet v1.5", the common reference implementation). The stem
takes any number of input channels (event histograms, voxel grids). ``small_input=True`` replaces the 7x7/2 stem
convolution and max-pool by one 3x3/1 convolution (the CIFAR variant of SimCLR, Chen et al. ICML 2020), which keeps
tiny synthetic inputs (e.g. 32x32) from collapsing to 1x1 before the last stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from evssl.utils.hparams import records_init_args

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut: ``relu(F(x) + x)`` (He et al. Fig. 2)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
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

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
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

    Attributes:
        num_features: pooled feature size (512 for ResNet-18, 2048 for ResNet-50).
        feature_channels: channels of the four stages; ``feature_strides``: their strides w.r.t. the input.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int] | list[int],
        in_chans: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.small_input = small_input
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
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride=2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
            channels.append(cin)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_channels = channels
        base = 1 if small_input else 4
        self.feature_strides = [base, base * 2, base * 4, base * 8]
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


def resnet18(in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (He et al. 2016, Table 1): BasicBlock x (2, 2, 2, 2); 11.18M parameters without fc (3 channels)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_chans, small_input, zero_init_residual)


def resnet34(in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (He et al. 2016, Table 1): BasicBlock x (3, 4, 6, 3); 21.28M parameters without fc."""
    return ResNet(BasicBlock, (3, 4, 6, 3), in_chans, small_input, zero_init_residual)


def resnet50(in_chans: int = 3, small_input: bool = False, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (He et al. 2016, Table 1): Bottleneck x (3, 4, 6, 3); 23.51M parameters without fc (3 channels)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_chans, small_input, zero_init_residual)
