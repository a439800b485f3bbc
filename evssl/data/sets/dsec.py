"""DSEC (Gehrig et al., RA-L 2021): events, and the DSEC-Semantic and DSEC-Flow ground truth.

**Events** (``events.h5``; DSEC ``scripts/utils/eventslicer.py``, data-format page)::

    /events/x  (N,) uint16   column 0..639, *distorted* sensor coordinates
    /events/y  (N,) uint16   row 0..479
    /events/p  (N,) uint8    polarity 0/1 (1 = ON)
    /events/t  (N,) uint32   µs, relative: t + t_offset is the clock of the image / label timestamps
    /ms_to_idx (M,) uint64   t[ms_to_idx[ms]] >= 1000 ms, t[ms_to_idx[ms] - 1] < 1000 ms
    /t_offset  ()   int64    µs (the official slicer treats it as 0 when absent)

Blosc-ZSTD compressed (``hdf5plugin`` is imported by the store module). The store keeps **absolute** µs
``t + t_offset`` so events line up with the label and flow timestamps. ``ms_to_idx`` is checked (length covers the
last event, non-decreasing, the invariant at every chunk start) but not needed: the store builds its own index.

**Rectification** (``rectify_map.h5``: ``rectify_map`` (480, 640, 2) float, indexed ``[y, x] -> (x_rect, y_rect)``).
The labels and flow live in the rectified left event camera, so ``rectify=True`` (the default) maps every event
through it, rounds to the nearest pixel (the official loaders pass the floats to a voxel grid; a store holds integer
pixels) and drops events that land outside the frame. ``rectify=False`` keeps the raw coordinates.

Sequences: ``root`` is a sequence folder, a folder of sequences, or a folder with ``train/`` and ``test/`` sequence
folders (split = that folder's name unless a data-set split table says otherwise). The event file is looked for as
``events/left/events.h5`` (the DSEC example layout), ``events_left/events.h5`` (E-RAFT) and
``<seq>_events_left/events.h5`` (the download's zip name); ``rectify_map.h5`` next to it.

**DSEC-Semantic** (:func:`convert_dsec_semantic`): ``classes=11`` or ``19``; labels are uint8 PNGs (class id,
255 = ignore) of **640x440** (W x H): the bottom 40 rows of the event frame have no label, so, as ESS and ECDDP do
(``event_tensor[:, :-40]``), the events are cropped to ``y < 440`` and the store's sensor is 440x640. Layouts:
A (ESS) ``<seq>/semantic/[left/]{11,19}classes/data/*.png`` + ``<seq>/semantic/timestamps.txt``; B (the download,
as ECDDP reads it) ``<seq>/{11,19}classes/*.png`` + ``<seq>/<seq>_semantic_timestamps.txt``. Split: ECDDP's table
(train ``zurich_city_{00,01,02,04,05,06,07,08}_a``, test ``zurich_city_13_a, 14_c, 15_a``), else the parent
folder; ``eval_split`` renames the test split (``"val"`` for configs that validate on it).
``label_subsample="ess"`` (default) keeps the labels ESS / ECDDP evaluate: the first
``(remove_time_window // 100 + 1) * 2`` (= 6 at 250 ms) are dropped (too few events before them) and then every
second one (10 Hz); ``"all"`` keeps every label.

**DSEC-Flow** (:func:`convert_dsec_flow`): ``<seq>/flow/forward/NNNNNN.png`` (the name is the image index) +
``<seq>/flow/forward_timestamps.txt`` (``#`` header, then ``from_us, to_us`` per line; also the download names
``<seq>_optical_flow_forward_event/`` and ``<seq>_optical_flow_forward_timestamps.txt``). 16-bit 3-channel PNGs:
``flow_x = (ch0 - 2**15) / 128``, ``flow_y = (ch1 - 2**15) / 128`` px, ``valid = ch2 == 1``, channels in **RGB file
order** (the DSEC checker reads with ``imageio``'s PNG-FI; OpenCV returns BGR and needs a flip). Stored as dense
``flow`` (2, 480, 640) float32 at ``dense_t = from_us``, **NaN where invalid** (the dense tasks treat non-finite flow
as invalid); the ``to_us`` of every map is in the store attribute ``flow_to_us`` (by recording name). A file whose
third channel is not 0/1 while its first is (a BGR-written PNG) is an error unless ``channel_order="bgr"``.
Sequences without flow files (the test split) get events only; their ``test_forward_flow_timestamps.csv``
(``from_us, to_us, file_index``), when present, goes into the store attribute ``flow_test_requests`` (by sequence) so
predictions can be written as ``<seq>/<file_index:06d>.png`` for the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from evssl.data.sets._common import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    READ_CHUNK,
    DatasetError,
    Part,
    PathLike,
    Timed,
    check_array,
    need_file,
    need_key,
    read_int_lines,
    read_png,
    write_long_recording,
    writer_kwargs,
)
from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events

log = logging.getLogger(__name__)

HEIGHT, WIDTH = 480, 640
SEMANTIC_HEIGHT = 440
IGNORE = 255
SEMANTIC_CLASSES = {
    11: (
        "background",
        "building",
        "fence",
        "person",
        "pole",
        "road",
        "sidewalk",
        "vegetation",
        "car",
        "wall",
        "traffic sign",
    ),
    19: (  # the Cityscapes trainId order (the ESS / ECDDP loaders only switch the folder; names not in their code)
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
}
#: ECDDP ``data/DESC_dataset.py`` (= ESS) sequence split of DSEC-Semantic.
SEMANTIC_SPLIT = {
    **{f"zurich_city_{k}_a": "train" for k in ("00", "01", "02", "04", "05", "06", "07", "08")},
    **{s: "test" for s in ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a")},
}
_EVENT_CANDIDATES = ("events/left/events.h5", "events_left/events.h5", "{seq}_events_left/events.h5")


# ---------------------------------------------------------------------------------------------------- events
@dataclass
class DsecEvents:
    """Chunked reader of one DSEC ``events.h5`` (+ optional rectification map and bottom crop)."""

    path: Path
    rectify_map: np.ndarray | None = None
    height: int = HEIGHT
    chunk: int = READ_CHUNK

    def __post_init__(self) -> None:
        self.path = need_file(Path(self.path), "DSEC events.h5")
        with h5py.File(self.path, "r") as f:
            ev = need_key(f, "events", self.path)
            cols = {}
            for key, kinds in (("x", "u"), ("y", "u"), ("p", "iu"), ("t", "iu")):
                cols[key] = check_array(need_key(ev, key, self.path), self.path, f"events/{key}", kinds=kinds, ndim=1)
            n = {k: v.shape[0] for k, v in cols.items()}
            if len(set(n.values())) != 1:
                raise DatasetError(f"{self.path}: events/x,y,p,t have different lengths {n}")
            self.num_events = int(n["t"])
            self.t_offset = int(f["t_offset"][()]) if "t_offset" in f else 0
            ms = check_array(need_key(f, "ms_to_idx", self.path), self.path, "ms_to_idx", kinds="iu", ndim=1)[...]
            t_last = int(cols["t"][-1]) if self.num_events else 0
            if len(ms) < t_last // 1000 + 1:
                raise DatasetError(
                    f"{self.path}: key 'ms_to_idx' has {len(ms)} entries, the last event (t={t_last} µs) needs "
                    f"{t_last // 1000 + 1}"
                )
            if len(ms) and (ms[0] != 0 or (np.diff(ms.astype(np.int64)) < 0).any()):
                raise DatasetError(f"{self.path}: key 'ms_to_idx' must start at 0 and never decrease")
            self._ms = ms.astype(np.int64)

    def _check_ms(self, tcol: h5py.Dataset, a: int, t_a: int) -> None:
        """The ``ms_to_idx`` invariant at the millisecond of event ``a`` (two element reads)."""
        k = t_a // 1000
        j = int(self._ms[k]) if k < len(self._ms) else -1
        ok = 0 <= j <= a and int(tcol[j]) >= 1000 * k and (j == 0 or int(tcol[j - 1]) < 1000 * k)
        if not ok:
            raise DatasetError(
                f"{self.path}: key 'ms_to_idx' breaks its invariant at ms {k} (entry {j}, event {a} has t={t_a} µs)"
            )

    def chunks(self) -> Iterator[Events]:
        """Time-ordered chunks of rectified (and cropped) events in absolute µs."""
        with h5py.File(self.path, "r") as f:
            ev = f["events"]
            n = self.num_events
            for a in range(0, max(n, 1), self.chunk):
                b = min(a + self.chunk, n)
                yield self._convert(ev, a, b)

    def _convert(self, ev: h5py.Group, a: int, b: int) -> Events:
        x = ev["x"][a:b].astype(np.int64)
        y = ev["y"][a:b].astype(np.int64)
        t = ev["t"][a:b].astype(np.int64)
        p = ev["p"][a:b]
        src = f"{self.path}:events"
        if len(t):
            self._check_ms(ev["t"], a, int(t[0]))
        bad = (x >= WIDTH) | (y >= HEIGHT)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{src}: event {a + i} at x={x[i]}, y={y[i]} is outside the 640x480 sensor")
        if self.rectify_map is not None:
            xy = self.rectify_map[y, x]
            x = np.rint(xy[:, 0]).astype(np.int64)
            y = np.rint(xy[:, 1]).astype(np.int64)
        keep = (x >= 0) & (x < WIDTH) & (y >= 0) & (y < self.height)
        if not keep.all():
            x, y, t, p = x[keep], y[keep], t[keep], p[keep]
        return Events.from_arrays(x, y, t + self.t_offset, p, self.height, WIDTH, polarity="01", source=src)


def read_rectify_map(path: PathLike) -> np.ndarray:
    """``rectify_map`` (480, 640, 2) float of a DSEC ``rectify_map.h5``."""
    path = need_file(Path(path), "DSEC rectify_map.h5")
    with h5py.File(path, "r") as f:
        ds = check_array(need_key(f, "rectify_map", path), path, "rectify_map", kinds="f", shape=(HEIGHT, WIDTH, 2))
        return ds[()].astype(np.float32)


def find_events_file(seq: Path) -> Path:
    """The left ``events.h5`` of a sequence folder (see the module docstring for the names tried)."""
    for pattern in _EVENT_CANDIDATES:
        p = seq / pattern.format(seq=seq.name)
        if p.is_file():
            return p
    tried = ", ".join(p.format(seq=seq.name) for p in _EVENT_CANDIDATES)
    raise DatasetError(f"{seq}: missing DSEC events file (tried {tried})")


def _sequences(root: Path) -> list[tuple[Path, str]]:
    """(sequence folder, folder split name) pairs below ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: missing DSEC folder")

    def is_seq(d: Path) -> bool:
        return any((d / p.format(seq=d.name)).is_file() for p in _EVENT_CANDIDATES)

    if is_seq(root):
        return [(root, root.parent.name if root.parent.name in ("train", "test") else "")]
    out = []
    for split in ("train", "test"):
        if (root / split).is_dir():
            out += [(d, split) for d in sorted((root / split).iterdir()) if d.is_dir() and is_seq(d)]
    if not out:
        out = [(d, "") for d in sorted(root.iterdir()) if d.is_dir() and is_seq(d)]
    if not out:
        raise DatasetError(f"{root}: no DSEC sequence folders (none holds {_EVENT_CANDIDATES[0]} or its variants)")
    return out


def _events(seq: Path, rectify: bool, height: int) -> DsecEvents:
    ev_path = find_events_file(seq)
    rmap = read_rectify_map(ev_path.parent / "rectify_map.h5") if rectify else None
    return DsecEvents(ev_path, rmap, height=height)


def _write_sequence(
    w: StoreWriter,
    name: str,
    ev: DsecEvents,
    timed: list[Timed],
    split: str,
    max_events: int,
    max_bytes: int,
    parts: dict[str, int],
) -> list[Part]:
    """Write one sequence's events (+ ``timed`` targets) as a long recording; a sequence stored in more than one part
    gets its part count in ``parts``. Returns the stored parts."""
    got = write_long_recording(
        w, name, ev.chunks(), timed=timed, max_events=max_events, max_bytes=max_bytes, split=split, source=str(ev.path)
    )
    if len(got) > 1:
        parts[name] = len(got)
    return got


# ---------------------------------------------------------------------------------------------------- semantic
def _semantic_files(seq: Path, classes: int) -> tuple[list[Path], Path]:
    sub = f"{classes}classes"
    for d, ts in (
        (seq / "semantic" / sub / "data", seq / "semantic" / "timestamps.txt"),
        (seq / "semantic" / "left" / sub / "data", seq / "semantic" / "timestamps.txt"),
        (seq / sub, seq / f"{seq.name}_semantic_timestamps.txt"),
    ):
        if d.is_dir():
            return sorted(d.glob("*.png")), need_file(ts, "DSEC-Semantic timestamps (int64 µs, one per label PNG)")
    raise DatasetError(
        f"{seq}: missing DSEC-Semantic labels (looked for semantic/{sub}/data/, semantic/left/{sub}/data/ and {sub}/)"
    )


def read_semantic_png(path: Path, classes: int) -> np.ndarray:
    """A (440, 640) uint8 DSEC-Semantic label map (ids < ``classes`` or 255); errors name the file."""
    lab = read_png(path)
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise DatasetError(f"{path}: label PNG has shape {lab.shape} {lab.dtype}, expected (440, 640) uint8")
    if lab.shape != (SEMANTIC_HEIGHT, WIDTH):
        raise DatasetError(f"{path}: label PNG has shape {lab.shape}, expected (440, 640) (H x W)")
    bad = (lab >= classes) & (lab != IGNORE)
    if bad.any():
        raise DatasetError(f"{path}: label value {int(lab[bad][0])} is not a class id < {classes} or 255 (ignore)")
    return lab


def ess_label_indices(n: int, remove_time_window_ms: int = 250) -> np.ndarray:
    """Indices of the labels ESS / ECDDP use: drop ``(w // 100 + 1) * 2``, then every second one."""
    return np.arange((remove_time_window_ms // 100 + 1) * 2, n, 2)


def convert_dsec_semantic(
    root: PathLike,
    out: PathLike,
    *,
    classes: int = 11,
    label_subsample: str = "ess",
    eval_split: str = "test",
    rectify: bool = True,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert DSEC-Semantic sequences (events cropped to 440x640 + semantic labels); see the module docstring."""
    if classes not in SEMANTIC_CLASSES:
        raise ValueError(f"DSEC-Semantic has 11 or 19 classes, got {classes}")
    if label_subsample not in ("ess", "all"):
        raise ValueError(f"label_subsample must be 'ess' or 'all', got {label_subsample!r}")
    seqs = _sequences(Path(root))
    parts: dict[str, int] = {}
    with StoreWriter(out, **writer_kwargs(options)) as w:
        w.set_classes(list(SEMANTIC_CLASSES[classes]))
        for seq, folder_split in seqs:
            pngs, ts_file = _semantic_files(seq, classes)
            ts = read_int_lines(ts_file)
            if len(ts) != len(pngs):
                raise DatasetError(f"{ts_file}: {len(ts)} timestamps for {len(pngs)} label PNGs in {pngs[0].parent}")
            keep = ess_label_indices(len(ts)) if label_subsample == "ess" else np.arange(len(ts))
            sel_png = [pngs[i] for i in keep]
            timed = [
                Timed(
                    "semantic",
                    ts[keep],
                    lambda idx, files=sel_png: np.stack([read_semantic_png(files[i], classes) for i in idx]),
                    SEMANTIC_HEIGHT * WIDTH,
                )
            ]
            ev = _events(seq, rectify, SEMANTIC_HEIGHT)
            split = SEMANTIC_SPLIT.get(seq.name, folder_split)
            split = eval_split if split == "test" else split
            _write_sequence(w, seq.name, ev, timed, split, max_events, max_bytes, parts)
        w.set_attrs(
            dataset="dsec_semantic",
            sensor_size=[SEMANTIC_HEIGHT, WIDTH],
            ignore_index=IGNORE,
            num_classes=classes,
            label_subsample=label_subsample,
            rectified=bool(rectify),
            recording_parts=parts,
        )
    return Path(out)


# ---------------------------------------------------------------------------------------------------- flow
def decode_flow_png(img: np.ndarray, path: PathLike = "", channel_order: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
    """(2, H, W) float32 flow in px and (H, W) bool validity of a DSEC 16-bit flow PNG read in file order.

    ``channel_order="bgr"`` for arrays (or files) in OpenCV's order. Raises when the validity channel is not 0/1 —
    with a hint when the first channel looks like it (the BGR pitfall).
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint16:
        raise DatasetError(f"{path}: flow PNG has shape {img.shape} {img.dtype}, expected (H, W, 3) uint16")
    if channel_order == "bgr":
        img = img[..., ::-1]
    elif channel_order != "rgb":
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    valid_ch = img[..., 2]
    if valid_ch.max() > 1:
        hint = ""
        if img[..., 0].max() <= 1:
            hint = (
                " — channel 0 holds the 0/1 valid bit: the channels are in BGR order (an OpenCV array written without "
                "flipping); pass channel_order='bgr' if that is intended"
            )
        raise DatasetError(f"{path}: flow PNG channel 2 (valid bit) has value {int(valid_ch.max())}, not 0/1{hint}")
    valid = valid_ch == 1
    flow = (img[..., :2].astype(np.float32) - 2**15) / 128.0
    flow = np.moveaxis(flow, -1, 0).copy()
    flow[:, ~valid] = np.nan
    return flow, valid


def _flow_files(seq: Path, direction: str) -> tuple[list[Path], np.ndarray] | None:
    for d, ts in (
        (seq / "flow" / direction, seq / "flow" / f"{direction}_timestamps.txt"),
        (
            seq / f"{seq.name}_optical_flow_{direction}_event",
            seq / f"{seq.name}_optical_flow_{direction}_timestamps.txt",
        ),
        (seq / f"optical_flow_{direction}_event", seq / f"optical_flow_{direction}_timestamps.txt"),
    ):
        if d.is_dir():
            pngs = sorted(d.glob("*.png"))
            pairs = read_int_lines(need_file(ts, f"DSEC-Flow {direction} timestamps ('from_us, to_us' lines)"), 2)
            if len(pairs) != len(pngs):
                raise DatasetError(f"{ts}: {len(pairs)} timestamp pairs for {len(pngs)} flow PNGs in {d}")
            if (pairs[:, 1] <= pairs[:, 0]).any():
                i = int(np.flatnonzero(pairs[:, 1] <= pairs[:, 0])[0])
                raise DatasetError(f"{ts}: pair {i} has to_us <= from_us ({pairs[i].tolist()})")
            return pngs, pairs
    return None


def convert_dsec_flow(
    root: PathLike,
    out: PathLike,
    *,
    direction: str = "forward",
    channel_order: str = "rgb",
    rectify: bool = True,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert DSEC-Flow sequences (events + 16-bit flow PNGs); see the module docstring."""
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    seqs = _sequences(Path(root))
    parts: dict[str, int] = {}
    to_us: dict[str, list[int]] = {}
    requests: dict[str, list[list[int]]] = {}
    with StoreWriter(out, **writer_kwargs(options)) as w:
        for seq, split in seqs:
            found = _flow_files(seq, direction)
            timed: list[Timed] = []
            if found is None:
                log.info("DSEC-Flow: %s has no %s flow; events only", seq, direction)
                req = seq / "test_forward_flow_timestamps.csv"
                if req.is_file():
                    requests[seq.name] = read_int_lines(req, 3).tolist()
            else:
                pngs, pairs = found

                def load(idx: np.ndarray, files: list[Path] = pngs) -> np.ndarray:
                    return np.stack([decode_flow_png(read_png(files[i]), files[i], channel_order)[0] for i in idx])

                timed = [Timed("flow", pairs[:, 0], load, 2 * HEIGHT * WIDTH * 4)]
            ev = _events(seq, rectify, HEIGHT)
            got = _write_sequence(w, seq.name, ev, timed, split, max_events, max_bytes, parts)
            if found is not None:  # the to-times of each stored part, in the order of its flow maps
                for part in got:
                    sel = (found[1][:, 0] >= part.t_lo) & (found[1][:, 0] < part.t_hi)
                    to_us[part.name] = found[1][sel, 1].tolist()
        w.set_attrs(
            dataset="dsec_flow",
            sensor_size=[HEIGHT, WIDTH],
            flow_direction=direction,
            flow_invalid="nan",
            flow_to_us=to_us,
            flow_test_requests=requests,
            rectified=bool(rectify),
            recording_parts=parts,
        )
    return Path(out)


# ---------------------------------------------------------------------------------------------------- events only
def convert_dsec(
    root: PathLike,
    out: PathLike,
    *,
    rectify: bool = True,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert DSEC sequences' left events (rectified by default) into an evssl store, one recording per sequence."""
    seqs = _sequences(Path(root))
    parts: dict[str, int] = {}
    with StoreWriter(out, **writer_kwargs(options)) as w:
        for seq, split in seqs:
            ev = _events(seq, rectify, HEIGHT)
            _write_sequence(w, seq.name, ev, [], split, max_events, max_bytes, parts)
        w.set_attrs(dataset="dsec", sensor_size=[HEIGHT, WIDTH], rectified=bool(rectify), recording_parts=parts)
    return Path(out)
