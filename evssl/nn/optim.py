"""Optimisation helpers: LARS, decay/no-decay parameter groups and the warm-up + cosine LR multiplier.

LARS (You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks") as used by BYOL and BraVe:
for every parameter not excluded,

    g <- g + wd * w                                   (weight decay)
    g <- g * eta * ||w|| / (||g|| + eps)              (trust ratio; 1 when ||w|| = 0 or ||g|| = 0)

then for all parameters heavy-ball momentum ``m <- mu * m + g`` and ``w <- w - lr * (g + mu * m)`` (Nesterov) or
``w <- w - lr * m``. Biases and normalisation parameters are excluded from both weight decay and the trust ratio
(BYOL §C, BraVe's ``optax.lars`` masks): put them in a group with ``lars_exclude=True`` -- :func:`param_groups` does.
The LR is applied outside the momentum buffer (PyTorch convention; optax scales before the trace, which differs only
while the LR changes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["LARS", "param_groups", "warmup_cosine"]

DEFAULT_SKIP_NAMES: tuple[str, ...] = (
    "cls_token",
    "special_tokens",
    "mask_token",
    "pos_embed",
    "relative_position_bias_table",
)


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum (see module docstring for the update).

    Args:
        params: parameters or groups; a group may set ``lars_exclude=True`` (no weight decay, no trust ratio) and any
            of the hyper-parameters below.
        lr: learning rate.
        momentum: momentum ``mu`` (0.9).
        weight_decay: decoupled-into-gradient weight decay (BraVe 1e-2, BYOL 1.5e-6).
        trust_coefficient: ``eta`` (1e-3).
        nesterov: Nesterov momentum (BraVe: True).
        eps: added to ``||g||`` in the trust ratio.
        lars_exclude: default for groups that do not set it.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        nesterov: bool = True,
        eps: float = 0.0,
        lars_exclude: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("lr, momentum and weight_decay must be >= 0, trust_coefficient > 0")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            nesterov=nesterov,
            eps=eps,
            lars_exclude=lars_exclude,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one update; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu = group["momentum"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                if not group["lars_exclude"]:
                    if wd != 0:
                        g = g.add(p, alpha=wd)
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    ratio = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["trust_coefficient"] * w_norm / (g_norm + group["eps"]),
                        torch.ones_like(w_norm),
                    )
                    g = g * ratio
                if mu != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.clone()
                    else:
                        buf.mul_(mu).add_(g)
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf
                p.add_(g, alpha=-group["lr"])
        return loss


def param_groups(
    model: nn.Module,
    weight_decay: float,
    skip_names: Iterable[str] = DEFAULT_SKIP_NAMES,
    lr_scale: float = 1.0,
    name: str = "",
) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into a weight-decay group and a no-weight-decay group.

    No weight decay (and ``lars_exclude=True``) for 1-D parameters -- norm scales/shifts and biases -- and for any
    parameter whose dotted name has a component in ``skip_names`` (tokens, positional embeddings, relative-position
    tables by default) or in ``model.no_weight_decay()`` when the model defines it (timm convention). Frozen
    parameters are left out. Returns up to two groups ``{"name", "params", "weight_decay", "lr_scale",
    "lars_exclude"}``; empty groups are dropped. ``name`` prefixes the group names (e.g. ``"predictor"``).
    """
    skip = set(skip_names)
    nwd = getattr(model, "no_weight_decay", None)
    if callable(nwd):
        skip |= set(nwd())
    decay, no_decay = [], []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or pname in skip or any(part in skip for part in pname.split(".")):
            no_decay.append(p)
        else:
            decay.append(p)
    prefix = f"{name}_" if name else ""
    groups = [
        {
            "name": f"{prefix}decay",
            "params": decay,
            "weight_decay": weight_decay,
            "lr_scale": lr_scale,
            "lars_exclude": False,
        },
        {
            "name": f"{prefix}no_decay",
            "params": no_decay,
            "weight_decay": 0.0,
            "lr_scale": lr_scale,
            "lars_exclude": True,
        },
    ]
    return [g for g in groups if g["params"]]


def warmup_cosine(step: int, total: int, warmup: int, base: float = 1.0, final_ratio: float = 0.0) -> float:
    """LR multiplier (for ``LambdaLR``): linear warm-up ``base * step / warmup`` then cosine decay to
    ``base * final_ratio`` at ``step = total`` (Loshchilov & Hutter, SGDR, ICLR 2017; Goyal et al. 2017 warm-up).

    Steps past ``total`` stay at the final value.
    """
    if warmup > 0 and step < warmup:
        return base * step / warmup
    final = base * final_ratio
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
