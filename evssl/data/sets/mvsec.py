"""MVSEC (Zhu et al., RA-L 2018): the official ``<seq>_data.hdf5`` / ``<seq>_gt.hdf5`` release.

Layout, as written by the release script (``daniilidis-group/mvsec`` branch ``mvsec_hdf5``,
``tools/mvsec_simple_reader/mvsec_h5py.py``)::

    <seq>_data.hdf5  /davis/<cam>/events              (N, 4) float64  [x, y, t, p]: t in s (ROS epoch), p = -1/+1
                     /davis/<cam>/image_raw           (M, 260, 346) uint8 APS frames
                     /davis/<cam>/image_raw_ts        (M,) float64 s
    <seq>_gt.hdf5    /davis/<cam>/depth_image_rect    (D, 260, 346) float32 metres, NaN = no depth  (+ ``_ts``)
                     /davis/<cam>/depth_image_raw     (D, 260, 346) float32                          (+ ``_ts``)
                     /davis/<cam>/flow_dist           (F, 2, 260, 346) float64 px over the step to the next GT sample
                     /davis/<cam>/flow_dist_ts        (F,) float64 s
                     /davis/<cam>/pose, odometry      (P, 4, 4) float64 T_w_c  (+ ``_ts``)

Conversions: t -> µs as ``rint(t * 1e6)`` int64 (absolute; float64 holds ROS-epoch seconds to ~0.3 µs); the polarity
column is **already -1/+1** (``(polarity - 0.5) * 2`` in the writer), so it is kept as is, and a 0 in it is an
error (a re-encoded copy: mapping it with ``2p - 1`` would give -3/+1); APS frames are stored as RGB (gray repeated
on 3 channels, the store's frame layout). Events are read in chunks of the (N, 4) array.

Pitfall: ``flow_dist[0]`` duplicates ``flow_dist[1]`` (the writer's ``FlowReader.__getitem__(0)`` returns sample 1
with timestamp 0), so it is not the flow at ``flow_dist_ts[0]``; when ``flow_dist[0] == flow_dist[1]`` index 0 is
dropped. Depth and flow share one ``dense_t`` in the store: with both requested, only the depth maps whose
timestamps equal a kept flow timestamp are stored (the release computes flow on the rectified depth maps, so they
coincide); ``dense=("depth",)`` or ``("flow",)`` keeps all of one.

Sequences: ``indoor_flying{1..4}``, ``outdoor_day{1,2}``, ``outdoor_night{1,2,3}``, ``motorcycle1`` (no GT). The
split stored is ``split`` if given, else the family (``indoor_flying``, ``outdoor_day``, ``outdoor_night``, ...), so
``train_split: outdoor_day`` / ``test_split: indoor_flying`` select them; ``sequences`` restricts the set.
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
    need_file,
    need_key,
    write_long_recording,
    writer_kwargs,
)
from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events

log = logging.getLogger(__name__)

HEIGHT, WIDTH = 260, 346
DEPTH_KEYS = ("depth_image_rect", "depth_image_raw")


def to_us(t_s: np.ndarray) -> np.ndarray:
    """Seconds (float64, ROS epoch) to int64 µs, rounded."""
    return np.rint(np.asarray(t_s, np.float64) * 1e6).astype(np.int64)


def family(seq: str) -> str:
    """``indoor_flying3`` -> ``indoor_flying``."""
    return re.sub(r"\d+$", "", seq)


def event_chunks(path: Path, cam: str, chunk: int = READ_CHUNK) -> Iterator[Events]:
    """Events of ``/davis/<cam>/events`` in schema chunks (see the module docstring)."""
    with h5py.File(path, "r") as f:
        key = f"davis/{cam}/events"
        ds = check_array(need_key(f, key, path), path, key, kinds="f", shape=(None, 4))
        n = ds.shape[0]
        for a in range(0, max(n, 1), chunk):
            block = ds[a : min(a + chunk, n)]
            p = block[:, 3]
            if len(p) and ((p != 1) & (p != -1)).any():
                i = int(np.flatnonzero((p != 1) & (p != -1))[0])
                raise DatasetError(
                    f"{path}: key {key!r} row {a + i} has polarity {p[i]:g}; the official files hold -1/+1 "
                    "(a 0/1 copy would need re-encoding, and mapping -1/+1 with 2p-1 gives -3/+1)"
                )
            yield Events.from_arrays(
                block[:, 0], block[:, 1], to_us(block[:, 2]), p, HEIGHT, WIDTH, polarity="pm1", source=f"{path}:{key}"
            )


def _find_pairs(root: Path) -> list[tuple[str, Path, Path | None]]:
    if root.is_file():
        files = [root]
    else:
        if not root.is_dir():
            raise DatasetError(f"{root}: missing MVSEC folder or *_data.hdf5 file")
        files = sorted(root.glob("*_data.hdf5"))
        if not files:
            raise DatasetError(f"{root}: no MVSEC *_data.hdf5 files")
    out = []
    for f in files:
        if not f.name.endswith("_data.hdf5"):
            raise DatasetError(f"{f}: not an MVSEC <seq>_data.hdf5 file")
        seq = f.name[: -len("_data.hdf5")]
        gt = f.with_name(f"{seq}_gt.hdf5")
        out.append((seq, f, gt if gt.is_file() else None))
    return out


def _timed_h5(f: h5py.File, path: Path, key: str, idx_sel: np.ndarray | None = None, kinds: str = "f"):
    """(timestamps µs, lazy loader) of ``key`` / ``key + '_ts'``."""
    ds = need_key(f, key, path)
    ts = to_us(check_array(need_key(f, f"{key}_ts", path), path, f"{key}_ts", kinds="f", ndim=1)[...])
    check_array(ds, path, key, kinds=kinds)
    if ds.shape[0] != len(ts):
        raise DatasetError(f"{path}: key {key!r} has {ds.shape[0]} items but {key}_ts has {len(ts)}")
    base = np.arange(len(ts)) if idx_sel is None else idx_sel
    return ts[base], base, ds


def convert_mvsec(
    root: PathLike,
    out: PathLike,
    *,
    camera: str = "left",
    frames: bool = True,
    dense: tuple[str, ...] = ("depth", "flow"),
    depth_key: str = "depth_image_rect",
    poses: str | None = "pose",
    split: str | None = None,
    sequences: tuple[str, ...] | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert MVSEC ``*_data.hdf5`` (+ ``*_gt.hdf5``) sequences; see the module docstring."""
    if camera not in ("left", "right"):
        raise ValueError(f"camera must be 'left' or 'right', got {camera!r}")
    unknown = set(dense) - {"depth", "flow"}
    if unknown:
        raise ValueError(f"MVSEC dense keys are 'depth' and 'flow', got {sorted(unknown)}")
    if depth_key not in DEPTH_KEYS:
        raise ValueError(f"depth_key must be one of {DEPTH_KEYS}, got {depth_key!r}")
    if poses not in (None, "pose", "odometry"):
        raise ValueError(f"poses must be 'pose', 'odometry' or None, got {poses!r}")
    pairs = _find_pairs(Path(root))
    if sequences:
        pairs = [p for p in pairs if p[0] in set(sequences)]
        if not pairs:
            raise DatasetError(f"{root}: none of the sequences {list(sequences)}")
    parts: dict[str, int] = {}
    dropped_first_flow: list[str] = []
    with StoreWriter(out, **writer_kwargs(options)) as w:
        for seq, data_path, gt_path in pairs:
            need_file(data_path, "MVSEC data file")
            with h5py.File(data_path, "r") as fd:
                timed: list[Timed] = []
                if frames:
                    key = f"davis/{camera}/image_raw"
                    if key in fd:
                        ts, base, ds = _timed_h5(fd, data_path, key, kinds="u")
                        check_array(ds, data_path, key, kinds="u", shape=(None, HEIGHT, WIDTH))

                        def load_frames(i, ds=ds, base=base):
                            gray = ds[np.sort(base[i])]
                            return np.repeat(gray[..., None], 3, axis=-1)

                        timed.append(Timed("frames", ts, load_frames, HEIGHT * WIDTH * 3))
                    else:
                        log.info("MVSEC: %s has no %s (no frames)", data_path, key)
                fg = h5py.File(gt_path, "r") if gt_path is not None and (dense or poses) else None
                try:
                    if fg is not None:
                        timed += _gt_timed(fg, gt_path, camera, dense, depth_key, poses, seq, dropped_first_flow)
                    elif dense or poses:
                        log.info("MVSEC: %s has no _gt.hdf5 (events only)", seq)
                    got = write_long_recording(
                        w,
                        seq,
                        event_chunks(data_path, camera),
                        timed=timed,
                        max_events=max_events,
                        max_bytes=max_bytes,
                        split=split if split is not None else family(seq),
                        source=str(data_path),
                    )
                finally:
                    if fg is not None:
                        fg.close()
            if len(got) > 1:
                parts[seq] = len(got)
        w.set_attrs(
            dataset="mvsec",
            camera=camera,
            sensor_size=[HEIGHT, WIDTH],
            depth_key=depth_key if "depth" in dense else None,
            flow_unit="pixels of displacement to the next GT sample",
            dropped_duplicate_flow_dist0=dropped_first_flow,
            recording_parts=parts,
        )
    return Path(out)


def _gt_timed(
    fg: h5py.File,
    path: Path,
    cam: str,
    dense: tuple[str, ...],
    depth_key: str,
    poses: str | None,
    seq: str,
    dropped: list[str],
) -> list[Timed]:
    out: list[Timed] = []
    flow_ts = flow_idx = flow_ds = None
    if "flow" in dense:
        key = f"davis/{cam}/flow_dist"
        flow_ts, flow_idx, flow_ds = _timed_h5(fg, path, key)
        check_array(flow_ds, path, key, kinds="f", shape=(None, 2, HEIGHT, WIDTH))
        if len(flow_ts) > 1 and np.array_equal(flow_ds[0], flow_ds[1], equal_nan=True):
            flow_ts, flow_idx = flow_ts[1:], flow_idx[1:]
            dropped.append(seq)
    depth_ts = depth_idx = depth_ds = None
    if "depth" in dense:
        key = f"davis/{cam}/{depth_key}"
        depth_ts, depth_idx, depth_ds = _timed_h5(fg, path, key)
        check_array(depth_ds, path, key, kinds="f", shape=(None, HEIGHT, WIDTH))
    if flow_ts is not None and depth_ts is not None:
        common, di, fi = np.intersect1d(depth_ts, flow_ts, return_indices=True)
        if not len(common):
            raise DatasetError(
                f"{path}: no depth timestamp equals a flow_dist timestamp; convert with dense=('depth',) or ('flow',)"
            )
        depth_ts, depth_idx = depth_ts[di], depth_idx[di]
        flow_ts, flow_idx = flow_ts[fi], flow_idx[fi]
    if flow_ts is not None:
        out.append(
            Timed(
                "flow", flow_ts, lambda i, ds=flow_ds, b=flow_idx: ds[b[i]].astype(np.float32), 2 * HEIGHT * WIDTH * 4
            )
        )
    if depth_ts is not None:
        out.append(
            Timed(
                "depth", depth_ts, lambda i, ds=depth_ds, b=depth_idx: ds[b[i]].astype(np.float32), HEIGHT * WIDTH * 4
            )
        )
    if poses is not None:
        key = f"davis/{cam}/{poses}"
        if key in fg:
            ts, base, ds = _timed_h5(fg, path, key)
            check_array(ds, path, key, kinds="f", shape=(None, 4, 4))
            out.append(Timed("poses", ts, lambda i, ds=ds, b=base: ds[b[i]], 128))
        else:
            log.info("MVSEC: %s has no %s (no poses)", path, key)
    return out
