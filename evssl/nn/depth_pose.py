"""Depth and pose networks with ConvLSTM memory for self-supervised visual odometry (Li et al., CVPR 2020).

* :class:`RecurrentEncoder` wraps an :class:`evssl.nn.backbones.resnet.ResNet` *from outside* (its stem and four
  stages are called one by one; the ResNet itself is not modified) and inserts, after chosen stages,
  a :class:`~evssl.nn.convlstm.ConvLSTMCell` (spatio-temporal memory, the paper's selling point 2) and/or a
  :class:`~evssl.nn.feature_alignment.FeatureAlignment` (selling point 3). The paper places ConvLSTMs "in the
  CNNs"; the stages and the way the memory enters the features are not verifiable here ([R]), so both are options:
  ``lstm_mode="residual"`` gives ``F + h_t`` (the encoder starts as the plain ResNet path, our default, stable with
  little data), ``"replace"`` gives ``h_t`` (DeepVO style).
* :class:`DepthNet`: encoder + U-Net decoder of Monodepth2 (Godard et al., ICCV 2019): at each level a 3x3 conv (ELU),
  upsampling to the next skip's size, concatenation with the skip and a 3x3 conv (ELU); sigmoid inverse-depth heads at
  the four finest levels (``disp`` in [0, 1], converted by :func:`evssl.losses.photometric.disp_to_depth`).
* :class:`PoseNet`: encoder on the channel-concatenation ``[x_t, x_s]`` + Monodepth2's pose decoder (1x1 squeeze,
  two 3x3 convs, 1x1 to 6, spatial mean, x 0.01) -> ``T_t2s`` as axis-angle + translation. Predicting ``T_t2s``
  directly from ``(target, source)`` order (instead of Monodepth2's temporal order plus inversion) is our choice.
* :class:`DepthPoseNet`: both, run on one window ``(x_{t-1}, x_t, x_{t+1})`` (any odd number of inputs; the centre
  is the target). Recurrent state (one dict per encoder) goes in and comes out, so a sequence can be processed window
  by window and adapted online; ``state=None`` starts from zeros (sequence start), :func:`mask_state` zeroes the
  state of the samples whose sequence starts at this window.
* :func:`depth_pose_net` builds both from a ResNet backbone (the DepthNet encoder) and a :class:`NetworkConfig`; the
  pose encoder is a fresh ResNet of the same kind with twice the input channels (:func:`resnet_like`).

Inputs are frames ``(B, 3, H, W)`` in [0, 1] or event representations (voxel grids); the photometric loss always uses
the frames (hybrid DAVIS/MVSEC setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evssl.losses.photometric import disp_to_depth, pose_vec_to_mat
from evssl.nn.backbones.resnet import ResNet
from evssl.nn.convlstm import ConvLSTMCell, LSTMState
from evssl.nn.feature_alignment import FeatureAlignment

__all__ = [
    "DepthNet",
    "DepthPoseNet",
    "EncoderState",
    "NetworkConfig",
    "PoseNet",
    "RecurrentEncoder",
    "depth_pose_net",
    "feature_alignments",
    "mask_state",
    "resnet_like",
]

EncoderState = dict[str, LSTMState]


def mask_state(state: EncoderState | None, keep: Tensor) -> EncoderState | None:
    """Zero the recurrent state of samples with ``keep[b] == False`` (their sequence starts now)."""
    if state is None:
        return None
    out: EncoderState = {}
    for k, (h, c) in state.items():
        m = keep.to(h.dtype).view(-1, 1, 1, 1)
        if m.shape[0] != h.shape[0]:  # pose states stack the sources along the batch: repeat the mask
            m = m.repeat(h.shape[0] // m.shape[0], 1, 1, 1)
        out[k] = (h * m, c * m)
    return out


class RecurrentEncoder(nn.Module):
    """A ResNet's stem and stages, with optional ConvLSTM cells and feature alignment after chosen stages.

    Args:
        resnet: the backbone (its ``fc``-free stages ``layer1..layer4`` and stem are used; it is not modified).
        lstm_stages: stage numbers (1-4) followed by a ConvLSTM cell (hidden = stage channels).
        lstm_mode: ``"residual"`` (``F + h``) or ``"replace"`` (``h``).
        lstm_kernel: ConvLSTM kernel size.
        align_stages: stage numbers (0 = stem, 1-4) followed by a :class:`FeatureAlignment`.
        align_momentum, align_form: see :class:`FeatureAlignment`.

    ``forward(x, state) -> (features [stem, c2, c3, c4, c5], new_state)``.
    """

    def __init__(
        self,
        resnet: ResNet,
        lstm_stages: Sequence[int] = (4,),
        lstm_mode: Literal["residual", "replace"] = "residual",
        lstm_kernel: int = 3,
        align_stages: Sequence[int] = (),
        align_momentum: float = 0.1,
        align_form: Literal["adain", "normalize"] = "adain",
    ) -> None:
        super().__init__()
        if not isinstance(resnet, ResNet):
            raise TypeError(f"RecurrentEncoder wraps an evssl ResNet, got {type(resnet).__name__}")
        if lstm_mode not in ("residual", "replace"):
            raise ValueError(f"lstm_mode must be 'residual' or 'replace', got {lstm_mode!r}")
        bad = [s for s in lstm_stages if s not in (1, 2, 3, 4)] + [s for s in align_stages if s not in range(5)]
        if bad:
            raise ValueError(f"stage numbers must be 1-4 for lstm_stages and 0-4 for align_stages, got {bad}")
        self.resnet = resnet
        self.lstm_mode = lstm_mode
        stem_ch = resnet.conv1.out_channels
        self.channels = [stem_ch, *resnet.feature_channels]
        self.strides = [resnet.feature_strides[0] // (1 if resnet.small_input else 2), *resnet.feature_strides]
        self.lstm = nn.ModuleDict(
            {str(s): ConvLSTMCell(self.channels[s], self.channels[s], lstm_kernel) for s in sorted(set(lstm_stages))}
        )
        self.align = nn.ModuleDict(
            {
                str(s): FeatureAlignment(self.channels[s], align_momentum, form=align_form)
                for s in sorted(set(align_stages))
            }
        )

    def forward(self, x: Tensor, state: EncoderState | None = None) -> tuple[list[Tensor], EncoderState]:
        r = self.resnet
        f = r.relu(r.bn1(r.conv1(x)))
        feats = [self._post(0, f, state, None)]
        new_state: EncoderState = {}
        f = r.maxpool(f)
        for s, stage in enumerate((r.layer1, r.layer2, r.layer3, r.layer4), start=1):
            f = stage(f)
            f = self._post(s, f, state, new_state)
            feats.append(f)
        return feats, new_state

    def _post(self, s: int, f: Tensor, state: EncoderState | None, new_state: EncoderState | None) -> Tensor:
        key = str(s)
        if key in self.align:
            f = self.align[key](f)
        if key in self.lstm and new_state is not None:
            prev = None if state is None else state.get(key)
            h, st = self.lstm[key](f, prev)
            new_state[key] = st
            f = f + h if self.lstm_mode == "residual" else h
        return f


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k), nn.ELU(inplace=True))


class DepthNet(nn.Module):
    """Single-frame inverse-depth U-Net (Monodepth2 decoder) on a :class:`RecurrentEncoder`.

    Args:
        encoder: the recurrent ResNet encoder.
        decoder_channels: channels per decoder level, finest first (Monodepth2: 16, 32, 64, 128, 256).
        num_scales: inverse-depth outputs at the finest ``num_scales`` levels (4).
        min_depth, max_depth: range of :func:`disp_to_depth`.

    ``forward(x, state) -> ({"disp": [finest..coarsest] (B, 1, h_s, w_s) in [0, 1]}, new_state)``.
    """

    def __init__(
        self,
        encoder: RecurrentEncoder,
        decoder_channels: Sequence[int] = (16, 32, 64, 128, 256),
        num_scales: int = 4,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != 5:
            raise ValueError(f"decoder_channels needs 5 entries (one per level), got {list(decoder_channels)}")
        if not 1 <= num_scales <= 4:
            raise ValueError(f"num_scales must be in 1..4, got {num_scales}")
        self.encoder = encoder
        self.num_scales = int(num_scales)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        enc = encoder.channels
        dec = list(decoder_channels)
        self.upconv0 = nn.ModuleList()
        self.upconv1 = nn.ModuleList()
        cin = enc[4]
        for i in range(4, -1, -1):
            self.upconv0.append(_conv(cin, dec[i]))
            skip = enc[i - 1] if i > 0 else 0
            self.upconv1.append(_conv(dec[i] + skip, dec[i]))
            cin = dec[i]
        self.heads = nn.ModuleDict(
            {str(s): nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dec[s], 1, 3)) for s in range(self.num_scales)}
        )

    def forward(self, x: Tensor, state: EncoderState | None = None) -> tuple[dict[str, Any], EncoderState]:
        feats, new_state = self.encoder(x, state)
        h = feats[4]
        disps: dict[int, Tensor] = {}
        for j, i in enumerate(range(4, -1, -1)):
            h = self.upconv0[j](h)
            size = feats[i - 1].shape[-2:] if i > 0 else x.shape[-2:]
            if tuple(size) != tuple(h.shape[-2:]):
                h = F.interpolate(h, size=tuple(size), mode="nearest")
            if i > 0:
                h = torch.cat([h, feats[i - 1]], 1)
            h = self.upconv1[j](h)
            if str(i) in self.heads:
                disps[i] = torch.sigmoid(self.heads[str(i)](h))
        return {"disp": [disps[s] for s in range(self.num_scales)], "features": feats}, new_state

    def depth(self, disp: Tensor) -> Tensor:
        """Metric-range depth of a sigmoid output."""
        return disp_to_depth(disp, self.min_depth, self.max_depth)[1]


class PoseNet(nn.Module):
    """Relative pose ``T_t2s`` from the pair ``[x_t, x_s]`` (channel concatenation) on a :class:`RecurrentEncoder`.

    The encoder's ResNet must take ``2 * C`` input channels. Monodepth2's pose decoder; the 0.01 output scale keeps
    the initial motion near the identity (Zhou et al. 2017, Monodepth2).

    ``forward(x_t, x_s, state) -> ((B, 6) pose vector, (B, 4, 4) T_t2s, new_state)``.
    """

    def __init__(self, encoder: RecurrentEncoder, hidden: int = 256, scale: float = 0.01) -> None:
        super().__init__()
        self.encoder = encoder
        self.scale = float(scale)
        c5 = encoder.channels[4]
        self.decoder = nn.Sequential(
            nn.Conv2d(c5, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 6, 1),
        )

    def forward(
        self, x_t: Tensor, x_s: Tensor, state: EncoderState | None = None
    ) -> tuple[Tensor, Tensor, EncoderState]:
        feats, new_state = self.encoder(torch.cat([x_t, x_s], 1), state)
        vec = self.decoder(feats[4]).mean(dim=(2, 3)) * self.scale
        return vec, pose_vec_to_mat(vec), new_state


class DepthPoseNet(nn.Module):
    """DepthNet + PoseNet on one window of ``2n + 1`` inputs (centre = target); states carried by the caller.

    ``forward(inputs, state=None) -> out`` with ``inputs`` a list of ``(B, C, H, W)``, ``state`` ``{"depth": ...,
    "pose": ...}`` (or None), and ``out = {"disp": [per scale], "T_t2s": [per source (B, 4, 4)], "pose_vec": [...],
    "state": new state}``. The sources are the other inputs in window order; their pose passes share one batched
    PoseNet call (the pose state has batch ``num_sources * B``).
    """

    def __init__(self, depth: DepthNet, pose: PoseNet) -> None:
        super().__init__()
        self.depth_net = depth
        self.pose_net = pose

    def forward(self, inputs: Sequence[Tensor], state: dict[str, EncoderState] | None = None) -> dict[str, Any]:
        n = len(inputs)
        if n < 2 or n % 2 == 0:
            raise ValueError(f"a window needs an odd number (>= 3) of inputs, got {n}")
        c = n // 2
        state = state or {}
        d_out, d_state = self.depth_net(inputs[c], state.get("depth"))
        srcs = [inputs[j] for j in range(n) if j != c]
        b = inputs[c].shape[0]
        x_t = inputs[c].repeat(len(srcs), 1, 1, 1)
        vec, mat, p_state = self.pose_net(x_t, torch.cat(srcs, 0), state.get("pose"))
        return {
            "disp": d_out["disp"],
            "features": d_out["features"],
            "pose_vec": list(vec.split(b, 0)),
            "T_t2s": list(mat.split(b, 0)),
            "state": {"depth": d_state, "pose": p_state},
        }


def feature_alignments(module: nn.Module) -> list[FeatureAlignment]:
    """Every :class:`FeatureAlignment` inside ``module``."""
    return [m for m in module.modules() if isinstance(m, FeatureAlignment)]


@dataclass
class NetworkConfig:
    """Depth/pose network options (ConvLSTM placement and feature alignment are [R]: see module docstring).

    ``lstm_stages`` / ``align_stages``: encoder stages (1-4; 0 = stem for alignment) followed by a ConvLSTM /
    a feature alignment, in both the depth and the pose encoder. ``pose_width``: first-stage width of the pose
    ResNet (None = the depth backbone's).
    """

    lstm_stages: tuple[int, ...] = (4,)
    lstm_mode: Literal["residual", "replace"] = "residual"
    align_stages: tuple[int, ...] = (1, 2, 3, 4)
    align_momentum: float = 0.1
    align_form: Literal["adain", "normalize"] = "adain"
    decoder_channels: tuple[int, int, int, int, int] = (16, 32, 64, 128, 256)
    num_scales: int = 4
    pose_hidden: int = 256
    pose_width: int | None = None
    min_depth: float = 0.1
    max_depth: float = 100.0


def resnet_like(src: ResNet, in_chans: int, width: int | None = None) -> ResNet:
    """A fresh ResNet with ``src``'s block, depth and stem but ``in_chans`` inputs and first-stage ``width``
    (None = ``src``'s)."""
    block = type(src.layer1[0])
    layers = [len(s) for s in (src.layer1, src.layer2, src.layer3, src.layer4)]
    return ResNet(block, layers, in_chans, small_input=src.small_input, width=width or src.conv1.out_channels)


def depth_pose_net(backbone: ResNet, cfg: NetworkConfig) -> DepthPoseNet:
    """DepthNet on ``backbone`` + PoseNet on ``resnet_like(backbone, 2 * in_chans, cfg.pose_width)``, both encoders
    with ``cfg``'s ConvLSTM and alignment stages (the depth network is built first)."""
    enc_kw: dict[str, Any] = dict(
        lstm_stages=cfg.lstm_stages,
        lstm_mode=cfg.lstm_mode,
        align_stages=cfg.align_stages,
        align_momentum=cfg.align_momentum,
        align_form=cfg.align_form,
    )
    depth = DepthNet(
        RecurrentEncoder(backbone, **enc_kw), cfg.decoder_channels, cfg.num_scales, cfg.min_depth, cfg.max_depth
    )
    pose_resnet = resnet_like(backbone, 2 * backbone.in_chans, cfg.pose_width)
    return DepthPoseNet(depth, PoseNet(RecurrentEncoder(pose_resnet, **enc_kw), hidden=cfg.pose_hidden))
