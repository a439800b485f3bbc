"""Property tests of the BYOL/BraVe normalised regression loss (evssl.losses.regression)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evssl.losses.regression import (
    NormalizedRegressionLoss,
    brave_loss,
    normalized_regression_loss,
    normalized_std,
    safe_normalize,
)


def _slow_reference(h: torch.Tensor, z: torch.Tensor, scale: float) -> torch.Tensor:
    """Sample by sample, straight from the formula s·‖h/‖h‖ − z/‖z‖‖²."""
    vals = []
    for a, b in zip(h.tolist(), z.tolist()):
        na = math.sqrt(sum(v * v for v in a))
        nb = math.sqrt(sum(v * v for v in b))
        vals.append(scale * sum((x / na - y / nb) ** 2 for x, y in zip(a, b)))
    return torch.tensor(sum(vals) / len(vals), dtype=torch.float64)


def test_equals_one_minus_cos_on_random_vectors() -> None:
    g = torch.Generator().manual_seed(0)
    h, z = torch.randn(16, 32, generator=g, dtype=torch.float64), torch.randn(16, 32, generator=g, dtype=torch.float64)
    loss = normalized_regression_loss(h, z)  # BraVe scale 1/2
    expected = (1 - F.cosine_similarity(h, z, dim=-1)).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, _slow_reference(h, z, 0.5))
    # BYOL scale: 2 - 2 cos
    torch.testing.assert_close(normalized_regression_loss(h, z, scale=1.0), 2 * expected)


def test_zero_for_parallel_vectors_and_scale_invariant() -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(8, 16, generator=g, dtype=torch.float64)
    scales = torch.rand(8, 1, generator=g, dtype=torch.float64) * 100 + 0.01
    assert normalized_regression_loss(h, h * scales).abs().item() < 1e-12
    z = torch.randn(8, 16, generator=g, dtype=torch.float64)
    torch.testing.assert_close(normalized_regression_loss(h * 7.5, z * 0.02), normalized_regression_loss(h, z))
    # antiparallel vectors: 1 - cos = 2
    torch.testing.assert_close(normalized_regression_loss(h, -3 * h), torch.tensor(2.0, dtype=torch.float64))


def test_reductions_and_shape_check() -> None:
    h, z = torch.randn(5, 4), torch.randn(5, 4)
    per = normalized_regression_loss(h, z, reduction="none")
    assert per.shape == (5,)
    torch.testing.assert_close(normalized_regression_loss(h, z, reduction="sum"), per.sum())
    with pytest.raises(ValueError):
        normalized_regression_loss(h, torch.randn(5, 3))
    with pytest.raises(ValueError):
        normalized_regression_loss(h, z, reduction="max")


def test_stop_gradient_on_target() -> None:
    h = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    normalized_regression_loss(h, z).backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert z.grad is None  # no gradient reaches the target branch
    # without stop-gradient the target would receive one (the flag is what makes the difference)
    z2 = torch.randn(4, 8, requires_grad=True)
    normalized_regression_loss(h, z2, stop_gradient=False).backward()
    assert z2.grad is not None


def test_safe_norm_zero_vector_is_finite() -> None:
    h = torch.zeros(2, 4, requires_grad=True)
    loss = normalized_regression_loss(h, torch.ones(2, 4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()
    assert torch.equal(safe_normalize(torch.zeros(3)), torch.zeros(3))


def test_brave_loss_is_mean_of_both_directions_for_every_broad_view() -> None:
    g = torch.Generator().manual_seed(2)
    z_n, h_n = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g, requires_grad=True)
    broad = [(torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g, requires_grad=True)) for _ in range(2)]
    loss, terms = brave_loss((z_n, h_n), broad)
    expected = []
    for z_b, h_b in broad:
        expected += [1 - F.cosine_similarity(h_b, z_n).mean(), 1 - F.cosine_similarity(h_n, z_b).mean()]
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    assert set(terms) == {"b0_to_n", "n_to_b0", "b1_to_n", "n_to_b1"}
    # one narrow pair per broad view is accepted too
    loss2, _ = brave_loss([(z_n, h_n), (z_n, h_n)], broad)
    torch.testing.assert_close(loss, loss2)
    with pytest.raises(ValueError):
        brave_loss((z_n, h_n), [])


def test_brave_loss_gradients_only_reach_predictions() -> None:
    z_n = torch.randn(4, 8, requires_grad=True)
    h_n = torch.randn(4, 8, requires_grad=True)
    z_b = torch.randn(4, 8, requires_grad=True)
    h_b = torch.randn(4, 8, requires_grad=True)
    loss, _ = brave_loss((z_n, h_n), [(z_b, h_b)])
    loss.backward()
    assert z_n.grad is None and z_b.grad is None
    assert h_n.grad is not None and h_b.grad is not None


def test_normalized_std_collapse_monitor() -> None:
    d = 128
    z = torch.randn(4096, d)
    healthy = normalized_std(z).item()
    assert abs(healthy * math.sqrt(d) - 1) < 0.05  # ≈ 1/sqrt(d)
    collapsed = torch.randn(1, d).expand(64, d) + 1e-6 * torch.randn(64, d)
    assert normalized_std(collapsed).item() < 1e-4
    assert normalized_std(torch.randn(1, d)).item() == 0.0


def test_module_form() -> None:
    h, z = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(NormalizedRegressionLoss(1.0)(h, z), normalized_regression_loss(h, z, scale=1.0))
