"""What every pre-training method shares: option groups, EMA teachers, the online probe, backbone export.

A method subclasses :class:`PretrainMethod`, builds its heads in ``__init__`` and implements :meth:`ssl_step`
(the loss of one batch from pure functions in :mod:`evssl.losses`), returning an :class:`SSLOutput`. The base class
then provides

* the optimizer and per-step schedule from one :class:`~evssl.optim.OptimConfig` over the groups of
  :meth:`learnable_params` (:func:`~evssl.optim.configure_optimization`: weight-decay policy, LR rules, LARS masks,
  warm-up + half-cosine ``lr_t = lr (m + (1 - m)(1 + cos(pi s)) / 2)``, optional weight-decay cosine and
  ``lr * global_batch / 256``);
* exponential-moving-average teachers for every ``(online, target)`` pair of :meth:`momentum_pairs`:
  ``target = m * target + (1 - m) * online`` once per optimizer step, ``m`` a cosine ``ema.momentum ->
  ema.momentum_end`` (BYOL, Grill et al. 2020, §3.2); targets never get gradients and are never in the optimizer;
* the online linear probe (:class:`~evssl.nn.probe.OnlineProbe`) on detached features, ``val/probe_acc``;
* :meth:`backbone_for_export` and :meth:`backbone_config` for ``evssl export``.

Faithfulness switches of a method live in ONE preset table next to its option dataclasses; switch fields default
to ``None`` = "the preset's value" and are filled by :func:`apply_preset`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from evssl.nn.ema import cosine_schedule, ema_update_
from evssl.nn.frozen import FrozenInEval
from evssl.nn.probe import DEFAULT_PROBE, OnlineProbe, ProbeConfig
from evssl.optim import EmaConfig, OptimConfig, configure_optimization
from evssl.utils.hparams import as_config, batch_size_of, class_config, save_hparams

__all__ = ["PretrainMethod", "SSLOutput", "apply_preset", "recipe_default"]

T = TypeVar("T")


@dataclass
class SSLOutput:
    """What :meth:`PretrainMethod.ssl_step` returns.

    Args:
        loss: the scalar self-supervised loss to minimise.
        logs: scalars logged as ``train/<key>`` (loss terms, collapse monitors).
        features: (B, num_features) evaluation features of the batch's ``"input"`` already computed by the step
            (spares the online probe a second backbone forward); ``None`` = the probe calls
            :meth:`PretrainMethod.probe_features`.
    """

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)
    features: Tensor | None = None


def apply_preset(options: T, presets: Mapping[str, Mapping[str, Any]], preset: str, owner: str) -> T:
    """A copy of the dataclass ``options`` whose ``None`` switch fields take ``presets[preset]``'s values.

    Explicit (non-``None``) values override the preset. Raises a one-line error naming ``owner`` for an unknown
    preset.
    """
    if preset not in presets:
        raise ValueError(f"{owner}: unknown preset {preset!r}; expected one of {sorted(presets)}")
    table = presets[preset]
    filled = {
        f.name: table[f.name]
        for f in dataclasses.fields(options)  # type: ignore[arg-type]
        if getattr(options, f.name) is None and f.name in table
    }
    return dataclasses.replace(options, **filled)  # type: ignore[type-var]


def recipe_default(recipes: Mapping[str, Mapping[str, Any]], preset: str, group: str, fallback: T) -> T:
    """The default of option group ``group`` (used where the config leaves the group out) under ``preset``.

    ``recipes[preset][group]`` where the preset has a recipe for that group (the ``small`` presets: a
    small-budget optimiser, EMA or loss recipe), else ``fallback`` (the method's paper/official default). A copy, so
    a method never mutates the shared table.
    """
    return copy.deepcopy(recipes.get(preset, {}).get(group, fallback))


class PretrainMethod(FrozenInEval):
    """Base class of every self-supervised pre-training method.

    Subclasses implement :meth:`ssl_step` and may extend :meth:`learnable_params` (``super().learnable_params() +
    [...]``), :meth:`momentum_pairs`, :meth:`probe_features` and :meth:`backbone_for_export`. A subclass declares
    its own defaults by passing ``default_optim`` / ``default_ema`` (used when ``optim`` / ``ema`` is ``None``).

    Args:
        backbone: feature extractor with ``num_features`` (``in_chans`` is linked from the data by the CLI).
        optim: optimizer, schedule and weight-decay policy (:class:`~evssl.optim.OptimConfig`).
        ema: EMA momentum schedule of the pairs of :meth:`momentum_pairs` (:class:`~evssl.optim.EmaConfig`).
        probe: the online probe (:class:`~evssl.nn.probe.ProbeConfig`; ``probe.classes`` linked from
            ``data.num_classes``).
    """

    #: ``{preset: {option group: default}}``: the groups a preset supplies where the config leaves them out
    #: (:func:`recipe_default`); ``{}`` for a method whose presets are switches only.
    RECIPES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(
        self,
        backbone: nn.Module,
        optim: OptimConfig | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
        *,
        default_optim: OptimConfig | None = None,
        default_ema: EmaConfig | None = None,
    ) -> None:
        super().__init__()
        save_hparams(self, inspect.currentframe())
        for key in ("default_optim", "default_ema"):
            self.hparams.pop(key, None)
            self._hparams_initial.pop(key, None)
        self.backbone = backbone
        self.optim = as_config(type(default_optim) if default_optim else OptimConfig, optim, default_optim)
        self.ema = as_config(EmaConfig, ema, default_ema)
        self.probe_config = as_config(ProbeConfig, probe)
        self._total_steps = 1
        self._probe_announced = False
        self.probe: OnlineProbe | None = None
        if self.probe_config.active:
            dim = getattr(backbone, "num_features", None)
            if not isinstance(dim, int):
                raise ValueError("the online probe needs backbone.num_features (an int); or set probe.enabled: false")
            self.probe = OnlineProbe(dim, int(self.probe_config.classes))

    # ----------------------------------------------------------------------------------------- subclass interface
    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """Self-supervised loss of one training batch (see :class:`SSLOutput`)."""
        raise NotImplementedError

    def probe_features(self, batch: dict[str, Any]) -> Tensor:
        """Evaluation features of a labelled batch (default: ``self.backbone(batch["input"])``)."""
        return self.backbone(batch["input"])

    def learnable_params(self) -> list[dict[str, Any]]:
        """Group specs ``{"name", "params", "lr_scale"?, "weight_decay"?, "lr"?, "no_decay"?}``; extend via super()."""
        groups: list[dict[str, Any]] = [{"name": "backbone", "params": list(self.backbone.parameters())}]
        if self.probe is not None:
            groups.append(
                {
                    "name": "probe",
                    "params": list(self.probe.parameters()),
                    "lr": float(self.probe_config.lr),
                    "weight_decay": 0.0,
                    "lars_adapt": False,
                }
            )
        return groups

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, target)`` pairs updated by EMA once per optimizer step (default: none)."""
        return []

    def backbone_for_export(self) -> nn.Module:
        """The network ``evssl export`` writes (default: the online backbone)."""
        return self.backbone

    def backbone_config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` of the exported backbone (from the config when the CLI built it)."""
        return class_config(self.backbone_for_export(), self.hparams.get("backbone"))

    # ------------------------------------------------------------------------------------------ EMA machinery
    def ema_momentum_at(self, step: int) -> float:
        """Cosine EMA momentum at optimizer step ``step`` (a pure function of the step: resumes exactly)."""
        return float(cosine_schedule(step, self._total_steps, self.ema.momentum, self.ema.momentum_end))

    def _ema_targets(self) -> list[nn.Parameter]:
        return [p for _, tgt in self.momentum_pairs() for p in tgt.parameters()]

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step the optimizer, then update every EMA pair once (called once per step, also under accumulation)."""
        step = self.trainer.global_step
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        pairs = self.momentum_pairs()
        if pairs:
            m = self.ema_momentum_at(step)
            with torch.no_grad():
                for online, target in pairs:
                    ema_update_(online, target, m)

    # -------------------------------------------------------------------------------------------- Lightning hooks
    def configure_optimizers(self) -> dict[str, Any]:
        """Optimizer + schedule over :meth:`learnable_params`; EMA targets frozen and excluded."""
        for _, target in self.momentum_pairs():
            target.requires_grad_(False)
        out = configure_optimization(self, self.learnable_params(), self.optim, exclude=self._ema_targets())
        self._total_steps = out["lr_scheduler"]["scheduler"].total_steps
        return out

    def _probe_step(self, batch: Any, features: Tensor | None, bs: int) -> Tensor | None:
        """Cross-entropy of the online probe on a labelled training batch (``None`` without probe or labels)."""
        if self.probe is None or not isinstance(batch, dict) or "label" not in batch:
            return None
        if not self._probe_announced:
            rank_zero_info(
                f"evssl: the online probe ({self.probe_config.classes} classes) trains on the data's labels "
                "(train/probe_loss, val/probe_acc) on detached features; the SSL loss never sees them. "
                "Switch it off with model.init_args.probe.enabled: false"
            )
            self._probe_announced = True
        if features is None:
            with torch.no_grad():
                features = self.probe_features(batch)
        probe_loss = self.probe.loss(features, batch["label"])
        self.log("train/probe_loss", probe_loss.detach(), batch_size=bs)
        return probe_loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """:meth:`ssl_step` + online probe; logs the loss terms, lr, weight decay and EMA momentum."""
        out = self.ssl_step(batch, batch_idx)
        if not isinstance(out, SSLOutput):
            raise TypeError(f"{type(self).__name__}.ssl_step must return an SSLOutput, got {type(out).__name__}")
        bs = batch_size_of(batch)
        self.log("train/loss", out.loss.detach().float(), prog_bar=True, batch_size=bs)
        for key, value in out.logs.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                self.log(f"train/{key}", value.detach().float(), batch_size=bs)
        loss = out.loss
        probe_loss = self._probe_step(batch, out.features, bs)
        if probe_loss is not None:
            loss = loss + probe_loss
        if self._trainer is not None and self.trainer.optimizers:
            group = self.trainer.optimizers[0].param_groups[0]
            self.log("train/lr", float(group["lr"]), batch_size=bs)
            if self.optim.weight_decay_end is not None:
                self.log("train/weight_decay", float(group["weight_decay"]), batch_size=bs)
            if self.momentum_pairs():
                self.log("train/ema_momentum", self.ema_momentum_at(self.trainer.global_step), batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Top-1 of the online probe on the validation batch, logged per epoch as ``val/probe_acc``."""
        if self.probe is None or not isinstance(batch, dict) or "label" not in batch:
            return
        logits = self.probe(self.probe_features(batch))
        self.probe.accuracy(logits, batch["label"])
        bs = batch_size_of(batch)
        self.log("val/probe_loss", F.cross_entropy(logits, batch["label"]), batch_size=bs, sync_dist=True)
        self.log("val/probe_acc", self.probe.accuracy, prog_bar=True, batch_size=bs)
