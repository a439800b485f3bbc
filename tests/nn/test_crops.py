"""Multi-crop with kept sampling grids (ECDDP), label transport, and iBOT block masks with exact ratios."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evssl.nn.crops import (
    crop_sampling_grid,
    random_crop_boxes,
    random_resized_crops,
    resample,
    transport_labels,
)
from evssl.nn.masking import block_mask, ibot_block_masks


# ------------------------------------------------------------------------------------------------ sampling grids
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_identity_and_integer_crops_are_exact(mode: str) -> None:
    x = torch.randn(2, 3, 16, 20)
    full = torch.tensor([[0, 0, 16, 20], [0, 0, 16, 20]])
    grid = crop_sampling_grid(full, None, (16, 20), (16, 20))
    torch.testing.assert_close(resample(x, grid, mode), x)
    boxes = torch.tensor([[2, 4, 8, 8], [5, 1, 8, 8]])
    flip = torch.tensor([False, True])
    out = resample(x, crop_sampling_grid(boxes, flip, (8, 8), (16, 20)), mode)
    torch.testing.assert_close(out[0], x[0, :, 2:10, 4:12])
    torch.testing.assert_close(out[1], x[1, :, 5:13, 1:9].flip(-1))


def test_bilinear_half_size_crop_is_average_pooling() -> None:
    x = torch.randn(1, 2, 8, 8)
    grid = crop_sampling_grid(torch.tensor([[0, 0, 8, 8]]), None, (4, 4), (8, 8))
    torch.testing.assert_close(resample(x, grid, "bilinear"), F.avg_pool2d(x, 2))


def test_transport_known_crop_and_flip() -> None:
    # full view 32x32 px, stride 4 -> 8x8 tokens labelled by their index; crop box 16x16 px at (8, 4) -> 4x4 tokens
    ids = torch.arange(64).view(1, 8, 8)
    boxes = torch.tensor([[8, 4, 16, 16], [8, 4, 16, 16]])
    flip = torch.tensor([False, True])
    grid = crop_sampling_grid(boxes, flip, (4, 4), (32, 32))
    out = transport_labels(ids.expand(2, -1, -1), grid)
    rows = torch.arange(4)[:, None] + 2  # token centre (8 + 4 r + 2) / 4 -> row 2 + r
    cols = torch.arange(4)[None, :] + 1
    torch.testing.assert_close(out[0], ids[0][rows, cols])
    torch.testing.assert_close(out[1], ids[0][rows, cols.flip(-1)])


def test_transport_matches_slow_reference_on_random_crops() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, stride = 48, 64, 8
    labels = torch.randint(0, 100, (3, h // stride, w // stride), generator=g)
    x = torch.zeros(3, 1, h, w)
    crops = random_resized_crops(x, 4, 32, (0.2, 1.0), hflip_p=0.5, token_stride=stride, generator=g)
    out = transport_labels(labels[crops.source], crops.token_grid)
    th, tw = 32 // stride, 32 // stride
    for i in range(out.shape[0]):
        top, left, bh, bw = crops.boxes[i].tolist()
        for r in range(th):
            for c in range(tw):
                cc = tw - 1 - c if crops.flip[i] else c
                py = top + (r + 0.5) * bh / th  # continuous source position of the token centre
                px = left + (cc + 0.5) * bw / tw
                want = labels[crops.source[i], int(py // stride), int(px // stride)]
                assert out[i, r, c] == want, (i, r, c)


def test_random_resized_crops_layout_and_grids() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 24, 24)
    crops = random_resized_crops(x, 3, 16, (0.3, 1.0), hflip_p=0.5, token_stride=4, generator=g)
    assert crops.images.shape == (6, 3, 16, 16)
    assert crops.token_grid is not None and crops.token_grid.shape == (6, 4, 4, 2)
    assert crops.source.tolist() == [0, 1, 0, 1, 0, 1]
    top, left, bh, bw = crops.boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= 24).all() and (left + bw <= 24).all()
    grid = crop_sampling_grid(crops.boxes, crops.flip, (16, 16), (24, 24))
    torch.testing.assert_close(crops.images, resample(x[crops.source], grid))
    # full-image crops (scale 1, ratio 1) without flips reproduce the input
    same = random_resized_crops(x, 1, 24, (1.0, 1.0), (1.0, 1.0), hflip_p=0.0, generator=g)
    torch.testing.assert_close(same.images, x)
    with pytest.raises(ValueError, match="multiple of the token stride"):
        random_resized_crops(x, 1, 18, (0.5, 1.0), token_stride=4)


def test_random_crop_boxes_in_bounds() -> None:
    b = random_crop_boxes(100, 20, 30, (16, 16), torch.Generator().manual_seed(0))
    assert (b[:, 0] >= 0).all() and (b[:, 0] <= 4).all() and (b[:, 1] <= 14).all()
    assert set(b[:, 2].tolist()) == {16} and b[:, 0].unique().numel() > 1


# ---------------------------------------------------------------------------------------------------- block masks
@pytest.mark.parametrize(("h", "w", "k"), [(12, 12, 14), (12, 12, 72), (6, 6, 11), (2, 2, 1), (2, 2, 3), (4, 4, 16)])
def test_block_mask_has_exact_count(h: int, w: int, k: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = block_mask(h, w, k, rng, max_block_patches=max(1, (h * w) // 2))
        assert m.shape == (h, w) and int(m.sum()) == k


def test_block_mask_is_blocky() -> None:
    rng = np.random.default_rng(1)
    m = block_mask(12, 12, 50, rng, max_block_patches=72)
    # a block mask has far fewer boundary edges than a random mask with the same count
    edges = int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())
    r = np.zeros(144, bool)
    r[rng.permutation(144)[:50]] = True
    r = r.reshape(12, 12)
    edges_random = int((r[1:] != r[:-1]).sum() + (r[:, 1:] != r[:, :-1]).sum())
    assert edges < 0.6 * edges_random


def test_ibot_masks_realise_the_configured_ratios() -> None:
    n_img, grid, lo, hi = 64, (12, 12), 0.1, 0.5
    n = grid[0] * grid[1]
    masks = ibot_block_masks(n_img, grid, np.random.default_rng(0), 0.5, (lo, hi))
    assert masks.shape == (n_img, n) and masks.dtype == torch.bool
    counts = masks.sum(1)
    masked = counts[counts > 0].sort().values.double() / n
    assert len(masked) == 32  # half of the global crops
    probs = np.linspace(lo, hi, 33)
    for j, r in enumerate(masked.tolist()):  # sorted ratios fall in their own linspace bin (floor(N r) / N)
        assert np.floor(n * probs[j]) / n - 1e-9 <= r <= probs[j + 1] + 1e-9
    # mean realised ratio ~ (lo + hi) / 2 - 0.5 / N; the official n_tokens=8 quirk would give ~0.13 on 12x12
    assert abs(masked.mean().item() - 0.3) < 0.01
    # the masked images are spread at random over the batch
    assert (counts[:32] > 0).sum() not in (0, 32)
