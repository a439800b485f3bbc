"""Per-step learning-rate / weight-decay schedules in closed form of the optimizer step."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch.optim.lr_scheduler import LRScheduler

from evssl.nn.ema import cosine_schedule

__all__ = ["WarmupCosineScheduler", "schedule_lengths", "warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int, base: float = 1.0, final_ratio: float = 0.0) -> float:
    """Linear warm-up ``base * step / warmup`` then half-cosine to ``base * final_ratio`` at ``step = total``.

    (Goyal et al. 2017 warm-up; Loshchilov & Hutter, SGDR, ICLR 2017.) Steps past ``total`` stay at the final value.
    """
    if warmup > 0 and step < warmup:
        return base * step / warmup
    final = base * final_ratio
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineScheduler(LRScheduler):
    """``lr_g(t) = lr_g * warmup_cosine(t, total, warmup, 1, min_lr_ratio)`` per group ``g``; optionally
    ``wd_g(t) = wd_scale_g * cosine(t; weight_decay -> weight_decay_end)`` (ECDDP, after DINO).

    The state is the step counter: resuming continues the same curve. The schedule's *length* is not restored from
    a checkpoint (:meth:`load_state_dict` keeps ``total_steps`` / ``warmup_steps`` of the new run), so resuming with
    a larger ``trainer.max_steps`` stretches the cosine to the new end instead of running the extra steps at lr 0.
    """

    _LENGTH_KEYS = ("total_steps", "warmup_steps")

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        weight_decay: float | None = None,
        weight_decay_end: float | None = None,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(0, warmup_steps), total_steps))
        self.min_lr_ratio = float(min_lr_ratio)
        self.weight_decay = weight_decay
        self.weight_decay_end = weight_decay_end
        super().__init__(optimizer, last_epoch)
        self._set_weight_decay()

    def factor(self, step: int | None = None) -> float:
        """LR multiplier at ``step`` (default: the current one)."""
        step = self.last_epoch if step is None else step
        return warmup_cosine(step, self.total_steps, self.warmup_steps, 1.0, self.min_lr_ratio)

    def weight_decay_at(self, step: int | None = None) -> float | None:
        """Scheduled weight decay at ``step``, or ``None`` without a weight-decay schedule."""
        if self.weight_decay_end is None or self.weight_decay is None:
            return None
        step = self.last_epoch if step is None else step
        return float(cosine_schedule(step, self.total_steps, self.weight_decay, self.weight_decay_end))

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Closed-form learning rates of the current step."""
        f = self.factor()
        return [g["initial_lr"] * f for g in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        """Advance one optimizer step: update lr (and weight decay when scheduled)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()" on a skipped first step
            super().step(epoch)
        self._set_weight_decay()

    def _set_weight_decay(self) -> None:
        wd = self.weight_decay_at()
        if wd is None:
            return
        for g in self.optimizer.param_groups:
            g["weight_decay"] = wd * float(g.get("wd_scale", 1.0))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step counter, keeping this run's schedule length (see the class docstring)."""
        keep = {k: getattr(self, k) for k in self._LENGTH_KEYS}
        super().load_state_dict(state_dict)
        self.__dict__.update(keep)
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self._set_weight_decay()


def schedule_lengths(trainer: Trainer, warmup_epochs: float) -> tuple[int, int]:
    """``(total_steps, warmup_steps)`` in optimizer steps, from ``trainer.estimated_stepping_batches``.

    Works with ``max_epochs``, ``max_steps`` and ``fast_dev_run`` (total 1). One epoch is
    ``ceil(num_training_batches / accumulate_grad_batches)`` steps.
    """
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError("the schedule needs a finite length: set trainer.max_epochs or trainer.max_steps")
    total = max(1, int(total))
    nb = trainer.num_training_batches
    if warmup_epochs > 0 and not (math.isfinite(nb) and nb > 0) and trainer.training:
        # With ``max_steps`` and ``max_epochs=-1`` Lightning answers ``estimated_stepping_batches`` without loading
        # the train loader, so the epoch length is still unknown here: load it (what Lightning itself does for
        # ``max_epochs``). Without this the warm-up silently stretched over the whole run.
        trainer.fit_loop.setup_data()
        nb = trainer.num_training_batches
    if math.isfinite(nb) and nb > 0:
        per_epoch = math.ceil(nb / trainer.accumulate_grad_batches)
    else:
        per_epoch = total
        if warmup_epochs > 0:
            warnings.warn(
                f"warmup_epochs={warmup_epochs}: the train loader has no length, so one epoch is taken as the "
                f"whole run ({total} steps)",
                stacklevel=2,
            )
    warmup = min(total, round(warmup_epochs * per_epoch))
    return total, warmup
