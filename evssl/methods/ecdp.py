r"""ECDP — "Event Camera Data Pre-training" (Yang, Pan, Liu; ICCV 2023), event–RGB paired self-supervision.

A ViT :math:`f_e` with **two learnable special tokens** (token 0 read by the event branch, token 1 by the image
branch) sees a conditionally-masked 2-channel event histogram; a momentum (EMA) copy :math:`f_m` sees a second view
of the same histogram; a frozen image encoder :math:`f_I` (CLIP ViT-B/32 in the paper) embeds the paired RGB image.
With :math:`h^{evt}, h^{img}` MoCo-v3 projectors, :math:`g^{evt}, g^{img}` predictors, :math:`h_I` a bias-free
linear map and a prime for momentum copies:

.. math::

    q_{evt} = g^{evt}(h^{evt}(f_e(x_q)_0)),\quad q_{img} = g^{img}(h^{img}(f_e(x_q)_1)),\quad
    k_{evt} = h'^{evt}(f_m(x_k)_0),\quad y = h_I(f_I(I)).

Losses (paper §3.3, Eqs. 2–6; weights of the official code):

.. math::

    \mathcal L = \lambda_{evt}\,\mathcal L_{evt} + \lambda_{RGB}\,\mathcal L_{RGB} + \lambda_{kl}\,\mathcal L_{kl},
    \qquad \lambda_{evt} = \lambda_{RGB} = 1,\ \lambda_{kl} = \lambda_1 = 2

* :math:`\mathcal L_{evt} = \mathrm{InfoNCE}_{\tau=0.2}(\zeta(q_{evt}, y), \zeta(k_{evt}, y))` (Eqs. 2–3) with the
  embedding projection :math:`\zeta(v, y) = (\hat v\cdot\hat y)\,\hat y`
  (:func:`~evssl.losses.ecdp.embedding_projection`; :math:`\hat y` detached, the result **not** re-normalised), one
  direction only (query = online, key = momentum), keys of all ranks as negatives without gradient, scaled by
  :math:`2\tau` (MoCo v3) — as the official code.
* :math:`\mathcal L_{RGB} = \mathrm{InfoNCE}_{\tau=0.1}(\hat q_{img}, \hat y)` (§3.3, between Eqs. 3 and 5), keys =
  :math:`y` of all ranks.
* :math:`\mathcal L_{kl}` (Eqs. 5–6): align the in-batch similarity distribution of :math:`q_{img}` with that of
  :math:`y` at :math:`\tau = 0.1` (:func:`~evssl.losses.ecdp.distribution_alignment_loss`).

Choices where the paper and the official code (github.com/Yan98/Event-Camera-Data-Pre-training) differ, each a
constructor argument:

* ``rgb_key_grad`` — gradient through the image keys of :math:`\mathcal L_{RGB}`. The code gathers :math:`y` with a
  no-grad ``all_gather`` (*including* the local slice), so :math:`h_I` gets **no** gradient from L_RGB and learns only
  through the Sinkhorn target of :math:`\mathcal L_{kl}`. The paper presents :math:`h_I` as a trained projection
  into the event embedding space, and L_RGB as a contrastive loss between both embeddings, i.e. both ends trained.
  Default ``"global"`` (paper intent, CLIP-style: keys gathered *with* gradient, every rank's loss reaches every
  :math:`y`); ``"local"``: MoCo-v3 gather (only the local slice gets gradient); ``"none"``: :math:`y` detached — the
  official code exactly. On one process ``"global"`` and ``"local"`` coincide.
* ``kl_form`` — ``"code"`` (default): target :math:`P = \mathrm{Sinkhorn}(\hat y\hat y^\top/\tau)` (3 iterations),
  loss :math:`\mathrm{KL}(P\,\|\,\mathrm{softmax}(\hat q\hat q^\top/\tau))` — what produced the published numbers;
  ``"paper"``: softmax target and :math:`\mathrm{KL}(s^q\|s^y)` as Eqs. 5–6 write it.
* ``mask_form`` — conditional masking (Eq. 1) of both views, ``mask_ratio = 0.5`` (``pr_vits.yml``): ``"paper"``
  (default) samples :math:`K = \lfloor N(1-r)\rfloor` patches without replacement with probability
  :math:`\propto d_i = \lVert p_i\rVert_1` (exactly, by Gumbel-top-k); ``"code"``: top-K of :math:`d_i u_i`,
  :math:`u_i\sim U(0,1)`. :math:`d_i` is computed on the normalised counts :math:`(x+1)/2\in[0,1)` of the view (the
  code's ``x/2 + 0.5``). Masked tokens are dropped before the first block (MAE-style), for the momentum view too.
* ``evt_projection=False`` — the ablation without :math:`\zeta` (plain normalised InfoNCE; the paper reports
  collapse of :math:`\mathcal L_{evt}` alone).

Views (official data pipeline, reproduced by :class:`~evssl.data.views.ECDPViews` + :meth:`ECDP.make_views`): a random
window of :math:`N` consecutive events (30 000), rescaled to the model resolution (224×224), event-level augmentation
(time flip with polarity inversion p = 0.5, ±20 px shift, correlated noise events), a 2-channel count histogram
normalised per channel :math:`h/(\max h + 1)` then :math:`(h - 0.5)\cdot 2`
(:class:`~evssl.events.representations.EventImage`); then, on the device, two views by independent random-resized
crops (scale :math:`(0.45, 1)`, **nearest** interpolation) and horizontal flips
(:func:`~evssl.nn.crops.random_resized_crop_nearest`).

Momentum encoder: EMA copy of the backbone and **both** projectors (no predictors), momentum cosine 0.99 → 1,
updated once per optimizer step by :class:`~evssl.methods.base.PretrainMethod`; it never receives gradients and is
not in the optimizer. (The code EMA-updates the image projector copy but never uses it; so does evssl.)

Transfer: the feature is the concatenation of the two special tokens after the final norm (768-d for ViT-S), which
is the ``"special"`` global pool of :class:`~evssl.nn.backbones.VisionTransformer` — :meth:`probe_features` and the
exported backbone give it directly, so :class:`~evssl.tasks.Classifier` linear-probes / fine-tunes it unchanged.
The online probe (ECDP's ``head``) trains on the detached features of the masked query view, as in the code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evssl.callbacks.method_media import log_ecdp_views, should_log_pictures
from evssl.losses.contrastive import info_nce
from evssl.losses.ecdp import distribution_alignment_loss, embedding_projection
from evssl.methods.base import PretrainMethod, SSLOutput, recipe_default
from evssl.methods.ecdp_options import ECDP_PRESETS, ECDP_RECIPES, ECDPOptim, ecdp_switches
from evssl.nn.checkpoints import load_mocov3_init
from evssl.nn.crops import random_resized_crop_nearest
from evssl.nn.ema import make_target
from evssl.nn.heads import mocov3_predictor, mocov3_projector
from evssl.nn.image_encoders import ImageEncoder, as_frozen_image_encoder
from evssl.nn.masking import event_image_keep_index, num_keep_patches
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.optim import EmaConfig

__all__ = ["ECDP", "ECDP_PRESETS", "ECDPOptim"]  # the options live in evssl.methods.ecdp_options


class ECDP(PretrainMethod):
    """ECDP pre-training (see the module docstring for the equations and every paper/code choice).

    Args:
        backbone: a ViT with at least two special tokens and ``forward_features(x, keep_index=...)`` returning
            ``"special"`` (B, S, D), e.g. ``vit_small(in_chans=2, num_heads=12, num_special_tokens=2,
            class_token=False, global_pool="special")``; ``in_chans`` is linked from the data (2).
        image_encoder: frozen f_I run on ``batch["frame"]`` (:mod:`evssl.nn.image_encoders`: a
            ``RandomFeatureEncoder`` for synthetic data, or any backbone wrapped in ``FrozenImageEncoder``); ``None``
            when the batches carry precomputed ``"embedding"`` (CLIP features, as the paper).
        image_encoder_weights: local state-dict file loaded into ``image_encoder`` (evssl never downloads weights).
        image_embed_dim: size of f_I's output (CLIP ViT-B/32: 512); h_I is ``Linear(image_embed_dim, proj_dim)``
            without bias.
        proj_hidden_dim, proj_dim, proj_layers: MoCo-v3 projectors h_evt, h_img (4096, 256, 3 layers).
        pred_hidden_dim, pred_layers: MoCo-v3 predictors (4096, 2 layers).
        mask_ratio: fraction of patches dropped in both views (0.5).
        mask_form: ``"paper"`` or ``"code"`` conditional masking (``None`` = the preset's).
        crop_min: lower bound of the random-resized-crop area (0.45); ``crop_ratio``: aspect range (3/4, 4/3).
        hflip_p: horizontal-flip probability per view.
        view_size: (H, W) of the views; ``None`` = the input size. Must be a multiple of the patch size.
        temperature_evt, temperature_img: τ of L_evt (0.2) and of L_RGB / L_kl (0.1).
        lambda_evt, lambda_rgb, lambda_kl: loss weights (1, 1, 2).
        kl_form: ``"code"`` or ``"paper"`` form of L_kl.
        rgb_key_grad: ``"global"``, ``"local"`` or ``"none"``: gradient through the image keys of L_RGB (``None``
            = the preset's).
        sinkhorn_ranks: L_kl's Sinkhorn target under DDP: ``"local"`` (each rank's own B×B problem) or
            ``"official"`` (the official code's all-reduced total and per-column sums, documented in
            :func:`~evssl.losses.contrastive.sinkhorn_knopp`); ``None`` = the preset's. Equal on one process.
        evt_projection: use ζ in L_evt (ECDP ``project: true``); ``False`` is the collapse ablation.
        log_views_every_n_epochs: log pictures of the two masked views of the first training batch every n epochs
            (0 = never); ``log_views_num_samples`` samples.
        init_checkpoint: a local MoCo-v3 ViT checkpoint to start from, as ECDP does (supp.: +3.16 linear probe):
            see :func:`evssl.nn.checkpoints.mocov3_init_state` for what is loaded where. The momentum encoder starts
            as its copy.
        preset: ``"official"`` (default: the official code), ``"paper"`` or ``"small"`` (:data:`ECDP_PRESETS`):
            sets ``mask_form``, ``rgb_key_grad`` and, without an explicit ``optim``, the weight-decay policy;
            ``small`` (the official switches) also supplies the optimiser recipe of
            :data:`~evssl.methods.ecdp_options.ECDP_RECIPES` where ``optim`` is left out.
        optim, ema, probe: :class:`~evssl.methods.base.PretrainMethod`; ``optim`` defaults to :class:`ECDPOptim`,
            ``ema`` to 0.99 -> 1.
    """

    RECIPES = ECDP_RECIPES

    def __init__(
        self,
        backbone: nn.Module,
        image_encoder: nn.Module | None = None,
        image_encoder_weights: str | None = None,
        image_embed_dim: int = 512,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        proj_layers: int = 3,
        pred_hidden_dim: int = 4096,
        pred_layers: int = 2,
        mask_ratio: float = 0.5,
        mask_form: Literal["paper", "code"] | None = None,
        crop_min: float = 0.45,
        crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip_p: float = 0.5,
        view_size: tuple[int, int] | None = None,
        temperature_evt: float = 0.2,
        temperature_img: float = 0.1,
        lambda_evt: float = 1.0,
        lambda_rgb: float = 1.0,
        lambda_kl: float = 2.0,
        kl_form: Literal["paper", "code"] = "code",
        rgb_key_grad: Literal["global", "local", "none"] | None = None,
        sinkhorn_ranks: Literal["local", "official"] | None = None,
        evt_projection: bool = True,
        log_views_every_n_epochs: int = 1,
        log_views_num_samples: int = 4,
        init_checkpoint: str | None = None,
        preset: Literal["official", "paper", "small"] = "official",
        optim: ECDPOptim | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        switches = ecdp_switches(preset, mask_form, rgb_key_grad, sinkhorn_ranks, kl_form)
        default_optim = recipe_default(self.RECIPES, preset, "optim", ECDPOptim())
        super().__init__(backbone, optim, ema, probe, default_optim=default_optim, default_ema=EmaConfig(0.99))
        mask_form, rgb_key_grad = switches["mask_form"], switches["rgb_key_grad"]
        self.sinkhorn_ranks = switches["sinkhorn_ranks"]
        if self.optim.no_decay is None:
            self.optim = dataclasses.replace(self.optim, no_decay=switches["no_decay"])
        if int(getattr(backbone, "num_special_tokens", 0)) < 2:
            raise ValueError(
                "ECDP needs a ViT with two special tokens (num_special_tokens=2, class_token=False, "
                "global_pool='special'): token 0 feeds the event branch, token 1 the image branch"
            )
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if not 0.0 < crop_min <= 1.0:
            raise ValueError(f"crop_min must be in (0, 1], got {crop_min}")
        dim = int(backbone.embed_dim)
        self.token_dim = dim
        self.patch_size = int(backbone.patch_size)
        self.h_evt = mocov3_projector(dim, proj_hidden_dim, proj_dim, num_layers=proj_layers)
        self.h_img = mocov3_projector(dim, proj_hidden_dim, proj_dim, num_layers=proj_layers)
        self.pred_evt = mocov3_predictor(proj_dim, pred_hidden_dim, proj_dim, num_layers=pred_layers)
        self.pred_img = mocov3_predictor(proj_dim, pred_hidden_dim, proj_dim, num_layers=pred_layers)
        self.h_image = nn.Linear(image_embed_dim, proj_dim, bias=False)
        self.image_encoder: ImageEncoder | None = as_frozen_image_encoder(image_encoder, image_encoder_weights)
        if self.image_encoder is not None:
            enc_dim = getattr(self.image_encoder, "embed_dim", image_embed_dim)
            if int(enc_dim) != int(image_embed_dim):
                raise ValueError(f"image_encoder gives {enc_dim}-d embeddings but image_embed_dim={image_embed_dim}")
        if init_checkpoint:
            self.init_report = load_mocov3_init(self, init_checkpoint)
        self.momentum_backbone = make_target(self.backbone)
        self.momentum_h_evt = make_target(self.h_evt)
        self.momentum_h_img = make_target(self.h_img)  # EMA-updated like the official code, never used in a loss

        self.image_embed_dim = int(image_embed_dim)
        self.mask_ratio = float(mask_ratio)
        self.mask_form = mask_form
        self.crop_scale = (float(crop_min), 1.0)
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.hflip_p = float(hflip_p)
        self.view_size = None if view_size is None else (int(view_size[0]), int(view_size[1]))
        self.temperature_evt = float(temperature_evt)
        self.temperature_img = float(temperature_img)
        self.lambda_evt = float(lambda_evt)
        self.lambda_rgb = float(lambda_rgb)
        self.lambda_kl = float(lambda_kl)
        self.kl_form = kl_form
        self.rgb_key_grad = rgb_key_grad
        self.evt_projection = bool(evt_projection)
        self.log_views_every_n_epochs = int(log_views_every_n_epochs)
        self.log_views_num_samples = int(log_views_num_samples)

    # ------------------------------------------------------------------ views and masks
    def make_views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two views of the event images ``x`` (B, 2, H, W): independent nearest random-resized crops + flips."""
        size = self.view_size or (int(x.shape[-2]), int(x.shape[-1]))
        views = [
            random_resized_crop_nearest(x, size, self.crop_scale, self.crop_ratio, generator, self.hflip_p)
            for _ in range(2)
        ]
        return views[0], views[1]

    def num_keep(self, height: int, width: int) -> int:
        """Patches kept per view: ``int(N · (1 - mask_ratio))`` (at least 1), N the patch count."""
        return num_keep_patches(height, width, self.patch_size, self.mask_ratio)

    def keep_index(self, view: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Conditional masking (ECDP Eq. 1): indices (B, K) of the kept patches of a signed event-image view
        (:func:`~evssl.nn.masking.event_image_keep_index`: density of the normalised counts ``(x + 1) / 2``)."""
        return event_image_keep_index(view, self.patch_size, self.mask_ratio, self.mask_form, generator)

    # ------------------------------------------------------------------ RGB branch
    def image_embedding(self, batch: dict[str, Any]) -> Tensor:
        """f_I of the paired image: ``batch["embedding"]`` (precomputed) or the frozen encoder on ``batch["frame"]``."""
        if "embedding" in batch:
            emb = batch["embedding"].float()
        elif "frame" in batch:
            if self.image_encoder is None:
                raise ValueError("ECDP got frames but has no image_encoder; set one or precompute embeddings")
            with torch.no_grad():
                emb = self.image_encoder(batch["frame"]).float()
        else:
            raise KeyError(
                "ECDP needs the paired RGB frame ('frame') or its precomputed embedding ('embedding') in the batch: "
                "use the ECDPViews sampler with rgb='frame' or rgb='embedding'"
            )
        if emb.shape[-1] != self.image_embed_dim:
            raise ValueError(f"image embeddings have {emb.shape[-1]} dims, ECDP was built with {self.image_embed_dim}")
        return emb

    # ------------------------------------------------------------------ forward
    def forward_pretrain(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Every tensor of one ECDP step: views, kept indices, q_evt, q_img, k_evt, y and the query features.

        Returns ``{"view_q", "view_k", "keep_q", "keep_k", "tokens_q" (B, 2, D), "q_evt", "q_img", "k_evt",
        "f_image" (B, E), "y" (B, proj_dim), "features" (B, 2D)}``.
        """
        x = batch["input"].float()
        f_image = self.image_embedding(batch)
        view_q, view_k = self.make_views(x, generator)
        keep_q = self.keep_index(view_q, generator)
        keep_k = self.keep_index(view_k, generator)
        tokens_q = self.backbone.forward_features(view_q, keep_index=keep_q)["special"][:, :2]
        q_evt = self.pred_evt(self.h_evt(tokens_q[:, 0]))
        q_img = self.pred_img(self.h_img(tokens_q[:, 1]))
        with torch.no_grad():
            tokens_k = self.momentum_backbone.forward_features(view_k, keep_index=keep_k)["special"][:, :2]
            k_evt = self.momentum_h_evt(tokens_k[:, 0])
        y = self.h_image(f_image)
        return {
            "view_q": view_q,
            "view_k": view_k,
            "keep_q": keep_q,
            "keep_k": keep_k,
            "tokens_q": tokens_q,
            "q_evt": q_evt,
            "q_img": q_img,
            "k_evt": k_evt,
            "f_image": f_image,
            "y": y,
            "features": tokens_q.flatten(1),
        }

    def loss_terms(self, q_evt: Tensor, k_evt: Tensor, q_img: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``{"loss", "loss_evt", "loss_rgb", "loss_kl"}`` (module docstring, Eqs. 2–6)."""
        q_evt, k_evt, q_img, y = q_evt.float(), k_evt.float(), q_img.float(), y.float()
        if self.evt_projection:
            loss_evt = info_nce(
                embedding_projection(q_evt, y),
                embedding_projection(k_evt, y),
                self.temperature_evt,
                normalize=False,
            )
        else:
            loss_evt = info_nce(q_evt, k_evt, self.temperature_evt)
        keys = y.detach() if self.rgb_key_grad == "none" else y
        loss_rgb = info_nce(q_img, keys, self.temperature_img, keys_with_grad=self.rgb_key_grad == "global")
        loss_kl = distribution_alignment_loss(q_img, y, self.temperature_img, self.kl_form, self.sinkhorn_ranks)
        loss = self.lambda_evt * loss_evt + self.lambda_rgb * loss_rgb + self.lambda_kl * loss_kl
        return {"loss": loss, "loss_evt": loss_evt, "loss_rgb": loss_rgb, "loss_kl": loss_kl}

    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """ECDP loss of one batch + monitors: ``|cos(q_evt, y)|`` (what ζ keeps) and the std of normalised q_evt."""
        out = self.forward_pretrain(batch)
        terms = self.loss_terms(out["q_evt"], out["k_evt"], out["q_img"], out["y"])
        with torch.no_grad():
            cos = F.cosine_similarity(out["q_evt"].float(), out["y"].float(), dim=-1).abs().mean()
            std = F.normalize(out["q_evt"].float(), dim=-1).std(dim=0).mean() * math.sqrt(out["q_evt"].shape[-1])
        if batch_idx == 0 and should_log_pictures(self, self.log_views_every_n_epochs):
            log_ecdp_views(self, out, self.patch_size, self.log_views_num_samples)  # both masked views
        logs = {k: v for k, v in terms.items() if k != "loss"}
        logs.update(cos_evt_rgb=cos, q_evt_std_ratio=std)
        return SSLOutput(terms["loss"], logs, features=out["features"].detach())

    # ------------------------------------------------------------------ evaluation / export
    def probe_features(self, batch: dict[str, Any]) -> Tensor:
        """concat(token 0, token 1) of the full, unmasked input (768-d for ViT-S): ECDP's transfer feature."""
        return self.backbone(batch["input"].float())

    def backbone_for_export(self) -> nn.Module:
        """The online ViT; its ``"special"`` pooled output is the ECDP feature."""
        return self.backbone

    # ------------------------------------------------------------------ optimisation
    def learnable_params(self) -> list[dict[str, Any]]:
        """Backbone and probe (base) + projectors, predictors and h_I; f_I and the momentum encoder never train."""
        return [
            *super().learnable_params(),
            {"name": "projectors", "params": [*self.h_evt.parameters(), *self.h_img.parameters()]},
            {"name": "predictors", "params": [*self.pred_evt.parameters(), *self.pred_img.parameters()]},
            {"name": "h_image", "params": list(self.h_image.parameters())},
        ]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Backbone and both projectors → their momentum copies (no predictors)."""
        return [
            (self.backbone, self.momentum_backbone),
            (self.h_evt, self.momentum_h_evt),
            (self.h_img, self.momentum_h_img),
        ]
