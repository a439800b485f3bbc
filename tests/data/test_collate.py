"""collate_events: flat event batches with batch_index and windows, other keys through default_collate."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from evssl.data.collate import Collate, collate_events
from evssl.events.schema import Events


def _ev(n: int, t0: int) -> Events:
    return Events.from_arrays(np.arange(n) % 4, np.zeros(n), t0 + np.arange(n), np.ones(n), 3, 4)


def test_batch_index_windows_and_other_keys():
    samples = [
        {
            "events": _ev(3, 100),
            "window": (100, 150),
            "view_events": _ev(1, 0),
            "view_events_window": (0, 9),
            "label": 1,
            "extra": None,
        },
        {
            "events": _ev(0, 0),
            "window": (7, 8),
            "view_events": _ev(2, 5),
            "view_events_window": (5, 10),
            "label": 2,
            "extra": None,
        },
        {
            "events": _ev(2, 10),
            "window": (10, 20),
            "view_events": _ev(1, 1),
            "view_events_window": (1, 3),
            "label": 0,
            "extra": None,
        },
    ]
    b = collate_events(samples)
    ev = b["events"]
    assert ev.batch_size == 3 and len(ev) == 5
    assert ev.batch_index.tolist() == [0, 0, 0, 2, 2]
    assert ev.counts().tolist() == [3, 0, 2]
    assert ev.t_start.tolist() == [100, 7, 10] and ev.t_end.tolist() == [150, 8, 20]
    assert b["view_events"].t_start.tolist() == [0, 5, 1] and b["view_events"].batch_index.tolist() == [0, 1, 1, 2]
    assert torch.equal(b["label"], torch.tensor([1, 2, 0]))
    assert "extra" not in b
    np.testing.assert_array_equal(ev.sample(2).t, [10, 11])


def test_collate_transform_is_picklable():
    def add_count(batch):
        batch["n"] = len(batch["events"])
        return batch

    c = pickle.loads(pickle.dumps(Collate()))
    assert "n" not in c([{"events": _ev(2, 0)}])
    assert Collate(add_count)([{"events": _ev(2, 0)}, {"events": _ev(1, 0)}])["n"] == 3
