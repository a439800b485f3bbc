"""N-Caltech101 (Orchard et al., 2015): one ATIS ``.bin`` (40-bit records) per Caltech101 image, a folder per class.

Layout::

    <root>/<Class>/image_NNNN.bin        (101 classes + BACKGROUND_Google; an extra ``Caltech101/`` level is accepted)

Classes are the sorted folder names (label = index). ``BACKGROUND_Google`` is left out unless
``include_background`` (the 101-class benchmark; its "clutter" images have no object).

N-Caltech101 ships no split. The split here is the usual fixed one by seed, made explicit: within each class the
sorted files are permuted with ``np.random.default_rng([seed, label])`` and cut into ``fractions`` (default
train/val/test = 0.8/0.1/0.1, stratified; :func:`~evssl.data.sets._common.stratified_split`). Sensor: the samples
are crops of at most ~240x180 (W x H) of the ATIS array, so the store uses ``sensor_size = (180, 240)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evssl.data.sets._common import (
    DatasetError,
    FileItem,
    PathLike,
    evenly_spaced,
    stratified_split,
    write_file_items,
    writer_kwargs,
)
from evssl.events.io.bin40 import read_bin40

BACKGROUND = "BACKGROUND_Google"
SENSOR_SIZE = (180, 240)
SPLITS = ("train", "val", "test")


def scan_ncaltech101(
    root: PathLike,
    *,
    include_background: bool = False,
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    max_per_class: int | None = None,
) -> tuple[list[FileItem], list[str]]:
    """The :class:`FileItem` list (with seeded splits) and the class names of an N-Caltech101 tree."""
    root = Path(root)
    if (root / "Caltech101").is_dir():
        root = root / "Caltech101"
    if not root.is_dir():
        raise DatasetError(f"{root}: missing N-Caltech101 folder")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    dirs = [d for d in dirs if include_background or d.name != BACKGROUND]
    if not dirs:
        raise DatasetError(f"{root}: no class folders")
    classes = [d.name for d in dirs]
    files, labels = [], []
    for label, d in enumerate(dirs):
        found = sorted(d.glob("*.bin"))
        if not found:
            raise DatasetError(f"{d}: class folder without .bin files")
        found = evenly_spaced(found, max_per_class)
        files += found
        labels += [label] * len(found)
    names = SPLITS[: len(fractions)] if len(fractions) <= 3 else tuple(f"split{i}" for i in range(len(fractions)))
    splits = stratified_split(np.asarray(labels), fractions, names, seed)
    items = [FileItem(p, p.relative_to(root).as_posix(), lab, str(s)) for p, lab, s in zip(files, labels, splits)]
    return items, classes


def convert_ncaltech101(
    root: PathLike,
    out: PathLike,
    *,
    include_background: bool = False,
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    max_per_class: int | None = None,
    sensor_size: tuple[int, int] = SENSOR_SIZE,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert an N-Caltech101 tree into an evssl store (see the module docstring)."""
    items, classes = scan_ncaltech101(
        root, include_background=include_background, fractions=tuple(fractions), seed=seed, max_per_class=max_per_class
    )
    size = tuple(int(v) for v in sensor_size)
    attrs = {
        "dataset": "ncaltech101",
        "sensor_size": list(size),
        "split_rule": f"per class, default_rng([{seed}, label]) permutation cut at fractions {list(fractions)}",
    }
    return write_file_items(
        out,
        items,
        classes,
        lambda p: read_bin40(p, sensor_size=size),
        attrs=attrs,
        progress=progress,
        **writer_kwargs(options),
    )
