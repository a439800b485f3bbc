"""Reader throughput: evssl against expelliarmus (EVT 2.0, EVT 3.0, ``.dat``) and ``aedat`` (AEDAT 4.0), same run.

Test files are real recordings from ``$EVSSL_REAL_DATA`` repeated to size (about 1M and 10M events): the body of
``expelliarmus/evt2_sample.raw`` (539,481 events, Gen3) and ``expelliarmus/evt3_sample.raw`` (219,596 events,
Gen4.1) with every TIME_HIGH word shifted by the recording's span per repetition (EVT 3.0's 12-bit TIME_HIGH wraps
as a long recording does), ``expelliarmus-18f239a/dat_sample.dat`` (4,407 events) with timestamps shifted per copy,
and the EVTS packets of ``tonic/sample.aedat4`` (111,954 events, DVXplorer, LZ4) with shifted timestamps,
re-compressed as LZ4 frames (other streams and the trailing table dropped). The files are written once to
``--workdir`` and reused.

Each reader produces the whole recording in memory: evssl ``read_events(path)`` (format detection, header, decode,
validation: schema columns x/y int16, t int64, p int8), expelliarmus ``Wizard(encoding).read(path)`` (one structured
array), aedat ``Decoder(path)`` iterated with the ``events`` arrays of all packets concatenated. Time = best of
``--repeats`` runs after one warm-up run (which also loads evssl's compiled numba kernels from the disk cache); the
table gives M events/s and the same-run ratio evssl / peer. ``--before DIR`` also times the evssl package found in
DIR (e.g. an export of the commit before this change: ``git archive <commit> evssl | tar -x -C DIR``) in a
subprocess of the same run, and checks that both produce identical events (SHA-1 of the columns and sensor size).

    python benchmarks/readers.py --before /tmp/evssl-before          # ~2 CPU-minutes, ~1 GB in /tmp
    python benchmarks/readers.py --sizes 1000000 --repeats 5

The peer packages are benchmark-only extras (``pip install expelliarmus aedat``); a missing one gives an empty
column. Single-threaded throughout (expelliarmus and aedat are single-threaded C / Rust readers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REAL = Path(os.environ.get("EVSSL_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "real-data"))
SOURCES = {
    "evt2": "expelliarmus/evt2_sample.raw",
    "evt3": "expelliarmus/evt3_sample.raw",
    "dat": "expelliarmus-18f239a/dat_sample.dat",
    "aedat4": "tonic/sample.aedat4",
}
EXT = {"evt2": ".raw", "evt3": ".raw", "dat": ".dat", "aedat4": ".aedat4"}


# ------------------------------------------------------------------------------------------------ test files
def _percent_header(data: bytes) -> int:
    """Byte offset of the body after a Prophesee ``%`` header."""
    pos = 0
    while pos < len(data) and data[pos] == 0x25:
        pos = data.index(b"\n", pos) + 1
    return pos


def _build_raw(data: bytes, kind: str, reps: int) -> bytes:
    body_at = _percent_header(data)
    dtype, shift, mask = ("<u4", 28, 0x0FFFFFFF) if kind == "evt2" else ("<u2", 12, 0xFFF)
    words = np.frombuffer(data, dtype, offset=body_at)
    th = np.flatnonzero((words >> shift) == 8)
    raw = (words[th] & mask).astype(np.int64)
    delta = int(raw.max() - raw.min()) + 1
    parts = []
    for k in range(reps):
        w = words.copy()
        w[th] = (8 << shift) | ((raw + k * delta) & mask)
        parts.append(w.tobytes())
    return data[:body_at] + b"".join(parts)


def _build_dat(data: bytes, reps: int) -> bytes:
    body_at = _percent_header(data) + 2  # type and size bytes after "% Version 2"
    rec = np.frombuffer(data, [("t", "<u4"), ("d", "<u4")], offset=body_at)
    t = rec["t"].astype(np.int64)
    span = int(t[-1] - t[0]) + 1
    parts = []
    for k in range(reps):
        r = rec.copy()
        r["t"] = ((t + k * span) % (1 << 32)).astype(np.uint32)
        parts.append(r.tobytes())
    return data[:body_at] + b"".join(parts)


def _aedat4_events_view(raw: bytearray) -> np.ndarray:
    """The event structs of a decompressed EVTS flatbuffer, as a writable view into ``raw``."""
    table = 4 + struct.unpack_from("<I", raw, 4)[0]
    vtable = table - struct.unpack_from("<i", raw, table)[0]
    field = table + struct.unpack_from("<H", raw, vtable + 4)[0]
    vec = field + struct.unpack_from("<I", raw, field)[0]
    count = struct.unpack_from("<I", raw, vec)[0]
    dtype = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1"), ("pad", "V3")])
    return np.frombuffer(raw, dtype, count=count, offset=vec + 4)


def _build_aedat4(data: bytes, reps: int) -> bytes:
    import lz4.frame

    (n,) = struct.unpack_from("<i", data, 14)
    start = 18
    header = bytearray(data[start : start + n])
    root = struct.unpack_from("<I", header, 0)[0]
    vtable = root - struct.unpack_from("<i", header, root)[0]
    comp = struct.unpack_from("<i", header, root + struct.unpack_from("<H", header, vtable + 4)[0])[0]
    assert comp in (1, 2), "the sample is LZ4-compressed"
    table_field = root + struct.unpack_from("<H", header, vtable + 6)[0]
    table_pos = struct.unpack_from("<q", header, table_field)[0]
    struct.pack_into("<q", header, table_field, -1)  # no trailing packet table in the copy
    packets = []
    pos, end = start + n, (table_pos if table_pos > 0 else len(data))
    while pos + 8 <= end:
        sid, size = struct.unpack_from("<ii", data, pos)
        payload = data[pos + 8 : pos + 8 + size]
        pos += 8 + size
        raw = bytearray(lz4.frame.decompress(payload))
        if raw[8:12] == b"EVTS":
            packets.append((sid, raw))
    t0 = min(int(_aedat4_events_view(r)["t"][0]) for _, r in packets)
    t1 = max(int(_aedat4_events_view(r)["t"][-1]) for _, r in packets)
    out = [data[:14], struct.pack("<i", n), bytes(header)]
    for k in range(reps):
        for sid, raw in packets:
            r = bytearray(raw)
            ev = _aedat4_events_view(r)
            ev["t"] += k * (t1 - t0 + 1)
            comp_bytes = lz4.frame.compress(bytes(r))
            out.append(struct.pack("<ii", sid, len(comp_bytes)) + comp_bytes)
    return b"".join(out)


SOURCE_EVENTS = {"evt2": 539_481, "evt3": 219_596, "dat": 4_407, "aedat4": 111_954}


def build_file(kind: str, target: int, workdir: Path) -> Path:
    """The ``kind`` test file with at least ``target`` events (written once, then reused)."""
    reps = math.ceil(target / SOURCE_EVENTS[kind])
    path = workdir / f"{kind}_{target}{EXT[kind]}"
    if not path.exists():
        data = (REAL / SOURCES[kind]).read_bytes()
        if kind in ("evt2", "evt3"):
            out = _build_raw(data, kind, reps)
        elif kind == "dat":
            out = _build_dat(data, reps)
        else:
            out = _build_aedat4(data, reps)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_bytes(out)
        tmp.rename(path)
    return path


# ------------------------------------------------------------------------------------------------ readers
def _best(fn: Any, repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up (page cache, numba cache load)
    n = len(out)
    del out
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        del out
    return best, n


def time_evssl(path: Path, repeats: int) -> dict[str, Any]:
    from evssl.events.io import read_events

    seconds, n = _best(lambda: read_events(path), repeats)
    ev = read_events(path)
    h = hashlib.sha1()
    for f in ("x", "y", "t", "p"):
        h.update(np.ascontiguousarray(getattr(ev, f)).tobytes())
    h.update(repr(ev.sensor_size).encode())
    return {"seconds": seconds, "events": n, "sha1": h.hexdigest()}


def time_expelliarmus(path: Path, kind: str, repeats: int) -> dict[str, Any] | None:
    try:
        from expelliarmus import Wizard
    except ImportError:
        return None
    wizard = Wizard(encoding=kind)
    seconds, n = _best(lambda: wizard.read(path), repeats)
    return {"seconds": seconds, "events": n}


def time_aedat(path: Path, repeats: int) -> dict[str, Any] | None:
    try:
        import aedat
    except ImportError:
        return None

    def read() -> np.ndarray:
        parts = [packet["events"] for packet in aedat.Decoder(path) if "events" in packet]
        return np.concatenate(parts)

    seconds, n = _best(read, repeats)
    return {"seconds": seconds, "events": n}


def worker(files: list[str], repeats: int) -> None:
    """Subprocess mode: time the evssl importable here on ``files``; print JSON."""
    print(json.dumps({f: time_evssl(Path(f), repeats) for f in files}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--formats", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/evssl-reader-bench"))
    ap.add_argument("--before", type=Path, help="directory holding an older evssl package to time as 'before'")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = {(k, s): build_file(k, s, args.workdir) for k in args.formats for s in args.sizes}
    before: dict[str, Any] = {}
    if args.before is not None:
        env = dict(os.environ, PYTHONPATH=str(args.before))
        cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--worker", *map(str, files.values())]
        before = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    rows = []
    for (kind, _), path in files.items():
        ours = time_evssl(path, args.repeats)
        peer = time_aedat(path, args.repeats) if kind == "aedat4" else time_expelliarmus(path, kind, args.repeats)
        old = before.get(str(path))
        rows.append((kind, ours, peer, old))
    peer_name = {"aedat4": "aedat"}
    print(f"repeats={args.repeats} (best of), files in {args.workdir}, python {sys.version.split()[0]}")
    print(
        f"{'format':<7} {'events':>11} {'before':>8} {'evssl':>8} {'peer':>13} {'peer M/s':>9} "
        f"{'before/peer':>11} {'evssl/peer':>10} {'evssl/before':>12} {'same':>5}"
    )
    for kind, ours, peer, old in rows:
        n = ours["events"]
        mev = n / ours["seconds"] / 1e6
        old_mev = n / old["seconds"] / 1e6 if old else math.nan
        peer_mev = peer["events"] / peer["seconds"] / 1e6 if peer else math.nan
        same = "-" if not old else ("yes" if old["sha1"] == ours["sha1"] else "NO")
        if peer and peer["events"] != n:
            same += f" (peer n={peer['events']})"
        print(
            f"{kind:<7} {n:>11,} {old_mev:>8.1f} {mev:>8.1f} {peer_name.get(kind, 'expelliarmus'):>13} "
            f"{peer_mev:>9.1f} {old_mev / peer_mev:>11.2f} {mev / peer_mev:>10.2f} {mev / old_mev:>12.2f} {same:>5}"
        )


if __name__ == "__main__":
    main()
