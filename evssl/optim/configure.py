"""``configure_optimizers`` in one call: groups (:func:`param_groups`), optimizer and per-step schedule."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from evssl.optim.config import OptimConfig
from evssl.optim.groups import param_groups
from evssl.optim.lars import LARS
from evssl.optim.schedule import WarmupCosineScheduler, schedule_lengths

__all__ = ["build_optimizer", "configure_optimization", "global_batch_size", "scale_gradients_"]


@torch.no_grad()
def scale_gradients_(optimizer: torch.optim.Optimizer) -> None:
    """Multiply, in place, the gradients of every group with ``grad_scale != 1`` (LR rules ``where: gradient``)."""
    for group in optimizer.param_groups:
        s = float(group.get("grad_scale", 1.0))
        if s != 1.0:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, s)


class _GradientRules:
    """Mixin for torch optimizers: run the closure, apply ``grad_scale`` to the gradients, then the update."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale_gradients_(self)  # type: ignore[arg-type]
        super().step()  # type: ignore[misc]
        return loss


class AdamWGradientRules(_GradientRules, torch.optim.AdamW):
    """AdamW whose groups may carry ``grad_scale`` (used only when an LR rule has ``where: gradient``)."""


class SGDGradientRules(_GradientRules, torch.optim.SGD):
    """SGD whose groups may carry ``grad_scale`` (used only when an LR rule has ``where: gradient``)."""


def build_optimizer(groups: list[dict[str, Any]], optim: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW, SGD with momentum, or :class:`LARS` over prepared groups."""
    scaled = any(float(g.get("grad_scale", 1.0)) != 1.0 for g in groups)
    if optim.name == "adamw":
        cls = AdamWGradientRules if scaled else torch.optim.AdamW
        return cls(groups, lr=lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas))
    if optim.name == "sgd":
        cls = SGDGradientRules if scaled else torch.optim.SGD
        return cls(groups, lr=lr, weight_decay=optim.weight_decay, momentum=optim.momentum)
    if optim.name == "lars":
        return LARS(groups, lr=lr, weight_decay=optim.weight_decay, momentum=optim.momentum)
    raise ValueError(f"unknown optimizer {optim.name!r}; expected one of 'adamw', 'sgd', 'lars'")


def global_batch_size(trainer: Trainer) -> int:
    """Per-device batch size x gradient accumulation x world size."""
    bs = None
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None:
        bs = getattr(loader, "batch_size", None)
        if bs is None and getattr(loader, "batch_sampler", None) is not None:
            bs = getattr(loader.batch_sampler, "batch_size", None)
    if bs is None and trainer.datamodule is not None:
        bs = getattr(trainer.datamodule, "batch_size", None)
    if not isinstance(bs, int):
        raise ValueError("optim.lr_batch_scale needs the per-device batch size (train_dataloader.batch_size)")
    return bs * trainer.accumulate_grad_batches * trainer.world_size


def configure_optimization(
    module: LightningModule,
    groups: Sequence[dict[str, Any]],
    optim: OptimConfig,
    exclude: Iterable[nn.Parameter] = (),
) -> dict[str, Any]:
    """Optimizer + per-step warm-up/cosine schedule for ``configure_optimizers`` (methods and tasks).

    With ``optim.lr_batch_scale`` every group's lr (except groups giving an absolute ``"lr"``) is multiplied by
    ``global_batch / 256``. The schedule length is ``trainer.estimated_stepping_batches`` of *this* run (also when
    resuming: see :class:`WarmupCosineScheduler`).
    """
    trainer = module.trainer
    total, warmup = schedule_lengths(trainer, optim.warmup_epochs)
    base_lr = optim.lr
    if optim.lr_batch_scale:
        gb = global_batch_size(trainer)
        base_lr = optim.lr * gb / 256.0
        rank_zero_info(f"evssl: lr = {optim.lr:g} x {gb}/256 = {base_lr:g}")
    if optim.weight_decay_end is not None and optim.weight_decay <= 0:
        raise ValueError("optim.weight_decay_end needs optim.weight_decay > 0 (the schedule scales each group's decay)")
    pgroups = param_groups(module, groups, optim, lr=base_lr, exclude=exclude)
    opt = build_optimizer(pgroups, optim, base_lr)
    sched = WarmupCosineScheduler(
        opt,
        total_steps=total,
        warmup_steps=warmup,
        min_lr_ratio=optim.min_lr_ratio,
        weight_decay=optim.weight_decay,
        weight_decay_end=optim.weight_decay_end,
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
