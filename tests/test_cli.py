"""The ``evssl`` command: help, --print_config, links, error reporting, every smoke config end to end, export."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from evssl.cli import main
from evssl.export import load_exported_backbone
from evssl.tasks.classification import Classifier
from tests.helpers import REPO, cli_env

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

SMOKE = REPO / "experiments" / "smoke"
SUPERVISED = SMOKE / "supervised.yaml"
SMOKE_CONFIGS = sorted(SMOKE.glob("*.yaml"))
# every Lightning config; experiments/benchmark/ holds `evssl benchmark` grids (tested in tests/benchmark)
PAPER_CONFIGS = sorted(
    p for p in (REPO / "experiments").rglob("*.yaml") if p.parent != SMOKE and p.parent.name != "benchmark"
)
# only two training steps and one validation batch: the point is that every config runs end to end
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


def evssl_command() -> list[str]:
    """The installed console script (``.venv/bin/evssl``), else ``python -m evssl.cli``."""
    local = Path(sys.executable).with_name("evssl")
    if local.exists():
        return [str(local)]
    found = shutil.which("evssl")
    return [found] if found else [sys.executable, "-m", "evssl.cli"]


def run_evssl(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real console script with W&B disabled and one thread."""
    return subprocess.run(
        [*evssl_command(), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)  # configs log to ./runs


def _main_exit(args: list[str]) -> int:
    try:
        return int(main(args) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_help_lists_lightning_and_data_commands(tmp_path: Path) -> None:
    proc = run_evssl(["--help"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for cmd in ("fit", "validate", "test", "predict", "convert", "synth", "export"):
        assert f"\n  {cmd} " in proc.stdout, cmd


def test_unknown_command(capsys: pytest.CaptureFixture) -> None:
    assert _main_exit(["bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'bogus'" in err and "export" in err


def test_subcommand_help(capsys: pytest.CaptureFixture) -> None:
    assert _main_exit(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--print_config" in out and "--demo" in out and "--ckpt_path" in out
    assert _main_exit(["synth", "--help"]) == 0
    assert "--size" in capsys.readouterr().out
    assert _main_exit(["export", "--help"]) == 0
    assert "checkpoint" in capsys.readouterr().out


def _preset_recipes(class_path: str) -> dict:
    """The ``RECIPES`` table of a method class (``{}`` for a class without one)."""
    module_name, name = class_path.rsplit(".", 1)
    return dict(getattr(getattr(importlib.import_module(module_name), name), "RECIPES", {}))


@pytest.mark.parametrize("config", SMOKE_CONFIGS + PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_print_config_resolves_every_default(config: Path, capsys: pytest.CaptureFixture) -> None:
    assert _main_exit(["fit", "--config", str(config), "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["seed_everything"] is not None
    assert {"max_epochs", "accelerator", "precision"} <= set(cfg["trainer"])
    model = cfg["model"]["init_args"]
    assert "class_path" in cfg["model"] and "class_path" in cfg["data"]
    # linked values are not in the config: they come from the data module
    backbone = model.get("backbone", {}).get("init_args", {})
    assert "in_chans" not in backbone
    assert "num_classes" not in model and "classes" not in (model.get("probe") or {})
    if model.get("optim") is None:  # only where the preset supplies the whole group (a ``small`` recipe)
        assert "optim" in _preset_recipes(cfg["model"]["class_path"]).get(model.get("preset"), {}), config
    else:
        assert {"lr", "weight_decay", "warmup_epochs", "name", "lr_rules", "no_decay"} <= set(model["optim"])
    if cfg["model"]["class_path"].endswith("Classifier"):
        assert {"mode", "optim", "label_smoothing"} <= set(model)


def test_supervised_print_config_lists_class_defaults(capsys: pytest.CaptureFixture) -> None:
    assert _main_exit(["fit", "--config", str(SUPERVISED), "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    data = cfg["data"]["init_args"]
    assert {"batch_size", "num_workers", "representation_on", "seed", "train_split"} <= set(data)
    assert cfg["model"]["init_args"]["optim"]["min_lr_ratio"] == 0.0  # an untouched default is shown


def test_wrong_class_path_and_wrong_key_are_reported(capsys: pytest.CaptureFixture) -> None:
    code = _main_exit(["fit", "--config", str(SUPERVISED), "--model.init_args.backbone", "evssl.nn.NoSuchNet"])
    assert code != 0
    assert "NoSuchNet" in capsys.readouterr().err
    code = _main_exit(["fit", "--config", str(SUPERVISED), "--model.init_args.no_such_option", "3"])
    assert code != 0
    assert "no_such_option" in capsys.readouterr().err
    code = _main_exit(["fit", "--config", str(SUPERVISED), "--model", "evssl.tasks.NoSuchTask"])
    assert code != 0
    assert "NoSuchTask" in capsys.readouterr().err


@pytest.mark.parametrize("config", SMOKE_CONFIGS, ids=lambda p: p.stem)
def test_smoke_config_fits_end_to_end(config: Path, tmp_path: Path) -> None:
    proc = run_evssl(["fit", "--config", str(config), *QUICK], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved, "the resolved config was not written to the run directory"
    resolved = yaml.safe_load(saved[0].read_text())
    assert resolved["model"]["class_path"] and resolved["data"]["class_path"] and resolved["trainer"]["max_epochs"] == 1


def test_repeated_runs_in_one_directory_and_demo_line(tmp_path: Path) -> None:
    for _ in range(2):  # the second run must not trip over the first run's config.yaml
        proc = run_evssl(["fit", "--config", str(SUPERVISED), *QUICK, "--demo", "true"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-6000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("validation accuracy:")]
        assert line and "(chance: 0.100)" in line[0], proc.stdout[-2000:]
    configs = sorted(tmp_path.glob("runs/smoke/supervised/version_*/config.yaml"))
    assert len(configs) == 2
    metrics = tmp_path / "runs/smoke/supervised/version_0/metrics.csv"
    assert "val/acc" in metrics.read_text().splitlines()[0]


def test_fast_dev_run_in_process() -> None:
    assert _main_exit(["fit", "--config", str(SUPERVISED), "--trainer.fast_dev_run", "1"]) == 0


def _tiny_byol_config(tmp_path: Path) -> Path:
    cfg = {
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path),
        },
        "model": {
            "class_path": "tests.helpers.TinyBYOL",
            "init_args": {"backbone": {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}}},
        },
        "data": {"class_path": "tests.helpers.TensorDataModule", "init_args": {"channels": 3, "classes": 5}},
    }
    path = tmp_path / "byol.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_links_from_data_to_model(tmp_path: Path) -> None:
    from evssl.cli import EvsslCLI

    cli = EvsslCLI(args=["--config", str(_tiny_byol_config(tmp_path))], run=False)
    assert cli.model.backbone.in_chans == 3  # data.in_channels -> backbone in_chans
    assert cli.model.probe_config.classes == 5 and cli.model.probe.linear.out_features == 5  # num_classes -> probe
    cli = EvsslCLI(args=["--config", str(SUPERVISED), "--trainer.logger", "false"], run=False)
    assert cli.model.num_classes == cli.datamodule.num_classes == 10
    assert cli.model.backbone.in_chans == cli.datamodule.in_channels == 5


def test_export_then_load_round_trip(tmp_path: Path) -> None:
    args = ["fit", "--config", str(SUPERVISED), *QUICK, "--trainer.logger", "false"]
    assert _main_exit([*args, "--trainer.default_root_dir", str(tmp_path)]) == 0
    ckpt = next(tmp_path.rglob("*.ckpt"))
    out = tmp_path / "export" / "backbone.pt"
    assert _main_exit(["export", str(ckpt), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"]["class_path"].endswith(".ResNet") and meta["backbone"]["init_args"]["width"] == 16
    assert meta["in_chans"] == 5 and meta["method"] == "evssl.tasks.classification.Classifier"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    expected = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    plain = torch.load(out, weights_only=True)
    assert set(plain) == set(expected)
    # rebuilt from the JSON alone
    rebuilt = load_exported_backbone(out)
    for k, v in expected.items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    # a downstream Classifier with pretrained=<export> has the identical backbone
    clf = Classifier(load_exported_backbone(out), num_classes=10, mode="finetune", pretrained=str(out))
    for k, v in expected.items():
        assert torch.equal(clf.backbone.state_dict()[k], v), k
    # ... and through the CLI (linear probe of the exported backbone)
    code = _main_exit(
        [
            "fit",
            "--config",
            str(SUPERVISED),
            "--model.init_args.mode",
            "linear",
            "--model.init_args.pretrained",
            str(out),
            "--trainer.fast_dev_run",
            "1",
        ]
    )
    assert code == 0


def test_export_of_a_pretraining_method_and_resume_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = _tiny_byol_config(tmp_path)
    assert _main_exit(["fit", "--config", str(cfg), "--trainer.max_epochs", "1"]) == 0
    ckpt = next(tmp_path.rglob("*.ckpt"))
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["probe"]["classes"] == 5 and "num_classes" not in hparams  # only the link the model takes
    out = tmp_path / "byol_backbone.pt"
    assert _main_exit(["export", str(ckpt), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["in_chans"] == 3 and meta["num_features"] == 8 and meta["method"].endswith("TinyBYOL")
    backbone = load_exported_backbone(out)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, state[f"backbone.{k}"]), k
    # the checkpoint's hyper-parameters re-parse for --ckpt_path (one more epoch)
    assert _main_exit(["fit", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0


def test_export_refuses_checkpoints_without_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "plain.ckpt")
    assert _main_exit(["export", str(tmp_path / "plain.ckpt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "evssl fit" in capsys.readouterr().err


def test_synth_writes_a_store(tmp_path: Path) -> None:
    from evssl.events.io.store import EventStore

    out = tmp_path / "s.h5"
    assert _main_exit(["synth", "--size", "tiny", "--seed", "3", "--out", str(out), "--kinds", "sequence"]) == 0
    with EventStore(out) as store:
        assert len(store) >= 1 and store.attrs["seed"] == 3
