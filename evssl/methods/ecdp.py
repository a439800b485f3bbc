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

Views (official data pipeline, reproduced by :class:`ECDPViews` + :meth:`ECDP.make_views`): a random window of
:math:`N` consecutive events (30 000), rescaled to the model resolution (224×224), event-level augmentation (time
flip with polarity inversion p = 0.5, ±20 px shift, correlated noise events), a 2-channel count histogram normalised
per channel :math:`h/(\max h + 1)` then :math:`(h - 0.5)\cdot 2` (:class:`~evssl.events.representations.EventImage`);
then, on the device, two views by independent random-resized crops (scale :math:`(0.45, 1)`, **nearest**
interpolation) and horizontal flips (:func:`~evssl.nn.crops.random_resized_crop_nearest`).

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
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from evssl.data.samplers import ClassificationWindow, _resize, nearest_index
from evssl.events.representations import Representation
from evssl.events.schema import Events
from evssl.losses.contrastive import info_nce
from evssl.losses.ecdp import distribution_alignment_loss, embedding_projection
from evssl.methods.base import PretrainMethod, SSLOutput
from evssl.nn.crops import random_resized_crop_nearest
from evssl.nn.ema import make_target
from evssl.nn.heads import mocov3_predictor, mocov3_projector
from evssl.nn.image_encoders import ImageEncoder, as_frozen_image_encoder
from evssl.nn.masking import conditional_keep_index, keep_mask, patch_density
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.optim import EmaConfig, OptimConfig

if TYPE_CHECKING:  # pragma: no cover
    from evssl.events.batch import EventBatch
    from evssl.events.io.store import EventStore

__all__ = ["ECDP", "ECDPViews", "RandomResizedCropNearest", "masked_view_picture"]

#: Event key of a training sample when :class:`ECDPViews` has its own ``train_representation`` (transfer runs).
TRAIN_EVENTS = "train_events"


class RandomResizedCropNearest(Representation):
    """A representation followed by ECDP's image-level augmentation: ``RandomResizedCrop(scale=(crop_min, 1),
    NEAREST)`` + ``RandomHorizontalFlip(hflip_p)``, batched on the device (:func:`random_resized_crop_nearest`).

    For the transfer runs, as ``train_representation`` of :class:`ECDPViews` (applied to training samples only):
    ECDP linear probe ``crop_min = 0.9``, fine-tuning ``0.85``. ``size`` (H, W) defaults to the input size.
    """

    def __init__(
        self,
        representation: Representation,
        crop_min: float = 0.85,
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip_p: float = 0.5,
        size: tuple[int, int] | None = None,
    ) -> None:
        if not 0.0 < crop_min <= 1.0:
            raise ValueError(f"crop_min must be in (0, 1], got {crop_min}")
        self.representation = representation
        self.crop_min = float(crop_min)
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip_p = float(hflip_p)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    @property
    def channels(self) -> int:
        return int(self.representation.channels)

    def __call__(self, ev: EventBatch) -> Tensor:
        x = self.representation(ev)
        return random_resized_crop_nearest(x, self.size, (self.crop_min, 1.0), self.ratio, None, self.hflip_p)


# ======================================================================================================== views
class ECDPViews(ClassificationWindow):
    """ECDP's sampler: a window of ``num_events`` consecutive events + the paired RGB frame (or its embedding).

    Training sample (``train=True``)::

        {"events": Events (resolution), "window": (t0, t1), "label": int, "index": int,
         "frame": uint8 (3, h, w)          # rgb="frame": the frame nearest to the window centre
         | "embedding": float32 (E,)}      # rgb="embedding": the store's precomputed image embedding

    The window starts at a uniformly random event (the official ``slice_method: random``); events are rescaled to
    ``resolution`` (``x' = ⌊x·W'/W⌋``, ECDP's ``no_sample`` reshape), then augmented as ECDP's ``base_augment``:
    time flip with polarity inversion (p = ``time_flip_p``), an integer shift ``U{-s..s}`` in x and y with events
    leaving the sensor dropped, and correlated noise (``add_correlated_noise``: ``U[noise_count)`` jittered copies
    of random events when there are at least ``noise_min_events``). The data module turns ``events`` into
    ``batch["input"]`` with its representation (use :class:`~evssl.events.representations.EventImage`); the two
    crops are made on the device by :class:`ECDP`.

    Evaluation sample (``train=False``): ``{"events", "window", "label", "index"}`` — the centred window of
    ``num_events`` events, rescaled, not augmented (deterministic, unlike the official eval-time random slicing).

    Args:
        num_events: events per window (ECDP: 30 000).
        resolution: (H, W) of the model input (ECDP: 224×224); ``None`` keeps the sensor size.
        rgb: ``"frame"`` (paired frame from the store, embedded on the fly by the method's frozen encoder),
            ``"embedding"`` (precomputed, ``EventStore.embedding``) or ``"none"``.
        frame_size: (H, W) the frame is resized to (area interpolation); ``None`` keeps the stored size.
        time_flip_p: probability of the time flip.
        max_shift: shift range in pixels; ``None`` = ECDP's 20 px at 224 scaled to the resolution,
            ``max(1, round(20 · min(H, W) / 224))``.
        correlated_noise: add correlated noise events.
        noise_count, noise_xy_std, noise_t_std_us, noise_min_events: :func:`~evssl.events.augment.add_correlated_noise`
            parameters (ECDP: (100, 5000), 1.5 px, 1 ms, 1000).
        augment: replaces the ECDP augmentation above when given (``augment(ev, rng) -> Events``).
        train_representation: for transfer runs (linear probe / fine-tuning with ``rgb="none"``): the
            representation of *training* samples only, e.g. :class:`RandomResizedCropNearest` (ECDP's image-level
            crop + flip). Training events then travel under ``"train_events"`` (mapped to ``batch["input"]`` with
            this representation) while evaluation samples keep ``"events"`` and the data module's representation.
    """

    def __init__(
        self,
        num_events: int = 30_000,
        resolution: tuple[int, int] | None = (224, 224),
        rgb: Literal["frame", "embedding", "none"] = "frame",
        frame_size: tuple[int, int] | None = None,
        time_flip_p: float = 0.5,
        max_shift: int | None = None,
        correlated_noise: bool = True,
        noise_count: tuple[int, int] = (100, 5000),
        noise_xy_std: float = 1.5,
        noise_t_std_us: float = 1000.0,
        noise_min_events: int = 1000,
        augment: Callable | None = None,
        train_representation: Representation | None = None,
    ) -> None:
        super().__init__(duration_us=None, num_events=num_events, augment=augment, resolution=resolution)
        if rgb not in ("frame", "embedding", "none"):
            raise ValueError(f"rgb must be 'frame', 'embedding' or 'none', got {rgb!r}")
        if not 0.0 <= time_flip_p <= 1.0:
            raise ValueError(f"time_flip_p must be in [0, 1], got {time_flip_p}")
        if max_shift is not None and max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.rgb = rgb
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        self.time_flip_p = float(time_flip_p)
        self.max_shift = None if max_shift is None else int(max_shift)
        self.correlated_noise = bool(correlated_noise)
        self.noise_count = (int(noise_count[0]), int(noise_count[1]))
        self.noise_xy_std = float(noise_xy_std)
        self.noise_t_std_us = float(noise_t_std_us)
        self.noise_min_events = int(noise_min_events)
        self.train_representation = train_representation
        self.representations = {TRAIN_EVENTS: train_representation} if train_representation is not None else None

    def representation_keys(self) -> dict[str, str]:
        """``events`` → ``input`` (and ``train_events`` → ``input`` with ``train_representation``)."""
        keys = {"events": "input"}
        if self.train_representation is not None:
            keys[TRAIN_EVENTS] = "input"
        return keys

    def __repr__(self) -> str:
        return f"ECDPViews(num_events={self.num_events}, resolution={self.resolution}, rgb={self.rgb!r})"

    def shift_range(self, height: int, width: int) -> int:
        """Shift range in pixels for a ``height x width`` input (ECDP: 20 px at 224)."""
        if self.max_shift is not None:
            return self.max_shift
        return max(1, round(20 * min(height, width) / 224))

    def ecdp_augment(self, ev: Events, rng: np.random.Generator) -> Events:
        """ECDP's ``base_augment``: time flip (p), random shift, correlated noise — in this order."""
        from evssl.events import augment as aug

        if self.time_flip_p > 0 and rng.random() < self.time_flip_p:
            ev = aug.time_flip(ev)
        ev = aug.shift(ev, self.shift_range(ev.height, ev.width), rng)
        if self.correlated_noise:
            ev = aug.add_correlated_noise(
                ev, rng, self.noise_count, self.noise_xy_std, self.noise_t_std_us, self.noise_min_events
            )
        return ev

    def paired_rgb(self, store: EventStore, index: int, window: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``{"frame": uint8 (3, h, w)}`` nearest to the window centre, ``{"embedding": (E,)}`` or ``{}``."""
        if self.rgb == "embedding":
            emb = store.embedding(index)
            if emb is None:
                raise ValueError(f"recording {index} has no precomputed embedding (ECDPViews rgb='embedding')")
            return {"embedding": torch.from_numpy(np.asarray(emb, dtype=np.float32).copy())}
        if self.rgb == "frame":
            ft = store.frame_times(index)
            if len(ft) == 0:
                raise ValueError(f"recording {index} has no frames (ECDPViews rgb='frame')")
            frame = np.ascontiguousarray(store.frames(index, nearest_index(ft, (window[0] + window[1]) // 2)))
            img = frame.transpose(2, 0, 1)
            if self.frame_size is not None and tuple(img.shape[-2:]) != self.frame_size:
                img = np.clip(np.rint(_resize(img, self.frame_size, "area")), 0, 255).astype(np.uint8)
            return {"frame": torch.from_numpy(np.ascontiguousarray(img))}
        return {}

    def __call__(
        self,
        store: EventStore,
        index: int,
        rng: np.random.Generator,
        train: bool,
        segment: tuple[int, int] = (0, 1),
    ) -> dict[str, Any]:
        """Training: augmented window + paired RGB; evaluation: the centred plain window."""
        ev, window = self.select_window(store, index, rng, train, segment)
        if self.resolution is not None and (ev.height, ev.width) != self.resolution:
            from evssl.events import augment as aug

            ev = aug.rescale(ev, self.resolution)
        sample: dict[str, Any] = {"window": window, "label": int(store.info(index).label), "index": int(index)}
        if train:
            ev = self.augment(ev, rng) if self.augment is not None else self.ecdp_augment(ev, rng)
            sample.update(self.paired_rgb(store, index, window))
            if self.train_representation is not None:
                sample[TRAIN_EVENTS] = ev
                sample[f"{TRAIN_EVENTS}_window"] = sample.pop("window")
                return sample
        sample["events"] = ev
        return sample


# ======================================================================================================== pictures
def masked_view_picture(view: Tensor, keep_index: Tensor, patch_size: int, min_side: int = 128) -> np.ndarray:
    """Colour picture (H', W', 3) uint8 of one signed event-image view (2, H, W) with its kept patches highlighted.

    ON counts red, OFF counts blue on white (:func:`~evssl.callbacks.media.tensor_to_rgb`); masked patches are
    washed out towards grey; the picture is enlarged (nearest) until its shorter side is at least ``min_side``.
    """
    from evssl.callbacks.media import tensor_to_rgb

    counts = ((view.detach().float().cpu() + 1.0) / 2.0).clamp_min(0.0)
    rgb = tensor_to_rgb(counts, mode="onoff").astype(np.float32)
    h, w = rgb.shape[:2]
    gh, gw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    kept = keep_mask(keep_index.detach().cpu()[None], gh * gw)[0].reshape(gh, gw).numpy()
    kept = np.repeat(np.repeat(kept, patch_size, 0), patch_size, 1)[:h, :w, None]
    rgb = np.where(kept, rgb, 0.25 * rgb + 0.75 * 150.0)
    scale = max(1, math.ceil(min_side / max(1, min(h, w))))
    rgb = np.repeat(np.repeat(rgb, scale, 0), scale, 1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# ================================================================================================ MoCo-v3 init
def mocov3_init_state(state: dict[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """Map a MoCo-v3 ViT pre-training state dict onto ECDP's modules, as ECDP initialises from MoCo v3 ViT-S.

    MoCo v3 (Chen et al., ICCV 2021; ``main_moco.py`` checkpoints: ``{"state_dict": {"module.base_encoder.*",
    "module.momentum_encoder.*", "module.predictor.*"}}``, timm ViT names) → ECDP (digest §1, "Init"):

    * ``base_encoder.{blocks,norm}.*`` → ``backbone.*`` (same timm names);
    * ``base_encoder.cls_token`` (1, 1, D) → every special token of ``backbone.special_tokens`` (1, S, D);
    * ``base_encoder.pos_embed``: the cls position is dropped; the patch positions are loaded only into a learnable
      position embedding of the same grid (evssl's default 2-D sin-cos table equals MoCo v3's own fixed one);
    * ``base_encoder.patch_embed.*`` only when the input channels match (events have 2, so ECDP drops it);
    * ``base_encoder.head.*`` (the 3-layer projector) → ``h_evt`` and ``h_img``; ``predictor.*`` → ``pred_evt`` and
      ``pred_img`` (same ``Linear/BN/ReLU`` sequence indices as evssl's ``MLP.layers``).

    Returns the ``model.state_dict()``-keyed tensors to load and the skipped source keys (with the reason).
    """
    src = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    out: dict[str, Tensor] = {}
    skipped: list[str] = []

    def put(dst: str, value: Tensor, key: str) -> None:
        if dst not in own:
            skipped.append(f"{key} (no {dst} in the model)")
        elif own[dst].shape != value.shape:
            skipped.append(f"{key} (shape {tuple(value.shape)} vs {dst} {tuple(own[dst].shape)})")
        else:
            out[dst] = value.to(own[dst].dtype)

    for key, value in src.items():
        if key.startswith("momentum_encoder."):
            continue  # ECDP's momentum encoder starts as a copy of the online one
        if key.startswith("predictor."):
            for dst in ("pred_evt", "pred_img"):
                put(f"{dst}.layers.{key.removeprefix('predictor.')}", value, key)
            continue
        if not key.startswith("base_encoder."):
            skipped.append(f"{key} (not part of the MoCo-v3 encoder)")
            continue
        name = key.removeprefix("base_encoder.")
        if name.startswith("head."):
            for dst in ("h_evt", "h_img"):
                put(f"{dst}.layers.{name.removeprefix('head.')}", value, key)
        elif name == "cls_token":
            special = own.get("backbone.special_tokens")
            if special is None:
                skipped.append(f"{key} (the backbone has no special tokens)")
            else:
                put("backbone.special_tokens", value.reshape(1, 1, -1).expand_as(special).clone(), key)
        elif name == "pos_embed":
            dst = "backbone.pos_embed"
            if dst in own and value.shape[1] == own[dst].shape[1] + 1:
                put(dst, value[:, 1:], key)
            else:
                skipped.append(f"{key} (position table fixed or of another grid)")
        else:
            put(f"backbone.{name}", value, key)
    return out, skipped


def load_mocov3_init(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a local MoCo-v3 checkpoint into ``model`` (:func:`mocov3_init_state`); returns what was loaded.

    Raises:
        ValueError: naming the file when it holds no MoCo-v3 ViT weights or no transformer block matches the model.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(".blocks." in k or k.startswith("blocks.") for k in state):
        raise ValueError(f"{path}: not a MoCo-v3 ViT checkpoint (expected 'state_dict' with base_encoder.blocks.*)")
    mapped, skipped = mocov3_init_state(state, model)
    blocks = [k for k in mapped if k.startswith("backbone.blocks.")]
    if not blocks:
        raise ValueError(f"{path}: no transformer block matches the backbone; skipped: {skipped[:5]}")
    model.load_state_dict(mapped, strict=False)
    rank_zero_info(f"ECDP: initialised {len(mapped)} tensors from MoCo-v3 checkpoint {path} ({len(skipped)} skipped)")
    return {"path": str(path), "loaded": sorted(mapped), "skipped": skipped}


# ======================================================================================================== method
@dataclass
class ECDPOptim(OptimConfig):
    """ECDP's ViT-S recipe (``config/ours/base/ours_pretraining_base.yml``, ``pr_vits.yml``): AdamW, base lr
    1.5e-4 per 256 samples, weight decay 0.03, 40 warm-up epochs, cosine to 0."""

    lr: float = 1.5e-4
    weight_decay: float = 0.03
    warmup_epochs: float = 40.0
    lr_batch_scale: bool = True
    no_decay: tuple[str, ...] | None = None  # None = the preset's weight-decay policy


#: The faithfulness switches of :class:`ECDP` (``None`` arguments and ``optim.no_decay: null`` take these values).
ECDP_PRESETS: dict[str, dict[str, Any]] = {
    # official code: top-K of d*u masking, no gradient through the image keys of L_RGB, AdamW over
    # ``model.parameters()`` with one weight decay for all (``trainer/pr_trainer.py:214-219``)
    "official": {"mask_form": "code", "rgb_key_grad": "none", "no_decay": ()},
    # paper text: sampling proportional to density (Eq. 1), h_I trained by L_RGB (§3.3), usual no-decay kinds
    "paper": {"mask_form": "paper", "rgb_key_grad": "global", "no_decay": OptimConfig().no_decay},
}


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
        evt_projection: use ζ in L_evt (ECDP ``project: true``); ``False`` is the collapse ablation.
        log_views_every_n_epochs: log pictures of the two masked views of the first training batch every n epochs
            (0 = never); ``log_views_num_samples`` samples.
        init_checkpoint: a local MoCo-v3 ViT checkpoint to start from, as ECDP does (supp.: +3.16 linear probe):
            see :func:`mocov3_init_state` for what is loaded where. The momentum encoder starts as its copy.
        preset: ``"official"`` (default: the official code) or ``"paper"`` (:data:`ECDP_PRESETS`): sets
            ``mask_form``, ``rgb_key_grad`` and, without an explicit ``optim``, the weight-decay policy.
        optim, ema, probe: :class:`~evssl.methods.base.PretrainMethod`; ``optim`` defaults to :class:`ECDPOptim`,
            ``ema`` to 0.99 -> 1.
    """

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
        evt_projection: bool = True,
        log_views_every_n_epochs: int = 1,
        log_views_num_samples: int = 4,
        init_checkpoint: str | None = None,
        preset: Literal["official", "paper"] = "official",
        optim: ECDPOptim | None = None,
        ema: EmaConfig | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        super().__init__(backbone, optim, ema, probe, default_optim=ECDPOptim(), default_ema=EmaConfig(0.99))
        table = ECDP_PRESETS.get(preset)
        if table is None:
            raise ValueError(f"ECDP: unknown preset {preset!r}; expected one of {sorted(ECDP_PRESETS)}")
        mask_form = table["mask_form"] if mask_form is None else mask_form
        rgb_key_grad = table["rgb_key_grad"] if rgb_key_grad is None else rgb_key_grad
        if self.optim.no_decay is None:
            self.optim = dataclasses.replace(self.optim, no_decay=tuple(table["no_decay"]))
        if int(getattr(backbone, "num_special_tokens", 0)) < 2:
            raise ValueError(
                "ECDP needs a ViT with two special tokens (num_special_tokens=2, class_token=False, "
                "global_pool='special'): token 0 feeds the event branch, token 1 the image branch"
            )
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if mask_form not in ("paper", "code") or kl_form not in ("paper", "code"):
            raise ValueError("mask_form and kl_form must be 'paper' or 'code'")
        if rgb_key_grad not in ("global", "local", "none"):
            raise ValueError(f"rgb_key_grad must be 'global', 'local' or 'none', got {rgb_key_grad!r}")
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
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"ECDP view {height}x{width} is not a multiple of the patch size {self.patch_size}")
        n = (height // self.patch_size) * (width // self.patch_size)
        return max(1, int(n * (1.0 - self.mask_ratio)))

    def keep_index(self, view: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Conditional masking (ECDP Eq. 1): indices (B, K) of the kept patches of a signed event-image view.

        The density is computed on the normalised counts ``(x + 1) / 2`` in [0, 1) (empty pixels contribute 0).
        """
        counts = ((view.detach().float() + 1.0) * 0.5).clamp_min(0.0)
        density = patch_density(counts, self.patch_size)
        k = self.num_keep(int(view.shape[-2]), int(view.shape[-1]))
        return conditional_keep_index(density, k, form=self.mask_form, generator=generator)

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
        loss_kl = distribution_alignment_loss(q_img, y, self.temperature_img, form=self.kl_form)
        loss = self.lambda_evt * loss_evt + self.lambda_rgb * loss_rgb + self.lambda_kl * loss_kl
        return {"loss": loss, "loss_evt": loss_evt, "loss_rgb": loss_rgb, "loss_kl": loss_kl}

    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """ECDP loss of one batch + monitors: ``|cos(q_evt, y)|`` (what ζ keeps) and the std of normalised q_evt."""
        out = self.forward_pretrain(batch)
        terms = self.loss_terms(out["q_evt"], out["k_evt"], out["q_img"], out["y"])
        with torch.no_grad():
            cos = F.cosine_similarity(out["q_evt"].float(), out["y"].float(), dim=-1).abs().mean()
            std = F.normalize(out["q_evt"].float(), dim=-1).std(dim=0).mean() * math.sqrt(out["q_evt"].shape[-1])
        if batch_idx == 0:
            self._log_views(out)
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

    # ------------------------------------------------------------------ pictures
    def _log_views(self, out: dict[str, Tensor]) -> None:
        """Pictures of both masked views for the first samples of the batch (no-op without a logger)."""
        n_every = self.log_views_every_n_epochs
        if n_every <= 0 or self._trainer is None or not self.trainer.loggers:
            return
        if self.current_epoch % n_every or not self.trainer.is_global_zero:
            return
        from evssl.callbacks.media import log_images

        images, captions = [], []
        for i in range(min(self.log_views_num_samples, out["view_q"].shape[0])):
            a = masked_view_picture(out["view_q"][i], out["keep_q"][i], self.patch_size)
            b = masked_view_picture(out["view_k"][i], out["keep_k"][i], self.patch_size)
            gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
            images.append(np.concatenate([a, gap, b], axis=1))
            captions.append(f"sample {i}: query view | momentum view (kept patches bright)")
        log_images(self.trainer, "train/ecdp_views", images, captions=captions)
