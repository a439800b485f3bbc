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
are rows with the reason (:func:`evssl.benchmark.registry.unavailable_reason`). Further stages where the method
or the grid asks for them:

* **teacher** — a method whose registry entry has a :class:`~evssl.benchmark.registry.TeacherStage` (EvDistill's
  frame teacher) first trains it per seed (``teacher_steps``, default the same budget; network and frame sampling
  copied from the method's config), tests it, and pre-trains with its saved state as the method's checkpoint;
* **online VO** — a method whose registry entry has the ``"vo"`` task (meta-VO) saves its whole trained module and
  runs its online loop on the test sequences, with and without adaptation (:func:`evssl.benchmark.evaluate.online_vo`);
* **dense head** — with ``eval.dense``, every row's final export is loaded into the dense task's fit config
  (``pretrained``), trained for ``eval.dense.steps`` with the backbone frozen and/or fine-tuned, and tested.

Caching: every (method, seed, stage) writes ``<out>/runs/<method>/seed<k>/<stage>.json`` (``pretrain``,
``probe_step<N>``, ``vo_step<N>``, ``dense_<mode>_step<N>``, ``teacher``) atomically, keyed by a
hash of everything that determines it (the resolved fit config, budget, probe protocol); a rerun skips every stage
whose key matches, so an interrupted benchmark resumes at the first unfinished stage (an interrupted pre-training
restarts from step 0) and a finished one re-prints its tables instantly. What a pre-training writes (the CSV log
``metrics.csv``, the resolved fit config ``config.yaml``, the exported backbones, the dense runs) goes to a folder
named by its key, ``seed<k>/<key>/``, so a run under a changed config never overwrites the files of another; the
stage files in ``seed<k>/`` point at the current key's files.
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


def _accepts(class_path: str, arg: str) -> bool:
    """Whether the class at ``class_path`` takes an ``arg`` argument (False when it cannot be imported: the
    config's parse then reports the bad class path)."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return arg in inspect.signature(cls).parameters


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
            # the probe trains on the train split and tests on eval.split; with "val", the grid's val_split /
            # val_fraction hold out part of the train split, as in every training run of the grid
            val_split=d.get("val_split", "val") if self.grid.eval.split == "val" else None,
            val_fraction=float(d.get("val_fraction", 0.1)),
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
            for split in ("train", dm.val_split if self.grid.eval.split == "val" else "test"):
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
                   is_method: bool, data: str = "events") -> dict[str, Any]:  # fmt: skip
        """The method's fit config with the grid's backbone, input, data source and seed forced in.

        ``data="events"``: an :class:`~evssl.data.datamodules.EventDataModule` reads the grid's source.
        ``data="sequences"``: a :class:`~evssl.data.sequences.VODataModule` trains on the source's sequences with
        the grid's representation as input (``input: events``); its test sequences are the synthetic store of the
        next seed (other scenes) for a synthetic source, the same store otherwise (override
        ``data.init_args.test_source`` / ``test_split`` for held-out sequences).
        """
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
        size = str(d.get("synthetic_size", "tiny"))
        if data == "events":
            set_dotted(cfg, "data.init_args.source", self.grid.source)
            set_dotted(cfg, "data.init_args.synthetic_size", size)
            set_dotted(cfg, "data.init_args.persistent_workers", False)
        elif data == "sequences":
            # "synthetic:<size>:default" reads the store of the data module's seed (training: the grid's store)
            # and of seed + 1 (test: other scenes)
            source = f"synthetic:{size}:default" if self.grid.source == "synthetic" else self.grid.source
            set_dotted(cfg, "data.init_args.train_source", source)
            set_dotted(cfg, "data.init_args.test_source", source)
            set_dotted(cfg, "data.init_args.input", "events")
        else:
            raise ValueError(f"{self.grid.path}: registry data kind {data!r} is not 'events' or 'sequences'")
        set_dotted(cfg, "data.init_args.seed", int(d.get("seed", 0)))
        set_dotted(cfg, "data.init_args.representation", self.grid.representation)
        set_dotted(cfg, "data.init_args.num_workers", 0)
        for k, v in d.items():  # other data keys (e.g. val_split: null for a store without one) go to every run
            if k not in ("source", "synthetic_size", "seed"):
                set_dotted(cfg, f"data.init_args.{k}", v)
        if is_method and _accepts(str(cfg.get("model", {}).get("class_path", "")), "probe"):
            set_dotted(cfg, "model.init_args.probe", {"enabled": False})  # the benchmark probes offline
        for key, value in overrides.items():
            set_dotted(cfg, key, value)
        return cfg

    def row_config(self, row: dict[str, Any], seed: int) -> dict[str, Any]:
        """The resolved fit config of a method or supervised row of :meth:`plan` on ``seed`` (what :meth:`run`
        trains and what its cache key hashes)."""
        is_method = row["kind"] == "method"
        keys = row["entry"].backbone_keys if is_method else ("model.init_args.backbone",)
        data = row["entry"].data if is_method else "events"
        return self.fit_config(row["config"], seed, row["overrides"], keys, is_method, data)

    @staticmethod
    def build(cfg: dict[str, Any], run_dir: Path) -> Any:
        """Parse and instantiate a resolved fit config (model + data module) the way its training run does, writing
        it to ``run_dir/config.yaml``; nothing is trained. Returns the :class:`~evssl.cli_lightning.EvsslCLI`."""
        import yaml

        from evssl.cli_lightning import EvsslCLI

        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return EvsslCLI(args=["--config", str(cfg_path)], run=False)

    def random_backbone_config(self) -> dict[str, Any]:
        """The random-init row's backbone config: the grid's backbone with the input's channel count."""
        cfg = copy.deepcopy(self.grid.backbone)
        cfg["init_args"]["in_chans"] = self.in_channels()
        return cfg

    # -------------------------------------------------------------------------------------------------- runs
    def _train(self, cfg: dict[str, Any], run_dir: Path, steps: int, export_steps: list[int], with_zero: bool,
               pretraining: bool = True, save_model: bool = False, test: bool = False) -> dict[str, Any]:  # fmt: skip
        """Train ``cfg`` for ``steps`` optimizer steps, exporting the backbone at ``export_steps``; ``save_model``
        also saves the whole module's state at the last step (``model_step<N>.pt``, for the VO stage); ``test``
        then runs the data module's test split (``"test"``: the logged test metrics)."""
        from lightning.pytorch import Trainer

        cli = self.build(cfg, run_dir)
        export = ExportAt(export_steps, run_dir, with_zero)
        trainer_kw = {"accelerator": "cpu", "devices": 1, **self.grid.trainer}
        trainer = Trainer(
            max_steps=steps,
            max_epochs=-1,
            logger=self._loggers(run_dir),
            callbacks=[export, *(self._diagnostics() if pretraining else [])],
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
        out = {"wall_s": time.time() - t0, "exports": {str(k): v for k, v in export.written.items()},
               "global_step": int(trainer.global_step)}  # fmt: skip
        if test:
            (metrics,) = trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
            out["test"] = {k: float(v) for k, v in metrics.items()}
        if save_model:
            path = run_dir / f"model_step{steps}.pt"
            torch.save({k: v.detach().cpu() for k, v in cli.model.state_dict().items()}, path)
            out["model"] = str(path)
        return out

    def _loggers(self, run_dir: Path) -> list[Any]:
        """CSV log in the run folder; with ``wandb: true`` in the grid also a W&B run (offline unless
        ``WANDB_MODE=online``) named ``<grid>/<method>/seed<k>`` (``/dense_<mode>`` for a dense stage)."""
        from lightning.pytorch.loggers import CSVLogger

        loggers: list[Any] = [CSVLogger(str(run_dir), name="", version="")]
        if self.grid.wandb:
            from lightning.pytorch.loggers import WandbLogger

            try:  # <method>/seed<k>[/dense_<mode>], without the key folder
                rel = run_dir.resolve().relative_to((self.root / "runs").resolve()).parts
                parts = rel[:2] + rel[3:]
            except ValueError:
                parts = run_dir.parts[-2:]
            name = f"{self.grid.name}/" + "/".join(parts)
            loggers.append(WandbLogger(save_dir=str(run_dir), project="evssl-benchmark", name=name))
            from evssl.cli_lightning import prepare_wandb_loggers

            prepare_wandb_loggers(loggers)
        return loggers

    def _diagnostics(self) -> list[Any]:
        """:class:`~evssl.callbacks.diagnostics.PretrainDiagnostics` for a pre-training run, with ``diagnostics``."""
        if self.grid.diagnostics is None:
            return []
        from evssl.callbacks.diagnostics import PretrainDiagnostics

        return [PretrainDiagnostics(**self.grid.diagnostics)]

    def _random_export(self, seed: int, run_dir: Path) -> dict[str, Any]:
        from lightning.pytorch import seed_everything

        from evssl.export import export_backbone

        seed_everything(seed, workers=True)
        cfg = self.random_backbone_config()
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

    def dense_config(self, export: str | None, seed: int, mode: str) -> dict[str, Any]:
        """The ``eval.dense`` fit config on ``export`` (a backbone file; None = random init) in ``mode``."""
        spec = self.grid.eval.dense
        if spec is None:
            raise ValueError(f"{self.grid.path}: no eval.dense")
        cfg = self.fit_config(spec.config, seed, spec.overrides, ("model.init_args.backbone",), False)
        set_dotted(cfg, "model.init_args.pretrained", None if export is None else str(Path(export).resolve()))
        set_dotted(cfg, "model.init_args.freeze_backbone", mode == "frozen")
        return cfg

    def _dense(self, export: str, seed: int, mode: str, run_dir: Path) -> dict[str, Any]:
        """``eval.dense``: the dense task trained for its steps on the export (frozen or fine-tuned), then tested."""
        spec = self.grid.eval.dense
        assert spec is not None
        cfg = self.dense_config(export, seed, mode)
        res = self._train(cfg, run_dir, spec.steps, [], False, pretraining=False, test=True)
        key = f"test/{spec.metric}"
        if key not in res["test"]:
            raise KeyError(f"{self.grid.path}: eval.dense: {spec.config} logs no {key} (got {sorted(res['test'])})")
        return {f"dense_{mode}": res["test"][key], "wall_s": res["wall_s"], "test": res["test"]}

    def _vo(self, cfg: dict[str, Any], run_dir: Path, model_path: str, seed: int) -> dict[str, Any]:
        """Online VO metrics of the trained model (``vo_<metric>``) and, with ``eval.vo_control``, of the same
        weights without adaptation (``vo_noadapt_<metric>``) on the data module's test sequences (CPU)."""
        from lightning.pytorch import seed_everything

        from evssl.benchmark.evaluate import online_vo

        t0 = time.time()
        cli = self.build(cfg, run_dir)
        model = cli.model.cpu()
        model.load_state_dict(torch.load(model_path, map_location="cpu"))
        dm = cli.datamodule
        dm.prepare_data()
        dm.setup("test")
        test = dm.datasets["test"]
        out: dict[str, Any] = {"vo_windows": len(test)}
        variants = [("vo", True)] + ([("vo_noadapt", False)] if self.grid.eval.vo_control else [])
        for prefix, adapt in variants:
            seed_everything(seed, workers=True)
            out.update({f"{prefix}_{k}": v for k, v in online_vo(model, test, adapt).items()})
        out["wall_s"] = time.time() - t0
        return out

    # --------------------------------------------------------------------------------------------- teacher
    def teacher_config(self, row: dict[str, Any], seed: int, method_cfg: dict[str, Any]) -> dict[str, Any] | None:
        """The fit config of ``row``'s teacher stage on ``seed`` given the row's resolved ``method_cfg``; ``None``
        when the method has no teacher stage or the config already names a teacher checkpoint."""
        from evssl.benchmark.teacher import get_dotted, link_teacher_config

        stage = row["entry"].teacher if row["kind"] == "method" else None
        if stage is None or get_dotted(method_cfg, stage.checkpoint_key, None) is not None:
            return None
        base = self.fit_config(stage.config, seed, {}, (), False)
        return link_teacher_config(base, stage, method_cfg, row.get("teacher_overrides") or {})

    def _teacher(self, row: dict[str, Any], seed: int, run_dir: Path, tcfg: dict[str, Any]) -> dict[str, Any]:
        """Train (or re-read) ``row``'s teacher stage: ``run_dir/teacher.json`` (its key, saved state, test
        metrics); the run's files under ``run_dir/teacher/<key>/``."""
        steps = int(row["teacher_steps"])
        tkey = _hash({"cfg": tcfg, "steps": steps})
        stage_path = run_dir / "teacher.json"
        res = _read_json(stage_path)
        if res is None or res.get("key") != tkey or not Path(res.get("model", "")).is_file():
            res = self._train(tcfg, run_dir / "teacher" / tkey, steps, [], False, pretraining=False, save_model=True,
                              test=True)  # fmt: skip
            res["key"] = tkey
            _write_json(stage_path, res)
        metric = f"test/{row['entry'].teacher.metric}"
        if metric in res.get("test", {}):
            self.log(f"evssl benchmark: {row['name']} seed {seed}: teacher ({steps} steps) {metric} = "
                     f"{100 * res['test'][metric]:.1f}%")  # fmt: skip
        return res

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
            reason = unavailable_reason(entry, g.backbone_family, caps) or (m.skip and f"skipped: {m.skip}")
            rows.append({"name": m.key, "label": m.label or entry.title, "kind": "method", "entry": entry,
                         "config": m.config or entry.config, "overrides": m.overrides, "steps": g.steps,
                         "teacher_steps": m.teacher_steps or g.steps, "teacher_overrides": m.teacher_overrides,
                         "reason": reason})  # fmt: skip
        if g.supervised is not None:
            rows.append({"name": SUPERVISED, "label": "supervised", "kind": SUPERVISED,
                         "config": g.supervised.config, "overrides": g.supervised.overrides,
                         "steps": g.supervised.steps or g.steps, "reason": None})  # fmt: skip
        return rows

    @staticmethod
    def _has_vo(row: dict[str, Any]) -> bool:
        return row["kind"] == "method" and "vo" in row["entry"].tasks

    def _failed(self, row: dict[str, Any], seed: int, err: Exception, run_dir: Path, stage: str = "") -> None:
        """Record why ``row`` failed (its first root-cause line) as its reason, or re-raise without keep_going."""
        if not self.keep_going:
            raise err
        root: BaseException = err
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__  # type: ignore[assignment]
        msg = (str(root).splitlines() or [""])[0][:200]
        where = f" ({stage})" if stage else ""
        row["reason"] = f"failed on seed {seed}{where}: {type(root).__name__}: {msg}"
        self.log(f"evssl benchmark: {row['name']} seed {seed} failed ({row['reason']}); see {run_dir}")

    def _dense_stages(self, r: dict[str, Any], seed: int, run_dir: Path, work: Path, key: str,
                      pre: dict[str, Any], records: list[dict[str, Any]], bar: Any) -> bool:  # fmt: skip
        """The ``eval.dense`` stages of one (row, seed) on its final export (``run_dir/dense_<mode>_step<N>.json``;
        the dense runs' files under ``work``, the pre-training key's folder); False when one failed (the row's
        reason says why)."""
        spec = self.grid.eval.dense
        if spec is None:
            return True
        step = max(int(s) for s in pre["exports"])
        res_all: dict[str, Any] = {}
        for i, mode in enumerate(spec.modes):
            bar.set_postfix_str(f"{r['name']} seed {seed}: dense {mode}")
            stage_path = run_dir / f"dense_{mode}_step{step}.json"
            dkey = _hash({"pre": key, "dense": asdict(spec), "mode": mode, "step": step})
            res = _read_json(stage_path)
            if res is None or res.get("key") != dkey:
                try:
                    res = self._dense(pre["exports"][str(step)], seed, mode, work / f"dense_{mode}")
                except Exception as err:
                    self._failed(r, seed, err, work / f"dense_{mode}", f"dense {mode}")
                    bar.update(len(spec.modes) - i)
                    return False
                res["key"] = dkey
                _write_json(stage_path, res)
            res_all[f"dense_{mode}"] = res[f"dense_{mode}"]
            bar.update(1)
        records.append({"name": r["name"], "label": r["label"], "kind": r["kind"], "task": "dense", "seed": seed,
                        "step": step, "pretrain_s": pre["wall_s"], **res_all})  # fmt: skip
        return True

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

        dense_modes = list(g.eval.dense.modes) if g.eval.dense is not None else []

        def stages(r: dict[str, Any], points: list[int]) -> int:
            teacher = r["kind"] == "method" and r["entry"].teacher is not None
            return 1 + len(points) + int(self._has_vo(r)) + len(dense_modes) + int(teacher)

        total = sum(stages(r, p) for r, _, p in jobs)
        t0 = time.time()
        records: list[dict[str, Any]] = []
        probe_eval = {k: v for k, v in asdict(g.eval).items() if k not in ("vo_control", "dense")}
        if probe_eval["split"] == "test":  # the default: keys of grids from before the field stay valid
            del probe_eval["split"]
        eval_key = probe_eval | {"data": g.data, "representation": g.representation}
        with tqdm(total=total, desc=f"benchmark {g.name}", unit="stage", disable=not self.progress,
                  dynamic_ncols=True) as bar:  # fmt: skip
            for r, seed, points in jobs:
                if r["reason"] is not None:  # failed on an earlier seed
                    bar.update(stages(r, points))
                    continue
                run_dir = self.root / "runs" / r["name"] / f"seed{seed}"
                if r["kind"] == RANDOM:
                    cfg = {"backbone": g.backbone, "in_chans": self.in_channels(), "seed": seed}
                else:
                    cfg = self.row_config(r, seed)
                vo = self._has_vo(r)
                key_of = {"cfg": cfg, "steps": r.get("steps"), "points": points, "diag": g.diagnostics}
                tcfg = self.teacher_config(r, seed, cfg) if r["kind"] == "method" else None
                if tcfg is not None:  # the method loads the teacher trained (and cached) here, per seed
                    bar.set_postfix_str(f"{r['name']} seed {seed}: teacher")
                    try:
                        teacher = self._teacher(r, seed, run_dir, tcfg)
                    except Exception as err:
                        self._failed(r, seed, err, run_dir / "teacher", "teacher")
                        bar.update(stages(r, points))
                        continue
                    bar.update(1)
                    key_of["teacher"] = teacher["key"]  # its key, not its path: a moved out dir keeps the cache
                    cfg = copy.deepcopy(cfg)
                    set_dotted(cfg, r["entry"].teacher.checkpoint_key, str(Path(teacher["model"]).resolve()))
                elif r["kind"] == "method" and r["entry"].teacher is not None:
                    bar.update(1)  # the config names its own teacher
                key = _hash(key_of | ({"model": True} if vo else {}))
                bar.set_postfix_str(f"{r['name']} seed {seed}: pre-train")
                work = run_dir / key  # this key's own files: a changed config never overwrites another's
                pre_path = run_dir / "pretrain.json"
                pre = _read_json(pre_path)
                files = [*pre["exports"].values(), *([pre.get("model", "")] if vo else [])] if pre else []
                if pre is None or pre.get("key") != key or not all(Path(p).is_file() for p in files):
                    try:
                        if r["kind"] == RANDOM:
                            pre = self._random_export(seed, work)
                        else:
                            pre = self._train(cfg, work, int(r["steps"]), points, False, r["kind"] == "method", vo)
                    except Exception as err:  # one failing method must not sink the grid: its row says why
                        self._failed(r, seed, err, work)
                        bar.update(stages(r, points))
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
                    records.append({"name": r["name"], "label": r["label"], "kind": r["kind"], "task": "probe",
                                    "seed": seed, "step": step, "pretrain_s": pre["wall_s"], **res})  # fmt: skip
                    bar.update(1)
                if not self._dense_stages(r, seed, run_dir, work, key, pre, records, bar):
                    bar.update(int(vo))
                    continue
                if vo:
                    bar.set_postfix_str(f"{r['name']} seed {seed}: online VO")
                    stage_path = run_dir / f"vo_step{r['steps']}.json"
                    vkey = _hash({"pre": key, "control": g.eval.vo_control})
                    res = _read_json(stage_path)
                    if res is None or res.get("key") != vkey:
                        try:
                            res = self._vo(cfg, work, pre["model"], seed)
                        except Exception as err:
                            self._failed(r, seed, err, work, "online VO")
                            bar.update(1)
                            continue
                        res["key"] = vkey
                        _write_json(stage_path, res)
                    records.append({"name": r["name"], "label": r["label"], "kind": r["kind"], "task": "vo",
                                    "seed": seed, "step": r["steps"], "pretrain_s": pre["wall_s"], **res})  # fmt: skip
                    bar.update(1)
        return {"rows": rows, "records": records, "wall_s": time.time() - t0}
