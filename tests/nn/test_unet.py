"""Dense decoders: output sizes for pyramids and single maps, gradients."""

from __future__ import annotations

import pytest
import torch

from evssl.nn.backbones.unet import UNetDecoder, UPerHead


def pyramid(b: int = 2, size: int = 64, chans=(8, 16, 24, 32)):
    return [torch.randn(b, c, size // 4 // 2**i, size // 4 // 2**i) for i, c in enumerate(chans)]


@pytest.mark.parametrize("cls", [UNetDecoder, UPerHead])
def test_pyramid_to_output_size(cls):
    kw = {"channels": 16} if cls is UPerHead else {"decoder_channels": [8, 8, 16, 16]}
    head = cls([8, 16, 24, 32], out_channels=5, **kw)
    feats = pyramid()
    assert head(feats).shape == (2, 5, 16, 16)
    y = head(feats, output_size=(64, 64))
    assert y.shape == (2, 5, 64, 64)
    y.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("cls", [UNetDecoder, UPerHead])
def test_single_scale_and_odd_sizes(cls):
    kw = {"channels": 8, "norm": "gn"} if cls is UPerHead else {"decoder_channels": 8, "norm": "gn"}
    head = cls([12], out_channels=2, **kw).eval()
    assert head(torch.randn(1, 12, 5, 7), output_size=(80, 112)).shape == (1, 2, 80, 112)
    head = cls([4, 6], out_channels=1, **kw).eval()
    feats = [torch.randn(1, 4, 13, 17), torch.randn(1, 6, 7, 9)]
    assert head(feats, output_size=(50, 70)).shape == (1, 1, 50, 70)
    with pytest.raises(ValueError):
        head([feats[0]])
