"""Every benchmark grid under experiments/benchmark/ loads, and every row's fit config parses and instantiates.

The configs are resolved by the runner's own :meth:`BenchmarkRunner.plan` / :meth:`~BenchmarkRunner.row_config` and
built by :meth:`~BenchmarkRunner.build` (jsonargparse + :class:`~evssl.cli_lightning.EvsslCLI`, as a training run
does, nothing trained), so a wrong class path in a grid's override fails here instead of in a user's run. Every
grid's data source is replaced by one tiny simulator store built here (frames, poses, labels, sequences), so grids
on real data or on the larger synthetic sets are validated without them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from evssl.benchmark.config import expand_env, load_grid
from evssl.benchmark.registry import store_capabilities
from evssl.benchmark.runner import RANDOM, SUPERVISED, BenchmarkRunner
from tests.helpers import REPO

GRIDS = sorted((REPO / "experiments" / "benchmark").glob("*.yaml"))

pytestmark = [
    pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended"),
    pytest.mark.filterwarnings("ignore:.*freeze_backbone without `pretrained`"),  # dense configs, random weights
]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classification clips of 80 ms and one sequence of 1 s (10 fps), 48x64, from the simulator."""
    from evssl.events import simulate as sim

    tiny = sim.SIZES["tiny"]
    cls = replace(tiny.classification, duration_us=80_000)
    seq = replace(tiny.sequence, duration_us=1_000_000, fps=10.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sim.SIZES, "_bench", sim.SizePreset(10, 1, cls, seq))
        return sim.make_synthetic_store(tmp_path_factory.mktemp("store") / "bench.h5", size="_bench", seed=0)


def test_substitute_store_offers_every_capability(tiny_store: Path) -> None:
    assert store_capabilities(tiny_store) == {"frames", "poses", "labels"}


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_grid_fit_configs_parse_and_instantiate(path: Path, tiny_store: Path, tmp_path: Path) -> None:
    grid = load_grid(path, tmp_path / "out")
    assert grid.checkpoints[-1] == grid.steps and (len(grid.checkpoints) >= 4 or grid.name == "demo")
    grid.data = {**grid.data, "source": str(tiny_store)}
    runner = BenchmarkRunner(grid, progress=False)
    rows = runner.plan()
    assert [r["kind"] for r in rows].count(RANDOM) == 1
    built = []
    for row in rows:
        if row["reason"] is not None and not row["reason"].startswith("skipped: "):
            continue  # the runner cannot run it (backbone family, module missing); a budget skip is still checked
        if row["kind"] == RANDOM:
            backbone = runner._instantiate(runner.random_backbone_config(), torch.nn.Module)
            assert backbone.in_chans == runner.in_channels()
            continue
        cfg = runner.row_config(row, 1)
        assert cfg["seed_everything"] == 1
        cli = runner.build(cfg, tmp_path / row["name"])
        model = cli.model
        backbone = model.backbone_for_export() if row["kind"] == "method" else model.backbone
        assert type(backbone).__name__ == grid.backbone_family, row["name"]
        assert backbone.in_chans == runner.in_channels(), row["name"]
        if row["kind"] == SUPERVISED:
            assert type(model).__name__ == "Classifier"
        tcfg = runner.teacher_config(row, 1, cfg) if row["kind"] == "method" else None
        if tcfg is not None:  # the teacher stage builds the very network the method loads (strictly)
            teacher = runner.build(tcfg, tmp_path / f"{row['name']}_teacher").model
            model.teacher.load_state_dict(teacher.teacher.state_dict(), strict=True)
            assert tcfg["seed_everything"] == 1 and tcfg["data"]["init_args"]["source"] == str(tiny_store)
        built.append(row["name"])
    if grid.eval.dense is not None:  # the dense head's config on the grid's backbone (random weights here)
        for mode in grid.eval.dense.modes:
            cli = runner.build(runner.dense_config(None, 1, mode), tmp_path / f"dense_{mode}")
            assert type(cli.model.backbone).__name__ == grid.backbone_family
            assert cli.model.freeze_backbone == (mode == "frozen")
    assert SUPERVISED in built or grid.supervised is None
    assert any(r["kind"] == "method" for r in rows if r["name"] in built), f"{path.name}: no method row was built"


def test_expand_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVB_X", "/data")
    monkeypatch.delenv("EVB_Y", raising=False)
    assert expand_env("${EVB_X}/a.h5 ${EVB_Y:-runs/b.h5} ${EVB_Y}") == "/data/a.h5 runs/b.h5 "


def test_a_skipped_method_is_a_row_with_its_reason_and_a_bad_skip_is_refused(tmp_path: Path) -> None:
    from evssl.benchmark.config import GridConfigError

    grid = load_grid(REPO / "experiments" / "benchmark" / "smoke.yaml", tmp_path / "out")
    grid.methods[0].skip = "costs an hour"
    row = next(r for r in BenchmarkRunner(grid, progress=False).plan() if r["name"] == grid.methods[0].name)
    assert row["reason"] == "skipped: costs an hour"
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "experiments" / "benchmark" / "smoke.yaml").read_text().replace(
        "  - name: brave", "  - name: brave\n    skip: 3", 1))  # fmt: skip
    with pytest.raises(GridConfigError, match=r"bad\.yaml: methods\[\d\]\.skip must be a non-empty reason"):
        load_grid(bad, tmp_path / "out2")
