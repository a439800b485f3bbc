"""ECDDP losses: cosine K-means, membership masks, Sinkhorn centring, and each loss against a slow reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from evssl.losses.contrastive import sinkhorn_knopp
from evssl.losses.ecddp import (
    context_loss,
    context_membership,
    cosine_kmeans,
    ecddp_objective,
    image_loss,
    patch_loss,
    pooling_attention_mask,
    prototype_cross_entropy,
    sinkhorn_targets,
)


def _ce(t: torch.Tensor, s: torch.Tensor, temp: float = 0.1) -> float:
    """Slow scalar cross-entropy of one teacher distribution and one student logit vector."""
    lsm = s.detach().double() / temp
    lsm = lsm - torch.logsumexp(lsm, 0)
    return float(-(t.double() * lsm).sum())


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two label vectors define the same partition (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# -------------------------------------------------------------------------------------------------------- K-means
def test_kmeans_recovers_separable_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    b, k, per, d = 4, 3, 20, 16
    centres = F.normalize(torch.randn(b, k, d, generator=g), dim=-1) * 5
    truth = torch.arange(k).repeat_interleave(per)
    x = centres[:, truth] + 0.3 * torch.randn(b, k * per, d, generator=g)
    perm = torch.randperm(k * per, generator=g)
    x, truth = x[:, perm], truth[perm]
    x = x * torch.rand(b, k * per, 1, generator=g).add(0.5)  # cosine K-means ignores the norm
    res = cosine_kmeans(x, k, iters=10, generator=torch.Generator().manual_seed(3))
    assert res.assign.shape == (b, k * per) and res.centroids.shape == (b, k, d)
    for i in range(b):
        assert _same_partition(res.assign[i], truth)
    torch.testing.assert_close(res.centroids.norm(dim=-1), torch.ones(b, k))
    assert res.counts.sum(1).tolist() == [k * per] * b and res.valid.all()


@pytest.mark.parametrize("empty", ["reseed", "keep"])
def test_kmeans_empty_clusters_are_flagged_not_nan(empty: str) -> None:
    # four tokens, two identical pairs, K = 3: two initial centroids coincide, so one cluster must end up empty
    a, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    x = torch.stack([a, a, c, c])[None]
    res = cosine_kmeans(x, 3, empty=empty)  # type: ignore[arg-type]
    assert torch.isfinite(res.centroids).all()
    assert res.valid.sum().item() == 2 and res.counts.sum().item() == 4
    assert res.assign[0, 0] == res.assign[0, 1] != res.assign[0, 2] == res.assign[0, 3]
    # fewer tokens than clusters
    res = cosine_kmeans(torch.randn(2, 2, 5), 4, empty=empty)  # type: ignore[arg-type]
    assert (res.valid.sum(1) <= 2).all() and res.counts.sum().item() == 4


def test_kmeans_reseed_revives_an_empty_cluster() -> None:
    # 5 tokens at e0, 1 token at e1; K = 2; seeds 0, 2, 5 start both centroids on e0 duplicates: the second cluster
    # is empty after the first assignment and restarts at the farthest token (e1), so the two groups separate.
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([e0, e0, e0, e0, e0, e1])[None]
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        res = cosine_kmeans(x, 2, empty="reseed", generator=g)
        assert res.valid.all()
        assert _same_partition(res.assign[0], torch.tensor([0, 0, 0, 0, 0, 1]))


def test_membership_and_pooling_mask() -> None:
    assign = torch.tensor([[0, 2, 2, 1], [1, 1, 1, 1]])
    m = context_membership(assign, 3)
    assert m.shape == (2, 3, 4)
    assert m[0].tolist() == [[True, False, False, False], [False, False, False, True], [False, True, True, False]]
    assert m[1, 1].all() and not m[1, 0].any()
    att = pooling_attention_mask(m)
    assert att.shape == (2, 3, 7)
    assert att[0, :, :3].tolist() == torch.eye(3, dtype=torch.bool).tolist()
    assert torch.equal(att[:, :, 3:], m)


# ---------------------------------------------------------------------------------------------------- centring
def test_sinkhorn_targets_centre_the_teacher() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 8, generator=g) + torch.linspace(0, 3, 8)  # prototype 7 favoured a priori
    temp = 0.5
    q = sinkhorn_targets(logits, temp, n_iters=3, distributed=False)
    torch.testing.assert_close(q, sinkhorn_knopp(logits / temp, 3, distributed=False))
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    soft = (logits / temp).softmax(1).sum(0)
    # centring: prototype usage is far more even than the plain softmax's
    assert (q.sum(0) - 8).abs().max() < 0.25 * (soft - 8).abs().max()
    q50 = sinkhorn_targets(logits, temp, n_iters=50, distributed=False)
    torch.testing.assert_close(q50.sum(0), torch.full((8,), 8.0), atol=1e-3, rtol=0)
    assert not q.requires_grad and sinkhorn_targets(torch.zeros(0, 8), 0.1).shape == (0, 8)


# ------------------------------------------------------------------------------------------------------- losses
def test_prototype_cross_entropy_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 7, generator=g)
    t = torch.rand(5, 7, generator=g).softmax(1)
    ce = prototype_cross_entropy(s, t, 0.1)
    for i in range(5):
        assert ce[i].item() == pytest.approx(_ce(t[i], s[i]), rel=1e-5)


def test_patch_loss_matches_per_image_reference() -> None:
    g = torch.Generator().manual_seed(0)
    n_img, n_tok, p = 6, 9, 5
    masks = torch.rand(n_img, n_tok, generator=g) < 0.4
    masks[2] = False  # an unmasked crop still counts in the denominator (official forward_masked)
    s_all = torch.randn(n_img, n_tok, p, generator=g, requires_grad=True)
    t_all = torch.rand(n_img, n_tok, p, generator=g).softmax(-1)
    idx = masks.nonzero()[:, 0]
    loss = patch_loss(s_all[masks], t_all[masks], idx, n_img, 0.1)
    ref = 0.0
    for i in range(n_img):
        js = masks[i].nonzero()[:, 0].tolist()
        if js:
            ref += sum(_ce(t_all[i, j], s_all[i, j]) for j in js) / len(js)
    assert loss.item() == pytest.approx(ref / n_img, rel=1e-5)
    loss.backward()
    assert s_all.grad[~masks].abs().max() == 0 and s_all.grad[masks].abs().sum() > 0
    empty = patch_loss(s_all[:0].reshape(0, p), t_all[:0].reshape(0, p), idx[:0], n_img)
    assert empty.item() == 0.0


def test_image_loss_pairs_match_reference() -> None:
    g = torch.Generator().manual_seed(0)
    b, p, n_local = 3, 6, 4
    sg = torch.randn(2, b, p, generator=g)
    sl = torch.randn(n_local, b, p, generator=g)
    t = torch.rand(2, b, p, generator=g).softmax(-1)
    glob, loc = image_loss(sg, t, sl, 0.1)
    ref_g = sum(_ce(t[1 - c, i], sg[c, i]) for c in range(2) for i in range(b)) / b
    ref_l = sum(_ce(t[c, i], sl[j, i]) for j in range(n_local) for c in range(2) for i in range(b)) / b
    assert glob.item() == pytest.approx(ref_g, rel=1e-5)
    assert loc.item() == pytest.approx(ref_l, rel=1e-5)
    _, none = image_loss(sg, t, None)
    assert none.item() == 0.0
    with pytest.raises(ValueError, match="two global crops"):
        image_loss(sg[:1], t[:1])


def test_context_loss_is_mean_over_present_contexts() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, generator=g)
    t = torch.rand(4, 5, generator=g).softmax(-1)
    ref = sum(_ce(t[i], s[i]) for i in range(4)) / 4
    assert context_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert context_loss(s[:0], t[:0]).item() == 0.0


def test_objective_weights_are_l1_normalised() -> None:
    one = torch.tensor(1.0)
    out = ecddp_objective(one, one, one, one, num_local_crops=8)
    # official: w = 1 / (n_global_terms + n_local_terms) = 1/20; context multiplied by n_global_crops = 2
    assert out["loss_image_local"].item() == pytest.approx(1 / 20)
    assert out["loss_context"].item() == pytest.approx(2 / 20)
    assert out["loss"].item() == pytest.approx(4 / 20 + 1.0)
    for lam, n_local in itertools.product((1.0, 3.0), (0, 2)):
        w = ecddp_objective(one, one, one, one, n_local, context_weight=lam)
        assert w["loss_context"].item() == pytest.approx(lam / (2 * n_local + 2 + lam))
