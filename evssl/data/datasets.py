"""Map-style datasets over an evssl event store, and the epoch-aware index sampler that drives them.

Determinism: the sample for dataset position ``i`` at epoch ``e`` is drawn with
``np.random.default_rng([seed, e, recording, k])`` (``k`` = window number within the recording), so it does not depend
on the worker that builds it, on ``num_workers``, on the rank under DDP, or on the order of the items. The epoch
reaches the workers through the indices themselves: :class:`EpochSampler` (a ``DistributedSampler``, which Lightning
neither replaces nor wraps, and whose ``set_epoch`` Lightning calls at the start of every epoch with the loop's
restored epoch counter) yields ``(epoch, i)`` pairs from the main process. That works with persistent workers, where
calling ``set_epoch`` on the dataset would not reach the worker copies, and it is reproducible on resume.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from evssl.data.samplers import WindowSampler

__all__ = ["EpochSampler", "StoreDataset"]


class StoreDataset(Dataset):
    """Samples of an evssl store: one (or ``windows_per_recording``) window(s) per recording of a split.

    Args:
        store_path: path of the evssl HDF5 store; opened lazily, once per process (worker).
        indices: recording indices of the split.
        sampler: the :class:`~evssl.data.samplers.WindowSampler` that builds a sample from a recording.
        train: passed to the sampler (random window + augmentation vs. deterministic window).
        seed: base seed of the per-item generators.
        windows_per_recording: number of items per recording (e.g. many windows of a long sequence); item
            ``i`` is window ``i % windows_per_recording`` of recording ``indices[i // windows_per_recording]``, and the
            sampler gets ``segment=(k, windows_per_recording)`` so the windows spread over the recording.
        store_id: the store identity the ``indices`` were computed from (``EventStore.store_id``); every process
            that opens the store checks it, so a file replaced in between raises
            :class:`~evssl.events.io.store.StoreChangedError` instead of serving other recordings.

    ``dataset[i]`` uses the epoch set by :meth:`set_epoch`; ``dataset[(epoch, i)]`` (what :class:`EpochSampler`
    yields) uses the given epoch.
    """

    def __init__(
        self,
        store_path: str | Path,
        indices: Sequence[int] | np.ndarray,
        sampler: WindowSampler,
        train: bool,
        seed: int = 0,
        windows_per_recording: int = 1,
        store_id: str | None = None,
    ) -> None:
        if windows_per_recording < 1:
            raise ValueError(f"windows_per_recording must be >= 1, got {windows_per_recording}")
        self.store_path = Path(store_path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.sampler = sampler
        self.train = bool(train)
        self.seed = int(seed)
        self.windows_per_recording = int(windows_per_recording)
        self.store_id = store_id
        self.epoch = 0
        self._store: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None  # every worker opens its own handle
        state["_pid"] = None
        return state

    @property
    def store(self) -> Any:
        """The :class:`~evssl.events.io.store.EventStore`, opened on first use in this process."""
        import os

        if self._store is None or self._pid != os.getpid():
            from evssl.events.io.store import EventStore

            self._store = EventStore(self.store_path, expect_id=self.store_id)
            self._pid = os.getpid()
        return self._store

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by plain integer indexing (changes the random windows and augmentations)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices) * self.windows_per_recording

    def rng(self, epoch: int, i: int) -> np.random.Generator:
        """Generator of item ``i`` at ``epoch``: keyed by (seed, epoch, recording, window number)."""
        rec, k = divmod(int(i), self.windows_per_recording)
        return np.random.default_rng([self.seed, int(epoch), int(self.indices[rec]), k])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, (tuple, list)):
            epoch, i = int(key[0]), int(key[1])
        else:
            epoch, i = self.epoch, int(key)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        rec, k = divmod(i, self.windows_per_recording)
        index = int(self.indices[rec])
        rng = self.rng(epoch, i)
        if self.windows_per_recording > 1:
            return self.sampler(self.store, index, rng, self.train, segment=(k, self.windows_per_recording))
        return self.sampler(self.store, index, rng, self.train)


class EpochSampler(DistributedSampler):
    """Shards (and optionally shuffles) dataset positions per rank and yields ``(epoch, position)`` pairs.

    A ``DistributedSampler`` subclass, so Lightning keeps it (no automatic sampler replacement) and calls
    :meth:`set_epoch` every epoch. Works without ``torch.distributed`` (``num_replicas=1, rank=0``). The order is a
    permutation seeded by ``seed + epoch`` as in ``DistributedSampler``; with several replicas the last positions
    are repeated so every rank gets the same count (``drop_last=False``) or dropped (``drop_last=True``).
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = int(self.epoch)
        for i in super().__iter__():
            yield (epoch, int(i))

    def __len__(self) -> int:
        return self.num_samples
