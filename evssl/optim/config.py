"""Option groups of the optimisation: :class:`OptimConfig`, :class:`LrRule`, :class:`EmaConfig`.

Plain dataclasses, so ``jsonargparse`` (LightningCLI) reads them from YAML natively::

    model:
      init_args:
        optim: {name: lars, lr: 0.2, lr_rules: [{pattern: ".*predictor.*", scale: 10, where: gradient}]}
        ema: {momentum: 0.99}

A method or task may declare a subclass with other defaults (e.g. BraVe's LARS recipe) as the type of its ``optim``
argument; the fields a YAML block leaves out then take that subclass's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["NO_DECAY_KINDS", "EmaConfig", "LrRule", "OptimConfig", "OptimizerName"]

OptimizerName = Literal["adamw", "sgd", "lars"]

#: Parameter kinds the weight-decay policy can exclude (see :func:`evssl.optim.groups.parameter_kinds`).
NO_DECAY_KINDS: tuple[str, ...] = ("bias", "norm", "token", "pos", "relpos", "mask_token")


@dataclass
class LrRule:
    """One learning-rate rule: parameters whose full name matches ``pattern`` (``re.search``) get ``scale``.

    Args:
        pattern: regular expression searched in the full parameter name, e.g. ``".*predictor.*"``.
        scale: multiplier.
        where: ``"step"`` multiplies the group's learning rate (the update after the optimizer transform);
            ``"gradient"`` multiplies the gradient *before* the optimizer transform, as BraVe's
            ``_scale_by_module_name`` chained before ``optax.lars`` (``brave/training/optimizers.py``). Under LARS
            the trust ratio ``eta ||w|| / ||s g + wd w||`` then cancels ``s`` except against weight decay; under
            AdamW it is cancelled by the second-moment normalisation (up to ``eps``); under SGD it equals a step
            scale except that weight decay is not scaled.
    """

    pattern: str
    scale: float
    where: Literal["step", "gradient"] = "step"


@dataclass
class OptimConfig:
    """Optimizer, schedule and parameter-group policy shared by methods and tasks.

    Args:
        name: ``"adamw"`` (Loshchilov & Hutter 2019), ``"sgd"`` (momentum) or ``"lars"`` (You et al. 2017).
        lr: peak learning rate (per 256 samples when ``lr_batch_scale``).
        weight_decay: weight decay of the decaying parameters.
        weight_decay_end: when set, weight decay follows a cosine ``weight_decay -> weight_decay_end`` (DINO, ECDDP).
        betas: AdamW betas.
        momentum: SGD / LARS momentum.
        warmup_epochs: linear warm-up from 0, in epochs (fractions allowed).
        min_lr_ratio: final lr as a fraction of the (batch-scaled) peak, reached by the half-cosine.
        lr_batch_scale: linear scaling rule ``lr * global_batch / 256`` (Goyal et al. 2017).
        no_decay: parameter kinds without weight decay (and, under LARS with ``lars_masks="intent"``, without the
            trust ratio): ``bias`` (1-D ``*.bias``), ``norm`` (other 1-D parameters: norm scales), ``token``
            (``cls_token``, ``special_tokens``, AttentionPool queries), ``pos`` (position embeddings), ``relpos``
            (Swin ``relative_position_bias_table``), ``mask_token``. ``()`` decays every parameter (ECDP official).
        lr_rules: :class:`LrRule` s applied in order (scales multiply).
        lars_masks: which parameters LARS adapts. ``"intent"``: weight decay and trust ratio on every decaying
            parameter (BYOL §C; what BraVe's mask function is named for). ``"released"``: the masks exactly as the
            released BraVe code passes them: ``exclude_bias_and_normalizers`` returns **True** for biases and norms
            and optax reads True as *apply*, so weight decay and the trust ratio act **only** on the ``no_decay``
            parameters and weight matrices get plain (Nesterov) momentum SGD. Only meaningful with ``name="lars"``.
    """

    name: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    weight_decay_end: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    lr_batch_scale: bool = False
    no_decay: tuple[str, ...] = NO_DECAY_KINDS
    lr_rules: tuple[LrRule, ...] = ()
    lars_masks: Literal["intent", "released"] = "intent"

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "sgd", "lars"):
            raise ValueError(f"optim.name must be 'adamw', 'sgd' or 'lars', got {self.name!r}")
        if self.lr < 0 or self.weight_decay < 0:
            raise ValueError(f"optim.lr and optim.weight_decay must be >= 0, got {self.lr} and {self.weight_decay}")
        # ``None`` (a method's optim subclass): "the method preset's policy", filled in by the method;
        # :func:`evssl.optim.param_groups` reads a ``None`` left over as the default kinds
        bad = [k for k in self.no_decay or () if k not in NO_DECAY_KINDS]
        if bad:
            raise ValueError(f"optim.no_decay has unknown kinds {bad}; expected a subset of {NO_DECAY_KINDS}")
        if self.lars_masks not in ("intent", "released"):
            raise ValueError(f"optim.lars_masks must be 'intent' or 'released', got {self.lars_masks!r}")
        self.no_decay = None if self.no_decay is None else tuple(self.no_decay)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.lr_rules = tuple(r if isinstance(r, LrRule) else LrRule(**dict(r)) for r in self.lr_rules)
        for r in self.lr_rules:
            if r.where not in ("step", "gradient"):
                raise ValueError(f"optim.lr_rules[{r.pattern!r}].where must be 'step' or 'gradient', got {r.where!r}")


@dataclass
class EmaConfig:
    """EMA teacher momentum: cosine from ``momentum`` (step 0) to ``momentum_end`` (last step), BYOL §3.2."""

    momentum: float = 0.996
    momentum_end: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.momentum <= 1.0 and 0.0 <= self.momentum_end <= 1.0):
            raise ValueError(f"ema momenta must be in [0, 1], got {self.momentum} and {self.momentum_end}")
