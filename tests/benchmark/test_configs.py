"""Every benchmark grid under experiments/benchmark/ loads, and every method's fit config resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from evssl.benchmark.config import expand_env, load_grid
from evssl.benchmark.registry import METHODS
from evssl.benchmark.runner import BenchmarkRunner
from tests.helpers import REPO

GRIDS = sorted((REPO / "experiments" / "benchmark").glob("*.yaml"))


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_grid_loads_and_fit_configs_resolve(path: Path, tmp_path: Path) -> None:
    grid = load_grid(path, tmp_path)
    assert grid.checkpoints[-1] == grid.steps and (len(grid.checkpoints) >= 4 or grid.name == "demo")
    runner = BenchmarkRunner(grid, progress=False)
    for m in grid.methods:
        entry = METHODS[m.name]
        if not entry.available():
            continue
        cfg = runner.fit_config(m.config or entry.config, 0, m.overrides, entry.backbone_keys, True)
        assert cfg["model"]["init_args"]["backbone"] == grid.backbone
        assert cfg["data"]["init_args"]["representation"] == grid.representation
        assert cfg["model"]["init_args"]["probe"] == {"enabled": False}
    if grid.supervised is not None:
        cfg = runner.fit_config(grid.supervised.config, 1, grid.supervised.overrides, ("model.init_args.backbone",),
                                False)  # fmt: skip
        assert cfg["seed_everything"] == 1 and cfg["model"]["class_path"].endswith("Classifier")


def test_expand_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVB_X", "/data")
    monkeypatch.delenv("EVB_Y", raising=False)
    assert expand_env("${EVB_X}/a.h5 ${EVB_Y:-runs/b.h5} ${EVB_Y}") == "/data/a.h5 runs/b.h5 "
