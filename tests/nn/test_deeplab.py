"""DeepLabV3+ / recognition variant / BMR generators, and the ResNet output-stride option they rely on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evssl.nn.backbones import BasicBlock, ResNet, resnet18, resnet50
from evssl.nn.deeplab import ASPP, DeepLabClassifier, DeepLabV3Plus, PointwiseProjection, aspp_rates
from evssl.nn.generators import UNetGenerator


def tiny_resnet(in_chans: int = 3, **kw) -> ResNet:
    return ResNet(BasicBlock, (1, 1, 1, 1), in_chans=in_chans, width=8, **kw)


def test_resnet_output_stride_16_and_8():
    x = torch.randn(1, 3, 64, 96)
    base = resnet18().eval()
    assert base.feature_strides == [4, 8, 16, 32] and base.feature_dilations == [1, 1, 1, 1]
    m16 = resnet18(output_stride=16).eval()
    assert m16.feature_strides == [4, 8, 16, 16] and m16.feature_dilations == [1, 1, 1, 2]
    assert m16.layer4[0].conv1.dilation == (2, 2) and m16.layer4[0].conv1.stride == (1, 1)
    assert m16.layer4[0].downsample[0].stride == (1, 1)
    assert [f.shape[-2:] for f in m16.forward_features(x)["features"]][-1] == (4, 6)
    m8 = resnet50(output_stride=8).eval()
    assert m8.feature_strides == [4, 8, 8, 8] and m8.feature_dilations == [1, 1, 2, 4]
    # same parameters as the undilated network: state dicts are interchangeable
    assert {k: v.shape for k, v in m16.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match="power of two"):
        resnet18(output_stride=12)


def test_resnet_multi_grid_dilations():
    m = ResNet(BasicBlock, (1, 1, 1, 3), width=8, output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv1.dilation[0] for b in m.layer4] == [2, 4, 8]
    assert [b.conv1.dilation[0] for b in m.layer3] == [1]


def test_aspp_matches_clean_room_restatement():
    torch.manual_seed(0)
    aspp = ASPP(8, 4, rates=(1, 2, 3), dropout=0.5).eval()
    for m in aspp.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    x = torch.randn(2, 8, 5, 7)

    def cbr(seq, z, dilation=1):
        conv, bn = seq[0], seq[1]
        pad = 0 if conv.kernel_size[0] == 1 else dilation
        y = F.conv2d(z, conv.weight, None, padding=pad, dilation=dilation)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return F.relu(y)

    br = aspp.branches
    outs = [cbr(br[0], x)] + [cbr(br[i + 1], x, r) for i, r in enumerate((1, 2, 3))]
    pooled = cbr(br[4].conv, x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, 5, 7)
    ref = cbr(aspp.project, torch.cat([*outs, pooled], 1))
    torch.testing.assert_close(aspp(x), ref, rtol=1e-5, atol=1e-5)
    assert aspp_rates(16) == (6, 12, 18) and aspp_rates(8) == (12, 24, 36)


def test_deeplabv3plus_maps_and_sizes():
    net = DeepLabV3Plus(tiny_resnet(5, output_stride=16), 6, aspp_channels=16, decoder_channels=16).eval()
    out = net.forward_all(torch.randn(2, 5, 50, 70))
    assert out["logits"].shape == (2, 6, 50, 70)
    assert out["logits_lowres"].shape == (2, 6, 13, 18)  # stride-4 low-level map
    assert out["decoder"].shape == (2, 16, 13, 18)
    assert out["aspp"].shape[1] == 16 and out["aspp"].shape[-2:] == out["features"][-1].shape[-2:]
    assert net.decoder.low[0].out_channels == 48  # the 48-channel low-level projection
    assert [len(net.aspp.branches), net.aspp.rates] == [5, (6, 12, 18)]
    net.train()
    net(torch.randn(2, 5, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_deeplab_classifier_and_pointwise():
    net = DeepLabClassifier(tiny_resnet(2, small_input=True), 10, aspp_channels=16).eval()
    out = net.forward_all(torch.randn(3, 2, 24, 32))
    assert out["logits"].shape == (3, 10) and out["pooled"].shape == (3, 16)
    torch.testing.assert_close(out["pooled"], out["aspp"].mean(dim=(2, 3)))
    pw = PointwiseProjection(6)
    y = pw(torch.randn(2, 6, 4, 4))
    assert y.shape == (2, 3, 4, 4) and (y >= 0).all()
    with pytest.raises(ValueError, match="feature_channels"):
        DeepLabV3Plus(torch.nn.Conv2d(3, 3, 1), 6)


@pytest.mark.parametrize(("act", "lo", "hi"), [("sigmoid", 0.0, 1.0), ("tanh", -2.0, 2.0), ("softplus", 0.0, None)])
def test_unet_generator_channels_and_value_range(act, lo, hi):
    g = UNetGenerator(5, 3, width=4, depth=2, activation=act, scale=2.0)
    y = g(10 * torch.randn(2, 5, 21, 30))
    assert y.shape == (2, 3, 21, 30)
    assert y.min() >= lo
    if hi is not None:
        assert y.max() <= hi
    with pytest.raises(ValueError, match="activation"):
        UNetGenerator(1, 1, activation="nope")  # type: ignore[arg-type]
