"""Backbones for event inputs: ViT (token masking), ResNet, Swin (+ ECDDP neck) and dense decoders.

Every backbone takes ``in_chans`` (any), exposes ``num_features`` (pooled size), ``forward(x) -> (B, num_features)``
and ``forward_features(x, ...) -> dict`` with ``"pooled"`` plus ``"tokens"``/``"cls"`` (ViT) or ``"features"``
(ResNet/Swin, list of NCHW maps fine -> coarse).
"""

from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101
from .swin import SwinNeck, SwinTransformer, swin_tiny
from .unet import UNetDecoder, UPerHead
from .vit import VisionTransformer, param_groups_lrd, sincos_pos_embed_2d, vit_base, vit_small, vit_tiny

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "SwinNeck",
    "SwinTransformer",
    "UNetDecoder",
    "UPerHead",
    "VisionTransformer",
    "param_groups_lrd",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "sincos_pos_embed_2d",
    "swin_tiny",
    "vit_base",
    "vit_small",
    "vit_tiny",
]
