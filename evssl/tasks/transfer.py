"""Pieces shared by the transfer tasks (:class:`~evssl.tasks.Classifier`, :class:`~evssl.tasks.dense.DenseTask`)
and the benchmark scripts: backbone parameter groups with layer-wise LR decay, and BatchNorm re-estimation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from evssl.losses.distributed import world

__all__ = ["backbone_param_groups", "batchnorm_layers", "reestimate_batchnorm"]


def backbone_param_groups(
    backbone: nn.Module,
    *,
    lr_scale: float = 1.0,
    layer_decay: float | None = None,
    weight_decay: float = 0.0,
    **lrd_kwargs: Any,
) -> list[dict[str, Any]]:
    """Optimizer group specs of a fine-tuned backbone.

    ``layer_decay=None``: one group ``"backbone"`` at ``lr * lr_scale``. Otherwise the BEiT/MAE layer-wise decay of
    :func:`evssl.nn.backbones.vit.param_groups_lrd` (its ``layer_id`` rule: patch embedding and tokens 0, block
    ``i`` → ``i + 1``, the rest ``L + 1``; group scale ``layer_decay ** (L + 1 - layer_id)``), each scale also
    multiplied by ``lr_scale``; extra keyword arguments go to ``param_groups_lrd``.

    Raises:
        ValueError: ``layer_decay`` is given for a backbone without ViT blocks (the rule needs ``blocks.<i>``).
    """
    if layer_decay is None:
        return [{"name": "backbone", "params": list(backbone.parameters()), "lr_scale": lr_scale}]
    from evssl.nn.backbones.vit import _BLOCK_RE, param_groups_lrd

    if not any(_BLOCK_RE.search(n) for n, _ in backbone.named_parameters()):
        raise ValueError(
            f"layer_decay={layer_decay} needs a ViT backbone (BEiT layer_id rule on `blocks.<i>`), "
            f"got {type(backbone).__name__}"
        )
    groups = param_groups_lrd(backbone, weight_decay, layer_decay, **lrd_kwargs)
    for g in groups:
        g["lr_scale"] = g["lr_scale"] * lr_scale
        g["name"] = f"backbone_{g['name']}"
    return groups


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer (1-D/2-D/3-D, SyncBatchNorm) of ``module`` that tracks running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate_batchnorm(
    backbone: nn.Module,
    inputs: Iterable[Tensor],
    max_batches: int | None = None,
    sync: bool = True,
) -> int:
    r"""Re-estimate the BatchNorm running statistics of ``backbone`` on ``inputs`` (a linear probe's training data).

    Every BatchNorm layer's statistics are reset and recomputed as the **cumulative average** over the batches
    (PyTorch ``momentum=None``): :math:`\mu = \frac1n\sum_b \mu_b`, :math:`\sigma^2 = \frac1n\sum_b s^2_b` with
    :math:`\mu_b, s^2_b` the batch mean and unbiased batch variance — the statistics of the data instead of an
    exponential average left from pre-training on other inputs (BraVe-style probes of BN backbones; also the
    random-init baseline gets calibrated statistics). Only the BatchNorm layers run in training mode; everything
    else stays in eval mode (no dropout / drop-path), no gradient is computed and no weight changes. With ``sync``
    under ``torch.distributed`` the per-rank estimates are averaged over ranks (the cumulative average over all
    ranks' batches when every rank sees the same number). Modes and momenta are restored afterwards.

    Returns the number of batches used (0 = nothing to do: no BatchNorm layer or no batch).
    """
    bns = batchnorm_layers(backbone)
    if not bns:
        return 0
    modes = {m: m.training for m in backbone.modules()}
    momenta = [m.momentum for m in bns]
    saved = [
        {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))} for m in bns
    ]
    n = 0
    try:
        backbone.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for x in inputs:
            if max_batches is not None and n >= max_batches:
                break
            backbone(x)
            n += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        for m, mode in modes.items():
            m.train(mode)
        if n == 0:  # no batch: keep the old statistics rather than the reset ones
            for m, st in zip(bns, saved):
                m.load_state_dict(st, strict=False)
    if n and sync and world()[1] > 1:
        size = world()[1]
        for m in bns:
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    torch.distributed.all_reduce(buf)
                    buf.div_(size)
    return n
