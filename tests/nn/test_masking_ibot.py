"""iBOT block-mask counting: ``mask_count="official"`` reproduces the official ECDDP formula's counts (N = 8²)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from evssl.nn.masking import ibot_block_masks


class RecordingRng:
    """A numpy Generator that records every ``uniform(low, high)`` draw (the ratio draws are among them)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.uniform_calls: list[tuple[float, float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        r = float(self.rng.uniform(low, high))
        self.uniform_calls.append((float(low), float(high), r))
        return r

    def __getattr__(self, name: str):
        return getattr(self.rng, name)


def official_counts(ratio_draws: list[float], n_tokens: int = 8) -> list[int]:
    """Restatement of ``model/pretrain_model.py`` l. 290-299: ``int(N * uniform(p_i, p_{i+1}))``, N = n_tokens²."""
    N = n_tokens**2
    return [int(N * r) for r in ratio_draws]


def _ratio_draws(rng: RecordingRng, probs: np.ndarray) -> list[float]:
    bounds = {(float(a), float(b)) for a, b in itertools.pairwise(probs)}
    return [r for lo, hi, r in rng.uniform_calls if (lo, hi) in bounds]


@pytest.mark.parametrize("seed", range(5))
def test_official_mask_count_reproduces_the_official_formula(seed):
    n_img, grid, ratio = 16, (12, 12), (0.1, 0.5)
    rng = RecordingRng(seed)
    masks = ibot_block_masks(n_img, grid, rng, 0.5, ratio, mask_count="official")  # type: ignore[arg-type]
    probs = np.linspace(*ratio, n_img // 2 + 1)
    draws = _ratio_draws(rng, probs)
    assert len(draws) == n_img // 2
    want = official_counts(draws) + [0] * (n_img // 2)
    assert sorted(masks.sum(1).tolist()) == sorted(want)
    masked = masks.sum(1)[masks.sum(1) > 0].float() / 144
    assert masked.min() >= 6 / 144 and masked.max() <= 32 / 144  # 4.2-22 % of the real 12x12 grid


def test_grid_mask_count_uses_the_real_grid():
    rng = RecordingRng(0)
    masks = ibot_block_masks(16, (12, 12), rng, 0.5, (0.1, 0.5), mask_count="grid")  # type: ignore[arg-type]
    draws = _ratio_draws(rng, np.linspace(0.1, 0.5, 9))
    assert sorted(masks.sum(1).tolist()) == sorted([int(144 * r) for r in draws] + [0] * 8)


def test_official_count_masks_about_2_25_times_fewer_tokens():
    kw = dict(num_images=64, grid=(12, 12), mask_probability=0.5, ratio=(0.1, 0.5))
    grid = torch.stack([ibot_block_masks(rng=np.random.default_rng(s), **kw) for s in range(4)]).float()
    off = torch.stack(
        [ibot_block_masks(rng=np.random.default_rng(s), mask_count="official", **kw) for s in range(4)]
    ).float()
    assert off.sum() / grid.sum() == pytest.approx(64 / 144, rel=0.05)
    with pytest.raises(ValueError, match="mask_count"):
        ibot_block_masks(rng=np.random.default_rng(0), mask_count="dino", **kw)  # type: ignore[arg-type]
