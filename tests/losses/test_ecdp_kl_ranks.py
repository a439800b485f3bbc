"""ECDP's L_kl with ``sinkhorn_ranks="official"`` on 2 gloo processes against the official code, restated.

Official code (github.com/Yan98/Event-Camera-Data-Pre-training, commit 0b71793), ``model/hub_model.py``:

* ``get_kl_loss`` (l. 153-165), called as ``get_kl_loss(image1, image1, emb)`` (l. 206): unit-normalise both sides,
  ``q = q1 q1^T / T_image``, ``k = k1 k1^T / T_image`` (l. 163-164; the all-gathers are commented out, l. 156/159,
  so both are the local B x B), ``KLDivLoss(batchmean)(LogSoftmax(q), sinkhorn(k))`` (l. 165);
* ``sinkhorn`` (l. 128-150): ``Q = exp(k).t()``; the total (l. 134-136) and the per-row (prototype) sums inside the
  3 iterations (l. 140-142) are ``dist.all_reduce``-d and used detached; the per-column (sample) normalisation uses
  the local sums, B and K (l. 143-147).

evssl: :func:`evssl.losses.ecdp.distribution_alignment_loss` ``(q_img, y, temperature_img, "code", "official")``
(``ECDP.sinkhorn_ranks``, ``evssl/methods/ecdp.py``). The existing 2-process test of the Sinkhorn alone is
``tests/losses/test_contrastive.py::test_official_cross_rank_sinkhorn_matches_the_official_code_on_two_processes``;
this one covers the loss function the switch selects, value and gradients on both sides.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from evssl.losses.ecdp import distribution_alignment_loss

WORLD, B, D, TAU = 2, 6, 4, 0.5


def _rank_inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s q_img and y (B x D, different rows per rank; y correlated so the plan is not ~ identity)."""
    g = torch.Generator().manual_seed(100 + rank)
    q = torch.randn(B, D, generator=g)
    y = torch.randn(B, D, generator=g) + torch.tensor([1.0, 0.5, 0.0, 0.0])
    return q, y


def official_kl_losses(qs: list[torch.Tensor], ys: list[torch.Tensor], tau: float) -> list[torch.Tensor]:
    """Clean-room restatement of ``get_kl_loss`` + ``sinkhorn`` on ``len(qs)`` ranks in one process: every
    ``dist.all_reduce`` is a sum over the list of ranks, used detached as in the code (no max subtraction)."""
    q_logits = [F.normalize(q, dim=1) @ F.normalize(q, dim=1).t() / tau for q in qs]
    k_logits = [F.normalize(y, dim=1) @ F.normalize(y, dim=1).t() / tau for y in ys]
    Q = [torch.exp(k).t() for k in k_logits]
    K, Bq = Q[0].shape
    sum_q = sum(x.sum() for x in Q)
    Q = [x / sum_q.detach() for x in Q]
    for _ in range(3):
        rows = sum(x.sum(dim=1, keepdim=True) for x in Q)
        Q = [x / rows.detach() / K for x in Q]
        Q = [x / x.sum(dim=0, keepdim=True) / Bq for x in Q]
    targets = [(x * Bq).t() for x in Q]
    kl = torch.nn.KLDivLoss(reduction="batchmean", log_target=False)
    return [kl(F.log_softmax(q, dim=-1), t) for q, t in zip(q_logits, targets)]


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        q, y = (t.requires_grad_(True) for t in _rank_inputs(rank))
        loss = distribution_alignment_loss(q, y, TAU, form="code", sinkhorn_ranks="official")
        loss.backward()
        local = distribution_alignment_loss(q.detach(), y.detach(), TAU, form="code", sinkhorn_ranks="local")
        out[rank] = {"loss": loss.item(), "q_grad": q.grad.clone(), "y_grad": y.grad.clone(), "local": local.item()}
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_official_sinkhorn_ranks_kl_matches_the_official_code_on_two_processes() -> None:
    port = 31500 + os.getpid() % 1000
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(WORLD, port, out), nprocs=WORLD, join=True)
    inputs = [_rank_inputs(r) for r in range(WORLD)]
    qs = [q.requires_grad_(True) for q, _ in inputs]
    ys = [y.requires_grad_(True) for _, y in inputs]
    ref = official_kl_losses(qs, ys, TAU)
    sum(ref).backward()  # the detached cross-rank sums: rank r's loss depends on rank s != r in value only
    for r in range(WORLD):
        assert out[r]["loss"] == pytest.approx(ref[r].item(), rel=1e-5, abs=1e-7)
        torch.testing.assert_close(out[r]["q_grad"], qs[r].grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(out[r]["y_grad"], ys[r].grad, rtol=1e-4, atol=1e-7)
        assert ys[r].grad.abs().max() > 1e-4  # the RGB side learns through the target, as in the code
    # the ranks are coupled: each rank's own B x B Sinkhorn ("local") gives another loss
    assert any(abs(out[r]["loss"] - out[r]["local"]) > 1e-4 for r in range(WORLD))
    assert ref[0].item() != pytest.approx(official_kl_losses([qs[0].detach()], [ys[0].detach()], TAU)[0].item())


def test_official_and_local_sinkhorn_ranks_agree_on_one_process() -> None:
    q, y = _rank_inputs(0)
    official = distribution_alignment_loss(q, y, TAU, form="code", sinkhorn_ranks="official")
    local = distribution_alignment_loss(q, y, TAU, form="code", sinkhorn_ranks="local")
    assert official.item() == pytest.approx(local.item(), rel=1e-6)
    assert official.item() == pytest.approx(official_kl_losses([q], [y], TAU)[0].item(), rel=1e-5)
    with pytest.raises(ValueError, match="sinkhorn_ranks"):
        distribution_alignment_loss(q, y, TAU, form="code", sinkhorn_ranks="global")
