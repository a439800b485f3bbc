"""ECDP losses (Yang et al., *Event Camera Data Pre-training*, ICCV 2023): embedding projection and distribution
alignment. InfoNCE itself is :func:`evssl.losses.contrastive.info_nce`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from evssl.losses.contrastive import sinkhorn_knopp


def embedding_projection(v: Tensor, y: Tensor, detach_target: bool = True) -> Tensor:
    r"""ζ(v, y): the projection of the event embedding onto the paired RGB embedding direction (ECDP Eq. 2–3).

    .. math:: \zeta(v, y) = (\hat v \cdot \hat y)\,\hat y,\qquad \hat v = v/\lVert v\rVert,\ \hat y = y/\lVert y\rVert

    as in the official code (both unit-normalised, ``ŷ`` detached, the result is *not* re-normalised: its length
    |cos(v, y)| carries how well the event embedding agrees with the image). L_evt is InfoNCE on ζ(q_evt, y) against
    ζ(k_evt, y) with ``normalize=False``.
    """
    if v.shape != y.shape:
        raise ValueError(f"embedding_projection: v {tuple(v.shape)} and y {tuple(y.shape)} differ in shape")
    y_hat = F.normalize(y, dim=-1)
    if detach_target:
        y_hat = y_hat.detach()
    cos = (F.normalize(v, dim=-1) * y_hat).sum(-1, keepdim=True)
    return cos * y_hat


def distribution_alignment_loss(
    q: Tensor, y: Tensor, temperature: float = 0.1, form: str = "paper", sinkhorn_ranks: str = "local"
) -> Tensor:
    r"""L_kl: align the batch similarity distribution of event embeddings with that of the RGB embeddings.

    With :math:`\hat q, \hat y` unit-normalised and :math:`S^q = \hat q\hat q^\top/\tau`, :math:`S^y = \hat y\hat
    y^\top/\tau` (B×B, the sample's own pair included):

    * ``form="paper"`` (ECDP Eq. 5–6): :math:`s^q_{ij} = \mathrm{softmax}_j S^q_{ij}`, :math:`s^y_{ij} =
      \mathrm{softmax}_j S^y_{ij}`, :math:`\mathcal{L} = \frac1B\sum_i \mathrm{KL}(s^q_i \,\|\, s^y_i)`.
    * ``form="code"`` (official implementation): target :math:`P = \mathrm{Sinkhorn}(S^y)` (3 iterations, rows sum
      to 1), :math:`\mathcal{L} = \frac1B\sum_i \mathrm{KL}(P_i \,\|\, \mathrm{softmax}_j S^q_{ij})` — the reversed
      direction, as ``KLDivLoss(batchmean)(log_softmax(S^q), P)`` computes.

    In both forms the RGB side keeps its gradient (the trainable map h_I learns through this loss, as in the code).
    ``sinkhorn_ranks`` (``form="code"`` under DDP): ``"local"`` solves each rank's own B×B Sinkhorn;
    ``"official"`` all-reduces the total and per-column sums as the official ``hub_model.py`` ``sinkhorn`` does
    (:func:`~evssl.losses.contrastive.sinkhorn_knopp` with ``cross_rank="official"``); one process: the same.
    """
    qn, yn = F.normalize(q, dim=-1), F.normalize(y, dim=-1)
    log_sq = F.log_softmax(qn @ qn.t() / temperature, dim=-1)
    logits_y = yn @ yn.t() / temperature
    if form == "paper":
        log_sy = F.log_softmax(logits_y, dim=-1)
        return (log_sq.exp() * (log_sq - log_sy)).sum(-1).mean()
    if form == "code":
        if sinkhorn_ranks not in ("local", "official"):
            raise ValueError(f"sinkhorn_ranks must be 'local' or 'official', got {sinkhorn_ranks!r}")
        official = sinkhorn_ranks == "official"
        target = sinkhorn_knopp(
            logits_y, n_iters=3, distributed=official, cross_rank="official" if official else "exact"
        )
        return F.kl_div(log_sq, target, reduction="batchmean")
    raise ValueError(f"distribution_alignment_loss: form must be 'paper' or 'code', got {form!r}")
