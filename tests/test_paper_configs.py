"""Every paper-scale Lightning config under ``experiments/`` runs one training step through ``evssl fit``'s
LightningCLI, shrunk to tiny backbones and the synthetic ``tiny`` stores by the tables of :mod:`tests.paper_configs`.

The one-step runs are part of the default suite (issue 10 §3: every paper-scale config runs one step in CI): 21
configs at 3-10 s each (most of it jsonargparse building and checking the parser), about 100 s on one loaded core.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evssl.cli import EvsslCLI
from tests.paper_configs import BACKBONE_KEYS, BACKBONES, MODELS, PAPER_CONFIGS, REPO, SAMPLERS, ShrinkError, shrink

#: a shrunk config's model (all backbones, heads, EMA targets); the paper-scale ones have 20-180 M. The largest
#: shrunk ones are meta-VO's (~1 M: ConvLSTMs after encoder stages 3 and 4, as the configs place them)
MAX_PARAMS = 2_000_000

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")
IDS = {"ids": lambda p: f"{p.parent.name}/{p.name}"}


def _backbones(model: dict) -> list[dict]:
    specs = [model.get(k) for k in BACKBONE_KEYS]
    return [s for v in specs for s in (v if isinstance(v, list) else [v]) if s]


def test_every_lightning_config_is_covered() -> None:
    names = {str(p.relative_to(REPO / "experiments")) for p in PAPER_CONFIGS}
    assert "ecddp/etartanair_swin_t.yaml" in names and "meta_vo/kitti.yaml" in names
    assert not any(n.startswith(("smoke/", "benchmark/")) for n in names)


@pytest.mark.parametrize("config", PAPER_CONFIGS, **IDS)
def test_shrunk_config_is_tiny_cpu_and_synthetic(config: Path, tmp_path: Path) -> None:
    cfg = shrink(config, tmp_path)
    trainer, model, data = cfg["trainer"], cfg["model"]["init_args"], cfg["data"]["init_args"]
    assert trainer["fast_dev_run"] == 1 and trainer["accelerator"] == "cpu" and trainer["logger"] is False
    specs = _backbones(model)
    assert specs, f"{config}: no backbone found under {BACKBONE_KEYS}"
    for spec in specs:
        tiny = BACKBONES[spec["class_path"].rsplit(".", 1)[-1]]
        assert {k: spec["init_args"][k] for k in tiny} == tiny
    sources = [data[k] for k in ("source", "train_source", "test_source") if k in data]
    assert sources and all(s.startswith("synthetic") or s.startswith(str(tmp_path)) for s in sources), sources
    # the paper values the tables must replace are gone
    assert model.get("heads", {}).get("num_prototypes", 64) == 64 and model.get("teacher_checkpoint") is None
    assert model.get("pretrained") is None


def test_shrinking_keeps_what_the_config_states_and_adds_nothing_else(tmp_path: Path) -> None:
    cfg = shrink(REPO / "experiments/ecddp/etartanair_swin_t.yaml", tmp_path)
    model = cfg["model"]["init_args"]
    swin = model["backbone"]["init_args"]
    assert swin["mask_token"] is True and swin["window_size"] == 4 and swin["drop_path_rate"] == 0.1  # kept
    crops = model["crops"]
    assert (crops["global_size"], crops["local_size"], crops["input_size"]) == (32, 16, [32, 32])
    assert model["heads"]["num_prototypes"] == 64 and model["loss"]["student_temp"] == 0.1  # untouched paper value
    sampler = cfg["data"]["init_args"]["sampler"]["init_args"]
    assert sampler["crop_size"] == [32, 48] and "resolution" not in sampler  # replaced, not added


def test_a_config_without_a_tiny_override_fails_naming_it(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "experiments/ecdp/linear_probe.yaml").read_text())
    cfg["model"]["init_args"]["backbone"]["class_path"] = "evssl.nn.backbones.UNet"
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ShrinkError, match=r"odd\.yaml: no tiny override for backbone UNet"):
        shrink(path, tmp_path)


@pytest.mark.parametrize("config", PAPER_CONFIGS, **IDS)
def test_paper_config_runs_one_step_shrunk(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)  # callbacks write under ./runs
    tiny = tmp_path / config.name
    tiny.write_text(yaml.safe_dump(shrink(config, tmp_path)))
    cli = EvsslCLI(args=["fit", "--config", str(tiny)])
    name = config.relative_to(REPO)
    assert cli.trainer.state.finished, f"{name} (shrunk): fit did not finish ({cli.trainer.state.status})"
    assert cli.trainer.global_step >= 1, f"{name} (shrunk): no optimiser step was taken"
    params = sum(p.numel() for p in cli.model.parameters())
    assert params < MAX_PARAMS, f"{name} (shrunk) still has {params:,} parameters: a backbone or head was not shrunk"


def test_every_table_entry_is_stated_by_some_config(tmp_path: Path) -> None:
    """A key renamed in a method or a YAML would silently stop being shrunk: every MODELS / SAMPLERS key must be
    stated by at least one paper config of that class."""
    stated: dict[str, set[str]] = {}
    for config in PAPER_CONFIGS:
        cfg = yaml.safe_load(config.read_text())
        data = cfg["data"].get("init_args", {})
        for spec in (cfg["model"], data.get("sampler"), data.get("eval_sampler")):
            if spec:
                name = spec["class_path"].rsplit(".", 1)[-1]
                stated.setdefault(name, set()).update(spec.get("init_args") or {})
    for table in (MODELS, SAMPLERS):
        for name, entry in table.items():
            assert set(entry) <= stated.get(name, set()), f"{name}: {set(entry) - stated.get(name, set())} unused"
