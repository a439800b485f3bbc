"""N-ImageNet (Kim et al., ICCV 2021): one ``.npz`` per ImageNet image, 1000 classes, the official train/val split.

Layout (``82magnolia/n_imagenet`` README)::

    <root>/extracted_train/<wnid>/<wnid>_<n>.npz
    <root>/extracted_val/<wnid>/ILSVRC2012_val_XXXXXXXX.npz

or the official list files (one path per line, absolute or relative to the list file) given as ``train_list`` /
``val_list``. Each ``.npz`` holds ``event_data``, a structured array with fields x, y, t (µs, integer), p (bool / 0-1),
or the uncompressed keys ``x_pos, y_pos, timestamp, polarity`` (:func:`evssl.events.io.npz.read_npz`). Sensor
480x640 (H x W).

Class index, as the official loader (``real_cnn_model/data/imagenet.py``: ``labels = sorted(label_map[:1000])``,
``label = label_map[path.parent.stem]``): the **sorted** wnids, from ``label_map`` (a text file whose second token per
line is the wnid; first 1000 lines) or else the sorted folder names of the train split. The label of a file is the
index of its parent folder's wnid. Splits: ``train`` and ``val`` (the official validation set is the usual test
set; N-ImageNet has no separate test split).

Mini subsets: ``num_classes=K`` keeps the first K sorted wnids, as the official ``trim_class_count`` option (the
100-class setting); ``classes_file`` keeps the wnids listed in a file (one per line, e.g. a published mini-N-ImageNet
class list) in sorted order; ``max_per_class`` caps the files per class and split (spread evenly over sorted names).
``val_folder`` reads another validation folder (the N-ImageNet robustness variants, e.g. a brightness or motion
variant's extracted folder) under the same class index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evssl.data.sets._common import (
    DatasetError,
    FileItem,
    PathLike,
    evenly_spaced,
    need_dir,
    need_file,
    write_file_items,
    writer_kwargs,
)
from evssl.events.io.npz import NIMAGENET_SIZE, read_npz

SPLIT_DIRS = {"train": "extracted_train", "val": "extracted_val"}


def _list_paths(list_file: Path) -> list[Path]:
    need_file(list_file, "N-ImageNet list file")
    out = []
    for lineno, raw in enumerate(list_file.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line.split()[0])
        p = p if p.is_absolute() else list_file.parent / p
        if not p.is_file():
            raise DatasetError(f"{list_file}:{lineno}: file {p} not found")
        out.append(p)
    return out


def read_label_map(path: PathLike) -> list[str]:
    """The sorted wnids of an official label map (second token of each of the first 1000 lines)."""
    path = need_file(Path(path), "N-ImageNet label map")
    wnids = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DatasetError(f"{path}:{lineno}: expected '<index> <wnid> ...', got {raw!r}")
        wnids.append(parts[1])
    return sorted(wnids[:1000])


def scan_nimagenet(
    root: PathLike,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    train_list: PathLike | None = None,
    val_list: PathLike | None = None,
    label_map: PathLike | None = None,
    num_classes: int | None = None,
    classes_file: PathLike | None = None,
    max_per_class: int | None = None,
    val_folder: str = "extracted_val",
) -> tuple[list[FileItem], list[str]]:
    """The :class:`FileItem` list and the class names (sorted wnids) of an N-ImageNet tree."""
    root = Path(root)
    lists = {"train": train_list, "val": val_list}
    files: dict[str, list[Path]] = {}
    for split in splits:
        if split not in SPLIT_DIRS:
            raise ValueError(f"N-ImageNet splits are {sorted(SPLIT_DIRS)}, got {split!r}")
        if lists[split] is not None:
            files[split] = _list_paths(Path(lists[split]))  # type: ignore[arg-type]
        else:
            folder = val_folder if split == "val" else SPLIT_DIRS[split]
            d = need_dir(root / folder, f"N-ImageNet {split} split")
            files[split] = sorted(d.glob("*/*.npz"))
        if not files[split]:
            raise DatasetError(f"{root}: no .npz files for split {split!r}")
    if label_map is not None:
        wnids = read_label_map(label_map)
    else:
        base = "train" if "train" in files else splits[0]
        wnids = sorted({p.parent.name for p in files[base]})
    if classes_file is not None:
        keep = {
            ln.split()[0] for ln in need_file(Path(classes_file), "class list").read_text().splitlines() if ln.strip()
        }
        unknown = sorted(keep - set(wnids))
        if unknown:
            raise DatasetError(f"{classes_file}: wnid {unknown[0]!r} is not a class of the data set")
        wnids = [w for w in wnids if w in keep]
    if num_classes is not None:
        wnids = wnids[: int(num_classes)]
    index = {w: i for i, w in enumerate(wnids)}
    items: list[FileItem] = []
    for split, paths in files.items():
        by_class: dict[str, list[Path]] = {}
        for p in paths:
            by_class.setdefault(p.parent.name, []).append(p)
        if label_map is None and classes_file is None and num_classes is None:
            extra = sorted(set(by_class) - set(index))
            if extra:
                raise DatasetError(
                    f"{paths[0].parent.parent}: class folder {extra[0]!r} ({split}) is not in the train classes"
                )
        for wnid in sorted(by_class):
            if wnid not in index:
                continue
            for p in evenly_spaced(sorted(by_class[wnid]), max_per_class):
                try:
                    name = p.relative_to(root).as_posix()
                except ValueError:
                    name = f"{val_folder if split == 'val' else SPLIT_DIRS[split]}/{wnid}/{p.name}"
                items.append(FileItem(p, name, index[wnid], split))
    return items, wnids


def convert_nimagenet(
    root: PathLike,
    out: PathLike,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    train_list: PathLike | None = None,
    val_list: PathLike | None = None,
    label_map: PathLike | None = None,
    num_classes: int | None = None,
    classes_file: PathLike | None = None,
    max_per_class: int | None = None,
    val_folder: str = "extracted_val",
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert N-ImageNet (or a mini subset) into an evssl store (see the module docstring)."""
    items, classes = scan_nimagenet(
        root,
        splits=tuple(splits),
        train_list=train_list,
        val_list=val_list,
        label_map=label_map,
        num_classes=num_classes,
        classes_file=classes_file,
        max_per_class=max_per_class,
        val_folder=val_folder,
    )
    attrs = {"dataset": "nimagenet", "sensor_size": list(NIMAGENET_SIZE), "num_classes": len(classes)}
    return write_file_items(
        out,
        items,
        classes,
        lambda p: read_npz(p, sensor_size=NIMAGENET_SIZE, time_unit="us"),
        attrs=attrs,
        progress=progress,
        **writer_kwargs(options),
    )
