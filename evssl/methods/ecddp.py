r"""ECDDP — "Event Camera Data Dense Pre-training" (Yang, Pan, Liu; ECCV 2024, arXiv 2311.11533).

Events-only dense self-distillation: a Swin-T student (with a learnable mask token) and its EMA teacher, both
followed by a pre-training neck that fuses the four stages into one stride-16 token map
(:class:`~evssl.nn.backbones.SwinNeck`), learn at three levels of similarity.

Views (on the device, batched; :func:`~evssl.nn.crops.random_resized_crops`): from the voxel grid
:math:`x` (6 signed bins in the paper) of a random crop (``input_size``; 224 from a 320 crop in the paper) — the
teacher's **full view** — two **global crops** (RandomResizedCrop 192, scale (0.32, 1), flip 0.5) and eight **local
crops** (96, scale (0.05, 0.32), flip 0.5), bilinear (Kornia) resampling. The sampling grid of every crop is kept, so
teacher labels of the full view can be read at the centre of every crop token.

With :math:`f` = backbone + neck, :math:`z` = stride-16 tokens, :math:`h_{img}, h_{ctx}, h_{patch}` prototype heads
(DINO heads, 32 768 prototypes, weight-normalised last layer frozen during the first epoch), :math:`A` attention
pooling (2 blocks, learnable queries, :class:`AttentionPool`), teacher targets centred by Sinkhorn–Knopp
(:func:`~evssl.losses.ecddp.sinkhorn_targets`, teacher temperature warmed up 0.04 → 0.07) and student temperature
0.1:

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

Switches (``preset``, :data:`ECDDP_PRESETS`; ``official`` = the official code, github.com/Yan98/
Event-Camera-Data-Dense-Pre-training, ``paper`` = the text / the usual DINO-iBOT practice):

* **Swin windows** (review C1, ``swin_padding``): ``official`` = detection-style Swin of ``swin_pretrain.py`` (maps
  padded to a multiple of 7, padded keys *not* masked, odd blocks always shifted by 3: every 192/96-px student crop
  is affected, the 224 teacher view is not); ``masked`` = window clamped to the map, padded keys masked, no shift on
  maps <= 7. Set on the backbone's blocks (and written into the exported backbone's config).
* **Mask ratio** (C2, ``mask_count`` / ``mask_exact``): the code counts masked patches with :math:`N = 8^2`
  (DINOv2's default ``n_tokens``, never set) while masks live on the 12×12 grid, so realised ratios are 4.4–22 %
  instead of 10–50 %, and BEiT's generator may stop short of its count (``official``: ``mask_count="official"``,
  ``mask_exact=False``); ``paper``: :math:`N` the real grid, the count met exactly.
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
* **Loss weights** are L1-normalised with the context weight :math:`\lambda_1` as a parameter (``context_weight``),
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
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evssl.losses.ecddp import (
    context_loss,
    context_membership,
    cosine_kmeans,
    ecddp_objective,
    image_loss,
    patch_loss,
    pooling_attention_mask,
    sinkhorn_targets,
)
from evssl.methods.base import PretrainMethod, SSLOutput
from evssl.nn.backbones.swin import SwinNeck
from evssl.nn.backbones.vit import Mlp
from evssl.nn.crops import random_crop_boxes, random_resized_crops, resized_crop_nearest, transport_labels
from evssl.nn.ema import make_target
from evssl.nn.heads import DINOHead, cancel_last_layer_gradients
from evssl.nn.masking import ibot_block_masks
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.optim import EmaConfig, OptimConfig
from evssl.utils.hparams import class_config

__all__ = ["ECDDP", "AttentionPool", "PooledPrototypeHead"]


# ============================================================================================== attention pooling
class AttentionPoolBlock(nn.Module):
    r"""One pooling block: queries attend to ``[queries; tokens]`` (ECDDP ``AttentionPoolBlock``).

    :math:`h = \mathrm{LN}([q; z])`, :math:`q \leftarrow q + \mathrm{MHA}(h_{:Q}, h, h; \text{mask})`,
    :math:`q \leftarrow q + \mathrm{MLP}(\mathrm{LN}(q))`. Only the queries are updated; ``mask`` ``(B, Q, Q+N)``
    bool (True = may attend) restricts what each query sees.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: Tensor, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        b, nq, d = queries.shape
        h = self.norm1(torch.cat([queries, tokens], dim=1))
        heads = self.num_heads

        def split(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], heads, d // heads).transpose(1, 2)

        q, k, v = split(self.q(h[:, :nq])), split(self.k(h)), split(self.v(h))
        attn_mask = None if mask is None else mask[:, None].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        queries = queries + self.proj(out.transpose(1, 2).reshape(b, nq, d))
        return queries + self.mlp(self.norm2(queries))


class AttentionPool(nn.Module):
    r"""Attention pooling of a token map into ``Q`` embeddings (ECDDP ``AttPool``).

    ``Q`` copies of one learnable query token; a learnable ``pos_grid x pos_grid`` absolute position embedding is
    resized (bicubic) to the token grid and added to the tokens; ``num_layers`` :class:`AttentionPoolBlock` s
    (``num_heads`` = dim / 32 by default), final LayerNorm. With a context membership ``M`` ``(B, K, N)`` query
    :math:`k` sees only itself and the tokens of context :math:`k`
    (:func:`~evssl.losses.ecddp.pooling_attention_mask`), which makes it the masked attention pooling
    :math:`A(z, M_k)` of the paper; without it (one query) it is the image embedding.
    """

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int | None = None, pos_grid: int = 6) -> None:
        super().__init__()
        heads = num_heads if num_heads is not None else max(1, dim // 32)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, pos_grid, pos_grid))
        self.blocks = nn.ModuleList(AttentionPoolBlock(dim, heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(
        self, tokens: Tensor, grid: tuple[int, int], num_queries: int = 1, membership: Tensor | None = None
    ) -> Tensor:
        """Pooled embeddings ``(B, num_queries, D)`` of ``tokens`` ``(B, h*w, D)`` laid out on ``grid = (h, w)``;
        ``membership`` ``(B, num_queries, h*w)`` bool restricts query ``k`` to the tokens of context ``k``."""
        b, n, _ = tokens.shape
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {grid} does not match {n} tokens")
        pos = F.interpolate(self.pos_embed, size=tuple(grid), mode="bicubic", align_corners=False)
        x = tokens + pos.flatten(2).transpose(1, 2).to(tokens.dtype)
        q = self.cls_token.to(tokens.dtype).expand(b, num_queries, -1)
        mask = None if membership is None else pooling_attention_mask(membership)
        for blk in self.blocks:
            q = blk(q, x, mask)
        return self.norm(q)


class PooledPrototypeHead(nn.Module):
    """Attention pooling followed by a DINO prototype head (ECDDP ``DINOHead(use_attpool=True)``)."""

    def __init__(self, pool: AttentionPool, head: DINOHead) -> None:
        super().__init__()
        self.pool = pool
        self.head = head

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Image-level prototype logits ``(B, P)`` (one query, no mask)."""
        return self.head(self.pool(tokens, grid, 1)[:, 0])


def set_window_padding_(backbone: nn.Module, padding: str) -> None:
    """Set ``window_padding`` on a Swin backbone and all its blocks (a forward-time switch, no parameters)."""
    if padding not in ("masked", "official"):
        raise ValueError(f"ECDDP: swin_padding must be 'masked' or 'official', got {padding!r}")
    for m in backbone.modules():
        if hasattr(m, "window_padding"):
            m.window_padding = padding


# ====================================================================================================== method
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


#: The faithfulness switches of :class:`ECDDP` (``None`` values take these).
ECDDP_PRESETS: dict[str, dict[str, Any]] = {
    # official code (``trainer/pretrain_trainer.py:params_groups``): every >= 2-D parameter decays (tokens, the
    # mask token, rel-pos tables, weight_g included); the patch-embed group (conv bias and LN too) decays x1
    "official": {
        "no_decay": ("bias", "norm"),
        "patch_embed_no_decay": (),
        "swin_padding": "official",
        "mask_count": "official",
        "mask_exact": False,
    },
    # the usual DINO/iBOT/Swin policy: no decay on 1-D parameters, tokens, position tables
    "paper": {
        "no_decay": OptimConfig().no_decay,
        "patch_embed_no_decay": None,
        "swin_padding": "masked",
        "mask_count": "grid",
        "mask_exact": True,
    },
}


class ECDDP(PretrainMethod):
    """ECDDP dense self-distillation (see the module docstring for the equations and the choices).

    Args:
        backbone: a :class:`~evssl.nn.backbones.SwinTransformer` built with ``mask_token=True`` (``in_chans`` linked
            from the data's representation).
        neck_dim: width of the stride-16 neck (768 = Swin-T's last stage).
        num_prototypes: prototypes of each of the three heads (32 768 in the paper).
        head_hidden_dim, head_bottleneck_dim, head_layers: DINO head MLP (2048, 256, 3).
        norm_last_layer: fix the weight-norm gain of the prototypes (ECDDP/DINOv2: trained, ``False``).
        pool_layers, pool_heads: attention pooling blocks (2) and heads (``neck_dim // 32``).
        num_clusters: K-means contexts per image (8). kmeans_iters: iterations (10).
        kmeans_empty: empty-cluster rule, ``"reseed"`` or ``"keep"`` (:func:`~evssl.losses.ecddp.cosine_kmeans`).
        input_size: (H, W) of the teacher's full view, randomly cropped from the input on the device (224 in the
            paper); ``None`` uses the input as it is.
        global_crop_size, local_crop_size: crop sides (192, 96); multiples of the neck stride.
        num_local_crops: local crops (8). global_crop_scale, local_crop_scale: area ranges ((0.32, 1), (0.05, 0.32)).
        crop_ratio: aspect-ratio range (3/4, 4/3). hflip_p: flip probability of every crop (0.5).
        crop_interpolation: ``"bilinear"`` (Kornia, as the paper) or ``"nearest"``.
        mask_probability: fraction of global crops that are masked (0.5). mask_ratio: ratio range (0.1, 0.5).
        mask_min_patches: smallest block (4). mask_max_block_fraction: largest block / tokens (0.5).
        mask_exact: top the block mask up to its exact count; ``mask_count``: ``"grid"`` or ``"official"``
            counting base; ``swin_padding``: ``"masked"`` or ``"official"`` Swin windows (module docstring; ``None``
            = the preset's).
        student_temp: 0.1. teacher_temp: final teacher temperature (0.07). warmup_teacher_temp: initial (0.04).
        warmup_teacher_temp_epochs: linear warm-up length (30 in the official trainer).
        sinkhorn_iters: Sinkhorn–Knopp iterations (3).
        context_weight: :math:`\\lambda_1` before L1 normalisation (2). patch_weight: iBOT weight (1).
        crop_weight: DINO ``loss_weight`` of the crop-level (image + context) terms (1).
        freeze_last_layer_epochs: epochs during which the prototypes get no update (1).
        patch_embed_lr_scale: lr multiplier of the patch embedding (0.2).
        export_teacher: export the EMA teacher's backbone instead of the student's.
        log_contexts_every_n_epochs: log K-means context pictures every n epochs (0 = never).
        log_contexts_num_samples: pictures per log.
        preset: ``"official"`` (default) or ``"paper"`` (:data:`ECDDP_PRESETS`): the weight-decay groups.
        optim, ema, probe: :class:`~evssl.methods.base.PretrainMethod`; ``optim`` defaults to :class:`ECDDPOptim`,
            ``ema`` to 0.992 -> 1.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck_dim: int = 768,
        num_prototypes: int = 32768,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_layers: int = 3,
        norm_last_layer: bool = False,
        pool_layers: int = 2,
        pool_heads: int | None = None,
        num_clusters: int = 8,
        kmeans_iters: int = 10,
        kmeans_empty: Literal["reseed", "keep"] = "reseed",
        input_size: tuple[int, int] | None = None,
        global_crop_size: int = 192,
        local_crop_size: int = 96,
        num_local_crops: int = 8,
        global_crop_scale: tuple[float, float] = (0.32, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.32),
        crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip_p: float = 0.5,
        crop_interpolation: Literal["bilinear", "nearest"] = "bilinear",
        mask_probability: float = 0.5,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_min_patches: int = 4,
        mask_max_block_fraction: float = 0.5,
        mask_exact: bool | None = None,
        mask_count: Literal["grid", "official"] | None = None,
        swin_padding: Literal["masked", "official"] | None = None,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 30.0,
        sinkhorn_iters: int = 3,
        context_weight: float = 2.0,
        patch_weight: float = 1.0,
        crop_weight: float = 1.0,
        freeze_last_layer_epochs: int = 1,
        patch_embed_lr_scale: float = 0.2,
        export_teacher: bool = False,
        log_contexts_every_n_epochs: int = 1,
        log_contexts_num_samples: int = 4,
        preset: Literal["official", "paper"] = "official",
        optim: ECDDPOptim | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        super().__init__(backbone, optim, ema, probe, default_optim=ECDDPOptim(), default_ema=EmaConfig(0.992))
        if preset not in ECDDP_PRESETS:
            raise ValueError(f"ECDDP: unknown preset {preset!r}; expected one of {sorted(ECDDP_PRESETS)}")
        self.preset = preset
        table = ECDDP_PRESETS[preset]
        if self.optim.no_decay is None:
            self.optim = dataclasses.replace(self.optim, no_decay=tuple(table["no_decay"]))
        self.mask_count = table["mask_count"] if mask_count is None else mask_count
        mask_exact = table["mask_exact"] if mask_exact is None else mask_exact
        self.swin_padding = table["swin_padding"] if swin_padding is None else swin_padding
        set_window_padding_(backbone, self.swin_padding)
        channels = getattr(backbone, "feature_channels", None)
        strides = getattr(backbone, "feature_strides", None)
        if channels is None or strides is None or len(channels) != 4:
            raise ValueError("ECDDP needs a four-stage Swin backbone (feature_channels / feature_strides)")
        if getattr(backbone, "mask_token", None) is None:
            raise ValueError("ECDDP masks global crops: build the Swin backbone with mask_token=True")
        self.stride = int(strides[2])
        for name, size in (("global_crop_size", global_crop_size), ("local_crop_size", local_crop_size)):
            if size % self.stride:
                raise ValueError(f"{name}={size} must be a multiple of the neck stride {self.stride}")
        if input_size is not None and (input_size[0] % self.stride or input_size[1] % self.stride):
            raise ValueError(f"input_size={input_size} must be a multiple of the neck stride {self.stride}")
        if kmeans_empty not in ("reseed", "keep"):
            raise ValueError(f"kmeans_empty must be 'reseed' or 'keep', got {kmeans_empty!r}")
        if crop_interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"crop_interpolation must be 'bilinear' or 'nearest', got {crop_interpolation!r}")
        self.neck = SwinNeck(channels, neck_dim)

        def dino_head() -> DINOHead:
            return DINOHead(
                neck_dim,
                num_prototypes,
                hidden_dim=head_hidden_dim,
                bottleneck_dim=head_bottleneck_dim,
                num_layers=head_layers,
                norm_last_layer=norm_last_layer,
            )

        self.image_head = PooledPrototypeHead(AttentionPool(neck_dim, pool_layers, pool_heads), dino_head())
        self.context_head = PooledPrototypeHead(AttentionPool(neck_dim, pool_layers, pool_heads), dino_head())
        self.patch_head = dino_head()
        self.teacher = nn.ModuleDict({name: make_target(m) for name, m in self._student_parts().items()})
        self.teacher.eval()

        self.num_clusters = int(num_clusters)
        self.kmeans_iters = int(kmeans_iters)
        self.kmeans_empty = kmeans_empty
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.global_crop_size = int(global_crop_size)
        self.local_crop_size = int(local_crop_size)
        self.num_local_crops = int(num_local_crops)
        self.global_crop_scale = (float(global_crop_scale[0]), float(global_crop_scale[1]))
        self.local_crop_scale = (float(local_crop_scale[0]), float(local_crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.hflip_p = float(hflip_p)
        self.crop_interpolation = crop_interpolation
        self.mask_probability = float(mask_probability)
        self.mask_ratio = (float(mask_ratio[0]), float(mask_ratio[1]))
        self.mask_min_patches = int(mask_min_patches)
        self.mask_max_block_fraction = float(mask_max_block_fraction)
        self.mask_exact = bool(mask_exact)
        self.student_temp = float(student_temp)
        self.teacher_temp = float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_teacher_temp_epochs = float(warmup_teacher_temp_epochs)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.context_weight = float(context_weight)
        self.patch_weight = float(patch_weight)
        self.crop_weight = float(crop_weight)
        self.freeze_last_layer_epochs = int(freeze_last_layer_epochs)
        self.patch_embed_lr_scale = float(patch_embed_lr_scale)
        self.export_teacher = bool(export_teacher)
        self.log_contexts_every_n_epochs = int(log_contexts_every_n_epochs)
        self.log_contexts_num_samples = int(log_contexts_num_samples)

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

    def train(self, mode: bool = True) -> ECDDP:
        """The teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def learnable_params(self) -> list[dict[str, Any]]:
        """Patch embedding at ``lr * patch_embed_lr_scale``, the rest of the backbone, neck, heads (and probe)."""
        groups = super().learnable_params()
        embed = [*self.backbone.patch_embed.parameters(), *self.backbone.patch_norm.parameters()]
        embed_ids = {id(p) for p in embed}
        rest = [p for p in self.backbone.parameters() if id(p) not in embed_ids]
        groups = [g for g in groups if g["name"] != "backbone"]
        embed_spec: dict[str, Any] = {"name": "patch_embed", "params": embed, "lr_scale": self.patch_embed_lr_scale}
        if ECDDP_PRESETS[self.preset]["patch_embed_no_decay"] is not None:
            embed_spec["no_decay"] = ECDDP_PRESETS[self.preset]["patch_embed_no_decay"]
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
        src = self.teacher["backbone"] if self.export_teacher else self.backbone
        out = copy.deepcopy(src)
        out.mask_token = None
        out.requires_grad_(True)
        return out

    def backbone_config(self) -> dict[str, Any]:
        """The backbone's config with ``mask_token: false`` and this run's ``window_padding`` (as exported)."""
        cfg = class_config(self.backbone, self.hparams.get("backbone"))
        cfg["init_args"] = {**cfg["init_args"], "mask_token": False, "window_padding": self.swin_padding}
        return cfg

    # ------------------------------------------------------------------------------------------------ schedules
    def teacher_temp_at(self, epoch: float) -> float:
        """Linear warm-up ``warmup_teacher_temp -> teacher_temp`` over ``warmup_teacher_temp_epochs``, then flat."""
        if self.warmup_teacher_temp_epochs <= 0:
            return self.teacher_temp
        f = min(max(epoch / self.warmup_teacher_temp_epochs, 0.0), 1.0)
        return self.warmup_teacher_temp + f * (self.teacher_temp - self.warmup_teacher_temp)

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
            cancel_last_layer_gradients(head, epoch, self.freeze_last_layer_epochs)

    # ----------------------------------------------------------------------------------------------- forward
    @staticmethod
    def tokens(backbone: nn.Module, neck: SwinNeck, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, tuple]:
        """Neck tokens ``(B, h*w, D)`` and their grid ``(h, w)`` of a backbone + neck."""
        feats = backbone.forward_features(x, mask=mask)["features"]
        fmap = neck.forward_map(feats)
        return fmap.flatten(2).transpose(1, 2), (int(fmap.shape[-2]), int(fmap.shape[-1]))

    def make_views(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Full view, global and local crops (with token grids) and block masks of a batch ``(B, C, H, W)``."""
        b = x.shape[0]
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            boxes = random_crop_boxes(b, x.shape[-2], x.shape[-1], self.input_size, generator, x.device)
            x = resized_crop_nearest(x, boxes, self.input_size)
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"the full view {tuple(x.shape[-2:])} must be a multiple of the neck stride {self.stride}")
        glob = random_resized_crops(
            x, 2, self.global_crop_size, self.global_crop_scale, self.crop_ratio, self.hflip_p,
            token_stride=self.stride, mode=self.crop_interpolation, generator=generator,
        )  # fmt: skip
        local = random_resized_crops(
            x, self.num_local_crops, self.local_crop_size, self.local_crop_scale, self.crop_ratio, self.hflip_p,
            token_stride=None, mode=self.crop_interpolation, generator=generator,
        )  # fmt: skip
        g = self.global_crop_size // self.stride
        gdev = generator.device if generator is not None else x.device
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev).item())
        masks = ibot_block_masks(
            2 * b,
            (g, g),
            np.random.default_rng(seed),
            self.mask_probability,
            self.mask_ratio,
            self.mask_min_patches,
            self.mask_max_block_fraction,
            exact=self.mask_exact,
            mask_count=self.mask_count,
        ).to(x.device)
        return {"full": x, "global": glob, "local": local, "masks": masks, "grid": (g, g)}

    @torch.no_grad()
    def teacher_targets(self, views: dict[str, Any], temp: float) -> dict[str, Tensor]:
        """Teacher side: K-means contexts of the full view, their Sinkhorn targets, image and patch targets of the
        global crops, and the context assignments transported into every global crop."""
        t = self.teacher
        x, glob, masks = views["full"], views["global"], views["masks"]
        b, k = x.shape[0], self.num_clusters
        full, (hf, wf) = self.tokens(t["backbone"], t["neck"], x)
        km = cosine_kmeans(full, k, self.kmeans_iters, self.kmeans_empty)
        member = context_membership(km.assign, k)  # (B, K, n)
        ctx = t["context_head"].pool(full, (hf, wf), k, member)  # (B, K, D)
        valid = km.valid
        ctx_targets = torch.zeros(b, k, t["context_head"].head.out_dim, device=full.device)  # float32 targets
        ctx_targets[valid] = sinkhorn_targets(t["context_head"].head(ctx[valid]), temp, self.sinkhorn_iters)

        gtok, grid = self.tokens(t["backbone"], t["neck"], glob.images)
        image = sinkhorn_targets(t["image_head"](gtok, grid), temp, self.sinkhorn_iters).view(2, b, -1)
        patch = sinkhorn_targets(t["patch_head"](gtok[masks]), temp, self.sinkhorn_iters)

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
        b = x.shape[0]
        g, grid = views["grid"][0], views["grid"]
        sg, sgrid = self.tokens(self.backbone, self.neck, glob.images, masks.view(2 * b, g, g))
        if sgrid != grid:
            raise RuntimeError(f"global crop token grid {sgrid} != expected {grid}")

        # patch level: masked tokens of the masked global crops
        img_idx = masks.nonzero()[:, 0]
        l_patch = patch_loss(self.patch_head(sg[masks]), tgt["patch"], img_idx, 2 * b, self.student_temp)

        # image level
        s_img_g = self.image_head(sg, grid).view(2, b, -1)
        s_img_l = None
        if self.num_local_crops > 0:
            sl, lgrid = self.tokens(self.backbone, self.neck, local.images)
            s_img_l = self.image_head(sl, lgrid).view(self.num_local_crops, b, -1)
        img_global, img_local = image_loss(s_img_g, tgt["image"], s_img_l, self.student_temp)

        # context level: contexts present in each global crop
        member = tgt["crop_membership"]  # (2B, K, n)
        present = member.any(dim=-1)
        pooled = self.context_head.pool(sg, grid, self.num_clusters, member)  # (2B, K, D)
        s_ctx = self.context_head.head(pooled[present])
        t_ctx = tgt["context"][glob.source][present]
        l_ctx = context_loss(s_ctx, t_ctx, self.student_temp)

        out = ecddp_objective(
            l_patch, l_ctx, img_global, img_local, self.num_local_crops,
            self.context_weight, self.patch_weight, self.crop_weight,
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
        if batch_idx == 0:
            self._log_contexts(views, tgt)
        loss = out.pop("loss")
        return SSLOutput(loss, {k: v for k, v in out.items() if isinstance(v, Tensor)})

    # ---------------------------------------------------------------------------------------------- pictures
    def _log_contexts(self, views: dict[str, Any], tgt: dict[str, Tensor]) -> None:
        """Pictures of the K-means contexts of the first samples (no-op without a logger)."""
        from evssl.callbacks.method_media import log_ecddp_contexts, should_log_pictures

        if should_log_pictures(self, self.log_contexts_every_n_epochs):
            log_ecddp_contexts(self, views, tgt, self.num_clusters, self.log_contexts_num_samples)
