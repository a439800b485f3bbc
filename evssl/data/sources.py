"""Where each stage's data comes from: store sources (``path`` or ``path:split``), several stores in one split, the
automatic validation split, and label-free views of labelled stores (used by :class:`~evssl.data.EventDataModule`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = [
    "LABEL_KEYS",
    "ConcatStoreDataset",
    "DropLabels",
    "StoreSource",
    "auto_val_split",
    "first_class_difference",
    "parse_sources",
]

#: Sample keys that carry ground truth; ``labels="ignore"`` removes them before a batch reaches the model.
LABEL_KEYS = ("label", "semantic", "flow", "depth")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class StoreSource:
    """One store of a stage: ``path`` and an optional split name (``None``: the stage's split, see the module)."""

    path: Path
    split: str | None = None

    def __str__(self) -> str:
        return f"{self.path}" if self.split is None else f"{self.path}:{self.split}"


def _parse_one(spec: str | StoreSource) -> StoreSource:
    if isinstance(spec, StoreSource):
        return spec
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    # 'store.h5:test' names a split; a bare path (also 'C:\\x.h5' or a path with ':' in a folder name) does not
    if sep and head and _SPLIT_RE.match(tail) and not Path(text).exists() and not re.match(r"^[A-Za-z]$", head):
        return StoreSource(Path(head).expanduser(), tail)
    return StoreSource(Path(text).expanduser(), None)


def parse_sources(spec: str | Sequence[str] | None) -> list[StoreSource]:
    """``"a.h5"``, ``"a.h5:train"`` or a list of them -> :class:`StoreSource` list (empty for None)."""
    if spec is None:
        return []
    if isinstance(spec, (str, Path, StoreSource)):
        return [_parse_one(spec)]  # type: ignore[arg-type]
    return [_parse_one(s) for s in spec]


def auto_val_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the items held out for validation: ``round(fraction * n_c)`` per label value ``c`` (at least
    one when the class has two or more items and ``fraction > 0``), chosen by ``default_rng([seed, 0x5A1])``.

    Stratified by label (unlabelled items, label -1, form their own group), so a small validation split keeps the
    class balance of the training split.
    """
    labels = np.asarray(labels)
    out = np.zeros(len(labels), bool)
    if fraction <= 0 or len(labels) < 2:
        return out
    rng = np.random.default_rng([int(seed), 0x5A1])
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = round(fraction * len(members))
        if k == 0 and len(members) >= 2:
            k = 1
        k = min(k, len(members) - 1) if len(members) > 1 else 0
        out[rng.permutation(members)[:k]] = True
    return out


def first_class_difference(a: Sequence[str], b: Sequence[str]) -> str | None:
    """A sentence naming the first difference of two class lists, or None when equal."""
    if list(a) == list(b):
        return None
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"class {k} is {x!r} in one store and {y!r} in the other"
    longer, n = (a, len(b)) if len(a) > len(b) else (b, len(a))
    return f"one store has {len(longer) - n} more class(es), first {longer[n]!r} (index {n})"


class ConcatStoreDataset(Dataset):
    """Several :class:`~evssl.data.datasets.StoreDataset` s as one; keys may be ``i`` or ``(epoch, i)``."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        if not datasets:
            raise ValueError("ConcatStoreDataset needs at least one dataset")
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (None, int(key))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        j = i - int(self.offsets[k])
        return self.datasets[k][(epoch, j) if epoch is not None else j]


class DropLabels(Dataset):
    """A dataset view whose samples carry no ground truth (:data:`LABEL_KEYS` removed): label-free pre-training."""

    def __init__(self, dataset: Any, keys: Sequence[str] = LABEL_KEYS) -> None:
        self.dataset = dataset
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        sample = self.dataset[key]
        for k in self.keys:
            sample.pop(k, None)
        return sample
