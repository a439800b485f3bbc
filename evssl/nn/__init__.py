"""Reusable network parts: backbones, heads, EMA teachers, the online probe, ConvLSTM (optimisers: evssl.optim)."""

from .convlstm import ConvLSTM, ConvLSTMCell
from .ema import cosine_schedule, ema_update_, make_target
from .heads import MLP, DINOHead, byol_predictor, byol_projector, mocov3_predictor, mocov3_projector
from .probe import OnlineProbe, ProbeConfig

__all__ = [
    "MLP",
    "ConvLSTM",
    "ConvLSTMCell",
    "DINOHead",
    "OnlineProbe",
    "ProbeConfig",
    "byol_predictor",
    "byol_projector",
    "cosine_schedule",
    "ema_update_",
    "make_target",
    "mocov3_predictor",
    "mocov3_projector",
]
