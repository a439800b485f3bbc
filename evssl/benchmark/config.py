"""The benchmark grid's YAML (``experiments/benchmark/<name>.yaml``), read into typed dataclasses.

::

    name: smoke                       # output under out_dir (default runs/benchmark/<name>)
    seeds: [0]
    data:                             # ONE data source for the grid
      source: synthetic               # "synthetic" or an evssl store path; ${VAR} / ${VAR:-default} expanded
      synthetic_size: tiny
      seed: 0                         # the store's / window generators' seed (fixed across model seeds)
    representation: {class_path: ..., init_args: ...}   # ONE input for every backbone (in_chans from it)
    backbone: {class_path: ..., init_args: ...}         # ONE backbone family (config of every method's backbone)
    pretrain:
      steps: 60                       # the same optimizer-step budget for every method
      checkpoints: [15, 30, 45, 60]   # learning-curve points (step 0 = random init; the last must be `steps`)
    trainer: {accelerator: cpu, devices: 1}             # Trainer arguments of every run
    eval:                             # the same evaluation for every exported backbone
      sampler: {class_path: evssl.data.ClassificationWindow, init_args: {duration_us: 50000}}
      windows: 2                      # windows per recording (train: examples; test: averaged)
      bn_reestimate_batches: 20
      l2: 1.0e-4
      knn_k: 20
      knn_temperature: 0.07
      batch_size: 64
      vo_control: true                # rows with online VO (meta-VO): also the trained weights without adaptation
      dense:                          # optional: a dense head on every final export (frozen and fine-tuned)
        config: experiments/smoke/segmentation.yaml   # a DenseTask fit config (SemanticSegmentation: test/miou)
        steps: 100
        modes: [frozen, finetune]
        metric: miou
        overrides: {}
    supervised: {config: experiments/smoke/supervised.yaml, steps: null, overrides: {}}
    diagnostics: true                 # attach evssl.callbacks.PretrainDiagnostics to every pre-training run
                                      # (or a mapping of its arguments); logged to each run's metrics.csv
    wandb: false                      # true: every run also logs to W&B (offline unless WANDB_MODE=online)
    methods:
      - name: brave                   # a registry entry (evssl.benchmark.registry.METHODS)
        config: experiments/smoke/brave.yaml   # default: the entry's config
        overrides: {model.init_args.proj_dim: 64}   # dotted keys into that fit config
      - name: meta_vo
        skip: "~1 h per seed on CPU"  # a row with this reason instead of a run (a budget, stated; never silent)

Errors name the file and the field.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DenseSpec", "EvalSpec", "GridConfig", "MethodSpec", "RunSpec", "expand_env", "load_grid", "set_dotted"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class GridConfigError(ValueError):
    """A benchmark YAML with a missing or invalid field (the message names the file and the field)."""


def expand_env(value: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` from the environment (an unset ``${VAR}`` without default stays empty)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """``cfg["a"]["b"]["c"] = value`` for ``key = "a.b.c"`` (missing dicts are created)."""
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


@dataclass
class MethodSpec:
    """One method row of the grid: a registry name, its fit config and dotted-key overrides."""

    name: str
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    skip: str | None = None  # not run in this grid, for this stated reason (shown in the table)
    teacher_steps: int | None = None  # a registry teacher stage's budget (default: pretrain.steps)
    teacher_overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys of the teacher's fit config
    id: str | None = None  # the row's key (run folder, CSV name) where one method has several rows (default: name)

    @property
    def key(self) -> str:
        return self.id or self.name


@dataclass
class RunSpec:
    """The supervised-from-scratch baseline: a Classifier fit config trained on labels for ``steps``."""

    config: str = "experiments/smoke/supervised.yaml"
    steps: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DenseSpec:
    """The optional dense evaluation (``eval.dense``): the fit config of a
    :class:`~evssl.tasks.dense.DenseTask` (a store with dense ground truth: the synthetic sets have semantic masks,
    flow and depth) trained for ``steps`` on every row's final export (``pretrained``) with the grid's backbone,
    input and data source, once per mode (``frozen``: ``freeze_backbone``, a dense probe; ``finetune``: the whole
    network), then tested: the task's ``test/<metric>``."""

    config: str = "experiments/smoke/segmentation.yaml"
    steps: int = 100
    modes: list[str] = field(default_factory=lambda: ["frozen", "finetune"])
    metric: str = "miou"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSpec:
    """The probe protocol shared by every backbone (see :mod:`evssl.benchmark.evaluate`); ``vo_control``: rows with
    an online VO stage also evaluate their trained weights without online adaptation (the control)."""

    sampler: dict[str, Any] = field(
        default_factory=lambda: {"class_path": "evssl.data.ClassificationWindow", "init_args": {"duration_us": 50000}}
    )
    windows: int = 2
    bn_reestimate_batches: int = 20
    l2: float = 1e-4
    knn_k: int = 20
    knn_temperature: float = 0.07
    batch_size: int = 64
    vo_control: bool = True
    dense: DenseSpec | None = None
    split: str = "test"  # the probe's evaluation split; "val" (with data.val_split / val_fraction): model selection


@dataclass
class GridConfig:
    """A methods x seeds grid on one data source, one backbone family and one step budget."""

    name: str
    path: Path
    seeds: list[int]
    data: dict[str, Any]
    representation: dict[str, Any]
    backbone: dict[str, Any]
    steps: int
    checkpoints: list[int]
    methods: list[MethodSpec]
    supervised: RunSpec | None
    eval: EvalSpec
    trainer: dict[str, Any]
    out_dir: Path
    diagnostics: dict[str, Any] | None = None
    wandb: bool = False

    @property
    def backbone_family(self) -> str:
        """Class name of the grid's backbone (``ResNet``, ``VisionTransformer`` ...)."""
        return str(self.backbone["class_path"]).rsplit(".", 1)[-1]

    @property
    def source(self) -> str:
        return str(self.data.get("source", "synthetic"))


def _need(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise GridConfigError(f"{where}: missing field {key!r}")
    value = raw[key]
    if not isinstance(value, kind):
        raise GridConfigError(f"{where}: field {key!r} must be {kind}, got {value!r}")
    return value


def _class_cfg(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict) or "class_path" not in value:
        raise GridConfigError(f"{where}: field {key!r} must be a mapping with class_path (+ init_args), got {value!r}")
    return {"class_path": value["class_path"], "init_args": dict(value.get("init_args") or {})}


def load_grid(path: str | Path, out_dir: str | Path | None = None) -> GridConfig:
    """Read and check a benchmark YAML (environment variables in strings are expanded)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise GridConfigError(f"benchmark config {path} not found")
    text = expand_env(path.read_text())
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise GridConfigError(f"{path}: not valid YAML ({err})") from None
    where = str(path)
    name = str(raw.get("name") or path.stem)
    seeds = _need(raw, "seeds", list, where)
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridConfigError(f"{where}: field 'seeds' must be a non-empty list of ints, got {seeds!r}")
    data = dict(raw.get("data") or {"source": "synthetic", "synthetic_size": "tiny"})
    pre = _need(raw, "pretrain", dict, where)
    steps = _need(pre, "steps", int, f"{where}: pretrain")
    if steps < 1:
        raise GridConfigError(f"{where}: field 'pretrain.steps' must be >= 1, got {steps}")
    checkpoints = sorted({int(c) for c in pre.get("checkpoints") or [steps]} | {steps})
    if checkpoints[0] < 1 or checkpoints[-1] > steps:
        raise GridConfigError(f"{where}: field 'pretrain.checkpoints' must lie in [1, {steps}], got {checkpoints}")
    methods = []
    for i, m in enumerate(_need(raw, "methods", list, where)):
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict) or "name" not in m:
            raise GridConfigError(f"{where}: methods[{i}] must be a name or a mapping with 'name', got {m!r}")
        unknown = set(m) - {"name", "config", "overrides", "label", "skip", "teacher_steps", "teacher_overrides", "id"}
        if unknown:
            raise GridConfigError(f"{where}: methods[{i}] has unknown fields {sorted(unknown)}")
        skip = m.get("skip")
        if skip is not None and (not isinstance(skip, str) or not skip.strip()):
            raise GridConfigError(f"{where}: methods[{i}].skip must be a non-empty reason string, got {skip!r}")
        tsteps = m.get("teacher_steps")
        if tsteps is not None and (isinstance(tsteps, bool) or not isinstance(tsteps, int) or tsteps < 1):
            raise GridConfigError(f"{where}: methods[{i}].teacher_steps must be an integer >= 1, got {tsteps!r}")
        methods.append(
            MethodSpec(str(m["name"]), m.get("config"), dict(m.get("overrides") or {}), m.get("label"), skip,
                       tsteps, dict(m.get("teacher_overrides") or {}), m.get("id"))
        )  # fmt: skip
        if methods[-1].key in {x.key for x in methods[:-1]} | {"random", "supervised"}:
            raise GridConfigError(f"{where}: methods[{i}]: row {methods[-1].key!r} appears twice; give each row of "
                                  "one method its own 'id'")  # fmt: skip
    sup_raw = raw.get("supervised", {})
    supervised = None if sup_raw is False or sup_raw is None else RunSpec(**dict(sup_raw))
    ev_raw = dict(raw.get("eval") or {})
    unknown = set(ev_raw) - set(EvalSpec.__dataclass_fields__)
    if unknown:
        raise GridConfigError(f"{where}: eval has unknown fields {sorted(unknown)}")
    ev = EvalSpec(**ev_raw)
    ev.dense = _dense(ev_raw.get("dense"), where)
    ev.sampler = _class_cfg(ev.sampler, where, "eval.sampler")
    if ev.split not in ("test", "val"):
        raise GridConfigError(f"{where}: field 'eval.split' must be 'test' or 'val', got {ev.split!r}")
    if ev.split == "val" and (data.get("val_split", "val") is None or float(data.get("val_fraction", 0.1)) <= 0):
        raise GridConfigError(f"{where}: eval.split 'val' needs data.val_split (a name) and data.val_fraction > 0, "
                              f"got {data.get('val_split')!r} / {data.get('val_fraction')!r}")  # fmt: skip
    if ev.windows < 1:
        raise GridConfigError(f"{where}: field 'eval.windows' must be >= 1, got {ev.windows}")
    out = Path(out_dir) if out_dir is not None else Path(raw.get("out_dir") or f"runs/benchmark/{name}")
    return GridConfig(
        name=name,
        path=path,
        seeds=[int(s) for s in seeds],
        data=data,
        representation=_class_cfg(raw.get("representation"), where, "representation"),
        backbone=_class_cfg(raw.get("backbone"), where, "backbone"),
        steps=steps,
        checkpoints=checkpoints,
        methods=methods,
        supervised=supervised,
        eval=ev,
        trainer=dict(raw.get("trainer") or {"accelerator": "cpu", "devices": 1}),
        out_dir=out,
        diagnostics=_diagnostics(raw.get("diagnostics"), where),
        wandb=bool(raw.get("wandb", False)),
    )


def _dense(value: Any, where: str) -> DenseSpec | None:
    if value in (None, False):
        return None
    if not isinstance(value, dict):
        raise GridConfigError(f"{where}: field 'eval.dense' must be a mapping of DenseSpec fields, got {value!r}")
    unknown = set(value) - set(DenseSpec.__dataclass_fields__)
    if unknown:
        raise GridConfigError(f"{where}: eval.dense has unknown fields {sorted(unknown)}")
    spec = DenseSpec(**value)
    bad = [m for m in spec.modes if m not in ("frozen", "finetune")]
    if bad or not spec.modes:
        raise GridConfigError(f"{where}: field 'eval.dense.modes' must be a non-empty subset of [frozen, finetune]")
    if spec.steps < 1:
        raise GridConfigError(f"{where}: field 'eval.dense.steps' must be >= 1, got {spec.steps}")
    return spec


def _diagnostics(value: Any, where: str) -> dict[str, Any] | None:
    if value in (None, False):
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise GridConfigError(f"{where}: field 'diagnostics' must be true/false or PretrainDiagnostics arguments")
    return dict(value)
