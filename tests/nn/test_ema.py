"""EMA update against the BYOL formula, buffer copy, target isolation, cosine momentum schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evssl.nn.backbones.vit import VisionTransformer
from evssl.nn.ema import cosine_schedule, ema_update_, make_target


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_ema_update_equals_formula_and_copies_buffers():
    torch.manual_seed(0)
    online = net()
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(16, 4))  # moves BN running stats
    before = [p.clone() for p in target.parameters()]
    ema_update_(online, target, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    for t, o in zip(target.buffers(), online.buffers()):
        assert torch.equal(t, o)
    assert all(p.grad is None for p in target.parameters())


def test_target_is_independent_and_momentum_one_freezes():
    online = net()
    target = make_target(online)
    with torch.no_grad():
        online[0].weight.fill_(3.0)
    assert not torch.equal(target[0].weight, online[0].weight)
    snap = [p.clone() for p in target.parameters()]
    ema_update_(online, target, 1.0, copy_buffers=False)
    assert all(torch.equal(a, b) for a, b in zip(snap, target.parameters()))
    ema_update_(online, target, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
    with pytest.raises(ValueError):
        ema_update_(online, nn.Linear(4, 8), 0.5)


def test_make_target_switches_off_drop_path():
    vit = VisionTransformer(16, 8, in_chans=1, embed_dim=8, depth=2, num_heads=2, drop_path_rate=0.5)
    assert [b.drop_path.p for b in make_target(vit).blocks] == [0.0, 0.0]
    assert [b.drop_path.p for b in make_target(vit, drop_path=True).blocks] == [0.0, 0.5]
    assert [b.drop_path.p for b in vit.blocks] == [0.0, 0.5]


def test_cosine_schedule_endpoints():
    assert cosine_schedule(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_schedule(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_schedule(500, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(0, 0, 0.99, 1.0) == 1.0
    k, K = 30, 100
    assert cosine_schedule(k, K, 0.99, 1.0) == pytest.approx(1 - 0.01 * (math.cos(math.pi * k / K) + 1) / 2)
