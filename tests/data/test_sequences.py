"""VO sequence windows: snippet layout, online order and flags, event inputs, source strings."""

from __future__ import annotations

import pytest
import torch

from evssl.data.sequences import VODataModule, resolve_source


@pytest.fixture(scope="module")
def dm():
    d = VODataModule(test_source="synthetic:vo_tiny:default:0", num_windows=3, max_test_windows=5, batch_size=2)
    d.setup("fit")
    d.setup("test")
    return d


def test_snippets_are_consecutive_frames(dm):
    item = dm.datasets["train"][0]
    assert item["frames"].shape == (5, 3, 32, 48) and item["inputs"] is item["frames"]
    assert 0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1
    # consecutive frames of one recording: the same as the store's frames at start, start + 1, ...
    st = dm.datasets["train"].reader.store
    rec = dm.datasets["train"].reader.recordings[item["seq_id"]]
    s = item["start_frame"]
    ref = torch.from_numpy(st.frames(rec, s + 2)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(item["frames"][2], ref)
    assert (item["depth"] > 0).all() and item["poses"].shape == (5, 4, 4)


def test_online_windows_in_order_with_flags(dm):
    ds = dm.datasets["test"]
    seqs = [ds[k]["seq_id"] for k in range(len(ds))]
    assert seqs == sorted(seqs)
    first = ds[0]
    assert first["seq_start"] and not first["seq_end"] and first["window_index"] == 0
    assert ds[4]["seq_end"] and ds[5]["seq_start"]
    assert ds[1]["start_frame"] == first["start_frame"] + 1  # the target advances one frame per window
    torch.testing.assert_close(ds[1]["frames"][0], first["frames"][1])


def test_event_inputs_and_sources():
    d = VODataModule(input="events", num_windows=2, snippets_per_sequence=1)
    d.setup("fit")
    item = d.datasets["train"][0]
    assert item["inputs"].shape == (4, 5, 32, 48) and d.in_channels == 5
    assert item["inputs"].abs().sum() > 0
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_source("/no/such/store.h5", 0)
    with pytest.raises(ValueError, match="seed"):
        resolve_source("synthetic:vo_tiny:default:x", 0)
    with pytest.raises(ValueError, match="odd"):
        VODataModule(window_frames=4).setup("fit")
