r"""Feature pyramids for plain ViTs, so a ViT can feed the multi-scale dense decoders (UPerNet, U-Net).

A plain ViT has a single stride-``p`` map (``p`` = patch size, 16). Two ways to turn it into the stride 4/8/16/32
pyramid that :class:`~evssl.tasks.dense.DenseTask` decoders take (both used by ECDDP's re-benchmarked ViT baselines,
ECDDP supp. §2; ECDP's authors point to the BEiT segmentation code for their ViT-S segmentation/flow transfer):

* ``source="last"`` — **simple feature pyramid** (ViTDet; Li, Mao, Girshick, He, "Exploring Plain Vision Transformer
  Backbones for Object Detection", ECCV 2022, §3 and Fig. 1c): every level is built from the *last* map alone:
  stride ``p/4`` by two 2×2 stride-2 transposed convolutions (norm + GELU between them, channels halved by each),
  ``p/2`` by one, ``p`` identity, ``2p`` by 2×2 max-pooling.
* ``source="blocks"`` — the BEiT/MAE segmentation pyramid (Bao et al., ICLR 2022, App.; MAE §A.4): the same four
  operations, level ``i`` applied to the output of block ``block_indices[i]`` (default the 4th, 6th, 8th and last of
  12, i.e. ``(3, 5, 7, 11)``).

With ``out_convs`` (ViTDet) each level is followed by a 1×1 convolution to ``channels`` and a 3×3 convolution, each
with a norm and without bias (as ViTDet's ``Conv2d(..., bias=not norm, norm=LN)``), so every level has ``channels``
channels; without it (BEiT) the levels keep ``D/4, D/2, D, D``. ``norm="ln"`` is a LayerNorm over channels at every
position (ViTDet's ``LayerNorm`` for conv maps), ``"bn"`` BatchNorm (BEiT), ``"gn"`` GroupNorm(32), ``"none"``.

Choices where the references differ or are silent (documented, switchable): the last level's input is the ViT's
*normalised* patch-token map (ECDP/evssl ViTs end with a LayerNorm that is part of the exported backbone; ViTDet's
ViT has none); intermediate block maps (``"blocks"``) are raw block outputs, as BEiT. Levels are placed by stride
relative to the patch size, so other patch sizes work too (``p = 8``: stride 4 by one transposed convolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

__all__ = ["LayerNorm2d", "SimpleFeaturePyramid", "ViTPyramidConfig", "vit_feature_pyramid"]

PyramidNorm = Literal["ln", "bn", "gn", "none"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map at every position (ViTDet / ConvNeXt)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _norm(kind: PyramidNorm, channels: int) -> nn.Module:
    if kind == "ln":
        return LayerNorm2d(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"pyramid norm must be 'ln', 'bn', 'gn' or 'none', got {kind!r}")


def _resample(dim: int, ratio: float, norm: PyramidNorm) -> tuple[nn.Module, int]:
    """Resampling of a stride-``p`` map to stride ``p / ratio`` (``ratio`` a power of 2, up or down) and its output
    channels: ``log2(ratio)`` transposed convolutions halving the channels (norm + GELU between them), identity, or
    max-pooling by ``1 / ratio``."""
    if ratio >= 1:
        k = round(math.log2(ratio))
        layers: list[nn.Module] = []
        c = dim
        for i in range(k):
            if i:
                layers += [_norm(norm, c), nn.GELU()]
            layers.append(nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2))
            c //= 2
        return (nn.Sequential(*layers) if layers else nn.Identity()), c
    f = round(1 / ratio)
    return nn.MaxPool2d(kernel_size=f, stride=f), dim


@dataclass
class ViTPyramidConfig:
    """How :class:`~evssl.tasks.dense.DenseTask` turns a ViT into a feature pyramid (see the module docstring).

    Attributes:
        source: ``"last"`` (ViTDet simple feature pyramid) or ``"blocks"`` (BEiT/MAE: one block per level).
        channels: output channels of every level when ``out_convs`` (256 in ViTDet).
        strides: the pyramid's strides in pixels (4, 8, 16, 32).
        block_indices: blocks read by ``source="blocks"`` (0-based); ``None`` = evenly spaced ending at the last,
            ``(3, 5, 7, 11)`` for 12 blocks.
        out_convs: the 1×1 + 3×3 convolutions with norm after each level (ViTDet); off = BEiT.
        norm: ``"ln"`` (ViTDet), ``"bn"`` (BEiT), ``"gn"`` or ``"none"``.
    """

    source: Literal["last", "blocks"] = "last"
    channels: int = 256
    strides: tuple[int, ...] = (4, 8, 16, 32)
    block_indices: tuple[int, ...] | None = None
    out_convs: bool = True
    norm: PyramidNorm = "ln"


class SimpleFeaturePyramid(nn.Module):
    """Stride ``strides`` pyramid from a plain ViT's stride-``patch_size`` map(s) (ViTDet / BEiT, module docstring).

    ``forward(maps)`` takes one ``(B, D, gh, gw)`` map (``source="last"``) or one per level (``"blocks"``) and
    returns the levels fine → coarse. ``forward_vit(out)`` reads them from :meth:`VisionTransformer.forward_features`
    output (``"map"`` / ``"block_maps"``; call it with ``out_blocks=self.block_indices``); with ``vit_depth`` given,
    the level reading the last block takes the normalised ``"map"`` instead of the raw block output.

    Attributes:
        feature_channels, feature_strides: as the Swin/ResNet backbones, for the dense decoders.
        block_indices: the blocks to request from the ViT (``()`` for ``source="last"``).
    """

    def __init__(
        self,
        dim: int,
        patch_size: int = 16,
        channels: int = 256,
        strides: tuple[int, ...] | list[int] = (4, 8, 16, 32),
        source: Literal["last", "blocks"] = "last",
        block_indices: tuple[int, ...] | list[int] = (),
        out_convs: bool = True,
        norm: PyramidNorm = "ln",
        vit_depth: int | None = None,
    ) -> None:
        super().__init__()
        if source not in ("last", "blocks"):
            raise ValueError(f"SimpleFeaturePyramid: source must be 'last' or 'blocks', got {source!r}")
        if source == "blocks" and len(block_indices) != len(strides):
            raise ValueError(
                f"SimpleFeaturePyramid: source 'blocks' needs one block per level, got {list(block_indices)} for "
                f"strides {list(strides)}"
            )
        self.source = source
        self.vit_depth = vit_depth
        self.block_indices: tuple[int, ...] = tuple(int(i) for i in block_indices) if source == "blocks" else ()
        self.feature_strides: list[int] = [int(s) for s in strides]
        self.feature_channels: list[int] = []
        self.levels = nn.ModuleList()
        for s in self.feature_strides:
            ratio = patch_size / s
            if ratio <= 0 or abs(math.log2(ratio) - round(math.log2(ratio))) > 1e-9:
                raise ValueError(f"SimpleFeaturePyramid: stride {s} is not a power-of-2 multiple of patch {patch_size}")
            resample, c = _resample(dim, ratio, norm)
            layers: list[nn.Module] = [resample]
            if out_convs:
                bias = norm == "none"
                layers += [
                    nn.Conv2d(c, channels, 1, bias=bias),
                    _norm(norm, channels),
                    nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
                    _norm(norm, channels),
                ]
                c = channels
            self.levels.append(nn.Sequential(*layers))
            self.feature_channels.append(c)

    def forward(self, maps: Tensor | list[Tensor]) -> list[Tensor]:
        if isinstance(maps, Tensor):
            maps = [maps] * len(self.levels)
        if len(maps) != len(self.levels):
            raise ValueError(f"SimpleFeaturePyramid: {len(maps)} maps for {len(self.levels)} levels")
        return [level(m) for level, m in zip(self.levels, maps)]

    def forward_vit(self, out: dict[str, Any]) -> list[Tensor]:
        """Levels from a ViT's ``forward_features(x, out_blocks=self.block_indices)`` dict."""
        if self.source == "last":
            return self(out["map"])
        # the last block is read after the ViT's final norm (which is then trained, as with source="last")
        last = None if self.vit_depth is None else self.vit_depth - 1
        maps = [out["map"] if i == last else m for i, m in zip(self.block_indices, out["block_maps"])]
        return self(maps)


def _default_blocks(depth: int, levels: int) -> tuple[int, ...]:
    """Evenly spaced blocks ending at the last: ``(3, 5, 7, 11)`` for 12 blocks and 4 levels (BEiT/MAE)."""
    if depth == 12 and levels == 4:
        return (3, 5, 7, 11)
    step = depth / levels
    return tuple(max(0, min(depth - 1, round(step * (i + 1)) - 1)) for i in range(levels))


def vit_feature_pyramid(vit: nn.Module, cfg: ViTPyramidConfig | None = None) -> SimpleFeaturePyramid:
    """A :class:`SimpleFeaturePyramid` fitted to ``vit`` (a :class:`~evssl.nn.backbones.vit.VisionTransformer`)."""
    cfg = cfg or ViTPyramidConfig()
    for attr in ("embed_dim", "patch_size", "depth"):
        if not isinstance(getattr(vit, attr, None), int):
            raise ValueError(f"vit_feature_pyramid: backbone {type(vit).__name__} has no int `{attr}` (not a ViT)")
    blocks: tuple[int, ...] = ()
    if cfg.source == "blocks":
        blocks = (
            tuple(cfg.block_indices) if cfg.block_indices is not None else _default_blocks(vit.depth, len(cfg.strides))
        )
    return SimpleFeaturePyramid(
        vit.embed_dim,
        vit.patch_size,
        cfg.channels,
        tuple(cfg.strides),
        cfg.source,
        blocks,
        cfg.out_convs,
        cfg.norm,
        vit_depth=vit.depth,
    )
