r"""ECDDP losses (Yang, Pan, Liu, "Event Camera Data Dense Pre-training", ECCV 2024): context mining and the three
self-distillation levels, as pure functions (no parameters, no Lightning).

Notation: :math:`P_\theta` are student prototype logits, :math:`Q` teacher targets (Sinkhorn–Knopp-centred teacher
probabilities at temperature :math:`\tau_t`), :math:`\tau_s = 0.1` the student temperature and

.. math:: \mathrm{CE}(Q, P) = -\sum_k Q_k \log \mathrm{softmax}(P / \tau_s)_k .

* **Context mining** — :func:`cosine_kmeans`: per image, K-means with cosine distance on the L2-normalised teacher
  patch features of the full view (:math:`K = 8` contexts, 10 iterations); :func:`context_membership` turns the
  assignments into a ``(B, K, N)`` membership mask and :func:`pooling_attention_mask` into the attention mask of the
  context pooling (query :math:`k` sees itself and the tokens of context :math:`k`).
* **Patch level** (iBOT) — :func:`patch_loss`: masked student tokens of a global crop against the teacher tokens of the
  same (unmasked) crop, each image weighted by one over its number of masked tokens, summed over images and divided
  by the number of global crops (masked or not), as in the official ``iBOTPatchLoss.forward_masked``.
* **Context level** — :func:`context_loss`: mean CE over the (crop, context) pairs present in a crop.
* **Image level** (DINO) — :func:`image_loss`: each global crop against the teacher's *other* global crop, each local
  crop against both teacher global crops.
* :func:`ecddp_objective` weights them as the paper: the crop-level terms are L1-normalised by their number
  (:math:`w = 1 / (2 n_{local} + 2 + \lambda_1)`, :math:`\lambda_1 = 2`, so :math:`w = 1/20` with 8 local crops).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from evssl.losses.contrastive import sinkhorn_knopp
from evssl.losses.distributed import world

__all__ = [
    "KMeansResult",
    "context_loss",
    "context_membership",
    "cosine_kmeans",
    "ecddp_objective",
    "image_loss",
    "patch_loss",
    "pooling_attention_mask",
    "prototype_cross_entropy",
    "sinkhorn_targets",
]


# ------------------------------------------------------------------------------------------------------- K-means
class KMeansResult(NamedTuple):
    """Output of :func:`cosine_kmeans`.

    Attributes:
        assign: ``(B, N)`` long, cluster of every token (from the last assignment step).
        centroids: ``(B, K, D)`` unit-norm centroids (means of the last assignment, re-normalised).
        counts: ``(B, K)`` long, tokens per cluster in ``assign``.
    """

    assign: Tensor
    centroids: Tensor
    counts: Tensor

    @property
    def valid(self) -> Tensor:
        """``(B, K)`` bool: the cluster has at least one token."""
        return self.counts > 0


@torch.no_grad()
def cosine_kmeans(
    x: Tensor,
    num_clusters: int,
    iters: int = 10,
    empty: Literal["reseed", "keep"] = "reseed",
    generator: torch.Generator | None = None,
) -> KMeansResult:
    r"""Batched spherical K-means, one clustering per image (ECDDP's ``batch_cosine_KMeans``).

    ``x`` ``(B, N, D)`` is L2-normalised; the ``K`` centroids start at ``K`` distinct random tokens of the image (with
    repetition only when ``N < K``); then ``iters`` times: normalise the centroids, assign every token to
    :math:`\arg\max_k \langle \hat x_n, \hat c_k\rangle` (= the smallest cosine distance), set each centroid to the
    mean of its tokens.

    Empty clusters (the official code gives them a zero centroid — ``scatter_mean`` — which then only wins ties, or
    shrinks the centroid tensor when the last index is empty): with ``empty="reseed"`` (default) the ``j``-th empty
    cluster of an image restarts at the token ``j``-th farthest from its own centroid, the usual fix, which also
    splits regions of identical tokens (e.g. empty event regions) as soon as they differ at all; with ``"keep"`` it
    keeps its previous centroid. Clusters still empty after the last step have ``counts == 0`` (``valid`` False);
    callers drop them. Runs without gradient, per image, so under DDP it stays local to each rank.
    """
    if x.ndim != 3:
        raise ValueError(f"cosine_kmeans expects (B, N, D) features, got {tuple(x.shape)}")
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    if empty not in ("reseed", "keep"):
        raise ValueError(f"empty must be 'reseed' or 'keep', got {empty!r}")
    b, n, d = x.shape
    k = int(num_clusters)
    xn = F.normalize(x.detach().float(), dim=-1)
    gdev = generator.device if generator is not None else xn.device
    noise = torch.rand(b, n, generator=generator, device=gdev).to(xn.device)
    order = noise.argsort(dim=1)
    init = order[:, torch.arange(k, device=xn.device) % n]  # (B, K)
    centroids = xn.gather(1, init[..., None].expand(-1, -1, d))
    assign = torch.zeros(b, n, dtype=torch.long, device=xn.device)
    counts = torch.zeros(b, k, dtype=torch.long, device=xn.device)
    for _ in range(max(int(iters), 1)):
        cn = F.normalize(centroids, dim=-1)
        sim = torch.einsum("bnd,bkd->bnk", xn, cn)
        assign = sim.argmax(dim=-1)
        onehot = F.one_hot(assign, k).to(xn.dtype)  # (B, N, K)
        counts = onehot.sum(1).long()
        means = torch.einsum("bnk,bnd->bkd", onehot, xn) / counts.clamp_min(1)[..., None].to(xn.dtype)
        is_empty = counts == 0
        if empty == "keep":
            centroids = torch.where(is_empty[..., None], cn, means)
        else:
            own = sim.gather(2, assign[..., None])[..., 0]  # similarity of each token to its centroid
            far = own.argsort(dim=1)  # farthest first
            rank = (is_empty.long().cumsum(1) - 1).clamp(0, n - 1)
            seed = xn.gather(1, far.gather(1, rank)[..., None].expand(-1, -1, d))
            centroids = torch.where(is_empty[..., None], seed, means)
    return KMeansResult(assign, F.normalize(centroids, dim=-1), counts)


def context_membership(assign: Tensor, num_clusters: int) -> Tensor:
    """``(B, K, N)`` bool: token ``n`` belongs to context ``k`` (one-hot of ``assign`` ``(B, N)``)."""
    return F.one_hot(assign.long(), num_clusters).transpose(1, 2).bool()


def pooling_attention_mask(membership: Tensor) -> Tensor:
    """Attention mask ``(B, K, K + N)`` of masked attention pooling: query ``k`` may attend to itself (among the
    ``K`` queries) and to the tokens of context ``k`` (ECDDP ``AttentionPool``: ``[eye(K) | membership]``)."""
    b, k, _ = membership.shape
    eye = torch.eye(k, dtype=torch.bool, device=membership.device).expand(b, k, k)
    return torch.cat([eye, membership.bool()], dim=-1)


# ----------------------------------------------------------------------------------------------------- targets
@torch.no_grad()
def sinkhorn_targets(logits: Tensor, temperature: float, n_iters: int = 3, distributed: bool = True) -> Tensor:
    r"""Teacher targets :math:`Q = \mathrm{SK}(\exp(z / \tau_t))` (rows sum to 1, column sums equalised over the
    batch of all ranks): DINOv2/ECDDP ``sinkhorn_knopp_teacher``, via :func:`~evssl.losses.contrastive.sinkhorn_knopp`.
    Ranks may hold different numbers of rows (masked patches, valid contexts); an empty input gives an empty
    ``(0, K)`` tensor (under DDP it still joins the all-reduces of the other ranks)."""
    if logits.shape[0] == 0 and not (distributed and world()[1] > 1):
        return logits.detach().float()
    return sinkhorn_knopp(logits.detach().float() / temperature, n_iters=n_iters, distributed=distributed)


def prototype_cross_entropy(student_logits: Tensor, teacher_probs: Tensor, student_temp: float = 0.1) -> Tensor:
    r"""Per-row :math:`\mathrm{CE}(Q, P) = -\sum_k Q_k \log\mathrm{softmax}(P/\tau_s)_k`, shape ``student.shape[:-1]``.

    Computed in float32; no gradient reaches ``teacher_probs``."""
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probs.shape)} differ")
    lsm = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs.detach().float() * lsm).sum(dim=-1)


# ------------------------------------------------------------------------------------------------------- losses
def patch_loss(
    student_logits: Tensor,
    teacher_probs: Tensor,
    image_index: Tensor,
    num_images: int,
    student_temp: float = 0.1,
) -> Tensor:
    r"""iBOT masked-patch loss over the masked tokens of all global crops (official ``forward_masked``).

    ``student_logits``/``teacher_probs`` ``(M, P)`` are the masked tokens of all crops, ``image_index`` ``(M,)`` the
    crop each belongs to, ``num_images`` the number of global crops (masked or not):

    .. math:: \mathcal L_{patch} = \frac{1}{n_{img}} \sum_{i} \frac{1}{|M_i|}\sum_{j \in M_i}
              \mathrm{CE}(Q_{ij}, P_{ij}).

    Zero (with a gradient path) when nothing is masked.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    ce = prototype_cross_entropy(student_logits, teacher_probs, student_temp)
    counts = torch.bincount(image_index, minlength=num_images).clamp_min(1).to(ce.dtype)
    return (ce / counts[image_index]).sum() / max(int(num_images), 1)


def context_loss(student_logits: Tensor, teacher_probs: Tensor, student_temp: float = 0.1) -> Tensor:
    r"""Context-level loss: mean CE over the (crop, context) pairs present in a crop,
    :math:`\frac{1}{|V|}\sum_{(c,k)\in V}\mathrm{CE}(Q_{b(c)k}, P_{ck})` (the teacher target of context :math:`k`
    of the full view, repeated for every crop of that image). Zero when no pair is valid."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    return prototype_cross_entropy(student_logits, teacher_probs, student_temp).mean()


def image_loss(
    student_global: Tensor,
    teacher_global: Tensor,
    student_local: Tensor | None = None,
    student_temp: float = 0.1,
) -> tuple[Tensor, Tensor]:
    r"""Image-level (DINO) loss terms, crop-major ``(n_crops, B, P)`` inputs, two global crops.

    Returns ``(global_sum, local_sum)``:

    .. math:: \text{global} = \sum_{g=1}^{2} \overline{\mathrm{CE}}(Q_{3-g}, P_g),\qquad
              \text{local} = \sum_{l=1}^{n_{local}}\sum_{g=1}^{2} \overline{\mathrm{CE}}(Q_g, P_l),

    with :math:`\overline{\mathrm{CE}}` the mean over the batch (each global crop against the teacher's other crop;
    every local crop against both teacher global crops — the official pairing).
    """
    if student_global.shape[0] != 2 or teacher_global.shape[0] != 2:
        raise ValueError("ECDDP uses exactly two global crops")
    ce_g = prototype_cross_entropy(student_global, teacher_global.flip(0), student_temp)  # (2, B)
    global_sum = ce_g.mean(dim=1).sum()
    if student_local is None or student_local.shape[0] == 0:
        return global_sum, global_sum * 0.0
    lsm = F.log_softmax(student_local.float() / student_temp, dim=-1)  # (L, B, P)
    t = teacher_global.detach().float()
    ce_l = -torch.einsum("gbp,lbp->lgb", t, lsm)  # (L, 2, B)
    return global_sum, ce_l.mean(dim=2).sum()


def ecddp_objective(
    patch: Tensor,
    context: Tensor,
    image_global: Tensor,
    image_local: Tensor,
    num_local_crops: int,
    context_weight: float = 2.0,
    patch_weight: float = 1.0,
    crop_weight: float = 1.0,
) -> dict[str, Tensor]:
    r"""Total ECDDP loss from the terms above (official weighting, ``loss_weight`` 1 for DINO and iBOT).

    With :math:`n_l` local crops, 2 global crops, :math:`\lambda_1` = ``context_weight`` and the crop-level weights
    L1-normalised (supp. §2: ":math:`\lambda`'s are normalised by the number of crops", e.g.
    :math:`\lambda_1 = 2/(2 + 2\cdot 8 + 2) = 0.1`):

    .. math::

        w = \frac{1}{2 n_l + 2 + \lambda_1},\qquad
        \mathcal L = \text{crop\_weight}\cdot w\,(\text{local} + \text{global} + \lambda_1 \mathcal L_{ctx})
                   + \text{patch\_weight}\cdot\mathcal L_{patch}.

    With the defaults this is the official ``1/(n_global_terms + n_local_terms) = 1/20`` (the code hard-codes the
    context multiplier to the number of global crops, 2). Returns the total and every weighted part.
    """
    w = 1.0 / (2 * num_local_crops + 2 + context_weight)
    local = crop_weight * w * image_local
    glob = crop_weight * w * image_global
    ctx = crop_weight * w * context_weight * context
    pat = patch_weight * patch
    return {
        "loss": local + glob + ctx + pat,
        "loss_image_local": local,
        "loss_image_global": glob,
        "loss_context": ctx,
        "loss_patch": pat,
    }
