"""Window samplers: window placement, paired frames / dense targets, alignment under crop + flip, sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_store import FLOW, FRAME_DT, SEQ_FRAME_DT, H, W, encode_depth, shape_mask

from evssl.data.samplers import ClassificationWindow, DenseWindow, SequenceWindows, nearest_index, pick_start

CLIPS = range(6)


def test_pick_start_range_and_segments():
    rng = np.random.default_rng(0)
    draws = [pick_start(10, 20, rng, True) for _ in range(500)]
    assert min(draws) == 10 and max(draws) == 20
    assert pick_start(10, 20, rng, False) == 15
    assert pick_start(10, 5, rng, True) == 10  # nothing fits: the start
    # segments tile the range and are ordered
    parts = [[pick_start(0, 99, rng, True, (k, 4)) for _ in range(200)] for k in range(4)]
    for k, d in enumerate(parts):
        assert min(d) >= 25 * k and max(d) <= 25 * k + 24
    assert [pick_start(0, 99, rng, False, (k, 4)) for k in range(4)] == [12, 37, 62, 87]


def test_nearest_index():
    times = np.array([0, 10, 20])
    assert [nearest_index(times, t) for t in (-5, 4, 5, 6, 15, 100)] == [0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize("duration", [50_000, 123_456])
def test_duration_window_inside_recording(store, duration):
    sampler = ClassificationWindow(duration_us=duration)
    for i in CLIPS:
        info = store.info(i)
        full = store.events(i)
        for seed in range(5):
            s = sampler(store, i, np.random.default_rng(seed), train=True)
            t0, t1 = s["window"]
            assert t1 - t0 == duration
            assert info.t_start <= t0 and t1 <= info.t_end + 1
            ev = s["events"]
            expected = full.time_window(t0, t1)
            np.testing.assert_array_equal(ev.t, expected.t)
            np.testing.assert_array_equal(ev.x, expected.x)
            assert s["label"] == info.label and s["index"] == i


def test_train_windows_vary_eval_windows_centred(store):
    sampler = ClassificationWindow(duration_us=50_000)
    starts = {sampler(store, 0, np.random.default_rng(s), train=True)["window"][0] for s in range(10)}
    assert len(starts) > 5
    evals = [sampler(store, 0, np.random.default_rng(s), train=False) for s in range(3)]
    assert all(e["window"] == evals[0]["window"] for e in evals)
    info = store.info(0)
    t0, t1 = evals[0]["window"]
    assert abs((t0 - info.t_start) - (info.t_end + 1 - t1)) <= 1
    np.testing.assert_array_equal(evals[0]["events"].t, evals[1]["events"].t)


def test_window_longer_than_recording(store):
    s = ClassificationWindow(duration_us=50_000)(store, 6, np.random.default_rng(0), train=True)
    info = store.info(6)
    assert s["window"] == (info.t_start, info.t_start + 50_000)
    assert len(s["events"]) == info.num_events


def test_count_window(store):
    sampler = ClassificationWindow(num_events=1000)
    full = store.events(1)
    for seed in range(5):
        s = sampler(store, 1, np.random.default_rng(seed), train=True)
        ev = s["events"]
        assert len(ev) == 1000
        start = int(np.searchsorted(full.t, ev.t[0]))
        np.testing.assert_array_equal(ev.t, full.t[start : start + 1000])
        assert s["window"] == (int(ev.t[0]), int(ev.t[-1]) + 1)
    e = sampler(store, 1, np.random.default_rng(0), train=False)["events"]
    np.testing.assert_array_equal(e.t, full.t[1500:2500])  # centred: (4000 - 1000) // 2
    short = sampler(store, 6, np.random.default_rng(0), train=True)
    assert len(short["events"]) == store.info(6).num_events  # fewer events than asked: all of them


def test_augment_only_when_training(store):
    calls = []

    def aug(ev, rng):
        calls.append(len(ev))
        return ev[:10]

    sampler = ClassificationWindow(augment=aug)
    assert len(sampler(store, 0, np.random.default_rng(0), train=True)["events"]) == 10
    assert len(sampler(store, 0, np.random.default_rng(0), train=False)["events"]) > 10
    assert len(calls) == 1


def test_frames_and_dense_nearest_to_window_end(store):
    sampler = ClassificationWindow(duration_us=40_000, with_frames=True, with_dense=True)
    info = store.info(2)
    for seed in range(8):
        s = sampler(store, 2, np.random.default_rng(seed), train=True)
        t1 = s["window"][1]
        k = int(np.argmin(np.abs(info.t_start + FRAME_DT * np.arange(5) - t1)))
        fr = s["frame"]
        assert fr.dtype == torch.uint8 and fr.shape == (3, H, W)
        assert int(fr[2, 0, 0]) == k and int(fr[0, 0, 5]) == 5 and int(fr[1, 7, 0]) == 7
        assert s["semantic"].dtype == torch.int64 and s["semantic"].shape == (H, W)
        assert s["flow"].dtype == torch.float32 and s["flow"].shape == (2, H, W)
        assert s["depth"].dtype == torch.float32
        np.testing.assert_array_equal(s["depth"].numpy(), encode_depth(k))
        np.testing.assert_array_equal(s["semantic"].numpy(), shape_mask())


def test_missing_pairs_raise(store):
    with pytest.raises(ValueError, match="no dense"):
        ClassificationWindow(with_dense=True)(store, 6, np.random.default_rng(0), train=True)
    with pytest.raises(ValueError, match="no frames"):
        ClassificationWindow(with_frames=True)(store, 6, np.random.default_rng(0), train=True)


def test_resolution_resizes_events_and_images(store):
    sampler = ClassificationWindow(with_frames=True, with_dense=True, resolution=(12, 16))
    s = sampler(store, 0, np.random.default_rng(0), train=False)
    ev = s["events"]
    assert (ev.height, ev.width) == (12, 16)
    assert len(ev) and ev.x.max() < 16 and ev.y.max() < 12
    assert s["frame"].shape == (3, 12, 16) and s["semantic"].shape == (12, 16) and s["depth"].shape == (12, 16)
    np.testing.assert_allclose(s["flow"][0].numpy(), FLOW[0] * 0.5)
    np.testing.assert_allclose(s["flow"][1].numpy(), FLOW[1] * 0.5)
    assert sampler.output_size((H, W)) == (12, 16)


def _original_xy(store, i, ev):
    """Original pixel of every event of a window (timestamps are unique in the test store)."""
    full = store.events(i)
    j = np.searchsorted(full.t, ev.t)
    assert np.array_equal(full.t[j], ev.t)
    return full.x[j].astype(int), full.y[j].astype(int)


def test_dense_crop_flip_keeps_alignment(store):
    sampler = DenseWindow(duration_us=60_000, crop_size=(16, 20), hflip_p=0.5)
    mask = shape_mask()
    flips = set()
    for seed in range(12):
        s = sampler(store, 0, np.random.default_rng(seed), train=True)
        ev = s["events"]
        assert (ev.height, ev.width) == (16, 20) and len(ev) > 0
        for key in ("frame", "semantic", "depth"):
            assert tuple(s[key].shape[-2:]) == (16, 20)
        x0, y0 = _original_xy(store, 0, ev)
        x, y = ev.x.astype(int), ev.y.astype(int)
        # depth encodes the source pixel: it must be the event's original pixel
        code = s["depth"].numpy()[y, x].astype(int) % 1000
        np.testing.assert_array_equal(code % W, x0)
        np.testing.assert_array_equal(code // W, y0)
        # the frame (x, y channels) and the mask agree too
        np.testing.assert_array_equal(s["frame"].numpy()[0, y, x], x0)
        np.testing.assert_array_equal(s["frame"].numpy()[1, y, x], y0)
        np.testing.assert_array_equal(s["semantic"].numpy()[y, x], mask[y0, x0])
        flipped = bool(np.all(np.diff(s["frame"].numpy()[0, 0].astype(int)) < 0))
        flips.add(flipped)
        np.testing.assert_allclose(s["flow"][0].numpy(), -FLOW[0] if flipped else FLOW[0])
        np.testing.assert_allclose(s["flow"][1].numpy(), FLOW[1])
    assert flips == {True, False}


def test_geometric_augment_transforms_move_paired_images(store):
    """An augment.EventTransform's geometric params are applied to frame / dense maps too (flow y negated)."""
    from evssl.events import augment

    flip_y = augment.Compose([augment.FlipY(p=1.0)])
    for sampler in (
        ClassificationWindow(with_frames=True, with_dense=True, augment=flip_y),
        DenseWindow(augment=flip_y, hflip_p=0.0),
    ):
        s = sampler(store, 1, np.random.default_rng(0), train=True)
        ev = s["events"]
        x0, y0 = _original_xy(store, 1, ev)
        np.testing.assert_array_equal(ev.y, H - 1 - y0)
        x, y = ev.x.astype(int), ev.y.astype(int)
        np.testing.assert_array_equal(s["frame"].numpy()[1, y, x], y0)
        np.testing.assert_array_equal(s["depth"].numpy()[y, x].astype(int) % 1000, y0 * W + x0)
        np.testing.assert_allclose(s["flow"][1].numpy(), -FLOW[1])
        np.testing.assert_allclose(s["flow"][0].numpy(), FLOW[0])


def test_dense_eval_is_centre_crop(store):
    sampler = DenseWindow(crop_size=(16, 20))
    a = sampler(store, 0, np.random.default_rng(0), train=False)
    b = sampler(store, 0, np.random.default_rng(1), train=False)
    assert a["window"] == b["window"]
    np.testing.assert_array_equal(a["events"].x, b["events"].x)
    top, left = (H - 16) // 2, (W - 20) // 2
    np.testing.assert_array_equal(a["frame"][0, 0].numpy(), np.arange(left, left + 20))
    np.testing.assert_array_equal(a["frame"][1, :, 0].numpy(), np.arange(top, top + 16))
    x0, y0 = _original_xy(store, 0, a["events"])
    np.testing.assert_array_equal(a["events"].x, x0 - left)
    np.testing.assert_array_equal(a["events"].y, y0 - top)
    assert sampler.output_size((H, W)) == (16, 20)


def test_sequence_windows(store):
    sampler = SequenceWindows(num_windows=3, duration_us=50_000, stride_us=80_000)
    info = store.info(7)
    s = sampler(store, 7, np.random.default_rng(0), train=True)
    assert sampler.representation_keys() == {"events_0": "input_0", "events_1": "input_1", "events_2": "input_2"}
    starts = [s[f"events_{j}_window"][0] for j in range(3)]
    assert np.all(np.diff(starts) == 80_000)
    assert info.t_start <= starts[0] and s["events_2_window"][1] <= info.t_end + 1
    for j in range(3):
        a, b = s[f"events_{j}_window"]
        assert b - a == 50_000
        ev = s[f"events_{j}"]
        assert len(ev) and ev.t.min() >= a and ev.t.max() < b
    assert s["frames"].shape == (3, 3, H, W) and s["frames"].dtype == torch.uint8
    assert s["poses"].shape == (3, 4, 4) and s["poses"].dtype == torch.float32
    assert s["intrinsics"].shape == (3, 3)
    for j in range(3):
        end = s[f"events_{j}_window"][1]
        k = int(np.argmin(np.abs(info.t_start + SEQ_FRAME_DT * np.arange(26) - end)))
        assert int(s["frames"][j, 2, 0, 0]) == k
        assert s["poses"][j, 0, 3].item() == pytest.approx(k * SEQ_FRAME_DT / 1e6)
    e1 = sampler(store, 7, np.random.default_rng(1), train=False)
    e2 = sampler(store, 7, np.random.default_rng(2), train=False)
    assert e1["events_0_window"] == e2["events_0_window"]


def test_sequence_resolution_scales_intrinsics(store):
    s = SequenceWindows(2, 50_000, 50_000, resolution=(12, 16))(store, 7, np.random.default_rng(0), train=False)
    assert s["frames"].shape == (2, 3, 12, 16)
    assert (s["events_0"].height, s["events_0"].width) == (12, 16)
    k = s["intrinsics"].numpy()
    assert k[0, 0] == pytest.approx(10.0) and k[1, 1] == pytest.approx(10.0) and k[2, 2] == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        ClassificationWindow(duration_us=None, num_events=None)
    with pytest.raises(ValueError):
        ClassificationWindow(dense_keys=("normals",))
    with pytest.raises(ValueError):
        SequenceWindows(num_windows=0)
