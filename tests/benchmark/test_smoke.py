"""`evssl benchmark` end to end on the smoke grid (console script), then cache / resume in-process."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from evssl.benchmark.config import GridConfigError, load_grid
from evssl.benchmark.main import main
from evssl.benchmark.registry import METHODS, MethodEntry, unavailable_reason
from evssl.benchmark.runner import BenchmarkRunner
from tests.helpers import REPO
from tests.test_cli import run_evssl

SMOKE = REPO / "experiments" / "benchmark" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "smoke"
    proc = run_evssl(["benchmark", "--config", str(SMOKE), "--out", str(out)], cwd=out.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "it]" in proc.stderr or "stage" in proc.stderr  # the tqdm bar with its ETA went to stderr
    return out


def test_smoke_table(smoke_out: Path) -> None:
    md = (smoke_out / "results.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"random init", "BraVe", "supervised", "ECDP"} <= set(rows)
    assert "not run: needs a ViT" in rows["ECDP"]
    for name in ("random init", "BraVe", "supervised"):
        acc = re.findall(r"(\d+\.\d) ± (\d+\.\d)", rows[name])
        assert acc and all(0.0 <= float(a) <= 100.0 for a, _ in acc), rows[name]
    assert re.search(r"\| [+-]\d+\.\d ± \d+\.\d \|", rows["BraVe"])  # paired difference to random init
    with open(smoke_out / "results.csv") as f:
        table = {r["name"]: r for r in csv.DictReader(f)}
    assert table["ecdp"]["reason"] and not table["brave"]["reason"]
    for name in ("random", "brave", "supervised"):
        assert 0.0 <= float(table[name]["linear_mean"]) <= 1.0


def _work_dir(run_dir: Path) -> Path:
    """The folder of the run's current key (``pretrain.json`` names it), where its logs and exports are."""
    pre = json.loads((run_dir / "pretrain.json").read_text())
    work = run_dir / pre["key"]
    assert all(Path(p).parent == work for p in pre["exports"].values())
    return work


def test_smoke_curves_charts_and_logs(smoke_out: Path) -> None:
    with open(smoke_out / "curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert sorted(int(c["step"]) for c in curves if c["name"] == "brave") == [3, 6, 9, 12]
    assert [int(c["step"]) for c in curves if c["name"] == "random"] == [0]
    for png in ("chart.png", "curves.png"):
        with Image.open(smoke_out / png) as img:
            assert img.format == "PNG" and img.size[0] >= 400
    work = _work_dir(smoke_out / "runs" / "brave" / "seed0")
    assert "train/loss" in (work / "metrics.csv").read_text().splitlines()[0]
    assert (work / "backbone_step12.json").is_file()


def test_finished_grid_reprints_from_cache_and_resumes_a_stage(smoke_out: Path, monkeypatch, capsys) -> None:
    def refuse(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    monkeypatch.setattr(BenchmarkRunner, "_train", refuse)
    monkeypatch.setattr(BenchmarkRunner, "_random_export", refuse)
    probe = BenchmarkRunner._probe
    monkeypatch.setattr(BenchmarkRunner, "_probe", refuse)
    before = (smoke_out / "results.md").read_text()
    assert main(["--config", str(SMOKE), "--out", str(smoke_out), "--no-progress"]) == 0
    assert (smoke_out / "results.md").read_text() == before
    assert "BraVe" in capsys.readouterr().out
    # an interrupted benchmark: one probe stage missing -> only that stage runs again
    (smoke_out / "runs" / "brave" / "seed0" / "probe_step6.json").unlink()
    calls = []
    monkeypatch.setattr(BenchmarkRunner, "_probe", lambda self, p: calls.append(p) or probe(self, p))
    assert main(["--config", str(SMOKE), "--out", str(smoke_out), "--no-progress"]) == 0
    assert len(calls) == 1 and calls[0].endswith("backbone_step6.pt")
    assert (smoke_out / "results.md").read_text() == before


def test_a_changed_config_trains_into_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    """A re-run under a changed config (even one that only spells a path differently) must not overwrite the
    files of the earlier run: each key trains into its own folder, and the stage files point at the current one."""

    def fake_train(self, cfg, run_dir, steps, export_steps, with_zero, pretraining=True, save_model=False,
                   test=False):  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.csv").write_text(json.dumps(cfg, sort_keys=True, default=str))
        exports = {}
        for s in export_steps:
            (run_dir / f"backbone_step{s}.pt").write_text(str(s))
            exports[str(s)] = str(run_dir / f"backbone_step{s}.pt")
        return {"wall_s": 0.0, "exports": exports, "global_step": steps}

    probed: list[str] = []
    monkeypatch.setattr(BenchmarkRunner, "_train", fake_train)
    monkeypatch.setattr(BenchmarkRunner, "_probe", lambda self, p: probed.append(p) or {"linear": 0.5, "knn": 0.5})
    grid = load_grid(SMOKE, tmp_path / "out")
    BenchmarkRunner(grid, progress=False, keep_going=False).run()
    run = tmp_path / "out" / "runs" / "brave" / "seed0"
    first = json.loads((run / "pretrain.json").read_text())["key"]
    log = (run / first / "metrics.csv").read_text()
    grid.methods[0].overrides["trainer.log_every_n_steps"] = 3  # a different config -> a different key
    probed.clear()
    BenchmarkRunner(grid, progress=False, keep_going=False).run()
    second = json.loads((run / "pretrain.json").read_text())["key"]
    assert second != first
    assert (run / first / "metrics.csv").read_text() == log  # the earlier run's files are intact
    assert sorted(p.name for p in (run / first).glob("backbone_step*.pt")) == sorted(
        p.name for p in (run / second).glob("backbone_step*.pt")
    )
    assert len(probed) == 4 and all(Path(p).parent == run / second for p in probed)  # brave's 4 points re-probed


def test_grid_errors_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "g.yaml"
    bad.write_text("seeds: [0]\nmethods: [brave]\nbackbone: {class_path: x}\nrepresentation: {class_path: y}\n")
    with pytest.raises(GridConfigError, match=r"g\.yaml: missing field 'pretrain'"):
        load_grid(bad)
    bad.write_text(SMOKE.read_text().replace("steps: 12", "steps: 0"))
    with pytest.raises(GridConfigError, match=r"pretrain\.steps"):
        load_grid(bad)


def test_registry_reasons() -> None:
    ghost = MethodEntry("ghost", "evssl.methods.not_here", "Ghost", "x.yaml")
    assert "not on this branch" in unavailable_reason(ghost, "ResNet", {"frames"})
    assert "no frames" in unavailable_reason(METHODS["ecdp"], "VisionTransformer", set())
    assert unavailable_reason(METHODS["ecdp"], "VisionTransformer", {"frames"}) is None
    assert unavailable_reason(METHODS["brave"], "ResNet", set()) is None
    # meta-VO: sequences with frames and poses, a ResNet encoder
    assert unavailable_reason(METHODS["meta_vo"], "ResNet", {"labels"}) == "the data source has no frames, poses"
    assert "evssl ResNet" in unavailable_reason(METHODS["meta_vo"], "VisionTransformer", {"frames", "poses"})
    assert unavailable_reason(METHODS["meta_vo"], "ResNet", {"frames", "poses", "labels"}) is None


def test_meta_vo_row_reports_online_vo_metrics(tmp_path: Path) -> None:
    """meta-VO pre-trains on the tiny store's sequences for the grid's budget, is probed like every row, then runs
    its online loop on the test sequences with and without adaptation; the VO table has finite metrics."""
    import math

    import yaml

    from evssl.benchmark.main import write_outputs

    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name="vo", supervised=False, pretrain={"steps": 2, "checkpoints": [1, 2]})
    raw["methods"] = [{"name": "meta_vo", "overrides": {
        "data.init_args.test_source": "synthetic:tiny:default:0",  # the grid's store (no second store to simulate)
        "data.init_args.max_test_windows": 3, "data.init_args.batch_size": 1,
        "data.init_args.snippets_per_sequence": 1}}]  # fmt: skip
    path = tmp_path / "vo.yaml"
    path.write_text(yaml.safe_dump(raw))
    grid = load_grid(path, tmp_path / "out")
    result = BenchmarkRunner(grid, progress=False, keep_going=False).run()
    vo = [r for r in result["records"] if r.get("task") == "vo"]
    assert [(r["name"], r["step"]) for r in vo] == [("meta_vo", 2)]
    assert vo[0]["vo_windows"] == 4 * 3  # the tiny store's 4 sequences x max_test_windows
    for key in ("vo_ate", "vo_rpe_trans", "vo_abs_rel", "vo_noadapt_ate", "vo_noadapt_rpe_trans", "vo_noadapt_abs_rel"):
        assert math.isfinite(vo[0][key]) and vo[0][key] >= 0.0, key
    assert vo[0]["vo_photometric"] != vo[0]["vo_noadapt_photometric"]  # adaptation changed the predictions
    probes = [r for r in result["records"] if r["name"] == "meta_vo" and r["task"] == "probe"]
    assert sorted(r["step"] for r in probes) == [1, 2]  # its backbone is probed like every other row
    md = write_outputs(grid, result)["results.md"].read_text()
    vo_rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| meta-VO,")}
    assert set(vo_rows) == {"meta-VO, online adaptation", "meta-VO, no adaptation",
                            "meta-VO, Δ adaptation − none (± SE)"}  # fmt: skip
    assert re.search(r"\| \d+\.\d+(e-\d+)? ± 0 \|", vo_rows["meta-VO, online adaptation"])
    with open(tmp_path / "out" / "results.csv") as f:
        table = {r["name"]: r for r in csv.DictReader(f)}
    assert math.isfinite(float(table["meta_vo"]["vo_ate_mean"])) and table["random"]["vo_ate_mean"] == ""


def test_evdistill_row_trains_its_teacher_first_and_distils_from_it(tmp_path: Path, monkeypatch) -> None:
    """An EvDistill row trains the frame teacher (registry TeacherStage) per seed, tests it, and pre-trains with
    that teacher loaded: the method's frozen teacher holds the saved teacher's weights, not a random network's.
    A second run re-reads the teacher stage from its cache; a changed teacher budget retrains it and re-keys the
    method."""
    import torch
    import yaml

    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name="kd", supervised=False, pretrain={"steps": 2, "checkpoints": [1, 2]})
    raw["methods"] = [{"name": "evdistill", "teacher_steps": 3, "overrides": {"data.init_args.batch_size": 4}}]
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(raw))
    grid = load_grid(path, tmp_path / "out")
    runner = BenchmarkRunner(grid, progress=False, keep_going=False)
    loaded: list[dict[str, torch.Tensor]] = []
    real_train = BenchmarkRunner._train

    def spy_train(self, cfg, run_dir, steps, *args, **kwargs):
        out = real_train(self, cfg, run_dir, steps, *args, **kwargs)
        ckpt = cfg["model"]["init_args"].get("teacher_checkpoint")
        if cfg["model"]["class_path"].endswith("EvDistill"):
            assert ckpt is not None  # the benchmark never distils from a random teacher
            loaded.append({"path": ckpt, "steps": steps})
        return out

    monkeypatch.setattr(BenchmarkRunner, "_train", spy_train)
    result = runner.run()
    run = tmp_path / "out" / "runs" / "evdistill" / "seed0"
    teacher = json.loads((run / "teacher.json").read_text())
    assert teacher["global_step"] == 3 and 0.0 <= teacher["test"]["test/top1"] <= 1.0
    assert loaded == [{"path": str(Path(teacher["model"]).resolve()), "steps": 2}]
    saved = torch.load(teacher["model"], map_location="cpu")
    # the method built from the resolved config loads exactly those weights into its teacher
    cfg = runner.row_config(result["rows"][1], 0)
    cfg["model"]["init_args"]["teacher_checkpoint"] = teacher["model"]
    model = BenchmarkRunner.build(cfg, tmp_path / "check").model
    model.setup("fit")  # where EvDistill loads its teacher_checkpoint
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, saved[f"teacher.{k}"]), k
    assert sorted(r["step"] for r in result["records"] if r["name"] == "evdistill") == [1, 2]
    first_key = json.loads((run / "pretrain.json").read_text())["key"]

    loaded.clear()  # cached: neither the teacher nor the method trains again
    BenchmarkRunner(grid, progress=False, keep_going=False).run()
    assert loaded == [] and json.loads((run / "teacher.json").read_text())["key"] == teacher["key"]

    grid.methods[0].teacher_steps = 4  # another teacher -> a retrained teacher and a re-keyed method
    BenchmarkRunner(grid, progress=False, keep_going=False).run()
    assert json.loads((run / "teacher.json").read_text())["global_step"] == 4
    assert len(loaded) == 1 and json.loads((run / "pretrain.json").read_text())["key"] != first_key


def test_teacher_links_copy_the_method_network_and_drop_what_it_leaves_out() -> None:
    from evssl.benchmark.registry import TeacherStage
    from evssl.benchmark.teacher import link_teacher_config

    stage = TeacherStage("t.yaml", links=(("model.a", "model.b"), ("data.crop", "data.crop")), fixed=(("x.y", 3),))
    teacher = {"model": {"b": 1, "c": 2}, "data": {"crop": [8, 8]}}
    method = {"model": {"a": {"width": 4}}}
    out = link_teacher_config(teacher, stage, method, {"model.c": 5})
    assert out == {"model": {"b": {"width": 4}, "c": 5}, "data": {}, "x": {"y": 3}}
    assert teacher == {"model": {"b": 1, "c": 2}, "data": {"crop": [8, 8]}}  # inputs untouched
    out["model"]["b"]["width"] = 9
    assert method["model"]["a"]["width"] == 4  # a deep copy


def test_val_split_grid_selects_on_a_held_out_part_of_train(tmp_path: Path) -> None:
    """eval.split 'val': the probe is fitted on the train split minus the automatic validation part and scored on
    that part (never the test split); every training run of the grid holds the same part out."""
    import yaml

    raw = yaml.safe_load(SMOKE.read_text())
    raw["data"].update(val_split="holdout", val_fraction=0.25)  # a split the store lacks: the automatic part
    raw["eval"]["split"] = "val"
    raw["methods"] = [{"name": "brave", "id": "brave_a"}, {"name": "brave", "id": "brave_b", "label": "BraVe b"}]
    path = tmp_path / "sel.yaml"
    path.write_text(yaml.safe_dump(raw))
    runner = BenchmarkRunner(load_grid(path, tmp_path / "out"), progress=False)
    train, held, _ = runner.eval_batches()
    n_train, n_held = (sum(len(b["label"]) for b in part) for part in (train, held))
    dm = runner._data_module(None)
    assert n_held == len(dm.split_indices("holdout")) > 0 and n_train == len(dm.split_indices("train"))
    plain = BenchmarkRunner(load_grid(SMOKE, tmp_path / "o2"), progress=False)
    all_train = plain._data_module(None).split_indices("train")
    assert n_train + n_held == len(all_train)  # the held-out part comes out of the train split
    assert set(dm.split_indices("holdout")) <= set(all_train) and abs(n_held - 0.25 * len(all_train)) <= 10
    rows = runner.plan()
    assert [r["name"] for r in rows if r["kind"] == "method"] == ["brave_a", "brave_b"]
    cfg = runner.row_config(rows[1], 0)
    assert cfg["data"]["init_args"]["val_fraction"] == 0.25 and cfg["data"]["init_args"]["val_split"] == "holdout"
    raw["methods"] = ["brave", "brave"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(GridConfigError, match=r"row 'brave' appears twice"):
        load_grid(path)
    raw["methods"], raw["eval"]["split"] = ["brave"], "train"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(GridConfigError, match=r"eval\.split"):
        load_grid(path)
