"""Value, validity, determinism and statistics tests of the event augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evssl.events import augment as A
from evssl.events.schema import Events

H, W = 6, 8


def _ev(x, y, t, p, h: int = H, w: int = W) -> Events:
    return Events.from_arrays(x, y, t, p, h, w)


def _random(seed: int = 0, n: int = 2000, h: int = H, w: int = W, t_max: int = 100_000) -> Events:
    rng = np.random.default_rng(seed)
    return _ev(
        rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(0, t_max, n)), rng.choice([-1, 1], n), h, w
    )


SMALL = _ev(x=[0, 3, 7, 5], y=[0, 2, 5, 1], t=[10, 12, 12, 20], p=[1, -1, 1, 1])


def _same(a: Events, b: Events) -> bool:
    return (a.height, a.width) == (b.height, b.width) and all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in ("x", "y", "t", "p")
    )


# ---------------------------------------------------------------------------------------------------- geometric
def test_flips() -> None:
    fx = A.flip_x(SMALL)
    np.testing.assert_array_equal(fx.x, [7, 4, 0, 2])
    np.testing.assert_array_equal(fx.y, SMALL.y)
    fy, prm = A.flip_y(SMALL, return_params=True)
    np.testing.assert_array_equal(fy.y, [5, 3, 0, 4])
    assert prm == {"op": "flip_y"}
    assert _same(A.flip_x(fx), SMALL)
    fx.validate() and fy.validate()


def test_crop_values_and_random_crop() -> None:
    out, prm = A.crop(SMALL, top=1, left=3, height=4, width=4, return_params=True)
    # kept: (3, 2) → (0, 1) and (5, 1) → (2, 0); (0, 0) and (7, 5) fall outside
    np.testing.assert_array_equal(out.x, [0, 2])
    np.testing.assert_array_equal(out.y, [1, 0])
    np.testing.assert_array_equal(out.t, [12, 20])
    assert out.sensor_size == (4, 4) and prm == {"op": "crop", "top": 1, "left": 3, "height": 4, "width": 4}
    ev = _random()
    r1, p1 = A.random_crop(ev, (3, 5), np.random.default_rng(1), return_params=True)
    r2 = A.random_crop(ev, (3, 5), np.random.default_rng(1))
    assert _same(r1, r2) and r1.sensor_size == (3, 5)
    assert _same(r1, A.crop(ev, p1["top"], p1["left"], 3, 5))
    c = A.center_crop(ev, 4)
    assert c.sensor_size == (4, 4) and _same(c, A.crop(ev, 1, 2, 4, 4))
    with pytest.raises(ValueError):
        A.random_crop(ev, (7, 2), np.random.default_rng(0))
    with pytest.raises(ValueError):
        A.crop(ev, 3, 0, 4, 4)


def test_translate_and_shift_drop_leaving_events() -> None:
    out, prm = A.translate(SMALL, dx=2, dy=-1, return_params=True)
    # (0,0) → y=-1 dropped; (3,2) → (5,1); (7,5) → x=9 dropped; (5,1) → (7,0)
    np.testing.assert_array_equal(out.x, [5, 7])
    np.testing.assert_array_equal(out.y, [1, 0])
    np.testing.assert_array_equal(out.p, [-1, 1])
    assert out.sensor_size == SMALL.sensor_size and prm == {"op": "shift", "dx": 2, "dy": -1}
    ev = _random()
    s, ps = A.shift(ev, 2, np.random.default_rng(3), return_params=True)
    assert abs(ps["dx"]) <= 2 and abs(ps["dy"]) <= 2
    assert _same(s, A.translate(ev, ps["dx"], ps["dy"]))
    assert _same(A.shift(ev, 0, np.random.default_rng(0)), ev)


def test_rescale_floor_mapping() -> None:
    ev = _ev(x=[0, 639, 320, 3], y=[0, 479, 240, 2], t=[0, 1, 2, 3], p=[1, 1, -1, -1], h=480, w=640)
    out, prm = A.rescale(ev, (224, 224), return_params=True)
    np.testing.assert_array_equal(out.x, [0, 223, 112, 1])  # floor(x * 224 / 640)
    np.testing.assert_array_equal(out.y, [0, 223, 112, 0])  # floor(y * 224 / 480)
    assert out.sensor_size == (224, 224) and len(out) == len(ev)  # merged, never dropped
    assert prm["src_height"] == 480 and prm["width"] == 224


def test_geometric_params_follow_the_events_on_images() -> None:
    ev = _random(5, n=500)
    ids = np.arange(H * W).reshape(H, W)  # each pixel holds its own id
    rng = np.random.default_rng(0)
    ops = [
        lambda e: A.flip_x(e, return_params=True),
        lambda e: A.flip_y(e, return_params=True),
        lambda e: A.random_crop(e, (4, 5), rng, return_params=True),
        lambda e: A.shift(e, 3, rng, return_params=True),
    ]
    for op in ops:
        # tag every event with the id of its source pixel through a parallel "events as image" lookup
        out, prm = op(ev)
        img = A.apply_to_image(ids, prm)
        assert img.shape == out.sensor_size
        src = A.apply_to_image(ids, prm)[out.y, out.x]
        # the source pixel of each surviving event, found by undoing the op on its coordinates
        assert np.isin(src, ids[ev.y, ev.x]).all()
        timg = A.apply_to_image(torch.from_numpy(ids), prm)
        np.testing.assert_array_equal(timg.numpy(), img)
    # exact correspondence for a composition: flip + crop + shift
    comp = A.Compose([A.FlipX(p=1.0), A.RandomCrop((5, 6)), A.RandomShift(2)])
    out, params = comp.apply(ev, np.random.default_rng(9))
    assert [p["op"] for p in params] == ["flip_x", "crop", "shift"]
    img = A.apply_to_image(ids, params)
    fx = W - 1 - ev.x
    c, s = params[1], params[2]
    x = fx - c["left"] + s["dx"]
    y = ev.y - c["top"] + s["dy"]
    inside = (fx >= c["left"]) & (fx < c["left"] + 6) & (ev.y >= c["top"]) & (ev.y < c["top"] + 5)
    inside &= (x >= 0) & (x < 6) & (y >= 0) & (y < 5)
    np.testing.assert_array_equal(img[out.y, out.x], ids[ev.y[inside], ev.x[inside]])


def test_image_helpers_channels_last_and_rescale() -> None:
    img = np.arange(2 * H * W).reshape(H, W, 2)
    prm = {"op": "crop", "top": 1, "left": 2, "height": 3, "width": 4}
    np.testing.assert_array_equal(A.apply_crop_to_image(img, prm, channels_last=True), img[1:4, 2:6])
    np.testing.assert_array_equal(A.apply_flip_to_image(img, {"op": "flip_x"}, channels_last=True), img[:, ::-1])
    shifted = A.apply_to_image(np.ones((H, W)), {"op": "shift", "dx": 2, "dy": -1})
    assert shifted[:, :2].sum() == 0 and shifted[-1].sum() == 0 and shifted.sum() == (H - 1) * (W - 2)
    # rescale: the pixel a target cell samples maps back onto that cell under the event mapping
    _, prm = A.rescale(Events.empty(480, 640), (224, 224), return_params=True)
    grid = np.arange(480 * 640).reshape(480, 640)
    small = A.apply_to_image(grid, prm)
    assert small.shape == (224, 224)
    ys, xs = np.divmod(small, 640)
    np.testing.assert_array_equal(ys * 224 // 480, np.arange(224)[:, None].repeat(224, 1))
    np.testing.assert_array_equal(xs * 224 // 640, np.arange(224)[None, :].repeat(224, 0))
    with pytest.raises(ValueError):
        A.apply_to_image(img, {"op": "rotate"})


# ---------------------------------------------------------------------------------------------------- time / polarity
def test_time_flip_hand_computed() -> None:
    out = A.time_flip(SMALL)  # window [10, 21): t' = 10 + 20 - t, reversed
    np.testing.assert_array_equal(out.t, [10, 18, 18, 20])
    np.testing.assert_array_equal(out.x, [5, 7, 3, 0])
    np.testing.assert_array_equal(out.p, [-1, -1, 1, -1])
    assert _same(A.time_flip(out), SMALL)
    w = A.time_flip(SMALL, window=(0, 31))  # t' = 30 - t
    np.testing.assert_array_equal(w.t, [10, 18, 18, 20])
    w = A.time_flip(SMALL, window=(0, 40))
    np.testing.assert_array_equal(w.t, [19, 27, 27, 29])
    assert len(A.time_flip(Events.empty(H, W))) == 0


def test_polarity_flip_and_time_scale() -> None:
    np.testing.assert_array_equal(A.polarity_flip(SMALL).p, [-1, 1, -1, -1])
    ts = A.time_scale(SMALL, 2.0)
    np.testing.assert_array_equal(ts.t, [10, 14, 14, 30])
    np.testing.assert_array_equal(A.time_scale(SMALL, 0.5).t, [10, 11, 11, 15])
    np.testing.assert_array_equal(A.time_scale(SMALL, 3.0, origin=0).t, [30, 36, 36, 60])
    with pytest.raises(ValueError):
        A.time_scale(SMALL, 0.0)


# ---------------------------------------------------------------------------------------------------- drops
def test_drop_by_count_exact_and_ordered() -> None:
    ev = _random(1, n=1000)
    out = A.drop_by_count(ev, 0.3, np.random.default_rng(0))
    assert len(out) == 700
    assert np.all(np.diff(out.t) >= 0)
    key = lambda e: set(zip(e.t.tolist(), e.x.tolist(), e.y.tolist(), e.p.tolist(), strict=True))  # noqa: E731
    assert key(out) <= key(ev)
    assert _same(A.drop_by_count(ev, 0.0, np.random.default_rng(0)), ev)
    assert len(A.drop_by_count(ev, 1.0, np.random.default_rng(0))) == 0
    with pytest.raises(ValueError):
        A.drop_by_count(ev, 1.5, np.random.default_rng(0))


def test_drop_by_time_drops_one_contiguous_span() -> None:
    ev = _random(2, n=5000, t_max=100_000)
    out = A.drop_by_time(ev, 0.25, np.random.default_rng(7))
    n_drop = len(ev) - len(out)
    # the kept events are ev[:lo] + ev[lo + n_drop:] for some lo
    rows = np.stack([ev.t, ev.x, ev.y, ev.p]).T
    kept = np.stack([out.t, out.x, out.y, out.p]).T
    diff = np.flatnonzero((rows[: len(out)] != kept).any(1))
    lo = int(diff[0]) if len(diff) else len(out)
    np.testing.assert_array_equal(np.concatenate([rows[:lo], rows[lo + n_drop :]]), kept)
    span = round(0.25 * (int(ev.t[-1]) + 1 - int(ev.t[0])))
    dropped_t = ev.t[lo : lo + n_drop]
    assert dropped_t.max() - dropped_t.min() < span
    assert abs(n_drop / len(ev) - 0.25) < 0.05  # uniform timestamps: ≈ ratio dropped


def test_drop_by_area_rectangle_and_statistics() -> None:
    ev = _random(3, n=20_000, h=40, w=50)
    out = A.drop_by_area(ev, 0.5, np.random.default_rng(1))
    present = np.zeros((40, 50), bool)
    present[out.y, out.x] = True
    missing = np.argwhere(~present)
    (y0, x0), (y1, x1) = missing.min(0), missing.max(0)
    assert (y1 - y0 + 1, x1 - x0 + 1) == (20, 25)  # round(0.5 * 40) x round(0.5 * 50)
    assert abs(len(out) / len(ev) - 0.75) < 0.03  # ratio² of the area dropped


def test_drop_by_count_statistics_over_seeds() -> None:
    ev = _random(4, n=400)
    fracs = [len(A.DropByCount((0.2, 0.4))(ev, np.random.default_rng(s))) / 400 for s in range(50)]
    assert abs(1 - np.mean(fracs) - 0.3) < 0.03


# ---------------------------------------------------------------------------------------------------- noise
def test_add_noise_count_density_and_order() -> None:
    out = A.add_noise(SMALL, np.random.default_rng(0), count=50)
    assert len(out) == 54 and out.validate()
    assert out.t.min() >= 10 and out.t.max() <= 20
    orig = {(int(t), int(x), int(y), int(p)) for t, x, y, p in zip(SMALL.t, SMALL.x, SMALL.y, SMALL.p, strict=True)}
    merged = {(int(t), int(x), int(y), int(p)) for t, x, y, p in zip(out.t, out.x, out.y, out.p, strict=True)}
    assert orig <= merged
    dens = A.add_noise(SMALL, np.random.default_rng(0), density=0.5)
    assert len(dens) == 4 + round(0.5 * H * W)
    assert len(A.add_noise(Events.empty(H, W), np.random.default_rng(0), count=5)) == 0
    win = A.add_noise(Events.empty(H, W), np.random.default_rng(0), count=5, window=(100, 200))
    assert len(win) == 5 and win.t.min() >= 100 and win.t.max() < 200
    with pytest.raises(ValueError):
        A.add_noise(SMALL, np.random.default_rng(0))


def test_add_correlated_noise_ecdp() -> None:
    small = _random(5, n=999)
    assert _same(A.add_correlated_noise(small, np.random.default_rng(0)), small)  # < 1000 events: unchanged
    ev = _random(6, n=3000, h=60, w=80, t_max=1_000_000)
    out = A.add_correlated_noise(ev, np.random.default_rng(1))
    added = len(out) - len(ev)
    assert 100 <= added < 3000 and out.validate()
    assert out.t.min() >= ev.t[0] and out.t.max() <= ev.t[-1]
    exact = A.add_correlated_noise(ev, np.random.default_rng(1), count=200, xy_std=0.0, t_std_us=0.0)
    assert len(exact) == 3200
    # zero jitter: the added events are exact copies of existing ones
    rows = set(zip(ev.t.tolist(), ev.x.tolist(), ev.y.tolist(), ev.p.tolist(), strict=True))
    assert set(zip(exact.t.tolist(), exact.x.tolist(), exact.y.tolist(), exact.p.tolist(), strict=True)) == rows


# ---------------------------------------------------------------------------------------------------- classes
ALL = [
    A.FlipX(p=1.0),
    A.FlipY(p=1.0),
    A.RandomCrop((4, 5)),
    A.CenterCrop(4),
    A.RandomShift(3),
    A.Rescale((3, 4)),
    A.TimeFlip(p=1.0),
    A.PolarityFlip(p=1.0),
    A.DropByCount(0.5),
    A.DropByTime((0.1, 0.9)),
    A.DropByArea(0.5),
    A.EventDrop(),
    A.AddNoise(density=0.2),
    A.AddNoise(density=None, count=7),
    A.AddCorrelatedNoise(count=(5, 50), min_events=10),
    A.TimeScale((0.5, 2.0)),
    A.Identity(),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_every_transform_is_valid_and_deterministic(transform: A.EventTransform) -> None:
    for ev in (_random(7, n=300), SMALL, Events.empty(H, W), _ev([1], [1], [5], [-1])):
        a = transform(ev, np.random.default_rng(42))
        b = transform(ev, np.random.default_rng(42))
        assert isinstance(a, Events)
        a.validate(type(transform).__name__)
        assert _same(a, b)


def test_probability_and_containers() -> None:
    ev = _random(8, n=100)
    assert _same(A.FlipX(p=0.0)(ev, np.random.default_rng(0)), ev)
    flips = [not _same(A.FlipX(p=0.5)(ev, np.random.default_rng(s)), ev) for s in range(200)]
    assert 0.35 < np.mean(flips) < 0.65
    comp = A.Compose([A.PolarityFlip(p=1.0), A.PolarityFlip(p=1.0)])
    assert _same(comp(ev, np.random.default_rng(0)), ev)
    never = A.RandomApply([A.FlipX(p=1.0), A.Rescale(2)], p=0.0)
    out, params = never.apply(ev, np.random.default_rng(0))
    assert _same(out, ev) and params == []
    always = A.RandomApply([A.FlipX(p=1.0), A.Rescale(2)], p=1.0)
    out, params = always.apply(ev, np.random.default_rng(0))
    assert out.sensor_size == (2, 2) and [p["op"] for p in params] == ["flip_x", "rescale"]
    choice = A.RandomChoice([A.FlipX(p=1.0), A.FlipY(p=1.0)], weights=[1.0, 0.0])
    assert _same(choice(ev, np.random.default_rng(0)), A.flip_x(ev))
    assert "FlipX" in repr(choice)
    with pytest.raises(ValueError):
        A.FlipX(p=2.0)
    with pytest.raises(ValueError):
        A.RandomChoice([])
    with pytest.raises(ValueError):
        A.AddNoise(density=0.1, count=3)


def test_event_drop_never_empties() -> None:
    one = _ev([1], [1], [5], [1])
    for s in range(40):
        assert len(A.EventDrop()(one, np.random.default_rng(s))) == 1
