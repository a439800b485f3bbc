"""The ``evssl benchmark`` command: run (or re-read) a grid, write its tables and charts, print the table.

Outputs under the grid's ``out_dir`` (default ``runs/benchmark/<name>``):

* ``results.md`` / ``results.csv`` — per backbone: linear-probe and kNN accuracy, mean ± std over seeds, paired
  difference to random init ± standard error; rows that could not run carry the reason; rows with an online VO
  stage (meta-VO) also get a VO table (t_rel, ATE, RPE, depth abs-rel with and without online adaptation, and the
  paired difference between the two); with ``eval.dense`` a dense-head table (frozen and fine-tuned test metric,
  paired difference to random init);
* ``chart.png`` — the same as bars with ± std error bars;
* ``curves.md`` / ``curves.csv`` / ``curves.png`` — linear-probe accuracy at every pre-training checkpoint
  (random init = step 0, supervised from scratch = the ceiling);
* ``records.csv`` — every (backbone, seed, step) probe result; ``runs/<name>/seed<k>/`` — the cached stage results
  and, in ``<key>/`` (the hash of the run's config), the per-run CSV log (``metrics.csv``), resolved fit config and
  exported backbones.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["comparison_lines", "main", "write_outputs"]


def write_outputs(grid: Any, result: dict[str, Any]) -> dict[str, Path]:
    """Tables, CSVs and charts of a finished grid; returns their paths."""
    from evssl.benchmark.chart import bar_chart, curve_chart
    from evssl.benchmark.report import (
        curve_rows,
        curves_markdown,
        dense_markdown,
        summary_rows,
        to_csv,
        to_markdown,
        vo_markdown,
    )

    out = Path(grid.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_rows(result["rows"], result["records"])
    curves = curve_rows(result["rows"], result["records"])
    source = grid.source if grid.source != "synthetic" else f"synthetic {grid.data.get('synthetic_size', 'tiny')}"
    title = (f"Benchmark `{grid.name}` — {source}, backbone {grid.backbone_family}, {grid.steps} pre-training "
             f"steps, seeds {grid.seeds}; {grid.eval.split} top-1 per recording "
             f"({grid.eval.windows} windows averaged)")  # fmt: skip
    paths = {
        "results.md": out / "results.md",
        "results.csv": out / "results.csv",
        "curves.md": out / "curves.md",
        "curves.csv": out / "curves.csv",
        "records.csv": out / "records.csv",
        "chart.png": out / "chart.png",
        "curves.png": out / "curves.png",
    }
    md = to_markdown(summary, title)
    if grid.eval.dense is not None and (dense := dense_markdown(summary, grid.eval.dense.metric)):
        md += (f"\nDense head ({grid.eval.dense.config}, {grid.eval.dense.steps} steps) on every final export, test "
               f"{grid.eval.dense.metric} (%):\n\n" + dense)  # fmt: skip
    vo = vo_markdown(summary)
    if vo:
        md += "\nOnline VO after the last pre-training step (mean ± std over seeds; lower is better):\n\n" + vo
    curve_md = curves_markdown(curves)
    for name, text in (("results.md", md), ("curves.md", curve_md)):
        tmp = paths[name].with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, paths[name])
    to_csv(summary, paths["results.csv"])
    to_csv(curves, paths["curves.csv"])
    to_csv(result["records"], paths["records.csv"])
    bar_chart(summary, paths["chart.png"], f"{grid.name}: test accuracy (%), mean ± std over seeds")
    curve_chart(curves, paths["curves.png"], f"{grid.name}: linear probe (%) vs pre-training steps")
    return paths


def comparison_lines(result: dict[str, Any]) -> list[str]:
    """``pre-trained X vs random init Y vs supervised Z`` (linear probe, mean over seeds) per pre-training method."""
    from evssl.benchmark.report import summary_rows

    summary = {s["name"]: s for s in summary_rows(result["rows"], result["records"])}
    rand, sup = summary.get("random"), summary.get("supervised")

    def pct(s: dict[str, Any] | None) -> str:
        return "n/a" if s is None or s["reason"] or not s["seeds"] else f"{100 * s['linear_mean']:.1f}%"

    lines = []
    for row in result["rows"]:
        s = summary[row["name"]]
        if row["kind"] != "method" or s["reason"] or not s["seeds"]:
            continue
        wins = sum(a > b for a, b in zip(s["linear_per_seed"], rand["linear_per_seed"])) if rand else 0
        lines.append(
            f"linear probe (test): pre-trained {row['label']} {pct(s)} vs random init {pct(rand)} vs supervised "
            f"{pct(sup)}  (pre-trained > random init on {wins}/{len(s['seeds'])} seeds)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``evssl benchmark --config GRID.yaml [--out DIR] [--no-progress]``."""
    parser = argparse.ArgumentParser(
        prog="evssl benchmark",
        description="methods x seeds on one data source, one backbone, one step budget; linear probe + kNN of every "
        "exported backbone beside random init and supervised from scratch (cached, resumable)",
    )
    parser.add_argument("--config", required=True, type=Path, help="benchmark grid YAML (experiments/benchmark/)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the grid's out_dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the grid's seeds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    import torch

    from evssl.benchmark.config import GridConfigError, load_grid
    from evssl.benchmark.runner import BenchmarkRunner

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        grid = load_grid(args.config, args.out)
        if args.seeds:
            grid.seeds = list(args.seeds)
    except GridConfigError as err:
        parser.exit(2, f"evssl benchmark: error: {err}\n")
    try:
        result = BenchmarkRunner(grid, progress=not args.no_progress).run()
    except FileNotFoundError as err:
        parser.exit(
            2, f"evssl benchmark: error: {err} (config {args.config}; convert the data first, see its header)\n"
        )
    paths = write_outputs(grid, result)
    print(paths["results.md"].read_text())
    print(paths["curves.md"].read_text())
    for line in comparison_lines(result):
        print(line)
    print(f"({result['wall_s']:.0f} s; tables {paths['results.md']} {paths['results.csv']}; chart "
          f"{paths['chart.png']}; learning curves {paths['curves.png']})")  # fmt: skip
    sys.stdout.flush()
    return 0
