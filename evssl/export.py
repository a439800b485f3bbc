"""``evssl export``: a trained checkpoint's backbone as a plain state dict plus a JSON description.

``evssl export runs/.../last.ckpt --out backbone.pt`` writes

* ``backbone.pt`` — ``torch.save(model.backbone_for_export().state_dict())``: loadable by anyone with plain PyTorch;
* ``backbone.json`` — ``{"backbone": {"class_path", "init_args"}, "in_chans", "num_features", "method",
  "checkpoint", "global_step", "epoch", "evssl_version", "num_parameters"}``.

A downstream config loads it by path (``Classifier(pretrained="backbone.pt")``), and
:func:`load_exported_backbone` rebuilds the network from the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

__all__ = ["add_export_arguments", "export_backbone", "load_exported_backbone", "load_module", "main_export"]

FORMAT = "evssl-backbone/1"


def _import_components() -> None:
    """Import every evssl component so class paths in checkpoints resolve."""
    import evssl.data
    import evssl.methods
    import evssl.tasks  # noqa: F401


def load_module(ckpt: str | Path) -> LightningModule:
    """Rebuild the LightningModule of a checkpoint written by ``evssl fit`` (weights loaded, on CPU, eval mode).

    ``pretrained`` (of downstream tasks) is cleared first: the weights come from the checkpoint itself.

    Raises:
        ValueError: the checkpoint carries no config (it was not written through the evssl CLI).
    """
    _import_components()
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    hparams = data.get("hyper_parameters") or {}
    if "_class_path" not in hparams:
        raise ValueError(
            f"{ckpt} has no model config in its hyper-parameters (was it written by `evssl fit`?); "
            "build the module in Python and call export_backbone(module=...) instead"
        )
    overrides: dict[str, Any] = {"pretrained": None} if "pretrained" in hparams else {}
    module = LightningModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, **overrides)
    return module.eval()


def export_backbone(
    ckpt: str | Path | None,
    out: str | Path,
    *,
    module: LightningModule | None = None,
) -> dict[str, Any]:
    """Write ``module.backbone_for_export()`` (the module rebuilt from ``ckpt`` by default) to ``out`` + ``.json``.

    Returns the metadata written next to the weights.
    """
    if module is None:
        if ckpt is None:
            raise ValueError("export_backbone needs a checkpoint or a module")
        module = load_module(ckpt)
    if not hasattr(module, "backbone_for_export"):
        raise TypeError(f"{type(module).__name__} has no backbone_for_export(); nothing to export")
    backbone: nn.Module = module.backbone_for_export()
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    if hasattr(module, "backbone_config"):
        config = module.backbone_config()
    else:
        cls = type(backbone)
        config = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {}}
    ckpt_meta = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt is not None else {}
    saved = (ckpt_meta.get("hyper_parameters") or {}).get("backbone")
    if isinstance(saved, dict) and "class_path" in saved:
        # a module rebuilt from a checkpoint holds the backbone object; the config that built it is in the ckpt,
        # and what the method changes for export (ECDDP: mask_token, window_padding) goes on top of it
        if saved["class_path"].rsplit(".", 1)[-1] == type(backbone).__name__:
            init_args = {**dict(saved.get("init_args") or {}), **dict(config.get("init_args") or {})}
            config = {"class_path": saved["class_path"], "init_args": init_args}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)
    from evssl import __version__

    cls = type(module)
    meta = {
        "format": FORMAT,
        "backbone": config,
        "in_chans": getattr(backbone, "in_chans", None),
        "num_features": getattr(backbone, "num_features", None),
        "method": f"{cls.__module__}.{cls.__qualname__}",
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "global_step": ckpt_meta.get("global_step"),
        "epoch": ckpt_meta.get("epoch"),
        "evssl_version": __version__,
        "num_parameters": int(sum(v.numel() for v in backbone.parameters())),
    }
    meta_path = out.with_suffix(".json")
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(tmp, meta_path)
    return meta


def load_exported_backbone(path: str | Path) -> nn.Module:
    """Rebuild an exported backbone from its ``.json`` (class path + init args) and load the weights strictly."""
    from jsonargparse import ArgumentParser

    from evssl.tasks.classification import load_backbone_weights

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} (written by `evssl export` next to the weights) not found")
    meta = json.loads(meta_path.read_text())
    if not meta.get("backbone", {}).get("init_args") and meta.get("in_chans") is None:
        raise ValueError(f"{meta_path} does not describe the backbone's constructor arguments")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--backbone", type=nn.Module)
    cfg = parser.parse_object({"backbone": meta["backbone"]})
    backbone = parser.instantiate(cfg).backbone
    load_backbone_weights(backbone, path)
    return backbone


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``evssl export``."""
    parser.add_argument("checkpoint", type=Path, help="Lightning checkpoint written by `evssl fit`")
    parser.add_argument("-o", "--out", type=Path, required=True, help="where to write the backbone state dict (.pt)")
    return parser


def main_export(argv: Sequence[str] | None = None) -> int:
    """``evssl export CKPT --out backbone.pt``."""
    parser = add_export_arguments(
        argparse.ArgumentParser(
            prog="evssl export",
            description="Write a checkpoint's backbone as a plain state dict (+ JSON with its class path and args).",
        )
    )
    args = parser.parse_args(argv)
    try:
        meta = export_backbone(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError, TypeError) as err:
        parser.exit(2, f"evssl export: error: {err}\n")
    print(
        f"wrote {args.out} ({meta['num_parameters']:,} parameters, {meta['backbone']['class_path']}) "
        f"and {Path(args.out).with_suffix('.json')}"
    )
    return 0
