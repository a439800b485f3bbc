"""ECDP's optimiser recipe and the one table of its faithfulness switches (:data:`ECDP_PRESETS`).

:class:`ECDPOptim` is a plain dataclass read by jsonargparse (``model.init_args.optim``). The switches are
constructor arguments of :class:`~evssl.methods.ecdp.ECDP` that default to ``None`` = "the preset's value", filled
by :func:`ecdp_switches`; what each switch means (paper vs. official code) is in :mod:`evssl.methods.ecdp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evssl.optim import OptimConfig

__all__ = ["ECDP_PRESETS", "ECDP_RECIPES", "ECDPOptim", "ecdp_switches"]


@dataclass
class ECDPOptim(OptimConfig):
    """ECDP's ViT-S recipe (``config/ours/base/ours_pretraining_base.yml``, ``pr_vits.yml``): AdamW, base lr
    1.5e-4 per 256 samples, weight decay 0.03, 40 warm-up epochs, cosine to 0."""

    lr: float = 1.5e-4
    weight_decay: float = 0.03
    warmup_epochs: float = 40.0
    lr_batch_scale: bool = True
    no_decay: tuple[str, ...] | None = None  # None = the preset's weight-decay policy


#: The faithfulness switches of :class:`~evssl.methods.ecdp.ECDP` (``None`` arguments and ``optim.no_decay: null``
#: take these values).
ECDP_PRESETS: dict[str, dict[str, Any]] = {
    # official code: top-K of d*u masking, no gradient through the image keys of L_RGB, AdamW over
    # ``model.parameters()`` with one weight decay for all (``trainer/pr_trainer.py:214-219``)
    "official": {"mask_form": "code", "rgb_key_grad": "none", "no_decay": (), "sinkhorn_ranks": "official"},
    # paper text: sampling proportional to density (Eq. 1), h_I trained by L_RGB (§3.3), usual no-decay kinds
    "paper": {
        "mask_form": "paper",
        "rgb_key_grad": "global",
        "no_decay": OptimConfig().no_decay,
        "sinkhorn_ranks": "local",
    },
}
# evssl's small-budget recipe: the official switches; its optimiser in ECDP_RECIPES
ECDP_PRESETS["small"] = ECDP_PRESETS["official"]

#: Recipes of the presets that have one: the option groups a preset supplies where the config leaves them out.
#: ``small`` is NOT the paper's recipe: it is the one evssl's CPU-budget runs use (a few thousand clips, 1,500 steps
#: of batch 64): AdamW lr 4e-3 per 256 samples (1e-3 at batch 64; the paper's 1.5e-4 per 256 is for 300 epochs of
#: ImageNet-scale data), weight decay 0.05, a 3-epoch warm-up (not 40) — the recipe of
#: ``experiments/ecdp/synthetic_small.yaml`` and ``benchmarks/ecdp_probe.py``, never tuned on a test split; the
#: README's benchmark section has what it reaches.
ECDP_RECIPES: dict[str, dict[str, Any]] = {
    "small": {"optim": ECDPOptim(lr=4e-3, weight_decay=0.05, warmup_epochs=3.0)},
}


def ecdp_switches(
    preset: str, mask_form: str | None, rgb_key_grad: str | None, sinkhorn_ranks: str | None, kl_form: str
) -> dict[str, Any]:
    """The checked switches of one ECDP: ``{"mask_form", "rgb_key_grad", "sinkhorn_ranks", "no_decay"}``, each the
    explicit argument or, where it is ``None``, the value of ``ECDP_PRESETS[preset]`` (``no_decay`` always the
    preset's: the caller uses it only when ``optim.no_decay`` is ``None``). ``kl_form`` (no preset) is checked too."""
    table = ECDP_PRESETS.get(preset)
    if table is None:
        raise ValueError(f"ECDP: unknown preset {preset!r}; expected one of {sorted(ECDP_PRESETS)}")
    mask_form = table["mask_form"] if mask_form is None else mask_form
    rgb_key_grad = table["rgb_key_grad"] if rgb_key_grad is None else rgb_key_grad
    sinkhorn_ranks = table["sinkhorn_ranks"] if sinkhorn_ranks is None else sinkhorn_ranks
    if sinkhorn_ranks not in ("local", "official"):
        raise ValueError(f"ECDP: sinkhorn_ranks must be 'local' or 'official', got {sinkhorn_ranks!r}")
    if mask_form not in ("paper", "code") or kl_form not in ("paper", "code"):
        raise ValueError("mask_form and kl_form must be 'paper' or 'code'")
    if rgb_key_grad not in ("global", "local", "none"):
        raise ValueError(f"rgb_key_grad must be 'global', 'local' or 'none', got {rgb_key_grad!r}")
    return {
        "mask_form": mask_form,
        "rgb_key_grad": rgb_key_grad,
        "sinkhorn_ranks": sinkhorn_ranks,
        "no_decay": tuple(table["no_decay"]),
    }
