"""E-TartanAir (ECDDP's event version of TartanAir) and TartanAir trajectories: events, depth and NED poses.

Trajectory folder (TartanAir ``<ENV>/{Easy,Hard}/P0NN/``, ``castacks/tartanair_tools`` README / ``data_type.md``)::

    pose_left.txt                        tx ty tz qx qy qz qw per frame, NED, metres (evssl.data.sets.poses)
    depth_left/NNNNNN_left_depth.npy     (480, 640) float32 metres (sky ~ 1e4); the .npy header is trusted
    event_left/{i:06d}_{i+1:06d}_event.hdf5   E-TartanAir chunk i (ECDDP generate_data/split_event.py): 1-D lzf
                                         datasets x, y uint16, p int8 (+-1), t float32 µs
    event_left.h5                        or the whole v2e stream: ``events`` (N, 4) [t, x, y, p]

Time base: ECDDP's VFI-upsampled video runs at one frame per second of v2e time, so frame ``i`` (its pose and depth)
is at ``t = i * 1e6`` µs and chunk ``i`` holds the events of ``[i * 1e6, (i + 1) * 1e6)``.

Pitfall (float32 µs): chunk timestamps are **not** re-based per chunk, and float32 is exact only up to 2**24 µs
(16.8 s), so from chunk 17 on the stored times are already quantised (2 µs at 17 s, 64 µs at 1,000 s). The reader
does no float arithmetic on them: float32 -> float64 (exact) -> ``rint`` -> int64, so nothing is lost beyond what
the file lost; the worst float32 step of a store is recorded in the attribute ``float32_time_step_us`` (and logged
when > 1 µs). Polarity is taken as -1/+1, or 0/1 when the file holds 0 (a v2e version that writes 0/1); mixing
both in one trajectory is an error.

``per_chunk=True`` writes one recording per chunk file (``<traj>/<i:06d>``, with frame ``i``'s depth and pose), so a
1-s window is exactly ECDDP's training sample; ``pair_list`` (ECDDP's ``file_path.txt``) keeps only the chunks it
lists (its generator leaves out chunks under 100 KiB and ``000000_000001``). A TartanAir trajectory without events
gives a recording with no events but its depth and poses. Sensor 480x640,
intrinsics fx = fy = 320, cx = 320, cy = 240 (stored per recording). Split: ECDDP ``data/ETartanAir_dataset.py``'s
scene table (test = hospital, gascola, neighborhood; the 15 listed scenes train), else ``""``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from evssl.data.sets._common import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    READ_CHUNK,
    DatasetError,
    PathLike,
    Timed,
    check_array,
    need_key,
    write_long_recording,
    writer_kwargs,
)
from evssl.data.sets.poses import read_tartanair_poses
from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events

log = logging.getLogger(__name__)

HEIGHT, WIDTH = 480, 640
FRAME_US = 1_000_000
INTRINSICS = np.array([[320.0, 0.0, 320.0], [0.0, 320.0, 240.0], [0.0, 0.0, 1.0]])
TRAIN_SCENES = (
    "westerndesert",
    "seasidetown",
    "amusement",
    "carwelding",
    "seasonsforest",
    "office2",
    "japanesealley",
    "ocean",
    "abandonedfactory_night",
    "endofworld",
    "office",
    "soulcity",
    "oldtown",
    "seasonsforest_winter",
    "abandonedfactory",
)
TEST_SCENES = ("hospital", "gascola", "neighborhood")
_CHUNK_RE = re.compile(r"^(\d+)_(\d+)_event\.hdf5$")


def float32_times_to_us(t: np.ndarray) -> np.ndarray:
    """Float32 µs timestamps to int64 µs with no float arithmetic in float32 (see the pitfall above)."""
    t = np.asarray(t)
    if t.dtype.kind != "f":
        return t.astype(np.int64)
    return np.rint(t.astype(np.float64)).astype(np.int64)


class _Polarity:
    """Tracks the polarity convention of one trajectory (-1/+1, or 0/1 once a 0 is seen)."""

    def __init__(self) -> None:
        self.mode: str | None = None

    def __call__(self, p: np.ndarray, where: str) -> tuple[np.ndarray, str]:
        has0, hasneg = bool((p == 0).any()), bool((p < 0).any())
        if has0 and hasneg:
            raise DatasetError(f"{where}: polarity holds both 0 and -1")
        mode = "01" if has0 else ("pm1" if hasneg else self.mode or "pm1")
        if self.mode is not None and (has0 or hasneg) and mode != self.mode:
            raise DatasetError(f"{where}: polarity convention changes ({self.mode} before, {mode} here)")
        if has0 or hasneg:
            self.mode = mode
        return p, mode


def chunk_files(traj: Path) -> list[tuple[int, Path]]:
    """Sorted ``(i, path)`` of the ``event_left/*_event.hdf5`` chunk files."""
    out = []
    for p in (traj / "event_left").glob("*_event.hdf5"):
        m = _CHUNK_RE.match(p.name)
        if m is None:
            raise DatasetError(f"{p}: chunk file name is not '<i:06d>_<i+1:06d>_event.hdf5'")
        out.append((int(m.group(1)), p))
    return sorted(out)


def read_chunk(path: Path, pol: _Polarity | None = None, steps: list[float] | None = None) -> Events:
    """One E-TartanAir chunk file (x, y uint16, p int8, t float32 µs) as schema events; errors name file and key."""
    pol = pol if pol is not None else _Polarity()
    with h5py.File(path, "r") as f:
        cols = {key: check_array(need_key(f, key, path), path, key, ndim=1)[...] for key in ("x", "y", "p", "t")}
    lens = {k: len(v) for k, v in cols.items()}
    if len(set(lens.values())) != 1:
        raise DatasetError(f"{path}: x, y, p, t have different lengths {lens}")
    check_array(cols["t"], path, "t", kinds="fiu")
    if steps is not None and cols["t"].dtype == np.float32 and len(cols["t"]):
        steps.append(float(np.spacing(np.abs(cols["t"]).max())))
    p, mode = pol(cols["p"], f"{path}:p")
    t = float32_times_to_us(cols["t"])
    return Events.from_arrays(cols["x"], cols["y"], t, p, HEIGHT, WIDTH, polarity=mode, source=str(path))


def read_pair_list(path: PathLike) -> set[str]:
    """The chunks ECDDP trains on: the second path of every ``<prev_chunk> <chunk>`` line of ``file_path.txt``
    (its ``get_file_path.py`` already left out chunks under 100 KiB and ``000000_000001``), as posix strings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing E-TartanAir pair list (file_path.txt)")
    out = set()
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected '<prev_chunk> <chunk>', got {raw!r}")
        out.add(Path(parts[1]).as_posix())
    return out


def _listed(name: str, chunk: Path, listed: set[str] | None) -> bool:
    if listed is None:
        return True
    tail = f"{name}/event_left/{chunk.name}"
    return any(p == tail or p.endswith("/" + tail) for p in listed)


def etartanair_chunks(
    traj: Path,
    chunk: int = READ_CHUNK,
    steps: list[float] | None = None,
    listed: set[str] | None = None,
    name: str = "",
) -> Iterator[Events]:
    """Event chunks of a trajectory (chunk files, or ``event_left.h5``); empty when it has none."""
    pol = _Polarity()
    files = chunk_files(traj) if (traj / "event_left").is_dir() else []
    if files:
        for _, path in files:
            if _listed(name, path, listed):
                yield read_chunk(path, pol, steps)
        return
    whole = traj / "event_left.h5"
    if whole.is_file():
        with h5py.File(whole, "r") as f:
            ds = check_array(need_key(f, "events", whole), whole, "events", shape=(None, 4))
            n = ds.shape[0]
            for a in range(0, max(n, 1), chunk):
                block = ds[a : min(a + chunk, n)]  # columns [t, x, y, p] (v2e)
                if steps is not None and block.dtype == np.float32 and len(block):
                    steps.append(float(np.spacing(np.abs(block[:, 0]).max())))
                p, mode = pol(block[:, 3], f"{whole}:events[:, 3]")
                yield Events.from_arrays(
                    block[:, 1],
                    block[:, 2],
                    float32_times_to_us(block[:, 0]),
                    p,
                    HEIGHT,
                    WIDTH,
                    polarity=mode,
                    source=str(whole),
                )
        return
    yield Events.empty(HEIGHT, WIDTH)


def _depth_timed(traj: Path) -> Timed | None:
    d = traj / "depth_left"
    if not d.is_dir():
        return None
    files = sorted(d.glob("*_left_depth.npy"))
    if not files:
        return None
    idx = np.array([int(p.name.split("_")[0]) for p in files], np.int64)

    def load(sel: np.ndarray) -> np.ndarray:
        out = []
        for i in sel:
            arr = np.load(files[i], allow_pickle=False)
            check_array(arr, files[i], "depth", kinds="f", shape=(HEIGHT, WIDTH))
            out.append(arr.astype(np.float32))
        return np.stack(out)

    return Timed("depth", idx * FRAME_US, load, HEIGHT * WIDTH * 4)


def trajectories(root: Path) -> list[Path]:
    """Trajectory folders below ``root`` (those holding ``pose_left.txt``, ``event_left/`` or ``event_left.h5``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: missing TartanAir folder")

    def is_traj(d: Path) -> bool:
        return (d / "pose_left.txt").is_file() or (d / "event_left").is_dir() or (d / "event_left.h5").is_file()

    if is_traj(root):
        return [root]
    found = sorted({p.parent for name in ("pose_left.txt", "event_left.h5") for p in root.rglob(name)})
    found += sorted({p.parent for p in root.rglob("event_left") if p.is_dir()} - set(found))
    if not found:
        raise DatasetError(f"{root}: no TartanAir trajectory folders (none holds pose_left.txt or event_left/)")
    return sorted(set(found))


def convert_tartanair(
    root: PathLike,
    out: PathLike,
    *,
    depth: bool = True,
    poses: bool = True,
    pose_frame: str = "ned",
    per_chunk: bool = False,
    pair_list: PathLike | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert E-TartanAir / TartanAir trajectories; see the module docstring."""
    root = Path(root)
    trajs = trajectories(root)
    listed = read_pair_list(pair_list) if pair_list is not None else None
    parts: dict[str, int] = {}
    steps: list[float] = []
    with StoreWriter(out, **writer_kwargs(options)) as w:
        for traj in trajs:
            name = traj.relative_to(root).as_posix() if traj != root else traj.name
            timed: list[Timed] = []
            if depth and (dt := _depth_timed(traj)) is not None:
                timed.append(dt)
            if poses and (traj / "pose_left.txt").is_file():
                mats = read_tartanair_poses(traj / "pose_left.txt", frame=pose_frame)
                timed.append(
                    Timed("poses", np.arange(len(mats), dtype=np.int64) * FRAME_US, lambda i, m=mats: m[i], 128)
                )
            scene = name.split("/")[0]
            split = "train" if scene in TRAIN_SCENES else "test" if scene in TEST_SCENES else ""
            if per_chunk and (traj / "event_left").is_dir():
                _write_chunks(w, traj, name, timed, split, listed, steps)
                continue
            got = write_long_recording(
                w,
                name,
                etartanair_chunks(traj, steps=steps, listed=listed, name=name),
                timed=timed,
                max_events=max_events,
                max_bytes=max_bytes,
                split=split,
                source=str(traj),
                intrinsics=INTRINSICS,
            )
            if len(got) > 1:
                parts[name] = len(got)
        step = max(steps) if steps else 0.0
        if step > 1:
            log.warning("E-TartanAir: float32 µs timestamps are quantised to %g µs in the latest chunks", step)
        w.set_attrs(
            dataset="tartanair",
            sensor_size=[HEIGHT, WIDTH],
            frame_period_us=FRAME_US,
            pose_frame=pose_frame,
            recording_per_chunk=bool(per_chunk),
            pair_list=None if pair_list is None else str(pair_list),
            float32_time_step_us=step,
            recording_parts=parts,
        )
    return Path(out)


def _write_chunks(
    w: StoreWriter,
    traj: Path,
    name: str,
    timed: list[Timed],
    split: str,
    listed: set[str] | None,
    steps: list[float],
) -> None:
    """One recording per chunk file (``<traj>/<i:06d>``; ECDDP's sample = one chunk), with the frame-``i`` depth and
    pose (at ``i * 1e6`` µs) when the trajectory has them."""
    pol = _Polarity()
    for i, path in chunk_files(traj):
        if not _listed(name, path, listed):
            continue
        ev = read_chunk(path, pol, steps)
        extra: dict[str, Any] = {}
        for tm in timed:
            sel = np.flatnonzero(tm.t == i * FRAME_US)
            if len(sel):
                key_t = "pose_t" if tm.key == "poses" else "dense_t"
                extra[tm.key], extra[key_t] = tm.load(sel), tm.t[sel]
        w.add(ev, name=f"{name}/{i:06d}", split=split, source=str(path), intrinsics=INTRINSICS, **extra)
