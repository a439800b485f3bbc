"""EventBatch: the events of several samples as flat torch columns plus a batch index (no padding).

This is what :func:`evssl.data.collate.collate_events` returns and what every representation in
:mod:`evssl.events.representations` consumes, on CPU or on an accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evssl.events.schema import Events


@dataclass
class EventBatch:
    """Events of ``batch_size`` samples, concatenated.

    Attributes:
        x, y: int16 pixel coordinates, shape (N,).
        t: int64 microseconds, shape (N,), non-decreasing *within* each sample.
        p: int8 polarity in {-1, +1}, shape (N,).
        batch_index: int64 sample index of every event, shape (N,), non-decreasing (samples are contiguous).
        t_start, t_end: int64 (B,) time window of each sample, [t_start, t_end). Representations that normalise
            time (voxel grid, time surface) use these, so an empty or single-timestamp sample is well defined.
        batch_size, height, width: ints (all samples share one sensor size).
    """

    x: Tensor
    y: Tensor
    t: Tensor
    p: Tensor
    batch_index: Tensor
    t_start: Tensor
    t_end: Tensor
    batch_size: int
    height: int
    width: int

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_events(
        cls,
        samples: list[Events],
        windows: list[tuple[int, int]] | None = None,
    ) -> EventBatch:
        """Concatenate per-sample :class:`Events` (all with one sensor size).

        ``windows`` gives each sample's [t_start, t_end); by default [t[0], t[-1] + 1) of the sample (and [0, 1) when
        it is empty).
        """
        if not samples:
            raise ValueError("EventBatch.from_events needs at least one sample")
        h, w = samples[0].height, samples[0].width
        for i, s in enumerate(samples):
            if (s.height, s.width) != (h, w):
                raise ValueError(f"sample {i} has sensor size {s.height}x{s.width}, sample 0 has {h}x{w}")
        counts = np.array([len(s) for s in samples], dtype=np.int64)
        cols = {f: torch.from_numpy(np.concatenate([getattr(s, f) for s in samples])) for f in ("x", "y", "t", "p")}
        if windows is None:
            windows = [(int(s.t[0]), int(s.t[-1]) + 1) if len(s) else (0, 1) for s in samples]
        win = torch.as_tensor(np.asarray(windows, dtype=np.int64).reshape(len(samples), 2))
        return cls(
            **cols,
            batch_index=torch.repeat_interleave(torch.arange(len(samples)), torch.from_numpy(counts)),
            t_start=win[:, 0].contiguous(),
            t_end=win[:, 1].contiguous(),
            batch_size=len(samples),
            height=h,
            width=w,
        )

    @classmethod
    def from_tensors(
        cls,
        x: Tensor,
        y: Tensor,
        t: Tensor,
        p: Tensor,
        height: int,
        width: int,
        batch_index: Tensor | None = None,
        batch_size: int | None = None,
        t_start: Tensor | None = None,
        t_end: Tensor | None = None,
    ) -> EventBatch:
        """Wrap tensors (a single sample when ``batch_index`` is None); windows default to each sample's range."""
        dev = x.device
        if batch_index is None:
            batch_index = torch.zeros(len(x), dtype=torch.long, device=dev)
            batch_size = 1 if batch_size is None else batch_size
        elif batch_size is None:
            batch_size = int(batch_index.max().item()) + 1 if len(batch_index) else 1
        if t_start is None or t_end is None:
            t = t.long()
            big = torch.iinfo(torch.int64).max
            lo = torch.full((batch_size,), big, dtype=torch.long, device=dev)
            hi = torch.full((batch_size,), -big, dtype=torch.long, device=dev)
            lo = lo.scatter_reduce(0, batch_index, t, reduce="amin")
            hi = hi.scatter_reduce(0, batch_index, t, reduce="amax")
            empty = lo > hi
            lo = torch.where(empty, torch.zeros_like(lo), lo)
            hi = torch.where(empty, torch.zeros_like(hi), hi)
            t_start = lo if t_start is None else t_start
            t_end = hi + 1 if t_end is None else t_end
        return cls(
            x.to(torch.int16),
            y.to(torch.int16),
            t.to(torch.int64),
            p.to(torch.int8),
            batch_index.long(),
            t_start.long(),
            t_end.long(),
            int(batch_size),
            int(height),
            int(width),
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the event columns."""
        return self.x.device

    def to(self, device: Any, non_blocking: bool = False) -> EventBatch:
        """Move every tensor (Lightning's batch transfer calls this)."""
        kw: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
        return EventBatch(**kw)

    def pin_memory(self) -> EventBatch:
        """Pinned copy for fast host-to-device transfer (DataLoader ``pin_memory=True``)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, Tensor):
                kw[k] = v.pin_memory()
        return EventBatch(**kw)

    def counts(self) -> Tensor:
        """Number of events per sample, (B,)."""
        return torch.bincount(self.batch_index, minlength=self.batch_size)

    def sample(self, i: int) -> Events:
        """Sample ``i`` as numpy :class:`Events` (for tests, plots and debugging)."""
        m = self.batch_index == i
        return Events(
            self.x[m].cpu().numpy(),
            self.y[m].cpu().numpy(),
            self.t[m].cpu().numpy(),
            self.p[m].cpu().numpy(),
            self.height,
            self.width,
        )

    def select(self, mask: Tensor) -> EventBatch:
        """Keep the events where ``mask`` is True (windows and batch size unchanged)."""
        return EventBatch(
            self.x[mask],
            self.y[mask],
            self.t[mask],
            self.p[mask],
            self.batch_index[mask],
            self.t_start,
            self.t_end,
            self.batch_size,
            self.height,
            self.width,
        )
