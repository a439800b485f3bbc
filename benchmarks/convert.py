"""Peak memory and throughput of ``evssl convert`` on large EVT 2.0 files, beside the reader alone.

For each size (default 5M, 20M and 50M events) a synthetic EVT 2.0 ``.raw`` file is written (uniform random x/y/p
on a 480x640 sensor, timestamps with i.i.d. 0..4 µs steps, so ~2 µs per event; a TIME_HIGH word whenever ``t >> 6``
changes, CD words carrying the 6 low bits: the layout of :mod:`evssl.events.io.evt2`). The vectorised encoder here
is checked byte for byte against the per-event test encoder (``tests/events/io/encoders.py``) on 20k events
before anything is measured. Then, each in a fresh child process (so one measurement cannot inherit another's
heap):

* ``convert``: :func:`evssl.events.convert.convert` of the file into a Blosc-ZSTD store;
* ``read``: :func:`evssl.events.io.read_events` of the whole file (the reader alone, what convert used to do);
* ``iter``: ``evssl.events.io.iter_events`` over the file in 1M-event chunks (when that function exists).

Each child reports its peak RSS (``VmHWM``) minus its RSS after importing evssl (the interpreter baseline), and its
wall time. ``--pythonpath`` runs the children against another checkout (used to measure "before" on the code
before streaming convert, e.g. a ``git archive`` of it).

Measured (2-core shared machine, seed 0, default 5M/20M/50M; one run each, wall times noisy under the load of other
jobs, memory exact). "before" = the code before streaming convert (commit f2e7c87, ``git archive`` run with
``--pythonpath``), "after" = this branch with the readers' chunked ``iter_events``; peak = VmHWM minus the RSS after
importing evssl (``base``: 249 MB before, because importing ``evssl.events`` imported torch; 53 MB after):

    events  run                 peak MB above base   wall s (load ~0.9)   wall s (load ~8, same run)
    5M      before convert               259               0.81                1.75
    5M      after  convert               196                 -                 1.65
    20M     before convert              1049               2.86               11.38
    20M     after  convert               214                 -                 2.90
    50M     before convert              2402               7.46               17.73
    50M     after  convert               220                 -                 4.76
    50M     after  iter_events only      147                 -                 1.58   (reader alone, 1M chunks)
    50M     after  read_events (whole)   972                 -                 5.33

Peak memory above the baseline is now constant in the number of events (~200-220 MB, of which ~90 MB is numba's
first-call compilation, see the ``iter`` row; target <= 300 MB at 50M met). At 50M, ``convert`` runs at ~10 M
events/s beside ~30-45 M events/s for the reader alone: the rest is Blosc-ZSTD compression and HDF5 writes
(profile of a 10M-event run: 40% ``h5py`` dataset writes, 15% file flush, 10% the reader).

    python benchmarks/convert.py                      # 5M, 20M, 50M events (~2-4 min on 2 cores)
    python benchmarks/convert.py --sizes 1 5          # millions of events
    python benchmarks/convert.py --pythonpath /tmp/evssl-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def evt2_words(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, high: int | None) -> np.ndarray:
    """EVT 2.0 words for sorted events: a TIME_HIGH (type 0x8, ``t >> 6``) before each CD word whose ``t >> 6``
    differs from the previous one (``high``: the last TIME_HIGH already written, None at the start), then the CD word
    ``(polarity << 28) | ((t & 63) << 22) | (x << 11) | y``."""
    th = (t >> 6) & 0x0FFFFFFF
    prev = np.empty_like(th)
    prev[0] = -1 if high is None else high
    prev[1:] = th[:-1]
    new = th != prev
    pos = np.arange(len(t)) + np.cumsum(new)  # index of each CD word in the output
    out = np.empty(len(t) + int(new.sum()), dtype="<u4")
    out[pos[new] - 1] = (0x8 << 28) | th[new]
    cd = (p.astype(np.int64) > 0).astype(np.int64) << 28
    cd |= (t & 0x3F) << 22
    cd |= x.astype(np.int64) << 11
    cd |= y.astype(np.int64)
    out[pos] = cd
    return out


def write_evt2(path: Path, n: int, seed: int, chunk: int = 1_000_000) -> None:
    """A synthetic ``n``-event EVT 2.0 file (480x640 header geometry), written chunk by chunk."""
    sys.path.insert(0, str(REPO))
    from tests.events.io.encoders import raw_header

    rng = np.random.default_rng(seed)
    t_last, high = 0, None
    with open(path, "wb") as f:
        f.write(raw_header("2.0", ("format EVT2;height=480;width=640",)))
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            t = t_last + np.cumsum(rng.integers(0, 5, k)).astype(np.int64)
            x = rng.integers(0, 640, k)
            y = rng.integers(0, 480, k)
            p = rng.integers(0, 2, k) * 2 - 1
            f.write(evt2_words(x, y, t, p, high).tobytes())
            t_last, high = int(t[-1]), int((t[-1] >> 6) & 0x0FFFFFFF)


def check_encoder() -> None:
    """The vectorised encoder writes the same bytes as the per-event test encoder."""
    sys.path.insert(0, str(REPO))
    from evssl.events.schema import Events
    from tests.events.io.encoders import encode_evt2, raw_header

    rng = np.random.default_rng(1)
    n = 20_000
    t = np.cumsum(rng.integers(0, 200, n)).astype(np.int64)
    ev = Events(
        rng.integers(0, 640, n).astype(np.int16),
        rng.integers(0, 480, n).astype(np.int16),
        t,
        (rng.integers(0, 2, n) * 2 - 1).astype(np.int8),
        480,
        640,
    )
    mine = raw_header("2.0", ("format EVT2;height=480;width=640",)) + evt2_words(ev.x, ev.y, ev.t, ev.p, None).tobytes()
    assert mine == encode_evt2(ev), "vectorised EVT 2.0 encoder differs from tests/events/io/encoders.py"


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    def rss(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
    import numpy as np
    import evssl.events.io as eio
    from evssl.events.convert import convert
    base = rss("VmRSS")
    t0 = time.perf_counter()
    n = 0
    if mode == "convert":
        convert([src], out, progress=False)
    elif mode == "read":
        n = len(eio.read_events(src))
    elif mode == "iter":
        for ev in eio.iter_events(src, chunk_events=1_000_000):
            n += len(ev)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "base": base, "peak": rss("VmHWM"), "n": n}))
    """
)


def run_child(mode: str, src: Path, out: Path, pythonpath: str) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(  # cwd: not the repository, whose evssl would shadow --pythonpath
        [sys.executable, "-c", CHILD, mode, str(src), str(out)], env=env, capture_output=True, text=True, cwd=src.parent
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[5, 20, 50], help="millions of events")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pythonpath", default=str(REPO), help="checkout the children import evssl from")
    ap.add_argument("--workdir", type=Path, default=None, help="where the .raw files go (default: a temp dir)")
    ap.add_argument("--modes", nargs="+", default=["convert", "read", "iter"], choices=["convert", "read", "iter"])
    args = ap.parse_args()
    check_encoder()
    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    work = Path(tmp.name)
    print(f"evssl from {args.pythonpath}; seed {args.seed}; peak RSS above the post-import baseline")
    probe = subprocess.run(
        [sys.executable, "-c", "import evssl, os; print(os.path.dirname(os.path.dirname(evssl.__file__)))"],
        env={**os.environ, "PYTHONPATH": args.pythonpath}, capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    print(f"children import evssl from {probe.stdout.strip()}")
    print(f"{'events':>8} {'mode':<8} {'wall s':>7} {'Mev/s':>7} {'peak MB':>8} {'base MB':>8} {'file MB':>8}")
    for m in args.sizes:
        n = int(m * 1_000_000)
        src = work / f"synthetic_{n}.raw"
        write_evt2(src, n, args.seed)
        for mode in args.modes:
            out = work / f"synthetic_{n}.h5"
            r = run_child(mode, src, out, args.pythonpath)
            if "error" in r:
                print(f"{n / 1e6:>7.0f}M {mode:<8} {r['error']}")
                continue
            size = (out if mode == "convert" else src).stat().st_size / 1e6
            print(
                f"{n / 1e6:>7.0f}M {mode:<8} {r['wall']:>7.2f} {n / r['wall'] / 1e6:>7.1f} "
                f"{(r['peak'] - r['base']) / 1e6:>8.0f} {r['base'] / 1e6:>8.0f} {size:>8.1f}",
                flush=True,
            )
            out.unlink(missing_ok=True)
        src.unlink()


if __name__ == "__main__":
    main()
