"""Writers of small fixtures in the exact documented on-disk layouts of the data sets (names, dtypes, units, shapes).

Each writer follows ``shared/reference/dataset_layouts.md`` (the section is named in its docstring) and returns what
it wrote, so tests compare the converted store with the source values.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from evssl.data.sets._common import write_png

REAL_DATA = Path(os.environ.get("EVSSL_REAL_DATA", Path(__file__).resolve().parents[3] / "../shared/real-data"))
REAL_DATA_LABELLED = Path(
    os.environ.get("EVSSL_REAL_DATA_LABELLED", Path(__file__).resolve().parents[3] / "../shared/real-data-labelled")
)


def random_events(rng: np.random.Generator, n: int, h: int, w: int, t0: int = 0, t1: int = 100_000):
    """Sorted integer events (x, y, t µs, p in 0/1) on an (h, w) sensor."""
    t = np.sort(rng.integers(t0, t1, n))
    return rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, 2, n)


# ------------------------------------------------------------------------------------------------ N-Cars / Caltech
def write_dat(path: Path, x, y, t, p) -> None:
    """Prophesee .dat v2 (N-Cars): '%' header, event type 0 / size 8, then <u4 t, <u4 x|y<<14|p<<28."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = b"% Data file containing Event2D events.\n% Version 2\n% Date 2017-01-01 00:00:00\n"
    rec = np.zeros(len(t), dtype=[("t", "<u4"), ("data", "<u4")])
    rec["t"] = t
    rec["data"] = np.asarray(x, np.uint32) | (np.asarray(y, np.uint32) << 14) | (np.asarray(p, np.uint32) << 28)
    path.write_bytes(hdr + bytes([0, 8]) + rec.tobytes())


def write_bin40(path: Path, x, y, t, p) -> None:
    """N-Caltech101 .bin: 5-byte big-endian records x, y, p<<7 | t[22:16], t[15:8], t[7:0] (t < 2**23)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.asarray(t, np.int64)
    assert t.max() < (1 << 23)
    buf = np.zeros((len(t), 5), np.uint8)
    buf[:, 0], buf[:, 1] = x, y
    buf[:, 2] = (np.asarray(p, np.int64) << 7) | ((t >> 16) & 0x7F)
    buf[:, 3], buf[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    path.write_bytes(buf.tobytes())


def write_nimagenet_npz(path: Path, x, y, t, p, compressed: bool = True) -> None:
    """N-ImageNet (§6): ``event_data`` structured x, y, t (µs int), p (bool), or x_pos/y_pos/timestamp/polarity."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if compressed:
        arr = np.zeros(len(t), dtype=[("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "?")])
        arr["x"], arr["y"], arr["t"], arr["p"] = x, y, t, np.asarray(p).astype(bool)
        np.savez_compressed(path, event_data=arr)
    else:
        np.savez(
            path,
            x_pos=np.asarray(x, np.uint16),
            y_pos=np.asarray(y, np.uint16),
            timestamp=np.asarray(t),
            polarity=np.asarray(p).astype(bool),
        )


# ------------------------------------------------------------------------------------------------ DSEC (§1-3)
def ms_to_idx(t: np.ndarray) -> np.ndarray:
    """DSEC's index: entry ms = first index with t >= 1000 ms (repeats for empty milliseconds)."""
    n_ms = int(t[-1]) // 1000 + 1 if len(t) else 1
    return np.searchsorted(t, np.arange(n_ms) * 1000, side="left").astype(np.uint64)


def write_dsec_events(folder: Path, x, y, t_rel, p, t_offset: int, rectify_map: np.ndarray | None) -> Path:
    """``events.h5`` (x u2, y u2, p u1, t u4 relative µs; ms_to_idx u8; t_offset i8), Blosc-ZSTD, + rectify_map.h5."""
    folder.mkdir(parents=True, exist_ok=True)
    comp = hdf5plugin.Blosc(cname="zstd")
    with h5py.File(folder / "events.h5", "w") as f:
        g = f.create_group("events")
        g.create_dataset("x", data=np.asarray(x, "<u2"), **comp)
        g.create_dataset("y", data=np.asarray(y, "<u2"), **comp)
        g.create_dataset("p", data=np.asarray(p, "u1"), **comp)
        g.create_dataset("t", data=np.asarray(t_rel, "<u4"), **comp)
        f.create_dataset("ms_to_idx", data=ms_to_idx(np.asarray(t_rel)), **comp)
        f.create_dataset("t_offset", data=np.int64(t_offset))
    if rectify_map is not None:
        with h5py.File(folder / "rectify_map.h5", "w") as f:
            f.create_dataset("rectify_map", data=rectify_map.astype(np.float32))
    return folder / "events.h5"


def shift_rectify_map(dx: float, dy: float, h: int = 480, w: int = 640) -> np.ndarray:
    """A non-identity rectification: (x, y) -> (x + dx, y + dy) (pixels shifted out of frame fall outside)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xx + dx, yy + dy], -1)


def encode_flow_png(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """DSEC-Flow 16-bit encoding (§2): ch0 = 2**15 + 128 fx, ch1 = 2**15 + 128 fy, ch2 = valid (RGB order)."""
    img = np.zeros((*valid.shape, 3), np.uint16)
    img[..., 0] = np.rint(flow[0] * 128 + 2**15).astype(np.uint16)
    img[..., 1] = np.rint(flow[1] * 128 + 2**15).astype(np.uint16)
    img[..., 2] = valid.astype(np.uint16)
    img[~valid, :2] = 0
    return img


__all__ = [
    "REAL_DATA",
    "REAL_DATA_LABELLED",
    "encode_flow_png",
    "ms_to_idx",
    "random_events",
    "shift_rectify_map",
    "write_bin40",
    "write_dat",
    "write_dsec_events",
    "write_nimagenet_npz",
    "write_png",
]
