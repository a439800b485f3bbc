"""ViT backbone: shapes, published parameter counts, token dropping/masking, drop-path, LR-decay groups."""

from __future__ import annotations

import pytest
import torch

from evssl.nn.backbones.vit import VisionTransformer, param_groups_lrd, sincos_pos_embed_2d, vit_base, vit_small
from tests.nn.helpers import count


def tiny(**kw) -> VisionTransformer:
    cfg = dict(img_size=32, patch_size=8, in_chans=2, embed_dim=32, depth=2, num_heads=2)
    cfg.update(kw)
    return VisionTransformer(**cfg)


# Published totals with the 1000-class head (timm model cards: vit_small_patch16_224 22,050,664;
# vit_base_patch16_224 86,567,656). Our learnable pos-embed has no class-token position (1 x D fewer);
# the sin-cos one is a buffer (197 x D fewer).
@pytest.mark.parametrize(("factory", "dim", "published"), [(vit_small, 384, 22_050_664), (vit_base, 768, 86_567_656)])
def test_param_counts_match_published(factory, dim, published):
    no_head = published - (dim * 1000 + 1000)
    assert count(factory, pos_embed="learn") == no_head - dim
    assert count(factory) == no_head - 197 * dim
    # in_chans changes only the patch projection
    assert count(factory, in_chans=2) == no_head - 197 * dim - 16 * 16 * dim


def test_output_shapes_and_keys():
    m = tiny(num_special_tokens=2).eval()
    out = m.forward_features(torch.randn(3, 2, 32, 32))
    assert out["cls"].shape == (3, 32)
    assert out["special"].shape == (3, 2, 32)
    assert out["tokens"].shape == (3, 16, 32)
    assert torch.equal(out["pooled"], out["cls"])
    assert m(torch.randn(3, 2, 32, 32)).shape == (3, m.num_features)


def test_global_pool_variants():
    x = torch.randn(2, 2, 32, 32)
    m = tiny(global_pool="avg").eval()
    out = m.forward_features(x)
    torch.testing.assert_close(out["pooled"], out["tokens"].mean(1))
    m = tiny(num_special_tokens=2, class_token=False, global_pool="special").eval()  # ECDP layout
    out = m.forward_features(x)
    assert "cls" not in out and m.num_features == 64
    torch.testing.assert_close(out["pooled"], out["special"].flatten(1))
    with pytest.raises(ValueError):
        tiny(class_token=False)


@pytest.mark.parametrize("pos", ["sincos", "learn"])
def test_other_input_sizes(pos):
    m = tiny(pos_embed=pos).eval()
    out = m.forward_features(torch.randn(1, 2, 48, 40))
    assert out["tokens"].shape == (1, 6 * 5, 32)
    assert m.feature_grid(48, 40) == (6, 5)
    out = m.forward_features(torch.randn(1, 2, 30, 30))  # padded to 32
    assert out["tokens"].shape == (1, 16, 32)


def test_sincos_matches_buffer_and_values():
    pe = sincos_pos_embed_2d(8, 2, 3)
    assert pe.shape == (6, 8)
    # token (row 1, col 2): x = 2, y = 1; omega = [1, 1/100]
    expect = torch.tensor([2.0, 0.02]).sin().tolist() + torch.tensor([2.0, 0.02]).cos().tolist()
    expect += torch.tensor([1.0, 0.01]).sin().tolist() + torch.tensor([1.0, 0.01]).cos().tolist()
    torch.testing.assert_close(pe[5], torch.tensor(expect))
    m = tiny()
    torch.testing.assert_close(m.interpolate_pos_embed(4, 4), sincos_pos_embed_2d(32, 4, 4)[None])


def _reference_forward(m: VisionTransformer, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Recompose the encoder by hand: conv patches + sin-cos pos, gather, prepend cls, blocks, norm."""
    tok = m.patch_embed.proj(x).flatten(2).transpose(1, 2) + sincos_pos_embed_2d(m.embed_dim, 4, 4)
    tok = torch.stack([tok[b, keep[b]] for b in range(x.shape[0])])
    h = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), tok], 1)
    for blk in m.blocks:
        h = blk(h)
    return m.norm(h)[:, 1:]


def test_keep_index_equals_running_on_gathered_tokens():
    torch.manual_seed(0)
    m = tiny().eval()
    x = torch.randn(2, 2, 32, 32)
    keep = torch.stack([torch.randperm(16)[:5] for _ in range(2)])
    out = m.forward_features(x, keep_index=keep)
    assert out["tokens"].shape == (2, 5, 32)
    torch.testing.assert_close(out["tokens"], _reference_forward(m, x, keep))
    # keeping every token in a permuted order permutes the full output (no positional leakage from the order)
    perm = torch.stack([torch.randperm(16) for _ in range(2)])
    full = m.forward_features(x)["tokens"]
    permuted = m.forward_features(x, keep_index=perm)["tokens"]
    torch.testing.assert_close(permuted, torch.stack([full[b, perm[b]] for b in range(2)]), atol=1e-5, rtol=1e-5)


def test_mask_token_replaces_exactly_masked_positions():
    torch.manual_seed(0)
    m = tiny(mask_token=True, num_special_tokens=1)
    x = torch.randn(2, 2, 32, 32)
    mask = torch.rand(2, 16) < 0.4
    mask[0, 0] = True
    mask[1, 0] = False
    plain, _ = m.prepare_tokens(x)
    masked, _ = m.prepare_tokens(x, mask=mask.view(2, 4, 4))
    prefix = m.num_prefix_tokens
    torch.testing.assert_close(masked[:, :prefix], plain[:, :prefix])
    diff = (masked[:, prefix:] != plain[:, prefix:]).any(-1)
    assert torch.equal(diff, mask)
    expect = m.mask_token[0, 0] + sincos_pos_embed_2d(32, 4, 4)
    for b in range(2):
        torch.testing.assert_close(masked[b, prefix:][mask[b]], expect[mask[b]])
    with pytest.raises(ValueError):
        tiny().forward_features(x, mask=mask)


def test_drop_path_off_in_eval_and_on_in_train():
    torch.manual_seed(0)
    m = tiny(drop_path_rate=0.5)
    x = torch.randn(4, 2, 32, 32)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, m(x))
    rates = [blk.drop_path.p for blk in m.blocks]
    assert rates == [0.0, 0.5]


def test_gradients_reach_every_parameter():
    m = tiny(mask_token=True, num_special_tokens=2, pos_embed="learn")
    out = m.forward_features(torch.randn(2, 2, 32, 32), mask=torch.rand(2, 16) < 0.5)
    (out["pooled"].sum() + out["special"].sum() + out["tokens"].sum()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_param_groups_lrd():
    m = tiny(depth=3, mask_token=True)
    groups = param_groups_lrd(m, weight_decay=0.05, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    names = dict(m.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(names)
    # num_layers = depth + 1 = 4
    assert by_param[id(names["patch_embed.proj.weight"])]["lr_scale"] == 0.5**4
    assert by_param[id(names["cls_token"])]["weight_decay"] == 0.0
    assert by_param[id(names["blocks.0.attn.qkv.weight"])]["lr_scale"] == 0.5**3
    assert by_param[id(names["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05
    assert by_param[id(names["blocks.0.attn.qkv.bias"])]["weight_decay"] == 0.0
    assert by_param[id(names["blocks.2.mlp.fc1.weight"])]["lr_scale"] == 0.5
    assert by_param[id(names["norm.weight"])]["lr_scale"] == 1.0
    assert by_param[id(names["norm.weight"])]["weight_decay"] == 0.0
    # works on a wrapper as well
    wrapper = torch.nn.ModuleDict({"backbone": m, "head": torch.nn.Linear(32, 3)})
    groups = param_groups_lrd(wrapper, 0.05, 0.5)
    head = next(g for g in groups if any(p is wrapper["head"].weight for p in g["params"]))
    assert head["lr_scale"] == 1.0
