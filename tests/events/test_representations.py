"""Value-level tests of the batched event representations (hand-computed tensors and a slow reference).

Tests taking the ``path`` fixture run twice: through the fused numba CPU kernels and through the torch path.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings

import numpy as np
import pytest
import torch

from evssl.events import representations as R
from evssl.events.batch import EventBatch
from evssl.events.schema import Events

HAS_NUMBA = importlib.util.find_spec("numba") is not None


@pytest.fixture(params=["fused", "torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test through the numba kernels (``fused``) or the pure-torch path (``torch``) on CPU."""
    if request.param == "fused" and not HAS_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(R, "_USE_FUSED", request.param == "fused")
    return request.param


def _events(x, y, t, p, h: int = 2, w: int = 3) -> Events:
    return Events.from_arrays(x, y, t, p, h, w)


def _batch(samples: list[Events], windows: list[tuple[int, int]] | None = None) -> EventBatch:
    return EventBatch.from_events(samples, windows)


def _random_events(rng: np.random.Generator, n: int, h: int, w: int, t_max: int = 10_000) -> Events:
    return Events.from_arrays(
        rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(0, t_max, n)), rng.choice([-1, 1], n), h, w
    )


def _set_block(monkeypatch: pytest.MonkeyPatch, path: str, size: int) -> None:
    """Events per CPU block of the path under test (the torch path's chunk or the kernels' block)."""
    if path == "fused":
        from evssl.events import _kernels

        monkeypatch.setattr(_kernels, "BLOCK", size)
    else:
        monkeypatch.setattr(R, "_CPU_CHUNK", size)


def _slow_voxel(ev: EventBatch, bins: int) -> np.ndarray:
    """Per-event Python loop over the documented formula (obviously correct, slow)."""
    out = np.zeros((ev.batch_size, bins, ev.height, ev.width), np.float64)
    bi = ev.batch_index.numpy()
    for i in range(len(ev)):
        b = int(bi[i])
        ts, te = int(ev.t_start[b]), int(ev.t_end[b])
        tn = (bins - 1) * (int(ev.t[i]) - ts) / max(te - 1 - ts, 1)
        tn = min(max(tn, 0.0), bins - 1.0)
        for k in range(bins):
            out[b, k, int(ev.y[i]), int(ev.x[i])] += int(ev.p[i]) * max(0.0, 1.0 - abs(tn - k))
    return out


# A tiny sample on a 2x3 sensor, window [0, 5): t* = (3 - 1) * t / 4 = t / 2 with 3 bins.
TINY = _events(x=[0, 1, 0, 2, 2], y=[0, 0, 0, 1, 1], t=[0, 1, 2, 3, 4], p=[1, -1, -1, 1, 1])
TINY_VOXEL = np.array(
    [
        [[1.0, -0.5, 0.0], [0.0, 0.0, 0.0]],  # t=0 → bin 0; t=1 (t*=0.5) → -0.5 / -0.5
        [[-1.0, -0.5, 0.0], [0.0, 0.0, 0.5]],  # t=2 (t*=1) → bin 1; t=3 (t*=1.5) → 0.5 / 0.5
        [[0.0, 0.0, 0.0], [0.0, 0.0, 1.5]],  # t=4 = last timestamp → bin 2 with weight 1
    ],
    dtype=np.float32,
)


# ---------------------------------------------------------------------------------------------------- voxel grid
def test_voxel_grid_hand_computed(path: str) -> None:
    v = R.voxel_grid(_batch([TINY], [(0, 5)]), bins=3)
    assert v.dtype == torch.float32 and v.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(v[0].numpy(), TINY_VOXEL, atol=1e-7)


def test_voxel_grid_default_window_is_eraft_first_last(path: str) -> None:
    # default window [t_first, t_last + 1): identical to the explicit window above
    v = R.voxel_grid(_batch([TINY]), bins=3)
    np.testing.assert_allclose(v[0].numpy(), TINY_VOXEL, atol=1e-7)


def test_voxel_grid_one_bin_sums_polarity(path: str) -> None:
    v = R.voxel_grid(_batch([TINY]), bins=1)
    np.testing.assert_array_equal(v[0, 0].numpy(), [[0.0, -1.0, 0.0], [0.0, 0.0, 2.0]])


def test_voxel_grid_all_timestamps_equal_go_to_bin0(path: str) -> None:
    ev = _events(x=[0, 1, 1], y=[0, 1, 1], t=[7, 7, 7], p=[1, -1, -1])
    v = R.voxel_grid(_batch([ev]), bins=4)  # window [7, 8): denominator 0
    expected = np.zeros((4, 2, 3), np.float32)
    expected[0, 0, 0], expected[0, 1, 1] = 1.0, -2.0
    np.testing.assert_array_equal(v[0].numpy(), expected)


def test_voxel_grid_events_on_last_timestamp_of_window(path: str) -> None:
    ev = _events(x=[2, 2], y=[1, 1], t=[99, 99], p=[1, 1])
    v = R.voxel_grid(_batch([ev], [(0, 100)]), bins=5)
    expected = np.zeros((5, 2, 3), np.float32)
    expected[4, 1, 2] = 2.0
    np.testing.assert_array_equal(v[0].numpy(), expected)


def test_voxel_grid_single_event_and_fractional_weights(path: str) -> None:
    ev = _events(x=[1], y=[0], t=[30], p=[-1])
    v = R.voxel_grid(_batch([ev], [(0, 101)]), bins=5)  # t* = 4 * 30 / 100 = 1.2
    expected = np.zeros((5, 2, 3), np.float32)
    expected[1, 0, 1], expected[2, 0, 1] = -0.8, -0.2
    np.testing.assert_allclose(v[0].numpy(), expected, atol=1e-6)


def test_voxel_grid_events_outside_window_are_clamped(path: str) -> None:
    ev = _events(x=[0, 1], y=[0, 0], t=[-50, 500], p=[1, 1])
    v = R.voxel_grid(_batch([ev], [(0, 101)]), bins=3)
    assert v[0, 0, 0, 0] == 1.0 and v[0, 2, 0, 1] == 1.0 and v.sum() == 2.0


def test_voxel_grid_empty_batch_and_empty_sample(path: str) -> None:
    empty = Events.empty(2, 3)
    v = R.voxel_grid(_batch([empty, empty]), bins=3)
    assert v.shape == (2, 3, 2, 3) and not v.any()
    v = R.voxel_grid(_batch([TINY, empty, TINY], [(0, 5), (0, 1), (0, 5)]), bins=3)
    np.testing.assert_allclose(v[0].numpy(), TINY_VOXEL, atol=1e-7)
    assert not v[1].any()
    np.testing.assert_allclose(v[2].numpy(), TINY_VOXEL, atol=1e-7)


def test_voxel_grid_samples_with_different_windows_match_single_samples(path: str) -> None:
    rng = np.random.default_rng(0)
    samples = [_random_events(rng, n, 4, 5, 1000) for n in (30, 1, 0, 50)]
    windows = [(0, 1000), (5, 6), (0, 1), (-100, 900)]
    v = R.voxel_grid(_batch(samples, windows), bins=4)
    for i, (s, win) in enumerate(zip(samples, windows)):
        torch.testing.assert_close(v[i], R.voxel_grid(_batch([s], [win]), bins=4)[0])


@pytest.mark.parametrize("chunk", [7, 1 << 16])
@pytest.mark.parametrize("bins", [1, 2, 5])
def test_voxel_grid_matches_slow_reference(monkeypatch: pytest.MonkeyPatch, path: str, chunk: int, bins: int) -> None:
    # a small block size exercises blocks inside one sample and blocks spanning several samples
    _set_block(monkeypatch, path, chunk)
    rng = np.random.default_rng(bins)
    samples = [_random_events(rng, n, 6, 7) for n in (200, 0, 1, 150, 40)]
    ev = _batch(samples, [(0, 10_000), (0, 1), (3, 4), (-500, 10_500), (100, 9_000)])
    np.testing.assert_allclose(R.voxel_grid(ev, bins).numpy(), _slow_voxel(ev, bins), atol=1e-5)


def test_voxel_grid_int64_index_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    # torch: int64 instead of int32 index arithmetic; fused: uint64 instead of uint32 index buffers
    rng = np.random.default_rng(3)
    ev = _batch([_random_events(rng, 300, 6, 7), _random_events(rng, 200, 6, 7)])
    ref = R.voxel_grid(ev, 3)
    ref_stacked, ref_surface = R.stacked_histogram(ev, 2), R.time_surface(ev, 300.0)
    monkeypatch.setattr(R, "_I32_MAX", 10)
    monkeypatch.setattr(R, "_U32_CELLS", 10)
    torch.testing.assert_close(R.voxel_grid(ev, 3), ref)
    torch.testing.assert_close(R.stacked_histogram(ev, 2), ref_stacked)
    torch.testing.assert_close(R.time_surface(ev, 300.0), ref_surface)


def test_voxel_grid_normalize_matches_eraft(path: str) -> None:
    rng = np.random.default_rng(5)
    samples = [_random_events(rng, 60, 4, 5), _events([1], [1], [3], [1], 4, 5), Events.empty(4, 5)]
    ev = _batch(samples)
    raw = R.voxel_grid(ev, 3)
    norm = R.voxel_grid(ev, 3, normalize=True)
    for b in range(3):  # E-RAFT's per-sample code, literally
        v = raw[b].clone()
        mask = torch.nonzero(v, as_tuple=True)
        if mask[0].numel() > 0:
            with warnings.catch_warnings():  # std of one value (E-RAFT's case too)
                warnings.simplefilter("ignore")
                mean, std = v[mask].mean(), v[mask].std()
            v[mask] = (v[mask] - mean) / std if std > 0 else v[mask] - mean
        torch.testing.assert_close(norm[b], v, atol=1e-5, rtol=1e-5)
    assert not norm[1].any()  # a single non-zero cell becomes 0 (E-RAFT: undefined std → subtract mean)


def test_normalize_nonzero_hand_computed() -> None:
    g = torch.tensor([[[[1.0, -1.0, 2.0, 0.0]]]])
    out = R.normalize_nonzero(g.clone())
    mean, std = 2 / 3, math.sqrt(7 / 3)
    expected = [(1 - mean) / std, (-1 - mean) / std, (2 - mean) / std, 0.0]
    np.testing.assert_allclose(out.flatten().numpy(), expected, rtol=1e-6)


def test_out_of_range_coordinates_raise(path: str) -> None:
    def make(x: list[int], y: list[int]) -> EventBatch:
        n = len(x)
        return EventBatch.from_tensors(
            torch.tensor(x), torch.tensor(y), torch.arange(n), torch.ones(n, dtype=torch.int8), height=2, width=3
        )

    with pytest.raises(ValueError, match=r"'x' has value 3 "):
        R.voxel_grid(make([0, 3], [0, 0]), 2)
    with pytest.raises(ValueError, match=r"'y' has value -1 "):
        R.histogram(make([0, 1], [-1, 0]))
    for fn in (R.event_image, lambda e: R.stacked_histogram(e, 2), lambda e: R.time_surface(e, 10.0)):
        with pytest.raises(ValueError, match="'y' has value 2"):
            fn(make([0], [2]))


def test_bad_arguments_raise() -> None:
    ev = _batch([TINY])
    with pytest.raises(ValueError):
        R.voxel_grid(ev, 0)
    with pytest.raises(ValueError):
        R.stacked_histogram(ev, 0)
    with pytest.raises(ValueError):
        R.time_surface(ev, 0)


# ---------------------------------------------------------------------------------------------------- histograms
TINY_HIST = np.array(
    [[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]],  # ON counts  # OFF counts
    dtype=np.float32,
)


def test_histogram_hand_computed_and_normalized(path: str) -> None:
    ev = _batch([TINY, Events.empty(2, 3)])
    h = R.histogram(ev)
    assert h.shape == (2, 2, 2, 3) and h.dtype == torch.float32
    np.testing.assert_array_equal(h[0].numpy(), TINY_HIST)
    assert not h[1].any()
    hn = R.histogram(ev, normalize=True)
    np.testing.assert_array_equal(hn[0, 0].numpy(), TINY_HIST[0] / 2)
    np.testing.assert_array_equal(hn[0, 1].numpy(), TINY_HIST[1])
    assert not hn[1].any()


def test_event_image_ecdp_normalisation(path: str) -> None:
    h = R.event_image(_batch([TINY]), signed=False)
    # ON: max 2 → / 3; OFF: max 1 → / 2
    np.testing.assert_allclose(h[0, 0].numpy(), TINY_HIST[0] / 3, rtol=1e-6)
    np.testing.assert_allclose(h[0, 1].numpy(), TINY_HIST[1] / 2, rtol=1e-6)
    s = R.event_image(_batch([TINY]))
    torch.testing.assert_close(s, (h - 0.5) * 2)
    assert s.min() == -1.0 and s.max() < 1.0
    empty = R.event_image(_batch([Events.empty(2, 3)]))
    assert (empty == -1.0).all()


def test_event_image_remove_hot_pixels(path: str) -> None:
    # ON counts 5 and 1 at two pixels, OFF 1 at one: mean of non-zero cells = 7/3 → the 5 is clipped to 7/3
    ev = _events(x=[0] * 5 + [1, 2], y=[0] * 7, t=range(7), p=[1] * 6 + [-1])
    h = R.event_image(_batch([ev]), remove_hot_pixels=True, signed=False)
    thr = 7 / 3
    np.testing.assert_allclose(h[0, 0, 0].numpy(), [thr / (thr + 1), 1 / (thr + 1), 0.0], rtol=1e-6)
    np.testing.assert_allclose(h[0, 1, 0].numpy(), [0.0, 0.0, 0.5], rtol=1e-6)


def test_stacked_histogram_hand_computed(path: str) -> None:
    ev = _events(x=[0, 1, 1, 2], y=[0, 0, 0, 1], t=[0, 4, 5, 9], p=[1, -1, 1, -1])
    s = R.stacked_histogram(_batch([ev], [(0, 10)]), bins=2)  # slices [0, 5) and [5, 10)
    expected = np.zeros((4, 2, 3), np.float32)
    expected[0, 0, 0] = 1  # slice 0 ON
    expected[1, 0, 1] = 1  # slice 0 OFF
    expected[2, 0, 1] = 1  # slice 1 ON (t = 5 is the first timestamp of slice 1)
    expected[3, 1, 2] = 1  # slice 1 OFF
    np.testing.assert_array_equal(s[0].numpy(), expected)


def test_stacked_histogram_one_bin_is_histogram_and_clip(path: str) -> None:
    ev = _batch([TINY, Events.empty(2, 3)])
    torch.testing.assert_close(R.stacked_histogram(ev, 1), R.histogram(ev))
    many = _events(x=[1] * 300, y=[1] * 300, t=np.arange(300), p=[1] * 300)
    assert R.stacked_histogram(_batch([many]), 1).max() == 255
    assert R.stacked_histogram(_batch([many]), 1, clip=None).max() == 300
    assert R.stacked_histogram(_batch([many]), 3, clip=None).sum() == 300


def test_stacked_histogram_random_matches_numpy(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    _set_block(monkeypatch, path, 64)
    rng = np.random.default_rng(2)
    samples = [_random_events(rng, n, 5, 6, 997) for n in (300, 0, 200)]
    windows = [(0, 997), (0, 1), (-3, 1000)]
    s = R.stacked_histogram(_batch(samples, windows), bins=3, clip=None).numpy()
    for b, (ev, (t0, t1)) in enumerate(zip(samples, windows)):
        ref = np.zeros((6, 5, 6), np.float32)
        k = np.clip((3 * (ev.t - t0)) // (t1 - t0), 0, 2)
        np.add.at(ref, (2 * k + (ev.p < 0), ev.y, ev.x), 1.0)
        np.testing.assert_array_equal(s[b], ref)


# ---------------------------------------------------------------------------------------------------- time surface
def test_time_surface_hand_computed(path: str) -> None:
    ev = _events(x=[0, 0, 1, 2, 2], y=[0, 0, 0, 1, 1], t=[50, 80, 90, 95, 100], p=[1, 1, -1, 1, -1])
    ts = R.time_surface(_batch([ev], [(0, 101)]), tau_us=10.0)  # t_ref = 100
    expected = np.zeros((2, 2, 3), np.float32)
    expected[0, 0, 0] = math.exp(-2.0)  # newest ON event at (0, 0) is t = 80
    expected[1, 0, 1] = math.exp(-1.0)
    expected[0, 1, 2] = math.exp(-0.5)
    expected[1, 1, 2] = 1.0  # on the window's last timestamp
    np.testing.assert_allclose(ts[0].numpy(), expected, rtol=1e-6)


def test_time_surface_batch_and_empty(path: str) -> None:
    rng = np.random.default_rng(4)
    samples = [_random_events(rng, 100, 3, 4), Events.empty(3, 4), _random_events(rng, 50, 3, 4)]
    ts = R.time_surface(_batch(samples), tau_us=2000.0)
    assert not ts[1].any() and ts.max() <= 1.0
    for i in (0, 2):
        torch.testing.assert_close(ts[i], R.time_surface(_batch([samples[i]]), 2000.0)[0])


# ---------------------------------------------------------------------------------------------------- classes
def test_representation_classes_and_builder(path: str) -> None:
    ev = _batch([TINY, TINY])
    cases = {
        "voxel_grid": ({"bins": 3, "normalize": False}, 3, lambda e: R.voxel_grid(e, 3)),
        "histogram": ({}, 2, R.histogram),
        "event_image": ({}, 2, R.event_image),
        "stacked_histogram": ({"bins": 4}, 8, lambda e: R.stacked_histogram(e, 4)),
        "time_surface": ({"tau_us": 3}, 2, lambda e: R.time_surface(e, 3)),
    }
    for name, (kw, channels, fn) in cases.items():
        rep = R.build_representation(name, **kw)
        assert isinstance(rep, R.Representation) and rep.channels == channels
        out = rep(ev)
        assert out.shape == (2, channels, 2, 3)
        torch.testing.assert_close(out, fn(ev))
        assert type(rep).__name__ in repr(rep)
    assert R.VoxelGrid().channels == 5 and R.VoxelGrid().normalize
    assert isinstance(R.build_representation("Voxel-Grid"), R.VoxelGrid)
    with pytest.raises(ValueError, match="unknown representation"):
        R.build_representation("nope")


def test_accelerator_code_path_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch path's non-CPU branches (one block for the whole batch, per-event gathers, plain int64 → float64)
    give the same values as its CPU branches (cache blocks, bit-trick conversion)."""
    monkeypatch.setattr(R, "_USE_FUSED", False)
    rng = np.random.default_rng(8)
    samples = [_random_events(rng, n, 5, 6) for n in (400, 0, 1, 300)]
    ev = _batch(samples, [(0, 10_000), (0, 1), (2, 3), (-100, 9_000)])
    fns = (
        lambda e: R.voxel_grid(e, 4, normalize=True),
        lambda e: R.stacked_histogram(e, 3),
        lambda e: R.time_surface(e, 500.0),
        R.event_image,
    )
    expected = [fn(ev) for fn in fns]

    def one_block(e: EventBatch):
        yield slice(0, len(e)), (0 if e.batch_size == 1 else None)

    monkeypatch.setattr(R, "_blocks", one_block)
    monkeypatch.setattr(R, "_magic", lambda device: 0)
    monkeypatch.setattr(R, "_to_f64", lambda diff: diff.to(torch.float64))
    for fn, exp in zip(fns, expected):
        torch.testing.assert_close(fn(ev), exp)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(6)
    samples = [_random_events(rng, n, 30, 40) for n in (5000, 0, 3000)]
    ev = _batch(samples, [(0, 10_000), (0, 1), (-10, 9_000)])
    gpu = ev.to("cuda")
    for fn in (
        lambda e: R.voxel_grid(e, 5),
        lambda e: R.voxel_grid(e, 5, normalize=True),
        R.histogram,
        R.event_image,
        lambda e: R.stacked_histogram(e, 3),
        lambda e: R.time_surface(e, 1000.0),
    ):
        torch.testing.assert_close(fn(gpu).cpu(), fn(ev), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- fused vs torch
def _constant_time_events(rng: np.random.Generator, n: int, t: int, h: int, w: int) -> Events:
    return Events.from_arrays(rng.integers(0, w, n), rng.integers(0, h, n), np.full(n, t), rng.choice([-1, 1], n), h, w)


def _edge_case_batch(rng: np.random.Generator, h: int = 7, w: int = 9) -> EventBatch:
    """Random samples plus the edge cases: empty samples, all timestamps equal, events on the window's last
    timestamp, events before / after the window (clamped), a one-microsecond window, a single event."""
    samples, windows = [], []

    def add(ev: Events, window: tuple[int, int]) -> None:
        samples.append(ev)
        windows.append(window)

    add(_random_events(rng, 700, h, w, 5_000), (0, 5_000))
    add(Events.empty(h, w), (0, 1))
    add(_random_events(rng, 300, h, w, 5_000), (-2_000, 4_000))  # events after the window
    add(_constant_time_events(rng, 50, 42, h, w), (42, 43))  # all timestamps equal: the default window
    add(_constant_time_events(rng, 40, 99, h, w), (0, 100))  # all on the window's last timestamp
    add(_random_events(rng, 200, h, w, 3_000), (1_000, 2_000))  # events before and after the window
    add(Events.empty(h, w), (5, 9))
    add(_events([3], [2], [17], [-1], h, w), (10, 30))
    add(_random_events(rng, 1_000, h, w, 1_000_000), (0, 1_000_000))
    return _batch(samples, windows)


REPRESENTATION_CALLS = {
    "voxel_grid bins=1": lambda e: R.voxel_grid(e, 1),
    "voxel_grid bins=2": lambda e: R.voxel_grid(e, 2),
    "voxel_grid bins=5": lambda e: R.voxel_grid(e, 5),
    "voxel_grid normalize": lambda e: R.voxel_grid(e, 4, normalize=True),
    "histogram": R.histogram,
    "histogram normalize": lambda e: R.histogram(e, normalize=True),
    "event_image": lambda e: R.event_image(e, remove_hot_pixels=True),
    "stacked_histogram": lambda e: R.stacked_histogram(e, 3, clip=None),
    "time_surface": lambda e: R.time_surface(e, 700.0),
}


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
@pytest.mark.parametrize("block", [5, 64, 4096])
@pytest.mark.parametrize("name", sorted(REPRESENTATION_CALLS))
def test_fused_kernels_match_torch_path(monkeypatch: pytest.MonkeyPatch, name: str, block: int) -> None:
    """Same values through the numba kernels and the torch path (blocks inside samples and across several)."""
    from evssl.events import _kernels

    fn = REPRESENTATION_CALLS[name]
    ev = _edge_case_batch(np.random.default_rng(block))
    monkeypatch.setattr(R, "_USE_FUSED", False)
    expected = fn(ev)
    monkeypatch.setattr(R, "_USE_FUSED", True)
    monkeypatch.setattr(_kernels, "BLOCK", block)
    assert R._fused_kernels(ev) is not None
    got = fn(ev)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    # the same arithmetic per event; only the order of the float32 sums differs (counts are exact)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-6)
    if "histogram" in name or "stacked" in name:
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_fused_kernels_reject_bad_events_even_without_check() -> None:
    """The compiled loops never write outside the grid: bad coordinates or sample indices raise, check or not."""
    x, y = torch.tensor([0, 1, 3, 0]), torch.tensor([0, 1, 1, 0])
    ev = EventBatch.from_tensors(x, y, torch.arange(4), torch.ones(4, dtype=torch.int8), height=2, width=3)
    bad_sample = EventBatch.from_tensors(
        torch.tensor([0, 1]), torch.tensor([0, 1]), torch.arange(2), torch.ones(2, dtype=torch.int8), height=2,
        width=3, batch_index=torch.tensor([0, 2]), batch_size=2, t_start=torch.zeros(2, dtype=torch.long),
        t_end=torch.full((2,), 5),
    )  # fmt: skip
    calls = (
        lambda e, c: R.voxel_grid(e, 3, check=c),
        lambda e, c: R.voxel_grid(e, 1, check=c),
        lambda e, c: R.histogram(e, check=c),
        lambda e, c: R.stacked_histogram(e, 2, check=c),
        lambda e, c: R.time_surface(e, 5.0, check=c),
    )
    for fn in calls:
        for check in (True, False):
            with pytest.raises(ValueError, match=r"'x' has value 3 "):
                fn(ev, check)
            with pytest.raises(ValueError, match="batch_index 2"):
                fn(bad_sample, check)


def test_torch_fallback_when_numba_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "_KERNELS", None)
    monkeypatch.setitem(sys.modules, "evssl.events._kernels", None)  # makes the import raise ImportError
    ev = _batch([TINY], [(0, 5)])
    with pytest.warns(RuntimeWarning, match="numba is unavailable"):
        v = R.voxel_grid(ev, 3)
    assert R._KERNELS is False and R._fused_kernels(ev) is None
    np.testing.assert_allclose(v[0].numpy(), TINY_VOXEL, atol=1e-7)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_njit_without_a_writable_cache_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where numba finds no writable cache directory it raises at decoration time; the kernels compile uncached."""
    import numba

    from evssl.events import _kernels

    real = numba.njit

    def njit(*args, cache: bool = False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)

    def twice(a):
        return 2 * a

    assert _kernels._njit(twice)(21) == 42
