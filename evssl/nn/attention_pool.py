"""Attention pooling of a token map (ECDDP, Yang et al. ECCV 2024; official ``AttPool``, ``DINOHead(use_attpool)``).

:class:`AttentionPool` turns a token map into ``Q`` embeddings with learnable queries; with a context membership each
query sees only its own context's tokens (the masked attention pooling :math:`A(z, M_k)` of ECDDP's context level).
:class:`PooledPrototypeHead` chains it with a :class:`~evssl.nn.heads.DINOHead`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evssl.losses.ecddp import pooling_attention_mask
from evssl.nn.backbones.vit import Mlp
from evssl.nn.heads import DINOHead

__all__ = ["AttentionPool", "AttentionPoolBlock", "PooledPrototypeHead"]


class AttentionPoolBlock(nn.Module):
    r"""One pooling block: queries attend to ``[queries; tokens]`` (ECDDP ``AttentionPoolBlock``).

    :math:`h = \mathrm{LN}([q; z])`, :math:`q \leftarrow q + \mathrm{MHA}(h_{:Q}, h, h; \text{mask})`,
    :math:`q \leftarrow q + \mathrm{MLP}(\mathrm{LN}(q))`. Only the queries are updated; ``mask`` ``(B, Q, Q+N)``
    bool (True = may attend) restricts what each query sees.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: Tensor, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        b, nq, d = queries.shape
        h = self.norm1(torch.cat([queries, tokens], dim=1))
        heads = self.num_heads

        def split(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], heads, d // heads).transpose(1, 2)

        q, k, v = split(self.q(h[:, :nq])), split(self.k(h)), split(self.v(h))
        attn_mask = None if mask is None else mask[:, None].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        queries = queries + self.proj(out.transpose(1, 2).reshape(b, nq, d))
        return queries + self.mlp(self.norm2(queries))


class AttentionPool(nn.Module):
    r"""Attention pooling of a token map into ``Q`` embeddings (ECDDP ``AttPool``).

    ``Q`` copies of one learnable query token; a learnable ``pos_grid x pos_grid`` absolute position embedding is
    resized (bicubic) to the token grid and added to the tokens; ``num_layers`` :class:`AttentionPoolBlock` s
    (``num_heads`` = dim / 32 by default), final LayerNorm. With a context membership ``M`` ``(B, K, N)`` query
    :math:`k` sees only itself and the tokens of context :math:`k`
    (:func:`~evssl.losses.ecddp.pooling_attention_mask`), which makes it the masked attention pooling
    :math:`A(z, M_k)` of the paper; without it (one query) it is the image embedding.
    """

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int | None = None, pos_grid: int = 6) -> None:
        super().__init__()
        heads = num_heads if num_heads is not None else max(1, dim // 32)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, pos_grid, pos_grid))
        self.blocks = nn.ModuleList(AttentionPoolBlock(dim, heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(
        self, tokens: Tensor, grid: tuple[int, int], num_queries: int = 1, membership: Tensor | None = None
    ) -> Tensor:
        """Pooled embeddings ``(B, num_queries, D)`` of ``tokens`` ``(B, h*w, D)`` laid out on ``grid = (h, w)``;
        ``membership`` ``(B, num_queries, h*w)`` bool restricts query ``k`` to the tokens of context ``k``."""
        b, n, _ = tokens.shape
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {grid} does not match {n} tokens")
        pos = F.interpolate(self.pos_embed, size=tuple(grid), mode="bicubic", align_corners=False)
        x = tokens + pos.flatten(2).transpose(1, 2).to(tokens.dtype)
        q = self.cls_token.to(tokens.dtype).expand(b, num_queries, -1)
        mask = None if membership is None else pooling_attention_mask(membership)
        for blk in self.blocks:
            q = blk(q, x, mask)
        return self.norm(q)


class PooledPrototypeHead(nn.Module):
    """Attention pooling followed by a DINO prototype head (ECDDP ``DINOHead(use_attpool=True)``)."""

    def __init__(self, pool: AttentionPool, head: DINOHead) -> None:
        super().__init__()
        self.pool = pool
        self.head = head

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Image-level prototype logits ``(B, P)`` (one query, no mask)."""
        return self.head(self.pool(tokens, grid, 1)[:, 0])
