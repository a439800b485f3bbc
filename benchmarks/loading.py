"""Loading throughput of the evssl event store through a torch DataLoader, and its compression ratio.

Builds (or reuses) a store of synthetic random events (default 2,000 recordings x 20k events on a 480x640 sensor,
250 ms each), then reads one random 50 ms window per sample through ``torch.utils.data.DataLoader`` with 0/1/2
workers, collating with :func:`evssl.data.collate.collate_events` and (when :mod:`evssl.events.representations` is
importable) voxelising in the workers with ``voxel_grid(bins=5)``. Sources compared in the same run:

* ``memory``: the same events as in-memory numpy columns (``searchsorted`` windows) — the no-I/O ceiling;
* ``store/none``: the evssl store without compression (HDF5 overhead only);
* ``store/<compression>``: the evssl store as built (default Blosc-ZSTD, clevel 3).

Uniform random x/y/p are a pessimistic case for compression (real streams have spatial locality).

    python benchmarks/loading.py                       # full run (~1-2 min on 2 cores)
    python benchmarks/loading.py --recordings 200 --seconds 1 --workers 0 1   # quick look
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evssl.data.collate import collate_events
from evssl.events.io.store import DEFAULT_CHUNK_EVENTS, EventStore, StoreWriter
from evssl.events.schema import Events
from evssl.events.slicing import random_window

try:  # written by another part of the project; fall back to collating only
    from evssl.events.representations import voxel_grid
except ImportError:  # pragma: no cover
    voxel_grid = None


# ---------------------------------------------------------------------------------------------------- data
def synth_recording(rng: np.random.Generator, n: int, h: int, w: int, duration_us: int) -> Events:
    """Uniform random events (x, y, polarity) with sorted uniform timestamps in [0, duration_us)."""
    return Events(
        rng.integers(0, w, n, dtype=np.int16),
        rng.integers(0, h, n, dtype=np.int16),
        np.sort(rng.integers(0, duration_us, n, dtype=np.int64)),
        (rng.integers(0, 2, n, dtype=np.int8) * 2 - 1).astype(np.int8),
        h,
        w,
    )


def build_store(path: Path, args: argparse.Namespace, compression: str, recordings: list[Events] | None) -> float:
    """Write the synthetic store (regenerated from the seed, or from ``recordings``); returns seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    with StoreWriter(path, compression=compression, clevel=args.clevel, chunk_events=args.chunk_events) as wr:
        wr.set_classes([f"class{k}" for k in range(10)])
        wr.set_attrs(benchmark=params(args))
        for i in range(args.recordings):
            ev = (
                recordings[i]
                if recordings is not None
                else synth_recording(rng, args.events, args.height, args.width, args.duration_us)
            )
            wr.add(ev, name=f"rec{i:05d}", label=i % 10)
    return time.perf_counter() - t0


def params(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("recordings", "events", "height", "width", "duration_us", "seed", "clevel", "chunk_events")
    return {k: getattr(args, k) for k in keys}


class MemorySource:
    """The same recordings as numpy columns in memory, with the store's window() interface."""

    def __init__(self, recordings: list[Events]) -> None:
        self.recordings = recordings
        self.t_start = np.array([int(r.t[0]) for r in recordings])
        self.t_end = np.array([int(r.t[-1]) for r in recordings])
        self.labels = np.arange(len(recordings)) % 10

    def __len__(self) -> int:
        return len(self.recordings)

    def window(self, i: int, t0: int, t1: int) -> Events:
        r = self.recordings[i]
        lo, hi = np.searchsorted(r.t, [t0, t1])
        return Events(r.x[lo:hi].copy(), r.y[lo:hi].copy(), r.t[lo:hi].copy(), r.p[lo:hi].copy(), r.height, r.width)


class RandomWindows(Dataset):
    """Sample k: a random recording and a random ``window_us`` window in it (deterministic in k)."""

    def __init__(self, source: EventStore | MemorySource, window_us: int, length: int, seed: int = 0) -> None:
        self.source = source
        self.window_us = window_us
        self.length = length
        self.seed = seed
        if isinstance(source, EventStore):
            info = [source.info(i) for i in range(len(source))]
            self.t_start = np.array([x.t_start for x in info])
            self.t_end = np.array([x.t_end for x in info])
        else:
            self.t_start, self.t_end = source.t_start, source.t_end
        self.labels = source.labels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, k))
        i = int(rng.integers(len(self.t_start)))
        t0, t1 = random_window(rng, t_start=int(self.t_start[i]), t_end=int(self.t_end[i]), duration_us=self.window_us)
        return {"events": self.source.window(i, t0, t1), "window": (t0, t1), "label": int(self.labels[i])}


class CollateVoxel:
    """collate_events, then a 5-bin voxel grid of the batch (in the worker)."""

    def __init__(self, bins: int) -> None:
        self.bins = bins

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_events(samples)
        batch["input"] = voxel_grid(batch["events"], self.bins)
        return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def measure(
    ds: RandomWindows, workers: int, batch_size: int, collate: Any, seconds: float, segments: int = 3
) -> tuple[float, float, float]:
    """Throughput of one DataLoader configuration.

    After a warm-up of 2 batches per worker (worker start excluded), runs ``segments`` segments of
    ``seconds / segments`` each and returns the best segment's (samples/s, events/s) — the best of several is the
    least disturbed by other processes on a shared machine — and samples per CPU-second of the main process (all the
    work when ``workers == 0``; only receiving otherwise).
    """
    kw: dict[str, Any] = {}
    if workers:
        kw = dict(multiprocessing_context="fork", worker_init_fn=_worker_init, prefetch_factor=4)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate, shuffle=False, **kw)
    it = iter(loader)
    for _ in range(2 * max(workers, 1)):
        next(it)
    best = (0.0, 0.0)
    total = 0
    cpu0 = time.process_time()
    for _ in range(segments):
        samples = events = 0
        t0 = time.perf_counter()
        while True:
            b = next(it)
            samples += len(b["label"])
            events += len(b["events"])
            el = time.perf_counter() - t0
            if el >= seconds / segments:
                break
        total += samples
        best = max(best, (samples / el, events / el))
    cpu = time.process_time() - cpu0
    del it
    return best[0], best[1], total / max(cpu, 1e-9)


def file_size(path: Path) -> int:
    return path.stat().st_size


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recordings", type=int, default=2000)
    p.add_argument("--events", type=int, default=20_000, help="events per recording")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--duration-us", type=int, default=250_000, help="length of each recording")
    p.add_argument("--window-us", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration (best of 3 parts)")
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--compression", default="blosc-zstd")
    p.add_argument("--clevel", type=int, default=3)
    p.add_argument("--chunk-events", type=int, default=DEFAULT_CHUNK_EVENTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "evssl_bench")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached stores")
    p.add_argument("--no-uncompressed", action="store_true", help="skip the uncompressed-store comparison")
    p.add_argument("--npz-recordings", type=int, default=200, help="recordings saved as .npz for the size ratio")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    tag = f"r{args.recordings}_e{args.events}_{args.height}x{args.width}_d{args.duration_us}_s{args.seed}"
    total = args.recordings * args.events
    print(f"# evssl loading benchmark — {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread per process")
    print(
        f"# {args.recordings} recordings x {args.events:,} events ({total / 1e6:.0f} M events, "
        f"{total * 13 / 1e6:.0f} MB as raw 13-B events), {args.height}x{args.width}, "
        f"{args.duration_us / 1e3:.0f} ms each; {args.window_us / 1e3:.0f} ms windows, batch {args.batch_size}"
    )

    # ---- build or reuse the stores
    path = args.cache_dir / f"loading_{tag}_{args.compression}{args.clevel}_c{args.chunk_events}.h5"
    reuse = False
    if path.exists() and not args.rebuild:
        try:
            reuse = EventStore(path).attrs.get("benchmark") == params(args)
        except Exception:
            reuse = False
    if reuse:
        print(f"# reusing {path}")
    else:
        sec = build_store(path, args, args.compression, None)
        print(f"# built {path} in {sec:.1f} s ({total / sec / 1e6:.1f} M events/s incl. generation)")
    store = EventStore(path)
    t0 = time.perf_counter()
    recordings = [store.events(i) for i in range(len(store))]
    sec = time.perf_counter() - t0
    print(f"# full sequential read of the store: {sec:.2f} s = {total / sec / 1e6:.0f} M events/s")
    sources: list[tuple[str, EventStore | MemorySource]] = [("memory (numpy)", MemorySource(recordings))]
    if not args.no_uncompressed:
        raw_path = args.cache_dir / f"loading_{tag}_none_c{args.chunk_events}.h5"
        if args.rebuild or not raw_path.exists() or EventStore(raw_path).attrs.get("benchmark") != params(args):
            build_store(raw_path, args, "none", recordings)
        sources.append(("store / none", EventStore(raw_path)))
    sources.append((f"store / {args.compression} {args.clevel}", store))

    # ---- sizes
    sub = recordings[: args.npz_recordings]
    sub_events = sum(len(r) for r in sub)
    cols = {f: np.concatenate([getattr(r, f) for r in sub]) for f in ("x", "y", "t", "p")}
    cols["offsets"] = np.cumsum([0] + [len(r) for r in sub])
    npz, npzc = args.cache_dir / "sub.npz", args.cache_dir / "sub_compressed.npz"
    np.savez(npz, **cols)
    t0 = time.perf_counter()
    np.savez_compressed(npzc, **cols)
    npzc_sec = time.perf_counter() - t0
    store_bpe = file_size(path) / total
    rows = [
        ("raw columns (x,y int16, t int64, p int8)", 13.0),
        ("np.savez (uncompressed)", file_size(npz) / sub_events),
        (f"np.savez_compressed ({sub_events / npzc_sec / 1e6:.1f} M ev/s to write)", file_size(npzc) / sub_events),
    ]
    if not args.no_uncompressed:
        rows.append(("evssl store, no compression", file_size(raw_path) / total))
    rows.append((f"evssl store, {args.compression} clevel {args.clevel}", store_bpe))
    print(f"\n## Size (bytes per event; .npz measured on the first {len(sub)} recordings)\n")
    print("| format | B/event | store is smaller by |")
    print("|---|---|---|")
    for name, bpe in rows:
        print(f"| {name} | {bpe:.2f} | {bpe / store_bpe:.2f}x |")
    npz.unlink()
    npzc.unlink()

    # ---- throughput
    modes: list[tuple[str, Any]] = [("collate", collate_events)]
    if voxel_grid is not None:
        modes.append((f"collate + voxel_grid({args.bins})", CollateVoxel(args.bins)))
    else:
        print("\n(evssl.events.representations not available: collate only)")
    print(
        f"\n## DataLoader throughput (random {args.window_us // 1000} ms window per sample, batch {args.batch_size}, "
        f"best of 3 x {args.seconds / 3:g} s)\n"
    )
    print("| source | per batch | workers | samples/s | M events/s | samples per main-process CPU-s |")
    print("|---|---|---|---|---|---|")
    length = 10**9
    for mode, collate in modes:
        for name, src in sources:
            ds = RandomWindows(src, args.window_us, length, seed=args.seed)
            for wk in args.workers:
                sps, eps, per_cpu = measure(ds, wk, args.batch_size, collate, args.seconds)
                cpu_col = f"{per_cpu:,.0f}" if wk == 0 else "—"
                print(f"| {name} | {mode} | {wk} | {sps:,.0f} | {eps / 1e6:.2f} | {cpu_col} |", flush=True)


if __name__ == "__main__":
    main()
