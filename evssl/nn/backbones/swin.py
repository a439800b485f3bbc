"""Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021).

Swin-T: patch embedding 4x4 (+LayerNorm), four stages of depths (2, 2, 6, 2) with (3, 6, 12, 24) heads, width 96
doubled by each patch merging, window 7, MLP ratio 4, relative position bias, no absolute position embedding. This is
the ECDDP backbone (Yang et al., ECCV 2024, "Swin-T/7", trained on 6-bin voxel grids).

Attention inside each ``M x M`` window (Eq. 4 of the paper): ``softmax(QK^T / sqrt(d) + B) V`` with ``B`` read from a
learnable ``(2M-1)^2 x heads`` table by relative offset. Every second block cyclically shifts the map by ``M // 2``
and masks attention between tokens that were not neighbours before the shift (paper §3.2, Fig. 4).

Arbitrary (tiny) input sizes:

* the window is clamped per axis to the feature-map size (as the paper does when a map is smaller than a window), in
  which case there is no shift along that axis;
* maps are zero-padded to window multiples (as in the official detection/segmentation backbone) and padded positions
  are additionally masked out as keys (additive -100, as for the shift mask), so outputs do not depend on the padding;
* odd maps are padded before patch merging, inputs to a multiple of 4 before the patch embedding.

``window_padding`` switches the first two points (the rest is shared):

* ``"masked"`` (default, above): clamped window, no shift on maps not larger than the window, padded keys masked.
* ``"official"``: the detection-style Swin of the official ECDDP code (``model/network/swin_pretrain.py``,
  ``SwinTransformerBlock.forward`` l. 184-238, shift chosen at l. 316): the window is always ``M`` (7), every map is
  zero-padded **after** ``norm1`` to a multiple of ``M``, odd blocks always shift by ``M // 2`` (even a 3x3 map,
  padded to 7x7, is rolled by 3), and the only attention mask is the shift's region mask built on the padded map
  (l. 340-358). Padded positions are *not* masked: their zeros pass through ``qkv`` and become keys/values equal to
  the qkv bias, so they take part in the softmax and the outputs depend on the amount of padding. Maps that are
  multiples of ``M`` and larger than ``M`` give identical outputs in both modes. A map of exactly ``M x M`` does
  not: ``masked`` (like the classification Swin) does not shift it, ``official`` rolls it by ``M // 2`` and splits
  the single window into the shift's regions, so the 7x7 last stage of the 224-px teacher view (56/28/14/7)
  differs too.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evssl.utils.hparams import records_init_args

from .vit import DropPath, Mlp

__all__ = [
    "PatchMerging",
    "SwinBlock",
    "SwinNeck",
    "SwinTransformer",
    "WindowAttention",
    "set_window_padding_",
    "swin_tiny",
    "window_attention_mask",
]

_MASK_VALUE = -100.0
WindowPadding = Literal["masked", "official"]
_WINDOW_PADDINGS = ("masked", "official")


def _window_partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """(B, H, W, C) -> (B, nW, wh*ww, C) with H, W multiples of the window."""
    B, H, W, C = x.shape
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // wh) * (W // ww), wh * ww, C)


def _window_reverse(x: Tensor, wh: int, ww: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`_window_partition`."""
    B, _, _, C = x.shape
    x = x.view(B, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def window_attention_mask(
    H: int, W: int, Hp: int, Wp: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> Tensor | None:
    """Additive mask ``(nW, N, N)`` for (shifted) window attention on an ``H x W`` map padded to ``Hp x Wp``.

    Tokens get a region label; after the cyclic shift by ``shift`` two tokens of one window may attend to each other
    only if they carry the same label (Swin §3.2). Padded positions are never attended to. Returns ``None`` when
    nothing has to be masked.
    """
    wh, ww = window
    sh, sw = shift
    if sh == 0 and sw == 0 and Hp == H and Wp == W:
        return None
    label = torch.zeros(Hp, Wp, dtype=torch.long, device=device)
    hs = (slice(0, Hp - wh), slice(Hp - wh, Hp - sh), slice(Hp - sh, Hp)) if sh else (slice(0, Hp),)
    ws = (slice(0, Wp - ww), slice(Wp - ww, Wp - sw), slice(Wp - sw, Wp)) if sw else (slice(0, Wp),)
    n = 0
    for a in hs:
        for b in ws:
            label[a, b] = n
            n += 1
    pad = torch.zeros(Hp, Wp, dtype=torch.bool, device=device)
    pad[H:, :] = True
    pad[:, W:] = True
    # The region labels are defined in the shifted frame (as in the paper); the padding lives in the un-shifted
    # frame and is rolled like the features.
    if sh or sw:
        pad = torch.roll(pad, shifts=(-sh, -sw), dims=(0, 1))
    lw = _window_partition(label[None, :, :, None], wh, ww)[0, :, :, 0]  # (nW, N)
    pw = _window_partition(pad[None, :, :, None], wh, ww)[0, :, :, 0]
    blocked = (lw[:, :, None] != lw[:, None, :]) | pw[:, None, :]
    return torch.zeros(blocked.shape, device=device).masked_fill_(blocked, _MASK_VALUE)


def _relative_index(wh: int, ww: int, window_size: int, device: torch.device) -> Tensor:
    """Index ``(wh*ww, wh*ww)`` into the ``(2M-1)^2`` relative-bias table for a ``wh x ww`` window (M = window_size)."""
    yy, xx = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return rel[0] * (2 * window_size - 1) + rel[1]


class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (Swin Eq. 4).

    Input: windows ``(B, nW, N, C)``, the window shape ``(wh, ww)`` (``<= window_size``) and an optional additive
    mask ``(nW, N, N)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index",
            _relative_index(window_size, window_size, window_size, torch.device("cpu")),
            persistent=False,
        )

    def relative_bias(self, wh: int, ww: int) -> Tensor:
        """Bias ``(heads, N, N)`` for a ``wh x ww`` window."""
        if (wh, ww) == (self.window_size, self.window_size):
            idx = self.relative_position_index
        else:
            idx = _relative_index(wh, ww, self.window_size, self.relative_position_bias_table.device)
        n = wh * ww
        return self.relative_position_bias_table[idx.reshape(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, window: tuple[int, int], mask: Tensor | None = None) -> Tensor:
        B, nW, N, C = x.shape
        qkv = self.qkv(x).view(B, nW, N, 3, self.num_heads, C // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, nW, heads, N, d)
        bias = self.relative_bias(*window).to(q.dtype)[None]  # (1, heads, N, N)
        if mask is not None:
            bias = bias + mask.to(q.dtype)[:, None]  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(2, 3).reshape(B, nW, N, C))


class SwinBlock(nn.Module):
    """Swin block: ``x + DP(W-MSA(LN(x)))``, ``x + DP(MLP(LN(x)))``; (S)W-MSA = (shifted) window attention.

    Operates on ``(B, H, W, C)`` maps of any size. ``window_padding="masked"``: window clamped, map padded, padded
    keys masked; ``"official"``: full window, padded without a key mask, odd blocks always shifted (see the module
    docstring).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        window_padding: WindowPadding = "masked",
    ) -> None:
        super().__init__()
        if window_padding not in _WINDOW_PADDINGS:
            raise ValueError(f"SwinBlock: window_padding must be one of {_WINDOW_PADDINGS}, got {window_padding!r}")
        self.window_size = window_size
        self.shift = shift
        self.window_padding = window_padding
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def window_and_shift(self, H: int, W: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Effective window ``(wh, ww)`` and shift ``(sh, sw)`` for an ``H x W`` map."""
        M = self.window_size
        if self.window_padding == "official":
            s = M // 2 if self.shift else 0
            return (M, M), (s, s)
        wh, ww = min(M, H), min(M, W)
        sh = M // 2 if (self.shift and H > M) else 0
        sw = M // 2 if (self.shift and W > M) else 0
        return (wh, ww), (sh, sw)

    def forward(self, x: Tensor) -> Tensor:
        _, H, W, _ = x.shape
        (wh, ww), (sh, sw) = self.window_and_shift(H, W)
        h = self.norm1(x)
        ph, pw = (-H) % wh, (-W) % ww
        if ph or pw:
            h = F.pad(h, (0, 0, 0, pw, 0, ph))
        Hp, Wp = H + ph, W + pw
        if sh or sw:
            h = torch.roll(h, shifts=(-sh, -sw), dims=(1, 2))
        if self.window_padding == "official":  # shift regions only, built on the padded map: no key mask
            mask = window_attention_mask(Hp, Wp, Hp, Wp, (wh, ww), (sh, sw), x.device)
        else:
            mask = window_attention_mask(H, W, Hp, Wp, (wh, ww), (sh, sw), x.device)
        h = self.attn(_window_partition(h, wh, ww), (wh, ww), mask)
        h = _window_reverse(h, wh, ww, Hp, Wp)
        if sh or sw:
            h = torch.roll(h, shifts=(sh, sw), dims=(1, 2))
        h = h[:, :H, :W]
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C), LayerNorm, Linear 4C -> 2C without bias (Swin §3.1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _, H, W, _ = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


@records_init_args
class SwinTransformer(nn.Module):
    """Hierarchical Swin backbone with optional mask token (SimMIM/iBOT-style masking, used by ECDDP).

    Args:
        in_chans: input channels (6 for ECDDP's voxel grid).
        patch_size: patch-embedding stride (4).
        embed_dim: stage-1 width (96 for Swin-T).
        depths, num_heads: blocks and heads per stage.
        window_size: attention window (7).
        mlp_ratio, qkv_bias: block options.
        drop_path_rate: maximal stochastic depth, linear over all blocks.
        mask_token: create the learnable token substituted for masked patches (off by default so that an unused
            parameter never trips DDP).
        stage_norms: LayerNorm on the outputs of stages 1-3 as well (the dense-prediction variant; ECDDP's neck
            normalises every stage). The last stage always goes through ``norm``.
        window_padding: ``"masked"`` (clamped windows, masked padding; outputs independent of the padding) or
            ``"official"`` (the official ECDDP/detection Swin: pad to a multiple of the window without a key mask,
            always shift odd blocks); see the module docstring.

    Attributes:
        num_features: pooled dimension (``8 * embed_dim`` = 768 for Swin-T); ``feature_channels`` and
        ``feature_strides`` describe the four ``"features"`` maps.
    """

    def __init__(
        self,
        in_chans: int = 3,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] | list[int] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] | list[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        mask_token: bool = False,
        stage_norms: bool = True,
        window_padding: WindowPadding = "masked",
    ) -> None:
        super().__init__()
        if window_padding not in _WINDOW_PADDINGS:
            raise ValueError(
                f"SwinTransformer: window_padding must be one of {_WINDOW_PADDINGS}, got {window_padding!r}"
            )
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.window_size = window_size
        self.window_padding = window_padding
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, embed_dim)) if mask_token else None
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        self.feature_channels: list[int] = []
        self.feature_strides: list[int] = []
        dim, k = embed_dim, 0
        for i, (d, h) in enumerate(zip(depths, num_heads)):
            self.stages.append(
                nn.Sequential(
                    *(
                        SwinBlock(
                            dim,
                            h,
                            window_size,
                            shift=j % 2 == 1,
                            mlp_ratio=mlp_ratio,
                            qkv_bias=qkv_bias,
                            drop_path=rates[k + j],
                            window_padding=window_padding,
                        )
                        for j in range(d)
                    )
                )
            )
            k += d
            self.feature_channels.append(dim)
            self.feature_strides.append(patch_size * 2**i)
            if i < len(depths) - 1:
                self.downsamples.append(PatchMerging(dim))
                dim *= 2
        self.stage_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.feature_channels[:-1]) if stage_norms else None
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.embed_dim = embed_dim
        self.apply(self._init)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Names excluded from weight decay (Swin convention)."""
        return {"relative_position_bias_table", "mask_token"}

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch-embedding grid (stride ``patch_size``) for an input of ``height x width`` pixels."""
        return math.ceil(height / self.patch_size), math.ceil(width / self.patch_size)

    def _expand_mask(self, mask: Tensor, gh: int, gw: int) -> Tensor:
        B = mask.shape[0]
        if mask.ndim == 2:
            L = mask.shape[1]
            if L == gh * gw:
                return mask.view(B, gh, gw)
            f = round(math.sqrt(gh * gw / L))
            if f < 1 or gh % f or gw % f or (gh // f) * (gw // f) != L:
                raise ValueError(f"flat mask of {L} entries matches neither the {gh}x{gw} grid nor a coarser one")
            mask = mask.view(B, gh // f, gw // f)
        mh, mw = mask.shape[1:]
        if gh % mh or gw % mw or gh // mh != gw // mw:
            raise ValueError(f"mask grid {mh}x{mw} does not divide the {gh}x{gw} patch grid evenly")
        f = gh // mh
        if f > 1:
            mask = mask.repeat_interleave(f, dim=1).repeat_interleave(f, dim=2)
        return mask

    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Patch embedding + LayerNorm (+ mask-token substitution) as a ``(B, H/4, W/4, C)`` map."""
        ph, pw = (-x.shape[-2]) % self.patch_size, (-x.shape[-1]) % self.patch_size
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        h = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("forward_features(mask=...) needs a Swin built with mask_token=True")
            m = self._expand_mask(mask.bool(), h.shape[1], h.shape[2])
            h = torch.where(m[..., None], self.mask_token.to(h.dtype), h)
        return h

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor | list[Tensor]]:
        """Run all stages.

        ``mask`` (bool, True = masked): either on the patch-embedding grid (stride 4) as ``(B, H/4, W/4)`` or flat
        ``(B, H/4 * W/4)``, or on any coarser grid that divides it, e.g. ECDDP's stride-16 grid ``(B, H/16, W/16)``
        (or flat), which is upsampled by ``repeat_interleave`` so each mask unit covers a 16x16-pixel block.

        Returns ``{"features": [4 maps (B, C_i, H_i, W_i)], "pooled": (B, num_features)}``; ``pooled`` is the mean
        of the normalised last-stage tokens.
        """
        h = self.embed(x, mask)
        feats: list[Tensor] = []
        n = len(self.stages)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i == n - 1:
                out = self.norm(h)
            elif self.stage_norms is not None:
                out = self.stage_norms[i](h)
            else:
                out = h
            feats.append(out.permute(0, 3, 1, 2).contiguous())
            if i < n - 1:
                h = self.downsamples[i](h)
        pooled = feats[-1].mean(dim=(2, 3))
        return {"features": feats, "pooled": pooled}

    def forward(self, x: Tensor) -> Tensor:
        """Pooled feature ``(B, num_features)``."""
        return self.forward_features(x)["pooled"]  # type: ignore[return-value]


def swin_tiny(
    in_chans: int = 3,
    window_size: int = 7,
    drop_path_rate: float = 0.0,
    mask_token: bool = False,
    stage_norms: bool = True,
    window_padding: WindowPadding = "masked",
) -> SwinTransformer:
    """Swin-T (Liu et al. 2021): embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7, patch 4.

    27.52M parameters without the classifier (28.29M with the 1000-way head), plus 1,344 for ``stage_norms``.
    """
    return SwinTransformer(
        in_chans=in_chans,
        window_size=window_size,
        drop_path_rate=drop_path_rate,
        mask_token=mask_token,
        stage_norms=stage_norms,
        window_padding=window_padding,
    )


def set_window_padding_(backbone: nn.Module, padding: WindowPadding) -> None:
    """Set ``window_padding`` on a Swin backbone and all its blocks (a forward-time switch, no parameters)."""
    if padding not in _WINDOW_PADDINGS:
        raise ValueError(f"window_padding must be one of {_WINDOW_PADDINGS}, got {padding!r}")
    for m in backbone.modules():
        if hasattr(m, "window_padding"):
            m.window_padding = padding


class SwinNeck(nn.Module):
    """ECDDP pre-training neck: fuse the four Swin stages into one stride-16 token map (Yang et al., ECCV 2024).

    Each stage is brought to the stride of stage 3 and to ``out_dim`` channels, then the four maps are averaged:
    stage 1 AvgPool(4) + 1x1 conv, stage 2 AvgPool(2) + 1x1 conv, stage 3 1x1 conv, stage 4 ConvTranspose(2, 2).
    For sizes where the strides do not line up exactly (odd maps), adaptive average pooling / cropping to the
    stage-3 size is used instead. ``norm=True`` adds a LayerNorm per stage (use it when the backbone was built with
    ``stage_norms=False``; with the default backbone the stages are normalised already).

    ``forward(features)`` returns tokens ``(B, h*w, out_dim)`` (ECDDP's ``x_norm_patchtokens``);
    ``forward_map(features)`` the ``(B, out_dim, h, w)`` map.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...] | list[int] = (96, 192, 384, 768),
        out_dim: int = 768,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError("SwinNeck expects four stages (strides 4, 8, 16, 32)")
        c1, c2, c3, c4 = in_channels
        self.out_dim = out_dim
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in in_channels) if norm else None
        self.proj = nn.ModuleList(
            [
                nn.Conv2d(c1, out_dim, 1),
                nn.Conv2d(c2, out_dim, 1),
                nn.Conv2d(c3, out_dim, 1),
                nn.ConvTranspose2d(c4, out_dim, 2, stride=2),
            ]
        )

    def forward_map(self, features: list[Tensor]) -> Tensor:
        """Fused stride-16 map ``(B, out_dim, h, w)`` with ``(h, w)`` the stage-3 size."""
        if self.norms is not None:
            features = [n(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for n, f in zip(self.norms, features)]
        f1, f2, f3, f4 = features
        size = f3.shape[-2:]
        outs = []
        for f, k in ((f1, 4), (f2, 2)):
            if f.shape[-2] == size[0] * k and f.shape[-1] == size[1] * k:
                f = F.avg_pool2d(f, k)
            else:
                f = F.adaptive_avg_pool2d(f, size)
            outs.append(f)
        outs.append(f3)
        outs = [p(f) for p, f in zip(self.proj[:3], outs)]
        up = self.proj[3](f4)
        if up.shape[-2:] != size:
            if up.shape[-2] >= size[0] and up.shape[-1] >= size[1]:
                up = up[..., : size[0], : size[1]]
            else:
                up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
        outs.append(up)
        return torch.stack(outs).mean(0)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Fused tokens ``(B, h*w, out_dim)``."""
        return self.forward_map(features).flatten(2).transpose(1, 2)
