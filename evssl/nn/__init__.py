"""Reusable network parts: backbones, heads, EMA teachers, optimisers, ConvLSTM."""

from .convlstm import ConvLSTM, ConvLSTMCell
from .ema import cosine_schedule, ema_update_, make_target
from .heads import MLP, DINOHead, byol_predictor, byol_projector, mocov3_predictor, mocov3_projector
from .optim import LARS, param_groups, warmup_cosine

__all__ = [
    "LARS",
    "MLP",
    "ConvLSTM",
    "ConvLSTMCell",
    "DINOHead",
    "byol_predictor",
    "byol_projector",
    "cosine_schedule",
    "ema_update_",
    "make_target",
    "mocov3_predictor",
    "mocov3_projector",
    "param_groups",
    "warmup_cosine",
]
