"""The methods a benchmark grid can name: a small registry of :class:`MethodEntry` rows.

Each entry says where the method lives (module + class), which fit config it starts from (the benchmark overrides
its backbone, input representation, data source, seed and step budget), how its data module takes the grid's
source (``data``), what it needs from the grid and which evaluations its export gets (``tasks``), so a method that
cannot run on a source or a backbone family appears in the table with the reason instead of silently missing. An
entry whose module is not importable on this branch reports "not on this branch".

Add a method: ``register(MethodEntry("name", "evssl.methods.x", "X", "experiments/smoke/x.yaml", ...))``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "MethodEntry", "TeacherStage", "register", "store_capabilities", "unavailable_reason"]


@dataclass(frozen=True)
class TeacherStage:
    """A network the method needs trained first (EvDistill's frame teacher): the benchmark trains it per seed on
    the grid's source for ``methods[].teacher_steps`` (default: the pre-training budget), caches it as the
    ``teacher`` stage, tests it on the test split and gives its saved state to the method at ``checkpoint_key``.
    A grid that sets ``checkpoint_key`` itself (an existing teacher) skips the stage.

    Args:
        config: the teacher's fit config (``evssl fit --config`` form); the grid's source and seed are forced in,
            as for every run.
        checkpoint_key: the method's config key that takes the teacher's saved state.
        links: ``(method key, teacher key)`` pairs: the teacher's config gets the method config's value, or loses
            the key (class default on both sides) where the method config has none, so teacher and method build
            the same network (the method loads the teacher strictly) from the same frames.
        fixed: dotted keys set on the teacher's config after the links (e.g. its 3-channel representation).
        metric: the teacher's logged test metric shown in the log (``test/<metric>``).
    """

    config: str
    checkpoint_key: str = "model.init_args.teacher_checkpoint"
    links: tuple[tuple[str, str], ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()
    metric: str = "top1"


@dataclass(frozen=True)
class MethodEntry:
    """One pre-training method as the benchmark runs it.

    Args:
        name: the grid's ``methods[].name``.
        module, cls: where the LightningModule lives (``module`` missing = "not on this branch").
        config: the fit config the benchmark starts from (``evssl fit --config`` form).
        label: name in tables and charts.
        backbones: backbone class names the method accepts (``None`` = any with ``num_features``).
        backbone_reason: why, when ``backbones`` excludes the grid's family.
        requires: data capabilities the method needs from the store (``"frames"``, ``"poses"``, ``"labels"``).
        data: how the fit config's data module takes the grid's source: ``"events"``
            (:class:`~evssl.data.datamodules.EventDataModule`: ``source``, ``synthetic_size``, ``representation``) or
            ``"sequences"`` (:class:`~evssl.data.sequences.VODataModule`: ``train_source`` / ``test_source``,
            ``input: events`` with the grid's representation).
        tasks: evaluations of the trained model: ``"probe"`` (linear probe + kNN of the exported backbone at every
            checkpoint) and ``"vo"`` (the method's online VO loop on the test sequences after the last step,
            with and without online adaptation: :func:`evssl.benchmark.evaluate.online_vo`).
        backbone_keys: dotted config keys set to the grid's backbone config.
        teacher: a :class:`TeacherStage` trained before the method (``None`` = none).
    """

    name: str
    module: str
    cls: str
    config: str
    label: str = ""
    backbones: tuple[str, ...] | None = None
    backbone_reason: str = ""
    requires: tuple[str, ...] = ()
    data: str = "events"
    tasks: tuple[str, ...] = ("probe",)
    backbone_keys: tuple[str, ...] = ("model.init_args.backbone",)
    notes: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherStage | None = None

    @property
    def title(self) -> str:
        return self.label or self.name

    def available(self) -> bool:
        """Whether the method's module exists on this branch."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


METHODS: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> MethodEntry:
    """Add (or replace) a registry entry."""
    METHODS[entry.name] = entry
    return entry


# EvDistill's frame teacher: the teacher network, task and head of the EvDistill config, and the frames it distils
# from and is tested on (same window, resolution and crop); it reads frames, so its linked in_chans comes from a
# 3-channel input
_EVDISTILL_LINKS = [("teacher_backbone", "backbone"), ("task", "task"), ("head", "head"),
                    ("num_semantic_classes", "num_semantic_classes"), ("ignore_index", "ignore_index")]  # fmt: skip
_FRAME_INPUT = {"class_path": "evssl.events.representations.VoxelGrid", "init_args": {"bins": 3}}
EVDISTILL_TEACHER = TeacherStage(
    "experiments/smoke/evdistill_teacher_cls.yaml",
    links=tuple((f"model.init_args.{a}", f"model.init_args.{b}") for a, b in _EVDISTILL_LINKS)
    + tuple((f"data.init_args.sampler.init_args.{k}",) * 2 for k in ("duration_us", "resolution", "crop_size"))
    + tuple((f"data.init_args.eval_sampler.init_args.{k}",) * 2 for k in ("duration_us", "resolution")),
    fixed=(("data.init_args.representation", _FRAME_INPUT),),
)

register(MethodEntry("brave", "evssl.methods.brave", "BraVe", "experiments/smoke/brave.yaml", label="BraVe"))
register(
    MethodEntry(
        "ecdp",
        "evssl.methods.ecdp",
        "ECDP",
        "experiments/smoke/ecdp.yaml",
        label="ECDP",
        backbones=("VisionTransformer",),
        backbone_reason="needs a ViT with two special tokens (masked token branches)",
        requires=("frames",),
    )
)
register(
    MethodEntry(
        "ecddp",
        "evssl.methods.ecddp",
        "ECDDP",
        "experiments/smoke/ecddp.yaml",
        label="ECDDP",
        backbones=("SwinTransformer",),
        backbone_reason="needs a four-stage Swin backbone with a mask token",
    )
)
register(
    MethodEntry(
        "evdistill",
        "evssl.methods.evdistill",
        "EvDistill",
        "experiments/smoke/evdistill_cls.yaml",
        label="EvDistill",
        requires=("frames", "labels"),
        notes={"uses_labels": "distils a frame teacher trained with labels"},
        teacher=EVDISTILL_TEACHER,
    )
)
register(
    MethodEntry(
        "meta_vo",
        "evssl.methods.meta_vo",
        "MetaVO",
        "experiments/smoke/meta_vo.yaml",
        label="meta-VO",
        backbones=("ResNet",),
        backbone_reason="the DepthNet encoder is an evssl ResNet",
        requires=("frames", "poses"),
        data="sequences",
        tasks=("probe", "vo"),
        notes={"trains_on": "the store's sequences (split 'sequence'), events in, frames for the photometric loss"},
    )
)


def store_capabilities(path: str | Path) -> set[str]:
    """What a store offers: ``"frames"``, ``"poses"``, ``"labels"`` (from its recording table, read once)."""
    from evssl.events.io.store import EventStore

    caps: set[str] = set()
    store = EventStore(path)
    try:
        n = len(store)
        infos = [store.info(i) for i in range(n)]
        if any(getattr(i, "has_frames", False) for i in infos):
            caps.add("frames")
        if any(getattr(i, "num_poses", 0) or getattr(i, "has_poses", False) for i in infos):
            caps.add("poses")
        if len(store.classes) > 1:
            caps.add("labels")
    finally:
        store.close()
    return caps


def unavailable_reason(entry: MethodEntry, backbone_family: str, capabilities: set[str]) -> str | None:
    """Why ``entry`` cannot run on this grid (``None`` = it can)."""
    if not entry.available():
        return f"not on this branch ({entry.module} missing)"
    if entry.backbones is not None and backbone_family not in entry.backbones:
        return f"{entry.backbone_reason or 'backbone not supported'} (grid backbone: {backbone_family})"
    missing = [r for r in entry.requires if r not in capabilities]
    if missing:
        return f"the data source has no {', '.join(missing)}"
    return None
