r"""Image-to-image generators for cross-modal reconstruction (EvDistill's BMR: events -> image, image -> events).

:class:`UNetGenerator` is a small U-Net (Ronneberger et al., MICCAI 2015): ``depth`` times (3x3 conv-BN-ReLU x 2,
then 2x2 max-pool), a bottleneck, and the mirrored path (bilinear x2 upsample, concat with the skip, 3x3 conv-BN-ReLU
x 2), then a 1x1 output conv and an output map that fixes the value range of the crafted modality:

* ``"sigmoid"`` -> :math:`(0, 1)` (E2I: frames are read as ``uint8 / 255``, the official EvDistill loader's
  ``ToTensor`` without mean/std);
* ``"tanh"`` -> :math:`(-s, s)` with ``scale`` :math:`s` (signed event representations: voxel grids, event images);
* ``"softplus"`` / ``"relu"`` -> :math:`[0, \infty)` (count histograms);
* ``"none"`` -> unbounded.

Inputs whose size is not a multiple of ``2**depth`` are padded (replicate) and the output cropped back.

:func:`naive_e2i` / :func:`naive_i2e` are the fixed maps that replace both generators in EvDistill's "BMR off"
ablation; :func:`frame01` reads frames as the generators and the teacher see them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OutputActivation", "UNetGenerator", "apply_output_activation", "frame01", "naive_e2i", "naive_i2e"]

OutputActivation = Literal["sigmoid", "tanh", "softplus", "relu", "none"]


def apply_output_activation(x: Tensor, activation: OutputActivation, scale: float = 1.0) -> Tensor:
    """Map raw generator outputs to the crafted modality's value range (see the module docstring)."""
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "tanh":
        return scale * torch.tanh(x)
    if activation == "softplus":
        return F.softplus(x)
    if activation == "relu":
        return F.relu(x)
    if activation == "none":
        return x
    raise ValueError(f"unknown output activation {activation!r}; expected sigmoid, tanh, softplus, relu or none")


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNetGenerator(nn.Module):
    """Small U-Net ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` with a range-fixing output activation.

    Args:
        in_channels: channels of the source modality (event representation or 3 for frames).
        out_channels: channels of the target modality.
        width: channels of the first level (doubled per level).
        depth: number of down/up-sampling levels.
        activation: output activation (module docstring). scale: amplitude of ``"tanh"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 16,
        depth: int = 2,
        activation: OutputActivation = "sigmoid",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if depth < 0 or width < 1:
            raise ValueError(f"UNetGenerator needs depth >= 0 and width >= 1, got depth={depth}, width={width}")
        apply_output_activation(torch.zeros(1), activation)  # validate the name early
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.depth = int(depth)
        self.activation: OutputActivation = activation
        self.scale = float(scale)
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(_double_conv(cin, c))
            cin = c
        self.bottleneck = _double_conv(cin, chans[-1])
        self.up = nn.ModuleList(_double_conv(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        out = apply_output_activation(self.head(x), self.activation, self.scale)
        return out[..., :h, :w]


def frame01(frame: Tensor) -> Tensor:
    """uint8 frames (B, 3, H, W) -> float in [0, 1] (the official EvDistill loader: ``ToTensor``, no mean/std)."""
    return frame.float() / 255.0 if not frame.is_floating_point() else frame.float()


def naive_e2i(x_e: Tensor) -> Tensor:
    r"""Fixed "BMR off" E2I: :math:`\sum_c |x_{e,c}|` scaled to [0, 1] per sample (by its maximum), as 3 channels."""
    m = x_e.abs().sum(1, keepdim=True)
    m = m / m.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
    return m.expand(-1, 3, -1, -1)


def naive_i2e(x_a: Tensor, channels: int) -> Tensor:
    r"""Fixed "BMR off" I2E: the grey frame :math:`\bar x_a` (mean over RGB) repeated over the event channels."""
    return x_a.mean(1, keepdim=True).expand(-1, channels, -1, -1)
