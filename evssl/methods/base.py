"""What every pre-training method shares: optimisation, schedules, EMA teachers, online probe, backbone export.

A method subclasses :class:`PretrainMethod`, builds its heads in ``__init__`` and implements :meth:`ssl_step`
(the loss of one batch, calling pure functions from :mod:`evssl.losses`). The base class then provides

* the optimizer (AdamW, SGD or LARS) over parameter groups from :meth:`learnable_params` — each group with its own
  ``lr_scale`` and weight decay, norms / biases / tokens without weight decay;
* a per-step schedule sized from ``trainer.estimated_stepping_batches``: linear warm-up then half-cosine
  (``lr_t = lr * (m + (1 - m) * (1 + cos(pi * s)) / 2)``, ``s`` the post-warm-up progress, ``m = min_lr_ratio``),
  optionally a cosine weight-decay schedule (ECDDP: 0.04 -> 0.4) and the linear batch-size scaling rule
  ``lr = lr * global_batch / 256`` (Goyal et al. 2017);
* exponential-moving-average teachers for every ``(online, target)`` pair of :meth:`momentum_pairs`:
  ``target = m * target + (1 - m) * online`` once per optimizer step, ``m`` following a cosine from
  ``ema_momentum`` to ``ema_momentum_end`` (BYOL, Grill et al. 2020, Sec. 3.2); targets never get gradients and are
  never in the optimizer;
* an online linear probe on detached features, a free "is it learning?" signal logged as ``val/probe_acc``;
* :meth:`backbone_for_export` and :meth:`backbone_config` for ``evssl export``.

The optimisation helpers (:func:`build_param_groups`, :func:`build_optimizer`, :class:`WarmupCosineScheduler`,
:func:`configure_optimization`) are module-level so that downstream tasks (:mod:`evssl.tasks`) reuse them.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassAccuracy

from evssl.nn.ema import cosine_schedule, ema_update_
from evssl.nn.optim import DEFAULT_SKIP_NAMES, LARS, warmup_cosine

__all__ = [
    "OptimizerName",
    "PretrainMethod",
    "WarmupCosineScheduler",
    "batch_size_of",
    "build_optimizer",
    "build_param_groups",
    "class_config",
    "configure_optimization",
    "module_hparams_without_modules",
    "save_hparams",
    "schedule_lengths",
]

OptimizerName = Literal["adamw", "sgd", "lars"]


# ---------------------------------------------------------------------------------------------------------- helpers
def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch dict (``"label"``, ``"input"``, an :class:`EventBatch` or the first tensor)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for key in ("label", "input"):
            if isinstance(batch.get(key), Tensor):
                return int(batch[key].shape[0])
        for value in batch.values():
            if hasattr(value, "batch_size") and isinstance(value.batch_size, int):
                return int(value.batch_size)
            if isinstance(value, Tensor) and value.ndim > 0:
                return int(value.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size_of(batch[0])
    raise ValueError(f"cannot infer the batch size of {type(batch).__name__}")


def _no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full parameter names listed by ``no_weight_decay()`` of any submodule (timm convention: tokens, pos-embed)."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        fn = getattr(sub, "no_weight_decay", None)
        if callable(fn):
            for n in fn():
                names.add(f"{prefix}.{n}" if prefix else n)
    return names


def _is_no_decay(p: Tensor, name: str, no_wd: set[str]) -> bool:
    """1-D parameters (biases, norm scales), names from ``no_weight_decay()``, and tokens / position tables."""
    return p.ndim <= 1 or name in no_wd or any(part in DEFAULT_SKIP_NAMES for part in name.split("."))


def build_param_groups(
    module: nn.Module,
    groups: Sequence[dict[str, Any]],
    *,
    lr: float,
    weight_decay: float,
    exclude_norm_bias: bool = True,
    exclude: Iterable[nn.Parameter] = (),
) -> list[dict[str, Any]]:
    """Turn group specs into optimizer parameter groups.

    Args:
        module: the module owning every parameter (used for names, the leftover check and ``no_weight_decay()``).
        groups: specs ``{"name": str, "params": iterable, "lr_scale": float = 1, "weight_decay": float = wd,
            "lr": float (absolute, not scaled), ...}``; other keys (e.g. ``"lars_exclude"``) are passed through.
        lr: base learning rate (already batch-scaled); a group's lr is ``lr * lr_scale`` unless it gives ``"lr"``.
        weight_decay: default weight decay of a group.
        exclude_norm_bias: put 1-D parameters (biases, norm scales), names from ``no_weight_decay()`` and
            tokens / positional embeddings (:data:`evssl.nn.optim.DEFAULT_SKIP_NAMES`) into a twin group without
            weight decay and without LARS adaptation (named ``"<name>_no_wd"``).
        exclude: parameters that must not be optimised (EMA targets); finding one in a group is an error.

    Trainable parameters of ``module`` that no group lists are added to a group ``"other"`` (and reported), so a
    method that forgets a head still trains it. Each returned group carries ``"name"``, ``"lr"``,
    ``"weight_decay"`` and ``"wd_scale"`` (``weight_decay / default``, used by the weight-decay schedule).

    Raises:
        ValueError: a parameter appears in two groups, or an excluded (EMA target) parameter is listed.
    """
    names = {id(p): n for n, p in module.named_parameters()}
    no_wd = _no_weight_decay_names(module)
    banned = {id(p) for p in exclude}
    seen: dict[int, str] = {}
    specs = [dict(g) for g in groups]
    for spec in specs:
        spec["params"] = [p for p in spec["params"] if p.requires_grad]
    listed = {id(p) for s in specs for p in s["params"]}
    leftovers = [p for p in module.parameters() if p.requires_grad and id(p) not in banned and id(p) not in listed]
    if leftovers:
        rank_zero_info(
            "evssl: parameters not listed by learnable_params() are optimised in group 'other': "
            + ", ".join(names.get(id(p), "?") for p in leftovers[:8])
            + (" ..." if len(leftovers) > 8 else "")
        )
        specs.append({"name": "other", "params": leftovers})

    out: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        name = str(spec.get("name", f"group{i}"))
        params = spec.pop("params")
        for p in params:
            if id(p) in banned:
                raise ValueError(f"parameter {names.get(id(p), '?')} of an EMA target is in optimizer group {name!r}")
            if id(p) in seen:
                raise ValueError(
                    f"parameter {names.get(id(p), '?')} is in optimizer groups {seen[id(p)]!r} and {name!r}"
                )
            seen[id(p)] = name
        group_lr = float(spec.pop("lr")) if "lr" in spec else lr * float(spec.pop("lr_scale", 1.0))
        spec.pop("lr_scale", None)
        group_wd = float(spec.pop("weight_decay", weight_decay))
        extra = {k: v for k, v in spec.items() if k != "name"}
        plain_ids = {id(p) for p in params if exclude_norm_bias and _is_no_decay(p, names.get(id(p), ""), no_wd)}
        decay = [p for p in params if id(p) not in plain_ids]
        plain = [p for p in params if id(p) in plain_ids]
        scale = group_wd / weight_decay if weight_decay > 0 else 0.0
        if decay:
            out.append({"name": name, "params": decay, "lr": group_lr, "weight_decay": group_wd, "wd_scale": scale})
            out[-1].update(extra)
        if plain:
            out.append({"name": f"{name}_no_wd", "params": plain, "lr": group_lr, "weight_decay": 0.0, "wd_scale": 0.0})
            out[-1].update(extra)
            out[-1]["lars_exclude"] = True  # norms, biases, tokens: no LARS trust ratio either
    if not out:
        raise ValueError("no trainable parameters")
    return out


def build_optimizer(
    name: OptimizerName,
    groups: list[dict[str, Any]],
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019), SGD with momentum, or LARS (You et al. 2017) over prepared groups."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; expected one of 'adamw', 'sgd', 'lars'")


class WarmupCosineScheduler(LRScheduler):
    """Per-step learning-rate (and optional weight-decay) schedule in closed form of the step index.

    ``lr_g(t) = lr_g * warmup_cosine(t, total, warmup, 1, min_lr_ratio)`` for each group ``g`` (linear warm-up
    from 0, then half-cosine to ``min_lr_ratio``, see :func:`evssl.nn.optim.warmup_cosine`); when
    ``weight_decay_end`` is set, ``wd_g(t) = wd_scale_g * cosine(t; weight_decay -> weight_decay_end)`` (ECDDP,
    after DINO). The state is the step
    counter only, so resuming from a checkpoint continues the exact same curve.
    """

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


def _global_batch_size(trainer: Trainer) -> int:
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
        raise ValueError("lr_batch_scale needs the per-device batch size (train_dataloader.batch_size)")
    return bs * trainer.accumulate_grad_batches * trainer.world_size


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
    per_epoch = math.ceil(nb / trainer.accumulate_grad_batches) if math.isfinite(nb) and nb > 0 else total
    warmup = min(total, round(warmup_epochs * per_epoch))
    return total, warmup


def configure_optimization(
    module: LightningModule,
    groups: Sequence[dict[str, Any]],
    *,
    optimizer: OptimizerName = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    weight_decay_end: float | None = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
    lr_batch_scale: bool = False,
    exclude_norm_bias: bool = True,
    exclude: Iterable[nn.Parameter] = (),
) -> dict[str, Any]:
    """Optimizer + per-step warm-up/cosine schedule for ``configure_optimizers`` (shared by methods and tasks).

    With ``lr_batch_scale`` every group's lr (except groups giving an absolute ``"lr"``) is multiplied by
    ``global_batch / 256``, global batch = batch size x accumulation x world size.
    """
    trainer = module.trainer
    total, warmup = schedule_lengths(trainer, warmup_epochs)
    base_lr = lr
    if lr_batch_scale:
        gb = _global_batch_size(trainer)
        base_lr = lr * gb / 256.0
        rank_zero_info(f"evssl: lr = {lr:g} x {gb}/256 = {base_lr:g}")
    if weight_decay_end is not None and weight_decay <= 0:
        raise ValueError("weight_decay_end needs weight_decay > 0 (the schedule scales each group's decay)")
    param_groups = build_param_groups(
        module, groups, lr=base_lr, weight_decay=weight_decay, exclude_norm_bias=exclude_norm_bias, exclude=exclude
    )
    opt = build_optimizer(
        optimizer, param_groups, lr=base_lr, weight_decay=weight_decay, momentum=momentum, betas=betas
    )
    sched = WarmupCosineScheduler(
        opt,
        total_steps=total,
        warmup_steps=warmup,
        min_lr_ratio=min_lr_ratio,
        weight_decay=weight_decay,
        weight_decay_end=weight_decay_end,
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


def module_hparams_without_modules(module: LightningModule) -> None:
    """Drop ``nn.Module`` instances from ``module.hparams`` (kept only when a config described them).

    Under ``LightningCLI`` the hyper-parameters are the parsed config (``class_path`` dicts), so checkpoints can
    rebuild the model; when a module is built in Python the objects themselves would be pickled into every
    checkpoint (and ``torch.load(weights_only=True)`` would refuse them).
    """
    bad = [k for k, v in module.hparams.items() if isinstance(v, nn.Module)]
    for k in bad:
        module.hparams.pop(k)
        module._hparams_initial.pop(k, None)  # the copy Lightning logs and saves


def save_hparams(module: LightningModule, frame: Any) -> None:
    """``module.save_hyperparameters()`` for an ``__init__`` frame, without ``nn.Module`` values (see above).

    Call as ``save_hparams(self, inspect.currentframe())`` at the top of ``__init__``; Lightning collects the
    arguments of every ``__init__`` up the class hierarchy (and, under the CLI, the parsed config instead).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
        module.save_hyperparameters(frame=frame)
    module_hparams_without_modules(module)


_save_hparams = save_hparams  # old name, kept for modules that import it


def class_config(obj: nn.Module, hparam: Any = None) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of ``obj``: from a config dict when given, else its class and no args."""
    if isinstance(hparam, dict) and "class_path" in hparam:
        return {"class_path": hparam["class_path"], "init_args": dict(hparam.get("init_args") or {})}
    cls = type(obj)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {}}


# ------------------------------------------------------------------------------------------------------- base method
class PretrainMethod(LightningModule):
    """Base class of every self-supervised pre-training method.

    Subclasses implement :meth:`ssl_step` and may extend :meth:`learnable_params` (``super().learnable_params() +
    [...]``), :meth:`momentum_pairs`, :meth:`probe_features` and :meth:`backbone_for_export`.

    Args:
        backbone: feature extractor with ``num_features`` (``in_chans`` is linked from the data by the CLI).
        optimizer: ``"adamw"``, ``"sgd"`` or ``"lars"`` (LARS skips adaptation for norms, biases and the probe).
        lr: base learning rate (of a batch of 256 when ``lr_batch_scale``).
        weight_decay: weight decay (0 on biases, norms, tokens, and the probe).
        weight_decay_end: when set, weight decay follows a cosine from ``weight_decay`` to this value.
        momentum: SGD / LARS momentum.
        betas: AdamW betas.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        min_lr_ratio: final lr as a fraction of the peak.
        lr_batch_scale: ``lr = lr * global_batch / 256``.
        ema_momentum: EMA momentum at step 0 for the pairs of :meth:`momentum_pairs`.
        ema_momentum_end: EMA momentum at the last step (cosine in between).
        probe_classes: classes of the online linear probe (0 = no probe; linked from ``data.num_classes``).
        probe_lr: learning rate of the probe (not batch-scaled, no weight decay, same schedule).
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        weight_decay_end: float | None = None,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        lr_batch_scale: bool = False,
        ema_momentum: float = 0.996,
        ema_momentum_end: float = 1.0,
        probe_classes: int = 0,
        probe_lr: float = 1e-3,
    ) -> None:
        super().__init__()
        save_hparams(self, inspect.currentframe())
        self.backbone = backbone
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.weight_decay_end = weight_decay_end
        self.momentum = momentum
        self.betas = tuple(betas)
        self.warmup_epochs = warmup_epochs
        self.min_lr_ratio = min_lr_ratio
        self.lr_batch_scale = lr_batch_scale
        self.ema_momentum = ema_momentum
        self.ema_momentum_end = ema_momentum_end
        self.probe_classes = int(probe_classes)
        self.probe_lr = probe_lr
        self._total_steps = 1
        if self.probe_classes > 0:
            dim = getattr(backbone, "num_features", None)
            if not isinstance(dim, int):
                raise ValueError("the online probe needs backbone.num_features (an int)")
            self.probe: nn.Linear | None = nn.Linear(dim, self.probe_classes)
            self.probe_acc = MulticlassAccuracy(self.probe_classes, top_k=1, average="micro")
        else:
            self.probe = None

    # ----------------------------------------------------------------------------------------- subclass interface
    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Self-supervised loss of one training batch: ``{"loss": scalar, <other scalars to log>}``.

        The dict may also carry ``"probe_features"`` (B, num_features) — features already computed for the batch's
        ``"input"`` — to spare the probe a second backbone forward.
        """
        raise NotImplementedError

    def probe_features(self, batch: dict[str, Any]) -> Tensor:
        """Evaluation features of a labelled batch (default: ``self.backbone(batch["input"])``)."""
        return self.backbone(batch["input"])

    def learnable_params(self) -> list[dict[str, Any]]:
        """Parameter-group specs ``{"name", "params", "lr_scale"?, "weight_decay"?, "lr"?}``; extend via super()."""
        groups: list[dict[str, Any]] = [{"name": "backbone", "params": list(self.backbone.parameters())}]
        if self.probe is not None:
            groups.append(
                {"name": "probe", "params": list(self.probe.parameters()), "lr": self.probe_lr, "weight_decay": 0.0}
            )
            groups[-1]["lars_exclude"] = True
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

    @staticmethod
    def ema_copy(module: nn.Module) -> nn.Module:
        """A frozen deep copy of ``module`` to serve as an EMA target."""
        target = copy.deepcopy(module)
        target.requires_grad_(False)
        return target

    # ------------------------------------------------------------------------------------------ EMA machinery
    def ema_momentum_at(self, step: int) -> float:
        """Cosine EMA momentum at optimizer step ``step`` (a pure function of the step: resumes exactly)."""
        return float(cosine_schedule(step, self._total_steps, self.ema_momentum, self.ema_momentum_end))

    def _ema_targets(self) -> list[nn.Parameter]:
        return [p for _, tgt in self.momentum_pairs() for p in tgt.parameters()]

    def setup(self, stage: str) -> None:
        """Freeze EMA targets (no gradients, never in the optimizer)."""
        for _, target in self.momentum_pairs():
            target.requires_grad_(False)

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
        """AdamW/SGD/LARS over :meth:`learnable_params` with a per-step warm-up + cosine schedule."""
        for _, target in self.momentum_pairs():
            target.requires_grad_(False)
        out = configure_optimization(
            self,
            self.learnable_params(),
            optimizer=self.optimizer_name,
            lr=self.lr,
            weight_decay=self.weight_decay,
            weight_decay_end=self.weight_decay_end,
            momentum=self.momentum,
            betas=self.betas,
            warmup_epochs=self.warmup_epochs,
            min_lr_ratio=self.min_lr_ratio,
            lr_batch_scale=self.lr_batch_scale,
            exclude=self._ema_targets(),
        )
        self._total_steps = out["lr_scheduler"]["scheduler"].total_steps
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """:meth:`ssl_step` + online probe on detached features; logs losses, lr, weight decay and EMA momentum."""
        out = dict(self.ssl_step(batch, batch_idx))
        bs = batch_size_of(batch)
        feats = out.pop("probe_features", None)
        loss = out["loss"]
        for key, value in out.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                self.log(f"train/{key}", value.detach().float(), prog_bar=key == "loss", batch_size=bs)
        if self.probe is not None and isinstance(batch, dict) and "label" in batch:
            if feats is None:
                with torch.no_grad():
                    feats = self.probe_features(batch)
            logits = self.probe(feats.detach().float())
            probe_loss = F.cross_entropy(logits, batch["label"])
            loss = loss + probe_loss
            self.log("train/probe_loss", probe_loss.detach(), batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:
            group = self.trainer.optimizers[0].param_groups[0]
            self.log("train/lr", float(group["lr"]), batch_size=bs)
            if self.weight_decay_end is not None:
                self.log("train/weight_decay", float(group["weight_decay"]), batch_size=bs)
            if self.momentum_pairs():
                self.log("train/ema_momentum", self.ema_momentum_at(self.trainer.global_step), batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Top-1 of the online probe on the validation batch, logged per epoch as ``val/probe_acc``."""
        if self.probe is None or not isinstance(batch, dict) or "label" not in batch:
            return
        feats = self.probe_features(batch)
        logits = self.probe(feats.float())
        self.probe_acc(logits, batch["label"])
        bs = batch_size_of(batch)
        self.log("val/probe_loss", F.cross_entropy(logits, batch["label"]), batch_size=bs, sync_dist=True)
        self.log("val/probe_acc", self.probe_acc, prog_bar=True, batch_size=bs)
