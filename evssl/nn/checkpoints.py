"""Checkpoint conversion into evssl modules (no downloads: every path is a local file).

* :func:`mocov3_init_state` / :func:`load_mocov3_init`: a MoCo-v3 ViT checkpoint onto ECDP's backbone, projectors and
  predictors, as the official ECDP run starts from MoCo-v3 ViT-S (``config/ours/base/ours_pretraining_base.yml``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

__all__ = ["load_mocov3_init", "mocov3_init_state"]


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
