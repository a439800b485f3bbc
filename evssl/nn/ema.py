"""Exponential-moving-average (momentum) teachers.

BYOL (Grill et al., NeurIPS 2020, Eq. 1): ``xi <- tau * xi + (1 - tau) * theta`` after every optimizer step, with
``tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2`` rising from ``tau_base`` to 1 (§3.2). The same update and
schedule drive MoCo v3 / ECDP (0.99 -> 1) and DINO / ECDDP (0.992 -> 1) teachers.
"""

from __future__ import annotations

import copy
import math
from typing import TypeVar

import torch
from torch import nn

__all__ = ["cosine_schedule", "ema_update_", "make_target"]

M = TypeVar("M", bound=nn.Module)


@torch.no_grad()
def ema_update_(online: nn.Module, target: nn.Module, momentum: float, copy_buffers: bool = True) -> None:
    """In-place EMA ``target <- momentum * target + (1 - momentum) * online`` over all parameters.

    Uses the fused multi-tensor kernels ``torch._foreach_mul_`` / ``torch._foreach_add_``. Floating-point buffers
    (BatchNorm running statistics) and integer buffers are copied from ``online`` when ``copy_buffers``. Both modules
    must have the same structure (``target`` is normally :func:`make_target` of ``online``).
    """
    tp = list(target.parameters())
    op = list(online.parameters())
    if len(tp) != len(op):
        raise ValueError(f"online has {len(op)} parameters, target {len(tp)}: not the same architecture")
    if tp:
        src = [p.detach() for p in op]
        torch._foreach_mul_(tp, momentum)
        torch._foreach_add_(tp, src, alpha=1.0 - momentum)
    if copy_buffers:
        tb = list(target.buffers())
        ob = list(online.buffers())
        if len(tb) != len(ob):
            raise ValueError(f"online has {len(ob)} buffers, target {len(tb)}: not the same architecture")
        for t, o in zip(tb, ob):
            t.copy_(o)


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """BYOL's cosine ramp from ``start`` (step 0) to ``end`` (step ``total_steps``).

    ``end - (end - start) * (cos(pi * k / K) + 1) / 2`` with ``k = clamp(step, 0, K)``. ``total_steps <= 0`` returns
    ``end``.
    """
    if total_steps <= 0:
        return float(end)
    k = min(max(step, 0), total_steps)
    return float(end - (end - start) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0)


def make_target(online: M, drop_path: bool = False) -> M:
    """Deep copy of ``online`` that receives no gradients (``requires_grad=False`` on every parameter).

    Unless ``drop_path=True`` the copy's stochastic depth is switched off (every ``DropPath`` gets ``p = 0``):
    DINO/iBOT/ECDDP teachers run without drop-path.
    """
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    if not drop_path:
        from .backbones.vit import DropPath

        for m in target.modules():
            if isinstance(m, DropPath):
                m.p = 0.0
    return target
