"""Frozen submodules that stay in eval mode (a linear probe's backbone, a frozen dense backbone, an EMA or distillation
teacher)."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from torch import nn

__all__ = ["FrozenInEval"]


class FrozenInEval(LightningModule):
    """A LightningModule whose modules :meth:`frozen_modules` lists stay in eval mode whatever ``train()`` asks.

    Lightning warns "Found N module(s) in eval mode at the start of training" when any module is in eval mode as
    the fit loop starts. Its check runs after ``on_fit_start`` and before ``on_train_start`` with no training step in
    between (the sanity check runs in eval mode and restores each module's mode), so the frozen modules are switched
    to train mode in ``on_fit_start`` and back to eval in ``on_train_start``: the check sees only the modules a user
    left in eval mode, and no training forward pass ever sees a frozen module in train mode. Subclasses overriding
    these hooks call ``super()`` first.
    """

    def frozen_modules(self) -> list[nn.Module]:
        """The modules kept in eval mode (none by default)."""
        return []

    def _freeze_modes(self) -> None:
        for module in self.frozen_modules():
            module.eval()

    def train(self, mode: bool = True) -> FrozenInEval:
        """``nn.Module.train``, then the frozen modules back in eval mode."""
        super().train(mode)
        self._freeze_modes()
        return self

    def on_fit_start(self) -> None:
        """Frozen modules in train mode until ``on_train_start`` (see the class docstring)."""
        super().on_fit_start()
        for module in self.frozen_modules():
            module.train()

    def on_train_start(self) -> None:
        """Frozen modules back in eval mode before the first training step."""
        super().on_train_start()
        self._freeze_modes()

    def on_fit_end(self) -> None:
        """Frozen modules in eval mode also when training never started (``max_steps=0``, an empty loader)."""
        super().on_fit_end()
        self._freeze_modes()
