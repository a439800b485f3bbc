"""Vision Transformer with token masking for event-camera self-supervised learning.

Follows Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021): a patch embedding (one strided convolution,
any number of input channels so that event histograms/voxel grids plug in directly), a learnable class token,
pre-norm transformer blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` and a final LayerNorm.

Additions used by the event pre-training methods:

* ``num_special_tokens`` extra learnable tokens prepended to the sequence. ECDP (Yang et al., ICCV 2023, §3) uses two
  of them -- one read out by the event branch, one by the image (CLIP) branch -- and no positional embedding for
  them; with ``class_token=False, global_pool="special"`` the pooled feature is their concatenation (768-d for ViT-S,
  the ECDP fine-tuning feature).
* Fixed 2-D sin-cos positional embeddings (MAE / MoCo-v3 / ECDP) or learnable ones (timm), interpolated when the
  input size differs from ``img_size``.
* ``forward_features(x, keep_index=...)``: MAE-style token dropping -- positional embeddings are added first, then
  only the kept patch tokens are gathered and sent through the blocks (ECDP conditional masking).
* ``forward_features(x, mask=...)``: iBOT/BEiT-style masking -- masked patch tokens are replaced by a learnable mask
  token before positional embeddings are added (ECDDP patch-level loss).
* Stochastic depth (Huang et al., ECCV 2016) with the linear rule ``rate_i = drop_path_rate * i / (depth - 1)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evssl.utils.hparams import records_init_args

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "VisionTransformer",
    "drop_path",
    "param_groups_lrd",
    "sincos_pos_embed_2d",
    "vit_base",
    "vit_small",
    "vit_tiny",
]


def drop_path(x: Tensor, p: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth: drop whole residual branches per sample with probability ``p`` and rescale by ``1/(1-p)``.

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016). The identity in eval mode or when ``p == 0``.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    noise = x.new_empty(shape).bernoulli_(keep)
    return x * noise / keep


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path` (stochastic depth on a residual branch)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Transformer feed-forward block ``Linear -> GELU -> Linear`` (Vaswani et al. 2017; GELU as in ViT)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention ``softmax(QK^T / sqrt(d) + bias) V`` (Vaswani et al. 2017).

    ``attn_mask`` (optional) is passed to :func:`torch.nn.functional.scaled_dot_product_attention`: a bool tensor
    (True = may attend) or an additive float tensor, broadcastable to ``(B, heads, N, N)``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + DP(Attn(LN(x)))`` then ``x + DP(MLP(LN(x)))`` (ViT, Dosovitskiy et al.)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask=attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: a ``patch_size``-strided convolution, flattened to ``(B, N, D)`` tokens.

    Inputs whose size is not a multiple of ``patch_size`` are zero-padded on the bottom/right.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(gh, gw)`` for an input of ``height x width`` pixels."""
        return math.ceil(height / self.patch_size), math.ceil(width / self.patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        ph, pw = (-x.shape[-2]) % self.patch_size, (-x.shape[-1]) % self.patch_size
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        x = self.proj(x)
        gh, gw = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (gh, gw)


def sincos_pos_embed_2d(
    dim: int, gh: int, gw: int, temperature: float = 10000.0, device: torch.device | None = None
) -> Tensor:
    """Fixed 2-D sine-cosine positional embedding ``(gh*gw, dim)`` (row-major grid).

    As in MAE/MoCo-v3: a quarter of the channels each for ``sin(x w_k)``, ``cos(x w_k)``, ``sin(y w_k)``,
    ``cos(y w_k)`` with ``w_k = 1 / temperature^(k / (dim/4))``.
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    yy, xx = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64, device=device),
        torch.arange(gw, dtype=torch.float64, device=device),
        indexing="ij",
    )
    ox = xx.reshape(-1, 1) * omega
    oy = yy.reshape(-1, 1) * omega
    return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], dim=1).float()


@records_init_args
class VisionTransformer(nn.Module):
    """ViT backbone with optional special tokens and token masking (see module docstring for the papers).

    Args:
        img_size: nominal input size (pos-embed grid); other sizes are handled by recomputing (sin-cos) or
            bicubically interpolating (learnable) the positional embedding.
        patch_size: patch size (16 for ViT-*/16).
        in_chans: input channels (2 for an ECDP histogram, bins for a voxel grid, ...).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size.
        drop_path_rate: maximal stochastic-depth rate (linear over blocks).
        num_special_tokens: extra learnable tokens after the class token, without positional embedding (ECDP: 2).
        class_token: whether to prepend a class token.
        pos_embed: ``"sincos"`` (fixed, not a parameter) or ``"learn"`` (patch positions only; timm additionally has
            a class-token position).
        global_pool: ``"token"`` (class token), ``"avg"`` (mean of patch tokens) or ``"special"`` (concatenated
            special tokens, ``num_features = num_special_tokens * embed_dim``).
        mask_token: create the learnable mask token used by ``forward_features(mask=...)``. Off by default so that
            an unused parameter never trips DDP.
        norm_eps: LayerNorm epsilon (1e-6 as in timm/MoCo-v3/ECDP).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        num_special_tokens: int = 0,
        class_token: bool = True,
        pos_embed: Literal["sincos", "learn"] = "sincos",
        global_pool: Literal["token", "avg", "special"] = "token",
        mask_token: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if global_pool == "special" and num_special_tokens < 1:
            raise ValueError("global_pool='special' needs num_special_tokens >= 1")
        if pos_embed not in ("sincos", "learn"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learn', got {pos_embed!r}")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_special_tokens = num_special_tokens
        self.global_pool = global_pool
        self.pos_embed_type = pos_embed
        self.num_prefix_tokens = int(class_token) + num_special_tokens
        self.num_features = embed_dim * num_special_tokens if global_pool == "special" else embed_dim

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.grid_size = self.patch_embed.grid(*self.img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.special_tokens = (
            nn.Parameter(torch.zeros(1, num_special_tokens, embed_dim)) if num_special_tokens > 0 else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if mask_token else None
        n = self.grid_size[0] * self.grid_size[1]
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        else:
            self.pos_embed = None
            self.register_buffer(
                "pos_embed_fixed", sincos_pos_embed_2d(embed_dim, *self.grid_size)[None], persistent=False
            )
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=r, norm_eps=norm_eps) for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm/MAE initialisation: truncated normal (std 0.02) for linear layers and tokens, xavier for the patch
        projection (seen as a linear map), unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for p in (self.cls_token, self.special_tokens, self.mask_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (timm convention)."""
        return {"cls_token", "special_tokens", "mask_token", "pos_embed"}

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch-token grid ``(gh, gw)`` for an input of ``height x width`` pixels."""
        return self.patch_embed.grid(height, width)

    def interpolate_pos_embed(self, gh: int, gw: int) -> Tensor:
        """Positional embedding ``(1, gh*gw, D)`` for a ``gh x gw`` token grid."""
        if self.pos_embed is None:
            if (gh, gw) == tuple(self.grid_size):
                return self.pos_embed_fixed
            return sincos_pos_embed_2d(self.embed_dim, gh, gw, device=self.pos_embed_fixed.device)[None]
        if (gh, gw) == tuple(self.grid_size):
            return self.pos_embed
        h0, w0 = self.grid_size
        pe = self.pos_embed.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
        pe = F.interpolate(pe.float(), size=(gh, gw), mode="bicubic", align_corners=False).to(pe.dtype)
        return pe.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)

    def prepare_tokens(
        self, x: Tensor, mask: Tensor | None = None, keep_index: Tensor | None = None
    ) -> tuple[Tensor, tuple[int, int]]:
        """Token sequence entering the first block: ``[cls, special..., patches]`` and the patch grid.

        ``mask`` (B, N) or (B, gh, gw) bool: True patches are replaced by the mask token (before pos-embed).
        ``keep_index`` (B, K) long: only these patch tokens are kept (after pos-embed), in the given order.
        """
        tokens, (gh, gw) = self.patch_embed(x)
        B, N, D = tokens.shape
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("forward_features(mask=...) needs a ViT built with mask_token=True")
            mask = mask.reshape(B, -1).bool()
            if mask.shape[1] != N:
                raise ValueError(f"mask has {mask.shape[1]} entries per sample, the token grid has {N}")
            tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + self.interpolate_pos_embed(gh, gw).to(tokens.dtype)
        if keep_index is not None:
            tokens = torch.gather(tokens, 1, keep_index.long().unsqueeze(-1).expand(-1, -1, D))
        prefix = [t.expand(B, -1, -1).to(tokens.dtype) for t in (self.cls_token, self.special_tokens) if t is not None]
        return torch.cat([*prefix, tokens], dim=1), (gh, gw)

    def forward_features(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        keep_index: Tensor | None = None,
        out_blocks: Sequence[int] = (),
    ) -> dict[str, Any]:
        """Run the encoder.

        Returns a dict with ``"tokens"`` (B, N', D) normalised patch tokens (N' = K when ``keep_index`` is given),
        ``"cls"`` (B, D) when the model has a class token, ``"special"`` (B, S, D) when it has special tokens, and
        ``"pooled"`` (B, num_features). Without ``keep_index`` also ``"map"``: the normalised patch tokens as a
        ``(B, D, gh, gw)`` map, and, for ``out_blocks`` (block indices, 0-based), ``"block_maps"``: the raw outputs
        of those blocks (before the final norm) as ``(B, D, gh, gw)`` maps, in the given order (dense transfer,
        :mod:`evssl.nn.vitdet`).
        """
        if out_blocks and keep_index is not None:
            raise ValueError("forward_features: out_blocks needs the full token grid (no keep_index)")
        bad = [i for i in out_blocks if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"forward_features: out_blocks {bad} outside the {self.depth} blocks")
        h, (gh, gw) = self.prepare_tokens(x, mask=mask, keep_index=keep_index)
        grabbed: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i in out_blocks:
                grabbed[i] = self._token_map(h, gh, gw)
        h = self.norm(h)
        out: dict[str, Any] = {}
        i = 0
        if self.cls_token is not None:
            out["cls"] = h[:, 0]
            i = 1
        if self.special_tokens is not None:
            out["special"] = h[:, i : i + self.num_special_tokens]
        out["tokens"] = h[:, self.num_prefix_tokens :]
        if keep_index is None:
            out["map"] = self._token_map(h, gh, gw)
        if out_blocks:
            out["block_maps"] = [grabbed[i] for i in out_blocks]
        if self.global_pool == "token":
            out["pooled"] = out["cls"]
        elif self.global_pool == "avg":
            out["pooled"] = out["tokens"].mean(dim=1)
        else:
            out["pooled"] = out["special"].flatten(1)
        return out

    def _token_map(self, h: Tensor, gh: int, gw: int) -> Tensor:
        """Patch tokens of a full sequence ``(B, prefix + gh*gw, D)`` as a ``(B, D, gh, gw)`` map."""
        tokens = h[:, self.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(h.shape[0], -1, gh, gw)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled feature ``(B, num_features)``."""
        return self.forward_features(x)["pooled"]


def vit_tiny(
    in_chans: int = 3,
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    drop_path_rate: float = 0.0,
    num_special_tokens: int = 0,
    num_heads: int | None = None,
    class_token: bool = True,
    pos_embed: Literal["sincos", "learn"] = "sincos",
    global_pool: Literal["token", "avg", "special"] = "token",
    mask_token: bool = False,
) -> VisionTransformer:
    """ViT-Ti/16 (DeiT, Touvron et al. ICML 2021): width 192, 12 blocks, 3 heads.

    ``num_heads=None`` selects the standard head count; the other arguments are :class:`VisionTransformer`'s.
    """
    return VisionTransformer(
        img_size,
        patch_size,
        in_chans,
        192,
        12,
        num_heads or 3,
        drop_path_rate=drop_path_rate,
        num_special_tokens=num_special_tokens,
        class_token=class_token,
        pos_embed=pos_embed,
        global_pool=global_pool,
        mask_token=mask_token,
    )


def vit_small(
    in_chans: int = 3,
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    drop_path_rate: float = 0.0,
    num_special_tokens: int = 0,
    num_heads: int | None = None,
    class_token: bool = True,
    pos_embed: Literal["sincos", "learn"] = "sincos",
    global_pool: Literal["token", "avg", "special"] = "token",
    mask_token: bool = False,
) -> VisionTransformer:
    """ViT-S/16 (DeiT-S, Touvron et al. ICML 2021): width 384, 12 blocks, 6 heads; 21.6M parameters without head.

    ECDP (Yang et al. ICCV 2023) follows MoCo-v3 with ``num_heads=12`` (same parameter count) and two special
    tokens: ``num_special_tokens=2, class_token=False, global_pool="special"`` gives its 768-d feature.
    """
    return VisionTransformer(
        img_size,
        patch_size,
        in_chans,
        384,
        12,
        num_heads or 6,
        drop_path_rate=drop_path_rate,
        num_special_tokens=num_special_tokens,
        class_token=class_token,
        pos_embed=pos_embed,
        global_pool=global_pool,
        mask_token=mask_token,
    )


def vit_base(
    in_chans: int = 3,
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    drop_path_rate: float = 0.0,
    num_special_tokens: int = 0,
    num_heads: int | None = None,
    class_token: bool = True,
    pos_embed: Literal["sincos", "learn"] = "sincos",
    global_pool: Literal["token", "avg", "special"] = "token",
    mask_token: bool = False,
) -> VisionTransformer:
    """ViT-B/16 (Dosovitskiy et al. ICLR 2021): width 768, 12 blocks, 12 heads; 85.7M parameters without head.

    ``num_heads=None`` selects the standard head count; the other arguments are :class:`VisionTransformer`'s.
    """
    return VisionTransformer(
        img_size,
        patch_size,
        in_chans,
        768,
        12,
        num_heads or 12,
        drop_path_rate=drop_path_rate,
        num_special_tokens=num_special_tokens,
        class_token=class_token,
        pos_embed=pos_embed,
        global_pool=global_pool,
        mask_token=mask_token,
    )


_EMBED_NAMES = ("patch_embed", "cls_token", "special_tokens", "mask_token", "pos_embed")
_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def _vit_layer_id(name: str, num_layers: int) -> int:
    """Layer index for layer-wise LR decay: embeddings 0, block i -> i+1, everything after the blocks num_layers."""
    m = _BLOCK_RE.search(name)
    if m is not None:
        return int(m.group(1)) + 1
    if any(part in _EMBED_NAMES for part in name.split(".")):
        return 0
    return num_layers


def param_groups_lrd(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float,
    no_weight_decay: Iterable[str] = (),
    num_layers: int | None = None,
    policy: Any = None,
) -> list[dict]:
    """Parameter groups with layer-wise learning-rate decay (BEiT, Bao et al. ICLR 2022; MAE fine-tuning recipe).

    Layer ``l`` (0 = patch embedding and tokens, ``i + 1`` = block ``i``, ``depth + 1`` = final norm and any head)
    gets ``lr_scale = layer_decay ** (depth + 1 - l)``. Which parameters decay is the decision of the one policy,
    :func:`evssl.optim.decays` with ``policy.no_decay`` (an :class:`~evssl.optim.OptimConfig`; default: the default
    kinds: 1-D parameters, tokens, position embeddings); names in ``no_weight_decay`` are excluded as well. ``model``
    may be the ViT or any module containing one (names are matched on ``blocks.<i>.``). Groups are specs ``{"name",
    "params", "lr_scale", "weight_decay", "no_decay"}`` for :func:`evssl.optim.param_groups`.
    """
    from evssl.optim import NO_DECAY_KINDS, decays

    kinds = NO_DECAY_KINDS if policy is None or policy.no_decay is None else tuple(policy.no_decay)
    if num_layers is None:
        vits = [m for m in model.modules() if isinstance(m, VisionTransformer)]
        if vits:
            depth = vits[0].depth
        else:
            ids = [int(m.group(1)) for n, _ in model.named_parameters() if (m := _BLOCK_RE.search(n))]
            depth = max(ids) + 1 if ids else 0
        num_layers = depth + 1
    skip = set(no_weight_decay)
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = not decays(name, p, kinds) or name in skip or any(part in skip for part in name.split("."))
        layer = _vit_layer_id(name, num_layers)
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {
                "name": key,
                "params": [],
                "lr_scale": layer_decay ** (num_layers - layer),
                "weight_decay": 0.0 if no_decay else weight_decay,
                # the decision is made here: the no-decay buckets keep no decay, the decay buckets decay all
                "no_decay": NO_DECAY_KINDS if no_decay else (),
            }
        groups[key]["params"].append(p)
    return list(groups.values())
