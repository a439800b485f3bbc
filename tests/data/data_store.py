"""A tiny hand-made event store with known content, written with StoreWriter (helpers for tests/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evssl.events.schema import Events

H, W = 24, 32
CLS_DURATION = 200_000
FRAME_DT = 50_000
SEQ_DURATION = 1_000_000
SEQ_FRAME_DT = 40_000
FLOW = (1.5, -0.5)
SPLITS = ["train", "train", "train", "val", "test", "train"]
# recording 6: short (shorter than the default 50 ms window, no frames), split "short"; 7, 8: sequences


def shape_mask() -> np.ndarray:
    """An asymmetric mask (an 'L' plus a bar), so that flips and shifts are visible."""
    yy, xx = np.mgrid[0:H, 0:W]
    return ((xx >= 3) & (xx < 9) & (yy >= 4) & (yy < 20)) | ((xx >= 3) & (xx < 25) & (yy >= 15) & (yy < 20))


def encode_depth(k: int) -> np.ndarray:
    """Depth map that encodes the pixel it came from and its index: y * W + x + 1000 * k."""
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy * W + xx + 1000 * k).astype(np.float32)


def frame(k: int) -> np.ndarray:
    """(H, W, 3) uint8 frame: channel 0 = x, channel 1 = y, channel 2 = frame index."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx, yy, np.full_like(xx, k)], axis=-1).astype(np.uint8)


def make_events(rng: np.random.Generator, n: int, t0: int, t1: int) -> Events:
    """``n`` events with distinct timestamps spanning exactly [t0, t1] (first at t0, last at t1)."""
    t = np.sort(rng.choice(np.arange(t0 + 1, t1), size=n - 2, replace=False))
    t = np.concatenate([[t0], t, [t1]]).astype(np.int64)
    x = rng.integers(0, W, n)
    y = rng.integers(0, H, n)
    p = rng.choice([-1, 1], n)
    return Events.from_arrays(x, y, t, p, H, W)


def write_test_store(path: Path, with_splits: bool = True) -> Path:
    """6 classification clips + 1 short clip + 2 sequences (see the module constants)."""
    from evssl.events.io.store import StoreWriter

    rng = np.random.default_rng(1234)
    sem = shape_mask().astype(np.uint8)
    with StoreWriter(path, compression="none") as w:
        w.set_classes(["a", "b", "c"])
        w.set_attrs(note="tests/data store")
        for r in range(6):
            t0 = 1_000 + 17 * r
            ev = make_events(rng, 4000, t0, t0 + CLS_DURATION)
            ft = t0 + FRAME_DT * np.arange(5)
            w.add(
                ev,
                name=f"clip{r}",
                label=r % 3,
                split=SPLITS[r] if with_splits else "",
                frames=np.stack([frame(k) for k in range(5)]),
                frame_t=ft,
                semantic=np.stack([sem] * 5),
                flow=np.stack([np.stack([np.full((H, W), FLOW[0]), np.full((H, W), FLOW[1])])] * 5).astype(np.float32),
                depth=np.stack([encode_depth(k) for k in range(5)]),
                dense_t=ft,
            )
        w.add(make_events(rng, 300, 5_000, 25_000), name="short", label=0, split="short" if with_splits else "")
        for s in range(2):
            t0 = 10_000
            ev = make_events(rng, 20_000, t0, t0 + SEQ_DURATION)
            ft = t0 + SEQ_FRAME_DT * np.arange(SEQ_DURATION // SEQ_FRAME_DT + 1)
            poses = np.tile(np.eye(4), (len(ft), 1, 1))
            poses[:, 0, 3] = (ft - t0) / 1e6  # x translation = seconds since start
            w.add(
                ev,
                name=f"seq{s}",
                label=-1,
                split="sequence" if with_splits else "",
                frames=np.stack([frame(k) for k in range(len(ft))]),
                frame_t=ft,
                poses=poses,
                pose_t=ft,
                intrinsics=np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]]),
            )
    return path
