"""Token-masking strategies: ECDP conditional (density-weighted) masking, random masking, iBOT-style block masks."""

from __future__ import annotations

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


def random_keep_index(batch: int, num_tokens: int, num_keep: int, device: torch.device | str = "cpu") -> Tensor:
    """Uniform random subset of ``num_keep`` tokens per sample (MAE), ascending, (B, num_keep)."""
    noise = torch.rand(batch, num_tokens, device=device)
    return noise.topk(num_keep, dim=1).indices.sort(dim=1).values


def keep_mask(keep_index: Tensor, num_tokens: int) -> Tensor:
    """Boolean (B, N) mask, True for kept tokens."""
    m = torch.zeros(keep_index.shape[0], num_tokens, dtype=torch.bool, device=keep_index.device)
    return m.scatter_(1, keep_index, True)
