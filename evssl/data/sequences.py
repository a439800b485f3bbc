"""Sequence windows for self-supervised visual odometry: training snippets and ordered online test streams.

A *window* is ``window_frames`` (odd, default 3) consecutive frames ``(I_{t-1}, I_t, I_{t+1})`` of one recording
(frame indices ``j, j + step, ...``); its centre is the target of view synthesis. Window ``i`` of a sequence starts at
frame ``i * step``, so consecutive windows overlap and the target moves one frame per window.

* :class:`SnippetDataset` (training): item = ``num_windows`` consecutive windows (``D_1 .. D_{M+1}`` of the
  meta-objective) of one recording, i.e. ``num_windows + window_frames - 1`` consecutive frames, at a random start
  (train) or the centred start (eval). ``snippets_per_sequence`` items per recording, each restricted to its own
  stratum of start positions (:func:`evssl.data.samplers.pick_start`).
* :class:`OnlineSequenceDataset` (test / predict): item ``k`` = window ``i`` of sequence ``s`` in the order
  ``(s0, 0), (s0, 1), ..., (s1, 0), ...``, with ``seq_start`` (first window of a sequence), ``seq_end``, ``seq_id``
  and ``window_index``. Used with batch size 1, no shuffling and no worker processes (so nothing is read ahead):
  the online loop sees window ``i + 1`` only after it has predicted (and adapted on) window ``i``.

Every item carries ``frames`` ``(N, 3, H, W)`` float in [0, 1] (the photometric loss always uses frames), ``inputs``
``(N, C, H, W)`` (the frames again, or the event representation of the events between the previous frame and each
frame, hybrid DAVIS/MVSEC style), ground-truth ``depth`` ``(N, H, W)`` (zeros when the store has none),
``poses`` ``(N, 4, 4)`` camera-to-world, ``intrinsics`` ``(3, 3)``.

Sources: a store path, or ``"synthetic:<size>[:<domain>[:<seed>]]"`` (a cached simulator store,
:func:`evssl.data.synthetic.synthetic_store`; the seed defaults to the data module's ``seed`` for training and
``seed + 1`` for validation/test, so test scenes are never the training scenes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from evssl.data.collate import collate_events
from evssl.data.datamodules import skip_validation_without_data
from evssl.data.samplers import pick_start
from evssl.events.representations import Representation, VoxelGrid

__all__ = ["OnlineSequenceDataset", "SnippetDataset", "VODataModule", "resolve_source", "sequence_recordings"]


def resolve_source(source: str, default_seed: int, cache_dir: str | None = None) -> Path:
    """Store path of a source string (see module docstring); raises ``FileNotFoundError`` for a missing path."""
    if source.startswith("synthetic"):
        parts = source.split(":")
        if len(parts) > 4:
            raise ValueError(f"source {source!r}: expected synthetic:<size>[:<domain>[:<seed>]]")
        size = parts[1] if len(parts) > 1 and parts[1] else "vo_tiny"
        domain = parts[2] if len(parts) > 2 and parts[2] else "default"
        try:
            seed = int(parts[3]) if len(parts) > 3 and parts[3] else int(default_seed)
        except ValueError:
            raise ValueError(f"source {source!r}: seed {parts[3]!r} is not an integer") from None
        from evssl.data.synthetic import synthetic_store

        return synthetic_store(size, seed, cache_dir, domain=domain)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"event store {path} not found (VO data source)")
    return path


def sequence_recordings(store: Any, split: str | None, min_frames: int) -> list[int]:
    """Recordings of ``split`` (None = every recording) with at least ``min_frames`` frames and with poses."""
    splits = np.asarray(store.splits).astype(str)
    out = []
    for i in range(len(store)):
        if split is not None and splits[i] != split:
            continue
        if len(store.frame_times(i)) >= min_frames and len(store.poses(i)[1]) > 0:
            out.append(i)
    if not out:
        raise ValueError(f"{store.path}: no recording of split {split!r} has >= {min_frames} frames and poses")
    return out


class _SequenceReader:
    """Reads consecutive frames (+ depth, poses, events -> representation) of one recording; opened lazily."""

    def __init__(
        self,
        store_path: Path,
        split: str | None,
        window_frames: int,
        step: int,
        input_kind: str,
        representation: Representation | None,
        min_frames: int,
        intrinsics: tuple[float, ...] | None = None,
    ) -> None:
        if window_frames < 3 or window_frames % 2 == 0:
            raise ValueError(f"window_frames must be odd and >= 3, got {window_frames}")
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if input_kind not in ("frames", "events"):
            raise ValueError(f"input must be 'frames' or 'events', got {input_kind!r}")
        self.store_path = Path(store_path)
        self.split = split
        self.window_frames = int(window_frames)
        self.step = int(step)
        self.input_kind = input_kind
        self.representation = representation
        self.intrinsics = intrinsics
        self._store: Any = None
        self._pid: int | None = None
        from evssl.events.io.store import EventStore

        with EventStore(self.store_path) as st:
            self.recordings = sequence_recordings(st, split, min_frames)
            self.num_frames = [len(st.frame_times(i)) for i in self.recordings]

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["_store"] = None
        d["_pid"] = None
        return d

    @property
    def store(self) -> Any:
        import os

        if self._store is None or self._pid != os.getpid():
            from evssl.events.io.store import EventStore

            self._store = EventStore(self.store_path)
            self._pid = os.getpid()
        return self._store

    def read(self, rec: int, frame_idx: list[int]) -> dict[str, Any]:
        """Frames ``frame_idx`` of recording number ``rec`` (position in :attr:`recordings`)."""
        st = self.store
        i = self.recordings[rec]
        ft = st.frame_times(i)
        frames = np.stack([st.frames(i, j) for j in frame_idx]).transpose(0, 3, 1, 2)
        out: dict[str, Any] = {"frames": torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0}
        dt = st.dense_times(i)
        want = ft[frame_idx]
        pos = np.minimum(np.searchsorted(dt, want), max(len(dt) - 1, 0))
        if len(dt) and np.array_equal(dt[pos], want) and "depth" in st.info(i).dense_keys:
            depth = np.stack([st.dense(i, "depth", int(p)) for p in pos]).astype(np.float32)
            out["depth"] = torch.from_numpy(depth)
        else:  # no ground-truth depth at these frames: zeros (the depth metrics skip non-positive pixels)
            out["depth"] = torch.zeros(len(frame_idx), *frames.shape[-2:])
        poses, pt = st.poses(i)
        sel = [int(np.argmin(np.abs(pt - ft[j]))) for j in frame_idx]
        out["poses"] = torch.from_numpy(np.asarray(poses[sel], np.float64))
        if self.intrinsics is not None:
            fx, fy, cx, cy = self.intrinsics
            k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        else:
            k = st.intrinsics(i)
        if k is None:
            raise ValueError(
                f"{self.store_path}: recording {i} has no intrinsics (needed for view synthesis); set data.intrinsics"
            )
        out["intrinsics"] = torch.from_numpy(np.asarray(k, np.float32))
        if self.input_kind == "frames":
            out["inputs"] = out["frames"]
        else:
            from evssl.events.batch import EventBatch

            rep = self.representation if self.representation is not None else VoxelGrid(5)
            period = int(np.median(np.diff(ft))) if len(ft) > 1 else 1
            ins = []
            for j in frame_idx:
                a = int(ft[j - 1]) if j > 0 else int(ft[j]) - period
                b = int(ft[j])
                ev = st.window(i, a, b) if b > a else st.window(i, b, b)
                ins.append(rep(EventBatch.from_events([ev], [(a, max(b, a + 1))]))[0])
            out["inputs"] = torch.stack(ins).float()
        return out


class SnippetDataset(Dataset):
    """Training snippets of ``num_windows`` consecutive windows (see module docstring)."""

    def __init__(
        self,
        reader: _SequenceReader,
        num_windows: int,
        snippets_per_sequence: int,
        train: bool,
        seed: int = 0,
    ) -> None:
        if num_windows < 1 or snippets_per_sequence < 1:
            raise ValueError("num_windows and snippets_per_sequence must be >= 1")
        self.reader = reader
        self.num_windows = int(num_windows)
        self.per_seq = int(snippets_per_sequence)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.span = (self.num_windows - 1 + reader.window_frames - 1) * reader.step + 1
        short = [n for n in reader.num_frames if n < self.span]
        if short:
            raise ValueError(f"{reader.store_path}: a snippet spans {self.span} frames, a sequence has {min(short)}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.reader.recordings) * self.per_seq

    def __getitem__(self, k: int) -> dict[str, Any]:
        rec, seg = divmod(int(k), self.per_seq)
        rng = np.random.default_rng([self.seed, self.epoch, rec, seg])
        n = self.reader.num_frames[rec]
        start = pick_start(1, n - self.span, rng, self.train, (seg, self.per_seq))  # frame 0 has no events before
        idx = list(range(start, start + self.span, self.reader.step))
        out = self.reader.read(rec, idx)
        out["seq_id"] = rec
        out["start_frame"] = start
        out["window_frames"] = self.reader.window_frames
        return out


class OnlineSequenceDataset(Dataset):
    """Every window of every sequence, in temporal order (see module docstring); ``max_windows`` caps each."""

    def __init__(self, reader: _SequenceReader, max_windows: int | None = None) -> None:
        self.reader = reader
        span = (reader.window_frames - 1) * reader.step
        self.items: list[tuple[int, int]] = []
        for rec, n in enumerate(reader.num_frames):
            count = (n - 2 - span) // reader.step + 1 if n - 2 >= span else 0  # frames 1 + w step .. + span <= n - 1
            count = count if max_windows is None else min(count, int(max_windows))
            self.items += [(rec, w) for w in range(count)]
        self._count = {rec: sum(1 for r, _ in self.items if r == rec) for rec in range(len(reader.num_frames))}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        rec, w = self.items[int(k)]
        start = 1 + w * self.reader.step
        idx = [start + j * self.reader.step for j in range(self.reader.window_frames)]
        out = self.reader.read(rec, idx)
        out.update(
            seq_id=rec,
            window_index=w,
            seq_start=w == 0,
            seq_end=w == self._count[rec] - 1,
            start_frame=start,
            window_frames=self.reader.window_frames,
        )
        return out


class VODataModule(LightningDataModule):
    """Training snippets from one domain, ordered online test sequences from another (see module docstring).

    Args:
        train_source, val_source, test_source: store paths or ``synthetic:<size>[:<domain>[:<seed>]]`` strings
            (``val_source=None``: no validation; ``test_source=None``: the training store).
        split, val_split, test_split: store splits of the training / validation / test sequences (None = every
            recording with frames and poses; the simulator's sequences have split ``"sequence"``; MVSEC stores
            have the family names ``outdoor_day``, ``outdoor_night``, ...).
        intrinsics: ``(fx, fy, cx, cy)`` in pixels for stores without a camera matrix (None = the store's).
        input: ``"frames"`` or ``"events"`` (network input; the loss always uses frames).
        representation: event representation for ``input="events"`` (default ``VoxelGrid(5)``).
        window_frames: frames per window (odd, >= 3); step: frame step inside a window and between windows.
        num_windows: windows per training snippet (``M + 1`` of the meta-objective).
        snippets_per_sequence: training items per sequence per epoch.
        max_test_windows: cap on windows per test sequence (None = all).
        seed, batch_size, num_workers, cache_dir: as in :class:`~evssl.data.datamodules.EventDataModule`. The
            validation / test loaders always use batch size 1, no shuffling and no workers (online order).
    """

    def __init__(
        self,
        train_source: str = "synthetic:vo_tiny:default",
        test_source: str | None = "synthetic:vo_tiny:default",
        val_source: str | None = None,
        split: str | None = "sequence",
        val_split: str | None = "sequence",
        test_split: str | None = "sequence",
        intrinsics: tuple[float, float, float, float] | None = None,
        input: Literal["frames", "events"] = "frames",
        representation: Representation | None = None,
        window_frames: int = 3,
        step: int = 1,
        num_windows: int = 3,
        snippets_per_sequence: int = 4,
        max_test_windows: int | None = None,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if input not in ("frames", "events"):
            raise ValueError(f"input must be 'frames' or 'events', got {input!r}")
        self.train_source, self.test_source, self.val_source = train_source, test_source, val_source
        self.split, self.val_split, self.test_split = split, val_split, test_split
        self.intrinsics = None if intrinsics is None else tuple(float(v) for v in intrinsics)
        self.input = input
        self.representation = representation if representation is not None else VoxelGrid(5)
        self.window_frames, self.step = int(window_frames), int(step)
        self.num_windows, self.snippets_per_sequence = int(num_windows), int(snippets_per_sequence)
        self.max_test_windows = max_test_windows
        self.seed, self.batch_size, self.num_workers = int(seed), int(batch_size), int(num_workers)
        self.cache_dir = cache_dir
        self.datasets: dict[str, Dataset] = {}

    @property
    def in_channels(self) -> int:
        """Channels of one network input (3 for frames, the representation's for events)."""
        return 3 if self.input == "frames" else int(self.representation.channels)

    @property
    def num_classes(self) -> int:
        """No classes (keeps the CLI's class-count link harmless)."""
        return 0

    def _reader(self, source: str, seed: int, min_frames: int, split: str | None) -> _SequenceReader:
        path = resolve_source(source, seed, self.cache_dir)
        return _SequenceReader(
            path, split, self.window_frames, self.step, self.input, self.representation, min_frames, self.intrinsics
        )

    def prepare_data(self) -> None:
        """Generate the synthetic stores if needed."""
        for src, seed in ((self.train_source, self.seed), (self.val_source, self.seed + 1), (self.test_source, None)):
            if src is not None and src.startswith("synthetic"):
                resolve_source(src, self.seed + 1 if seed is None else seed, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        span = (self.num_windows - 1 + self.window_frames - 1) * self.step + 2
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = SnippetDataset(
                self._reader(self.train_source, self.seed, span, self.split),
                self.num_windows,
                self.snippets_per_sequence,
                train=True,
                seed=self.seed,
            )
        if stage in (None, "fit", "validate") and self.val_source is not None and "val" not in self.datasets:
            self.datasets["val"] = OnlineSequenceDataset(
                self._reader(self.val_source, self.seed + 1, self.window_frames + 1, self.val_split),
                self.max_test_windows,
            )
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            src = self.test_source if self.test_source is not None else self.train_source
            seed = self.seed + 1 if self.test_source is not None else self.seed
            self.datasets["test"] = OnlineSequenceDataset(
                self._reader(src, seed, self.window_frames + 1, self.test_split), self.max_test_windows
            )
        skip_validation_without_data(self, stage)

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets.get("train")
        if ds is None:
            self.setup("fit")
            ds = self.datasets["train"]
        if self.trainer is not None:
            ds.set_epoch(int(self.trainer.current_epoch))  # type: ignore[union-attr]
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=True,
            generator=g,
            num_workers=self.num_workers,
            collate_fn=collate_events,
            drop_last=len(ds) >= self.batch_size,
            persistent_workers=False,
        )

    def _online(self, role: str) -> DataLoader | list:
        if role not in self.datasets:
            self.setup("validate" if role == "val" else "test")
        ds = self.datasets.get(role)
        if ds is None:
            return []
        return DataLoader(ds, batch_size=1, shuffle=False, num_workers=0, collate_fn=collate_events)

    def val_dataloader(self) -> DataLoader | list:
        """Online-ordered validation windows (``[]`` without ``val_source``)."""
        return self._online("val")

    def test_dataloader(self) -> DataLoader | list:
        """Online-ordered test windows."""
        return self._online("test")

    def predict_dataloader(self) -> DataLoader | list:
        """As :meth:`test_dataloader`."""
        return self._online("test")
