"""View-synthesis losses: warping with simulator ground truth, SSIM/photometric values, smoothness, auto-masking."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from evssl.events.simulate import SIZES, simulate_clip
from evssl.losses.photometric import (
    axis_angle_to_matrix,
    edge_aware_smoothness,
    inverse_warp,
    min_reprojection_loss,
    photometric_error,
    pose_vec_to_mat,
    ssim,
    view_synthesis_loss,
)


@pytest.fixture(scope="module")
def clip():
    cfg = replace(SIZES["vo_tiny"].sequence, duration_us=400_000, max_shapes=1)
    return simulate_clip(cfg, np.random.default_rng(7))


def _frame(clip, j):
    return torch.from_numpy(clip.frames[j]).permute(2, 0, 1)[None].float() / 255.0


def test_warp_with_ground_truth_reconstructs_target(clip):
    """Warping I_s with GT depth of I_t and T_t2s = P_s^-1 P_t reconstructs I_t far better than I_s itself."""
    k = torch.from_numpy(clip.intrinsics).float()
    ratios = []
    for t, s in ((1, 0), (1, 2), (2, 4)):
        depth = torch.from_numpy(clip.depth[t])[None, None].float()
        p_t, p_s = clip.poses[t], clip.poses[s]
        t2s = torch.from_numpy(np.linalg.inv(p_s) @ p_t)[None].float()
        warped, valid = inverse_warp(_frame(clip, s), depth, t2s, k)
        target = _frame(clip, t)
        # ignore a 2-pixel border (anti-aliasing and bilinear sampling at the edges) and the moving shape's pixels
        static = torch.from_numpy(clip.semantic[t] == 0)[None, None]
        m = valid & static
        m[..., :2, :] = m[..., -2:, :] = m[..., :, :2] = m[..., :, -2:] = False
        err_w = (warped - target).abs().mean(1, keepdim=True)[m].mean()
        err_0 = (_frame(clip, s) - target).abs().mean(1, keepdim=True)[m].mean()
        assert m.float().mean() > 0.5
        ratios.append(float(err_w / err_0))
    assert max(ratios) < 0.35, ratios


def test_identity_warp_is_exact():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 8, 10)
    depth = torch.rand(2, 1, 8, 10) + 1.0
    k = torch.tensor([[9.0, 0, 4.5], [0, 9.0, 3.5], [0, 0, 1]])
    warped, valid = inverse_warp(img, depth, torch.eye(4).expand(2, 4, 4), k)
    torch.testing.assert_close(warped, img, atol=1e-5, rtol=0)
    assert valid.all()


def test_pure_translation_shifts_by_disparity():
    """Fronto-parallel plane at depth Z, camera moves by b along x: the image shifts by f b / Z pixels."""
    h, w, f, z, b = 6, 12, 10.0, 5.0, 1.0  # shift = 2 px
    img = torch.arange(w, dtype=torch.float32).expand(1, 1, h, w).clone()
    k = torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    t2s = torch.eye(4)[None].clone()
    t2s[0, 0, 3] = -b  # source camera at +b: X_s = X_t - b
    warped, valid = inverse_warp(img, torch.full((1, 1, h, w), z), t2s, k)
    # target pixel u sees the point that the source sees at u - f b / Z
    torch.testing.assert_close(warped[..., 2:], img[..., :-2], atol=1e-5, rtol=0)
    assert not valid[..., :2].any() and valid[..., 2:].all()


def test_rodrigues_matches_closed_form():
    r = torch.tensor([[0.0, 0.0, math.pi / 2], [0.0, 0.0, 0.0], [1e-5, 0.0, 0.0]])
    rot = axis_angle_to_matrix(r)
    torch.testing.assert_close(rot[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(rot[1], torch.eye(3))
    m = pose_vec_to_mat(torch.tensor([[0.0, 0, 0, 1, 2, 3]]))
    torch.testing.assert_close(m[0, :3, 3], torch.tensor([1.0, 2, 3]))
    r0 = torch.zeros(1, 3, requires_grad=True)
    (g,) = torch.autograd.grad(axis_angle_to_matrix(r0)[0, 1, 0], [r0])  # dR_10/dr_z = 1 at the identity
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0, 1.0]]))


def test_ssim_and_photometric_values():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 7, 7)
    torch.testing.assert_close(ssim(x, x), torch.ones_like(x), atol=1e-5, rtol=0)
    assert photometric_error(x, x).abs().max() < 1e-6
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (no variance), L1 = |a - b|
    a, b, c1 = 0.2, 0.6, 0.01**2
    s = (2 * a * b + c1) / (a * a + b * b + c1)
    pe = photometric_error(torch.full((1, 3, 5, 5), a), torch.full((1, 3, 5, 5), b))
    torch.testing.assert_close(pe, torch.full((1, 1, 5, 5), 0.85 * (1 - s) / 2 + 0.15 * 0.4), atol=1e-4, rtol=0)


def test_smoothness_zero_for_constant_and_edge_aware():
    img = torch.zeros(1, 3, 4, 6)
    assert edge_aware_smoothness(torch.full((1, 1, 4, 6), 0.3), img) == 0
    disp = torch.ones(1, 1, 4, 6)
    disp[..., 3:] = 2.0
    flat = edge_aware_smoothness(disp, img)
    edge_img = img.clone()
    edge_img[..., 3:] = 1.0  # an image edge at the depth edge discounts it by exp(-1)
    assert edge_aware_smoothness(disp, edge_img) == pytest.approx(float(flat) * math.exp(-1.0), rel=1e-5)
    # mean normalisation: scaling the inverse depth does not change the loss
    assert edge_aware_smoothness(3 * disp, img) == pytest.approx(float(flat), rel=1e-5)


def test_min_reprojection_and_automask():
    torch.manual_seed(0)
    t = torch.rand(1, 1, 6, 6)
    good, bad = t.clone(), torch.rand(1, 1, 6, 6)
    loss, mask = min_reprojection_loss(t, [bad, good], [bad, bad], automask=True)
    assert float(loss) < 1e-6 and mask.all()  # per-pixel minimum picks the perfect source
    # a static source (identical to the target) masks every pixel out: nothing to learn there
    loss, mask = min_reprojection_loss(t, [bad], [t.clone()], automask=True)
    assert not mask.any() and float(loss) == 0.0
    # invalid pixels of one source are taken from the other
    v_bad = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    v_good = torch.zeros_like(v_bad)
    loss, _ = min_reprojection_loss(t, [bad, good], valid=[v_bad, v_good], automask=False)
    assert float(loss) == pytest.approx(float(photometric_error(bad, t).mean()), rel=1e-5)


def test_view_synthesis_loss_is_lower_with_true_depth(clip):
    k = torch.from_numpy(clip.intrinsics).float()
    t = 2
    target = _frame(clip, t)
    srcs = [_frame(clip, 1), _frame(clip, 3)]
    t2s = [torch.from_numpy(np.linalg.inv(clip.poses[s]) @ clip.poses[t])[None].float() for s in (1, 3)]
    depth = torch.from_numpy(clip.depth[t])[None, None].float()
    good = view_synthesis_loss(target, srcs, depth, 1 / depth, t2s, k, automask=False)
    wrong = view_synthesis_loss(target, srcs, depth * 0.3, 1 / (depth * 0.3), t2s, k, automask=False)
    assert float(good["photometric"]) < 0.7 * float(wrong["photometric"])
