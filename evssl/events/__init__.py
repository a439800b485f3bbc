"""Event data core: schema, readers, store, slicing, representations, augmentations, simulator (no Lightning)."""

from evssl.events.batch import EventBatch
from evssl.events.schema import EventFormatError, Events

__all__ = ["EventBatch", "EventFormatError", "Events"]
