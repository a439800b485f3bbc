"""Meta-gradient utility: finite differences, first-order flag, Taylor expansion, chained vs pair modes."""

from __future__ import annotations

import pytest
import torch

from evssl.nn.meta import grad_cosine, inner_step, meta_objective, sgd_adapt

_D = torch.float64
A = [torch.tensor(v, dtype=_D) for v in ([1.0, 2.0, 0.5], [0.3, 1.5, 2.0], [2.0, 0.2, 1.0])]
B = [torch.tensor(v, dtype=_D) for v in ([0.5, -1.0, 0.2], [-0.4, 0.3, 1.0], [0.1, 0.7, -0.6])]


@pytest.fixture(autouse=True)
def _float64():
    """Finite differences in double precision; the global default is restored for the other test modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def toy_loss(params, i):
    """A non-quadratic toy loss per window (non-zero, non-constant Hessian)."""
    w = params["w"]
    return (A[i] * w**4).sum() / 4 + (B[i] * w).sum() + 0.5 * (w[0] * w[1]) ** 2


def _theta():
    return {"w": torch.tensor([0.7, -0.4, 1.1], dtype=torch.float64, requires_grad=True)}


def _outer(w, alpha, first=False):
    p = {"w": w}
    res = meta_objective(toy_loss, p, 2, alpha, first_order=first, diagnostics=False)
    return res.loss


def test_meta_gradient_matches_finite_differences():
    alpha = 0.1
    p = _theta()
    (g,) = torch.autograd.grad(_outer(p["w"], alpha), [p["w"]])
    eps = 1e-6
    fd = torch.zeros(3)
    for j in range(3):
        e = torch.zeros(3)
        e[j] = eps
        w0 = p["w"].detach()
        with torch.enable_grad():
            hi = _outer((w0 + e).requires_grad_(), alpha).detach()
            lo = _outer((w0 - e).requires_grad_(), alpha).detach()
        fd[j] = (hi - lo) / (2 * eps)
    torch.testing.assert_close(g, fd, atol=1e-7, rtol=1e-6)


def test_first_order_drops_exactly_the_second_order_term():
    alpha = 0.1
    p = _theta()
    (g_full,) = torch.autograd.grad(_outer(p["w"], alpha), [p["w"]])
    (g_fo,) = torch.autograd.grad(_outer(p["w"], alpha, first=True), [p["w"]])
    # analytic pieces: theta' = theta - alpha g1(theta); full = (I - alpha H1(theta)) g2(theta'); FO = g2(theta')
    w = p["w"].detach()
    h1 = torch.autograd.functional.hessian(lambda x: toy_loss({"w": x}, 0), w)
    g1 = torch.autograd.functional.jacobian(lambda x: toy_loss({"w": x}, 0), w)
    w2 = w - alpha * g1
    g2 = torch.autograd.functional.jacobian(lambda x: toy_loss({"w": x}, 1), w2)
    torch.testing.assert_close(g_fo, g2)
    torch.testing.assert_close(g_full - g_fo, -alpha * h1 @ g2)
    assert (g_full - g_fo).abs().max() > 1e-3  # the term is not negligible here


def test_taylor_expansion_gives_minus_gradient_inner_product():
    p = _theta()
    w = p["w"].detach()
    g1 = torch.autograd.functional.jacobian(lambda x: toy_loss({"w": x}, 0), w)
    g2 = torch.autograd.functional.jacobian(lambda x: toy_loss({"w": x}, 1), w)
    target = -torch.dot(g1, g2)
    errs = []
    for alpha in (1e-2, 1e-3, 1e-4):
        res = meta_objective(toy_loss, {"w": w.clone().requires_grad_()}, 2, alpha, diagnostics=False)
        quotient = (res.loss.detach() - toy_loss({"w": w}, 1)) / alpha
        errs.append(float((quotient - target).abs()))
    assert errs[2] < 1e-3 * abs(float(target)) + 1e-6
    assert errs[0] > errs[1] > errs[2]  # the error shrinks linearly in alpha (O(alpha) remainder)


def test_chained_objective_and_cosines():
    alpha = 0.05
    p = _theta()
    res = meta_objective(toy_loss, p, 3, alpha, chain=True)
    # by hand: theta2 = theta1 - a g1(theta1), theta3 = theta2 - a g2(theta2); outer = (L2(theta2) + L3(theta3)) / 2
    w1 = p["w"].detach()
    g = lambda i, x: torch.autograd.functional.jacobian(lambda y: toy_loss({"w": y}, i), x)  # noqa: E731
    w2 = w1 - alpha * g(0, w1)
    w3 = w2 - alpha * g(1, w2)
    expect = (toy_loss({"w": w2}, 1) + toy_loss({"w": w3}, 2)) / 2
    torch.testing.assert_close(res.loss.detach(), expect)
    torch.testing.assert_close(res.params["w"].detach(), w3)
    assert len(res.grad_cosines) == 2
    cos1 = torch.dot(g(0, w1), g(1, w2)) / (g(0, w1).norm() * g(1, w2).norm())
    torch.testing.assert_close(res.grad_cosines[0], cos1)
    pairs = meta_objective(toy_loss, _theta(), 3, alpha, chain=False)
    w2b = w1 - alpha * g(1, w1)
    expect_pairs = (toy_loss({"w": w2}, 1) + toy_loss({"w": w2b}, 2)) / 2
    torch.testing.assert_close(pairs.loss.detach(), expect_pairs)


def test_learnable_inner_lr_gets_a_gradient_and_helpers():
    log_a = torch.tensor(-2.0, requires_grad=True)
    res = meta_objective(toy_loss, _theta(), 2, log_a.exp(), first_order=True, diagnostics=False)
    (ga,) = torch.autograd.grad(res.loss, [log_a])
    assert ga.abs() > 0
    a = {"x": torch.tensor([1.0, 0.0])}
    b = {"x": torch.tensor([1.0, 1.0])}
    torch.testing.assert_close(grad_cosine(a, b), torch.tensor(2**-0.5))
    p = _theta()
    new, _ = inner_step(p, toy_loss(p, 0), 0.1, first_order=True)
    assert not new["w"].is_leaf
    adapted, first = sgd_adapt(lambda q: toy_loss(q, 0), p, 0.1, steps=3)
    assert toy_loss(adapted, 0) < first
    assert p["w"].grad is None  # the original parameters are untouched


def test_adam_step_matches_torch_adam():
    from evssl.nn.meta import adam_step

    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, generator=gen)
    grads = [torch.randn(5, generator=gen) for _ in range(4)]
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    p, state = p0.clone(), {}
    for g in grads:
        ref.grad = g.clone()
        opt.step()
        with torch.no_grad():
            p = adam_step(p, g, state, 0.05)
        torch.testing.assert_close(p, ref.detach(), rtol=1e-12, atol=1e-12)
    assert state["t"] == 4
    # the first step moves every coordinate by ~lr (bias correction), in the direction opposite to the gradient
    first = adam_step(p0, grads[0], {}, 0.05)
    torch.testing.assert_close((p0 - first).abs(), torch.full((5,), 0.05), rtol=1e-6, atol=0)
    assert torch.equal(torch.sign(p0 - first), torch.sign(grads[0]))
