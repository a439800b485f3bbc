r"""BraVe — "Broaden Your Views for Self-Supervised Video Learning" (Recasens et al., ICCV 2021), for event streams.

One *narrow* view (a short event window at high resolution) and one or more *broad* views (long windows that contain
the narrow one, at lower resolution and possibly another representation or modality: more voxel bins, a histogram,
the paired frame) are embedded by **separate** backbones :math:`f_n, f_{b_k}`. One projector :math:`g` and one
predictor :math:`q`, **shared by all views** (the official code applies the same ``ProjectAndPredict`` module
everywhere), map every embedding to :math:`z = g(f(x))` and :math:`h = q(z)`. The loss regresses each view's
prediction onto the other view's stop-gradient projection, in both directions, for every broad view
(:func:`evssl.losses.regression.brave_loss`):

.. math::

    \mathcal{L} = \frac{1}{2K}\sum_{k=1}^{K}\Big[\ell\big(h_{b_k}, \mathrm{sg}(z_n)\big)
        + \ell\big(h_n, \mathrm{sg}(z_{b_k})\big)\Big], \qquad
    \ell(h, z) = \tfrac12\Big\|\tfrac{h}{\|h\|} - \tfrac{z}{\|z\|}\Big\|^2 = 1 - \cos(h, z).

There is no EMA target (collapse is avoided by the separate backbones, the predictor, the stop-gradient and the
batch norms in the heads); ``ema_target=True`` is an ablation that takes the targets from BYOL-style momentum copies.

Faithfulness notes (official JAX code ``brave/models/brave/{brave,modules,config}.py``, ``training/optimizers.py``
and the evssl digest §3):

* Views: :class:`~evssl.data.views.NarrowBroadViews` (its own ``preset``): narrow start uniform over the recording,
  broad windows starting with the narrow one, short recordings looped (``extend_sequence``), independent random-area
  crops and flips per view, and event analogues of the official blur / colour jitter / grayscale (review B3, B4).
* Broad-view augmentation: :class:`RandConv` — a random convolution with an odd kernel size drawn uniformly from
  {1, 3, …, 11}, He-normal weights, C→C channels, "SAME" padding, a new kernel per sample — applied on the device to
  the broad representation tensors only (BraVe's randomly-convolved broad view; Xu et al., ICLR 2021).
* Heads: projector ``Linear(4096)→BN→ReLU→Linear(128)→BN``; predictor ``Linear(4096)→BN→ReLU→Linear(128)``.
* Optimisation: LARS (momentum 0.9, Nesterov, trust coefficient 1e-3), warm-up + cosine (:class:`BraVeOptim`).
  The predictor's ×10 (``scale_learning_rate_by_regex [('.*predictor.*', 10)]``) is chained **before**
  ``optax.lars``, so it scales the *gradient*: the trust ratio ``eta ||w|| / ||10 g + wd w||`` then cancels it for
  every adapted parameter except against weight decay (review B1). ``preset="official"`` does exactly that
  (``LrRule(where="gradient")``); ``"paper"`` reads "learning rate ×10" as a step scale after the trust ratio (the
  evssl behaviour before v2; the predictor's weights then move ~10× further).
* LARS masks (review B2): BraVe's ``exclude_bias_and_normalizers`` returns True for biases and norms and is passed
  as optax's ``weight_decay_mask`` / ``trust_ratio_mask``, where True means *apply*: the released code therefore
  decays and adapts **only** biases and norms, and weight matrices get plain Nesterov SGD. evssl follows the evident
  intent by default (``optim.lars_masks: intent``: weight decay and trust ratio on weights, not on biases/norms);
  ``optim.lars_masks: released`` reproduces the released code.
* Cross-replica BN: every BatchNorm (backbones, projector, predictor) becomes ``SyncBatchNorm`` in
  :meth:`BraVe.configure_model` when ``trainer.world_size > 1`` (``sync_batchnorm=True``).
* Evaluation uses the narrow backbone only (pre-projector pooled features): :meth:`BraVe.probe_features`,
  :meth:`BraVe.backbone_for_export`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from evssl.data.views.brave import NARROW_EVENTS, broad_key
from evssl.losses.regression import brave_loss, normalized_std
from evssl.methods.base import PretrainMethod, SSLOutput, recipe_default
from evssl.nn.ema import make_target
from evssl.nn.heads import byol_predictor, byol_projector
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.optim import EmaConfig, LrRule, OptimConfig, OptimizerName

__all__ = ["BRAVE_PRESETS", "BRAVE_RECIPES", "NARROW_EVENTS", "BraVe", "BraVeOptim", "RandConv", "sync_batchnorm_"]


# ======================================================================================================== RandConv
class RandConv(nn.Module):
    """Random convolution of each sample (RandConv, Xu et al. ICLR 2021; BraVe's broad-view augmentation).

    For every sample (with probability ``p``) a kernel size ``k`` is drawn uniformly from {1, 3, …, ``max_kernel``}
    and a ``C→C`` kernel ``W ~ N(0, 2 / (C k²))`` (He-normal, fan-in) is applied with zero "SAME" padding — the
    official ``_random_convolve`` draws one kernel per clip, shared by its frames. Implemented as one grouped
    convolution over the batch (kernels zero-padded to ``max_kernel``; a centred zero-padded k×k kernel with
    padding ``max_kernel // 2`` equals the k×k "SAME" convolution). Only active in training mode; no gradient.
    """

    def __init__(self, max_kernel: int = 11, p: float = 1.0) -> None:
        super().__init__()
        if max_kernel < 1 or max_kernel % 2 == 0:
            raise ValueError(f"max_kernel must be a positive odd number, got {max_kernel}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.max_kernel = int(max_kernel)
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"max_kernel={self.max_kernel}, p={self.p}"

    @torch.no_grad()
    def kernels(
        self, batch: int, channels: int, device: Any = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B, C, C, K, K) random kernels (K = ``max_kernel``), each zero outside its centred k×k support."""
        big = self.max_kernel
        sizes = torch.arange(1, big + 1, 2, device=device)
        pick = torch.randint(len(sizes), (batch,), device=device, generator=generator)
        k = sizes[pick]  # (B,)
        coords = torch.arange(big, device=device) - big // 2
        inside = coords.abs()[None, :] <= (k[:, None] // 2)  # (B, K)
        support = (inside[:, :, None] & inside[:, None, :]).float()  # (B, K, K)
        std = torch.sqrt(2.0 / (channels * k.float() ** 2))  # He-normal with fan-in C·k²
        w = torch.randn(batch, channels, channels, big, big, device=device, generator=generator)
        return w * std[:, None, None, None, None] * support[:, None, None]

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Randomly convolve ``x`` (B, C, H, W) sample by sample (identity in eval mode or when ``p == 0``)."""
        if not self.training or self.p <= 0 or x.numel() == 0:
            return x
        b, c, h, w = x.shape
        weight = self.kernels(b, c, x.device, generator).to(x.dtype)
        out = F.conv2d(
            x.reshape(1, b * c, h, w),
            weight.reshape(b * c, c, self.max_kernel, self.max_kernel),
            padding=self.max_kernel // 2,
            groups=b,
        ).reshape(b, c, h, w)
        if self.p < 1.0:
            keep = torch.rand(b, device=x.device, generator=generator) < self.p
            out = torch.where(keep[:, None, None, None], out, x)
        return out


# ======================================================================================================== DDP
def sync_batchnorm_(module: nn.Module, process_group: Any = None) -> int:
    """Replace, in place, every BatchNorm under ``module`` by ``SyncBatchNorm`` (cross-replica BN); returns how many.

    Already-synchronised layers are left alone (idempotent), and ``module`` itself is never replaced, so objects
    shared between views (the projector, the predictor) stay shared.
    """
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child, process_group))
            count += 1
        else:
            count += sync_batchnorm_(child, process_group)
    return count


# ======================================================================================================== method
def _check_preset(preset: str) -> str:
    if preset not in BRAVE_PRESETS:
        raise ValueError(f"BraVe: unknown preset {preset!r}; expected one of {sorted(BRAVE_PRESETS)}")
    return preset


def _check_channels(x: Tensor, net: nn.Module, view: str, field: str) -> None:
    """A clear error when a view's representation and its backbone disagree on the channel count."""
    want = getattr(net, "in_chans", None)
    if isinstance(want, int) and x.dim() == 4 and x.shape[1] != want:
        raise ValueError(
            f"BraVe {view} has {x.shape[1]} channels (from its representation) but its backbone expects "
            f"in_chans={want}: set model.{field}: {x.shape[1]}"
        )


@dataclass
class BraVeOptim(OptimConfig):
    """BraVe's optimiser (``brave/training/config.py``): LARS, peak lr 1.0 (per 256 samples when
    ``lr_batch_scale``), weight decay 1e-2, 10 warm-up epochs, cosine to 0."""

    name: OptimizerName = "lars"
    lr: float = 1.0
    weight_decay: float = 1e-2
    warmup_epochs: float = 10.0


#: The faithfulness switches of :class:`BraVe` (``None`` fields take these values).
BRAVE_PRESETS: dict[str, dict[str, Any]] = {
    # official JAX code: the x10 scales the predictor's *gradient* before LARS (``_scale_by_module_name``)
    "official": {"predictor_rule": "gradient"},
    # paper text (§4.1): "the learning rate of the predictor is 10 times the base learning rate"
    "paper": {"predictor_rule": "step"},
    # evssl's small-budget recipe (switches as ``official``; its optimiser in :data:`BRAVE_RECIPES`)
    "small": {"predictor_rule": "gradient"},
}

#: Recipes of the presets that have one: the option groups a preset supplies where the config leaves them out.
#: ``small`` is NOT the paper's recipe: it is the one evssl's CPU-budget runs use (a few thousand clips, 500-1,500
#: steps of batch 64): LARS peak lr 10 (not 1.0, which is for batch 512 and 300k steps) and a 1-epoch warm-up (not
#: 10) — the recipe of ``experiments/brave/synthetic_small.yaml`` and ``benchmarks/brave_probe.py``, set for a
#: ~500-step schedule, never tuned on a test split; the README's benchmark section has what it reaches.
BRAVE_RECIPES: dict[str, dict[str, Any]] = {
    "small": {"optim": BraVeOptim(lr=10.0, warmup_epochs=1.0)},
}


class BraVe(PretrainMethod):
    """BraVe pre-training: narrow backbone ``backbone`` + one backbone per broad view, shared projector/predictor.

    Args:
        backbone: the narrow-view backbone (the one evaluated and exported); ``in_chans`` is linked from the data.
        broad_backbones: one backbone per broad view of :class:`NarrowBroadViews` (same order), never shared with
            the narrow one or with each other; each with the ``num_features`` of the narrow backbone (the projector
            is shared) and the ``in_chans`` of its view's representation.
        proj_hidden_dim, proj_dim: projector ``D → 4096 → BN → ReLU → 128 → BN`` (BraVe ``Projector``).
        pred_hidden_dim: predictor ``128 → 4096 → BN → ReLU → 128`` (BraVe ``Predictor``).
        randconv: apply :class:`RandConv` to the broad views (one bool for all, or one per broad view).
        randconv_max_kernel, randconv_p: largest kernel size (11) and probability per sample (1.0).
        predictor_lr_scale: the predictor's ×10 (an :class:`~evssl.optim.LrRule` on ``predictor.*`` appended to
            ``optim.lr_rules``).
        predictor_rule: where the ×10 acts: ``"gradient"`` (official: the gradient before LARS, so the trust ratio
            cancels it for weight matrices and it only weakens their weight decay) or ``"step"`` (the paper's
            "learning rate ×10": the update after the trust ratio). ``None`` = the preset's.
        preset: ``"official"`` (default), ``"paper"`` or ``"small"`` (:data:`BRAVE_PRESETS`; ``small`` also supplies
            the optimiser recipe of :data:`BRAVE_RECIPES` where ``optim`` is left out).
        ema_target: ablation — targets from EMA copies of backbones and projector (BYOL style) instead of the
            online networks; momentum ``ema.momentum → ema.momentum_end``. Off in BraVe.
        sync_batchnorm: convert every BatchNorm to SyncBatchNorm when ``trainer.world_size > 1``.
        optim, ema, probe: :class:`~evssl.methods.base.PretrainMethod`; ``optim`` defaults to :class:`BraVeOptim`.
    """

    RECIPES = BRAVE_RECIPES

    def __init__(
        self,
        backbone: nn.Module,
        broad_backbones: list[nn.Module],
        proj_hidden_dim: int = 4096,
        proj_dim: int = 128,
        pred_hidden_dim: int = 4096,
        randconv: bool | list[bool] = True,
        randconv_max_kernel: int = 11,
        randconv_p: float = 1.0,
        predictor_lr_scale: float = 10.0,
        predictor_rule: Literal["step", "gradient"] | None = None,
        preset: Literal["official", "paper", "small"] = "official",
        ema_target: bool = False,
        sync_batchnorm: bool = True,
        optim: BraVeOptim | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        default_optim = recipe_default(self.RECIPES, _check_preset(preset), "optim", BraVeOptim())
        super().__init__(backbone, optim, ema, probe, default_optim=default_optim, default_ema=EmaConfig(0.99))
        if predictor_rule is None:
            predictor_rule = BRAVE_PRESETS[preset]["predictor_rule"]
        if predictor_rule not in ("step", "gradient"):
            raise ValueError(f"BraVe: predictor_rule must be 'step' or 'gradient', got {predictor_rule!r}")
        self.predictor_rule = predictor_rule
        if predictor_lr_scale != 1.0:
            rule = LrRule(r"(^|\.)predictor\.", float(predictor_lr_scale), predictor_rule)
            self.optim = dataclasses.replace(self.optim, lr_rules=(*self.optim.lr_rules, rule))
        broad = list(broad_backbones)
        if not broad:
            raise ValueError("BraVe needs at least one broad backbone")
        if any(b is backbone for b in broad) or len({id(b) for b in broad}) != len(broad):
            raise ValueError("BraVe backbones must be separate module objects (no weight sharing between views)")
        dim = getattr(backbone, "num_features", None)
        if not isinstance(dim, int):
            raise ValueError("the narrow backbone needs an int attribute num_features")
        for k, b in enumerate(broad):
            if getattr(b, "num_features", None) != dim:
                raise ValueError(
                    f"broad backbone {k} has num_features={getattr(b, 'num_features', None)}, the narrow one {dim}: "
                    "the projector is shared by all views, so their pooled features must have the same size"
                )
        self.broad_backbones = nn.ModuleList(broad)
        self.projector = byol_projector(dim, proj_hidden_dim, proj_dim, last_bn=True)
        self.predictor = byol_predictor(proj_dim, pred_hidden_dim, proj_dim)
        flags = [bool(randconv)] * len(broad) if isinstance(randconv, bool) else [bool(f) for f in randconv]
        if len(flags) != len(broad):
            raise ValueError(f"randconv has {len(flags)} flags for {len(broad)} broad views")
        self.randconv_flags = flags
        self.randconv = RandConv(randconv_max_kernel, randconv_p)
        self.proj_dim = int(proj_dim)
        self.ema_target = bool(ema_target)
        self.sync_batchnorm = bool(sync_batchnorm)
        if self.ema_target:
            self.target_backbone = make_target(self.backbone)
            self.target_broad_backbones = make_target(self.broad_backbones)
            self.target_projector = make_target(self.projector)

    # ------------------------------------------------------------------ views → (z, h)
    def project(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, h) = (g(f), q(g(f)))`` with the projector and predictor shared by all views."""
        z = self.projector(feats)
        return z, self.predictor(z)

    def broad_inputs(self, batch: dict[str, Any]) -> list[Tensor]:
        """The broad tensors of a batch (``broad_k``), RandConv-augmented where enabled (training only)."""
        xs = []
        for k in range(len(self.broad_backbones)):
            key = broad_key(k)
            if key not in batch:
                raise KeyError(
                    f"BraVe batch has no {key!r}: use NarrowBroadViews with {len(self.broad_backbones)} broad views"
                )
            x = batch[key].float()
            _check_channels(x, self.broad_backbones[k], f"broad view {k} ({key!r})", f"broad[{k}].init_args.in_chans")
            if self.randconv_flags[k]:
                x = self.randconv(x)
            xs.append(x)
        return xs

    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """Symmetric narrow↔broad regression (BraVe eq. in the module docstring) + collapse monitor."""
        x_n = batch["input"].float()
        _check_channels(x_n, self.backbone, "narrow view ('input')", "backbone.init_args.in_chans")
        xs_b = self.broad_inputs(batch)
        f_n = self.backbone(x_n)
        z_n, h_n = self.project(f_n)
        broad_pairs: list[tuple[Tensor, Tensor]] = []
        z_bs: list[Tensor] = []
        for net, x_b in zip(self.broad_backbones, xs_b):
            z_b, h_b = self.project(net(x_b))
            broad_pairs.append((z_b, h_b))
            z_bs.append(z_b)
        if self.ema_target:
            with torch.no_grad():
                z_n_t = self.target_projector(self.target_backbone(x_n))
                broad_pairs = [
                    (self.target_projector(net(x_b)), h_b)
                    for net, x_b, (_, h_b) in zip(self.target_broad_backbones, xs_b, broad_pairs)
                ]
            narrow_pair = (z_n_t, h_n)
        else:
            narrow_pair = (z_n, h_n)
        loss, terms = brave_loss(narrow_pair, broad_pairs)

        # collapse monitor: std of L2-normalised projections over the batch, ≈ 1/sqrt(d) when healthy
        with torch.no_grad():
            stds = torch.stack([normalized_std(z) for z in (z_n, *z_bs)])
        logs = {
            **terms,
            "proj_std": stds.mean(),
            "proj_std_ratio": stds.mean() * math.sqrt(self.proj_dim),
            "proj_std_narrow": stds[0],
        }
        return SSLOutput(loss, logs, features=f_n)

    # ------------------------------------------------------------------ evaluation / export
    def probe_features(self, batch: dict[str, Any]) -> Tensor:
        """Narrow-backbone pooled features of ``batch["input"]`` (BraVe evaluates the narrow view only)."""
        return self.backbone(batch["input"].float())

    def backbone_for_export(self) -> nn.Module:
        """The narrow backbone."""
        return self.backbone

    # ------------------------------------------------------------------ optimisation
    def learnable_params(self) -> list[dict[str, Any]]:
        """Base groups (narrow backbone, probe) + broad backbones, projector and predictor."""
        return [
            *super().learnable_params(),
            {"name": "broad_backbones", "params": list(self.broad_backbones.parameters())},
            {"name": "projector", "params": list(self.projector.parameters())},
            {"name": "predictor", "params": list(self.predictor.parameters())},  # x10: an LrRule (see __init__)
        ]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """EMA pairs only in the ``ema_target`` ablation (BraVe itself has none)."""
        if not self.ema_target:
            return []
        return [
            (self.backbone, self.target_backbone),
            (self.broad_backbones, self.target_broad_backbones),
            (self.projector, self.target_projector),
        ]

    def configure_model(self) -> None:
        """Cross-replica BN (BraVe's ``cross_replica_axis``): every BatchNorm → SyncBatchNorm when world size > 1.

        Runs before the strategy wraps the model and before the optimizer is built. PyTorch's ``SyncBatchNorm`` only
        runs on accelerators (CUDA/XPU/HPU/PrivateUse1); on a CPU process group (gloo, used in tests) the layers are
        left per-process with a warning. Trainer-level ``sync_batchnorm: true`` has the same effect on GPUs.
        """
        trainer = self._trainer
        if not self.sync_batchnorm or trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
            return
        strategy = getattr(trainer, "strategy", None)
        device = getattr(strategy, "root_device", None) or self.device
        if torch.device(device).type == "cpu":
            rank_zero_warn("BraVe: SyncBatchNorm needs an accelerator; BatchNorm stays per-process on CPU")
            return
        n = sync_batchnorm_(self)
        rank_zero_info(f"BraVe: {n} BatchNorm layers converted to SyncBatchNorm (world size {trainer.world_size})")
