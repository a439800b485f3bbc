"""StoreDataset / EpochSampler: per-item determinism, epochs, workers, shards."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from evssl.data.collate import Collate
from evssl.data.datasets import EpochSampler, StoreDataset
from evssl.data.samplers import ClassificationWindow, SequenceWindows

TRAIN = [0, 1, 2, 5, 6]


def _windows(batches):
    return [tuple(b["events"].t_start.tolist()) for b in batches]


def test_dataset_items_deterministic_and_epoch_dependent(store_path):
    ds = StoreDataset(store_path, TRAIN, ClassificationWindow(), train=True, seed=3)
    assert len(ds) == 5
    a, b = ds[1], ds[1]
    assert a["window"] == b["window"] and a["index"] == 1
    assert ds[(0, 1)]["window"] == a["window"]
    ds.set_epoch(1)
    assert ds[1]["window"] != a["window"]
    assert ds[(0, 1)]["window"] == a["window"]
    other_seed = StoreDataset(store_path, TRAIN, ClassificationWindow(), train=True, seed=4)
    assert other_seed[(0, 1)]["window"] != a["window"]
    assert ds[-1]["index"] == 6
    with pytest.raises(IndexError):
        ds[5]


def test_dataset_pickles_without_handle(store_path):
    ds = StoreDataset(store_path, TRAIN, ClassificationWindow(), train=False)
    ds[0]  # opens the store
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._store is None
    assert clone[0]["window"] == ds[0]["window"]


def test_windows_per_recording_spread_over_the_recording(store_path):
    sampler = SequenceWindows(num_windows=2, duration_us=50_000, stride_us=50_000)
    ds = StoreDataset(store_path, [7, 8], sampler, train=False, windows_per_recording=4)
    assert len(ds) == 8
    starts = [ds[i]["events_0_window"][0] for i in range(4)]
    assert np.all(np.diff(starts) > 0)
    assert [ds[i]["index"] for i in range(8)] == [7] * 4 + [8] * 4


def test_epoch_sampler_shards_and_epochs():
    data = list(range(10))
    s0 = EpochSampler(data, num_replicas=2, rank=0, shuffle=True, seed=1)
    s1 = EpochSampler(data, num_replicas=2, rank=1, shuffle=True, seed=1)
    e0 = list(s0) + list(s1)
    assert {e for e, _ in e0} == {0}
    assert sorted(i for _, i in e0) == data
    s0.set_epoch(3)
    s1.set_epoch(3)
    e3 = list(s0) + list(s1)
    assert {e for e, _ in e3} == {3}
    assert [i for _, i in e3] != [i for _, i in e0]
    assert list(EpochSampler(data, shuffle=False)) == [(0, i) for i in data]
    assert len(EpochSampler(list(range(5)), num_replicas=2, rank=1)) == 3


def _loader(ds, sampler, workers, persistent=False):
    return DataLoader(
        ds,
        batch_size=2,
        sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(),
        persistent_workers=persistent,
    )


def test_workers_give_the_same_batches_over_epochs(store_path):
    """num_workers=2 (persistent) == num_workers=0, epoch after epoch: the epoch travels with the indices."""
    results = {}
    for workers in (0, 2):
        ds = StoreDataset(store_path, TRAIN, ClassificationWindow(duration_us=30_000), train=True, seed=0)
        sampler = EpochSampler(ds, shuffle=True, seed=0)
        loader = _loader(ds, sampler, workers, persistent=workers > 0)
        epochs = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches = list(loader)
            epochs.append(
                [(b["index"].tolist(), b["events"].t_start.tolist(), b["events"].t.sum().item()) for b in batches]
            )
        results[workers] = epochs
    assert results[0] == results[2]
    assert results[0][0] != results[0][1]  # epochs differ
    got = [b["events"] for b in _loader(StoreDataset(store_path, TRAIN, ClassificationWindow(), True), None, 0)]
    assert sum(eb.batch_size for eb in got) == 5


def test_collated_batch_has_batch_index(store_path):
    ds = StoreDataset(store_path, TRAIN, ClassificationWindow(), train=False)
    batch = next(iter(_loader(ds, None, 0)))
    eb = batch["events"]
    counts = [len(ds[i]["events"]) for i in range(2)]
    assert eb.batch_size == 2
    assert eb.counts().tolist() == counts
    assert torch.equal(eb.batch_index, torch.repeat_interleave(torch.arange(2), torch.tensor(counts)))
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 1]
    assert eb.t_start.tolist() == [ds[i]["window"][0] for i in range(2)]
