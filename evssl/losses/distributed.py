"""Cross-process helpers for losses: all-gather with or without gradient, all-reduce; no-ops on one process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients across ranks and returns this rank's slice.

    Forward: out = cat_r x_r. Backward: d x_r = sum over ranks of d out[r-th slice] (every rank's loss depends on
    x_r), i.e. an all-reduce of the gradient of the gathered tensor followed by taking the local slice.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        _, n = world()
        parts = [torch.empty_like(x) for _ in range(n)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        rank, n = world()
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(n, 0)[rank]


def gather(x: Tensor, with_grad: bool = False) -> Tensor:
    """Concatenate ``x`` (same shape on every rank) over ranks along dim 0, in rank order.

    ``with_grad=False``: the gathered tensor carries gradient only through this rank's own slice (MoCo-v3 style: keys
    of other ranks are constants). ``with_grad=True``: gradients from every rank's loss flow back to each slice
    (SimCLR / CLIP style), the right form when every rank computes a loss over the full gathered batch.
    """
    rank, n = world()
    if n == 1:
        return x
    if with_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # keep the local autograd path
    return torch.cat(parts, 0)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum over ranks (in place on a clone, differentiable as identity-sum); identity on one process."""
    if world()[1] == 1:
        return x
    y = x.clone()
    dist.all_reduce(y)
    return y
