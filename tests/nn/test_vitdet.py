"""ViT feature pyramids (ViTDet simple feature pyramid, BEiT block pyramid): values against a restatement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evssl.nn.backbones.vit import VisionTransformer
from evssl.nn.vitdet import SimpleFeaturePyramid, ViTPyramidConfig, vit_feature_pyramid


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(img_size=64, patch_size=16, in_chans=2, embed_dim=32, depth=4, num_heads=2, class_token=False,
               num_special_tokens=2, global_pool="special")  # fmt: skip
    cfg.update(kw)
    return VisionTransformer(**cfg)


def deconv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2x2 stride-2 transposed convolution restated: out[o, 2i+u, 2j+v] = sum_c x[c, i, j] w[c, o, u, v] + b[o]."""
    B, _, H, W = x.shape
    out = torch.einsum("bchw,couv->bohuwv", x, w).reshape(B, w.shape[1], 2 * H, 2 * W)
    return out + b[None, :, None, None]


def test_forward_features_exposes_the_token_map_and_block_outputs():
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    x = torch.randn(2, 2, 64, 48)
    out = vit.forward_features(x, out_blocks=(0, 2))
    h, (gh, gw) = vit.prepare_tokens(x)
    raw = []
    for blk in vit.blocks:
        h = blk(h)
        raw.append(h[:, 2:].transpose(1, 2).reshape(2, 32, gh, gw))
    torch.testing.assert_close(out["block_maps"][0], raw[0])
    torch.testing.assert_close(out["block_maps"][1], raw[2])
    torch.testing.assert_close(out["map"], vit.norm(h)[:, 2:].transpose(1, 2).reshape(2, 32, 4, 3))
    torch.testing.assert_close(out["map"].flatten(2).transpose(1, 2), out["tokens"])
    with pytest.raises(ValueError, match="out_blocks"):
        vit.forward_features(x, out_blocks=(4,))


def test_simple_feature_pyramid_levels_match_a_restatement():
    torch.manual_seed(0)
    sfp = SimpleFeaturePyramid(32, patch_size=16, out_convs=False, norm="none")
    assert sfp.feature_strides == [4, 8, 16, 32]
    assert sfp.feature_channels == [8, 16, 32, 32]  # D/4, D/2, D, D
    m = torch.randn(2, 32, 5, 6)
    f4, f8, f16, f32 = sfp(m)
    up1, up2 = [m for m in sfp.levels[0][0] if isinstance(m, torch.nn.ConvTranspose2d)]  # ConvT, (norm), GELU, ConvT
    want4 = deconv(F.gelu(deconv(m, up1.weight, up1.bias)), up2.weight, up2.bias)
    one = sfp.levels[1][0][0]
    torch.testing.assert_close(f4, want4, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f8, deconv(m, one.weight, one.bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f16, m)
    torch.testing.assert_close(f32, F.max_pool2d(m, 2))
    assert [f.shape[-2:] for f in (f4, f8, f16, f32)] == [(20, 24), (10, 12), (5, 6), (2, 3)]


def test_vitdet_out_convs_are_1x1_and_3x3_with_channel_layernorm():
    torch.manual_seed(0)
    sfp = SimpleFeaturePyramid(32, patch_size=16, channels=24)
    assert sfp.feature_channels == [24] * 4
    level = sfp.levels[2]  # stride 16: identity, 1x1, LN, 3x3, LN
    with torch.no_grad():
        for p in level.parameters():
            p.add_(0.2 * torch.randn_like(p))
    m = torch.randn(1, 32, 4, 4)
    c1, n1, c3, n3 = level[1], level[2], level[3], level[4]
    assert c1.kernel_size == (1, 1) and c3.kernel_size == (3, 3) and c1.bias is None and c3.bias is None

    def ln(x, norm):
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.norm.weight, norm.norm.bias, 1e-6).permute(
            0, 3, 1, 2
        )

    want = ln(F.conv2d(ln(F.conv2d(m, c1.weight), n1), c3.weight, padding=1), n3)
    torch.testing.assert_close(sfp(m)[2], want, rtol=1e-5, atol=1e-5)


def test_block_pyramid_reads_one_block_per_level():
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    sfp = vit_feature_pyramid(vit, ViTPyramidConfig(source="blocks", out_convs=False, norm="none"))
    assert sfp.block_indices == (0, 1, 2, 3)  # evenly spaced, ending at the last block
    x = torch.randn(1, 2, 64, 64)
    levels = sfp.forward_vit(vit.forward_features(x, out_blocks=sfp.block_indices))
    # changing block 2 leaves levels 0 and 1 (blocks 0 and 1) unchanged and changes levels 2 and 3
    with torch.no_grad():
        vit.blocks[2].mlp.fc2.weight.add_(1.0)
    again = sfp.forward_vit(vit.forward_features(x, out_blocks=sfp.block_indices))
    torch.testing.assert_close(levels[0], again[0])
    torch.testing.assert_close(levels[1], again[1])
    assert (levels[2] - again[2]).abs().max() > 1e-3
    # the last level is the normalised final map
    torch.testing.assert_close(again[3], F.max_pool2d(vit.forward_features(x)["map"], 2))
    assert vit_feature_pyramid(tiny_vit(depth=12), ViTPyramidConfig(source="blocks")).block_indices == (3, 5, 7, 11)


@pytest.mark.parametrize("source", ["last", "blocks"])
def test_every_vit_parameter_gets_a_gradient(source):
    # DDP without find_unused_parameters needs every trainable parameter used (final norm, special tokens, ...)
    vit = tiny_vit()
    sfp = vit_feature_pyramid(vit, ViTPyramidConfig(source=source, channels=8))
    out = sfp.forward_vit(vit.forward_features(torch.randn(2, 2, 64, 64), out_blocks=sfp.block_indices))
    sum(f.square().mean() for f in out).backward()
    dead = [n for n, p in [*vit.named_parameters(), *sfp.named_parameters()] if p.grad is None]
    assert dead == []


def test_other_patch_sizes_and_bad_inputs():
    sfp = SimpleFeaturePyramid(16, patch_size=8, out_convs=False)
    assert sfp.feature_channels == [8, 16, 16, 16]  # stride 4 = one ConvT from a stride-8 map
    with pytest.raises(ValueError, match="power-of-2"):
        SimpleFeaturePyramid(16, patch_size=16, strides=(4, 12))
    with pytest.raises(ValueError, match="one block per level"):
        SimpleFeaturePyramid(16, source="blocks", block_indices=(1, 2))
    with pytest.raises(ValueError, match="not a ViT"):
        vit_feature_pyramid(torch.nn.Conv2d(2, 2, 1))
