"""Projector/predictor layouts (BYOL/BraVe, MoCo v3), MLP options and the DINO prototype head."""

from __future__ import annotations

import torch
from torch import nn

from evssl.nn.heads import (
    MLP,
    DINOHead,
    byol_predictor,
    byol_projector,
    cancel_last_layer_gradients,
    mocov3_predictor,
    mocov3_projector,
)


def layout(m: MLP) -> list[tuple]:
    out = []
    for layer in m.layers:
        if isinstance(layer, nn.Linear):
            out.append(("linear", layer.in_features, layer.out_features, layer.bias is not None))
        elif isinstance(layer, nn.BatchNorm1d):
            out.append(("bn", layer.affine))
        else:
            out.append((type(layer).__name__,))
    return out


def test_brave_projector_and_predictor():
    assert layout(byol_projector(2048)) == [
        ("linear", 2048, 4096, False),
        ("bn", True),
        ("ReLU",),
        ("linear", 4096, 128, False),
        ("bn", True),
    ]
    assert layout(byol_projector(2048, out_dim=256, last_bn=False))[-1] == ("linear", 4096, 256, True)
    assert layout(byol_predictor(128)) == [
        ("linear", 128, 4096, False),
        ("bn", True),
        ("ReLU",),
        ("linear", 4096, 128, True),
    ]


def test_mocov3_heads():
    assert layout(mocov3_projector(384)) == [
        ("linear", 384, 4096, False),
        ("bn", True),
        ("ReLU",),
        ("linear", 4096, 4096, False),
        ("bn", True),
        ("ReLU",),
        ("linear", 4096, 256, False),
        ("bn", False),
    ]
    assert layout(mocov3_predictor()) == [
        ("linear", 256, 4096, False),
        ("bn", True),
        ("ReLU",),
        ("linear", 4096, 256, False),
        ("bn", False),
    ]


def test_mlp_options_and_token_inputs():
    m = MLP(8, 16, 4, num_layers=3, bn="none", act="gelu")
    assert [t[0] for t in layout(m)] == ["linear", "GELU", "linear", "GELU", "linear"]
    assert all(t[3] for t in layout(m) if t[0] == "linear")
    m = MLP(8, 16, 4, num_layers=2, bn="hidden", bias=True)
    assert layout(m)[0] == ("linear", 8, 16, True)
    x = torch.randn(3, 5, 8)
    assert m(x).shape == (3, 5, 4)
    assert MLP(8, 16, 4, num_layers=1)(torch.randn(2, 8)).shape == (2, 4)


def test_dino_head_weight_norm_and_freezing():
    torch.manual_seed(0)
    head = DINOHead(16, 64, hidden_dim=32, bottleneck_dim=8)
    assert not head.last_layer.weight_g.requires_grad  # norm_last_layer: g fixed to 1
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(64))
    x = torch.randn(4, 16)
    logits = head(x)
    assert logits.shape == (4, 64)
    assert logits.abs().max() <= 1 + 1e-5  # unit bottleneck x unit prototypes -> cosine
    assert head(torch.randn(2, 7, 16)).shape == (2, 7, 64)  # iBOT patch tokens
    trainable = DINOHead(16, 64, hidden_dim=32, bottleneck_dim=8, norm_last_layer=False)
    assert trainable.last_layer.weight_g.requires_grad

    model = nn.ModuleDict({"a": trainable, "b": nn.Linear(2, 2)})
    trainable(x).sum().backward()
    cancel_last_layer_gradients(model, epoch=1, freeze_epochs=1)  # past the freeze: untouched
    assert trainable.last_layer.weight_v.grad is not None
    cancel_last_layer_gradients(model, epoch=0, freeze_epochs=1)
    assert trainable.last_layer.weight_v.grad is None and trainable.last_layer.weight_g.grad is None
    assert trainable.mlp.layers[0].weight.grad is not None
