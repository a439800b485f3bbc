"""EvDistill's option groups and the one table of its faithfulness switches (:data:`PRESETS`).

Plain dataclasses read by jsonargparse (``model.init_args.head`` / ``bmr`` / ``kd`` / ``loss`` / ``optim``); switch
fields default to ``None`` = "the preset's value", filled by :func:`~evssl.methods.base.apply_preset`. The sources
of every default are in :mod:`evssl.methods.evdistill`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from evssl.nn.generators import OutputActivation
from evssl.optim import OptimConfig

__all__ = ["PRESETS", "BMRConfig", "EvDistillOptim", "HeadConfig", "KDConfig", "LossConfig", "Preset", "Stage"]

Preset = Literal["paper", "official", "small"]
Stage = Literal["aspp", "decoder", "logits", "pointwise", "layer1", "layer2", "layer3", "layer4"]


@dataclass
class BMRConfig:
    """Bidirectional modality reconstruction (E2I and I2E generators).

    Attributes:
        enabled: learnable generators; ``False`` replaces them by the fixed maps
            :func:`~evssl.nn.generators.naive_e2i` / :func:`~evssl.nn.generators.naive_i2e` (the "BMR off" ablation;
            evssl choice — the paper's ablation setting is not available).
        width, depth: default U-Net generators' first width and levels.
        e2i_activation: E2I output range (``sigmoid`` = frames in [0, 1], the official loader's ``ToTensor``).
        i2e_activation, i2e_scale: I2E output range; match the event representation (``sigmoid`` for
            ``Histogram(normalize=True)`` in [0, 1], ``tanh`` with a scale for signed voxel grids).
        rec_weight: L1 reconstruction on paired samples. ssim_weight: ``(1 - SSIM) / 2`` on the E2I image (paired).
        cycle_weight: L1 cycle consistency ``G_ei(G_ie(x_a)) ≈ x_a``, ``G_ie(G_ei(x_e)) ≈ x_e`` (evssl choice;
            ``None`` = preset).
        kd_through_teacher: the event-pair KD gradient flows through the frozen teacher into E2I (the abstract: BMR
            is trained end to end by the task and KD losses); ``False`` detaches the teacher's side (``None`` =
            preset).
    """

    enabled: bool = True
    width: int = 16
    depth: int = 2
    e2i_activation: OutputActivation = "sigmoid"
    i2e_activation: OutputActivation = "sigmoid"
    i2e_scale: float = 1.0
    rec_weight: float = 1.0
    ssim_weight: float = 0.0
    cycle_weight: float | None = None
    kd_through_teacher: bool | None = None


@dataclass
class KDConfig:
    """The three KD families, each with its weight (0 = off), plus optional mutual distillation.

    Attributes:
        logit_weight, tau: temperature logit KD (``None`` τ = preset).
        dist_weight, dist_form, dist_stage, dist_tau: distribution matching; ``spatial_softmax`` (per-channel
            spatial-softmax KL) or ``moments`` (per-channel mean / std); ``None`` form = preset.
        affinity_weight, affinity_stage, affinity_nodes: affinity-graph KD on a stage, pooled to at most
            ``affinity_nodes`` nodes (memory O(B N²)); ``pointwise`` = the 1x1 projection of the logits.
        pairs: which crafted pairs are distilled: ``"event"`` (S(x_e) vs T(E2I(x_e))), ``"image"`` (S(I2E(x_a))
            vs T(x_a)).
        mutual_weight: mutual distillation between S(x_e) and S(I2E(x_a)) on paired samples (0 = off).
    """

    logit_weight: float = 1.0
    tau: float | None = None
    dist_weight: float = 1.0
    dist_form: Literal["spatial_softmax", "moments"] | None = None
    dist_stage: Stage = "decoder"
    dist_tau: float = 1.0
    affinity_weight: float = 1.0
    affinity_stage: Stage | None = None
    affinity_nodes: int = 256
    pairs: tuple[str, ...] = ("event", "image")
    mutual_weight: float = 0.0


@dataclass
class LossConfig:
    """Task terms: CE on I2E-crafted events with the frame's labels; CE on the events' own labels (upper bound).

    Attributes:
        ce_weight: CE of the student on I2E-crafted events with the frame's labels.
        use_event_labels: train the student also on its events' own labels, weight ``event_label_weight`` (an
            upper bound; the sampler must provide them, :class:`~evssl.data.views.evdistill.CrossModalPairs`
            ``use_event_labels``).
    """

    ce_weight: float = 1.0
    use_event_labels: bool = False
    event_label_weight: float = 1.0


#: The faithfulness switches of each preset (fields left ``None`` in the option groups take these values).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"tau": 1.0, "dist_form": "spatial_softmax", "affinity_stage": "decoder", "cycle_weight": 0.0,
              "kd_through_teacher": True},
    "official": {"tau": 1.0, "dist_form": "spatial_softmax", "affinity_stage": "pointwise", "cycle_weight": 0.0,
                 "kd_through_teacher": True},
    "small": {"tau": 2.0, "dist_form": "spatial_softmax", "affinity_stage": "decoder", "cycle_weight": 1.0,
              "kd_through_teacher": True},
}  # fmt: skip


@dataclass
class HeadConfig:
    """DeepLab head sizes shared by teacher and student (official: ASPP 256, rates 6/12/18, decoder 256, 48)."""

    aspp_channels: int = 256
    aspp_rates: tuple[int, int, int] = (6, 12, 18)
    aspp_dropout: float = 0.5
    decoder_channels: int = 256
    low_level_channels: int = 48
    decoder_dropouts: tuple[float, float] = (0.5, 0.1)


@dataclass
class EvDistillOptim(OptimConfig):
    """EvDistill default optimisation: AdamW, lr 1e-3, weight decay 1e-4 (the DeepLab skeleton of the official code
    uses SGD 0.9, lr 1e-2, wd 5e-4 — the paper-scale configs set that).

    Attributes:
        head_lr_scale: lr multiplier of the trained network's DeepLab head (ASPP + decoder): the student's in
            :class:`~evssl.methods.evdistill.EvDistill`, the teacher's in
            :class:`~evssl.methods.evdistill_teacher.EvDistillTeacher` (the official skeleton uses 10).
    """

    weight_decay: float = 1e-4
    head_lr_scale: float = 1.0
