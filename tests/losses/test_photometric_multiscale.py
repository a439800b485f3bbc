"""Multi-scale view-synthesis loss: the mean over scales of the single-scale loss at the target's resolution."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from evssl.losses.photometric import (
    VOLossConfig,
    disp_to_depth,
    multiscale_view_synthesis_loss,
    upsampled_depth,
    view_synthesis_loss,
)


def test_upsampled_depth():
    disp = torch.rand(2, 1, 4, 6)
    same = upsampled_depth(disp, disp.shape[-2:], 0.5, 20.0)
    for a, b in zip(same, disp_to_depth(disp, 0.5, 20.0)):
        assert torch.equal(a, b)
    scaled, depth = upsampled_depth(disp, (8, 12), 0.5, 20.0)
    up = F.interpolate(disp, size=(8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(depth, disp_to_depth(up, 0.5, 20.0)[1])
    assert scaled.shape == (2, 1, 8, 12) and float(depth.min()) >= 0.5 and float(depth.max()) <= 20.0


def test_multiscale_loss_is_the_mean_of_the_single_scale_losses():
    gen = torch.Generator().manual_seed(0)
    target, s0, s1 = (torch.rand(1, 3, 8, 12, generator=gen) for _ in range(3))
    disps = [torch.rand(1, 1, 8 // 2**s, 12 // 2**s, generator=gen) for s in range(3)]
    t2s = [torch.eye(4).unsqueeze(0) for _ in range(2)]
    t2s[0][0, 0, 3], t2s[1][0, 0, 3] = 0.1, -0.1
    k = torch.tensor([[10.0, 0, 6], [0, 10.0, 4], [0, 0, 1]])
    cfg = VOLossConfig(alpha=0.7, smooth_weight=0.1, automask=False)
    out = multiscale_view_synthesis_loss(disps, target, [s0, s1], t2s, k, 0.5, 20.0, cfg)
    parts = []
    for s, d in enumerate(disps):
        scaled, depth = upsampled_depth(d, (8, 12), 0.5, 20.0)
        parts.append(
            view_synthesis_loss(
                target, [s0, s1], depth, scaled, t2s, k, alpha=0.7, smooth_weight=0.1 / 2**s, automask=False
            )
        )
    for key in ("loss", "photometric", "smoothness"):
        torch.testing.assert_close(out[key], torch.stack([p[key] for p in parts]).mean())
    # lambda_s = smooth_weight / 2^s: raising smooth_weight by 0.1 adds (1/S) sum_s 0.1 / 2^s L_smooth,s
    other = multiscale_view_synthesis_loss(disps, target, [s0, s1], t2s, k, 0.5, 20.0, replace(cfg, smooth_weight=0.2))
    torch.testing.assert_close(other["photometric"], out["photometric"])
    extra = torch.stack([0.1 / 2**s * p["smoothness"] for s, p in enumerate(parts)]).mean()
    torch.testing.assert_close(other["loss"] - out["loss"], extra)
