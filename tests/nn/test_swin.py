"""Swin-T: published parameter count, tiny inputs, (shifted) window locality, mask token, ECDDP neck."""

from __future__ import annotations

import pytest
import torch

from evssl.nn.backbones.swin import SwinBlock, SwinNeck, SwinTransformer, set_window_padding_, swin_tiny
from tests.nn.helpers import count


def tiny(**kw) -> SwinTransformer:
    cfg = dict(in_chans=6, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
    cfg.update(kw)
    return SwinTransformer(**cfg)


def test_param_count_matches_published():
    # Swin-T with its 1000-class head: 28,288,354 (Liu et al. 2021, 28M; torchvision swin_t); head 768*1000 + 1000.
    no_head = 28_288_354 - 769_000
    assert count(swin_tiny, stage_norms=False) == no_head
    assert count(swin_tiny) == no_head + 2 * (96 + 192 + 384)  # extra LayerNorms on stages 1-3
    with torch.device("meta"):
        assert swin_tiny().num_features == 768


@pytest.mark.parametrize("size", [(64, 64), (50, 70), (16, 16)])
def test_shapes_on_tiny_inputs(size):
    m = tiny().eval()
    out = m.forward_features(torch.randn(2, 6, *size))
    grid = [(-(-size[0] // 4)), (-(-size[1] // 4))]
    for f, c in zip(out["features"], m.feature_channels):
        assert f.shape[:2] == (2, c)
        assert f.shape[2:] == tuple(grid)
        grid = [(g + 1) // 2 for g in grid]
    assert out["pooled"].shape == (2, m.num_features)
    assert m.feature_strides == [4, 8, 16, 32]


def _groups(n: int, window: int, shift: int) -> torch.Tensor:
    """Window id per coordinate: windows offset by the shift and truncated (not wrapped) at the borders."""
    r = torch.arange(n)
    return torch.div(r + (window - shift) % window, window, rounding_mode="floor") if shift else r // window


def _dependency(block: SwinBlock, H: int, W: int) -> torch.Tensor:
    """(H*W, H*W) bool: does output token i depend on input token j (Jacobian non-zero)?"""
    x = torch.randn(1, H, W, 8)
    jac = torch.autograd.functional.jacobian(block, x)  # (1,H,W,C,1,H,W,C)
    return jac.abs().sum(dim=(0, 3, 4, 7)).reshape(H * W, H * W) > 1e-10


@pytest.mark.parametrize(
    ("H", "W", "window", "shift"),
    [(8, 8, 4, False), (8, 8, 4, True), (7, 9, 4, False), (7, 9, 4, True), (3, 5, 4, True)],
)
def test_window_attention_locality(H, W, window, shift):
    """A token sees exactly its (shifted) window: tokens of other windows -- including those that the cyclic shift
    brings into the same window -- and padding have no influence (Swin §3.2)."""
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window_size=window, shift=shift).eval()
    dep = _dependency(block, H, W)
    (wh, ww), (sh, sw) = block.window_and_shift(H, W)
    gy, gx = _groups(H, wh, sh), _groups(W, ww, sw)
    gid = (gy[:, None] * 100 + gx[None, :]).reshape(-1)
    expect = gid[:, None] == gid[None, :]
    assert torch.equal(dep, expect)
    if shift and H > window:
        assert sh == window // 2
        # wrapped corner pair: in one window after the cyclic shift, but masked
        assert not dep[0, (H - 1) * W + (W - 1)]


def test_padding_is_invisible():
    """On a 7x9 map (window 4, padded to 8x12) every window's real tokens give the same output as the window cut
    out on its own (no padding, window clamped): padded positions are never attended to."""
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window_size=4).eval()
    x = torch.randn(2, 7, 9, 8)
    full = block(x)
    for r0, r1 in ((0, 4), (4, 7)):
        for c0, c1 in ((0, 4), (4, 8), (8, 9)):
            torch.testing.assert_close(full[:, r0:r1, c0:c1], block(x[:, r0:r1, c0:c1]), atol=1e-5, rtol=1e-5)


def test_window_clamped_to_small_maps():
    block = SwinBlock(8, 2, window_size=7, shift=True)
    assert block.window_and_shift(5, 12) == ((5, 7), (0, 3))
    dep = _dependency(block.eval(), 3, 3)
    assert dep.all()  # one window covers the whole 3x3 map


def test_mask_token_at_stride4_and_stride16():
    torch.manual_seed(0)
    m = tiny(mask_token=True)
    x = torch.randn(2, 6, 64, 64)
    plain = m.embed(x)  # (2, 16, 16, C)
    coarse = torch.rand(2, 4, 4) < 0.5
    fine = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    for mask in (coarse, coarse.flatten(1), fine, fine.flatten(1)):
        h = m.embed(x, mask)
        changed = (h != plain).any(-1)
        assert torch.equal(changed, fine)
        torch.testing.assert_close(h[fine], m.mask_token.reshape(1, -1).expand(int(fine.sum()), -1))
    with pytest.raises(ValueError):
        m.embed(x, torch.rand(2, 3, 3) < 0.5)
    with pytest.raises(ValueError):
        tiny().forward_features(x, mask=coarse)


@pytest.mark.parametrize(("size", "grid"), [((64, 64), (4, 4)), ((96, 96), (6, 6)), ((100, 130), (7, 9))])
def test_neck_stride16_tokens(size, grid):
    m = tiny().eval()
    neck = SwinNeck(m.feature_channels, out_dim=32)
    feats = m.forward_features(torch.randn(2, 6, *size))["features"]
    tokens = neck(feats)
    assert tokens.shape == (2, grid[0] * grid[1], 32)
    assert neck.forward_map(feats).shape == (2, 32, *grid)


def test_neck_parameter_layout_matches_ecddp():
    expect = (96 + 192 + 384) * 768 + 3 * 768 + 768 * 768 * 4 + 768
    assert count(SwinNeck) == expect  # 96/192/384/768 -> 768


def test_gradients_and_drop_path():
    torch.manual_seed(0)
    m = tiny(mask_token=True, drop_path_rate=0.3)
    neck = SwinNeck(m.feature_channels, out_dim=16, norm=True)
    out = m.forward_features(torch.randn(2, 6, 64, 64), mask=torch.rand(2, 4, 4) < 0.5)
    (neck(out["features"]).sum() + out["pooled"].sum()).backward()
    missing = [n for n, p in [*m.named_parameters(), *neck.named_parameters()] if p.grad is None]
    assert missing == []
    m.eval()
    x = torch.randn(1, 6, 32, 32)
    torch.testing.assert_close(m(x), m(x))


# ------------------------------------------------------------------- window_padding="official" (ECDDP detection Swin)
def _official_block(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Clean-room restatement of the official ``SwinTransformerBlock.forward`` + ``BasicLayer`` mask
    (``Event-Camera-Data-Dense-Pre-training/model/network/swin_pretrain.py`` l. 184-238, 316, 340-358) with the weights
    of an evssl block: pad after norm1 to a multiple of M (no key mask), shift odd blocks by M//2, region mask on the
    padded map, explicit softmax(q·scale kᵀ + bias + mask)."""
    M = block.window_size
    s = M // 2 if block.shift else 0
    B, H, W, C = x.shape
    heads = block.attn.num_heads
    h = block.norm1(x)
    Hp, Wp = -(-H // M) * M, -(-W // M) * M
    h = torch.nn.functional.pad(h, (0, 0, 0, Wp - W, 0, Hp - H))
    if s:
        h = torch.roll(h, (-s, -s), (1, 2))
    win = h.view(B, Hp // M, M, Wp // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M, C)
    # relative index: (dy + M - 1) * (2M - 1) + (dx + M - 1)
    ys, xs = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    idx = (ys[:, None] - ys[None] + M - 1) * (2 * M - 1) + (xs[:, None] - xs[None] + M - 1)
    bias = block.attn.relative_position_bias_table[idx.flatten()].view(M * M, M * M, heads).permute(2, 0, 1)
    qkv = block.attn.qkv(win).view(win.shape[0], M * M, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1) + bias[None]
    if s:
        label = torch.zeros(Hp, Wp)
        n = 0
        for a in (slice(0, -M), slice(-M, -s), slice(-s, None)):
            for b in (slice(0, -M), slice(-M, -s), slice(-s, None)):
                label[a, b] = n
                n += 1
        lw = label.view(Hp // M, M, Wp // M, M).permute(0, 2, 1, 3).reshape(-1, M * M)
        mask = (lw[:, None, :] - lw[:, :, None] != 0).float() * -100.0  # (nW, N, N)
        nW = mask.shape[0]
        attn = (attn.view(B, nW, heads, M * M, M * M) + mask[None, :, None]).view(-1, heads, M * M, M * M)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, M * M, C)
    out = block.attn.proj(out).view(B, Hp // M, Wp // M, M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if s:
        out = torch.roll(out, (s, s), (1, 2))
    x = x + out[:, :H, :W]
    return x + block.mlp(block.norm2(x))


def _randomise_biases(block: SwinBlock) -> SwinBlock:
    """Non-zero qkv bias and LayerNorm shifts, so padded zeros after norm1 are visible keys/values."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return block


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size", [(3, 3), (6, 6), (12, 12), (5, 9), (7, 7), (14, 14)])
def test_official_window_padding_matches_official_block(shift, size):
    torch.manual_seed(0)
    block = _randomise_biases(SwinBlock(8, 2, window_size=7, shift=shift, window_padding="official")).eval()
    x = torch.randn(2, *size, 8)
    torch.testing.assert_close(block(x), _official_block(block, x), rtol=1e-5, atol=1e-5)


def test_official_and_masked_agree_only_on_unpadded_maps_larger_than_the_window():
    torch.manual_seed(0)
    official = _randomise_biases(SwinBlock(8, 2, window_size=7, shift=True, window_padding="official")).eval()
    masked = SwinBlock(8, 2, window_size=7, shift=True, window_padding="masked").eval()
    masked.load_state_dict(official.state_dict())
    x = torch.randn(1, 14, 21, 8)
    torch.testing.assert_close(masked(x), official(x), rtol=1e-6, atol=1e-6)  # 14x21: same windows and shift
    for size in [(12, 12), (6, 6), (7, 7)]:  # padded (12, 6) or a single 7x7 window (shifted only in "official")
        x = torch.randn(1, *size, 8)
        assert (masked(x) - official(x)).abs().max() > 1e-3, size


def test_official_padding_lets_padded_tokens_take_part():
    # "masked" outputs do not depend on the amount of padding, "official" ones do (padded zeros -> qkv bias)
    torch.manual_seed(0)
    block = _randomise_biases(SwinBlock(8, 2, window_size=7, shift=False, window_padding="official")).eval()
    x = torch.randn(1, 7, 7, 8)
    full = block(torch.cat([x, torch.randn(1, 7, 7, 8)], dim=2))[:, :, :7]  # 7x14: the left window is unpadded
    padded = block(x[:, :, :5])  # 7x5: padded to 7x7 by two zero columns
    assert (full[:, :, :5] - padded).abs().max() > 1e-3


def test_official_window_padding_whole_model_matches_block_restatement():
    torch.manual_seed(0)
    a = tiny(window_padding="official").eval()
    out = a.forward_features(torch.randn(1, 6, 48, 48))  # maps 12/6/3/2: every stage padded
    h = a.embed(torch.randn(1, 6, 48, 48))
    for blk in a.stages[0]:
        torch.testing.assert_close(blk(h), _official_block(blk, h), rtol=1e-5, atol=1e-5)
        h = blk(h)
    assert all(blk.window_and_shift(3, 3) == ((7, 7), (3 * blk.shift, 3 * blk.shift)) for blk in a.stages[3])
    assert [f.shape[-1] for f in out["features"]] == [12, 6, 3, 2]
    with pytest.raises(ValueError, match="window_padding"):
        tiny(window_padding="pad")


def test_set_window_padding_reaches_every_block_and_changes_the_output() -> None:
    torch.manual_seed(0)
    net = tiny().eval()
    x = torch.randn(1, net.in_chans, 20, 20)  # maps not multiples of the window: the two modes differ
    masked = net(x)
    set_window_padding_(net, "official")
    blocks = [m for m in net.modules() if isinstance(m, SwinBlock)]
    assert blocks and net.window_padding == "official" and all(b.window_padding == "official" for b in blocks)
    assert not torch.allclose(net(x), masked)
    with pytest.raises(ValueError, match="window_padding must be one of"):
        set_window_padding_(net, "clamped")  # type: ignore[arg-type]
