"""InfoNCE (MoCo-v3 form) and Sinkhorn–Knopp, shared by contrastive and prototype methods."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from evssl.losses.distributed import all_reduce_sum, gather, world


def info_nce(
    q: Tensor,
    k: Tensor,
    temperature: float,
    *,
    normalize: bool = True,
    gather_keys: bool = True,
    keys_with_grad: bool = False,
    scale_by_2t: bool = True,
) -> Tensor:
    r"""InfoNCE of queries against the keys of the whole (global) batch, positives on the diagonal.

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_i \log\frac{\exp(q_i\cdot k_i/\tau)}{\sum_j \exp(q_i\cdot k_j/\tau)}

    (Oord et al. 2018; He et al. 2020). As in MoCo-v3, the keys of all ranks are negatives (``gather_keys``); the
    positive of local query ``i`` on rank ``r`` is global key ``r·N + i``. ``keys_with_grad=False`` treats the other
    ranks' keys as constants (MoCo-v3); ``True`` back-propagates into them. ``normalize`` L2-normalises q and k
    first (turn it off for inputs that must not be re-normalised, e.g. ECDP's projected embeddings).
    ``scale_by_2t`` multiplies by 2τ as MoCo-v3 does, so the gradient scale does not depend on τ.
    """
    if q.shape != k.shape:
        raise ValueError(f"info_nce: q {tuple(q.shape)} and k {tuple(k.shape)} must have the same shape")
    if normalize:
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
    rank, _ = world()
    keys = gather(k, with_grad=keys_with_grad) if gather_keys else k
    offset = rank * q.shape[0] if gather_keys else 0
    logits = q @ keys.t() / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    loss = F.cross_entropy(logits, labels)
    return loss * (2 * temperature) if scale_by_2t else loss


def sinkhorn_knopp(
    logits: Tensor,
    n_iters: int = 3,
    distributed: bool = True,
    cross_rank: Literal["exact", "official"] = "exact",
) -> Tensor:
    r"""Sinkhorn–Knopp normalisation of ``exp(logits)`` (B, K) into a transport plan (Cuturi 2013; SwAV; DINOv2).

    Alternately normalises columns (prototypes) and rows (samples) of :math:`Q = \exp(\text{logits})` so that, at
    convergence, every row sums to 1 and every column sums to :math:`B_{\text{tot}}/K`. The last step normalises
    rows, so rows sum to 1 exactly. Differentiable (callers detach when the plan is a target). Computed in float32
    with the (global) max subtracted for stability, which leaves the plan unchanged.

    ``cross_rank`` says what is summed over ranks when ``distributed`` (on one process both are the same plan):

    * ``"exact"``: the Sinkhorn of the global batch. :math:`B_{\text{tot}}` is the batch over all ranks; the total
      mass, the per-prototype sums and the row count are all-reduced, so ranks may hold different numbers of rows
      (none included). Right whenever column k means the same prototype on every rank (SwAV, DINOv2, ECDDP).
    * ``"official"``: the cross-rank sums of the official ECDP code (``model/hub_model.py`` ``sinkhorn``, l. 128-150,
      its L_kl target): the total :math:`\sum Q` (l. 134-136) and the per-prototype (per-column) sums
      :math:`\sum_b Q_{bk}` (l. 140-142) are all-reduced and used **detached**; the per-sample (row) normalisation
      uses the local row sums and the local :math:`B` and :math:`K` (l. 143-149). In value this is the Sinkhorn of
      the batch stacked over ranks, the same plan as ``"exact"`` whenever every rank holds the same number of rows
      (the factor :math:`1/B` instead of :math:`1/B_{\text{tot}}` cancels at the next prototype normalisation); it
      differs in the gradient (the two detaches) and with unequal row counts (local :math:`B`). Needs the same K on
      every rank, as the official code.

    For ECDP's L_kl the "prototypes" are the columns of the local :math:`B\times B` similarity matrix, i.e. this
    rank's own samples: the cross-rank column sum adds the k-th samples of all ranks, which are unrelated, so the
    official target's column constraint is on a cross-rank sum of unrelated columns. The per-rank Sinkhorn (each
    rank's own B×B problem) is ``distributed=False``; the official DDP target is ``distributed=True,
    cross_rank="official"``.
    """
    if logits.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects (B, K) logits, got shape {tuple(logits.shape)}")
    if cross_rank not in ("exact", "official"):
        raise ValueError(f"sinkhorn_knopp: cross_rank must be 'exact' or 'official', got {cross_rank!r}")
    x = logits.float()
    top = x.max() if x.numel() else x.new_tensor(float("-inf"))  # a rank may hold no rows (e.g. no masked patch)
    x = x - (all_reduce_max(top) if distributed else top)
    if cross_rank == "official":
        return _sinkhorn_official(x, n_iters, distributed)
    q = torch.exp(x).t()  # (K, B)
    k, b = q.shape
    total = all_reduce_sum(q.sum()) if distributed else q.sum()
    q = q / total
    # the global number of rows, all-reduced: ranks may hold different numbers of rows (masked patches, valid
    # contexts), and every row must get the same mass 1 / B_tot (DINOv2 all-reduces n_masked_patches likewise)
    b_tot = all_reduce_sum(x.new_tensor(float(b))) if distributed else float(b)
    for _ in range(n_iters):
        rows = q.sum(dim=1, keepdim=True)  # per prototype, over the global batch
        rows = all_reduce_sum(rows) if distributed else rows
        q = q / rows / k
        q = q / q.sum(dim=0, keepdim=True) / b_tot
    return (q * b_tot).t()


def _sinkhorn_official(x: Tensor, n_iters: int, distributed: bool) -> Tensor:
    """The official ECDP ``sinkhorn`` on max-shifted logits: all-reduced, detached total and per-prototype sums;
    local per-sample normalisation with the local B and K (see :func:`sinkhorn_knopp`)."""
    q = torch.exp(x).t()  # (K, B)
    k, b = q.shape
    total = q.sum()
    q = q / (all_reduce_sum(total) if distributed else total).detach()
    for _ in range(n_iters):
        rows = q.sum(dim=1, keepdim=True)
        q = q / (all_reduce_sum(rows) if distributed else rows).detach() / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def all_reduce_max(x: Tensor) -> Tensor:
    """Max over ranks (no gradient; used only for numerical stabilisation)."""
    if world()[1] == 1:
        return x
    y = x.detach().clone()
    torch.distributed.all_reduce(y, op=torch.distributed.ReduceOp.MAX)
    return y
