"""Convert event files (any format :mod:`evssl.events.io` reads) into one evssl HDF5 store.

Inputs, freely mixed:

* single files (label from ``labels``, else -1); recording name = the file name;
* a *labelled folder*: every sub-folder is a class (class names sorted, label = index), every readable file below
  it a recording; a folder without sub-folders gives unlabelled recordings. Recording name = path relative to the
  folder (relative to its parent, i.e. prefixed with the folder name, when several folders are given);
* a *list file* of ``path label`` lines (label = class name or int; ``#`` comments and blank lines skipped; relative
  paths are relative to the list file; a line with only a path is unlabelled).

Paired image embeddings (ECDP's precomputed CLIP features) attach by **file stem**: ``embeddings`` is a ``.npz``
(one array per key), a ``.pt`` dict of tensors (as ECDP's ``extract_clip_feature.py`` writes, one per class folder)
or a folder of such files; a key ``n01440764_10026.JPEG`` pairs with the recording ``.../n01440764_10026.npz``. Every
recording must find one (the error names the first that does not), and all must have the same length.

The store is written atomically (:class:`~evssl.events.io.store.StoreWriter`): if any input fails, the error names
that file and nothing is written at ``out`` (an existing store is left untouched).

Command line (wired as ``evssl convert`` by the CLI, also ``python -m evssl.events.convert``)::

    evssl convert data/N-MNIST/Train --out nmnist_train.h5 --split train
    evssl convert --list files.txt --out store.h5 --format evt3
    evssl convert extracted_val/ --out nimagenet_val.h5 --split val --embeddings clip_val/
    evssl convert --dataset ncars data/N-Cars --out ncars.h5      # a data set's own layout (evssl.data.sets)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evssl.events import io as event_io
from evssl.events.io.store import COMPRESSIONS, DEFAULT_CHUNK_EVENTS, EventStore, StoreWriter

PathLike = str | os.PathLike


class ConvertError(ValueError):
    """A source could not be converted; the message names the file."""


@dataclass(frozen=True)
class _Item:
    path: Path
    name: str
    label: int | str | None  # int index, class name, or None (unlabelled)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _readable(path: Path, pattern: str | None) -> bool:
    """Whether a file found in a folder is a recording: matches ``pattern``, else has a detectable event format."""
    if pattern is not None:
        return path.match(pattern)
    try:
        event_io.detect_format(path)
    except Exception:
        return False
    return True


def _scan_folder(folder: Path, name_root: Path, pattern: str | None) -> tuple[list[_Item], int]:
    """Recordings of one folder (class sub-folders or flat) and the number of skipped files."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(d, d.name) for d in subdirs] if subdirs else [(folder, None)]
    items: list[_Item] = []
    skipped = 0
    for root, cls in groups:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p, folder))
        for p in files:
            if _readable(p, pattern):
                items.append(_Item(p, p.relative_to(name_root).as_posix(), cls))
            else:
                skipped += 1
    return items, skipped


def _parse_label(token: str) -> int | str:
    try:
        return int(token)
    except ValueError:
        return token


def read_list_file(list_file: PathLike) -> list[tuple[Path, int | str | None, str]]:
    """Parse a ``path label`` list file into ``(resolved path, label, name as written)`` entries."""
    list_file = Path(list_file)
    out = []
    base = list_file.parent
    for lineno, raw in enumerate(list_file.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2:
            rel, label = parts[0].strip(), _parse_label(parts[1])
        else:
            rel, label = parts[0], None
        path = Path(rel)
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ConvertError(f"{list_file}:{lineno}: file {rel!r} not found (looked for {path})")
        out.append((path, label, rel))
    return out


def _gather(
    sources: Sequence[PathLike],
    labels: Sequence[int | str] | None,
    list_file: PathLike | None,
    pattern: str | None,
) -> tuple[list[_Item], int]:
    items: list[_Item] = []
    skipped = 0
    srcs = [Path(s) for s in sources]
    folders = [s for s in srcs if s.is_dir()]
    files = [s for s in srcs if not s.is_dir()]
    for s in files:
        if not s.exists():
            raise ConvertError(f"{s}: no such file or folder")
    if labels is not None:
        if folders:
            raise ConvertError("labels= applies to single files only; folders label themselves by sub-folder")
        if len(labels) != len(files):
            raise ConvertError(f"got {len(labels)} labels for {len(files)} files")
    k = 0  # index of the next single file (for its label)
    for s in srcs:
        if s.is_dir():
            got, n_skip = _scan_folder(s, s if len(folders) == 1 else s.parent, pattern)
            items += got
            skipped += n_skip
        else:
            lab = None if labels is None else labels[k]
            items.append(_Item(s, s.name, _parse_label(lab) if isinstance(lab, str) else lab))
            k += 1
    if list_file is not None:
        items += [_Item(p, name, lab) for p, lab, name in read_list_file(list_file)]
    return items, skipped


def _resolve_labels(items: list[_Item], existing: list[str]) -> tuple[list[int], list[str]]:
    """Turn labels into indices. Class names: existing classes keep their index, new ones are sorted and appended."""
    named = [it.label for it in items if isinstance(it.label, str)]
    classes = list(existing)
    if named:
        classes += sorted(set(named) - set(existing))
    index = {c: k for k, c in enumerate(classes)}
    out = []
    for it in items:
        if it.label is None:
            out.append(-1)
        elif isinstance(it.label, str):
            out.append(index[it.label])
        else:
            out.append(int(it.label))
    return out, classes


#: Suffixes stripped from embedding keys before pairing them with recording stems.
_KEY_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".npz", ".npy", ".bin", ".dat", ".raw", ".aedat4", ".h5"}


def _key_stem(key: str) -> str:
    name = Path(str(key)).name
    stem, dot, ext = name.rpartition(".")
    return stem if dot and f".{ext.lower()}" in _KEY_SUFFIXES else name


def _embedding_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            items = {k: z[k] for k in z.files}
    elif path.suffix == ".pt":
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict):
            raise ConvertError(f"{path}: expected a dict of file stem -> embedding tensor, got {type(obj).__name__}")
        items = {str(k): np.asarray(v.float().numpy() if isinstance(v, torch.Tensor) else v) for k, v in obj.items()}
    else:
        raise ConvertError(f"{path}: embeddings must be a .npz or a .pt dict (or a folder of them)")
    out: dict[str, np.ndarray] = {}
    for k, v in items.items():
        v = np.asarray(v, dtype=np.float32)
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 1 or v.size == 0:
            raise ConvertError(f"{path}: embedding {k!r} has shape {v.shape}; expected (E,)")
        if not np.all(np.isfinite(v)):
            raise ConvertError(f"{path}: embedding {k!r} has non-finite values")
        out[_key_stem(k)] = v
    return out


def load_embeddings(path: PathLike) -> dict[str, np.ndarray]:
    """Image embeddings keyed by file stem, from a ``.npz``, a ``.pt`` dict or a folder of them (searched recursively).

    Raises:
        ConvertError: naming the file and key of an embedding that is not a finite (E,) vector, of a stem that two
            files both define, or of an embedding whose length differs from the others.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".npz", ".pt")) if path.is_dir() else [path]
    if not files:
        raise ConvertError(f"{path}: no .npz or .pt embedding files found")
    table: dict[str, np.ndarray] = {}
    origin: dict[str, Path] = {}
    dim: tuple[int, Path] | None = None
    for f in files:
        for k, v in _embedding_file(f).items():
            if k in table:
                raise ConvertError(f"{f}: embedding for stem {k!r} is also defined in {origin[k]}")
            if dim is None:
                dim = (v.size, f)
            elif v.size != dim[0]:
                raise ConvertError(f"{f}: embedding {k!r} has length {v.size}, but {dim[1]} has length {dim[0]}")
            table[k], origin[k] = v, f
    return table


def convert(
    sources: Sequence[PathLike],
    out: PathLike,
    *,
    format: str | None = None,
    labels: Sequence[int | str] | None = None,
    list_file: PathLike | None = None,
    progress: bool = True,
    compression: str = "blosc-zstd",
    clevel: int = 3,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    append: bool = False,
    split: str = "",
    pattern: str | None = None,
    embeddings: PathLike | dict[str, np.ndarray] | None = None,
    **read_kw: Any,
) -> Path:
    """Convert event files, labelled folders and list files into the evssl store ``out``.

    Args:
        sources: files and/or folders (see the module docstring for how folders are labelled).
        out: the store to write (atomically; see :class:`~evssl.events.io.store.StoreWriter`).
        format: force a reader (a key of ``evssl.events.io.FORMATS``) instead of detecting it per file.
        labels: one label (int or class name) per *file* in ``sources``.
        list_file: a ``path label`` list file (added after ``sources``).
        progress: show a tqdm bar.
        compression, clevel, chunk_events: store options.
        append: add to an existing store (class names are merged: existing ones keep their index).
        split: split name stored for every recording of this call.
        pattern: glob (e.g. ``"*.bin"``) selecting the files of folders; default: every file with a detectable
            event format (others are skipped and counted).
        embeddings: paired image embeddings keyed by file stem (a path for :func:`load_embeddings`, or the dict);
            each recording stores the one of its file's stem.
        read_kw: passed to :func:`evssl.events.io.read_events` (e.g. ``sensor_size=(260, 346)``).

    Returns:
        ``Path(out)``.
    """
    out = Path(out)
    items, skipped = _gather(sources, labels, list_file, pattern)
    if not items:
        what = f" ({skipped} file(s) skipped as unreadable)" if skipped else ""
        raise ConvertError(f"no input recordings found in {[str(s) for s in sources]}{what}")
    existing = EventStore(out).classes if append and out.exists() else []
    label_idx, classes = _resolve_labels(items, existing)
    table = load_embeddings(embeddings) if isinstance(embeddings, (str, os.PathLike)) else embeddings
    if table is not None:
        missing = [it.path for it in items if it.path.stem not in table]
        if missing:
            where = embeddings if isinstance(embeddings, (str, os.PathLike)) else "the embeddings dict"
            raise ConvertError(
                f"{missing[0]}: no embedding for file stem {missing[0].stem!r} in {where}"
                f" ({len(missing)} of {len(items)} recordings unpaired)"
            )
    n_events = 0
    with StoreWriter(out, append=append, compression=compression, clevel=clevel, chunk_events=chunk_events) as w:
        if classes:
            w.set_classes(classes)
        bar = tqdm(
            zip(items, label_idx), total=len(items), desc=f"convert → {out.name}", unit="file", disable=not progress
        )
        for it, lab in bar:
            try:
                ev = event_io.read_events(it.path, format=format, **read_kw)
            except Exception as e:
                raise ConvertError(f"{it.path}: cannot convert ({type(e).__name__}: {e})") from e
            emb = None if table is None else table[it.path.stem]
            w.add(ev, name=it.name, label=lab, source=str(it.path), split=split, embedding=emb)
            n_events += len(ev)
            bar.set_postfix(events=f"{n_events:,}", refresh=False)
        w.set_attrs(converted_with="evssl convert", skipped_files=skipped)
    return out


# ---------------------------------------------------------------------------------------------------- CLI
def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``evssl convert`` arguments to ``parser`` (used by :mod:`evssl.cli`)."""
    parser.add_argument("sources", nargs="*", help="event files and/or labelled folders (one class per sub-folder)")
    parser.add_argument("-o", "--out", required=True, type=Path, help="store to write (.h5)")
    parser.add_argument("--format", default=None, help="force a reader instead of detecting it per file")
    parser.add_argument("--list", dest="list_file", type=Path, default=None, help="list file of 'path label' lines")
    parser.add_argument("--labels", nargs="+", default=None, help="one label (int or class name) per source file")
    parser.add_argument("--split", default="", help="split name stored with every recording (train/val/test)")
    parser.add_argument("--pattern", default=None, help="glob selecting files inside folders, e.g. '*.bin'")
    parser.add_argument("--sensor-size", nargs=2, type=int, metavar=("H", "W"), default=None, help="sensor size")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="blosc-zstd")
    parser.add_argument("--clevel", type=int, default=3, help="compression level")
    parser.add_argument("--chunk-events", type=int, default=DEFAULT_CHUNK_EVENTS, help="events per HDF5 chunk")
    parser.add_argument(
        "--append", action="store_true", help="add to an existing store (copies it first: costs one full copy)"
    )
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="paired image embeddings by file stem: .npz, .pt dict, or a folder of them (ECDP's CLIP features)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # ---- data-set converters (evssl.data.sets): `--dataset NAME ROOT` and their options
    from evssl.data.sets import add_dataset_arguments

    add_dataset_arguments(parser)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run ``evssl convert`` from parsed arguments; prints a one-line summary and returns the exit status."""
    if getattr(args, "dataset", None):  # ---- data-set converters (evssl.data.sets)
        from evssl.data.sets import run_dataset_convert

        return run_dataset_convert(args)
    if not args.sources and args.list_file is None:
        print("evssl convert: give source files/folders or --list", file=sys.stderr)
        return 2
    read_kw = {} if args.sensor_size is None else {"sensor_size": tuple(args.sensor_size)}
    out = convert(
        args.sources,
        args.out,
        format=args.format,
        labels=args.labels,
        list_file=args.list_file,
        progress=not args.no_progress,
        compression=args.compression,
        clevel=args.clevel,
        chunk_events=args.chunk_events,
        append=args.append,
        split=args.split,
        pattern=args.pattern,
        embeddings=args.embeddings,
        **read_kw,
    )
    with EventStore(out) as store:
        n = int(store.num_events.sum())
        size = out.stat().st_size
        raw = 13 * n  # x, y int16 + t int64 + p int8
        ratio = f", {raw / size:.1f}x smaller than raw columns" if size and n else ""
        print(
            f"wrote {out}: {len(store)} recordings, {n:,} events, {len(store.classes)} classes, "
            f"{size / 1e6:.1f} MB{ratio}"
        )
    return 0


def main_convert(argv: Sequence[str] | None = None) -> int:
    """``evssl convert`` as a stand-alone entry point."""
    parser = argparse.ArgumentParser(prog="evssl convert", description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main_convert())
