"""ECDP embedding projection ζ and distribution-alignment loss against slow references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evssl.losses.ecdp import distribution_alignment_loss, embedding_projection


def test_zeta_has_the_paper_form():
    v = torch.tensor([[3.0, 4.0]])
    y = torch.tensor([[2.0, 0.0]])
    # v̂ = (0.6, 0.8), ŷ = (1, 0): ζ = 0.6 · (1, 0), not re-normalised
    assert torch.allclose(embedding_projection(v, y), torch.tensor([[0.6, 0.0]]))
    g = torch.Generator().manual_seed(0)
    v, y = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    z = embedding_projection(v, y)
    cos = F.cosine_similarity(v, y, dim=-1)
    assert torch.allclose(z.norm(dim=-1), cos.abs(), atol=1e-6)  # length = |cos|
    assert torch.allclose(F.cosine_similarity(z, y, dim=-1).abs(), torch.ones(5), atol=1e-5)  # along y


def test_zeta_gradient_only_through_event_side():
    v = torch.randn(3, 4, requires_grad=True)
    y = torch.randn(3, 4, requires_grad=True)
    embedding_projection(v, y).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert y.grad is None


def slow_paper_kl(q, y, t):
    qn, yn = F.normalize(q, dim=-1), F.normalize(y, dim=-1)
    b = len(q)
    total = 0.0
    for i in range(b):
        sq = [math.exp(float(qn[i] @ qn[j]) / t) for j in range(b)]
        sy = [math.exp(float(yn[i] @ yn[j]) / t) for j in range(b)]
        zq, zy = sum(sq), sum(sy)
        total += sum((a / zq) * math.log((a / zq) / (c / zy)) for a, c in zip(sq, sy))
    return total / b


def test_kl_paper_form_matches_slow_reference():
    g = torch.Generator().manual_seed(3)
    q, y = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    got = distribution_alignment_loss(q, y, 0.1, form="paper")
    assert got.item() == pytest.approx(slow_paper_kl(q, y, 0.1), rel=1e-4)


def test_kl_zero_when_event_geometry_equals_rgb_geometry():
    y = torch.randn(8, 6)
    assert distribution_alignment_loss(y * 2.0, y, 0.1, "paper").item() == pytest.approx(0.0, abs=1e-6)
    # any rotation of the embedding keeps the similarity matrix: still minimal
    rot, _ = torch.linalg.qr(torch.randn(6, 6))
    assert distribution_alignment_loss(y @ rot, y, 0.1, "paper").item() == pytest.approx(0.0, abs=1e-5)
    assert distribution_alignment_loss(torch.randn(8, 6), y, 0.1, "paper").item() > 0.01


def test_kl_code_form_is_kl_to_sinkhorn_target():
    g = torch.Generator().manual_seed(4)
    q, y = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    got = distribution_alignment_loss(q, y, 0.1, form="code")
    yn, qn = F.normalize(y, dim=-1), F.normalize(q, dim=-1)
    p = torch.exp(yn @ yn.t() / 0.1)
    p = p / p.sum()
    for _ in range(3):  # slow Sinkhorn: columns, then rows
        p = p / p.sum(0, keepdim=True) / 6
        p = p / p.sum(1, keepdim=True) / 6
    p = p * 6
    logs = F.log_softmax(qn @ qn.t() / 0.1, dim=-1)
    want = (p * (p.log() - logs)).sum() / 6
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


def test_kl_gradients_reach_both_sides():
    q = torch.randn(5, 4, requires_grad=True)
    y = torch.randn(5, 4, requires_grad=True)
    distribution_alignment_loss(q, y, 0.1, "code").backward()
    assert q.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="form"):
        distribution_alignment_loss(q, y, 0.1, "nope")
