"""``eval.dense``: a segmentation head on every final export (frozen and fine-tuned), on the smoke scale."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from evssl.benchmark.config import GridConfigError, load_grid
from evssl.benchmark.main import write_outputs
from evssl.benchmark.runner import BenchmarkRunner
from tests.helpers import REPO

SMOKE = REPO / "experiments" / "benchmark" / "smoke.yaml"

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def _grid(tmp_path: Path, dense: object) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name="dense", methods=[], pretrain={"steps": 2, "checkpoints": [2]})
    raw["eval"]["dense"] = dense
    path = tmp_path / "dense.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_dense_spec_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(GridConfigError, match=r"dense\.yaml: eval\.dense has unknown fields \['epochs'\]"):
        load_grid(_grid(tmp_path, {"epochs": 3}))
    with pytest.raises(GridConfigError, match=r"eval\.dense\.modes"):
        load_grid(_grid(tmp_path, {"modes": ["linear"]}))
    assert load_grid(_grid(tmp_path, None)).eval.dense is None


def test_dense_stage_frozen_and_finetuned_per_backbone(tmp_path: Path) -> None:
    spec = {"config": "experiments/smoke/segmentation.yaml", "steps": 2,
            "overrides": {"data.init_args.batch_size": 4, "model.init_args.decoder_channels": 8}}  # fmt: skip
    grid = load_grid(_grid(tmp_path, spec), tmp_path / "out")
    result = BenchmarkRunner(grid, progress=False, keep_going=False).run()
    dense = {r["name"]: r for r in result["records"] if r["task"] == "dense"}
    assert sorted(dense) == ["random", "supervised"]
    for r in dense.values():
        for mode in ("frozen", "finetune"):
            assert 0.0 <= r[f"dense_{mode}"] <= 1.0 and math.isfinite(r[f"dense_{mode}"])
    pre = json.loads((tmp_path / "out" / "runs" / "supervised" / "seed0" / "pretrain.json").read_text())
    run = tmp_path / "out" / "runs" / "supervised" / "seed0" / pre["key"]
    frozen = yaml.safe_load((run / "dense_frozen" / "config.yaml").read_text())["model"]["init_args"]
    tuned = yaml.safe_load((run / "dense_finetune" / "config.yaml").read_text())["model"]["init_args"]
    assert frozen["freeze_backbone"] is True and tuned["freeze_backbone"] is False
    assert frozen["pretrained"].endswith(f"supervised/seed0/{pre['key']}/backbone_step2.pt")
    assert frozen["backbone"] == grid.backbone  # the grid's backbone replaces the config's Swin
    md = write_outputs(grid, result)["results.md"].read_text()
    assert "| dense head | frozen miou (%) | Δ vs random (± SE) | fine-tuned miou (%) |" in md
    with open(tmp_path / "out" / "results.csv") as f:
        table = {r["name"]: r for r in csv.DictReader(f)}
    assert table["random"]["dense_frozen_diff"] == "nan" and table["supervised"]["dense_finetune_diff"] != "nan"
