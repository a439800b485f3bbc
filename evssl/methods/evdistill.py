r"""EvDistill (Wang, Chae, Yoon, Kim, Yoon, *EvDistill: Asynchronous Events to End-task Learning via Bidirectional
Reconstruction-guided Cross-modal Knowledge Distillation*, CVPR 2021, arXiv 2111.12341).

An event **student** learns an end task (semantic segmentation, or recognition) from a frozen image **teacher**
trained on labelled frames, with unlabelled and — by default — unpaired event data. The official repository
(``addisonwang2013/evdistill``) ships evaluation code only; this is a complete training implementation. Notation:
:math:`x_e` event representation, :math:`x_a` frame in :math:`[0, 1]`, :math:`y_a` the frame's labels, :math:`T`
teacher, :math:`S` student, :math:`G_{ei}` E2I, :math:`G_{ie}` I2E.

**Networks** (official code: DeepLabV3+, ResNet-101, output stride 16, 6 DDD17 classes): teacher and student are the
same family, :class:`~evssl.nn.deeplab.DeepLabV3Plus` (or :class:`~evssl.nn.deeplab.DeepLabClassifier` for
recognition) on any ResNet of :mod:`evssl.nn.backbones` (``output_stride=16``); the student's encoder is
``backbone`` (``in_chans`` linked from the event representation), the teacher's is ``teacher_backbone`` (3
channels).

**Teacher stage**: :class:`~evssl.methods.evdistill_teacher.EvDistillTeacher` trains
:math:`\mathcal L_T = \mathrm{CE}(T(x_a), y_a)` on frames only; ``teacher_checkpoint`` loads it into
:class:`EvDistill`, where it is frozen (eval mode, ``requires_grad=False``, not in the optimizer, not exported).

**BMR** (bidirectional modality reconstruction): two trainable generators, E2I :math:`G_{ei}` (events -> an image
the teacher reads, sigmoid range :math:`[0, 1]`) and I2E :math:`G_{ie}` (frame -> an event tensor the student reads);
small U-Nets by default (:class:`~evssl.nn.generators.UNetGenerator`), any module by ``class_path``. Crafted pairs
:math:`(x_e, G_{ei}(x_e))` and :math:`(G_{ie}(x_a), x_a)`. Losses of one batch (weights in :class:`KDConfig`,
:class:`BMRConfig`, :class:`LossConfig`):

.. math::
    \mathcal L = \underbrace{\lambda_{ce}\,\mathrm{CE}(S(G_{ie}(x_a)), y_a)}_{\text{task on crafted events}}
      + \sum_{(s, t)\in P} \big[\lambda_{kd}\,\mathcal L_{KD}(s, t) + \lambda_{dm}\,\mathcal L_{DM}(s, t)
      + \lambda_{ag}\,\mathcal L_{AG}(s, t)\big]
      + \lambda_{rec}\,[\|G_{ei}(x_e) - x_a\|_1 + \|G_{ie}(x_a) - x_e\|_1]_{\text{paired}}
      + \lambda_{cyc}\,[\|G_{ei}(G_{ie}(x_a)) - x_a\|_1 + \|G_{ie}(G_{ei}(x_e)) - x_e\|_1]
      (+ \lambda_{md}\,\mathcal L_{MD} + \lambda_{ev}\,\mathrm{CE}(S(x_e), y_e))

with the pairs :math:`P = \{(S(x_e), T(G_{ei}(x_e))),\ (S(G_{ie}(x_a)), T(x_a))\}` ("event" and "image" pair),
:math:`\mathcal L_{KD}` temperature logit KD (per pixel, :math:`\tau^2`), :math:`\mathcal L_{DM}` distribution
matching of a chosen stage (per-channel spatial-softmax KL or moment matching) and :math:`\mathcal L_{AG}` the
affinity-graph loss (cosine affinities of pooled spatial nodes) — :mod:`evssl.losses.kd`. The reconstruction term is
on only for samples whose frame is the event window's own (``batch["paired"]``); the event-label CE only with
``use_event_labels=True`` (an upper bound, off by default; the student otherwise never sees an event label).
:math:`\mathcal L_{MD}` (mutual distillation, paired samples only) is the symmetric KL between the student's
predictions on :math:`x_e` and on :math:`G_{ie}(x_a)` (evssl's form of the paper's MD variant).

Where the paper's equations were not available, each choice is a switch with its source: ``preset`` sets them in
one place (:data:`~evssl.methods.evdistill_options.PRESETS`, beside the option groups): ``paper`` (what the abstract
states: BMR trained end to end by the task and KD losses, so the event-pair KD gradient also flows through the frozen
teacher into E2I; no cycle term), ``official`` (as ``paper``, with the affinity graph on the 1x1 ``pointwise``
projection of the logits that the official ``DeepLab_Dual`` declares "used to compute the affinity matrix"),
``small`` (evssl's CPU recipe: adds the cycle term so that unpaired generators get a reconstruction signal, τ = 2).

Evaluation (student only, on events with their own labels; :class:`~evssl.metrics.segmentation.EndTaskMetrics`):
confusion-matrix mIoU with ignore index (the official ``evaluate.py``: ``IoU_c = CM_cc / (Σ_j CM_cj + Σ_i CM_ic −
CM_cc)``, ``nanmean`` over classes), mean class and pixel accuracy and per-class IoU; recognition: top-1 / top-5. The
teacher on the frames is logged as the reference row (``val/teacher_*``). Pictures:
:class:`~evssl.callbacks.evdistill_media.EvDistillImageLogger`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from evssl.losses.kd import (
    affinity_kd,
    l1_reconstruction,
    logit_kd,
    moment_matching,
    spatial_softmax_kl,
    ssim_loss,
)
from evssl.methods.base import PretrainMethod, SSLOutput, apply_preset
from evssl.methods.evdistill_options import PRESETS, BMRConfig, EvDistillOptim, HeadConfig, KDConfig, LossConfig, Preset
from evssl.methods.evdistill_teacher import EvDistillTeacher, build_deeplab, end_task_classes, load_teacher_weights
from evssl.metrics.segmentation import EndTask, EndTaskMetrics
from evssl.nn.deeplab import PointwiseProjection
from evssl.nn.generators import UNetGenerator, frame01, naive_e2i, naive_i2e
from evssl.nn.probe import ProbeConfig
from evssl.optim import configure_optimization
from evssl.utils.hparams import as_config, save_hparams

__all__ = [
    "PRESETS",
    "BMRConfig",
    "EvDistill",
    "EvDistillOptim",
    "EvDistillTeacher",
    "HeadConfig",
    "KDConfig",
    "LossConfig",
    "Preset",
]


# ================================================================================================ the method
class EvDistill(PretrainMethod):
    """EvDistill: frozen image teacher -> event student through BMR-crafted pairs and three KD families.

    The full objective and the sources of every choice are in the module docstring.

    Args:
        backbone: the student's encoder (``in_chans`` linked from the event representation by the CLI); ``evssl
            export`` writes it, and it loads into :class:`~evssl.tasks.SemanticSegmentation` by ``pretrained``.
        teacher_backbone: the teacher's encoder (3 channels), same family as the student.
        task: ``"segmentation"`` (DeepLabV3+) or ``"recognition"`` (pooled logits).
        num_semantic_classes: segmentation classes (6 on DDD17, 11 on the synthetic sets).
        num_classes: recognition classes (linked from ``data.num_classes``).
        ignore_index: unlabelled pixels (255).
        teacher_checkpoint: an :class:`EvDistillTeacher` checkpoint (``teacher.*`` keys) or a plain state dict of
            the teacher network, loaded at ``setup``; ``None`` leaves the teacher random (warned: smoke runs only).
        preset: ``"paper"``, ``"official"`` or ``"small"`` (:data:`PRESETS`).
        head: DeepLab head sizes of both networks (:class:`~evssl.methods.evdistill_teacher.HeadConfig`). bmr, kd,
            loss: option groups (:class:`BMRConfig`, :class:`KDConfig`, :class:`LossConfig`).
        e2i, i2e: generator modules (``None`` = :class:`~evssl.nn.generators.UNetGenerator` from ``bmr``).
        optim: optimisation (:class:`~evssl.methods.evdistill_teacher.EvDistillOptim`, with ``head_lr_scale`` for
            the student's ASPP + decoder). There is no online probe: EvDistill evaluates the student
            itself (mIoU / top-1 on events), so the CLI's ``probe.classes`` link has no target here.
    """

    def __init__(
        self,
        backbone: nn.Module,
        teacher_backbone: nn.Module,
        task: EndTask = "segmentation",
        num_semantic_classes: int = 11,
        num_classes: int = 0,
        ignore_index: int = 255,
        teacher_checkpoint: str | None = None,
        preset: Preset = "paper",
        head: HeadConfig | None = None,
        bmr: BMRConfig | None = None,
        kd: KDConfig | None = None,
        loss: LossConfig | None = None,
        e2i: nn.Module | None = None,
        i2e: nn.Module | None = None,
        optim: EvDistillOptim | None = None,
    ) -> None:
        super().__init__(backbone, optim=optim, probe=ProbeConfig(enabled=False), default_optim=EvDistillOptim())
        save_hparams(self, inspect.currentframe())
        for key in ("ema", "probe"):  # the base's arguments that EvDistill does not take
            self.hparams.pop(key, None)
            self._hparams_initial.pop(key, None)
        self.task = task
        self.n_classes = end_task_classes(task, num_semantic_classes, num_classes)
        self.ignore_index = int(ignore_index)
        self.preset = preset
        self.head_config = as_config(HeadConfig, head)
        self.bmr = apply_preset(as_config(BMRConfig, bmr), PRESETS, preset, "EvDistill")
        self.kd = apply_preset(as_config(KDConfig, kd), PRESETS, preset, "EvDistill")
        self.loss_config = as_config(LossConfig, loss)
        self.teacher_checkpoint = teacher_checkpoint
        bad = set(self.kd.pairs) - {"event", "image"}
        if bad:
            raise ValueError(f"EvDistill kd.pairs must be drawn from ('event', 'image'), got {sorted(bad)}")
        ev_ch = getattr(backbone, "in_chans", None)
        if not isinstance(ev_ch, int):
            raise ValueError("EvDistill needs backbone.in_chans (the event representation's channels)")
        if getattr(teacher_backbone, "in_chans", 3) != 3:
            raise ValueError(f"EvDistill's teacher reads RGB frames: teacher_backbone.in_chans must be 3, "
                             f"got {teacher_backbone.in_chans}")  # fmt: skip
        self.event_channels = ev_ch
        self.student = build_deeplab(task, backbone, self.n_classes, self.head_config)
        self.teacher = build_deeplab(task, teacher_backbone, self.n_classes, self.head_config)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.e2i: nn.Module | None = None
        self.i2e: nn.Module | None = None
        if self.bmr.enabled:
            b = self.bmr
            self.e2i = e2i if e2i is not None else UNetGenerator(ev_ch, 3, b.width, b.depth, b.e2i_activation)
            self.i2e = i2e if i2e is not None else UNetGenerator(3, ev_ch, b.width, b.depth, b.i2e_activation,
                                                                 b.i2e_scale)  # fmt: skip
        elif e2i is not None or i2e is not None:
            raise ValueError("EvDistill: e2i / i2e generators given with bmr.enabled=false")
        uses_pointwise = "pointwise" in (self.kd.affinity_stage, self.kd.dist_stage)
        self.pointwise = PointwiseProjection(self.n_classes) if uses_pointwise else None
        # distribution matching needs equal channels: a 1x1 adapter on the student side when they differ
        self.dist_adapter = self._make_adapter() if self.kd.dist_weight > 0 else None
        self._teacher_loaded = False
        self.eval_metrics = nn.ModuleDict({
            f"{stage}_{who}": EndTaskMetrics(task, self.n_classes, self.ignore_index)
            for stage in ("val", "test") for who in ("student", "teacher")
        })  # fmt: skip

    # ------------------------------------------------------------------------------------------------ setup
    def _make_adapter(self) -> nn.Module | None:
        """A 1x1 conv from the student's to the teacher's channels at ``kd.dist_stage`` when they differ (probed
        with a zero input in eval mode, so no BN statistics change)."""
        stage = self.kd.dist_stage
        probed = [m for m in (self.student, self.teacher, self.pointwise) if m is not None]
        modes = [m.training for m in probed]
        with torch.no_grad():
            for m in probed:
                m.eval()
            xs = torch.zeros(1, self.event_channels, 32, 32)
            cs = self._stage(self.student.forward_all(xs), stage).shape[1]
            ct = self._stage(self.teacher.forward_all(torch.zeros(1, 3, 32, 32)), stage).shape[1]
        for m, mode in zip(probed, modes, strict=True):
            m.train(mode)
        return None if cs == ct else nn.Conv2d(cs, ct, 1)

    def load_teacher(self, path: str | Path) -> None:
        """Load teacher weights (:func:`~evssl.methods.evdistill_teacher.load_teacher_weights`); then freeze."""
        load_teacher_weights(self.teacher, path)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._teacher_loaded = True

    def setup(self, stage: str) -> None:
        """Load the teacher checkpoint once (a resumed checkpoint then overwrites it with the same weights)."""
        super().setup(stage)
        if self.teacher_checkpoint and not self._teacher_loaded:
            self.load_teacher(self.teacher_checkpoint)
        elif not self.teacher_checkpoint and stage == "fit":
            rank_zero_warn("EvDistill: no teacher_checkpoint; distilling from a random teacher (smoke runs only)")
        self.teacher.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The teacher stays in eval mode (frozen BN statistics, no dropout)."""
        return [self.teacher]

    # ------------------------------------------------------------------------------------------------ parts
    def learnable_params(self) -> list[dict[str, Any]]:
        """Student encoder, student head (``optim.head_lr_scale``), generators, projections; never the teacher."""
        groups = super().learnable_params()
        head = [p for n, p in self.student.named_parameters() if not n.startswith("backbone.")]
        groups.append({"name": "student_head", "params": head, "lr_scale": float(self.optim.head_lr_scale)})
        gens = [p for m in (self.e2i, self.i2e) if m is not None for p in m.parameters()]
        if gens:
            groups.append({"name": "bmr", "params": gens})
        extra = [p for m in (self.pointwise, self.dist_adapter) if m is not None for p in m.parameters()]
        if extra:
            groups.append({"name": "kd_projections", "params": extra})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        """The base optimizer over :meth:`learnable_params`; teacher parameters are excluded (an error if listed)."""
        self.teacher.requires_grad_(False)
        out = configure_optimization(self, self.learnable_params(), self.optim, exclude=list(self.teacher.parameters()))
        self._total_steps = out["lr_scheduler"]["scheduler"].total_steps
        return out

    def backbone_for_export(self) -> nn.Module:
        """The student's encoder alone (no teacher, no generators)."""
        return self.backbone

    def crafted_pairs(self, x_e: Tensor, x_a: Tensor) -> tuple[Tensor, Tensor]:
        """``(E2I(x_e), I2E(x_a))``: an image for the teacher (3 ch, [0, 1]) and events for the student."""
        if self.e2i is not None and self.i2e is not None:
            return self.e2i(x_e), self.i2e(x_a)
        return naive_e2i(x_e), naive_i2e(x_a, self.event_channels)

    def _stage(self, out: dict[str, Any], stage: str) -> Tensor:
        if stage == "logits":
            return out["logits_lowres"] if "logits_lowres" in out else out["logits"][..., None, None]
        if stage == "pointwise":
            if self.pointwise is None:
                raise ValueError("pointwise stage without the projection")
            z = out["logits_lowres"] if "logits_lowres" in out else out["logits"][..., None, None]
            return self.pointwise(z)
        if stage.startswith("layer"):
            return out["features"][int(stage[5:]) - 1]
        return out[stage]

    def _kd_terms(self, s: dict[str, Any], t: dict[str, Any], through_teacher: bool) -> dict[str, Tensor]:
        kd = self.kd
        det = not through_teacher
        out: dict[str, Tensor] = {}
        if kd.logit_weight > 0:
            out["logit"] = logit_kd(s["logits"], t["logits"], float(kd.tau), detach_teacher=det)  # type: ignore[arg-type]
        if kd.dist_weight > 0:
            fs, ft = self._stage(s, kd.dist_stage), self._stage(t, kd.dist_stage)
            if self.dist_adapter is not None:
                fs = self.dist_adapter(fs)
            if kd.dist_form == "moments":
                out["dist"] = moment_matching(fs, ft, detach_teacher=det)
            else:
                out["dist"] = spatial_softmax_kl(fs, ft, kd.dist_tau, detach_teacher=det)
        if kd.affinity_weight > 0:
            fs, ft = self._stage(s, kd.affinity_stage), self._stage(t, kd.affinity_stage)  # type: ignore[arg-type]
            out["affinity"] = affinity_kd(fs, ft, kd.affinity_nodes, detach_teacher=det)
        return out

    # ------------------------------------------------------------------------------------------------ training
    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """The objective of the module docstring on one batch (``"input"``, ``"frame"``, frame labels, ``"paired"``)."""
        x_e = batch["input"].float()
        x_a = frame01(batch["frame"])
        y_a = batch["frame_semantic" if self.task == "segmentation" else "frame_label"].long()
        b = x_e.shape[0]
        paired = torch.as_tensor(batch.get("paired", torch.zeros(b, dtype=torch.bool)), device=x_e.device).bool()
        xa_hat, xe_hat = self.crafted_pairs(x_e, x_a)
        s_e = self.student.forward_all(x_e)
        s_c = self.student.forward_all(xe_hat)
        through = bool(self.bmr.kd_through_teacher) and self.e2i is not None
        self.teacher.eval()
        if through:
            t_c = self.teacher.forward_all(xa_hat)  # frozen weights; the gradient reaches E2I
        else:
            with torch.no_grad():
                t_c = self.teacher.forward_all(xa_hat.detach())
        with torch.no_grad():
            t_a = self.teacher.forward_all(x_a)

        lc, kd, bm = self.loss_config, self.kd, self.bmr
        logs: dict[str, Tensor] = {}
        ce = F.cross_entropy(s_c["logits"].float(), y_a, ignore_index=self.ignore_index)
        total = lc.ce_weight * ce
        logs["ce_crafted"] = ce.detach()
        if lc.use_event_labels:
            key = "semantic" if self.task == "segmentation" else "label"
            if key not in batch:
                raise KeyError(f"EvDistill use_event_labels=true but the batch has no {key!r} "
                               "(set the sampler's use_event_labels too)")  # fmt: skip
            ce_e = F.cross_entropy(s_e["logits"].float(), batch[key].long(), ignore_index=self.ignore_index)
            total = total + lc.event_label_weight * ce_e
            logs["ce_events"] = ce_e.detach()
        weights = {"logit": kd.logit_weight, "dist": kd.dist_weight, "affinity": kd.affinity_weight}
        pairs = {"event": (s_e, t_c, through), "image": (s_c, t_a, False)}
        for name in kd.pairs:
            s, t, thr = pairs[name]
            for term, value in self._kd_terms(s, t, thr).items():
                total = total + weights[term] * value
                logs[f"kd_{term}_{name}"] = value.detach()
        if self.e2i is not None and self.i2e is not None:
            if bm.rec_weight > 0 and paired.any():
                rec = l1_reconstruction(xa_hat, x_a, paired) + l1_reconstruction(xe_hat, x_e, paired)
                total = total + bm.rec_weight * rec
                logs["rec_l1"] = rec.detach()
            if bm.ssim_weight > 0 and paired.any():
                ss = ssim_loss(xa_hat, x_a, 1.0, paired)
                total = total + bm.ssim_weight * ss
                logs["rec_ssim"] = ss.detach()
            if bm.cycle_weight and bm.cycle_weight > 0:
                cyc = l1_reconstruction(self.e2i(xe_hat), x_a) + l1_reconstruction(self.i2e(xa_hat), x_e)
                total = total + bm.cycle_weight * cyc
                logs["cycle_l1"] = cyc.detach()
        if kd.mutual_weight > 0 and paired.any():
            m = paired
            za, zb = s_e["logits"][m], s_c["logits"][m]
            md = 0.5 * (logit_kd(za, zb, 1.0, detach_teacher=False) + logit_kd(zb, za, 1.0, detach_teacher=False))
            total = total + kd.mutual_weight * md
            logs["mutual"] = md.detach()
        return SSLOutput(loss=total, logs=logs)

    # ------------------------------------------------------------------------------------------------ evaluation
    def forward(self, x_e: Tensor) -> Tensor:
        """Student prediction on events (what runs at test time)."""
        return self.student(x_e)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        key = "semantic" if self.task == "segmentation" else "label"
        if key in batch:
            logits = self.student(batch["input"].float())
            self.eval_metrics[f"{stage}_student"].update(logits, batch[key])
        fkey = "frame_semantic" if self.task == "segmentation" else "frame_label"
        if "frame" in batch and (fkey in batch or key in batch):
            with torch.no_grad():
                t = self.teacher(frame01(batch["frame"]))
            self.eval_metrics[f"{stage}_teacher"].update(t, batch[fkey] if fkey in batch else batch[key])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Student on events (``val/miou`` ...), teacher on frames (``val/teacher_miou`` ...)."""
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """As :meth:`validation_step`, under ``test/``."""
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        self.eval_metrics[f"{stage}_student"].log_epoch(self.log, f"{stage}/")
        self.eval_metrics[f"{stage}_teacher"].log_epoch(self.log, f"{stage}/teacher_", prog_bar=False)
