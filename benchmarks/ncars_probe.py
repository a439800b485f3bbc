"""First evaluation on real recordings: N-Cars linear probe after label-free pre-training (issue 15 §2).

A thin driver over ``evssl benchmark`` (one protocol for every method, :mod:`evssl.benchmark`):

1. convert the labelled N-Cars subset (``$EVSSL_REAL_DATA_LABELLED/ncars-subset``: 1,000 train / 1,000 test real
   ATIS recordings, background / car, crops <= 120x100) with ``evssl convert --dataset ncars`` into
   ``$EVSSL_NCARS_STORE`` (default ``runs/data/ncars.h5``; once, never inside the repository's tracked files);
2. run the grids ``experiments/benchmark/ncars_resnet.yaml`` (BraVe on a tiny ResNet) and
   ``experiments/benchmark/ncars_swin.yaml`` (ECDDP on a tiny Swin): every method pre-trains on the **train** split
   with the store's labels unused, the backbone is exported and loaded back, BatchNorm statistics are re-estimated
   on the train windows, a multinomial logistic regression (and a kNN) is fitted on the **train labels** and scored
   on the **test** split — beside the same backbone at random init probed the same way and the same backbone trained
   supervised from scratch for the same number of steps; ECDP appears with its reason (N-Cars has no frames);
3. print both tables (``results.md`` / ``curves.md`` of each grid, under ``--out``).

    python benchmarks/ncars_probe.py                     # both grids, 3 seeds each (see the grids for budgets)
    python benchmarks/ncars_probe.py --grids ncars_resnet --seeds 0

Results are cached per (method, seed, stage): an interrupted run resumes, a finished one re-prints at once. The
measured tables are in the README ("Real recordings: N-Cars").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("EVSSL_REAL_DATA_LABELLED", REPO / "../shared/real-data-labelled")) / "ncars-subset"
GRIDS = ("ncars_resnet", "ncars_swin")


def ensure_store(root: Path, store: Path) -> Path:
    """Convert the N-Cars subset at ``root`` into ``store`` unless it exists (one-line error if ``root`` is absent)."""
    if store.exists():
        return store
    if not root.is_dir():
        raise SystemExit(f"ncars_probe: N-Cars subset not found at {root} (set EVSSL_REAL_DATA_LABELLED)")
    from evssl.data.sets import convert_dataset

    store.parent.mkdir(parents=True, exist_ok=True)
    return convert_dataset("ncars", root, store)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the ncars-subset folder")
    p.add_argument("--store", type=Path, default=Path(os.environ.get("EVSSL_NCARS_STORE", "runs/data/ncars.h5")))
    p.add_argument("--grids", nargs="+", default=list(GRIDS), choices=GRIDS)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the grids' seeds")
    p.add_argument("--out", type=Path, default=Path("runs/benchmark"), help="one sub-folder per grid")
    args = p.parse_args(argv)
    os.environ["EVSSL_NCARS_STORE"] = str(ensure_store(args.root, args.store))
    from evssl.benchmark.main import main as benchmark

    for grid in args.grids:
        cmd = ["--config", str(REPO / "experiments" / "benchmark" / f"{grid}.yaml"), "--out", str(args.out / grid)]
        if args.seeds:
            cmd += ["--seeds", *map(str, args.seeds)]
        if benchmark(cmd):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
