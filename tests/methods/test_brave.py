"""BraVe for event streams (evssl.methods.brave): views, RandConv, heads, loss wiring, optimiser groups, DDP BN."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evssl.data.collate import collate_events
from evssl.data.views.brave import (
    NARROW_EVENTS,
    BroadViewSpec,
    NarrowBroadViews,
    broad_events_key,
    broad_key,
    resize_events,
    sample_crop_box,
)
from evssl.events.schema import Events
from evssl.methods.brave import BraVe, BraVeOptim, RandConv, sync_batchnorm_
from evssl.nn.backbones import BasicBlock, ResNet
from evssl.optim import param_groups
from tests.helpers import grouped

REPO = Path(__file__).resolve().parents[2]
H, W = 24, 32


# ----------------------------------------------------------------------------------------------------- fixtures
class FakeStore:
    """In-memory stand-in for EventStore: recordings of uniformly random events, and frames."""

    def __init__(self, durations: list[int], seed: int = 0, rate_per_ms: int = 20) -> None:
        rng = np.random.default_rng(seed)
        self.recs = []
        for k, d in enumerate(durations):
            t0 = 10_000 * (k + 1)
            n = max(2, d * rate_per_ms // 1000)
            t = np.sort(rng.integers(t0, t0 + d + 1, n))
            t[0], t[-1] = t0, t0 + d
            ev = Events.from_arrays(rng.integers(0, W, n), rng.integers(0, H, n), t, rng.choice([-1, 1], n), H, W)
            self.recs.append(ev)

    def __len__(self) -> int:
        return len(self.recs)

    def info(self, i: int) -> SimpleNamespace:
        ev = self.recs[i]
        return SimpleNamespace(
            height=H, width=W, label=i % 3, t_start=int(ev.t[0]), t_end=int(ev.t[-1]), num_events=len(ev)
        )

    def window(self, i: int, t0: int, t1: int) -> Events:
        return self.recs[i].time_window(t0, t1)

    def frame_times(self, i: int) -> np.ndarray:
        return np.arange(int(self.recs[i].t[0]), int(self.recs[i].t[-1]) + 1, 40_000, dtype=np.int64)

    def frames(self, i: int, j: int | None = None) -> np.ndarray:
        yy, xx = np.mgrid[0:H, 0:W]
        img = np.stack([xx * 8, yy * 8, np.full_like(xx, 7)], axis=-1).astype(np.uint8)
        return img if j is not None else img[None].repeat(len(self.frame_times(i)), 0)


def tiny_resnet(in_chans: int) -> ResNet:
    return ResNet(BasicBlock, (1, 1, 1, 1), in_chans=in_chans, small_input=True, width=4)


def tiny_brave(num_broad: int = 1, broad_chans: int = 2, **kw) -> BraVe:
    kw.setdefault("proj_hidden_dim", 32)
    kw.setdefault("proj_dim", 16)
    kw.setdefault("pred_hidden_dim", 32)
    return BraVe(tiny_resnet(5), [tiny_resnet(broad_chans) for _ in range(num_broad)], **grouped(kw, BraVeOptim))


def tiny_batch(b: int = 6, num_broad: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {"input": torch.randn(b, 5, 16, 16, generator=g), "label": torch.arange(b) % 3}
    for k in range(num_broad):
        batch[broad_key(k)] = torch.randn(b, 2, 8, 8, generator=g)
    return batch


# ----------------------------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("align", ["start", "random"])
def test_narrow_window_inside_every_broad_window(align: str) -> None:
    sampler = NarrowBroadViews(
        narrow_us=20_000,
        broad_us=80_000,
        broad=[BroadViewSpec(), BroadViewSpec(duration_us=150_000), BroadViewSpec(duration_us=20_000)],
        align=align,
        preset="minimal",  # narrow start such that the broad windows fit (the official start is tested below)
    )
    rng = np.random.default_rng(0)
    offsets = set()
    for trial in range(2000):
        ts = int(rng.integers(0, 10**6))
        te = ts + int(rng.integers(0, 300_000))  # includes recordings shorter than the broad windows
        (n0, n1), broads = sampler.sample_windows(ts, te, rng, train=True)
        assert n1 - n0 == 20_000
        assert [b1 - b0 for b0, b1 in broads] == [80_000, 150_000, 20_000]
        for b0, b1 in broads:
            assert b0 <= n0 and n1 <= b1, (trial, (n0, n1), (b0, b1))
        if align == "start":
            assert all(b0 == n0 for b0, _ in broads)
        offsets.add(n0 - broads[1][0])
        if te - ts >= 150_000:  # long enough: everything inside the recording
            assert ts <= min(b0 for b0, _ in broads) and max(b1 for _, b1 in broads) <= te + 1
    assert (len(offsets) > 100) == (align == "random")  # random placement inside the broad window


def test_official_narrow_start_is_uniform_over_the_whole_recording() -> None:
    """Review B3: the official start is uniform over [t_start, t_end + 1 - narrow], broad windows start there."""
    sampler = NarrowBroadViews(narrow_us=20_000, broad=[BroadViewSpec(duration_us=150_000)])
    assert (sampler.narrow_start, sampler.loop, sampler.photometric is not None) == ("recording", True, True)
    rng = np.random.default_rng(0)
    ts, te = 1000, 100_999  # a recording shorter than the broad window
    starts = np.array([sampler.sample_windows(ts, te, rng, train=True)[0][0] for _ in range(4000)])
    assert starts.min() >= ts and starts.max() <= te + 1 - 20_000
    # uniform: every tenth of the admissible range is hit about equally often (the old sampler always gave ts)
    hist = np.histogram(starts, bins=10, range=(ts, te + 1 - 20_000))[0]
    assert hist.min() > 300 and hist.max() < 500


def test_looped_window_repeats_the_recording() -> None:
    from evssl.data.views.brave import looped_window

    store = FakeStore([50_000])
    info = store.info(0)
    ts, te = int(info.t_start), int(info.t_end)
    period = te + 1 - ts
    ev = looped_window(store, 0, ts + 10_000, ts + 10_000 + 2 * period, ts, te)
    first = store.window(0, ts + 10_000, te + 1)
    whole = store.window(0, ts, te + 1)
    head = store.window(0, ts, ts + 10_000)
    assert len(ev) == len(first) + len(whole) + len(head)
    np.testing.assert_array_equal(ev.t, np.concatenate([first.t, whole.t + period, head.t + 2 * period]))
    np.testing.assert_array_equal(ev.x, np.concatenate([first.x, whole.x, head.x]))
    assert np.all(np.diff(ev.t) >= 0)
    inside = looped_window(store, 0, ts, ts + 1000, ts, te)  # no looping needed: a plain window
    np.testing.assert_array_equal(inside.t, store.window(0, ts, ts + 1000).t)


def test_photometric_analogues() -> None:
    from evssl.data.views.brave import Photometric, count_jitter, polarity_drop, spatial_jitter

    rng = np.random.default_rng(0)
    n = 20_000
    ev = Events(
        np.full(n, 16, np.int16), np.full(n, 8, np.int16), np.arange(n, dtype=np.int64),
        np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8), 32, 48,
    )  # fmt: skip
    jit = spatial_jitter(ev, 1.5, rng)  # a blur of a point: std ~ sigma in both axes (rounding adds 1/12)
    assert abs(np.std(jit.x.astype(float)) - math.sqrt(1.5**2 + 1 / 12)) < 0.05
    assert abs(np.std(jit.y.astype(float)) - math.sqrt(1.5**2 + 1 / 12)) < 0.05
    np.testing.assert_array_equal(jit.t, ev.t)
    for scale in (0.6, 1.4):
        out = count_jitter(ev, scale, rng)
        assert len(out) == round(n * scale) and np.all(np.diff(out.t) >= 0)
    assert np.all(polarity_drop(ev).p == 1)
    never = Photometric(sigma=(0.0, 0.0), count_p=0.0, polarity_drop_p=0.0)
    np.testing.assert_array_equal(never(ev, rng).x, ev.x)


def test_sampler_rejects_broad_shorter_than_narrow() -> None:
    with pytest.raises(ValueError, match="shorter than the narrow"):
        NarrowBroadViews(narrow_us=50_000, broad=[BroadViewSpec(duration_us=10_000)])


def test_train_sample_views_resolutions_and_windows() -> None:
    from evssl.events.representations import Histogram, VoxelGrid

    store = FakeStore([200_000, 60_000])
    sampler = NarrowBroadViews(
        narrow_us=20_000,
        broad_us=100_000,
        narrow_resolution=(24, 32),
        broad=[
            BroadViewSpec(representation=VoxelGrid(10)),
            BroadViewSpec(duration_us=150_000, resolution=(8, 10), representation=Histogram()),
            BroadViewSpec(modality="frame", resolution=(12, 16)),
        ],
    )
    assert sampler.representation_keys() == {
        NARROW_EVENTS: "input",
        "events": "input",
        broad_events_key(0): broad_key(0),
        broad_events_key(1): broad_key(1),
    }
    assert set(sampler.representations) == {broad_events_key(0), broad_events_key(1)}
    assert sampler.output_size((H, W)) == (24, 32)
    for i in range(2):
        for seed in range(20):
            s = sampler(store, i, np.random.default_rng(seed), train=True)
            nar, (n0, n1) = s[NARROW_EVENTS], s[f"{NARROW_EVENTS}_window"]
            assert (nar.height, nar.width) == (24, 32)
            assert len(nar) == 0 or (n0 <= nar.t.min() and nar.t.max() < n1)
            for k, size in ((0, (12, 16)), (1, (8, 10))):
                ev, (b0, b1) = s[broad_events_key(k)], s[f"{broad_events_key(k)}_window"]
                assert (ev.height, ev.width) == size
                assert b0 <= n0 and n1 <= b1
                assert len(ev) == 0 or (b0 <= ev.t.min() and ev.t.max() < b1)
                ev.validate()
            assert s[broad_key(2)].shape == (3, 12, 16) and s[broad_key(2)].dtype == torch.float32
            assert 0.0 <= float(s[broad_key(2)].min()) and float(s[broad_key(2)].max()) <= 1.0
            assert s["label"] == i % 3
    s = sampler(store, 0, np.random.default_rng(3), train=True)
    batch = collate_events([s, sampler(store, 0, np.random.default_rng(4), train=True)])
    assert batch[NARROW_EVENTS].batch_size == 2 and batch[broad_key(2)].shape == (2, 3, 12, 16)
    assert batch[NARROW_EVENTS].t_start[0].item() == s[f"{NARROW_EVENTS}_window"][0]  # window travels to the batch
    assert batch[broad_events_key(0)].t_end[0].item() == s[f"{broad_events_key(0)}_window"][1]


def test_crop_boxes_follow_brave_ranges() -> None:
    rng = np.random.default_rng(0)
    fracs, aspects = [], []
    for _ in range(2000):
        top, left, h, w = sample_crop_box(48, 64, rng)
        assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64
        fracs.append(h * w / (48 * 64))
        aspects.append(w / h)
    fracs, aspects = np.array(fracs), np.array(aspects)
    assert fracs.min() > 0.25 and fracs.max() <= 1.0 and np.median(fracs) < 0.8
    assert aspects.min() > 0.4 and aspects.max() < 2.3


def test_resize_events_fills_upscaled_sensor() -> None:
    from evssl.events import augment

    yy, xx = np.mgrid[0:8, 0:8]
    n = 64 * 200
    ev = Events.from_arrays(np.tile(xx.ravel(), 200), np.tile(yy.ravel(), 200), np.arange(n), np.ones(n, np.int8), 8, 8)
    up = resize_events(ev, (24, 32), np.random.default_rng(0))
    up.validate()
    assert (up.height, up.width) == (24, 32) and len(np.unique(up.y.astype(int) * 32 + up.x)) == 24 * 32
    plain = resize_events(ev, (24, 32))  # deterministic: the regular holes of floor(x * w / W)
    assert len(np.unique(plain.y.astype(int) * 32 + plain.x)) == 64
    down = resize_events(ev, (4, 4), np.random.default_rng(0))
    assert np.array_equal(down.x, augment.rescale(ev, (4, 4)).x)
    # every event stays inside its source pixel's footprint
    assert np.array_equal(up.x // 4, ev.x) and np.array_equal(up.y // 3, ev.y)


def test_eval_sample_is_plain_labelled_narrow_window() -> None:
    store = FakeStore([200_000])
    sampler = NarrowBroadViews(narrow_us=20_000, broad_us=100_000, narrow_resolution=(12, 16))
    a = sampler(store, 0, np.random.default_rng(0), train=False)
    b = sampler(store, 0, np.random.default_rng(1), train=False)
    assert set(a) == {"events", "window", "label", "index"}
    assert a["window"] == b["window"] and a["window"][1] - a["window"][0] == 20_000  # centred, deterministic
    assert (a["events"].height, a["events"].width) == (12, 16)
    assert np.array_equal(a["events"].x, b["events"].x)


# ----------------------------------------------------------------------------------------------------- RandConv
def test_randconv_matches_per_sample_same_convolution() -> None:
    rc = RandConv(max_kernel=7).train()
    x = torch.randn(4, 3, 10, 9)
    g = torch.Generator().manual_seed(0)
    out = rc(x, generator=g)
    weights = rc.kernels(4, 3, generator=torch.Generator().manual_seed(0))
    for i in range(4):
        nz = weights[i].abs().sum(dim=(0, 1, 2)) > 0  # columns inside the support
        k, c = int(nz.sum()), 7 // 2
        assert k % 2 == 1 and 1 <= k <= 7
        w = weights[i][:, :, c - k // 2 : c + k // 2 + 1, c - k // 2 : c + k // 2 + 1]
        ref = F.conv2d(x[i : i + 1], w, padding="same")
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-4, atol=1e-5)
    rc.eval()
    assert torch.equal(rc(x), x)  # identity outside training


def test_randconv_kernel_sizes_and_probability() -> None:
    rc = RandConv(max_kernel=11, p=0.5).train()
    w = rc.kernels(2000, 2, generator=torch.Generator().manual_seed(1))
    sizes = (w.abs().sum(dim=(1, 2, 3)) > 0).sum(dim=1)  # rows with support = kernel size
    assert set(sizes.tolist()) == {1, 3, 5, 7, 9, 11}
    for k in (1, 5, 11):  # He-normal: std = sqrt(2 / (C k²)) on the support
        vals = w[sizes == k][..., 5 - k // 2 : 6 + k // 2, 5 - k // 2 : 6 + k // 2]
        assert vals.std().item() == pytest.approx((2 / (2 * k * k)) ** 0.5, rel=0.1)
    x = torch.randn(400, 2, 6, 6)
    out = rc(x, generator=torch.Generator().manual_seed(2))
    unchanged = (out == x).flatten(1).all(dim=1).float().mean().item()
    assert 0.35 < unchanged < 0.65
    with pytest.raises(ValueError):
        RandConv(max_kernel=4)


def test_randconv_only_on_broad_views() -> None:
    torch.manual_seed(0)
    model = tiny_brave(num_broad=2, randconv=[True, False])
    batch = tiny_batch(num_broad=2)
    seen: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__("narrow", a[0].clone()))
    for k, net in enumerate(model.broad_backbones):
        net.register_forward_pre_hook(lambda m, a, k=k: seen.__setitem__(f"broad{k}", a[0].clone()))
    model.train()
    model.ssl_step(batch, 0)
    assert torch.equal(seen["narrow"], batch["input"])  # narrow view: never random-convolved
    assert not torch.allclose(seen["broad0"], batch[broad_key(0)])  # broad view 0: random-convolved
    assert torch.equal(seen["broad1"], batch[broad_key(1)])  # randconv disabled for broad view 1


# ----------------------------------------------------------------------------------------------------- heads
def test_separate_backbones_and_one_shared_projector_predictor() -> None:
    model = tiny_brave(num_broad=2)
    nets = [model.backbone, *model.broad_backbones]
    assert len({id(n) for n in nets}) == 3
    assert not {id(p) for p in model.backbone.parameters()} & {id(p) for p in model.broad_backbones.parameters()}
    calls: dict[str, list[int]] = {"projector": [], "predictor": []}
    model.projector.register_forward_hook(lambda m, a, o: calls["projector"].append(id(m)))
    model.predictor.register_forward_hook(lambda m, a, o: calls["predictor"].append(id(m)))
    model.train()
    model.ssl_step(tiny_batch(num_broad=2), 0)
    # every view (narrow + 2 broad) goes through the very same projector and predictor objects
    assert calls["projector"] == [id(model.projector)] * 3
    assert calls["predictor"] == [id(model.predictor)] * 3
    heads = [m for m in model.modules() if type(m).__name__ == "MLP"]
    assert heads == [model.projector, model.predictor]
    # BraVe head shapes: Linear -> BN -> ReLU -> Linear -> BN ; Linear -> BN -> ReLU -> Linear
    kinds = [type(m).__name__ for m in model.projector.layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert [type(m).__name__ for m in model.predictor.layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


def test_backbone_sharing_and_feature_mismatch_rejected() -> None:
    nb = tiny_resnet(5)
    with pytest.raises(ValueError, match="separate"):
        BraVe(nb, [nb])
    b = tiny_resnet(2)
    with pytest.raises(ValueError, match="separate"):
        BraVe(tiny_resnet(5), [b, b])
    wide = ResNet(BasicBlock, (1, 1, 1, 1), in_chans=2, small_input=True, width=8)
    with pytest.raises(ValueError, match="num_features"):
        BraVe(tiny_resnet(5), [wide])


def test_channel_mismatch_between_view_and_backbone_names_the_config_field() -> None:
    model = tiny_brave(num_broad=2, broad_chans=2).train()
    batch = tiny_batch(num_broad=2)
    batch[broad_key(1)] = torch.randn(6, 10, 8, 8)  # e.g. VoxelGrid(10) for a backbone built with in_chans 2
    with pytest.raises(
        ValueError, match=r"broad view 1 .*10 channels.*in_chans=2.*broad\[1\]\.init_args\.in_chans: 10"
    ):
        model.ssl_step(batch, 0)
    batch = tiny_batch(num_broad=2)
    batch["input"] = torch.randn(6, 3, 16, 16)
    with pytest.raises(ValueError, match=r"narrow view .*3 channels.*in_chans=5"):
        model.ssl_step(batch, 0)


# ----------------------------------------------------------------------------------------------------- loss wiring
def _manual_loss(model: BraVe, batch: dict, stop_gradient: bool) -> torch.Tensor:
    z_n = model.projector(model.backbone(batch["input"]))
    h_n = model.predictor(z_n)
    terms = []
    for k, net in enumerate(model.broad_backbones):
        z_b = model.projector(net(batch[broad_key(k)]))
        h_b = model.predictor(z_b)
        t_n, t_b = (z_n.detach(), z_b.detach()) if stop_gradient else (z_n, z_b)
        terms += [1 - F.cosine_similarity(h_b, t_n).mean(), 1 - F.cosine_similarity(h_n, t_b).mean()]
    return torch.stack(terms).mean()


def _grads(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_loss_is_symmetric_one_minus_cos_with_stop_gradient() -> None:
    torch.manual_seed(0)
    model = tiny_brave(num_broad=2, randconv=False).train()
    batch = tiny_batch(num_broad=2)
    out = model.ssl_step(batch, 0)
    assert set(out.logs) >= {"b0_to_n", "n_to_b0", "b1_to_n", "n_to_b1"} and out.features is not None
    ref = _manual_loss(model, batch, stop_gradient=True)
    torch.testing.assert_close(out.loss, ref)
    g_method = _grads(model, model.ssl_step(batch, 0).loss)
    g_sg = _grads(model, _manual_loss(model, batch, stop_gradient=True))
    g_no_sg = _grads(model, _manual_loss(model, batch, stop_gradient=False))
    assert g_method.keys() == g_sg.keys()
    for n in g_method:
        torch.testing.assert_close(g_method[n], g_sg[n], rtol=1e-4, atol=1e-6)
    # the comparison is sensitive: without stop-gradient the backbone gradients differ
    diff = max((g_sg[n] - g_no_sg[n]).abs().max().item() for n in g_sg if n.startswith("backbone"))
    assert diff > 1e-6


def test_training_loss_finite_and_decreases_on_fixed_batch() -> None:
    from evssl.optim import build_optimizer

    torch.manual_seed(0)
    model = tiny_brave(num_broad=1, randconv=False).train()
    batch = tiny_batch(b=8)
    groups = param_groups(model, model.learnable_params(), model.optim)
    opt = build_optimizer(groups, model.optim, lr=1.0)  # BraVe's optimiser (LARS), predictor gradient x10
    losses = []
    for step in range(10):
        opt.zero_grad()
        loss = model.ssl_step(batch, step).loss
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


def test_proj_std_collapse_monitor_logged() -> None:
    model = tiny_brave().train()
    logged = {k: float(v) for k, v in model.ssl_step(tiny_batch(b=32), 0).logs.items()}
    assert {"proj_std", "proj_std_ratio", "proj_std_narrow"} <= set(logged)
    assert logged["proj_std_ratio"] == pytest.approx(logged["proj_std"] * 16**0.5, rel=1e-5)
    assert 0.3 < logged["proj_std_ratio"] < 1.5  # BN-ed random projections are spread out


def test_probe_features_and_export_use_the_narrow_backbone() -> None:
    model = tiny_brave().eval()
    batch = tiny_batch()
    torch.testing.assert_close(model.probe_features(batch), model.backbone(batch["input"]))
    assert model.backbone_for_export() is model.backbone
    assert model.momentum_pairs() == []


# ----------------------------------------------------------------------------------------------------- optimiser
@pytest.mark.parametrize("preset", ["official", "paper"])
def test_predictor_rule_follows_the_preset(preset: str) -> None:
    model = tiny_brave(probe_classes=3, preset=preset)
    groups = param_groups(model, model.learnable_params(), model.optim, lr=0.2)
    pred_ids = {id(p) for p in model.predictor.parameters()}
    pred = [g for g in groups if any(id(p) in pred_ids for p in g["params"])]
    assert pred_ids == {id(p) for g in pred for p in g["params"]}
    for g in pred:  # official: x10 on the gradient (before LARS); paper: x10 on the step
        assert (g["lr"], g["grad_scale"]) == ((0.2, 10.0) if preset == "official" else (pytest.approx(2.0), 1.0))
    rest = [g for g in groups if g not in pred and not g["name"].startswith("probe")]
    assert rest and all(g["lr"] == pytest.approx(0.2) and g["grad_scale"] == 1.0 for g in rest)
    assert not any(g["name"].startswith("other") for g in groups)  # every parameter is in a named group
    # biases and norms: no weight decay and no LARS adaptation
    assert all(g["weight_decay"] == 0.0 and not g["lars_adapt"] for g in groups if "_no_wd" in g["name"])
    with pytest.raises(ValueError, match="unknown preset"):
        tiny_brave(preset="nope")


def test_configure_optimizers_lars_with_dummy_trainer() -> None:
    from evssl.optim import LARS

    model = tiny_brave(lr=0.5, warmup_epochs=1)
    trainer = SimpleNamespace(
        estimated_stepping_batches=20, num_training_batches=10, accumulate_grad_batches=1, world_size=1
    )
    model._trainer = trainer  # type: ignore[assignment]
    out = model.configure_optimizers()
    opt = out["optimizer"]
    assert isinstance(opt, LARS) and opt.defaults["nesterov"] and opt.defaults["trust_coefficient"] == 1e-3
    lrs = {g["name"]: (g["initial_lr"], g["grad_scale"]) for g in opt.param_groups}
    assert lrs["predictor_g10"] == (pytest.approx(0.5), 10.0) and lrs["backbone"] == (pytest.approx(0.5), 1.0)


def test_ema_target_ablation() -> None:
    torch.manual_seed(0)
    model = tiny_brave(ema_target=True, randconv=False).train()
    pairs = model.momentum_pairs()
    assert len(pairs) == 3 and all(t is not o for o, t in pairs)
    targets = {id(p) for _, t in pairs for p in t.parameters()}
    groups = param_groups(model, model.learnable_params(), model.optim, exclude=model._ema_targets())
    assert not targets & {id(p) for g in groups for p in g["params"]}
    out = model.ssl_step(tiny_batch(), 0)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is None for _, t in pairs for p in t.parameters())


# ----------------------------------------------------------------------------------------------------- DDP BN
def test_sync_batchnorm_conversion_keeps_shared_heads() -> None:
    model = tiny_brave(num_broad=2)
    projector, predictor = model.projector, model.predictor
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sync_batchnorm_(model) == n_bn
    assert model.projector is projector and model.predictor is predictor
    assert all(
        isinstance(m, nn.SyncBatchNorm) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.projector.modules()) == 2
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.predictor.modules()) == 1
    assert sync_batchnorm_(model) == 0  # idempotent


@pytest.mark.parametrize(("world", "device", "synced"), [(1, "cuda", False), (2, "cuda", True), (2, "cpu", False)])
def test_configure_model_converts_bn_under_ddp(world: int, device: str, synced: bool) -> None:
    model = tiny_brave()
    model._trainer = SimpleNamespace(  # type: ignore[assignment]
        world_size=world, strategy=SimpleNamespace(root_device=torch.device(device))
    )
    model.configure_model()
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.projector.modules()) == synced
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.predictor.modules()) == synced
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.backbone.modules()) == synced


# ----------------------------------------------------------------------------------------------------- end to end
def test_smoke_config_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evssl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rc = main(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / "smoke" / "brave.yaml"),
            "--trainer.fast_dev_run",
            "1",
            "--trainer.logger",
            "false",
            "--trainer.callbacks",
            "null",
        ]
    )
    assert rc in (0, None)


@pytest.mark.ddp
def test_two_process_gloo_fit_runs_and_sees_world_size(tmp_path: Path) -> None:
    """2 CPU processes (gloo): BraVe trains; configure_model sees world size 2 and, on CPU where PyTorch's
    SyncBatchNorm cannot run, keeps per-process BN and says so (on GPUs the same hook converts every BN)."""
    import subprocess

    from tests.helpers import cli_env
    from tests.test_cli import evssl_command

    cmd = [
        *evssl_command(),
        "fit",
        "--config",
        str(REPO / "experiments" / "smoke" / "brave.yaml"),
        *("--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"),
        *("--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"),
        *("--trainer.enable_checkpointing", "false", "--trainer.callbacks", "null"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "SyncBatchNorm needs an accelerator" in out
    assert "max_steps=2" in out
