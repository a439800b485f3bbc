"""Projection, prediction and prototype heads for joint-embedding self-supervised learning.

* :class:`MLP` -- ``Linear -> [BN] -> act`` stacks with explicit batch-norm placement and bias rules.
* BYOL / BraVe (Grill et al. NeurIPS 2020; Recasens et al. ICCV 2021): projector ``Linear(4096) -> BN -> ReLU ->
  Linear(out) [-> BN]`` (BraVe has the final BN, BYOL does not), predictor ``Linear(4096) -> BN -> ReLU ->
  Linear(out)``.
* MoCo v3 (Chen, Xie, He, ICCV 2021; also ECDP's heads): every Linear without bias followed by BN, ReLU between
  layers, the last BN without affine parameters; projector 3 layers ``D -> 4096 -> 4096 -> 256``, predictor 2 layers
  ``256 -> 4096 -> 256``.
* :class:`DINOHead` -- DINO/iBOT/DINOv2 prototype head (Caron et al. ICCV 2021): MLP (GELU, no BN) to a bottleneck,
  L2 normalisation, weight-normalised linear layer to ``K`` prototypes without bias.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP",
    "DINOHead",
    "byol_predictor",
    "byol_projector",
    "cancel_last_layer_gradients",
    "mocov3_predictor",
    "mocov3_projector",
]

BNMode = Literal["all", "hidden", "none"]


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r} (use 'relu' or 'gelu')")


class MLP(nn.Module):
    """Multi-layer perceptron ``in_dim -> hidden_dim x (num_layers-1) -> out_dim``.

    Args:
        num_layers: number of Linear layers (>= 1).
        bn: ``"hidden"`` -- BatchNorm1d after every hidden Linear; ``"all"`` -- also after the last Linear;
            ``"none"`` -- no BatchNorm.
        last_bn_affine: whether the final BN (``bn="all"``) has learnable scale/shift (MoCo v3: False).
        act: hidden activation, ``"relu"`` or ``"gelu"`` (never after the last layer).
        bias: ``"auto"`` -- a Linear has a bias unless a BN follows it (the bias would be cancelled); ``True`` /
            ``False`` -- force it on every layer.

    Inputs may have extra leading dimensions (``(B, N, in_dim)`` tokens); they are flattened around BN.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        bn: BNMode = "hidden",
        last_bn_affine: bool = True,
        act: Literal["relu", "gelu"] = "relu",
        bias: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if bn not in ("all", "hidden", "none"):
            raise ValueError(f"bn must be 'all', 'hidden' or 'none', got {bn!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: list[nn.Module] = []
        for i in range(num_layers):
            last = i == num_layers - 1
            din = in_dim if i == 0 else hidden_dim
            dout = out_dim if last else hidden_dim
            with_bn = bn == "all" or (bn == "hidden" and not last)
            layers.append(nn.Linear(din, dout, bias=(not with_bn) if bias == "auto" else bool(bias)))
            if with_bn:
                layers.append(nn.BatchNorm1d(dout, affine=last_bn_affine or not last))
            if not last:
                layers.append(_act(act))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).reshape(*lead, self.out_dim)


def byol_projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 128, last_bn: bool = True) -> MLP:
    """BraVe projector ``Linear(4096) -> BN -> ReLU -> Linear(128) -> BN`` (Recasens et al. 2021, §3.4 of the digest).

    ``last_bn=False, out_dim=256`` gives the original BYOL projector (Grill et al. 2020, §3.3).
    """
    return MLP(in_dim, hidden_dim, out_dim, num_layers=2, bn="all" if last_bn else "hidden")


def byol_predictor(in_dim: int = 128, hidden_dim: int = 4096, out_dim: int = 128) -> MLP:
    """BYOL/BraVe predictor ``Linear(4096) -> BN -> ReLU -> Linear(out)`` (with bias on the last layer)."""
    return MLP(in_dim, hidden_dim, out_dim, num_layers=2, bn="hidden")


def mocov3_projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 3) -> MLP:
    """MoCo v3 projector (ECDP's ``h_e``): bias-free Linear + BN + ReLU, 3 layers, last BN without affine."""
    return MLP(in_dim, hidden_dim, out_dim, num_layers=num_layers, bn="all", last_bn_affine=False, bias=False)


def mocov3_predictor(in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 2) -> MLP:
    """MoCo v3 predictor (ECDP's ``pred1``/``pred2``): 2 bias-free Linear + BN layers, last BN without affine."""
    return MLP(in_dim, hidden_dim, out_dim, num_layers=num_layers, bn="all", last_bn_affine=False, bias=False)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation ``W = g * V / ||V||`` per output row (Salimans & Kingma 2016).

    Written out (parameters ``weight_v``, ``weight_g``) so that deep copies, EMA and state dicts are plain tensors.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    @property
    def weight(self) -> Tensor:
        """Effective weight ``(out_dim, in_dim)``."""
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """DINO/iBOT prototype head (Caron et al. ICCV 2021, §3.1 and Appendix; ECDDP uses three of them).

    ``x -> MLP (num_layers, GELU, BN optional) -> bottleneck -> L2-normalise -> weight-normed Linear -> K logits``.
    With ``norm_last_layer=True`` the weight-norm gain ``g`` is fixed to 1 (not trained), as in DINO's default;
    ECDDP/DINOv2 train it (``norm_last_layer=False``). Works on ``(B, D)`` and on token tensors ``(B, N, D)``.
    The first epoch(s) freeze the prototypes: call :func:`cancel_last_layer_gradients` after ``backward``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = MLP(
            in_dim,
            hidden_dim,
            bottleneck_dim,
            num_layers=max(num_layers, 1),
            bn="hidden" if use_bn else "none",
            act="gelu",
            bias=True,
        )
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.requires_grad_(not norm_last_layer)
        self.out_dim = out_dim

    def forward_bottleneck(self, x: Tensor) -> Tensor:
        """L2-normalised bottleneck embedding (before the prototypes)."""
        return F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)

    def forward(self, x: Tensor) -> Tensor:
        """Prototype logits ``(..., out_dim)``."""
        return self.last_layer(self.forward_bottleneck(x))

    def cancel_last_layer_grad(self) -> None:
        """Drop the gradients of the prototype layer (DINO freezes it during the first epoch)."""
        for p in self.last_layer.parameters():
            p.grad = None


def cancel_last_layer_gradients(module: nn.Module, epoch: int, freeze_epochs: int) -> None:
    """Drop the prototype-layer gradients of every :class:`DINOHead` in ``module`` while ``epoch < freeze_epochs``.

    DINO ``cancel_gradients_last_layer`` / ECDDP ``delay_epoch``: call between ``backward`` and ``optimizer.step``
    (in Lightning: ``on_after_backward``). Gradients set to ``None`` are skipped by the optimizer (no weight decay,
    no momentum update).
    """
    if epoch >= freeze_epochs:
        return
    for m in module.modules():
        if isinstance(m, DINOHead):
            m.cancel_last_layer_grad()
