"""Optimisation shared by pre-training methods and downstream tasks (tasks never import :mod:`evssl.methods`).

* :class:`OptimConfig`, :class:`LrRule`, :class:`EmaConfig`: the option groups (YAML-settable dataclasses);
* :func:`param_groups`: the one weight-decay / LARS-mask / LR-rule policy;
* :class:`LARS`, :class:`WarmupCosineScheduler`, :func:`warmup_cosine`;
* :func:`configure_optimization`: all of it for ``configure_optimizers``.
"""

from evssl.optim.config import NO_DECAY_KINDS, EmaConfig, LrRule, OptimConfig, OptimizerName
from evssl.optim.configure import build_optimizer, configure_optimization, global_batch_size, scale_gradients_
from evssl.optim.groups import decays, param_groups, parameter_kinds, rule_scales
from evssl.optim.lars import LARS
from evssl.optim.schedule import WarmupCosineScheduler, schedule_lengths, warmup_cosine

__all__ = [
    "LARS",
    "NO_DECAY_KINDS",
    "EmaConfig",
    "LrRule",
    "OptimConfig",
    "OptimizerName",
    "WarmupCosineScheduler",
    "build_optimizer",
    "configure_optimization",
    "decays",
    "global_batch_size",
    "param_groups",
    "parameter_kinds",
    "rule_scales",
    "scale_gradients_",
    "schedule_lengths",
    "warmup_cosine",
]
