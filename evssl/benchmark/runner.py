"""Run a benchmark grid: pre-train every method x seed for the same step budget, export, probe, tabulate.

For every seed of :class:`~evssl.benchmark.config.GridConfig`:

* **random init** — the grid's backbone built under ``seed_everything(seed)``, exported untrained;
* **each method** — its fit config (registry entry or ``methods[].config``) with the grid's backbone, input
  representation, data source and seed forced in, trained by a Lightning ``Trainer`` for exactly
  ``pretrain.steps`` optimizer steps (the schedule spans that budget); the backbone is exported with
  :func:`evssl.export.export_backbone` at every ``pretrain.checkpoints`` step (learning curve);
* **supervised from scratch** — the Classifier config (``supervised.config``) with the same backbone and input,
  trained on the labels for ``supervised.steps`` (default: the same budget), exported;

then every export is probed the same way (:mod:`evssl.benchmark.evaluate`). Methods that cannot run on the grid
are rows with the reason (:func:`evssl.benchmark.registry.unavailable_reason`).

Caching: every (method, seed, stage) writes ``<out>/runs/<method>/seed<k>/<stage>.json`` atomically, keyed by a
hash of everything that determines it (the resolved fit config, budget, probe protocol); a rerun skips every stage
whose key matches, so an interrupted benchmark resumes at the first unfinished stage (an interrupted pre-training
restarts from step 0) and a finished one re-prints its tables instantly. Per-run CSV logs
(``metrics.csv``) and the resolved fit config (``config.yaml``) sit beside the stage files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from evssl.benchmark.config import GridConfig, set_dotted
from evssl.benchmark.registry import METHODS, MethodEntry, store_capabilities, unavailable_reason

__all__ = ["RANDOM", "SUPERVISED", "BenchmarkRunner", "ExportAt"]

RANDOM = "random"
SUPERVISED = "supervised"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    """Write to a temporary name, then rename (an interrupted write never leaves a half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class ExportAt(Callback):
    """Export the backbone (:func:`evssl.export.export_backbone`) after each listed optimizer step (and at step 0
    before training with ``with_zero``) as ``<out>/backbone_step<N>.pt`` + ``.json``."""

    def __init__(self, steps: list[int], out: Path, with_zero: bool = False) -> None:
        self.steps, self.out, self.with_zero = set(steps), Path(out), with_zero
        self.written: dict[int, str] = {}

    def _export(self, pl_module: Any, step: int) -> None:
        from evssl.export import export_backbone

        path = self.out / f"backbone_step{step}.pt"
        export_backbone(None, path, module=pl_module)
        self.written[step] = str(path)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.with_zero:
            self._export(pl_module, 0)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        step = int(trainer.global_step)
        if step in self.steps and step not in self.written:
            self._export(pl_module, step)


class _BackboneHolder:
    """Duck-typed module for :func:`evssl.export.export_backbone` (the random-init baseline)."""

    def __init__(self, backbone: torch.nn.Module, config: dict[str, Any]) -> None:
        self.backbone, self.config = backbone, config

    def backbone_for_export(self) -> torch.nn.Module:
        return self.backbone

    def backbone_config(self) -> dict[str, Any]:
        return self.config


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's per-run info lines (evssl's data plan among them) and warnings off for the grid's own runs, which
    would otherwise break the progress bar dozens of times; the logger levels and warning filters are restored
    afterwards, so the calling process (a test session, a notebook) keeps its own."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


class BenchmarkRunner:
    """Runs (or re-reads from its cache) one grid; :meth:`run` returns the per-run records."""

    def __init__(
        self, grid: GridConfig, progress: bool = True, log: Callable[[str], None] = print, keep_going: bool = True
    ) -> None:
        self.grid = grid
        self.keep_going = keep_going
        self.progress = progress
        self.log = log
        self.root = grid.out_dir
        self._eval_batches: tuple[list, list, int] | None = None
        self._store_path: Path | None = None

    # ------------------------------------------------------------------------------------------------ data
    def _data_module(self, sampler: Any) -> Any:
        from evssl.data.datamodules import EventDataModule

        d = self.grid.data
        return EventDataModule(
            source=self.grid.source,
            synthetic_size=str(d.get("synthetic_size", "tiny")),
            seed=int(d.get("seed", 0)),
            sampler=sampler,
            representation=self._instantiate(self.grid.representation),
            batch_size=self.grid.eval.batch_size,
            num_workers=0,
            persistent_workers=False,
            val_split=None,
            drop_last=False,
            windows_per_recording=self.grid.eval.windows,
        )

    @staticmethod
    def _instantiate(cfg: dict[str, Any], kind: Any = object) -> Any:
        from jsonargparse import ArgumentParser

        import evssl.data
        import evssl.events.representations
        import evssl.nn  # noqa: F401

        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--obj", type=kind)
        return parser.instantiate(parser.parse_object({"obj": cfg})).obj

    def store_path(self) -> Path:
        """The grid's store (the synthetic store is generated and cached on first use)."""
        if self._store_path is None:
            self._store_path = Path(self._data_module(None).meta.path)
        return self._store_path

    def eval_batches(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        """Represented probe batches of the train and test splits (computed once per grid) + number of classes."""
        if self._eval_batches is None:
            from torch.utils.data import DataLoader

            from evssl.data.collate import Collate
            from evssl.data.datasets import StoreDataset

            sampler = self._instantiate(self.grid.eval.sampler)
            dm = self._data_module(sampler)
            out = []
            for split in ("train", "test"):
                ds = StoreDataset(
                    dm.store_path,
                    dm.split_indices(split),
                    sampler,
                    train=False,
                    seed=0,
                    windows_per_recording=self.grid.eval.windows,
                )
                loader = DataLoader(
                    ds, batch_size=self.grid.eval.batch_size, shuffle=False, collate_fn=Collate(dm._transform(False))
                )
                out.append([{"input": b["input"].float(), "label": b["label"]} for b in loader])
            self._eval_batches = (out[0], out[1], int(dm.num_classes))
        return self._eval_batches

    def in_channels(self) -> int:
        return int(self._instantiate(self.grid.representation).channels)

    # ---------------------------------------------------------------------------------------------- configs
    def resolve(self, config_path: str) -> Path:
        """A fit config path as given (relative to the working directory), else relative to a folder above the grid
        file (so ``experiments/smoke/brave.yaml`` works from any directory)."""
        path = Path(config_path)
        if path.is_file():
            return path
        for parent in self.grid.path.resolve().parents:
            if (parent / path).is_file():
                return parent / path
        raise FileNotFoundError(f"{self.grid.path}: fit config {config_path} not found")

    def fit_config(self, config_path: str, seed: int, overrides: dict[str, Any], backbone_keys: tuple[str, ...],
                   is_method: bool) -> dict[str, Any]:  # fmt: skip
        """The method's fit config with the grid's backbone, input, data source and seed forced in."""
        import yaml

        path = self.resolve(config_path)
        cfg = yaml.safe_load(path.read_text()) or {}
        cfg["seed_everything"] = int(seed)
        cfg["trainer"] = {
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
        for key in backbone_keys:
            set_dotted(cfg, key, self.grid.backbone)
        d = self.grid.data
        set_dotted(cfg, "data.init_args.source", self.grid.source)
        set_dotted(cfg, "data.init_args.synthetic_size", str(d.get("synthetic_size", "tiny")))
        set_dotted(cfg, "data.init_args.seed", int(d.get("seed", 0)))
        set_dotted(cfg, "data.init_args.representation", self.grid.representation)
        set_dotted(cfg, "data.init_args.num_workers", 0)
        set_dotted(cfg, "data.init_args.persistent_workers", False)
        for k, v in d.items():  # other data keys (e.g. val_split: null for a store without one) go to every run
            if k not in ("source", "synthetic_size", "seed"):
                set_dotted(cfg, f"data.init_args.{k}", v)
        if is_method:
            set_dotted(cfg, "model.init_args.probe", {"enabled": False})  # the benchmark probes offline
        for key, value in overrides.items():
            set_dotted(cfg, key, value)
        return cfg

    # -------------------------------------------------------------------------------------------------- runs
    def _train(self, cfg: dict[str, Any], run_dir: Path, steps: int, export_steps: list[int], with_zero: bool
               ) -> dict[str, Any]:  # fmt: skip
        import yaml
        from lightning.pytorch import Trainer

        from evssl.cli_lightning import EvsslCLI

        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cli = EvsslCLI(args=["--config", str(cfg_path)], run=False)
        export = ExportAt(export_steps, run_dir, with_zero)
        trainer_kw = {"accelerator": "cpu", "devices": 1, **self.grid.trainer}
        trainer = Trainer(
            max_steps=steps,
            max_epochs=-1,
            logger=self._loggers(run_dir),
            callbacks=[export, *self._extra_callbacks(cfg)],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            log_every_n_steps=max(1, min(10, steps // 10)),
            **trainer_kw,
        )
        t0 = time.time()
        trainer.fit(cli.model, datamodule=cli.datamodule)
        missing = [s for s in export_steps if s not in export.written]
        if missing:
            raise RuntimeError(f"{run_dir}: training stopped at step {trainer.global_step} before {missing}")
        return {"wall_s": time.time() - t0, "exports": {str(k): v for k, v in export.written.items()},
                "global_step": int(trainer.global_step)}  # fmt: skip

    def _loggers(self, run_dir: Path) -> list[Any]:
        """CSV log in the run folder; with ``wandb: true`` in the grid also a W&B run (offline unless
        ``WANDB_MODE=online``) named ``<grid>/<method>/seed<k>``."""
        from lightning.pytorch.loggers import CSVLogger

        loggers: list[Any] = [CSVLogger(str(run_dir), name="", version="")]
        if self.grid.wandb:
            from lightning.pytorch.loggers import WandbLogger

            name = f"{self.grid.name}/" + "/".join(run_dir.parts[-2:])
            loggers.append(WandbLogger(save_dir=str(run_dir), project="evssl-benchmark", name=name))
            from evssl.cli_lightning import prepare_wandb_loggers

            prepare_wandb_loggers(loggers)
        return loggers

    def _extra_callbacks(self, cfg: dict[str, Any]) -> list[Any]:
        """:class:`~evssl.callbacks.diagnostics.PretrainDiagnostics` on pre-training runs with ``diagnostics``."""
        is_method = "probe" in (cfg.get("model", {}).get("init_args") or {})
        if self.grid.diagnostics is None or not is_method:
            return []
        from evssl.callbacks.diagnostics import PretrainDiagnostics

        return [PretrainDiagnostics(**self.grid.diagnostics)]

    def _random_export(self, seed: int, run_dir: Path) -> dict[str, Any]:
        from lightning.pytorch import seed_everything

        from evssl.export import export_backbone

        seed_everything(seed, workers=True)
        cfg = copy.deepcopy(self.grid.backbone)
        cfg["init_args"]["in_chans"] = self.in_channels()
        backbone = self._instantiate(cfg, torch.nn.Module)
        path = run_dir / "backbone_step0.pt"
        export_backbone(None, path, module=_BackboneHolder(backbone, cfg))  # type: ignore[arg-type]
        return {"wall_s": 0.0, "exports": {"0": str(path)}, "global_step": 0}

    def _probe(self, path: str) -> dict[str, Any]:
        from evssl.benchmark.evaluate import probe_backbone

        tr, te, classes = self.eval_batches()
        ev = self.grid.eval
        t0 = time.time()
        res = probe_backbone(
            path, tr, te, classes, ev.windows, ev.bn_reestimate_batches, ev.l2, ev.knn_k, ev.knn_temperature
        )
        return {**res.as_dict(), "wall_s": time.time() - t0}

    # ------------------------------------------------------------------------------------------------ the grid
    def plan(self) -> list[dict[str, Any]]:
        """Rows of the grid: ``{"name", "label", "kind", "config", "overrides", "steps", "reason"}``."""
        g = self.grid
        caps = store_capabilities(self.store_path())
        rows: list[dict[str, Any]] = [{"name": RANDOM, "label": "random init", "kind": RANDOM, "reason": None}]
        for m in g.methods:
            entry: MethodEntry | None = METHODS.get(m.name)
            if entry is None:
                raise ValueError(f"{g.path}: methods: unknown method {m.name!r}; known: {sorted(METHODS)}")
            reason = unavailable_reason(entry, g.backbone_family, caps)
            rows.append({"name": m.name, "label": m.label or entry.title, "kind": "method", "entry": entry,
                         "config": m.config or entry.config, "overrides": m.overrides, "steps": g.steps,
                         "reason": reason})  # fmt: skip
        if g.supervised is not None:
            rows.append({"name": SUPERVISED, "label": "supervised", "kind": SUPERVISED,
                         "config": g.supervised.config, "overrides": g.supervised.overrides,
                         "steps": g.supervised.steps or g.steps, "reason": None})  # fmt: skip
        return rows

    def run(self) -> dict[str, Any]:
        """Run every stage not in the cache; returns ``{"rows": plan, "records": [...], "wall_s"}``."""
        with _quiet_lightning():
            return self._run()

    def _run(self) -> dict[str, Any]:
        from tqdm import tqdm

        g = self.grid
        rows = self.plan()
        runnable = [r for r in rows if r["reason"] is None]
        jobs = []
        for seed in g.seeds:
            for r in runnable:
                points = [0] if r["kind"] == RANDOM else (g.checkpoints if r["kind"] == "method" else [r["steps"]])
                if r["kind"] == "method" and r["steps"] != g.steps:  # pragma: no cover - one budget per grid
                    raise ValueError(f"{g.path}: every method runs pretrain.steps={g.steps}")
                jobs.append((r, seed, points))
        total = sum(1 + len(p) for _, _, p in jobs)
        t0 = time.time()
        records: list[dict[str, Any]] = []
        eval_key = asdict(g.eval) | {"data": g.data, "representation": g.representation}
        with tqdm(total=total, desc=f"benchmark {g.name}", unit="stage", disable=not self.progress,
                  dynamic_ncols=True) as bar:  # fmt: skip
            for r, seed, points in jobs:
                if r["reason"] is not None:  # failed on an earlier seed
                    bar.update(1 + len(points))
                    continue
                run_dir = self.root / "runs" / r["name"] / f"seed{seed}"
                if r["kind"] == RANDOM:
                    cfg = {"backbone": g.backbone, "in_chans": self.in_channels(), "seed": seed}
                else:
                    is_method = r["kind"] == "method"
                    keys = r["entry"].backbone_keys if is_method else ("model.init_args.backbone",)
                    cfg = self.fit_config(r["config"], seed, r["overrides"], keys, is_method)
                key = _hash({"cfg": cfg, "steps": r.get("steps"), "points": points, "diag": g.diagnostics})
                bar.set_postfix_str(f"{r['name']} seed {seed}: pre-train")
                pre_path = run_dir / "pretrain.json"
                pre = _read_json(pre_path)
                if pre is None or pre.get("key") != key or not all(Path(p).is_file() for p in pre["exports"].values()):
                    try:
                        if r["kind"] == RANDOM:
                            pre = self._random_export(seed, run_dir)
                        else:
                            pre = self._train(cfg, run_dir, int(r["steps"]), points, with_zero=False)
                    except Exception as err:  # one failing method must not sink the grid: its row says why
                        if not self.keep_going:
                            raise
                        root: BaseException = err
                        while root.__cause__ is not None or root.__context__ is not None:
                            root = root.__cause__ or root.__context__  # type: ignore[assignment]
                        msg = (str(root).splitlines() or [""])[0][:200]
                        r["reason"] = f"failed on seed {seed}: {type(root).__name__}: {msg}"
                        self.log(f"evssl benchmark: {r['name']} seed {seed} failed ({r['reason']}); see {run_dir}")
                        bar.update(1 + len(points))
                        continue
                    pre["key"] = key
                    _write_json(pre_path, pre)
                bar.update(1)
                for step in points:
                    bar.set_postfix_str(f"{r['name']} seed {seed}: probe @ step {step}")
                    stage_path = run_dir / f"probe_step{step}.json"
                    pkey = _hash({"pre": key, "eval": eval_key, "step": step})
                    res = _read_json(stage_path)
                    if res is None or res.get("key") != pkey:
                        res = self._probe(pre["exports"][str(step)])
                        res["key"] = pkey
                        _write_json(stage_path, res)
                    records.append({"name": r["name"], "label": r["label"], "kind": r["kind"], "seed": seed,
                                    "step": step, "pretrain_s": pre["wall_s"], **res})  # fmt: skip
                    bar.update(1)
        return {"rows": rows, "records": records, "wall_s": time.time() - t0}
