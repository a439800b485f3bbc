"""LARS (You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks"), as BYOL and BraVe use it.

For each parameter ``w`` with gradient ``g`` in a group with ``grad_scale = s``, ``weight_decay = wd``,
``lars_adapt`` and momentum ``mu``:

    g <- s * g                                          (LR rules with ``where: gradient``, BraVe's regex scale)
    g <- g + wd * w                                     (weight decay, optax ``add_decayed_weights``)
    g <- g * eta * ||w|| / (||g|| + eps)                (trust ratio, only when ``lars_adapt``; 1 if a norm is 0)
    m <- mu * m + g;  w <- w - lr * (g + mu * m)        (Nesterov; ``w <- w - lr * m`` without)

which is optax's ``lars`` chain (``add_decayed_weights -> masked(scale_by_trust_ratio) -> scale_by_learning_rate
-> trace(nesterov)``) preceded by BraVe's ``_scale_by_module_name``, except that the learning rate is applied
outside the momentum trace (PyTorch convention; optax scales before ``trace``; the two differ only while the lr
changes, i.e. during warm-up and the cosine). Which parameters get weight decay and the trust ratio is decided by
:func:`evssl.optim.param_groups` (``OptimConfig.no_decay`` and ``lars_masks``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["LARS"]


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling with (Nesterov) momentum; see the module docstring for the update.

    Args:
        params: parameters or groups; a group may set ``lars_adapt`` (trust ratio on/off), ``grad_scale`` and any of
            the hyper-parameters below.
        lr: learning rate. momentum: ``mu`` (0.9). weight_decay: added to the gradient (BraVe 1e-2).
        trust_coefficient: ``eta`` (1e-3). nesterov: Nesterov momentum (BraVe: True). eps: added to ``||g||``.
        lars_adapt: default of groups that do not set it. grad_scale: default gradient scale (1).
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
        lars_adapt: bool = True,
        grad_scale: float = 1.0,
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
            lars_adapt=lars_adapt,
            grad_scale=grad_scale,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu, wd, s = group["momentum"], group["weight_decay"], float(group.get("grad_scale", 1.0))
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                if s != 1.0:
                    g = g * s
                if wd != 0:
                    g = g.add(p, alpha=wd)
                if group["lars_adapt"]:
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
