"""Shrink a paper-scale Lightning config under ``experiments/`` to a one-step CPU run on the bundled synthetic data.

A config is shrunk by small declarative tables, merged into the parsed YAML before it goes through ``evssl fit``:

* :data:`TRAINER` and the data-module tables (:data:`DATA_MODULES`) are **set**: one CPU step, no loggers, the
  synthetic ``tiny`` stores instead of the real stores the paper configs name;
* :data:`BACKBONES` (one per backbone family) are **set** on every backbone spec of the model (``backbone``,
  ``teacher_backbone``, ``broad_backbones``): same class, tiny width/depth, the config's other options kept;
* :data:`MODELS` (one per method / task) and :data:`SAMPLERS` (one per sampler class) only **replace values that the
  config states** (heads, prototype counts, crop and input sizes, window lengths), so a shrunk config keeps the
  structure of the paper config.

Sizes stay consistent: inputs are 32 px (ViT patch 8 = input/4; Swin patch 2 -> 16/8/4/2 px stages, ECDDP's global /
local crops 32 / 16), dense maps 32x48 (multiples of 16 for the Swin stages), windows of 50 ms and 1,500 events fit
the 200 ms, 48x64 synthetic clips. A config whose model, backbone, data module or sampler has no table entry fails
with :class:`ShrinkError` naming the config and the missing entry.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

#: every Lightning fit config that is not a smoke config (``experiments/smoke`` runs end to end in test_cli) or a
#: benchmark grid (``experiments/benchmark`` are ``evssl benchmark`` inputs, not Lightning configs)
PAPER_CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.parent.name not in ("smoke", "benchmark"))

TRAINER: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "num_nodes": 1,
    "strategy": "auto",
    "precision": "32-true",
    "fast_dev_run": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "accumulate_grad_batches": 1,
}

#: callbacks that need a logger (``logger: false`` above): removed from ``trainer.callbacks``
NEEDS_LOGGER = ("LearningRateMonitor",)

#: set on every backbone spec, by the backbone's class name
BACKBONES: dict[str, dict[str, Any]] = {
    "ResNet": {"block": "evssl.nn.backbones.BasicBlock", "layers": [1, 1, 1, 1], "width": 8, "small_input": True},
    "VisionTransformer": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
    "SwinTransformer": {"patch_size": 2, "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
}
BACKBONE_KEYS = ("backbone", "teacher_backbone", "broad_backbones")
#: Swin windows: replaced where the config states one (4 divides the 16 px stage of a 32 px input)
SWIN_WINDOW = 4

#: replaced where the config states them, by the model's class name
MODELS: dict[str, dict[str, Any]] = {
    "BraVe": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32, "randconv_max_kernel": 3},
    "Classifier": {"pretrained": None},  # no exported backbone here: a random one
    "SemanticSegmentation": {
        "pretrained": None,
        "decoder_channels": 16,
        "vit_pyramid": {"block_indices": [0, 0, 0, 0]},  # the one ViT block feeds every level
    },
    "ECDDP": {
        "heads": {"neck_dim": 32, "num_prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
        "context": {"num_clusters": 4, "kmeans_iters": 2},
        "crops": {"input_size": [32, 32], "global_size": 32, "local_size": 16, "num_local": 2},
    },
    "ECDP": {
        "image_embed_dim": 16,
        "proj_hidden_dim": 32,
        "proj_dim": 16,
        "pred_hidden_dim": 32,
        "image_encoder": {"init_args": {"embed_dim": 16, "width": 4}},
    },
    "EvDistill": {
        "teacher_checkpoint": None,  # the teacher stage's checkpoint is not here: a random teacher
        "num_semantic_classes": 11,  # the synthetic stores' semantic classes (DDD17 has 6)
        "head": {"aspp_channels": 8, "aspp_rates": [1, 2, 3], "decoder_channels": 8, "low_level_channels": 4},
        "bmr": {"width": 4, "depth": 1},
        "kd": {"affinity_nodes": 16},
    },
    "EvDistillTeacher": {
        "num_semantic_classes": 11,
        "head": {"aspp_channels": 8, "aspp_rates": [1, 2, 3], "decoder_channels": 8, "low_level_channels": 4},
    },
    "MetaVO": {},  # see MODEL_GROUPS
}
#: set on the model's init_args (nested groups merged), by the model's class name: groups whose paper-scale values
#: are class defaults, which the configs do not state
MODEL_GROUPS: dict[str, dict[str, Any]] = {
    "MetaVO": {"network": {"decoder_channels": [8, 8, 16, 16, 32], "num_scales": 2, "pose_hidden": 16}},
}

#: set on the data module, by its class name
DATA_MODULES: dict[str, dict[str, Any]] = {
    "EventDataModule": {
        "source": "synthetic",
        "synthetic_size": "tiny",
        "batch_size": 4,
        "num_workers": 0,
        "windows_per_recording": 1,
    },
    "VODataModule": {
        "train_source": "synthetic:vo_tiny:default",
        "test_source": "synthetic:vo_tiny:night_fine_fast",
        "split": "sequence",  # the simulator's sequences (the paper configs name KITTI / MVSEC splits)
        "val_split": "sequence",
        "test_split": "sequence",
        "snippets_per_sequence": 2,
        "max_test_windows": 6,
        "batch_size": 2,
        "num_workers": 0,
    },
}

#: replaced where the config states them, by the sampler's class name (``sampler`` and ``eval_sampler``)
SAMPLERS: dict[str, dict[str, Any]] = {
    "ClassificationWindow": {"num_events": 1500, "resolution": [32, 32]},
    "ECDPViews": {"num_events": 1500, "resolution": [32, 32], "noise_count": [50, 500], "noise_min_events": 500},
    "DenseWindow": {"duration_us": 50000, "resolution": [32, 48], "crop_size": [32, 48]},
    "NarrowBroadViews": {"narrow_us": 50000, "broad_us": 150000, "narrow_resolution": [32, 32]},
    "CrossModalPairs": {"duration_us": 50000, "num_events": 1500, "resolution": [32, 64], "crop_size": [32, 32]},
}
#: NarrowBroadViews' broad views: resolution replaced in every ``BroadViewSpec``
BROAD_RESOLUTION = [16, 16]


#: ECDPViews(rgb="embedding") reads precomputed image embeddings, which the synthetic stores lack: such configs get
#: a copy of a few synthetic clips with a seeded random embedding of ECDP's shrunk ``image_embed_dim`` each
EMBEDDING_STORE_CLIPS = {"train": 8, "val": 4}


class ShrinkError(ValueError):
    """A paper config has a model, backbone, data module or sampler without a tiny override."""


def _name(spec: Any) -> str:
    return str(spec["class_path"]).rsplit(".", 1)[-1] if isinstance(spec, dict) and "class_path" in spec else ""


def _replace_present(target: dict[str, Any], table: dict[str, Any]) -> None:
    """Replace ``target``'s values by ``table``'s where ``target`` states the key; nested dicts recurse."""
    for key, value in table.items():
        if key not in target:
            continue
        if isinstance(value, dict):  # a nested group: only where the config states it as a mapping
            if isinstance(target[key], dict):
                _replace_present(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _table(table: dict[str, dict[str, Any]], spec: Any, what: str, config: str) -> dict[str, Any]:
    name = _name(spec)
    if name not in table:
        label = name or repr(spec)
        raise ShrinkError(f"{config}: no tiny override for {what} {label}; add one to tests/paper_configs.py")
    return table[name]


def _shrink_backbone(spec: dict[str, Any], config: str) -> None:
    tiny = _table(BACKBONES, spec, "backbone", config)
    args = spec.setdefault("init_args", {})
    args.update(copy.deepcopy(tiny))
    if "window_size" in args:
        args["window_size"] = SWIN_WINDOW


def _shrink_sampler(spec: dict[str, Any], config: str) -> None:
    args = spec.setdefault("init_args", {})
    _replace_present(args, _table(SAMPLERS, spec, "sampler", config))
    for broad in args.get("broad") or []:
        broad.setdefault("init_args", {})["resolution"] = list(BROAD_RESOLUTION)


def write_embedding_store(path: Path, dim: int) -> Path:
    """A few clips of the synthetic ``tiny`` store (:data:`EMBEDDING_STORE_CLIPS` per split) with a seeded random
    ``(dim,)`` embedding each, for ECDP's ``rgb: embedding`` views."""
    import numpy as np

    from evssl.data.synthetic import synthetic_store
    from evssl.events.io.store import EventStore, StoreWriter

    rng = np.random.default_rng(0)
    with EventStore(synthetic_store("tiny")) as src, StoreWriter(path, compression="none") as out:
        out.set_classes(list(src.classes))
        wanted = dict(EMBEDDING_STORE_CLIPS)
        for i in range(len(src)):
            info = src.info(i)
            if wanted.get(info.split, 0) > 0:
                wanted[info.split] -= 1
                embedding = rng.standard_normal(dim).astype(np.float32)
                out.add(src.events(i), name=info.name, label=info.label, split=info.split, embedding=embedding)
    return path


def shrink(config: Path, workdir: Path) -> dict[str, Any]:
    """The parsed YAML of ``config`` with the tiny overrides applied (raises :class:`ShrinkError`); data the
    synthetic stores lack (image embeddings) is written under ``workdir``."""
    name = str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config)
    cfg = yaml.safe_load(config.read_text())
    trainer = cfg.setdefault("trainer", {})
    trainer.update(TRAINER)
    if trainer.get("callbacks"):
        trainer["callbacks"] = [c for c in trainer["callbacks"] if _name(c) not in NEEDS_LOGGER]
    model = cfg["model"].setdefault("init_args", {})
    _replace_present(model, _table(MODELS, cfg["model"], "model", name))
    for group, values in MODEL_GROUPS.get(_name(cfg["model"]), {}).items():
        model[group] = {**(model.get(group) or {}), **copy.deepcopy(values)}
    for key in BACKBONE_KEYS:
        specs = model.get(key)
        for spec in specs if isinstance(specs, list) else [specs] if specs else []:
            _shrink_backbone(spec, name)
    data = cfg["data"].setdefault("init_args", {})
    data.update(copy.deepcopy(_table(DATA_MODULES, cfg["data"], "data module", name)))
    for key in ("sampler", "eval_sampler"):
        if data.get(key):
            _shrink_sampler(data[key], name)
    if _name(data.get("sampler")) == "ECDPViews" and data["sampler"]["init_args"].get("rgb") == "embedding":
        data["source"] = str(write_embedding_store(workdir / "embeddings.h5", model["image_embed_dim"]))
    return cfg
