r"""Normalised regression loss of BYOL (Grill et al., NeurIPS 2020) and BraVe (Recasens et al., ICCV 2021).

Both methods regress an online prediction :math:`h` onto a stop-gradient target :math:`z` after L2 normalisation:

.. math::

    \ell(h, z) = s \, \Big\| \frac{h}{\|h\|} - \frac{\mathrm{sg}(z)}{\|\mathrm{sg}(z)\|} \Big\|_2^2
               = 2s\,\big(1 - \cos(h, z)\big)

with :math:`s = \tfrac12` in BraVe (its ``_regression_loss``: ``mean_batch 0.5·‖n(x) − n(y)‖²`` = 1 − cos) and
:math:`s = 1` in BYOL (eq. 2 of the BYOL paper: ``2 − 2 cos``). Norms use a *safe* norm (a vector whose norm is
below ``eps`` is treated as having norm ``eps``), as the official BraVe code does, so a zero vector gives a finite
loss and finite gradients.

:func:`brave_loss` is BraVe's symmetric objective (Sec. 3 of the paper; ``loss_fn`` in the official code): for every
broad view :math:`b_k` the broad prediction regresses the narrow projection and the narrow prediction regresses the
broad projection,

.. math::

    \mathcal{L} = \frac{1}{2K} \sum_{k=1}^{K} \Big[\ell\big(h_{b_k}, \mathrm{sg}(z_n)\big)
                                                 + \ell\big(h_n^{(k)}, \mathrm{sg}(z_{b_k})\big)\Big],

the mean over all appended terms. There is no momentum (EMA) target: the targets are the other branch's current
online projections with the gradient stopped.

:func:`normalized_std` is the collapse monitor of SimSiam/BYOL practice: the per-dimension standard deviation over
the batch of the L2-normalised projections, averaged over dimensions — about :math:`1/\sqrt{d}` when the
representation is spread out, 0 when it has collapsed to a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "NormalizedRegressionLoss",
    "brave_loss",
    "normalized_regression_loss",
    "normalized_std",
    "safe_normalize",
]


def safe_normalize(x: Tensor, eps: float = 1e-5) -> Tensor:
    r"""``x / max(‖x‖, eps)`` along the last dimension (BraVe's ``_safe_norm``; finite gradient at 0)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / norm.clamp_min(eps)


def normalized_regression_loss(
    pred: Tensor,
    target: Tensor,
    *,
    scale: float = 0.5,
    eps: float = 1e-5,
    stop_gradient: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r""":math:`s\,\|n(h) - n(\mathrm{sg}(z))\|^2` per sample, averaged over the batch (``reduction="mean"``).

    Args:
        pred: online predictions :math:`h`, shape (B, D) (any leading shape; the last dim is the feature dim).
        target: targets :math:`z`, same shape. Detached when ``stop_gradient`` (the paper's sg(·)).
        scale: :math:`s`; 0.5 for BraVe (loss = 1 − cos), 1.0 for BYOL (loss = 2 − 2 cos).
        eps: minimum norm of the safe normalisation.
        stop_gradient: detach ``target`` (always true in BYOL/BraVe; off only for tests/other uses).
        reduction: ``"mean"`` (scalar), ``"sum"`` or ``"none"`` (per sample).
    """
    if pred.shape != target.shape:
        raise ValueError(f"normalized_regression_loss: pred {tuple(pred.shape)} != target {tuple(target.shape)}")
    if stop_gradient:
        target = target.detach()
    per_sample = scale * (safe_normalize(pred, eps) - safe_normalize(target, eps)).pow(2).sum(dim=-1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def brave_loss(
    narrow: tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor]],
    broad: Sequence[tuple[Tensor, Tensor]],
    *,
    scale: float = 0.5,
    eps: float = 1e-5,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""BraVe's symmetric narrow↔broad regression, mean over all 2K terms (see the module docstring).

    Args:
        narrow: ``(z_n, h_n)`` projection and prediction of the narrow view, or one such pair per broad view
            (when the narrow branch is re-projected for every broad view, as the official code does).
        broad: ``[(z_b1, h_b1), (z_b2, h_b2), ...]`` one pair per broad view, produced by the *same* projector and
            predictor as the narrow pair.
        scale, eps: as in :func:`normalized_regression_loss` (scale 0.5 → every term is 1 − cos).

    Returns:
        ``(loss, terms)`` where ``terms`` holds every term under ``"b{k}_to_n"`` (broad predicts narrow) and
        ``"n_to_b{k}"`` (narrow predicts broad), detached, for logging.
    """
    if not broad:
        raise ValueError("brave_loss needs at least one broad view")
    if isinstance(narrow, tuple) and len(narrow) == 2 and isinstance(narrow[0], Tensor):
        narrow_pairs: list[tuple[Tensor, Tensor]] = [narrow] * len(broad)  # type: ignore[list-item]
    else:
        narrow_pairs = list(narrow)  # type: ignore[arg-type]
        if len(narrow_pairs) != len(broad):
            raise ValueError(f"brave_loss: {len(narrow_pairs)} narrow pairs for {len(broad)} broad views")
    losses: list[Tensor] = []
    terms: dict[str, Tensor] = {}
    for k, ((z_n, h_n), (z_b, h_b)) in enumerate(zip(narrow_pairs, broad)):
        b_to_n = normalized_regression_loss(h_b, z_n, scale=scale, eps=eps)
        n_to_b = normalized_regression_loss(h_n, z_b, scale=scale, eps=eps)
        terms[f"b{k}_to_n"] = b_to_n.detach()
        terms[f"n_to_b{k}"] = n_to_b.detach()
        losses.extend([b_to_n, n_to_b])
    return torch.stack(losses).mean(), terms


@torch.no_grad()
def normalized_std(z: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Mean over dimensions of the batch std of L2-normalised ``z`` (B, D): ≈ 1/√D when healthy, → 0 on collapse."""
    if z.ndim != 2 or z.shape[0] < 2:
        return torch.zeros((), device=z.device)
    return safe_normalize(z.float(), eps).std(dim=0).mean()


class NormalizedRegressionLoss(nn.Module):
    """Module form of :func:`normalized_regression_loss` (``scale=0.5``: BraVe; ``scale=1.0``: BYOL)."""

    def __init__(self, scale: float = 0.5, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = scale
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean over the batch of ``scale·‖n(pred) − n(sg(target))‖²``."""
        return normalized_regression_loss(pred, target, scale=self.scale, eps=self.eps)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, eps={self.eps}"
