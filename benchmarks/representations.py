"""Throughput of the event representations, beside a NumPy reference and the raw cost of copying the events.

Prints one table: for each event count (default 1M and 10M, 480x640 sensor, 5 bins) and device (CPU with one thread,
plus CUDA when present), the best-of-N wall time, events/s and ns/event of

* ``copy``: ``np.copy`` / ``torch.clone`` of the four event columns (x, y int16; t int64; p int8) — the floor;
* ``numpy add.at voxel``: a straightforward NumPy voxel grid with the same bilinear math, float32 throughout
  (dtype-matched, so ``np.add.at`` takes its fast path) — the reference;
* every representation of :mod:`evssl.events.representations` (one sample, and the voxel grid also for a batch of 8
  samples holding the same events). On CPU each twice: ``[fused]``, the numba kernels the functions use on CPU, and
  ``[torch]``, the blocked pure-torch path they fall back to without numba (and use on other devices).

Timing excludes numba's compilation: every case gets one untimed warm-up call, and the first-call cost (compile, or
loading numba's on-disk cache) is printed separately.

The last columns give the speed-up over the NumPy reference and the ns/event ratio between the largest and the
smallest event count (1.0 = linear). Synthetic events are uniform in x, y (a pessimistic access pattern: real streams
have spatial locality) with sorted timestamps over 50 ms.

    python benchmarks/representations.py                 # 1M and 10M events, 5 repeats
    python benchmarks/representations.py --sizes 1e6 --repeats 9 --clock thread
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # the kernels are single-threaded; keep numba's pool to one thread

import numpy as np
import torch

from evssl.events import representations as R
from evssl.events.batch import EventBatch


def numpy_voxel_grid(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, bins: int, h: int, w: int, t0: int, t1: int
) -> np.ndarray:
    """Reference: the same bilinear voxel grid as :func:`evssl.events.representations.voxel_grid`, in plain NumPy."""
    grid = np.zeros(bins * h * w, np.float32)
    tn = (t - t0).astype(np.float32) * np.float32(bins - 1) / np.float32(max(t1 - 1 - t0, 1))
    np.clip(tn, 0, bins - 1, out=tn)
    lower = np.minimum(np.floor(tn), np.float32(bins - 2))
    w1 = tn - lower
    pf = p.astype(np.float32)
    idx = lower.astype(np.int64) * (h * w) + y.astype(np.int64) * w + x
    assert w1.dtype == np.float32 and pf.dtype == np.float32, "dtype mismatch would leave np.add.at's fast path"
    np.add.at(grid, idx, pf * (1 - w1))
    np.add.at(grid, idx + h * w, pf * w1)
    return grid.reshape(bins, h, w)


CLOCK = {"wall": time.perf_counter, "thread": time.thread_time}
clock = CLOCK["wall"]


Case = tuple[str, str, Callable[[], Any]]  # (name, device, call)


def best_times(cases: list[Case], repeats: int) -> list[float]:
    """Best time in seconds of each case over ``repeats`` rounds, after one warm-up call each.

    Rounds are interleaved (every case once per round), so on a shared machine all cases see the same background
    load. CUDA cases are synchronised and always timed by wall clock.
    """

    def once(dev: str, fn: Callable[[], Any]) -> float:
        now = time.perf_counter if dev == "cuda" else clock
        t0 = now()
        fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        return now() - t0

    for _, dev, fn in cases:
        once(dev, fn)
    best = [float("inf")] * len(cases)
    for _ in range(repeats):
        for i, (_, dev, fn) in enumerate(cases):
            best[i] = min(best[i], once(dev, fn))
    return best


@contextlib.contextmanager
def torch_path() -> Iterator[None]:
    """Send CPU batches down the pure-torch path (what the functions do where numba is missing)."""
    saved = R._USE_FUSED
    R._USE_FUSED = False
    try:
        yield
    finally:
        R._USE_FUSED = saved


def on_torch_path(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with torch_path():
            return fn()

    return call


def first_calls(h: int, w: int, bins: int) -> list[tuple[str, float, float]]:
    """Process and wall time of ``import numba`` and of each fused kernel's first call on a tiny batch: numba's
    compilation, or loading its on-disk cache."""
    cols = synthetic(1000, h, w)
    ev = batch_of(cols, h, w, 1, "cpu")
    out = []
    for name, fn in (
        ("import numba (lazy, first CPU call)", lambda: R._fused_kernels(ev)),
        ("voxel_grid", lambda: R.voxel_grid(ev, bins)),
        ("histogram / stacked_histogram", lambda: R.stacked_histogram(ev, bins)),
        ("time_surface", lambda: R.time_surface(ev, 10_000.0)),
    ):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        out.append((name, time.process_time() - c0, time.perf_counter() - w0))
    return out


def synthetic(n: int, h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, w, n).astype(np.int16),
        "y": rng.integers(0, h, n).astype(np.int16),
        "t": np.sort(rng.integers(0, 50_000, n)).astype(np.int64) + 1_700_000_000_000_000,
        "p": (rng.integers(0, 2, n) * 2 - 1).astype(np.int8),
    }


def batch_of(cols: dict[str, np.ndarray], h: int, w: int, samples: int, device: str) -> EventBatch:
    """The events as ``samples`` equal consecutive samples, each with the 50 ms window."""
    n = len(cols["x"])
    bi = torch.from_numpy(np.arange(n) * samples // max(n, 1))
    t0 = int(cols["t"][0]) - int(cols["t"][0]) % 50_000
    ev = EventBatch.from_tensors(
        *(torch.from_numpy(cols[f]) for f in ("x", "y", "t", "p")),
        height=h,
        width=w,
        batch_index=bi,
        batch_size=samples,
        t_start=torch.full((samples,), t0),
        t_end=torch.full((samples,), t0 + 50_000),
    )
    return ev.to(device)


def run(sizes: list[int], h: int, w: int, bins: int, repeats: int, threads: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict[str, Any]] = []
    for n in sizes:
        cols = synthetic(n, h, w)
        t0 = int(cols["t"][0]) - int(cols["t"][0]) % 50_000
        cases: list[Case] = [
            (
                "numpy add.at voxel (reference)",
                "cpu",
                lambda c=cols, t0=t0: numpy_voxel_grid(**c, bins=bins, h=h, w=w, t0=t0, t1=t0 + 50_000),
            ),
            ("copy columns (np.copy)", "cpu", lambda c=cols: [v.copy() for v in c.values()]),
        ]
        for dev in devices:
            ev = batch_of(cols, h, w, 1, dev)
            ev8 = batch_of(cols, h, w, 8, dev)
            tcols = [ev.x, ev.y, ev.t, ev.p]
            if dev == "cuda":
                cpu_ev = batch_of(cols, h, w, 1, "cpu").pin_memory()
                cases.append(("host→device copy (pinned)", dev, lambda e=cpu_ev: e.to("cuda", non_blocking=True)))
            cases.append(("copy columns (torch.clone)", dev, lambda tc=tcols: [c.clone() for c in tc]))
            reps: list[tuple[str, Callable[[], Any]]] = [
                (f"voxel_grid bins={bins}", lambda e=ev: R.voxel_grid(e, bins)),
                (f"voxel_grid bins={bins}, B=8", lambda e=ev8: R.voxel_grid(e, bins)),
                (f"voxel_grid bins={bins} normalize", lambda e=ev: R.voxel_grid(e, bins, normalize=True)),
                ("histogram", lambda e=ev: R.histogram(e)),
                ("event_image (ECDP)", lambda e=ev: R.event_image(e)),
                (f"stacked_histogram bins={bins}", lambda e=ev: R.stacked_histogram(e, bins)),
                ("time_surface", lambda e=ev: R.time_surface(e, 10_000.0)),
            ]
            if dev == "cpu":
                paths = [("[fused]", lambda f: f)] if R._fused_kernels(ev) is not None else []
                paths.append(("[torch]", on_torch_path))
                for name, fn in reps:
                    cases += [(f"{name} {tag}", dev, wrap(fn)) for tag, wrap in paths]
            else:
                cases += [(name, dev, fn) for name, fn in reps]
            # sanity: same values as the reference, on every path
            ref = numpy_voxel_grid(**cols, bins=bins, h=h, w=w, t0=t0, t1=t0 + 50_000)
            for path in (contextlib.nullcontext(), torch_path()):
                with path:
                    ours = R.voxel_grid(ev, bins)[0].cpu().numpy()
                err = float(np.abs(ours - ref).max())
                assert err < 1e-4, f"{dev} voxel grid differs from the NumPy reference by {err}"
        for (name, dev, _), s in zip(cases, best_times(cases, repeats)):
            rows.append({"name": name, "device": dev, "n": n, "s": s})
    return rows


def print_first_calls(calls: list[tuple[str, float, float]]) -> None:
    if not calls:
        print("numba unavailable: CPU rows are the torch path only")
        return
    import numba

    print(f"numba {numba.__version__}; first calls (compile, or load of numba's on-disk cache):")
    for name, cpu, wall in calls:
        print(f"  {name:36s} {cpu:6.2f} s CPU  {wall:6.2f} s wall")


def print_table(rows: list[dict[str, Any]], threads: int) -> None:
    ref = {r["n"]: r["s"] for r in rows if r["name"].startswith("numpy add.at")}
    nmin, nmax = min(ref), max(ref)
    per_event = {(r["name"], r["device"], r["n"]): r["s"] / r["n"] * 1e9 for r in rows}
    cells = [f"{'what':42s}", f"{'device':6s}", f"{'events':>6s}", f"{'ms':>8s}", f"{'M ev/s':>8s}", f"{'ns/ev':>6s}"]
    cells += [f"{'vs add.at':>9s}", f"{'ns/ev ratio':>11s}"]
    head = "| " + " | ".join(cells) + " |"
    print(f"\nCPU threads: {threads}; clock: {clock.__name__}; torch {torch.__version__}, numpy {np.__version__}")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        n = r["n"]
        speed = ref[n] / r["s"]
        ratio = ""
        if nmax != nmin and n == nmax:
            ratio = f"{per_event[(r['name'], r['device'], nmax)] / per_event[(r['name'], r['device'], nmin)]:.2f}"
        label = f"{n / 1e6:g}M"
        print(
            f"| {r['name']:42s} | {r['device']:6s} | {label:>6s} | {r['s'] * 1e3:8.2f} | {n / r['s'] / 1e6:8.1f} | "
            f"{r['s'] / n * 1e9:6.2f} | {speed:8.1f}x | {ratio:>11s} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7], help="event counts")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--bins", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="best of this many timed calls")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = the per-worker figure)")
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="wall",
        help="CPU rows: wall time, or this thread's CPU time (steadier on a busy machine)",
    )
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    sizes = [int(s) for s in args.sizes]
    torch.set_num_threads(args.threads)
    calls = first_calls(args.height, args.width, args.bins)
    if R._KERNELS is False:
        calls = []
    rows = run(sizes, args.height, args.width, args.bins, args.repeats, args.threads)
    print_first_calls(calls)
    print_table(rows, args.threads)


if __name__ == "__main__":
    main()
