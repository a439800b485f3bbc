"""evssl.data: samplers, store datasets, the event DataModule, collate and cached synthetic stores."""

from evssl.data.collate import Collate, collate_events
from evssl.data.datamodules import ApplyRepresentations, EventDataModule
from evssl.data.datasets import EpochSampler, StoreDataset
from evssl.data.samplers import ClassificationWindow, DenseWindow, SequenceWindows, WindowSampler
from evssl.data.synthetic import synthetic_store

__all__ = [
    "ApplyRepresentations",
    "ClassificationWindow",
    "Collate",
    "DenseWindow",
    "EpochSampler",
    "EventDataModule",
    "SequenceWindows",
    "StoreDataset",
    "WindowSampler",
    "collate_events",
    "synthetic_store",
]
