"""Issue 18 item 7: quiet runs. The noise evssl caused is fixed at its source, third-party noise is filtered narrowly
(:mod:`evssl.utils.warnings`), and the console path (pre-train without validation data and with a W&B logger,
export, linear probe, test from a checkpoint) prints none of the known noise lines."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer

from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events
from evssl.optim import OptimConfig
from evssl.tasks.classification import Classifier
from tests.helpers import TensorDataModule, TinyNet, cli_env, write_fit_config
from tests.test_cli import evssl_command

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

#: Lines every run printed before (issue 18 item 7); none may come back.
NOISE = (
    "💡 Tip",  # Lightning's litlogger / litmodels adverts
    "litlogger",
    "litmodels",
    "anonymous setting has no effect",  # W&B, from WandbLogger's anonymous=None
    "git root",  # W&B looking for a repository in a save folder not made yet
    "LeafSpec",  # torch deprecation inside Lightning's batch flattening
    "across ranks is zero",  # Lightning handed an empty validation loader
    "in eval mode at the start of training",  # a linear probe's frozen backbone
    "dirpath has changed",  # `evssl test --ckpt_path` under a new logger version
)


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


def _store(path: Path, n: int, split: str, seed: int = 0) -> Path:
    """A tiny labelled store (16x16 sensor, 2 classes: which half of the sensor fires)."""
    rng = np.random.default_rng(seed)
    with StoreWriter(path) as w:
        w.set_classes(["left", "right"])
        for k in range(n):
            t = np.sort(rng.integers(0, 60_000, 200))
            x = rng.integers(0, 8, 200) + 8 * (k % 2)
            ev = Events.from_arrays(x, rng.integers(0, 16, 200), t, rng.choice([-1, 1], 200), 16, 16)
            w.add(ev, name=f"r{k:03d}", label=k % 2, split=split)
    return path


def _resnet() -> torch.nn.Module:
    from evssl.nn.backbones import BasicBlock, ResNet

    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], in_chans=2, width=4, small_input=True)


def _trainer(**kw) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


# ------------------------------------------------------------------------------------- fixed at the source
class _Modes(Callback):
    def __init__(self) -> None:
        self.backbone: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.backbone.append(pl_module.backbone.training)


def _probe(backbone: torch.nn.Module, tmp_path: Path) -> Classifier:
    torch.save(backbone.state_dict(), tmp_path / "bb.pt")
    return Classifier(backbone, num_classes=4, mode="linear", pretrained=str(tmp_path / "bb.pt"), optim=OptimConfig())


def test_linear_probe_trains_with_a_frozen_backbone_and_no_eval_mode_warning(tmp_path: Path) -> None:
    model = _probe(_resnet(), tmp_path)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    modes = _Modes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(max_epochs=1, callbacks=[modes]).fit(model, TensorDataModule(num_samples=16, classes=4))
    assert not [w for w in caught if "eval mode" in str(w.message)]
    assert modes.backbone and not any(modes.backbone)  # every training step saw the backbone in eval mode
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(before[k], v), k  # BatchNorm statistics untouched
    assert not model.backbone.training and model.head.training


def test_a_module_the_user_left_in_eval_mode_is_still_reported(tmp_path: Path) -> None:
    model = _probe(TinyNet(2, 8), tmp_path)
    model.head.eval()  # not one of the probe's frozen modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(max_steps=1, limit_val_batches=0).fit(model, TensorDataModule(num_samples=8, classes=4))
    n = len(list(model.head.modules()))  # the head and its layers; not the frozen backbone
    assert [w for w in caught if f"Found {n} module(s) in eval mode" in str(w.message)]


def test_fit_without_validation_data_switches_the_loop_off(tmp_path: Path) -> None:
    from evssl.data.datamodules import EventDataModule
    from evssl.data.samplers import ClassificationWindow
    from evssl.events.representations import Histogram

    path = _store(tmp_path / "train.h5", 8, "train")
    dm = EventDataModule(
        train=str(path),
        val_fraction=0.0,
        batch_size=4,
        num_workers=0,
        sampler=ClassificationWindow(resolution=(16, 16)),
        representation=Histogram(),
    )
    model = Classifier(TinyNet(2, 8), num_classes=2, mode="scratch", optim=OptimConfig(lr=0.01))
    trainer = _trainer(max_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, dm)
    assert not [w for w in caught if "across ranks is zero" in str(w.message)]
    assert trainer.limit_val_batches == 0 and trainer.global_step == 2
    assert "val/acc" not in trainer.callback_metrics


def test_wandb_loggers_lose_the_unset_anonymous_argument_and_get_their_folder(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from evssl.cli_lightning import prepare_wandb_loggers

    plain = WandbLogger(save_dir=str(tmp_path / "runs" / "a"), project="p", offline=True)
    asked = WandbLogger(save_dir=str(tmp_path / "runs" / "b"), project="p", offline=True, anonymous=True)
    assert "anonymous" in plain._wandb_init and plain._wandb_init["anonymous"] is None
    prepare_wandb_loggers([CSVLogger(str(tmp_path / "csv")), plain, asked])
    assert "anonymous" not in plain._wandb_init and (tmp_path / "runs" / "a").is_dir()
    assert asked._wandb_init["anonymous"] == "allow"  # the user's explicit choice stays
    assert not (tmp_path / "csv").exists()  # other loggers untouched


def test_benchmark_runner_restores_logging_and_warning_filters(tmp_path: Path, monkeypatch) -> None:
    """The runner's quieting once leaked into the calling process (Lightning's logger stayed at ERROR), so later
    tests in the same pytest worker saw no data-plan line in caplog."""
    from evssl.benchmark.config import load_grid
    from evssl.benchmark.runner import BenchmarkRunner
    from tests.helpers import REPO

    runner = BenchmarkRunner(load_grid(REPO / "experiments" / "benchmark" / "smoke.yaml", tmp_path), progress=False)
    seen = {}

    def fake_run(self) -> dict:
        seen["level"] = logging.getLogger("lightning.pytorch").level
        return {"rows": [], "records": [], "wall_s": 0.0}

    monkeypatch.setattr(BenchmarkRunner, "_run", fake_run)
    level, filters = logging.getLogger("lightning.pytorch").level, list(warnings.filters)
    runner.run()
    assert seen["level"] == logging.ERROR  # quiet inside the grid's runs
    assert logging.getLogger("lightning.pytorch").level == level and warnings.filters == filters


# ------------------------------------------------------------------------------------------ third-party filters
def _shown(message: str, category: type[Warning], module: str, command: str = "fit") -> bool:
    from evssl.utils.warnings import install_filters

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install_filters(command)
        warnings.warn_explicit(message, category, "x.py", 1, module=module)
    return bool(caught)


def test_filters_match_one_message_of_one_module() -> None:
    leaf = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    assert not _shown(leaf, FutureWarning, "lightning.pytorch.utilities._pytree")
    assert _shown(leaf, FutureWarning, "evssl.data.collate")  # the same deprecation from our own code is shown
    moved = "The dirpath has changed from 'a' to 'b', therefore `best_model_score` won't be reloaded."
    checkpoint = "lightning.pytorch.callbacks.model_checkpoint"
    assert _shown(moved, UserWarning, checkpoint)  # resuming fit: the bookkeeping matters, the warning stays
    assert not _shown(moved, UserWarning, checkpoint, command="test")
    empty = "Total length of `list` across ranks is zero."
    assert _shown(empty, UserWarning, "lightning.pytorch.utilities.data", command="validate")  # never filtered


def test_lightning_tips_are_dropped_other_info_lines_kept(caplog) -> None:
    from evssl.utils.warnings import install_filters

    install_filters("fit")
    install_filters("fit")  # idempotent
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(type(f).__name__ == "_DropLightningTips" for f in log.filters) == 1
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        log.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        log.info("evssl data:\n  train: a.h5")
    assert [r.getMessage() for r in caplog.records] == ["evssl data:\n  train: a.h5"]


# ------------------------------------------------------------------------------------------- the console path
def _cfg(tmp_path: Path, name: str, model: dict, data: dict, loggers: list[dict]) -> Path:
    return write_fit_config(
        tmp_path, name, model, data, (16, 16), max_steps=2, limit_val_batches=1, limit_test_batches=1, logger=loggers
    )


def test_console_path_prints_none_of_the_known_noise(tmp_path: Path) -> None:
    import subprocess

    from evssl.cli import main

    env = cli_env(WANDB_SILENT="false")  # W&B disabled (no run, no service) but it still prints its warnings

    def evssl(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*evssl_command(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert not _noise(proc.stdout + proc.stderr), _noise(proc.stdout + proc.stderr)
        return proc

    train, test = _store(tmp_path / "train.h5", 16, "train"), _store(tmp_path / "test.h5", 8, "test", seed=1)
    tiny = {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}}
    csv = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "csv"}}
    wandb = {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"save_dir": "runs/wandb-not-made-yet", "project": "quiet"},
    }
    scratch = {"class_path": "evssl.tasks.Classifier", "init_args": {"mode": "scratch", "backbone": tiny}}
    # no validation data (val_fraction 0), a W&B logger whose folder does not exist yet
    pre = _cfg(tmp_path, "pre", scratch, {"train": str(train), "val_fraction": 0.0}, [csv, wandb])
    out = evssl("fit", "--config", str(pre))
    assert "evssl data:" in out.stderr and "val: none" in out.stderr  # the run's own lines still print
    ckpt = next((tmp_path / "runs" / "csv").rglob("*.ckpt"))
    assert main(["export", str(ckpt), "--out", str(tmp_path / "bb.pt")]) == 0
    linear = {
        "class_path": "evssl.tasks.Classifier",
        "init_args": {"mode": "linear", "pretrained": str(tmp_path / "bb.pt"), "backbone": tiny},
    }
    probe = _cfg(tmp_path, "probe", linear, {"train": str(train)}, [csv])
    evssl("fit", "--config", str(probe))
    pckpt = max((tmp_path / "runs" / "csv").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    out = evssl("test", "--config", str(probe), "--ckpt_path", str(pckpt), "--data.init_args.test", str(test))
    assert "test/acc" in out.stdout
