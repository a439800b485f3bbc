"""Conditional masking keeps exactly k patches, prefers dense ones, and Gumbel-top-k samples the right law."""

from __future__ import annotations

import itertools

import pytest
import torch

from evssl.nn.masking import conditional_keep_index, keep_mask, patch_density


def test_patch_density_is_l1_mass_per_patch():
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = 3.0
    x[0, 1, 3, 3] = 2.0
    x[0, 0, 2, 1] = 1.0
    assert patch_density(x, 2).tolist() == [[3.0, 0.0, 1.0, 2.0]]


@pytest.mark.parametrize("form", ["paper", "code"])
def test_keeps_exactly_k_unique_sorted(form):
    d = torch.rand(4, 196)
    d[:, :100] = 0  # many empty patches
    idx = conditional_keep_index(d, 98, form=form)
    assert idx.shape == (4, 98)
    for row in idx:
        assert len(set(row.tolist())) == 98
        assert row.tolist() == sorted(row.tolist())
    # 96 non-empty patches < 98 to keep: every non-empty one is kept, plus 2 empty ones
    assert keep_mask(idx, 196)[:, 100:].all()


@pytest.mark.parametrize("form", ["paper", "code"])
def test_prefers_dense_patches(form):
    torch.manual_seed(0)
    d = torch.ones(2000, 16)
    d[:, :4] = 20.0  # four dense patches
    kept = keep_mask(conditional_keep_index(d, 4, form=form), 16).float().mean(0)
    assert kept[:4].mean() > 3 * kept[4:].mean()


def test_gumbel_topk_matches_sampling_without_replacement():
    torch.manual_seed(1)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    n = 40000
    idx = conditional_keep_index(w.expand(n, 4), 2, form="paper")
    counts: dict[tuple[int, int], int] = {}
    for a, b in idx.tolist():
        counts[(a, b)] = counts.get((a, b), 0) + 1
    p = w / w.sum()
    for a, b in itertools.combinations(range(4), 2):
        # P({a, b}) = p_a p_b/(1-p_a) + p_b p_a/(1-p_b) for successive draws without replacement
        want = float(p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b]))
        got = counts.get((a, b), 0) / n
        assert got == pytest.approx(want, abs=0.012), (a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_keep"):
        conditional_keep_index(torch.rand(1, 4), 5)
    with pytest.raises(ValueError, match="form"):
        conditional_keep_index(torch.rand(1, 4), 2, form="x")
    with pytest.raises(ValueError, match="multiple"):
        patch_density(torch.rand(1, 2, 5, 4), 2)
