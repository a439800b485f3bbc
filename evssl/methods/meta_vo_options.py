"""MetaVO's option groups and the one table of its faithfulness switches (:data:`META_VO_PRESETS`).

Plain dataclasses read by jsonargparse (``model.init_args.meta`` / ``online`` / ``optim``); switch fields default to
``None`` = "the preset's value", filled by :func:`~evssl.methods.base.apply_preset`. What the options mean for the
method (meta-objective, online loop) is in :mod:`evssl.methods.meta_vo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from evssl.metrics.odometry import KITTI_LENGTHS
from evssl.optim import OptimConfig, OptimizerName

__all__ = ["META_VO_PRESETS", "MetaConfig", "MetaVOOptim", "OnlineConfig"]


@dataclass
class MetaConfig:
    """Meta-learning at training time. ``None`` fields take the preset's value (:data:`META_VO_PRESETS`).

    ``enabled``: meta-objective (True) or plain training on the mean window loss (False). ``first_order``: FOMAML.
    ``chain``: chained inner updates over the snippet (True) or independent pairs. ``inner_lr``: alpha.
    ``learn_inner_lr``: optimise log alpha with the outer step. ``bptt``: back-propagate through the ConvLSTM state
    carried from window to window inside a snippet (the exact gradient of the snippet objective; tested against
    finite differences) instead of detaching it at every window (truncated BPTT, the default: cheaper, and what the
    online loop does, where the state is always a constant of the past).
    """

    enabled: bool = True
    first_order: bool | None = None
    chain: bool = True
    inner_lr: float | None = None
    learn_inner_lr: bool = False
    bptt: bool = False


@dataclass
class OnlineConfig:
    """Online adaptation at test time. ``None`` fields take the preset's value.

    ``enabled``: adapt (False = evaluate the fixed trained model, with the same online loop). ``steps``: gradient
    steps per window. ``lr``: step size (None = the preset's, which is the meta inner lr). ``optimizer``: ``"sgd"``
    (theta - lr grad, the inner update the meta-objective trains for) or ``"adam"`` (state kept through a sequence).
    ``feature_alignment``: use the online alignment statistics. ``reset_per_sequence``: every test sequence starts
    from the trained weights. ``bn_eval``: BatchNorm uses its training statistics online (batch size 1).
    ``kitti_lengths``: segment lengths of t_rel / r_rel (KITTI: 100..800 m; short synthetic sequences need short
    ones). ``kitti_step``: first-frame step (10).
    """

    enabled: bool = True
    steps: int = 1
    lr: float | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    feature_alignment: bool = True
    reset_per_sequence: bool = True
    bn_eval: bool = True
    kitti_lengths: tuple[float, ...] = KITTI_LENGTHS
    kitti_step: int = 10


@dataclass
class MetaVOOptim(OptimConfig):
    """The outer optimiser: Adam(W) without weight decay at a constant learning rate (``min_lr_ratio = 1``), the
    usual self-supervised depth/pose recipe (Zhou et al. 2017, Monodepth2: Adam 1e-4); the paper's value is [R]."""

    name: OptimizerName = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    min_lr_ratio: float = 1.0


#: The faithfulness switches of :class:`~evssl.methods.meta_vo.MetaVO`: values of the ``None`` fields of
#: :class:`MetaConfig` (``first_order``, ``inner_lr``) and :class:`OnlineConfig` (``lr``), filled in by
#: :func:`~evssl.methods.base.apply_preset`.
META_VO_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's text as far as the digest recalls it ([R]): second-order meta-gradient, alpha ~ 1e-4, one step.
    "paper": {"first_order": False, "inner_lr": 1e-4, "lr": 1e-4},
    # Small-compute recipe for tiny networks on simulator sequences: same objective, a much larger inner step. The
    # photometric gradients of a width-8 ResNet on 32x48 windows have a squared norm of ~1e-3, so alpha = 1e-4 would
    # change the window loss by ~1e-7 per step (nothing to meta-learn); alpha = 1 lowers it by ~2 % (measured once on
    # an untrained network; not tuned on the benchmark).
    "small": {"first_order": False, "inner_lr": 1.0, "lr": 1.0},
}
