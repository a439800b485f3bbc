"""Online feature alignment through per-channel feature statistics (Li et al., CVPR 2020, "online feature alignment").

The paper aligns the distributions of feature maps at different times through their per-channel mean and variance
(the seed note compares it to the statistics StyleGAN/AdaIN manipulate); its exact formula could not be checked
(digest §2.3, marked [R]). This module makes the form explicit and switchable:

* Source statistics ``(mu_s, var_s)``: running per-channel mean/variance of the feature map over batch and space,
  accumulated on the *training* domain with momentum ``m`` (``mu_s <- (1 - m) mu_s + m mu_hat``, as BatchNorm's
  running statistics), frozen at test time.
* Online statistics ``(mu_i, var_i)``: initialised from the source statistics at the start of every test sequence and
  updated after each window with the same momentum rule: ``mu_i = (1 - m) mu_{i-1} + m mu_hat(F_i)`` (same for var).
* ``form="adain"`` (default): re-normalise the current features to the source statistics,

      F~ = (F - mu_i) / sqrt(var_i + eps) * sqrt(var_s + eps) + mu_s,

  which is the identity on the training domain (``mu_i = mu_s``) and maps the first two moments of a shifted domain
  back onto the training ones (AdaIN, Huang & Belongie 2017, with the source as the style).
* ``form="normalize"``: the digest's ``F~ = gamma (F - mu_i) / sqrt(var_i + eps) + delta`` with learnable
  ``gamma, delta``; during training ``mu_i, var_i`` are the current batch statistics (a BatchNorm variant), online they
  are the running online statistics.
* ``mode``: ``"off"`` (identity, nothing updated), ``"source"`` (training: update the source statistics; ``adain``
  returns ``F`` unchanged), ``"online"`` (test: normalise with the online statistics; the update with the current
  window's statistics happens *after* it has been used, in :meth:`update_online`, so a window never sees its own
  statistics before prediction unless ``update_before=True``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["FeatureAlignment", "channel_stats"]

AlignMode = Literal["off", "source", "online"]


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (biased) variance of ``x`` (B, C, H, W) over batch and space: two ``(C,)`` tensors."""
    dims = (0, 2, 3)
    mu = x.mean(dims)
    var = x.var(dims, unbiased=False)
    return mu, var


class FeatureAlignment(nn.Module):
    """Per-channel feature re-normalisation with running source and online statistics (see module docstring).

    Args:
        channels: channels of the feature map.
        momentum: ``m`` of the running-statistics updates.
        eps: variance floor.
        form: ``"adain"`` or ``"normalize"``.
        update_before: in ``online`` mode, fold the current window's statistics in *before* normalising it (the
            update then includes the current features; default False = the statistics of the past windows only).
    """

    def __init__(
        self,
        channels: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        form: Literal["adain", "normalize"] = "adain",
        update_before: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if form not in ("adain", "normalize"):
            raise ValueError(f"form must be 'adain' or 'normalize', got {form!r}")
        self.channels, self.momentum, self.eps, self.form = int(channels), float(momentum), float(eps), form
        self.update_before = bool(update_before)
        self.register_buffer("source_mean", torch.zeros(channels))
        self.register_buffer("source_var", torch.ones(channels))
        self.register_buffer("online_mean", torch.zeros(channels))
        self.register_buffer("online_var", torch.ones(channels))
        self.register_buffer("num_source_updates", torch.zeros((), dtype=torch.long))
        if form == "normalize":
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self.mode: AlignMode = "off"
        self._pending: tuple[Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return f"{self.channels}, momentum={self.momentum}, form={self.form}, mode={self.mode}"

    def reset_online(self) -> None:
        """Start of a test sequence: online statistics = source statistics."""
        self.online_mean.copy_(self.source_mean)
        self.online_var.copy_(self.source_var)
        self._pending = None

    @torch.no_grad()
    def _ema(self, mean: Tensor, var: Tensor, mu: Tensor, v: Tensor) -> None:
        m = self.momentum
        mean.mul_(1 - m).add_(mu.detach(), alpha=m)
        var.mul_(1 - m).add_(v.detach(), alpha=m)

    @torch.no_grad()
    def update_online(self) -> None:
        """Fold the statistics of the last ``online`` forward into the online running statistics."""
        if self._pending is not None:
            self._ema(self.online_mean, self.online_var, *self._pending)
            self._pending = None

    def _renorm(self, x: Tensor, mu: Tensor, var: Tensor) -> Tensor:
        shape = (1, -1, 1, 1)
        z = (x - mu.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.form == "adain":
            return z * torch.sqrt(self.source_var.view(shape) + self.eps) + self.source_mean.view(shape)
        return z * self.weight.view(shape) + self.bias.view(shape)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "off":
            return x
        mu, var = channel_stats(x)
        if self.mode == "source":
            if self.training:
                self._ema(self.source_mean, self.source_var, mu, var)
                self.num_source_updates += 1
            if self.form == "adain":
                return x
            return self._renorm(x, mu, var)
        # online
        if self.update_before:
            self._ema(self.online_mean, self.online_var, mu, var)
            self._pending = None
        else:
            self._pending = (mu.detach(), var.detach())
        return self._renorm(x, self.online_mean.clone(), self.online_var.clone())
