"""ResNet: published parameter counts, stage shapes for both stems, gradients."""

from __future__ import annotations

import pytest
import torch

from evssl.nn.backbones.resnet import resnet18, resnet34, resnet50
from tests.nn.helpers import count


# He et al. 2016 / torchvision totals with the 1000-class fc: 11,689,512 / 21,797,672 / 25,557,032.
@pytest.mark.parametrize(
    ("factory", "published", "feat"),
    [(resnet18, 11_689_512, 512), (resnet34, 21_797_672, 512), (resnet50, 25_557_032, 2048)],
)
def test_param_counts_match_published(factory, published, feat):
    with torch.device("meta"):
        assert factory().num_features == feat
    assert count(factory) == published - (feat * 1000 + 1000)
    # a 2-channel event histogram changes only the stem: 7*7*64 weights per channel
    assert count(factory, in_chans=2) == count(factory) - 49 * 64


def test_standard_stem_shapes():
    m = resnet18(in_chans=5).eval()
    out = m.forward_features(torch.randn(2, 5, 64, 64))
    shapes = [tuple(f.shape) for f in out["features"]]
    assert shapes == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    assert m.feature_strides == [4, 8, 16, 32] and m.feature_channels == [64, 128, 256, 512]
    assert out["pooled"].shape == (2, 512)


def test_small_input_stem_and_bottleneck_shapes():
    m = resnet50(in_chans=2, small_input=True).eval()
    out = m.forward_features(torch.randn(2, 2, 16, 16))
    assert [tuple(f.shape[1:]) for f in out["features"]] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    assert m(torch.randn(2, 2, 16, 16)).shape == (2, 2048)
    assert m.feature_strides == [1, 2, 4, 8]


def test_gradients_and_zero_init_residual():
    m = resnet18(in_chans=2, small_input=True, zero_init_residual=True)
    assert all(not b.bn2.weight.detach().any() for layer in (m.layer1, m.layer4) for b in layer)
    m = resnet18(in_chans=2, small_input=True)
    m(torch.randn(2, 2, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
