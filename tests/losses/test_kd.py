"""EvDistill KD losses: value tests against slow restatements, zero / positivity properties, gradient routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evssl.losses.kd import (
    affinity_kd,
    affinity_matrix,
    l1_reconstruction,
    logit_kd,
    moment_matching,
    pool_to_nodes,
    spatial_softmax_kl,
    ssim,
    ssim_loss,
)


def _slow_kl(pt: list[float], ps: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))


def test_logit_kd_value_per_pixel_and_tau_squared():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    tau = 2.5
    total = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(5):
                pt = F.softmax(t[b, :, i, j] / tau, 0).tolist()
                ps = F.softmax(s[b, :, i, j] / tau, 0).tolist()
                total += _slow_kl(pt, ps)
    expected = tau**2 * total / 30
    assert logit_kd(s, t, tau).item() == pytest.approx(expected, rel=1e-5)
    assert logit_kd(t, t, tau).item() == pytest.approx(0.0, abs=1e-6)


def test_logit_kd_valid_mask_and_vectors():
    torch.manual_seed(1)
    s, t = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    valid = torch.tensor([[[True, False], [False, False]]])
    pt = F.softmax(t[0, :, 0, 0], 0).tolist()
    ps = F.softmax(s[0, :, 0, 0], 0).tolist()
    assert logit_kd(s, t, 1.0, valid).item() == pytest.approx(_slow_kl(pt, ps), rel=1e-5)
    sv, tv = torch.randn(4, 7), torch.randn(4, 7)
    ref = sum(_slow_kl(F.softmax(tv[b], 0).tolist(), F.softmax(sv[b], 0).tolist()) for b in range(4)) / 4
    assert logit_kd(sv, tv).item() == pytest.approx(ref, rel=1e-5)


def test_logit_kd_gradient_only_into_student():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, requires_grad=True)
    logit_kd(s, t, 4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    t2 = torch.randn(2, 3, 4, 4, requires_grad=True)
    logit_kd(s, t2, 4.0, detach_teacher=False).backward()
    assert t2.grad is not None and t2.grad.abs().sum() > 0


def test_spatial_softmax_kl_value_zero_and_positive():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    tau = 2.0
    ref = 0.0
    for b in range(2):
        for c in range(3):
            ref += _slow_kl(
                F.softmax(t[b, c].flatten() / tau, 0).tolist(), F.softmax(s[b, c].flatten() / tau, 0).tolist()
            )
    assert spatial_softmax_kl(s, t, tau).item() == pytest.approx(tau**2 * ref / 6, rel=1e-5)
    assert spatial_softmax_kl(t, t, tau).item() == pytest.approx(0.0, abs=1e-6)
    # a constant offset per channel does not change a spatial softmax: equal distributions
    assert spatial_softmax_kl(t + 3.0, t, tau).item() == pytest.approx(0.0, abs=1e-5)
    assert spatial_softmax_kl(s, t, tau).item() > 0


def test_moment_matching_zero_for_equal_distributions():
    torch.manual_seed(3)
    t = torch.randn(2, 4, 6, 6)
    perm = torch.randperm(36)
    shuffled = t.flatten(2)[..., perm].reshape_as(t)  # same per-channel distribution, other places
    assert moment_matching(shuffled, t).item() == pytest.approx(0.0, abs=1e-6)
    s = 2 * t + 1
    mu = t.flatten(2).mean(-1)
    sd = t.flatten(2).var(-1, unbiased=False).sqrt()
    ref = ((2 * mu + 1 - mu) ** 2).mean() + ((2 * sd - sd) ** 2).mean()
    assert moment_matching(s, t).item() == pytest.approx(ref.item(), rel=1e-4)


def test_affinity_matrix_symmetric_unit_diagonal_and_reference():
    torch.manual_seed(4)
    f = torch.randn(2, 5, 6, 8)
    a = affinity_matrix(f, max_nodes=1000)
    assert a.shape == (2, 48, 48)
    torch.testing.assert_close(a, a.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 48))
    nodes = f.flatten(2).transpose(1, 2)
    i, j = 3, 17
    ref = F.cosine_similarity(nodes[1, i], nodes[1, j], dim=0)
    assert a[1, i, j].item() == pytest.approx(ref.item(), rel=1e-5)


def test_pool_to_nodes_bounds_node_count():
    f = torch.randn(1, 2, 48, 64)
    nodes = pool_to_nodes(f, 100)
    assert nodes.shape[1] <= 100 and nodes.shape[1] >= 80  # 8 x 11 = 88
    assert pool_to_nodes(f, 5000).shape == (1, 48 * 64, 2)
    with pytest.raises(ValueError, match="max_nodes"):
        pool_to_nodes(f, 0)


def test_affinity_kd_zero_identical_positive_otherwise_and_channels_may_differ():
    torch.manual_seed(5)
    t = torch.randn(2, 8, 6, 6)
    assert affinity_kd(t, t, 64).item() == pytest.approx(0.0, abs=1e-7)
    assert affinity_kd(3 * t, t, 64).item() == pytest.approx(0.0, abs=1e-6)  # scale invariant (cosine)
    s = torch.randn(2, 3, 6, 6, requires_grad=True)
    tt = t.clone().requires_grad_(True)
    loss = affinity_kd(s, tt, 16)
    assert loss.item() > 0
    loss.backward()
    assert s.grad is not None and tt.grad is None
    n = pool_to_nodes(t, 16).shape[1]
    a_s, a_t = affinity_matrix(s.detach(), 16), affinity_matrix(t, 16)
    assert loss.item() == pytest.approx(((a_s - a_t) ** 2).sum().item() / (2 * n * n), rel=1e-5)


def test_reconstruction_losses():
    x = torch.rand(3, 3, 16, 16)
    assert l1_reconstruction(x, x).item() == 0.0
    y = x + 0.25
    assert l1_reconstruction(y, x).item() == pytest.approx(0.25, rel=1e-5)
    assert l1_reconstruction(y, x, valid=torch.tensor([False, False, False])).item() == 0.0
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert ssim_loss(torch.rand(3, 3, 16, 16), x).item() > 0.2
