"""Convert event files (any format :mod:`evssl.events.io` reads) into one evssl HDF5 store.

Inputs, freely mixed:

* single files (label from ``labels``, else unlabelled); recording name = the file name;
* a *labelled folder*: every sub-folder is a class (class names sorted, label = index), every event file below it a
  recording; a folder without sub-folders gives unlabelled recordings. Recording name = path relative to the folder
  (relative to its parent, i.e. prefixed with the folder name, when several folders are given). A file in a folder
  that is not an event file (no known extension or magic number) is an error like an unreadable one: select files
  with ``pattern`` (``--pattern '*.bin'``) or pass ``skip_unreadable``;
* a *list file* (``--list``; a ``.txt`` source whose first entry names an existing file is detected as one) of
  ``path label`` lines, see :func:`read_list_file`;
* an evssl *store*: every recording of it, with its name, label (by class name), split (unless ``split`` is given)
  and embedding; a store with frames, dense maps, poses or intrinsics is refused (convert copies events only).

Labels, one rule: an integer label is a class index (``0, 1, ...``; class names from ``classes`` when given, else
``"0" .. "K-1"``); any other label is a class name (sorted into indices, or looked up in ``classes``). Negative or
fractional numbers, and integer labels mixed with names in one conversion, are errors naming the line.
``classes`` (``--classes FILE`` or ``--classes-from STORE``) fixes the class list, so a test store lacking a class
keeps the train store's indices.

Nothing is dropped silently: any input that cannot be read fails the whole conversion, naming every such file
(``skip_unreadable`` converts the rest and lists them in the summary); a recording with 0 events is refused unless
``allow_empty``; ``out`` may not be one of the inputs; an existing ``out`` is replaced only with ``overwrite``
(``--force``), and ``append`` refuses names already in the store.

Streaming: each recording is read in chunks of ``chunk_read`` events (``evssl.events.io.iter_events``) and written
as it arrives, the ms index built incrementally, so memory does not grow with the recording; the store equals the
one a whole-file read gives.

Paired image embeddings (ECDP's precomputed CLIP features) attach by **file stem**: ``embeddings`` is a ``.npz``
(one array per key), a ``.pt`` dict of tensors (as ECDP's ``extract_clip_feature.py`` writes, one per class folder)
or a folder of such files; a key ``n01440764_10026.JPEG`` pairs with the recording ``.../n01440764_10026.npz``. Every
recording must find one (the error names the first that does not), and all must have the same length.

The store is written atomically (:class:`~evssl.events.io.store.StoreWriter`): if the conversion fails, nothing is
written at ``out`` (an existing store is left untouched).

Command line (wired as ``evssl convert`` by the CLI, also ``python -m evssl.events.convert``)::

    evssl convert data/N-MNIST/Train --out nmnist_train.h5 --split train
    evssl convert data/N-MNIST/Test --out nmnist_test.h5 --split test --classes-from nmnist_train.h5
    evssl convert --list files.txt --out store.h5 --format evt3
    evssl convert extracted_val/ --out nimagenet_val.h5 --split val --embeddings clip_val/
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evssl.events import io as event_io
from evssl.events.io.store import (
    COMPRESSIONS,
    DEFAULT_CHUNK_EVENTS,
    DEFAULT_MAX_SPAN_US,
    EventStore,
    StoreFormatError,
    StoreWriter,
)
from evssl.events.schema import EventFormatError, Events

PathLike = str | os.PathLike
#: Events per chunk read from a file while converting (peak memory is a small multiple of this times ~13 bytes).
DEFAULT_CHUNK_READ = 1_000_000
_MAX_LISTED = 20


class ConvertError(ValueError):
    """A source could not be converted; the message names the file."""


@dataclass(frozen=True)
class _Item:
    path: Path
    name: str
    label: int | str | None  # int index, class name, or None (unlabelled)
    where: str = ""  # where the label came from (list-file line, folder, --labels), for error messages
    recording: int | None = None  # index inside a store input
    split: str | None = None  # a store input's own split


@dataclass
class ConvertSummary:
    """What :func:`convert_summary` did: the store, counts, and everything worth a warning."""

    path: Path
    recordings: int = 0
    events: int = 0
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) with skip_unreadable
    inferred: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # (recording, (H, W)) from max + 1
    removed_stale: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Warning/information lines for the command line (the first line is printed by ``run_convert``)."""
        out = list(self.notes)
        if self.skipped:
            shown = "; ".join(f"{p} ({r})" for p, r in self.skipped[:_MAX_LISTED])
            more = f"; ... and {len(self.skipped) - _MAX_LISTED} more" if len(self.skipped) > _MAX_LISTED else ""
            out.append(f"warning: skipped {len(self.skipped)} unreadable file(s): {shown}{more}")
        if self.inferred:
            by_size: dict[tuple[int, int], list[str]] = {}
            for n, size in self.inferred:
                by_size.setdefault(size, []).append(n)
            sizes = sorted(by_size.items(), key=lambda kv: -len(kv[1]))
            shown = "; ".join(f"{h}x{w} for {len(names)} (e.g. {names[0]})" for (h, w), names in sizes[:5])
            more = f"; ... {len(sizes) - 5} more sizes" if len(sizes) > 5 else ""
            out.append(
                f"note: sensor size inferred from the events (the file does not state it) for {len(self.inferred)} "
                f"recording(s): {shown}{more}; pass --sensor-size H W to set it"
            )
        if self.removed_stale:
            out.append(f"note: removed stale temporary file(s) of dead writers: {', '.join(self.removed_stale)}")
        return out


# ---------------------------------------------------------------------------------------------------- labels
_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


def parse_label(token: str | int, where: str = "label") -> int | str:
    """A label token: an integer class index (``>= 0``) or a class name; negative/fractional numbers are errors."""
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        value = int(token)
    else:
        text = str(token).strip()
        if not text:
            raise ConvertError(f"{where}: empty label")
        if not _INT.fullmatch(text):
            if _NUMBER.fullmatch(text):
                raise ConvertError(
                    f"{where}: label {text!r} is a number but not an integer; integer labels are class indices "
                    "0, 1, ... (anything that is not a number is a class name)"
                )
            return text
        value = int(text)
    if value < 0:
        raise ConvertError(f"{where}: label {value} is negative; integer labels are class indices 0, 1, ...")
    return value


def read_class_names(path: PathLike) -> list[str]:
    """A class-names file: one name per line (label ``k`` = line ``k``; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return classes_from_store(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        name = raw.strip()
        if not name or name.startswith("#"):
            continue
        if name in seen:
            raise ConvertError(f"{path}:{lineno}: class {name!r} is listed twice (also line {seen[name]})")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise ConvertError(f"{path}: no class names (expected one name per line)")
    return names


def classes_from_store(path: PathLike) -> list[str]:
    """The class list of an existing store (``--classes-from train.h5``)."""
    with EventStore(path) as store:
        if not store.classes:
            raise ConvertError(f"{path}: store has no class names to take the class list from")
        return list(store.classes)


def _resolve_labels(
    items: list[_Item], existing: list[str], fixed: list[str] | None, fixed_src: str = "the class list"
) -> tuple[list[int], list[str]]:
    """Label indices and the class list (see the module docstring for the rule)."""
    ints = [it for it in items if isinstance(it.label, int)]
    names = [it for it in items if isinstance(it.label, str)]
    if ints and names:
        labelled = [it for it in items if it.label is not None]
        b = labelled[0]
        a = next(it for it in labelled if isinstance(it.label, int) != isinstance(b.label, int))
        raise ConvertError(
            f"{a.where or a.path}: label {a.label!r} mixes with {b.where or b.path}: label {b.label!r}; use class "
            "indices (integers, optionally with --classes FILE) or class names, not both"
        )
    if fixed is not None:
        if existing and fixed[: len(existing)] != existing:
            raise ConvertError(f"{fixed_src} does not extend the classes already in the store ({existing})")
        classes = list(fixed)
    else:
        classes = list(existing)
    if ints:
        top = max(int(it.label) for it in ints)  # type: ignore[arg-type]
        if top >= len(classes):
            digit_names = all(c == str(k) for k, c in enumerate(classes))
            if fixed is not None or not digit_names:
                bad = next(it for it in ints if int(it.label) >= len(classes))  # type: ignore[arg-type]
                raise ConvertError(
                    f"{bad.where or bad.path}: class index {bad.label} is out of range for the {len(classes)} "
                    f"classes of {fixed_src if fixed is not None else 'the store'}"
                )
            classes += [str(k) for k in range(len(classes), top + 1)]
    if names:
        if fixed is not None:
            known = set(classes)
            bad_items = [it for it in names if it.label not in known]
            if bad_items:
                bad = bad_items[0]
                raise ConvertError(
                    f"{bad.where or bad.path}: class {bad.label!r} is not in {fixed_src} "
                    f"({len(classes)} classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
                )
        else:
            classes += sorted({str(it.label) for it in names} - set(classes))
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


# ---------------------------------------------------------------------------------------------------- inputs
def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _recognised(path: Path) -> str | None:
    """Why ``path`` is not an event file (``None`` when its format is detected)."""
    try:
        event_io.detect_format(path)
    except Exception as e:
        why = str(e).removeprefix(f"{path}: ")
        return f"{path}: not a recognised event file ({why})"
    return None


def _scan_folder(folder: Path, name_root: Path, pattern: str | None) -> tuple[list[_Item], list[tuple[Path, str]]]:
    """Recordings of one folder (class sub-folders or flat) and the files that are not event files."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(d, d.name) for d in subdirs] if subdirs else [(folder, None)]
    items: list[_Item] = []
    unrecognised: list[tuple[Path, str]] = []
    for root, cls in groups:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p, folder))
        for p in files:
            if pattern is not None:
                if not p.match(pattern):
                    continue
            else:
                why = _recognised(p)
                if why is not None:
                    unrecognised.append((p, why))
                    continue
            items.append(_Item(p, p.relative_to(name_root).as_posix(), cls, where=f"folder {root}"))
    return items, unrecognised


def _split_list_line(line: str, base: Path) -> tuple[str, str | None]:
    """``(path, label or None)`` of one list-file line (see :func:`read_list_file`)."""
    if "\t" in line:
        rel, _, label = line.rpartition("\t")
        return rel.strip(), (label.strip() or None)
    if line[0] in "\"'":
        parts = shlex.split(line)
        if len(parts) > 2:
            raise ValueError(f"{len(parts)} fields after unquoting, expected 'path' or 'path label'")
        return parts[0], (parts[1] if len(parts) == 2 else None)
    whole = Path(line)
    if (whole if whole.is_absolute() else base / whole).is_file():
        return line, None  # an unlabelled path that contains spaces
    parts = line.rsplit(maxsplit=1)
    return parts[0].strip(), (parts[1] if len(parts) == 2 else None)


def read_list_file(list_file: PathLike) -> list[tuple[Path, int | str | None, str]]:
    """Parse a list file into ``(resolved path, label, name as written)`` entries (see :func:`read_list_entries`)."""
    return [(p, lab, name) for p, lab, name, _ in read_list_entries(list_file)]


def read_list_entries(list_file: PathLike) -> list[tuple[Path, int | str | None, str, int]]:
    """Parse a list file into ``(resolved path, label, name as written, line number)`` entries.

    Lines: ``path label``, ``path`` (unlabelled), ``path<TAB>label`` (the path may contain spaces), or a quoted
    path (``"my file.bin" dog``); a line that is an existing file as a whole is an unlabelled path with spaces.
    ``#`` comments and blank lines are skipped; relative paths are relative to the list file. Labels follow
    :func:`parse_label`; errors name the line.
    """
    list_file = Path(list_file)
    out = []
    base = list_file.parent
    for lineno, raw in enumerate(list_file.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_file}:{lineno}"
        try:
            rel, token = _split_list_line(line, base)
        except ValueError as e:
            raise ConvertError(f"{where}: cannot parse {line!r}: {e}") from e
        label = None if token is None else parse_label(token, where)
        path = Path(rel)
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ConvertError(f"{where}: file {rel!r} not found (looked for {path})")
        out.append((path, label, rel, lineno))
    return out


def looks_like_list_file(path: PathLike) -> bool:
    """Whether a text file is a ``path label`` list (its first entry names an existing file) rather than events."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            for _, raw in zip(range(1000), f):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                rel, _ = _split_list_line(line, path.parent)
                p = Path(rel)
                return (p if p.is_absolute() else path.parent / p).is_file()
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return False


def _store_items(path: Path, name_prefix: str) -> list[_Item]:
    """Every recording of a store input (refused when it holds more than events, labels and embeddings)."""
    with EventStore(path) as store:
        items = []
        for i in range(len(store)):
            info = store.info(i)
            extra = [k for k, v in (("frames", info.has_frames), ("dense maps", info.has_dense),
                                    ("poses", info.has_poses), ("intrinsics", info.has_intrinsics)) if v]  # fmt: skip
            if extra:
                raise ConvertError(
                    f"{path}: recording {i} ({info.name!r}) has {', '.join(extra)}; convert copies events, labels, "
                    "splits and embeddings only (use evssl.events.io.store.StoreWriter to copy the rest)"
                )
            if info.label < 0:
                label: int | str | None = None
            elif store.classes:
                if info.label >= len(store.classes):
                    raise ConvertError(f"{path}: recording {i} has label {info.label} beyond its class list")
                label = store.classes[info.label]
            else:
                label = info.label
            items.append(_Item(path, name_prefix + info.name, label, f"{path} recording {i}", i, info.split))
    return items


def _format_of(path: Path, format: str | None) -> str | None:
    if format is not None:
        return event_io.ALIASES.get(format.lower(), format.lower()) if hasattr(event_io, "ALIASES") else format
    try:
        return event_io.detect_format(path)
    except Exception:
        return None


def _gather(
    sources: Sequence[PathLike],
    labels: Sequence[int | str] | None,
    list_files: Sequence[PathLike],
    pattern: str | None,
    format: str | None,
) -> tuple[list[_Item], list[tuple[Path, str]], list[str]]:
    items: list[_Item] = []
    unrecognised: list[tuple[Path, str]] = []
    notes: list[str] = []
    srcs = [Path(s) for s in sources]
    for s in srcs:
        if not s.exists():
            raise ConvertError(f"{s}: no such file or folder")
    folders = [s for s in srcs if s.is_dir()]
    files = [s for s in srcs if not s.is_dir()]
    lists = [Path(f) for f in list_files]
    # a text file whose first entry is an existing file is a list (`evssl convert files.txt` without --list)
    if labels is None:
        detected = [s for s in files if _format_of(s, format) in (None, "text") and looks_like_list_file(s)]
        for s in detected:
            notes.append(f"note: reading {s} as a list file of 'path label' lines (as with --list)")
        lists += detected
        srcs = [s for s in srcs if s not in detected]
        files = [s for s in files if s not in detected]
    if labels is not None:
        if folders:
            raise ConvertError("labels= applies to single files only; folders label themselves by sub-folder")
        if len(labels) != len(files):
            raise ConvertError(f"got {len(labels)} labels for {len(files)} files")
    stores = {s for s in files if _format_of(s, format) == "store"}
    k = 0  # index of the next single file (for its label)
    for s in srcs:
        if s.is_dir():
            got, bad = _scan_folder(s, s if len(folders) == 1 else s.parent, pattern)
            stores_here = [it for it in got if _format_of(it.path, format) == "store"]
            for it in stores_here:
                got.remove(it)
                got += _store_items(it.path, f"{it.name}/")
            items += got
            unrecognised += bad
        elif s in stores:
            if labels is not None:
                raise ConvertError(f"{s}: a store input keeps its own labels; --labels applies to event files")
            items += _store_items(s, f"{s.stem}/" if len(srcs) > 1 else "")
            k += 0
        else:
            lab = None if labels is None else parse_label(labels[k], f"--labels[{k}] ({s})")
            items.append(_Item(s, s.name, lab, f"--labels[{k}] ({s})" if labels is not None else str(s)))
            k += 1
    for lf in lists:
        items += [_Item(p, name, lab, f"{lf}:{line} ({name})") for p, lab, name, line in read_list_entries(lf)]
    return items, unrecognised, notes


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------- reading
class _ReadFailure(Exception):
    """An input could not be read (wraps the reader's error, which names the file)."""


def _fallback_chunks(path: Path, format: str | None, chunk: int, read_kw: dict[str, Any]) -> Iterator[Events]:
    """Whole-file read split into chunks (until ``evssl.events.io.iter_events`` is available)."""
    ev = event_io.read_events(path, format=format, **read_kw)
    if not len(ev):
        yield ev
        return
    for a in range(0, len(ev), chunk):
        yield ev[a : a + chunk]


def _file_chunks(
    path: Path, format: str | None, sensor_size: tuple[int, int] | None, chunk: int, read_kw: dict[str, Any]
) -> tuple[Iterator[Events], tuple[int, int] | None]:
    """The chunk iterator of one event file and, when the size was inferred from the events, that size.

    Uses ``evssl.events.io.iter_events`` (bounded memory; its ``probe`` tells whether the size was inferred), else
    a whole-file read split into chunks.
    """
    iter_events = getattr(event_io, "iter_events", None)
    kw = dict(read_kw)
    if sensor_size is not None:
        kw["sensor_size"] = sensor_size
    if iter_events is None:
        return _fallback_chunks(path, format, chunk, kw), None
    chunks = iter_events(path, format=format, chunk_events=chunk, **kw)
    probe = getattr(chunks, "probe", None)
    inferred = (int(probe[1]), int(probe[2])) if probe is not None and probe[3] else None
    return iter(chunks), inferred


def _store_chunks(path: Path, i: int, chunk: int) -> Iterator[Events]:
    with EventStore(path) as store:
        n = int(store.num_events[i])
        if n == 0:
            yield store.events(i, 0, 0)
        for a in range(0, n, chunk):
            yield store.events(i, a, min(a + chunk, n))


def _guarded(
    chunks: Iterator[Events],
    path: Path,
    allow_empty: bool,
    counter: list[int],
    empty_size: tuple[int, int] | None = None,
) -> Iterator[Events]:
    """Tag reader failures (so write failures stay distinguishable) and refuse empty recordings.

    With ``allow_empty``, a reader's ``EmptyRecordingError`` (an empty or header-only file) becomes a 0-event
    recording of ``empty_size`` (``--sensor-size``; 1x1 when unknown).
    """
    n = 0
    try:
        while True:
            try:
                ev = next(chunks)
            except StopIteration:
                break
            except Exception as e:
                if allow_empty and n == 0 and type(e).__name__ == "EmptyRecordingError":
                    yield Events.empty(*(empty_size or (1, 1)))
                    break
                raise _ReadFailure(_describe(e, path)) from e
            n += len(ev)
            yield ev
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # release the file early when the writer stops (a failed chunk, a full disk)
    counter[0] = n
    if n == 0 and not allow_empty:
        raise _ReadFailure(f"{path}: 0 events (an empty recording; pass --allow-empty to keep it)")


def _describe(e: BaseException, path: Path) -> str:
    text = str(e).strip() or type(e).__name__
    if str(path) not in text:
        text = f"{path}: {text}"
    if type(e).__name__ == "EmptyRecordingError":
        return f"{text} (an empty recording; pass --allow-empty to keep it)"
    if isinstance(e, EventFormatError):
        return text
    return text if isinstance(e, (ConvertError, StoreFormatError)) else f"{text} ({type(e).__name__})"


def _list_hint(path: Path, message: str) -> str:
    """Add "did you mean --list?" when a text source that failed to read has ``path label``-shaped lines."""
    if path.suffix.lower() not in (".txt", ".csv", ".lst", ".list", ""):
        return message
    try:
        line = next(ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip() and ln[0] != "#")
    except (OSError, StopIteration):
        return message
    if len(line.split()) <= 2 and not _NUMBER.fullmatch(line.split()[0]):
        return f"{message}; did you mean --list {path}? (a list of 'path label' lines)"
    return message


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


def convert(sources: Sequence[PathLike], out: PathLike, **kwargs: Any) -> Path:
    """Convert event files, labelled folders, list files and stores into the evssl store ``out``; returns ``out``.

    Same arguments as :func:`convert_summary` (which also returns what was skipped or inferred).
    """
    return convert_summary(sources, out, **kwargs).path


def convert_summary(
    sources: Sequence[PathLike],
    out: PathLike,
    *,
    format: str | None = None,
    labels: Sequence[int | str] | None = None,
    list_file: PathLike | Sequence[PathLike] | None = None,
    progress: bool = True,
    compression: str = "blosc-zstd",
    clevel: int = 3,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    append: bool = False,
    overwrite: bool = False,
    split: str = "",
    pattern: str | None = None,
    embeddings: PathLike | dict[str, np.ndarray] | None = None,
    classes: Sequence[str] | PathLike | None = None,
    skip_unreadable: bool = False,
    allow_empty: bool = False,
    sensor_size: tuple[int, int] | None = None,
    max_span_us: int | None = DEFAULT_MAX_SPAN_US,
    chunk_read: int = DEFAULT_CHUNK_READ,
    **read_kw: Any,
) -> ConvertSummary:
    """Convert event files, labelled folders, list files and stores into the evssl store ``out``.

    Args:
        sources: files, folders and stores (see the module docstring for labelling and list detection).
        out: the store to write (atomically; see :class:`~evssl.events.io.store.StoreWriter`). May not be an input.
        format: force a reader (a key of ``evssl.events.io.FORMATS``) instead of detecting it per file.
        labels: one label (class index or class name, see :func:`parse_label`) per *file* in ``sources``.
        list_file: one or more list files (see :func:`read_list_file`), added after ``sources``.
        progress: show a tqdm bar.
        compression, clevel, chunk_events: store options.
        append: add to an existing store (its classes keep their indices; names already present are refused).
        overwrite: replace an existing ``out`` (``--force``); without it (and without ``append``) that is an error.
        split: split name stored for every recording of this call (a store input keeps its own when empty).
        pattern: glob (e.g. ``"*.bin"``) selecting the files of folders; default: every file, each of which must
            be an event file.
        embeddings: paired image embeddings keyed by file stem (a path for :func:`load_embeddings`, or the dict).
        classes: a fixed class list (names, a class-names file, or a store to copy it from): label indices follow
            it, names outside it are errors.
        skip_unreadable: convert what can be read; the others are listed in :attr:`ConvertSummary.skipped`.
        allow_empty: keep recordings with 0 events (an error otherwise).
        sensor_size: ``(H, W)`` for every file: events outside it are errors naming file, field and index.
        max_span_us: longest recording span accepted (see :class:`~evssl.events.io.store.StoreWriter`).
        chunk_read: events per chunk read and written.
        read_kw: passed to the readers (e.g. ``time_unit`` for text files).
    """
    out = Path(out)
    if sensor_size is not None:
        sensor_size = _check_sensor_size(sensor_size)
    if isinstance(list_file, (str, os.PathLike)):
        lists: list[PathLike] = [list_file]
    else:
        lists = list(list_file or [])
    items, unrecognised, notes = _gather(sources, labels, lists, pattern, format)
    summary = ConvertSummary(out, notes=notes)
    if unrecognised and not skip_unreadable:
        raise ConvertError(_failure_message(unrecognised, len(items) + len(unrecognised), pattern_hint=True))
    summary.skipped += [(str(p), why) for p, why in unrecognised]
    if not items:
        what = f" ({len(unrecognised)} file(s) skipped as unreadable)" if unrecognised else ""
        raise ConvertError(f"no input recordings found in {[str(s) for s in sources]}{what}")
    for it in items:
        if _same_file(it.path, out):
            raise ConvertError(
                f"{out}: the output is also an input ({it.where or it.path}); write the store to another file"
            )
    exists = out.exists()
    if exists and not append and not overwrite:
        raise ConvertError(f"{out} already exists; pass --force to replace it or --append to add to it")
    existing: list[str] = []
    if append and exists:
        with EventStore(out) as old:
            existing = list(old.classes)
            present = set(old.names.tolist())
        dup = next((it for it in items if it.name in present), None)
        if dup is not None:
            raise ConvertError(
                f"{out}: recording {dup.name!r} (from {dup.path}) is already in the store; --append adds new "
                "recordings only (convert into a new store, or rename)"
            )
    fixed, fixed_src = _fixed_classes(classes)
    label_idx, class_list = _resolve_labels(items, existing, fixed, fixed_src)
    table = load_embeddings(embeddings) if isinstance(embeddings, (str, os.PathLike)) else embeddings
    if table is not None:
        missing = [it.path for it in items if it.path.stem not in table]
        if missing:
            where = embeddings if isinstance(embeddings, (str, os.PathLike)) else "the embeddings dict"
            raise ConvertError(
                f"{missing[0]}: no embedding for file stem {missing[0].stem!r} in {where}"
                f" ({len(missing)} of {len(items)} recordings unpaired)"
            )
    failures: list[tuple[Path, str]] = []
    n_events = n_recordings = 0
    writer = StoreWriter(
        out, append=append, compression=compression, clevel=clevel, chunk_events=chunk_events, max_span_us=max_span_us
    )
    summary.removed_stale = [str(p) for p in writer.removed_stale]
    try:
        if class_list:
            writer.set_classes(class_list)
        bar = tqdm(
            zip(items, label_idx), total=len(items), desc=f"convert → {out.name}", unit="file", disable=not progress
        )
        for it, lab in bar:
            counter = [0]
            try:
                emb = None
                inferred = None
                # evssl's chunked readers validate every chunk; store inputs and the fallback are checked here
                check = it.recording is not None or getattr(event_io, "iter_events", None) is None
                if it.recording is not None:
                    chunks: Iterator[Events] = _store_chunks(it.path, it.recording, chunk_read)
                    with EventStore(it.path) as src:
                        emb = src.embedding(it.recording)
                else:
                    try:
                        chunks, inferred = _file_chunks(it.path, format, sensor_size, chunk_read, read_kw)
                    except Exception as e:
                        if not (allow_empty and type(e).__name__ == "EmptyRecordingError"):
                            raise _ReadFailure(_describe(e, it.path)) from e
                        chunks = iter([Events.empty(*(sensor_size or (1, 1)))])
                if table is not None:
                    emb = table[it.path.stem]
                rec_split = split if split or it.split is None else it.split
                writer.add(
                    _guarded(chunks, it.path, allow_empty, counter, sensor_size),
                    name=it.name,
                    label=lab,
                    source=str(it.path),
                    split=rec_split,
                    embedding=emb,
                    validate=check,
                )
            except _ReadFailure as e:
                failures.append((it.path, _list_hint(it.path, str(e))))
                continue
            except EventFormatError as e:  # the writer's checks of this recording (bounds, span, sizes)
                failures.append((it.path, _describe(e, it.path)))
                continue
            if inferred is not None:
                summary.inferred.append((it.name, inferred))
            n_events += counter[0]
            n_recordings += 1
            bar.set_postfix(events=f"{n_events:,}", refresh=False)
        if failures and not skip_unreadable:
            raise ConvertError(_failure_message(failures, len(items)))
        if not n_recordings and not append:
            raise ConvertError(_failure_message(failures, len(items)) + "; no recording could be converted")
        summary.skipped += [(str(p), why) for p, why in failures]
        writer.set_attrs(
            converted_with="evssl convert",
            skipped_files=len(summary.skipped),
            skipped=[[p, why] for p, why in summary.skipped[:1000]],
        )
        writer.close()
    except BaseException:
        writer.abort()
        raise
    summary.recordings, summary.events, summary.classes = n_recordings, n_events, class_list
    return summary


def _check_sensor_size(size: Sequence[Any]) -> tuple[int, int]:
    if len(size) != 2:
        raise ConvertError(f"--sensor-size takes H W, got {list(size)}")
    vals = []
    for name, v in zip(("H", "W"), size):
        try:
            f = float(v)
        except (TypeError, ValueError) as e:
            raise ConvertError(f"--sensor-size {name} {v!r} is not an integer") from e
        if not f.is_integer() or not 1 <= f <= 32768:
            raise ConvertError(f"--sensor-size {name} {v!r} must be an integer in 1..32768 (int16 coordinates)")
        vals.append(int(f))
    return vals[0], vals[1]


def _size_arg(text: str) -> int:
    """argparse type of one ``--sensor-size`` value (a usage error, exit 2, when out of range)."""
    try:
        f = float(text)
    except ValueError:
        f = float("nan")
    if not f.is_integer() or not 1 <= f <= 32768:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer in 1..32768 (int16 coordinates)")
    return int(f)


def _fixed_classes(classes: Sequence[str] | PathLike | None) -> tuple[list[str] | None, str]:
    if classes is None:
        return None, ""
    if isinstance(classes, (str, os.PathLike)):
        return read_class_names(classes), str(classes)
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ConvertError(f"the class list has duplicates: {names}")
    return names, "the given class list"


def _failure_message(failures: list[tuple[Path, str]], total: int, pattern_hint: bool = False) -> str:
    head = (
        f"{len(failures)} of {total} input file(s) cannot be converted (nothing was written; "
        + ("select event files with --pattern '*.ext' or " if pattern_hint else "")
        + "pass --skip-unreadable to convert the rest):"
    )
    body = [f"  {why if str(p) in why else f'{p}: {why}'}" for p, why in failures[:_MAX_LISTED]]
    if len(failures) > _MAX_LISTED:
        body.append(f"  ... and {len(failures) - _MAX_LISTED} more")
    return "\n".join([head, *body])


# ---------------------------------------------------------------------------------------------------- CLI
def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``evssl convert`` arguments to ``parser`` (used by :mod:`evssl.cli`).

    To extend the command, add arguments here and map them in :func:`convert_kwargs`.
    """
    parser.add_argument(
        "sources", nargs="*", help="event files, labelled folders (one class per sub-folder) and/or stores"
    )
    parser.add_argument("-o", "--out", required=True, type=Path, help="store to write (.h5)")
    parser.add_argument("--format", default=None, help="force a reader instead of detecting it per file")
    parser.add_argument(
        "--list", dest="list_file", type=Path, action="append", default=None,
        help="list file of 'path label' lines (tab-separated or quoted paths may contain spaces); repeatable",
    )  # fmt: skip
    parser.add_argument("--labels", nargs="+", default=None, help="one label (class index or name) per source file")
    parser.add_argument("--split", default="", help="split name stored with every recording (train/val/test)")
    parser.add_argument("--pattern", default=None, help="glob selecting files inside folders, e.g. '*.bin'")
    parser.add_argument(
        "--sensor-size", nargs=2, metavar=("H", "W"), default=None, type=_size_arg,
        help="sensor height and width of every file: an event outside it is an error (default: header or inferred)",
    )  # fmt: skip
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--classes", type=Path, default=None, help="class-names file: one name per line (= index)")
    classes.add_argument(
        "--classes-from", type=Path, default=None, help="take the class list of this store (stable indices)"
    )
    parser.add_argument("--compression", choices=COMPRESSIONS, default="blosc-zstd")
    parser.add_argument("--clevel", type=int, default=3, help="compression level")
    parser.add_argument("--chunk-events", type=int, default=DEFAULT_CHUNK_EVENTS, help="events per HDF5 chunk")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--append", action="store_true", help="add to an existing store (copies it first: costs one full copy)"
    )
    mode.add_argument("--force", action="store_true", help="replace an existing store at --out")
    parser.add_argument(
        "--skip-unreadable", action="store_true", help="convert what can be read and list the rest as warnings"
    )
    parser.add_argument("--allow-empty", action="store_true", help="keep recordings with 0 events")
    parser.add_argument(
        "--max-span-hours", type=float, default=DEFAULT_MAX_SPAN_US / 3.6e9,
        help="refuse recordings longer than this (a corrupt timestamp); 0 = no limit",
    )  # fmt: skip
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="paired image embeddings by file stem: .npz, .pt dict, or a folder of them (ECDP's CLIP features)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def convert_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`convert_summary` from parsed ``evssl convert`` arguments."""
    return dict(
        format=args.format,
        labels=args.labels,
        list_file=args.list_file,
        progress=not args.no_progress,
        compression=args.compression,
        clevel=args.clevel,
        chunk_events=args.chunk_events,
        append=args.append,
        overwrite=args.force,
        split=args.split,
        pattern=args.pattern,
        embeddings=args.embeddings,
        classes=args.classes if args.classes is not None else args.classes_from,
        skip_unreadable=args.skip_unreadable,
        allow_empty=args.allow_empty,
        sensor_size=None if args.sensor_size is None else _check_sensor_size(args.sensor_size),
        max_span_us=int(args.max_span_hours * 3.6e9) if args.max_span_hours > 0 else None,
    )


def size_line(raw_bytes: int, size: int) -> str:
    """``", 3.1x smaller than raw columns"`` (or ``"larger"``) for the summary; empty when nothing to compare."""
    if not size or not raw_bytes:
        return ""
    ratio = raw_bytes / size
    if ratio >= 1:
        return f", {ratio:.1f}x smaller than raw columns"
    return f", {1 / ratio:.1f}x larger than raw columns (13 B/event; small recordings carry index overhead)"


def run_convert(args: argparse.Namespace) -> int:
    """Run ``evssl convert`` from parsed arguments; prints a summary and returns the exit status."""
    if not args.sources and not args.list_file:
        print("evssl convert: error: give source files/folders or --list", file=sys.stderr)
        return 2
    summary = convert_summary(args.sources, args.out, **convert_kwargs(args))
    out = summary.path
    with EventStore(out) as store:
        n = int(store.num_events.sum())
        size = out.stat().st_size
        print(
            f"wrote {out}: {len(store)} recordings, {n:,} events, {len(store.classes)} classes, "
            f"{size / 1e6:.1f} MB{size_line(13 * n, size)}"
        )
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 0


def main_convert(argv: Sequence[str] | None = None) -> int:
    """``evssl convert`` as a stand-alone entry point (data errors: one line, exit 1; usage errors: exit 2)."""
    from evssl.cli import run_guarded

    parser = argparse.ArgumentParser(prog="evssl convert", description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser)
    return run_guarded("evssl convert", lambda: run_convert(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main_convert(sys.argv[1:]))
