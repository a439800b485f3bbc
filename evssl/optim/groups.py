"""The one parameter-group policy: which parameters decay, which get the LARS trust ratio, and the LR rules.

Every method and task builds its optimizer groups here (:func:`param_groups`); nothing else decides weight decay.
A parameter's *kinds* (:func:`parameter_kinds`) come from its full name and shape:

* ``bias``: a 1-D parameter whose name ends with ``bias``;
* ``norm``: any other 1-D parameter (norm scales and shifts, layer scales);
* ``token``: a name component ending with ``token`` / ``tokens`` / ``query`` (class, special, pooling-query tokens);
* ``pos``: a component containing ``pos_embed``;
* ``relpos``: a component ``relative_position_bias_table``;
* ``mask_token``: a component ``mask_token`` (also a ``token``).

A parameter decays unless one of its kinds is in ``OptimConfig.no_decay``. The default excludes all six (BYOL/MAE/
DINO practice); ``()`` decays everything (ECDP official, ``pr_trainer.py``), ``("bias", "norm")`` decays every
parameter with at least two dimensions (ECDDP official, ``pretrain_trainer.py:params_groups``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from evssl.optim.config import NO_DECAY_KINDS, OptimConfig

__all__ = ["decays", "param_groups", "parameter_kinds", "rule_scales"]


def parameter_kinds(name: str, p: Tensor) -> set[str]:
    """The kinds of a parameter (module docstring) from its full dotted ``name`` and its shape."""
    kinds: set[str] = set()
    parts = name.split(".")
    if p.ndim <= 1:
        kinds.add("bias" if parts[-1].endswith("bias") else "norm")
    for part in parts:
        if part.endswith(("token", "tokens", "query", "queries")):
            kinds.add("token")
        if "pos_embed" in part:
            kinds.add("pos")
        if part == "relative_position_bias_table":
            kinds.add("relpos")
        if part == "mask_token":
            kinds.add("mask_token")
    return kinds


def decays(name: str, p: Tensor, no_decay: Iterable[str]) -> bool:
    """Whether the parameter gets weight decay under the policy ``no_decay`` (a set of kinds)."""
    return not (parameter_kinds(name, p) & set(no_decay))


def rule_scales(name: str, optim: OptimConfig) -> tuple[float, float]:
    """``(step_scale, gradient_scale)`` of a parameter: products of the matching :class:`LrRule` scales."""
    step = grad = 1.0
    for rule in optim.lr_rules:
        if re.search(rule.pattern, name):
            if rule.where == "gradient":
                grad *= float(rule.scale)
            else:
                step *= float(rule.scale)
    return step, grad


def param_groups(
    module: nn.Module,
    groups: Sequence[dict[str, Any]],
    optim: OptimConfig,
    *,
    lr: float | None = None,
    exclude: Iterable[nn.Parameter] = (),
) -> list[dict[str, Any]]:
    """Optimizer parameter groups from group specs, the weight-decay policy and the LR rules of ``optim``.

    Args:
        module: owns every parameter (names for the policy and the rules; leftover check).
        groups: specs ``{"name", "params", "lr_scale"?: float, "weight_decay"?: float, "lr"?: absolute lr,
            "no_decay"?: kinds overriding ``optim.no_decay`` for this group, "lars_adapt"?: bool override}``;
            other keys pass through.
        optim: the option group (``weight_decay``, ``no_decay``, ``lr_rules``, ``lars_masks``, ``name``).
        lr: base learning rate, already batch-scaled (default ``optim.lr``).
        exclude: parameters that must not be optimised (EMA targets); finding one in a group is an error.

    Trainable parameters no spec lists go to a group ``"other"`` (reported once). Each spec is split by
    (decays?, step scale, gradient scale); each output group has ``"name"``, ``"lr"`` (``lr * lr_scale * step
    scale`` unless the spec gives ``"lr"``), ``"weight_decay"``, ``"wd_scale"`` (for the weight-decay schedule),
    ``"grad_scale"`` (gradient rules, applied by the optimizer before its transform) and ``"lars_adapt"``.

    Under LARS, ``lars_masks="intent"`` adapts (weight decay + trust ratio) exactly the decaying parameters;
    ``"released"`` inverts both masks as the released BraVe code does (see :class:`OptimConfig`).

    Raises:
        ValueError: a parameter in two groups, an EMA-target parameter listed, ``lars_masks="released"`` with
            another optimizer, or no trainable parameter at all.
    """
    if optim.lars_masks == "released" and optim.name != "lars":
        raise ValueError(f"optim.lars_masks='released' only applies to LARS, not optim.name={optim.name!r}")
    base_lr = optim.lr if lr is None else float(lr)
    wd_default = float(optim.weight_decay)
    names = {id(p): n for n, p in module.named_parameters()}
    banned = {id(p) for p in exclude}
    specs = [dict(g) for g in groups]
    for spec in specs:
        spec["params"] = [p for p in spec["params"] if p.requires_grad]
    listed = {id(p) for s in specs for p in s["params"]}
    leftovers = [p for p in module.parameters() if p.requires_grad and id(p) not in banned and id(p) not in listed]
    if leftovers:
        rank_zero_info(
            "evssl: parameters not listed by the group specs are optimised in group 'other': "
            + ", ".join(names.get(id(p), "?") for p in leftovers[:8])
            + (" ..." if len(leftovers) > 8 else "")
        )
        specs.append({"name": "other", "params": leftovers})

    seen: dict[int, str] = {}
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        gname = str(spec.pop("name", f"group{i}"))
        params = spec.pop("params")
        absolute_lr = spec.pop("lr", None)
        lr_scale = float(spec.pop("lr_scale", 1.0))
        group_wd = float(spec.pop("weight_decay", wd_default))
        policy = NO_DECAY_KINDS if optim.no_decay is None else optim.no_decay
        no_decay = tuple(spec.pop("no_decay", policy))
        adapt_override = spec.pop("lars_adapt", None)
        buckets: dict[tuple[bool, float, float], list[nn.Parameter]] = {}
        for p in params:
            pname = names.get(id(p), "")
            if id(p) in banned:
                raise ValueError(f"parameter {pname or '?'} of an EMA target is in optimizer group {gname!r}")
            if id(p) in seen:
                raise ValueError(f"parameter {pname or '?'} is in optimizer groups {seen[id(p)]!r} and {gname!r}")
            seen[id(p)] = gname
            key = (decays(pname, p, no_decay), *rule_scales(pname, optim))
            buckets.setdefault(key, []).append(p)
        for (decay, step_scale, grad_scale), ps in buckets.items():
            adapt = decay if optim.lars_masks == "intent" else not decay
            wd = group_wd if adapt else 0.0
            suffix = ("" if decay else "_no_wd") + (f"_x{step_scale:g}" if step_scale != 1 else "")
            suffix += f"_g{grad_scale:g}" if grad_scale != 1 else ""
            group_lr = float(absolute_lr) if absolute_lr is not None else base_lr * lr_scale * step_scale
            out.append(
                {
                    "name": gname + suffix,
                    "params": ps,
                    "lr": group_lr,
                    "weight_decay": wd,
                    "wd_scale": wd / wd_default if wd_default > 0 else 0.0,
                    "grad_scale": grad_scale,
                    "lars_adapt": bool(adapt if adapt_override is None else adapt_override),
                    **spec,
                }
            )
    if not out:
        raise ValueError("no trainable parameters")
    return out
