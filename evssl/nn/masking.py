"""Token-masking strategies: ECDP conditional (density-weighted) masking, random masking, iBOT-style block masks."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def patch_density(x: Tensor, patch_size: int) -> Tensor:
    """Event mass of every patch: the L1 norm of the patch over channels and pixels, (B, N) in row-major order.

    ECDP Eq. 1 takes d_i = ‖p_i‖₁ of the vectorised patch (counts are non-negative, so this is their sum).
    """
    _, _, h, w = x.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"patch_density: input {h}x{w} is not a multiple of patch size {patch_size}")
    return F.avg_pool2d(x.abs().sum(1, keepdim=True), patch_size).flatten(1) * (patch_size * patch_size)


def conditional_keep_index(
    density: Tensor,
    num_keep: int,
    form: str = "paper",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Indices (B, num_keep), ascending, of the patches an ECDP encoder keeps.

    * ``form="paper"``: sample ``num_keep`` patches **without replacement** with probability ∝ density d_i (ECDP
      Eq. 1). Implemented exactly by Gumbel-top-k: keep the k largest :math:`\log d_i + G_i`, :math:`G_i \sim
      \mathrm{Gumbel}(0,1)` (Kool et al., 2019). Empty patches are drawn (uniformly) only when fewer than k patches
      hold events.
    * ``form="code"``: the official implementation's weighted top-k: keep the k largest :math:`d_i \cdot u_i`,
      :math:`u_i \sim U(0,1)`, with d the mean normalised count of the patch (ties among empty patches broken
      at random).
    """
    b, n = density.shape
    if not 0 < num_keep <= n:
        raise ValueError(f"conditional_keep_index: num_keep={num_keep} must be in [1, {n}]")
    u = torch.rand(b, n, generator=generator, device=density.device if generator is None else "cpu")
    u = u.to(density.device)
    d = density.float().clamp_min(0)
    if form == "paper":
        g = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))
        # empty patches get a score far below every non-empty one (log of a count is > -1e3), still randomly ordered
        score = torch.where(d > 0, torch.log(d.clamp_min(1e-30)), torch.full_like(d, -1e4)) + g
    elif form == "code":
        score = d * u + u * 1e-12  # the tiny term only breaks ties among empty patches at random
    else:
        raise ValueError(f"conditional_keep_index: form must be 'paper' or 'code', got {form!r}")
    keep = score.topk(num_keep, dim=1).indices
    return keep.sort(dim=1).values


def num_keep_patches(height: int, width: int, patch_size: int, mask_ratio: float) -> int:
    """Patches an ECDP view keeps: ``int(N · (1 - mask_ratio))`` (at least 1), N the patch count of the view."""
    if height % patch_size or width % patch_size:
        raise ValueError(f"ECDP view {height}x{width} is not a multiple of the patch size {patch_size}")
    n = (height // patch_size) * (width // patch_size)
    return max(1, int(n * (1.0 - mask_ratio)))


def event_image_keep_index(
    view: Tensor, patch_size: int, mask_ratio: float, form: str = "paper", generator: torch.Generator | None = None
) -> Tensor:
    """Conditional masking (ECDP Eq. 1) of a signed event-image view (B, C, H, W): indices (B, K) of the kept patches,
    K = :func:`num_keep_patches`. The density is computed on the normalised counts ``(x + 1) / 2`` in [0, 1) (empty
    pixels contribute 0; the official code's ``x/2 + 0.5``)."""
    counts = ((view.detach().float() + 1.0) * 0.5).clamp_min(0.0)
    density = patch_density(counts, patch_size)
    k = num_keep_patches(int(view.shape[-2]), int(view.shape[-1]), patch_size, mask_ratio)
    return conditional_keep_index(density, k, form=form, generator=generator)


def random_keep_index(batch: int, num_tokens: int, num_keep: int, device: torch.device | str = "cpu") -> Tensor:
    """Uniform random subset of ``num_keep`` tokens per sample (MAE), ascending, (B, num_keep)."""
    noise = torch.rand(batch, num_tokens, device=device)
    return noise.topk(num_keep, dim=1).indices.sort(dim=1).values


def keep_mask(keep_index: Tensor, num_tokens: int) -> Tensor:
    """Boolean (B, N) mask, True for kept tokens."""
    m = torch.zeros(keep_index.shape[0], num_tokens, dtype=torch.bool, device=keep_index.device)
    return m.scatter_(1, keep_index, True)


# ----------------------------------------------------------------------------------------- iBOT / BEiT block masks
def _place_block(
    mask: np.ndarray, budget: int, rng: np.random.Generator, min_patches: int, log_aspect: tuple[float, float]
) -> int:
    """Try (10 times) to add one random rectangle to ``mask`` adding between 1 and ``budget`` new patches.

    BEiT's ``MaskingGenerator._mask``: area ``~ U(min_patches, budget)``, ``log(aspect) ~ U(log_aspect)``,
    ``h = round(sqrt(area * aspect))``, ``w = round(sqrt(area / aspect))``, placed uniformly; accepted only if the
    number of newly covered patches is in ``(0, budget]`` (a block may span the whole grid side, where BEiT
    requires it to be strictly smaller, which rules out any block on grids of 2x2 tokens). Returns the number added.
    """
    hh, ww = mask.shape
    for _ in range(10):
        area = rng.uniform(min(min_patches, budget), budget)
        aspect = math.exp(rng.uniform(*log_aspect))
        h = round(math.sqrt(area * aspect))
        w = round(math.sqrt(area / aspect))
        if not (0 < h <= hh and 0 < w <= ww):
            continue
        top = int(rng.integers(0, hh - h + 1))
        left = int(rng.integers(0, ww - w + 1))
        new = h * w - int(mask[top : top + h, left : left + w].sum())
        if 0 < new <= budget:
            mask[top : top + h, left : left + w] = True
            return new
    return 0


def _grow(mask: np.ndarray, count: int, rng: np.random.Generator) -> None:
    """Add ``count`` patches to ``mask``, each a random unmasked 4-neighbour of the masked region (any patch when the
    mask is empty or has no free neighbour), so the top-up keeps the blocks contiguous."""
    ww = mask.shape[1]
    for _ in range(count):
        m = mask
        nb = np.zeros_like(m)
        nb[1:] |= m[:-1]
        nb[:-1] |= m[1:]
        nb[:, 1:] |= m[:, :-1]
        nb[:, :-1] |= m[:, 1:]
        cand = np.flatnonzero(nb & ~m)
        if cand.size == 0:
            cand = np.flatnonzero(~m)
        if cand.size == 0:
            return
        j = int(cand[rng.integers(cand.size)])
        mask[j // ww, j % ww] = True


def block_mask(
    height: int,
    width: int,
    num_masked: int,
    rng: np.random.Generator,
    min_patches: int = 4,
    max_block_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    exact: bool = True,
) -> np.ndarray:
    """BEiT/iBOT block-wise mask ``(height, width)`` bool with ``num_masked`` patches (Bao et al. 2022, Alg. 1).

    Rectangles of at least ``min_patches`` patches and at most ``max_block_patches`` (default: ``num_masked``),
    aspect ratio log-uniform in ``[min_aspect, max_aspect]`` (default ``1 / min_aspect``), are added until
    ``num_masked`` patches are covered or no rectangle fits any more (the original stops there, leaving the mask
    short of its target). With ``exact`` the remaining patches are added one at a time next to the existing blocks
    (:func:`_grow`), so the mask always has exactly ``num_masked`` patches.
    """
    n = height * width
    num_masked = int(min(max(num_masked, 0), n))
    mask = np.zeros((height, width), dtype=bool)
    max_block = num_masked if max_block_patches is None else int(max_block_patches)
    log_aspect = (math.log(min_aspect), math.log(max_aspect if max_aspect is not None else 1.0 / min_aspect))
    count = 0
    while count < num_masked:
        budget = min(num_masked - count, max_block)
        delta = _place_block(mask, budget, rng, min_patches, log_aspect)
        if delta == 0:
            break
        count += delta
    if exact and count < num_masked:
        _grow(mask, num_masked - count, rng)
    return mask


def ibot_block_masks(
    num_images: int,
    grid: tuple[int, int],
    rng: np.random.Generator,
    mask_probability: float = 0.5,
    ratio: tuple[float, float] = (0.1, 0.5),
    min_patches: int = 4,
    max_block_fraction: float = 0.5,
    min_aspect: float = 0.3,
    min_masked: int = 1,
    exact: bool = True,
    mask_count: Literal["grid", "official"] = "grid",
    official_tokens: int = 8 * 8,
) -> Tensor:
    r"""iBOT/DINOv2 masks for a batch of global crops: ``(num_images, h*w)`` bool, True = masked.

    ``m = floor(num_images * mask_probability)`` images get a block mask, the others none, in random order. The
    masked images spread their ratios over ``ratio``: image ``i < m`` draws
    :math:`r_i \sim U(p_i, p_{i+1})` with :math:`p = \mathrm{linspace}(r_{lo}, r_{hi}, m + 1)` and masks
    :math:`\lfloor N_c r_i \rfloor` patches (at least ``min_masked``, at most :math:`N`), with :math:`N = h\,w` the
    tokens of the grid the mask lives on and the counting base :math:`N_c` set by ``mask_count``:

    * ``"grid"``: :math:`N_c = N`, so the realised ratios are the requested ones (10–50 % by default).
    * ``"official"``: :math:`N_c` = ``official_tokens`` = 64, as the official ECDDP code counts
      (``model/pretrain_model.py`` l. 290: ``N = self.n_tokens**2`` with ``n_tokens=8``, DINOv2's default, l. 193,
      while its mask generator lives on the real ``global_crops_size // 16`` = 12×12 grid, l. 327-332): the masks
      hold :math:`\lfloor 64 r_i \rfloor` of 144 tokens, 4.4–22 % instead of 10–50 %.

    Blocks come from :func:`block_mask` with at most ``max_block_fraction * N`` patches per rectangle (real grid in
    both modes, as the official generator's ``max_num_patches = 0.5 * 12 * 12``); with ``exact`` the mask never falls
    short of its count (the official generator may).
    """
    if mask_count not in ("grid", "official"):
        raise ValueError(f"ibot_block_masks: mask_count must be 'grid' or 'official', got {mask_count!r}")
    h, w = int(grid[0]), int(grid[1])
    n = h * w
    n_count = n if mask_count == "grid" else int(official_tokens)
    m = int(num_images * mask_probability)
    probs = np.linspace(ratio[0], ratio[1], m + 1)
    masks = []
    for i in range(m):
        r = rng.uniform(probs[i], probs[i + 1])
        k = min(max(int(n_count * r), min_masked), n)
        masks.append(
            block_mask(h, w, k, rng, min_patches, max(1, int(max_block_fraction * n)), min_aspect, exact=exact)
        )
    masks += [np.zeros((h, w), dtype=bool) for _ in range(num_images - m)]
    order = rng.permutation(num_images)
    out = np.stack([masks[j] for j in order]) if masks else np.zeros((0, h, w), dtype=bool)
    return torch.from_numpy(out.reshape(num_images, n))
