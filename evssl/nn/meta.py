"""Online meta-learning (MAML-style) over consecutive windows of one sequence (Li et al., CVPR 2020, Sec. 3).

Parameters are a ``{name: tensor}`` dict evaluated with :func:`torch.func.functional_call`, so adapted ("fast")
weights are plain tensors in an autograd graph and the module's own parameters are never overwritten.

Objective (digest §2.3, [R] for the exact indexing; windows ``D_1 .. D_{M+1}`` of one training sequence):

* ``chain=True`` (default, the online setting: each adaptation starts where the last one ended):
  ``theta_1 = theta``, ``theta_{i+1} = theta_i - alpha grad L(theta_i; D_i)``, outer loss
  ``(1/M) sum_{i=1..M} L(theta_{i+1}; D_{i+1})``. The evaluation ``L(theta_{i+1}; D_{i+1})`` is both the outer term of
  pair ``i`` and the inner loss of pair ``i + 1``, so ``M`` pairs cost ``M + 1`` forward passes.
* ``chain=False`` (independent pairs, plain MAML): ``theta'_i = theta - alpha grad L(theta; D_i)``, outer loss
  ``(1/M) sum_i L(theta'_i; D_{i+1})`` (``2M`` passes).

Second order: the inner gradients are built with ``create_graph=True``, so the outer gradient is
``d/dtheta L(theta - alpha g_i(theta); D_{i+1}) = (I - alpha H_i) grad L_{i+1}(theta')``. ``first_order=True``
detaches ``g_i`` (FOMAML): the outer gradient becomes ``grad L_{i+1}(theta')`` — exactly the
``- alpha H_i grad L_{i+1}`` term is dropped.

Online adaptation steps on plain tensors: :func:`sgd_adapt` (``theta - lr grad``) and :func:`adam_step` (one Adam
update of one tensor, Kingma & Ba 2015, Algorithm 1 with ``beta_1 = 0.9``, ``beta_2 = 0.999``, ``eps = 1e-8``; the
moments live in a caller-owned dict, so they can persist through a sequence).

Why it aligns gradients (the seed's expansion): for small ``alpha``,
``L(theta - alpha g_i; D_{i+1}) = L(theta; D_{i+1}) - alpha <g_i, g_{i+1}> + O(alpha^2)``, so minimising the outer
loss also maximises the inner product of consecutive windows' gradients. :func:`meta_objective` reports the cosine
between ``g_i = grad L(theta_i; D_i)`` and ``grad L(theta_{i+1}; D_{i+1})`` as a diagnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MetaResult",
    "adam_step",
    "functional_params",
    "grad_cosine",
    "inner_step",
    "meta_objective",
    "sgd_adapt",
]

Params = dict[str, Tensor]
LossFn = Callable[[Params, int], Tensor]  # (params, window index) -> scalar loss


def functional_params(module: nn.Module, names: Sequence[str] | None = None) -> Params:
    """``{name: parameter}`` of the trainable parameters of ``module`` (optionally only ``names``)."""
    out = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if names is not None:
        out = {n: out[n] for n in names}
    return out


def _grads(loss: Tensor, params: Params, create_graph: bool) -> dict[str, Tensor]:
    keys = list(params)
    # the graph is always kept: in chained mode an inner loss is also an outer term of the final backward
    gs = torch.autograd.grad(
        loss, [params[k] for k in keys], create_graph=create_graph, retain_graph=True, allow_unused=True
    )
    return {k: (torch.zeros_like(params[k]) if g is None else g) for k, g in zip(keys, gs)}


def inner_step(
    params: Params, loss: Tensor, lr: float | Tensor, first_order: bool = False
) -> tuple[Params, dict[str, Tensor]]:
    """``theta' = theta - lr * grad loss``; returns ``(theta', grads)``.

    With ``first_order`` the gradient is detached (no second-order path through it); ``lr`` may be a tensor (a
    learnable inner learning rate gets its gradient through ``theta'`` in both modes).
    """
    grads = _grads(loss, params, create_graph=not first_order)
    if first_order:
        grads = {k: g.detach() for k, g in grads.items()}
    return {k: p - lr * grads[k] for k, p in params.items()}, grads


def grad_cosine(a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
    """Cosine between two gradient dicts flattened into single vectors (detached)."""
    keys = [k for k in a if k in b]
    va = torch.cat([a[k].detach().reshape(-1) for k in keys])
    vb = torch.cat([b[k].detach().reshape(-1) for k in keys])
    return torch.dot(va, vb) / (va.norm() * vb.norm()).clamp_min(1e-20)


@dataclass
class MetaResult:
    """Outer loss (to back-propagate) and diagnostics of one meta step."""

    loss: Tensor
    inner_losses: list[Tensor] = field(default_factory=list)
    outer_losses: list[Tensor] = field(default_factory=list)
    grad_cosines: list[Tensor] = field(default_factory=list)
    params: Params = field(default_factory=dict)  # the last adapted parameters


def meta_objective(
    loss_fn: LossFn,
    params: Params,
    num_windows: int,
    inner_lr: float | Tensor,
    *,
    first_order: bool = False,
    chain: bool = True,
    diagnostics: bool = True,
) -> MetaResult:
    """The meta-objective over ``num_windows = M + 1`` consecutive windows (see module docstring).

    ``loss_fn(params, i)`` evaluates the self-supervised loss of window ``i`` with parameters ``params`` (the caller
    threads recurrent state between windows). ``diagnostics`` adds the gradient cosines (one extra gradient of the
    last outer loss in chained mode, of every outer loss in pair mode; no graph is kept for them).
    """
    m = int(num_windows) - 1
    if m < 1:
        raise ValueError(f"the meta-objective needs at least 2 windows, got {num_windows}")
    res = MetaResult(loss=torch.zeros(()))
    outer: list[Tensor] = []
    if chain:
        theta = params
        loss_i = loss_fn(theta, 0)
        prev_g: dict[str, Tensor] | None = None
        for i in range(m):
            theta_next, g_i = inner_step(theta, loss_i, inner_lr, first_order)
            if diagnostics and prev_g is not None:
                res.grad_cosines.append(grad_cosine(prev_g, g_i))
            prev_g = g_i
            res.inner_losses.append(loss_i.detach())
            loss_next = loss_fn(theta_next, i + 1)
            outer.append(loss_next)
            theta, loss_i = theta_next, loss_next
        if diagnostics and prev_g is not None:
            res.grad_cosines.append(grad_cosine(prev_g, _grads(loss_i, theta, create_graph=False)))
        res.params = theta
    else:
        for i in range(m):
            loss_i = loss_fn(params, i)
            theta_i, g_i = inner_step(params, loss_i, inner_lr, first_order)
            res.inner_losses.append(loss_i.detach())
            loss_next = loss_fn(theta_i, i + 1)
            outer.append(loss_next)
            if diagnostics:
                res.grad_cosines.append(grad_cosine(g_i, _grads(loss_next, theta_i, create_graph=False)))
            res.params = theta_i
    res.outer_losses = [o.detach() for o in outer]
    res.loss = torch.stack(outer).mean()
    return res


def sgd_adapt(loss_fn: Callable[[Params], Tensor], params: Params, lr: float, steps: int = 1) -> tuple[Params, Tensor]:
    """``steps`` plain SGD steps on ``loss_fn`` from detached copies of ``params`` (online adaptation, no meta graph).

    Returns the adapted (detached, leaf, ``requires_grad``) parameters and the loss before the first step.
    """
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    first = None
    for _ in range(int(steps)):
        loss = loss_fn(theta)
        if first is None:
            first = loss.detach()
        g = _grads(loss, theta, create_graph=False)
        with torch.no_grad():
            theta = {k: (p - lr * g[k]).requires_grad_(True) for k, p in theta.items()}
    return theta, (first if first is not None else torch.zeros(()))


def adam_step(p: Tensor, g: Tensor, state: dict[str, Any], lr: float) -> Tensor:
    """One Adam update of ``p`` with gradient ``g`` (module docstring); returns the new tensor (``p`` is untouched).

    ``state`` is ``{}`` before the first step and then holds ``m``, ``v`` (updated in place) and the step count ``t``:
    ``m = 0.9 m + 0.1 g``, ``v = 0.999 v + 0.001 g^2``, ``p - lr m_hat / (sqrt(v_hat) + 1e-8)`` with the bias-corrected
    ``m_hat = m / (1 - 0.9^t)``, ``v_hat = v / (1 - 0.999^t)``. Call it under ``torch.no_grad()``.
    """
    if not state:
        state.update(m=torch.zeros_like(p), v=torch.zeros_like(p), t=0)
    state["t"] += 1
    state["m"].mul_(0.9).add_(g, alpha=0.1)
    state["v"].mul_(0.999).addcmul_(g, g, value=0.001)
    m_hat = state["m"] / (1 - 0.9 ** state["t"])
    v_hat = state["v"] / (1 - 0.999 ** state["t"])
    return p - lr * m_hat / (v_hat.sqrt() + 1e-8)
