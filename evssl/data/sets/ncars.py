"""N-Cars (Sironi et al., CVPR 2018, "HATS"): 100 ms ATIS crops of cars and background, official train/test split.

Layout (the official release; ``n-cars_`` prefixes optional, ``car`` accepted for ``cars``)::

    <root>/n-cars_train/{cars,background}/obj_NNNNNN_td.dat
    <root>/n-cars_test/{cars,background}/obj_NNNNNN_td.dat

Each ``.dat`` is a Prophesee "Event2D" v2 file (:func:`evssl.events.io.dat.read_dat`). Classes: ``background`` = 0,
``car`` = 1 (the order of the labelled subset's ``labels.txt``). Sensor: every sample is a crop of at most 120x100
(W x H) of the ATIS array, so the store uses ``sensor_size = (100, 120)`` (an event outside it is an error naming the
file). File names repeat across classes and splits: recordings are named by their path relative to ``root``.

Options: ``splits`` (which of ``train``/``test`` to convert), ``max_per_class`` (that many files per split and
class, spread evenly over the sorted names, for quick stores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evssl.data.sets._common import DatasetError, FileItem, PathLike, evenly_spaced, write_file_items, writer_kwargs
from evssl.events.io.dat import read_dat

CLASSES = ("background", "car")
SENSOR_SIZE = (100, 120)
_CLASS_DIRS = {"background": ("background",), "car": ("cars", "car")}


def _split_dir(root: Path, split: str) -> Path:
    for name in (f"n-cars_{split}", split):
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{root}: missing folder for split {split!r} (looked for n-cars_{split}/ and {split}/)")


def scan_ncars(root: PathLike, splits: tuple[str, ...] = ("train", "test"), max_per_class: int | None = None):
    """The :class:`FileItem` list of an N-Cars tree."""
    root = Path(root)
    items: list[FileItem] = []
    for split in splits:
        sdir = _split_dir(root, split)
        for label, cls in enumerate(CLASSES):
            cdir = next((sdir / d for d in _CLASS_DIRS[cls] if (sdir / d).is_dir()), None)
            if cdir is None:
                raise DatasetError(f"{sdir}: missing class folder {'/'.join(_CLASS_DIRS[cls])}/")
            files = sorted(cdir.glob("*.dat"))
            if not files:
                raise DatasetError(f"{cdir}: no .dat files")
            for p in evenly_spaced(files, max_per_class):
                items.append(FileItem(p, p.relative_to(root).as_posix(), label, split))
    return items


def convert_ncars(
    root: PathLike,
    out: PathLike,
    *,
    splits: tuple[str, ...] = ("train", "test"),
    max_per_class: int | None = None,
    sensor_size: tuple[int, int] = SENSOR_SIZE,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert an N-Cars tree into an evssl store (see the module docstring)."""
    items = scan_ncars(root, tuple(splits), max_per_class)
    size = tuple(int(v) for v in sensor_size)
    return write_file_items(
        out,
        items,
        CLASSES,
        lambda p: read_dat(p, sensor_size=size),
        attrs={"dataset": "ncars", "sensor_size": list(size), "max_per_class": max_per_class},
        progress=progress,
        **writer_kwargs(options),
    )
