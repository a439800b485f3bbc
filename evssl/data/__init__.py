"""evssl.data: samplers, store datasets, the event DataModule, collate and cached synthetic stores.

The names below are loaded on first use (PEP 562), so ``evssl.data.sets`` — the data-set converters behind
``evssl convert --dataset`` — can be imported without torch or Lightning (the data commands start fast).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Collate": "evssl.data.collate",
    "collate_events": "evssl.data.collate",
    "ApplyRepresentations": "evssl.data.datamodules",
    "EventDataModule": "evssl.data.datamodules",
    "EpochSampler": "evssl.data.datasets",
    "StoreDataset": "evssl.data.datasets",
    "ClassificationWindow": "evssl.data.samplers",
    "DenseWindow": "evssl.data.samplers",
    "SequenceWindows": "evssl.data.samplers",
    "WindowSampler": "evssl.data.samplers",
    "synthetic_store": "evssl.data.synthetic",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evssl.data' has no attribute {name!r}")


def import_all() -> None:
    """Import every module above (the Lightning CLI resolves short class names among imported classes)."""
    for module in sorted(set(_NAMES.values())):
        importlib.import_module(module)
