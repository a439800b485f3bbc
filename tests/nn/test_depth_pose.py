"""DepthNet / PoseNet with ConvLSTM state, and online feature alignment."""

from __future__ import annotations

import pytest
import torch

from evssl.nn.backbones.resnet import BasicBlock, ResNet
from evssl.nn.depth_pose import DepthNet, DepthPoseNet, PoseNet, RecurrentEncoder, feature_alignments, mask_state
from evssl.nn.feature_alignment import FeatureAlignment, channel_stats


def _nets(in_ch=3, lstm=(3, 4), align=(1,)):
    enc = RecurrentEncoder(ResNet(BasicBlock, (1, 1, 1, 1), in_ch, small_input=True, width=8), lstm, align_stages=align)
    penc = RecurrentEncoder(ResNet(BasicBlock, (1, 1, 1, 1), 2 * in_ch, small_input=True, width=8), lstm)
    return DepthPoseNet(DepthNet(enc, (4, 8, 8, 16, 16)), PoseNet(penc, hidden=16))


def test_shapes_and_outputs():
    torch.manual_seed(0)
    net = _nets()
    xs = [torch.rand(2, 3, 16, 24) for _ in range(3)]
    out = net(xs)
    # small_input: stem and stage 1 keep the input size, so the three finest outputs are full-size
    assert [tuple(d.shape) for d in out["disp"]] == [(2, 1, 16, 24)] * 3 + [(2, 1, 8, 12)]
    assert all(0 <= float(d.min()) and float(d.max()) <= 1 for d in out["disp"])
    assert len(out["T_t2s"]) == 2 and out["T_t2s"][0].shape == (2, 4, 4)
    assert out["pose_vec"][0].abs().max() < 0.1  # 0.01 output scale: starts near the identity
    assert set(out["state"]["depth"]) == {"3", "4"} and out["state"]["pose"]["4"][0].shape[0] == 4
    # full-size ResNet stem (stride 2 + max-pool) works too
    enc = RecurrentEncoder(ResNet(BasicBlock, (1, 1, 1, 1), 3, width=8), (4,))
    d, _ = DepthNet(enc, (4, 8, 8, 16, 16))(torch.rand(1, 3, 64, 96))
    assert [tuple(x.shape[-2:]) for x in d["disp"]] == [(64, 96), (32, 48), (16, 24), (8, 12)]
    with pytest.raises(ValueError, match="odd"):
        net(xs[:2])


def test_state_carries_memory_and_resets_at_sequence_start():
    torch.manual_seed(0)
    net = _nets().eval()
    x = [torch.rand(1, 3, 16, 24) for _ in range(3)]
    other = [torch.rand(1, 3, 16, 24) for _ in range(3)]
    fresh = net(x)
    with torch.no_grad():
        after_other = net(x, net(other)["state"])
        # the state matters: the same window after another window gives a different output
        assert (after_other["disp"][0] - fresh["disp"][0]).abs().max() > 1e-6
        # a sequence boundary (keep = False) zeroes the state: identical to a fresh start
        st = net(other)["state"]
        reset = {k: mask_state(v, torch.tensor([False])) for k, v in st.items()}
        torch.testing.assert_close(net(x, reset)["disp"][0], fresh["disp"][0])
        torch.testing.assert_close(net(x, reset)["T_t2s"][1], fresh["T_t2s"][1])
        # per-sample masks: sample 0 keeps, sample 1 resets
        xb = [torch.cat([a, a]) for a in x]
        stb = net([torch.cat([a, a]) for a in other])["state"]
        outb = net(xb, {k: mask_state(v, torch.tensor([True, False])) for k, v in stb.items()})
        torch.testing.assert_close(outb["disp"][0][1:], fresh["disp"][0])
        torch.testing.assert_close(outb["disp"][0][:1], after_other["disp"][0])


def test_feature_alignment_converges_to_target_statistics():
    """Source N(0, 1) per channel during training; test features N(mu_t, sigma_t): the online statistics converge
    to the target statistics and the aligned features get the source statistics back."""
    torch.manual_seed(0)
    fa = FeatureAlignment(4, momentum=0.2)
    fa.mode = "source"
    fa.train()
    src_mu, src_sd = torch.tensor([0.0, 1.0, -1.0, 2.0]), torch.tensor([1.0, 0.5, 2.0, 1.0])
    for _ in range(60):
        x = torch.randn(8, 4, 6, 6) * src_sd.view(1, -1, 1, 1) + src_mu.view(1, -1, 1, 1)
        assert torch.equal(fa(x), x)  # adain form: identity on the training domain
    torch.testing.assert_close(fa.source_mean, src_mu, atol=0.1, rtol=0)
    torch.testing.assert_close(fa.source_var.sqrt(), src_sd, atol=0.1, rtol=0)
    fa.eval()
    fa.mode = "online"
    fa.reset_online()
    tgt_mu, tgt_sd = torch.tensor([3.0, -2.0, 0.5, 0.0]), torch.tensor([0.3, 2.0, 1.0, 4.0])
    first_gap = None
    for _ in range(40):
        x = torch.randn(1, 4, 6, 6) * tgt_sd.view(1, -1, 1, 1) + tgt_mu.view(1, -1, 1, 1)
        y = fa(x)
        fa.update_online()
        gap = float((fa.online_mean - tgt_mu).abs().max())
        first_gap = gap if first_gap is None else first_gap
    assert first_gap > 1.0
    torch.testing.assert_close(fa.online_mean, tgt_mu, atol=0.25, rtol=0)
    torch.testing.assert_close(fa.online_var.sqrt(), tgt_sd, atol=0.25 * float(tgt_sd.max()), rtol=0)
    mu, _var = channel_stats(y)
    torch.testing.assert_close(mu, fa.source_mean, atol=0.5, rtol=0)
    # the current window is folded in only after use (update_before=False)
    before = fa.online_mean.clone()
    fa(torch.full((1, 4, 2, 2), 100.0))
    assert torch.equal(fa.online_mean, before)
    fa.update_online()
    assert fa.online_mean.min() > before.min()
    fa.mode = "off"
    z = torch.randn(1, 4, 3, 3)
    assert torch.equal(fa(z), z)


def test_alignment_inside_the_encoder():
    net = _nets(align=(0, 2))
    fas = feature_alignments(net)
    assert len(fas) == 2 and {f.channels for f in fas} == {8, 16}
    with pytest.raises(ValueError, match="stage numbers"):
        RecurrentEncoder(ResNet(BasicBlock, (1, 1, 1, 1), 3, width=8), (5,))


def test_resnet_like_and_depth_pose_net_from_a_backbone():
    from evssl.nn.backbones.resnet import Bottleneck
    from evssl.nn.depth_pose import NetworkConfig, depth_pose_net, resnet_like

    src = ResNet(Bottleneck, (1, 2, 1, 1), 5, small_input=True, width=8)
    twin = resnet_like(src, 10, None)
    assert twin.in_chans == 10 and twin.conv1.out_channels == 8 and twin.small_input
    assert type(twin.layer1[0]) is Bottleneck and [len(s) for s in (twin.layer2, twin.layer3)] == [2, 1]
    assert twin is not src and resnet_like(src, 10, 4).conv1.out_channels == 4
    cfg = NetworkConfig(
        lstm_stages=(3,), align_stages=(0, 2), decoder_channels=(4, 4, 8, 8, 16), num_scales=2, pose_hidden=16
    )
    net = depth_pose_net(src, cfg)
    assert net.depth_net.encoder.resnet is src  # the backbone is the DepthNet encoder, not a copy
    pose_resnet = net.pose_net.encoder.resnet
    assert pose_resnet.in_chans == 10 and pose_resnet.conv1.out_channels == 8
    for enc in (net.depth_net.encoder, net.pose_net.encoder):
        assert set(enc.lstm) == {"3"} and set(enc.align) == {"0", "2"}
    assert net.depth_net.num_scales == 2 and len(feature_alignments(net)) == 4
    out = net([torch.rand(1, 5, 16, 24) for _ in range(3)])
    assert len(out["disp"]) == 2 and out["T_t2s"][0].shape == (1, 4, 4)
