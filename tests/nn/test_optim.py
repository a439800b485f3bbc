"""LARS against hand-computed updates, exclusion = momentum SGD, decay/no-decay groups, warm-up cosine."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evssl.nn.backbones.vit import VisionTransformer
from evssl.nn.optim import LARS, param_groups, warmup_cosine


def test_lars_step_hand_computed():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.01, nesterov=False)
    w.grad = torch.tensor([0.5, -1.0])
    opt.step()
    g = torch.tensor([0.5 + 1.5, -1.0 + 2.0])  # g + wd * w = [2, 1]
    ratio = 0.01 * 5 / math.sqrt(5.0)
    u1 = g * ratio  # momentum buffer after the first step
    w1 = torch.tensor([3.0, 4.0]) - 0.1 * u1
    torch.testing.assert_close(w.detach(), w1)
    # second step: buffer = 0.9 * u1 + u2
    w.grad = torch.tensor([0.0, 1.0])
    opt.step()
    g2 = torch.tensor([0.0, 1.0]) + 0.5 * w1
    u2 = g2 * 0.01 * w1.norm() / g2.norm()
    torch.testing.assert_close(w.detach(), w1 - 0.1 * (0.9 * u1 + u2))


def test_lars_nesterov_hand_computed():
    w = nn.Parameter(torch.tensor([0.0, 2.0]))
    opt = LARS([w], lr=1.0, momentum=0.5, weight_decay=0.0, trust_coefficient=0.1, nesterov=True)
    w.grad = torch.tensor([4.0, 0.0])
    opt.step()
    u = torch.tensor([4.0, 0.0]) * 0.1 * 2.0 / 4.0  # [0.2, 0]
    torch.testing.assert_close(w.detach(), torch.tensor([0.0, 2.0]) - (u + 0.5 * u))


def test_zero_norm_parameter_uses_ratio_one():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=0.1, momentum=0.0, weight_decay=0.1)
    w.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    torch.testing.assert_close(w.detach(), -0.1 * torch.tensor([1.0, 2.0, 3.0]))


def test_excluded_group_is_plain_momentum_sgd():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(a.detach().clone())
    lars = LARS([{"params": [a], "lars_exclude": True}], lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True)
    sgd = torch.optim.SGD([b], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0)
    for _ in range(3):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
    torch.testing.assert_close(a, b)


def test_param_groups_split():
    m = VisionTransformer(img_size=16, patch_size=8, in_chans=2, embed_dim=16, depth=1, num_heads=2, pos_embed="learn")
    m.norm.weight.requires_grad_(False)
    groups = param_groups(m, weight_decay=0.05, lr_scale=10.0, name="backbone")
    assert [g["name"] for g in groups] == ["backbone_decay", "backbone_no_decay"]
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    names = dict(m.named_parameters())
    for n in ("cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "patch_embed.proj.bias"):
        assert id(names[n]) in no_decay
    for n in ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "blocks.0.mlp.fc2.weight"):
        assert id(names[n]) in decay
    assert id(names["norm.weight"]) not in decay | no_decay  # frozen
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert groups[1]["lars_exclude"] and not groups[0]["lars_exclude"]
    assert all(g["lr_scale"] == 10.0 for g in groups)
    LARS(groups, lr=0.1)  # extra keys are accepted by the optimizer


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == 0.0
    assert warmup_cosine(5, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, final_ratio=0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10, base=2.0, final_ratio=0.1) == pytest.approx(0.2)
    assert warmup_cosine(1000, 100, 10) == pytest.approx(0.0)
    assert warmup_cosine(0, 10, 0) == pytest.approx(1.0)
