"""Collate variable-length event samples into one :class:`EventBatch` (flat columns + batch index, no padding)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import default_collate

from evssl.events.batch import EventBatch
from evssl.events.schema import Events

EVENT_KEYS_SUFFIX = "events"


def collate_events(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate a list of sample dicts.

    Every key whose value is an :class:`Events` (``"events"``, or view keys such as ``"narrow_events"``) becomes an
    :class:`EventBatch`; its window is read from the matching ``"<key>_window"`` / ``"window"`` entry ``(t0, t1)``
    when present. All other keys go through :func:`torch.utils.data.default_collate`; ``None`` values are dropped.
    """
    if not samples:
        raise ValueError("collate_events got an empty list")
    out: dict[str, Any] = {}
    first = samples[0]
    for key, value in first.items():
        if isinstance(value, Events):
            wkey = "window" if key == "events" else f"{key}_window"
            windows = [tuple(int(v) for v in s[wkey]) for s in samples] if wkey in first else None
            out[key] = EventBatch.from_events([s[key] for s in samples], windows)
        elif value is None:
            continue
        else:
            out[key] = default_collate([s[key] for s in samples])
    return out


class Collate:
    """Picklable collate that applies an optional batch transform (e.g. a representation in workers)."""

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.transform = transform

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_events(samples)
        return self.transform(batch) if self.transform is not None else batch
