"""Event data core: schema, readers, store, slicing, representations, augmentations, simulator (no Lightning).

``EventBatch`` (torch) is imported on first use, so the numpy-only parts (readers, store, ``evssl convert``) start
without importing torch.
"""

from typing import Any

from evssl.events.schema import EventFormatError, Events

__all__ = ["EventBatch", "EventFormatError", "Events"]


def __getattr__(name: str) -> Any:
    if name == "EventBatch":
        from evssl.events.batch import EventBatch

        return EventBatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
