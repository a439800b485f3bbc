r"""ECDDP — "Event Camera Data Dense Pre-training" (Yang, Pan, Liu; ECCV 2024, arXiv 2311.11533).

Events-only dense self-distillation: a Swin-T student (with a learnable mask token) and its EMA teacher, both
followed by a pre-training neck that fuses the four stages into one stride-16 token map
(:class:`~evssl.nn.backbones.SwinNeck`), learn at three levels of similarity.

Views (on the device, batched; :func:`~evssl.nn.crops.random_resized_crops`): from the voxel grid
:math:`x` (6 signed bins in the paper) of a random crop (``crops.input_size``; 224 from a 320 crop in the paper) — the
teacher's **full view** — two **global crops** (RandomResizedCrop 192, scale (0.32, 1), flip 0.5) and eight **local
crops** (96, scale (0.05, 0.32), flip 0.5), bilinear (Kornia) resampling. The sampling grid of every crop is kept, so
teacher labels of the full view can be read at the centre of every crop token.

With :math:`f` = backbone + neck, :math:`z` = stride-16 tokens, :math:`h_{img}, h_{ctx}, h_{patch}` prototype heads
(DINO heads, 32 768 prototypes, weight-normalised last layer frozen during the first epoch), :math:`A` attention
pooling (2 blocks, learnable queries, :class:`~evssl.nn.attention_pool.AttentionPool`), teacher targets centred by
Sinkhorn–Knopp (:func:`~evssl.losses.ecddp.sinkhorn_targets`, teacher temperature warmed up 0.04 → 0.07) and
student temperature 0.1:

* **Patch level** (iBOT): half of the global crops get block masks (ratios spread over 0.1–0.5,
  :func:`~evssl.nn.masking.ibot_block_masks`); the student sees mask tokens, the teacher the clean crop; masked
  tokens are matched, :math:`\mathrm{CE}(\mathrm{SK}(h^t_{patch}(z^t_j)), h^s_{patch}(z^s_j))`
  (:func:`~evssl.losses.ecddp.patch_loss`).
* **Context level**: per image, cosine K-means (K = 8, 10 iterations) on the teacher tokens of the full view mines
  contexts; the teacher embeds each context by attention pooling restricted to its tokens, :math:`h^t_{ctx}(A^t(z^t,
  M_k))`; the assignment map is carried into each global crop by its sampling grid (nearest token,
  :func:`~evssl.nn.crops.transport_labels`) and the student pools the same contexts from its crop tokens;
  CE over the contexts present in each crop (:func:`~evssl.losses.ecddp.context_loss`).
* **Image level** (DINO): :math:`h_{img}(A(z))` with one query; each student global crop against the teacher's other
  global crop, each local crop against both (:func:`~evssl.losses.ecddp.image_loss`).
* Total (:func:`~evssl.losses.ecddp.ecddp_objective`): crop-level terms L1-normalised by their number,
  :math:`\frac{1}{20}(\sum_{16} \text{local} + \text{global} + 2\,\mathcal L_{ctx}) + \mathcal L_{patch}`.

Optimisation (paper supp. Tab. 3, ``config/pretrain/swin_small.yml``): AdamW, lr 5e-4 × batch/256, 10 warm-up
epochs then cosine to 1e-6, weight decay cosine 0.04 → 0.4, patch-embedding lr × 0.2, gradient clipping 3 (set
``trainer.gradient_clip_val``), EMA momentum 0.992 → 1 (cosine, once per optimizer step, over backbone + neck + the
three heads), teacher without drop-path, in eval mode, without gradient and outside the optimizer.

Switches (``preset``, :data:`~evssl.methods.ecddp_options.ECDDP_PRESETS`; ``official`` = the official code,
github.com/Yan98/Event-Camera-Data-Dense-Pre-training, ``paper`` = the text / the usual DINO-iBOT practice):

* **Swin windows** (review C1, ``swin.padding``): ``official`` = detection-style Swin of ``swin_pretrain.py`` (maps
  padded to a multiple of 7, padded keys *not* masked, odd blocks always shifted by 3: every 192/96-px student crop
  is affected, the 224 teacher view is not); ``masked`` = window clamped to the map, padded keys masked, no shift on
  maps <= 7. Set on the backbone's blocks (and written into the exported backbone's config).
* **Mask ratio** (C2, ``masking.count`` / ``masking.exact``): the code counts masked patches with :math:`N = 8^2`
  (DINOv2's default ``n_tokens``, never set) while masks live on the 12×12 grid, so realised ratios are 4.4–22 %
  instead of 10–50 %, and BEiT's generator may stop short of its count (``official``: ``masking.count="official"``,
  ``masking.exact=False``); ``paper``: :math:`N` the real grid, the count met exactly.
* **Weight-decay groups** (C5): ``official`` decays every parameter with >= 2 dimensions (relative-position tables,
  the mask token, the AttentionPool tokens and position table, ``weight_g`` included) and the whole patch-embedding
  group (its bias and LN too) — ``optim.no_decay: [bias, norm]``; ``paper`` excludes 1-D parameters, tokens and
  position tables.

Remaining differences from the official code:

* **Label transport** (C3). The code bilinearly samples one-hot maps with ``align_corners=True`` and thresholds at
  0.25 (a border token can join two contexts); here each crop token takes the context of the full-view token under
  its centre (``align_corners=False`` grids shared by image and label resampling).
* **Empty K-means clusters** (C4) are re-seeded at the farthest token (the code leaves a zero centroid); clusters
  that stay empty are dropped from the Sinkhorn batch and from the loss (the code keeps them in its Sinkhorn batch).
* **Loss weights** are L1-normalised with the context weight :math:`\lambda_1` as a parameter (``loss.context_weight``),
  which equals the code's fixed ``1/20`` at the default :math:`\lambda_1 = 2`.
* Teacher-temperature warm-up (C6) is linear in fractional epochs (per step), not a per-epoch linspace.
* **Voxel time normalisation** (C7): evssl's voxel grid normalises time by the window bounds (``DenseWindow``); the
  official ``ETartanAir_dataset.py`` / ``event_utils.py`` use the first and last event *inside the 320² crop*.
* Crop resampling (C8) is ``grid_sample(align_corners=False)``; Kornia's RRC uses ``align_corners=True``.
* Neck and mask token (C9): the neck's 1×1 convs and transposed conv have biases (official: none), the mask token
  starts ``trunc_normal`` (official: zeros), LN eps 1e-5 (official: 1e-6).

Transfer: :meth:`backbone_for_export` returns the student Swin without its mask token (a plain Swin whose config has
``mask_token: false``), loaded by :mod:`evssl.tasks.dense` via ``pretrained``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from evssl.callbacks.method_media import log_ecddp_contexts, should_log_pictures
from evssl.losses.ecddp import (
    context_loss,
    context_membership,
    cosine_kmeans,
    ecddp_objective,
    image_loss,
    patch_loss,
    sinkhorn_targets,
)
from evssl.methods.base import PretrainMethod, SSLOutput, recipe_default
from evssl.methods.ecddp_options import (
    ECDDP_PRESETS,
    ECDDP_RECIPES,
    ECDDPContext,
    ECDDPCrops,
    ECDDPHeads,
    ECDDPLoss,
    ECDDPMasking,
    ECDDPOptim,
    ECDDPSwin,
    ecddp_preset,
)
from evssl.nn.attention_pool import AttentionPool, PooledPrototypeHead
from evssl.nn.backbones.swin import SwinNeck, set_window_padding_
from evssl.nn.crops import random_crop_boxes, random_resized_crops, resized_crop_nearest, transport_labels
from evssl.nn.ema import make_target
from evssl.nn.heads import DINOHead, cancel_last_layer_gradients
from evssl.nn.masking import ibot_block_masks
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.optim import EmaConfig
from evssl.utils.hparams import as_config, class_config

__all__ = ["ECDDP"]


# ====================================================================================================== method
class ECDDP(PretrainMethod):
    """ECDDP dense self-distillation (see the module docstring for the equations and the choices).

    Args:
        backbone: a :class:`~evssl.nn.backbones.SwinTransformer` built with ``mask_token=True`` (``in_chans`` linked
            from the data's representation).
        heads, crops, masking, context, loss, swin: option groups of :mod:`evssl.methods.ecddp_options`
            (``ECDDPHeads``, ``ECDDPCrops``, ``ECDDPMasking``, ``ECDDPContext``, ``ECDDPLoss``, ``ECDDPSwin``); their
            ``None`` switch fields take the preset's values.
        patch_embed_lr_scale: lr multiplier of the patch embedding (0.2).
        preset: ``"official"`` (default), ``"paper"`` or ``"small"``
            (:data:`~evssl.methods.ecddp_options.ECDDP_PRESETS`): Swin windows, mask counting and the weight-decay
            groups; ``small`` (the official switches) also supplies the ``optim`` and ``loss`` recipes of
            :data:`~evssl.methods.ecddp_options.ECDDP_RECIPES` where they are left out.
        optim, ema, probe: :class:`~evssl.methods.base.PretrainMethod`; ``optim`` defaults to
            :class:`~evssl.methods.ecddp_options.ECDDPOptim`, ``ema`` to 0.992 -> 1.
    """

    RECIPES = ECDDP_RECIPES

    def __init__(
        self,
        backbone: nn.Module,
        heads: ECDDPHeads | None = None,
        crops: ECDDPCrops | None = None,
        masking: ECDDPMasking | None = None,
        context: ECDDPContext | None = None,
        loss: ECDDPLoss | None = None,
        swin: ECDDPSwin | None = None,
        patch_embed_lr_scale: float = 0.2,
        preset: Literal["official", "paper", "small"] = "official",
        optim: ECDDPOptim | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        if preset not in ECDDP_PRESETS:
            raise ValueError(f"ECDDP: unknown preset {preset!r}; expected one of {sorted(ECDDP_PRESETS)}")
        default_optim = recipe_default(self.RECIPES, preset, "optim", ECDDPOptim())
        super().__init__(backbone, optim, ema, probe, default_optim=default_optim, default_ema=EmaConfig(0.992))
        self.optim, self.masking, self.swin = ecddp_preset(
            preset, self.optim, as_config(ECDDPMasking, masking), as_config(ECDDPSwin, swin)
        )
        self.preset = preset
        self.heads = h = as_config(ECDDPHeads, heads)
        self.crops = as_config(ECDDPCrops, crops)
        self.context = as_config(ECDDPContext, context)
        self.loss_config = as_config(ECDDPLoss, loss, recipe_default(self.RECIPES, preset, "loss", None))
        self.patch_embed_lr_scale = float(patch_embed_lr_scale)
        set_window_padding_(backbone, self.swin.padding)
        channels = getattr(backbone, "feature_channels", None)
        strides = getattr(backbone, "feature_strides", None)
        if channels is None or strides is None or len(channels) != 4:
            raise ValueError("ECDDP needs a four-stage Swin backbone (feature_channels / feature_strides)")
        if getattr(backbone, "mask_token", None) is None:
            raise ValueError("ECDDP masks global crops: build the Swin backbone with mask_token=True")
        self.stride = int(strides[2])
        for name, size in (("global_size", self.crops.global_size), ("local_size", self.crops.local_size)):
            if size % self.stride:
                raise ValueError(f"ECDDP crops.{name}={size} must be a multiple of the neck stride {self.stride}")
        size = self.crops.input_size
        if size is not None and (size[0] % self.stride or size[1] % self.stride):
            raise ValueError(f"ECDDP crops.input_size={size} must be a multiple of the neck stride {self.stride}")
        self.neck = SwinNeck(channels, h.neck_dim)

        def dino_head() -> DINOHead:
            return DINOHead(h.neck_dim, h.num_prototypes, hidden_dim=h.hidden_dim, bottleneck_dim=h.bottleneck_dim,
                            num_layers=h.num_layers, norm_last_layer=h.norm_last_layer)  # fmt: skip

        self.image_head = PooledPrototypeHead(AttentionPool(h.neck_dim, h.pool_layers, h.pool_heads), dino_head())
        self.context_head = PooledPrototypeHead(AttentionPool(h.neck_dim, h.pool_layers, h.pool_heads), dino_head())
        self.patch_head = dino_head()
        self.teacher = nn.ModuleDict({name: make_target(m) for name, m in self._student_parts().items()})
        self.teacher.eval()

    # ----------------------------------------------------------------------------------------------- structure
    def _student_parts(self) -> dict[str, nn.Module]:
        return {
            "backbone": self.backbone,
            "neck": self.neck,
            "image_head": self.image_head,
            "context_head": self.context_head,
            "patch_head": self.patch_head,
        }

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Student -> teacher EMA over backbone, neck and the three heads."""
        return [(m, self.teacher[name]) for name, m in self._student_parts().items()]

    def frozen_modules(self) -> list[nn.Module]:
        """The EMA teacher stays in eval mode (no drop-path, fixed statistics)."""
        return [self.teacher]

    def learnable_params(self) -> list[dict[str, Any]]:
        """Patch embedding at ``lr * patch_embed_lr_scale``, the rest of the backbone, neck, heads (and probe)."""
        groups = super().learnable_params()
        embed = [*self.backbone.patch_embed.parameters(), *self.backbone.patch_norm.parameters()]
        embed_ids = {id(p) for p in embed}
        rest = [p for p in self.backbone.parameters() if id(p) not in embed_ids]
        groups = [g for g in groups if g["name"] != "backbone"]
        embed_spec: dict[str, Any] = {"name": "patch_embed", "params": embed, "lr_scale": self.patch_embed_lr_scale}
        embed_no_decay = ECDDP_PRESETS[self.preset]["optim"]["patch_embed_no_decay"]
        if embed_no_decay is not None:
            embed_spec["no_decay"] = embed_no_decay
        return [
            embed_spec,
            {"name": "backbone", "params": rest},
            {"name": "neck", "params": list(self.neck.parameters())},
            {
                "name": "heads",
                "params": [
                    *self.image_head.parameters(),
                    *self.context_head.parameters(),
                    *self.patch_head.parameters(),
                ],
            },
            *groups,
        ]

    def backbone_for_export(self) -> nn.Module:
        """The student (or teacher) Swin as a plain backbone: a copy without the pre-training mask token."""
        src = self.teacher["backbone"] if self.swin.export_teacher else self.backbone
        out = copy.deepcopy(src)
        out.mask_token = None
        out.requires_grad_(True)
        return out

    def backbone_config(self) -> dict[str, Any]:
        """The backbone's config with ``mask_token: false`` and this run's ``window_padding`` (as exported)."""
        cfg = class_config(self.backbone, self.hparams.get("backbone"))
        cfg["init_args"] = {**cfg["init_args"], "mask_token": False, "window_padding": self.swin.padding}
        return cfg

    # ------------------------------------------------------------------------------------------------ schedules
    def teacher_temp_at(self, epoch: float) -> float:
        """Linear warm-up ``warmup_teacher_temp -> teacher_temp`` over ``warmup_teacher_temp_epochs``, then flat."""
        c = self.loss_config
        if c.warmup_teacher_temp_epochs <= 0:
            return c.teacher_temp
        f = min(max(epoch / c.warmup_teacher_temp_epochs, 0.0), 1.0)
        return c.warmup_teacher_temp + f * (c.teacher_temp - c.warmup_teacher_temp)

    def _epoch_progress(self, batch_idx: int) -> float:
        if self._trainer is None:
            return 0.0
        nb = self.trainer.num_training_batches
        frac = batch_idx / nb if isinstance(nb, (int, float)) and math.isfinite(nb) and nb > 0 else 0.0
        return float(self.current_epoch) + frac

    def on_after_backward(self) -> None:
        """Freeze the prototype layers of the three heads during the first ``freeze_last_layer_epochs`` epochs."""
        epoch = self.current_epoch if self._trainer is not None else 0
        for head in (self.image_head, self.context_head, self.patch_head):
            cancel_last_layer_gradients(head, epoch, self.heads.freeze_last_layer_epochs)

    # ----------------------------------------------------------------------------------------------- forward
    @staticmethod
    def tokens(backbone: nn.Module, neck: SwinNeck, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, tuple]:
        """Neck tokens ``(B, h*w, D)`` and their grid ``(h, w)`` of a backbone + neck."""
        feats = backbone.forward_features(x, mask=mask)["features"]
        fmap = neck.forward_map(feats)
        return fmap.flatten(2).transpose(1, 2), (int(fmap.shape[-2]), int(fmap.shape[-1]))

    def make_views(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Full view, global and local crops (with token grids) and block masks of a batch ``(B, C, H, W)``."""
        b, c, m = x.shape[0], self.crops, self.masking
        if c.input_size is not None and tuple(x.shape[-2:]) != c.input_size:
            boxes = random_crop_boxes(b, x.shape[-2], x.shape[-1], c.input_size, generator, x.device)
            x = resized_crop_nearest(x, boxes, c.input_size)
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"the full view {tuple(x.shape[-2:])} must be a multiple of the neck stride {self.stride}")
        glob = random_resized_crops(
            x, 2, c.global_size, c.global_scale, c.ratio, c.hflip_p,
            token_stride=self.stride, mode=c.interpolation, generator=generator,
        )  # fmt: skip
        local = random_resized_crops(
            x, c.num_local, c.local_size, c.local_scale, c.ratio, c.hflip_p,
            token_stride=None, mode=c.interpolation, generator=generator,
        )  # fmt: skip
        g = c.global_size // self.stride
        gdev = generator.device if generator is not None else x.device
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev).item())
        masks = ibot_block_masks(
            2 * b, (g, g), np.random.default_rng(seed), m.probability, m.ratio, m.min_patches, m.max_block_fraction,
            exact=bool(m.exact), mask_count=m.count,
        ).to(x.device)  # fmt: skip
        return {"full": x, "global": glob, "local": local, "masks": masks, "grid": (g, g)}

    @torch.no_grad()
    def teacher_targets(self, views: dict[str, Any], temp: float) -> dict[str, Tensor]:
        """Teacher side: K-means contexts of the full view, their Sinkhorn targets, image and patch targets of the
        global crops, and the context assignments transported into every global crop."""
        t, sk = self.teacher, self.loss_config.sinkhorn_iters
        x, glob, masks = views["full"], views["global"], views["masks"]
        b, k = x.shape[0], self.context.num_clusters
        full, (hf, wf) = self.tokens(t["backbone"], t["neck"], x)
        km = cosine_kmeans(full, k, self.context.kmeans_iters, self.context.kmeans_empty)
        member = context_membership(km.assign, k)  # (B, K, n)
        ctx = t["context_head"].pool(full, (hf, wf), k, member)  # (B, K, D)
        valid = km.valid
        ctx_targets = torch.zeros(b, k, t["context_head"].head.out_dim, device=full.device)  # float32 targets
        ctx_targets[valid] = sinkhorn_targets(t["context_head"].head(ctx[valid]), temp, sk)

        gtok, grid = self.tokens(t["backbone"], t["neck"], glob.images)
        image = sinkhorn_targets(t["image_head"](gtok, grid), temp, sk).view(2, b, -1)
        patch = sinkhorn_targets(t["patch_head"](gtok[masks]), temp, sk)

        labels = km.assign.view(b, hf, wf)
        crop_labels = transport_labels(labels[glob.source], glob.token_grid).flatten(1)  # (2B, n_g)
        crop_member = context_membership(crop_labels, k) & valid[glob.source][..., None]
        return {
            "context": ctx_targets,
            "context_valid": valid,
            "image": image,
            "patch": patch,
            "crop_membership": crop_member,
            "assign": labels,
        }

    def forward_losses(self, x: Tensor, epoch: float = 0.0, generator: torch.Generator | None = None) -> dict:
        """All ECDDP loss terms of a batch of full-size inputs ``(B, C, H, W)`` (see the module docstring)."""
        views = self.make_views(x, generator)
        temp = self.teacher_temp_at(epoch)
        tgt = self.teacher_targets(views, temp)
        glob, local, masks = views["global"], views["local"], views["masks"]
        b, n_local, c = x.shape[0], self.crops.num_local, self.loss_config
        g, grid = views["grid"][0], views["grid"]
        sg, sgrid = self.tokens(self.backbone, self.neck, glob.images, masks.view(2 * b, g, g))
        if sgrid != grid:
            raise RuntimeError(f"global crop token grid {sgrid} != expected {grid}")

        # patch level: masked tokens of the masked global crops
        img_idx = masks.nonzero()[:, 0]
        l_patch = patch_loss(self.patch_head(sg[masks]), tgt["patch"], img_idx, 2 * b, c.student_temp)

        # image level
        s_img_g = self.image_head(sg, grid).view(2, b, -1)
        s_img_l = None
        if n_local > 0:
            sl, lgrid = self.tokens(self.backbone, self.neck, local.images)
            s_img_l = self.image_head(sl, lgrid).view(n_local, b, -1)
        img_global, img_local = image_loss(s_img_g, tgt["image"], s_img_l, c.student_temp)

        # context level: contexts present in each global crop
        member = tgt["crop_membership"]  # (2B, K, n)
        present = member.any(dim=-1)
        pooled = self.context_head.pool(sg, grid, self.context.num_clusters, member)  # (2B, K, D)
        s_ctx = self.context_head.head(pooled[present])
        t_ctx = tgt["context"][glob.source][present]
        l_ctx = context_loss(s_ctx, t_ctx, c.student_temp)

        out = ecddp_objective(
            l_patch, l_ctx, img_global, img_local, n_local, c.context_weight, c.patch_weight, c.crop_weight,
        )  # fmt: skip
        out.update(
            {
                "teacher_temp": torch.tensor(temp),
                "contexts_per_image": tgt["context_valid"].sum(1).float().mean(),
                "contexts_per_crop": present.sum(1).float().mean(),
                "mask_ratio": masks.float().mean(),
                "views": views,
                "targets": tgt,
            }
        )
        return out

    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """ECDDP loss of one batch (``batch["input"]`` is the voxel grid of the random crop)."""
        out = self.forward_losses(batch["input"].float(), self._epoch_progress(batch_idx))
        views, tgt = out.pop("views"), out.pop("targets")
        if batch_idx == 0 and should_log_pictures(self, self.context.log_every_n_epochs):
            log_ecddp_contexts(self, views, tgt, self.context.num_clusters, self.context.log_num_samples)
        loss = out.pop("loss")
        return SSLOutput(loss, {k: v for k, v in out.items() if isinstance(v, Tensor)})
