"""Option groups of :class:`~evssl.methods.ecddp.ECDDP` and its preset table (the faithfulness switches).

Plain dataclasses, so ``jsonargparse`` reads them from YAML as nested dicts::

    model:
      class_path: evssl.methods.ECDDP
      init_args:
        heads: {neck_dim: 768, num_prototypes: 32768}
        crops: {input_size: [224, 224], global_size: 192, local_size: 96, num_local: 8}
        masking: {exact: true}          # a switch: None (left out) = the preset's value
        context: {num_clusters: 8, log_every_n_epochs: 5}
        loss: {warmup_teacher_temp_epochs: 30}
        swin: {padding: official}       # a switch
        preset: official

Switch fields default to ``None`` and are filled from :data:`ECDDP_PRESETS` by :func:`ecddp_preset`
(:func:`~evssl.methods.base.apply_preset`); what each switch means is in :mod:`evssl.methods.ecddp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from evssl.methods.base import apply_preset
from evssl.optim import OptimConfig

__all__ = [
    "ECDDP_PRESETS",
    "ECDDP_RECIPES",
    "ECDDPContext",
    "ECDDPCrops",
    "ECDDPHeads",
    "ECDDPLoss",
    "ECDDPMasking",
    "ECDDPOptim",
    "ECDDPSwin",
    "ecddp_preset",
]


def _pair(value: Any, cast: type) -> tuple:
    return (cast(value[0]), cast(value[1]))


def _check(group: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"ECDDP {group}.{name} must be one of {allowed}, got {value!r}")


# ================================================================================================ option groups
@dataclass
class ECDDPHeads:
    """Neck and the three prototype heads (paper: neck 768, DINO heads 2048-256-32 768, 2 pooling blocks).

    Attributes:
        neck_dim: width of the stride-16 neck (768 = Swin-T's last stage).
        num_prototypes: prototypes of each of the three heads (32 768 in the paper).
        hidden_dim, bottleneck_dim, num_layers: DINO head MLP (2048, 256, 3).
        norm_last_layer: fix the weight-norm gain of the prototypes (ECDDP/DINOv2: trained, ``False``).
        pool_layers, pool_heads: attention pooling blocks (2) and heads (``None`` = ``neck_dim // 32``).
        freeze_last_layer_epochs: epochs during which the prototypes get no update (1).
    """

    neck_dim: int = 768
    num_prototypes: int = 32768
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    norm_last_layer: bool = False
    pool_layers: int = 2
    pool_heads: int | None = None
    freeze_last_layer_epochs: int = 1


@dataclass
class ECDDPCrops:
    """The teacher's full view and the student's crops (paper: 224 full view, 2 x 192 global, 8 x 96 local).

    Attributes:
        input_size: (H, W) of the teacher's full view, randomly cropped from the input on the device (224 in the
            paper); ``None`` uses the input as it is.
        global_size, local_size: crop sides (192, 96); multiples of the neck stride.
        num_local: local crops (8). global_scale, local_scale: area ranges ((0.32, 1), (0.05, 0.32)).
        ratio: aspect-ratio range (3/4, 4/3). hflip_p: flip probability of every crop (0.5).
        interpolation: ``"bilinear"`` (Kornia, as the paper) or ``"nearest"``.
    """

    input_size: tuple[int, int] | None = None
    global_size: int = 192
    local_size: int = 96
    num_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip_p: float = 0.5
    interpolation: Literal["bilinear", "nearest"] = "bilinear"

    def __post_init__(self) -> None:
        _check("crops", "interpolation", self.interpolation, ("bilinear", "nearest"))
        self.input_size = None if self.input_size is None else _pair(self.input_size, int)
        self.global_scale, self.local_scale = _pair(self.global_scale, float), _pair(self.local_scale, float)
        self.ratio = _pair(self.ratio, float)


@dataclass
class ECDDPMasking:
    """iBOT block masks of the global crops (:func:`~evssl.nn.masking.ibot_block_masks`).

    Attributes:
        probability: fraction of global crops that are masked (0.5). ratio: ratio range (0.1, 0.5).
        min_patches: smallest block (4). max_block_fraction: largest block / tokens (0.5).
        exact: top the block mask up to its exact count. count: ``"grid"`` or ``"official"`` counting base (module
            docstring, C2). ``None`` = the preset's.
    """

    probability: float = 0.5
    ratio: tuple[float, float] = (0.1, 0.5)
    min_patches: int = 4
    max_block_fraction: float = 0.5
    exact: bool | None = None
    count: Literal["grid", "official"] | None = None

    def __post_init__(self) -> None:
        _check("masking", "count", self.count, (None, "grid", "official"))
        self.ratio = _pair(self.ratio, float)


@dataclass
class ECDDPContext:
    """K-means contexts of the teacher's full view, and their pictures.

    Attributes:
        num_clusters: contexts per image (8). kmeans_iters: iterations (10).
        kmeans_empty: empty-cluster rule, ``"reseed"`` or ``"keep"`` (:func:`~evssl.losses.ecddp.cosine_kmeans`).
        log_every_n_epochs: log K-means context pictures every n epochs (0 = never). log_num_samples: pictures per
            log.
    """

    num_clusters: int = 8
    kmeans_iters: int = 10
    kmeans_empty: Literal["reseed", "keep"] = "reseed"
    log_every_n_epochs: int = 1
    log_num_samples: int = 4

    def __post_init__(self) -> None:
        _check("context", "kmeans_empty", self.kmeans_empty, ("reseed", "keep"))


@dataclass
class ECDDPLoss:
    r"""Temperatures, Sinkhorn centring and weights of the objective.

    Attributes:
        student_temp: 0.1. teacher_temp: final teacher temperature (0.07). warmup_teacher_temp: initial (0.04).
        warmup_teacher_temp_epochs: linear warm-up length (30 in the official trainer).
        sinkhorn_iters: Sinkhorn–Knopp iterations (3).
        context_weight: :math:`\lambda_1` before L1 normalisation (2). patch_weight: iBOT weight (1).
        crop_weight: DINO ``loss_weight`` of the crop-level (image + context) terms (1).
    """

    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30.0
    sinkhorn_iters: int = 3
    context_weight: float = 2.0
    patch_weight: float = 1.0
    crop_weight: float = 1.0


@dataclass
class ECDDPSwin:
    """How ECDDP runs the Swin backbone and which one it exports.

    Attributes:
        padding: ``"masked"`` or ``"official"`` Swin windows (module docstring, C1); ``None`` = the preset's. Set on
            the backbone's blocks and written into the exported backbone's config.
        export_teacher: export the EMA teacher's backbone instead of the student's.
    """

    padding: Literal["masked", "official"] | None = None
    export_teacher: bool = False

    def __post_init__(self) -> None:
        _check("swin", "padding", self.padding, (None, "masked", "official"))


@dataclass
class ECDDPOptim(OptimConfig):
    """ECDDP's recipe (supp. Tab. 3, ``config/pretrain/swin_small.yml``): AdamW, lr 5e-4 per 256 samples, 10 warm-up
    epochs, cosine to ``min_lr_ratio`` of the peak, weight decay cosine 0.04 -> 0.4."""

    lr: float = 5e-4
    weight_decay: float = 0.04
    weight_decay_end: float | None = 0.4
    warmup_epochs: float = 10.0
    min_lr_ratio: float = 0.002
    lr_batch_scale: bool = True
    no_decay: tuple[str, ...] | None = None  # None = the preset's weight-decay policy


#: The faithfulness switches of :class:`ECDDP`, one table per option group (``None`` fields take these values);
#: ``optim.patch_embed_no_decay`` is no option: the patch-embedding group's own policy (``None`` = ``optim.no_decay``).
ECDDP_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # official code (``trainer/pretrain_trainer.py:params_groups``): every >= 2-D parameter decays (tokens, the
    # mask token, rel-pos tables, weight_g included); the patch-embed group (conv bias and LN too) decays x1
    "official": {
        "optim": {"no_decay": ("bias", "norm"), "patch_embed_no_decay": ()},
        "masking": {"count": "official", "exact": False},
        "swin": {"padding": "official"},
    },
    # the usual DINO/iBOT/Swin policy: no decay on 1-D parameters, tokens, position tables
    "paper": {
        "optim": {"no_decay": OptimConfig().no_decay, "patch_embed_no_decay": None},
        "masking": {"count": "grid", "exact": True},
        "swin": {"padding": "masked"},
    },
}
# evssl's small-budget recipe: the official switches; its optimiser and loss in ECDDP_RECIPES
ECDDP_PRESETS["small"] = ECDDP_PRESETS["official"]

#: Recipes of the presets that have one: the option groups a preset supplies where the config leaves them out.
#: ``small`` is NOT the paper's recipe: it is the one evssl's CPU-budget runs use (a thousand or a few thousand
#: clips, 500-1,500 steps of batch 64): AdamW lr 2e-3 per 256 samples (5e-4 at batch 64; the paper's 5e-4 per 256
#: is for 4096-sample batches and 100+ epochs) and the teacher temperature held at 0.04 (the paper warms 0.04 -> 0.07
#: over 30 epochs, which a 30-epoch run never leaves) — the recipe of ``benchmarks/ecddp_dense.py``, never tuned on
#: a test split; the README's benchmark section has what it reaches.
ECDDP_RECIPES: dict[str, dict[str, Any]] = {
    "small": {"optim": ECDDPOptim(lr=2e-3), "loss": ECDDPLoss(teacher_temp=0.04, warmup_teacher_temp=0.04)},
}


def ecddp_preset(
    preset: str, optim: ECDDPOptim, masking: ECDDPMasking, swin: ECDDPSwin
) -> tuple[ECDDPOptim, ECDDPMasking, ECDDPSwin]:
    """Fill the ``None`` switches of ``optim``, ``masking`` and ``swin`` from :data:`ECDDP_PRESETS` (explicit values
    win)."""

    def fill(options: Any, group: str) -> Any:
        return apply_preset(options, {name: t[group] for name, t in ECDDP_PRESETS.items()}, preset, "ECDDP")

    return fill(optim, "optim"), fill(masking, "masking"), fill(swin, "swin")
