"""Converters from the downstream data sets' own layouts into evssl stores, one module per data set.

======================  ==========================================================================================
name                    what it converts
======================  ==========================================================================================
``ncars``               N-Cars ``.dat`` train/test, background/car (:mod:`.ncars`)
``ncaltech101``         N-Caltech101 ``.bin`` class folders, seeded stratified split (:mod:`.ncaltech101`)
``nimagenet``           N-ImageNet ``.npz`` train/val, sorted-wnid class index, mini subsets (:mod:`.nimagenet`)
``dsec``                DSEC left events (``events.h5``, ``ms_to_idx``, ``t_offset``, ``rectify_map.h5``) (:mod:`.dsec`)
``dsec_semantic``       DSEC-Semantic 11/19 classes, 440x640 crop, ESS/ECDDP split (:mod:`.dsec`)
``dsec_flow``           DSEC-Flow 16-bit forward-flow PNGs with the valid bit (:mod:`.dsec`)
``mvsec``               MVSEC ``*_data.hdf5`` / ``*_gt.hdf5``: events, APS frames, depth, flow, poses (:mod:`.mvsec`)
``ddd17``               DDD17 segmentation (ESS release: events + EV-SegNet's 6-class masks) (:mod:`.ddd17`)
``tartanair``           E-TartanAir / TartanAir trajectories: events, depth, NED poses (:mod:`.tartanair`)
======================  ==========================================================================================

Python: ``convert_dataset("ncars", root, "ncars.h5", max_per_class=20)``. Command line (``evssl convert``)::

    evssl convert --dataset ncars data/N-Cars --out ncars.h5
    evssl convert --dataset dsec_semantic data/DSEC-Semantic --out dsec_sem.h5 --semantic-classes 19

Pose readers for the VO metrics are in :mod:`evssl.data.sets.poses` (``read_kitti_poses``, ``read_tartanair_poses``).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evssl.data.sets._common import DatasetError, PathLike

__all__ = ["DATASETS", "DatasetError", "add_dataset_arguments", "convert_dataset", "run_dataset_convert"]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered converter: ``module:function`` (imported on use) and a one-line description."""

    target: str
    help: str

    def function(self) -> Callable[..., Path]:
        import importlib

        mod, fn = self.target.split(":")
        return getattr(importlib.import_module(f"evssl.data.sets.{mod}"), fn)


DATASETS: dict[str, DatasetSpec] = {
    "ncars": DatasetSpec("ncars:convert_ncars", "N-Cars .dat, train/test, background/car"),
    "ncaltech101": DatasetSpec("ncaltech101:convert_ncaltech101", "N-Caltech101 .bin class folders, seeded split"),
    "nimagenet": DatasetSpec("nimagenet:convert_nimagenet", "N-ImageNet .npz train/val (mini: --num-classes 100)"),
    "dsec": DatasetSpec("dsec:convert_dsec", "DSEC left events (rectified)"),
    "dsec_semantic": DatasetSpec("dsec:convert_dsec_semantic", "DSEC-Semantic events + 11/19-class labels"),
    "dsec_flow": DatasetSpec("dsec:convert_dsec_flow", "DSEC-Flow events + 16-bit forward flow"),
    "mvsec": DatasetSpec("mvsec:convert_mvsec", "MVSEC events, APS frames, depth, flow, poses"),
    "ddd17": DatasetSpec("ddd17:convert_ddd17", "DDD17 segmentation (ESS release), 6 classes"),
    "tartanair": DatasetSpec("tartanair:convert_tartanair", "E-TartanAir / TartanAir events, depth, poses"),
}
_ALIASES = {"n-cars": "ncars", "n-caltech101": "ncaltech101", "n-imagenet": "nimagenet", "e-tartanair": "tartanair"}


def _spec(name: str) -> tuple[str, DatasetSpec]:
    key = _ALIASES.get(name.lower(), name.lower().replace("-", "_"))
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return key, DATASETS[key]


def convert_dataset(name: str, root: PathLike, out: PathLike, **options: Any) -> Path:
    """Convert data set ``name`` (a key of :data:`DATASETS`) found at ``root`` into the evssl store ``out``.

    ``options`` are the converter's keyword arguments (see its module) plus the store options ``compression``,
    ``clevel`` and ``chunk_events``; an option the converter does not take is an error naming the ones it does.
    """
    key, spec = _spec(name)
    fn = spec.function()
    params = inspect.signature(fn).parameters
    store_opts = {"compression", "clevel", "chunk_events"}
    allowed = {p for p in params if p not in ("root", "out", "options")} | store_opts
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"data set {key!r} takes no option {unknown[0]!r}; it takes: {', '.join(sorted(allowed))}")
    return fn(root, out, **options)


# ------------------------------------------------------------------------------------------------- command line
#: CLI flag -> (converter keyword, argparse kwargs). Only flags the user gives are passed on.
_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--max-per-class": ("max_per_class", {"type": int, "help": "files per split and class (evenly spaced)"}),
    "--dataset-splits": (
        "splits",
        {"nargs": "+", "help": "splits to convert (ncars: train test; nimagenet: train val)"},
    ),
    "--split-seed": ("seed", {"type": int, "help": "ncaltech101: seed of the stratified split (default 0)"}),
    "--split-fractions": ("fractions", {"type": float, "nargs": "+", "help": "ncaltech101: train val test fractions"}),
    "--include-background": (
        "include_background",
        {"action": "store_true", "help": "ncaltech101: keep BACKGROUND_Google"},
    ),
    "--num-classes": ("num_classes", {"type": int, "help": "nimagenet: keep the first K sorted wnids (mini: 100)"}),
    "--classes-file": ("classes_file", {"type": Path, "help": "nimagenet: wnids to keep, one per line"}),
    "--label-map": ("label_map", {"type": Path, "help": "nimagenet: official label map ('<idx> <wnid> ...')"}),
    "--val-folder": ("val_folder", {"help": "nimagenet: validation folder (default extracted_val; variants)"}),
    "--train-list": ("train_list", {"type": Path, "help": "nimagenet: official train list file"}),
    "--val-list": ("val_list", {"type": Path, "help": "nimagenet: official val list file"}),
    "--semantic-classes": ("classes", {"type": int, "choices": (11, 19), "help": "dsec_semantic: 11 or 19"}),
    "--eval-split": ("eval_split", {"help": "dsec_semantic: split name of the evaluation sequences (default test)"}),
    "--label-subsample": ("label_subsample", {"choices": ("ess", "all"), "help": "dsec_semantic: ESS labels or all"}),
    "--no-rectify": ("rectify", {"action": "store_false", "default": None, "help": "dsec*: keep raw coordinates"}),
    "--channel-order": ("channel_order", {"choices": ("rgb", "bgr"), "help": "dsec_flow: PNG channel order"}),
    "--flow-direction": ("direction", {"choices": ("forward", "backward"), "help": "dsec_flow: which flow"}),
    "--camera": ("camera", {"choices": ("left", "right"), "help": "mvsec: DAVIS camera"}),
    "--no-frames": ("frames", {"action": "store_false", "default": None, "help": "mvsec: skip APS frames"}),
    "--dense": ("dense", {"nargs": "*", "help": "mvsec: dense ground truth to keep (depth flow)"}),
    "--depth-key": ("depth_key", {"help": "mvsec: depth_image_rect (default) or depth_image_raw"}),
    "--poses": ("poses", {"help": "mvsec: pose (default), odometry or none"}),
    "--sequences": ("sequences", {"nargs": "+", "help": "mvsec: sequence names to convert"}),
    "--per-chunk": ("per_chunk", {"action": "store_true", "help": "tartanair: one recording per chunk file"}),
    "--pair-list": ("pair_list", {"type": Path, "help": "tartanair: ECDDP's file_path.txt (chunks to keep)"}),
    "--pose-frame": ("pose_frame", {"choices": ("ned", "camera"), "help": "tartanair: pose axes"}),
    "--index-window": ("index_window", {"choices": ("10ms", "50ms", "250ms"), "help": "ddd17: index file"}),
    "--max-events": ("max_events", {"type": int, "help": "long recordings: events per stored part"}),
}


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--dataset NAME`` and the data-set options (a separate group) to ``evssl convert``'s parser.

    With ``--dataset``, the first positional source is the data set's root folder.
    """
    group = parser.add_argument_group("data sets (--dataset NAME ROOT)")
    group.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help=f"convert a data set's own layout: {', '.join(sorted(DATASETS))}",
    )
    for flag, (dest, kw) in _FLAGS.items():
        kw = dict(kw)
        kw.setdefault("default", None)
        group.add_argument(flag, dest=f"ds_{dest}", **kw)
    return parser


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """Converter options from parsed arguments: the data-set flags the user gave, plus the store options."""
    opts: dict[str, Any] = {}
    for _flag, (dest, _kw) in _FLAGS.items():
        value = getattr(args, f"ds_{dest}", None)
        if value is not None:
            opts[dest] = tuple(value) if isinstance(value, list) else value
    if opts.get("poses") == "none":
        opts["poses"] = None
    for key in ("compression", "clevel", "chunk_events"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    if getattr(args, "sensor_size", None) is not None:
        opts["sensor_size"] = tuple(args.sensor_size)
    if not getattr(args, "no_progress", True):
        opts["progress"] = True
    return opts


def run_dataset_convert(args: argparse.Namespace) -> int:
    """``evssl convert --dataset NAME ROOT --out store.h5 [options]``: convert, then print a one-line summary."""
    from evssl.events.io.store import EventStore

    if len(args.sources) != 1:
        print(
            f"evssl convert --dataset {args.dataset}: give exactly one ROOT folder, got {args.sources}", file=sys.stderr
        )
        return 2
    try:
        key, spec = _spec(args.dataset)
    except ValueError as e:
        print(f"evssl convert: {e}", file=sys.stderr)
        return 2
    opts = dataset_options(args)
    fn_params = inspect.signature(spec.function()).parameters
    for k in ("sensor_size", "progress"):
        if k in opts and k not in fn_params:
            opts.pop(k)
            if k == "sensor_size":
                print(f"evssl convert --dataset {key}: --sensor-size ignored (fixed by the data set)", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        out = convert_dataset(key, args.sources[0], args.out, **opts)
    except (DatasetError, TypeError, ValueError) as e:
        print(f"evssl convert --dataset {key}: {e}", file=sys.stderr)
        return 1
    with EventStore(out) as store:
        n = int(store.num_events.sum())
        splits = {s: int((store.splits == s).sum()) for s in sorted(set(store.splits.tolist()))}
        print(
            f"wrote {out}: {key}, {len(store)} recordings {splits}, {n:,} events, {len(store.classes)} classes, "
            f"{Path(out).stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.2f} s"
        )
    return 0
