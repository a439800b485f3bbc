"""InfoNCE and Sinkhorn: slow references, invariances, gradients, and a 2-process gloo check of the gathers."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from evssl.losses.contrastive import info_nce, sinkhorn_knopp
from evssl.losses.distributed import gather


def slow_info_nce(q: torch.Tensor, k: torch.Tensor, t: float) -> float:
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    total = 0.0
    for i in range(len(q)):
        num = math.exp(float(q[i] @ k[i]) / t)
        den = sum(math.exp(float(q[i] @ k[j]) / t) for j in range(len(k)))
        total += -math.log(num / den)
    return total / len(q)


def test_info_nce_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    got = info_nce(q, k, 0.2, scale_by_2t=False)
    assert got.item() == pytest.approx(slow_info_nce(q, k, 0.2), rel=1e-5)
    assert info_nce(q, k, 0.2).item() == pytest.approx(0.4 * slow_info_nce(q, k, 0.2), rel=1e-5)


def test_info_nce_minimised_by_matching_pairs():
    g = torch.Generator().manual_seed(1)
    k = F.normalize(torch.randn(16, 32, generator=g), dim=-1)
    aligned = info_nce(k * 3.0, k, 0.1)  # scale-invariant with normalize=True
    shuffled = info_nce(k.roll(1, 0), k, 0.1)
    assert aligned < shuffled
    assert aligned.item() < 0.05


def test_info_nce_without_normalisation_uses_raw_dot_products():
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = q @ k.t() / 0.5
    want = F.cross_entropy(logits, torch.arange(2))
    assert info_nce(q, k, 0.5, normalize=False, scale_by_2t=False).item() == pytest.approx(want.item())


def test_info_nce_gradient_reaches_queries_and_local_keys():
    q = torch.randn(4, 5, requires_grad=True)
    k = torch.randn(4, 5, requires_grad=True)
    info_nce(q, k, 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is not None and k.grad.abs().sum() > 0


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(12, 5, generator=g) * 3
    q = sinkhorn_knopp(logits, n_iters=50, distributed=False)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-5)  # rows (samples) sum to 1
    assert torch.allclose(q.sum(0), torch.full((5,), 12 / 5), atol=1e-3)  # columns share the batch equally
    q3 = sinkhorn_knopp(logits, n_iters=3, distributed=False)
    assert torch.allclose(q3.sum(1), torch.ones(12), atol=1e-5)
    assert (q3 >= 0).all()


def test_sinkhorn_is_shift_invariant_and_stable():
    logits = torch.randn(8, 4)
    a = sinkhorn_knopp(logits, distributed=False)
    b = sinkhorn_knopp(logits + 1000.0, distributed=False)  # float32 keeps ~1e-4 of the fraction at 1000
    assert torch.isfinite(b).all()
    assert torch.allclose(a, b, atol=1e-3)


# ---------------------------------------------------------------------------------------------- 2 processes (gloo)
def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        full_q, full_k = torch.randn(8, 6), torch.randn(8, 6)
        sl = slice(rank * 4, rank * 4 + 4)
        q = full_q[sl].clone().requires_grad_(True)
        k = full_k[sl].clone().requires_grad_(True)
        loss = info_nce(q, k, 0.2, keys_with_grad=True)
        # the mean over ranks of the per-rank loss equals the single-process loss on the global batch
        total = loss.detach().clone()
        torch.distributed.all_reduce(total)
        loss.backward()
        g = gather(torch.full((2,), float(rank)))
        logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(rank))
        sk = sinkhorn_knopp(logits, n_iters=200, distributed=True)
        col = sk.sum(0)
        torch.distributed.all_reduce(col)
        out[rank] = {
            "mean_loss": (total / world).item(),
            "k_grad": k.grad.clone(),
            "gather": g.tolist(),
            "sk_rows": sk.sum(1).tolist(),
            "sk_cols": col.tolist(),
        }
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_gather_and_sinkhorn_across_two_processes():
    port = 29500 + os.getpid() % 1000
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    torch.manual_seed(0)
    full_q, full_k = torch.randn(8, 6), torch.randn(8, 6)
    fq, fk = full_q.clone().requires_grad_(True), full_k.clone().requires_grad_(True)
    ref = info_nce(fq, fk, 0.2, gather_keys=False)
    ref.backward()
    assert out[0]["mean_loss"] == pytest.approx(ref.item(), rel=1e-5)
    # with keys_with_grad every key receives the gradient of the *sum* of both ranks' losses, which is
    # world_size × the global mean loss (DDP then averages gradients over ranks, giving the global-mean gradient)
    kg = torch.cat([out[0]["k_grad"], out[1]["k_grad"]])
    assert torch.allclose(kg, fk.grad * 2, atol=1e-5)
    assert out[0]["gather"] == [0.0, 0.0, 1.0, 1.0]
    assert out[1]["sk_rows"] == pytest.approx([1.0] * 4, abs=1e-5)
    assert out[0]["sk_cols"] == pytest.approx([8 / 3] * 3, abs=1e-3)


# ------------------------------------------------------------ cross_rank="official": the official ECDP sinkhorn
def official_sinkhorn_two_ranks(per_rank: list[torch.Tensor], n_iters: int = 3) -> list[torch.Tensor]:
    """Restatement of ``Event-Camera-Data-Pre-training/model/hub_model.py`` ``sinkhorn`` (l. 128-150) run on several
    ranks, simulated in one process: ``dist.all_reduce`` of ``sum_Q`` and of ``sum_of_rows`` becomes a sum over the
    list, both used detached; everything else (column sums, B, K) is per rank. No max subtraction, as the code."""
    Q = [torch.exp(x).t() for x in per_rank]  # K x B each
    K, B = Q[0].shape
    sum_q = sum(q.sum() for q in Q)
    Q = [q / sum_q.detach() for q in Q]
    for _ in range(n_iters):
        rows = sum(q.sum(dim=1, keepdim=True) for q in Q)
        Q = [q / rows.detach() / K for q in Q]
        Q = [q / q.sum(dim=0, keepdim=True) / B for q in Q]
    return [(q * B).t() for q in Q]


def _ecdp_logits(seed: int, b: int = 5, d: int = 3, tau: float = 0.5) -> torch.Tensor:
    """L_kl's target logits on one rank: the B x B cosine similarities of the RGB embeddings over tau (a soft tau and
    correlated embeddings, so the plans are not dominated by the diagonal and the ranks' coupling is visible)."""
    y = F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)) + 1.0, dim=-1)
    return y @ y.t() / tau


def _official_worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        logits = _ecdp_logits(10 + rank).requires_grad_(True)
        plan = sinkhorn_knopp(logits, n_iters=3, distributed=True, cross_rank="official")
        weights = torch.randn(plan.shape, generator=torch.Generator().manual_seed(20 + rank))
        (plan * weights).sum().backward()
        exact_logits = logits.detach().clone().requires_grad_(True)
        exact = sinkhorn_knopp(exact_logits, n_iters=3, distributed=True, cross_rank="exact")
        (exact * weights).sum().backward()
        out[rank] = {
            "plan": plan.detach().clone(),
            "grad": logits.grad.clone(),
            "exact": exact.detach().clone(),
            "exact_grad": exact_logits.grad.clone(),
        }
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_official_cross_rank_sinkhorn_matches_the_official_code_on_two_processes():
    port = 30500 + os.getpid() % 1000
    out = mp.Manager().dict()
    mp.spawn(_official_worker, args=(2, port, out), nprocs=2, join=True)
    logits = [_ecdp_logits(10 + r).requires_grad_(True) for r in range(2)]
    ref = official_sinkhorn_two_ranks(logits)
    for r in range(2):
        weights = torch.randn(ref[r].shape, generator=torch.Generator().manual_seed(20 + r))
        (ref[r] * weights).sum().backward()
    for r in range(2):
        torch.testing.assert_close(out[r]["plan"], ref[r].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[r]["grad"], logits[r].grad, rtol=1e-4, atol=1e-6)
        assert out[r]["plan"].sum(1) == pytest.approx([1.0] * 5, abs=1e-5)  # every sample's row sums to 1
        # the per-rank Sinkhorn (each rank's own B x B problem) is a different plan: the ranks are coupled
        per_rank = sinkhorn_knopp(logits[r].detach(), n_iters=3, distributed=False)
        assert (out[r]["plan"] - per_rank).abs().max() > 1e-3
        # in value, "official" = "exact" distributed (equal B); the gradients differ by the official detaches
        torch.testing.assert_close(out[r]["exact"], out[r]["plan"], rtol=1e-5, atol=1e-6)
        assert (out[r]["exact_grad"] - out[r]["grad"]).abs().max() > 1e-5
    # both equal the single-process Sinkhorn of the stacked (2B x B) matrix: column k of both ranks is one prototype
    stacked = sinkhorn_knopp(torch.cat([x.detach() for x in logits]), n_iters=3, distributed=False)
    torch.testing.assert_close(torch.cat([out[0]["plan"], out[1]["plan"]]), stacked, rtol=1e-5, atol=1e-6)


def test_official_sinkhorn_equals_exact_on_one_process():
    logits = _ecdp_logits(3)
    a = sinkhorn_knopp(logits, distributed=False, cross_rank="official")
    b = sinkhorn_knopp(logits, distributed=False, cross_rank="exact")
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a, official_sinkhorn_two_ranks([logits])[0], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="cross_rank"):
        sinkhorn_knopp(logits, distributed=False, cross_rank="mean")  # type: ignore[arg-type]
