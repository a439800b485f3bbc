"""``evssl benchmark``: every method on one data source, one backbone family, one budget, one probe protocol.

* :mod:`~evssl.benchmark.config` — the grid YAML (``experiments/benchmark/*.yaml``);
* :mod:`~evssl.benchmark.registry` — the methods a grid can name, and why one cannot run on a grid;
* :mod:`~evssl.benchmark.runner` — pre-training, export, probing, the per-(method, seed, stage) cache;
* :mod:`~evssl.benchmark.evaluate` — linear probe (BN re-estimated, L-BFGS) and weighted kNN of a frozen backbone;
* :mod:`~evssl.benchmark.report` / :mod:`~evssl.benchmark.chart` — Markdown/CSV tables and Pillow PNG charts.
"""

from __future__ import annotations

__all__ = ["main_benchmark"]


def main_benchmark(argv: list[str] | None = None) -> int:
    """``evssl benchmark --config experiments/benchmark/<name>.yaml`` (see :mod:`evssl.benchmark.main`)."""
    from evssl.benchmark.main import main

    return main(argv)
