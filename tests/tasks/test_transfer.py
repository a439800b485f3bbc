"""Shared transfer pieces: BatchNorm re-estimation, input-layer re-initialisation, layer-decay backbone groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evssl.nn.backbones import BasicBlock, ResNet
from evssl.nn.backbones.swin import SwinTransformer
from evssl.nn.backbones.vit import VisionTransformer
from evssl.optim import OptimConfig
from evssl.tasks.classification import adapt_state_dict, load_backbone_weights
from evssl.tasks.transfer import backbone_param_groups, reestimate_batchnorm


class BNNet(nn.Module):
    """BatchNorm straight on the input (its statistics are the data's), a dropout, a conv and a second BN."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.drop(self.bn_in(x)))).mean(dim=(2, 3))


def _batches(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shift = torch.tensor([3.0, -1.0, 0.5])[None, :, None, None]
    return [torch.randn(4, 3, 5, 5, generator=g) * 2.0 + shift for _ in range(n)]


def test_reestimate_batchnorm_gives_the_cumulative_average_of_the_data_statistics():
    torch.manual_seed(0)
    net = BNNet().eval()
    with torch.no_grad():
        net.bn_in.running_mean.fill_(7.0)  # stale statistics from "pre-training"
    weights = {k: v.clone() for k, v in net.named_parameters()}
    batches = _batches()
    assert reestimate_batchnorm(net, batches) == 3
    # restatement: mean over batches of the batch mean / unbiased batch variance per channel
    mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(net.bn_in.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.bn_in.running_var, var, rtol=1e-5, atol=1e-5)
    # the second BN sees the eval-mode path: dropout off, bn_in normalising with the batch statistics
    h = [net.conv(nn.functional.batch_norm(b, None, None, net.bn_in.weight, net.bn_in.bias, True)) for b in batches]
    torch.testing.assert_close(net.bn.running_mean, torch.stack([x.mean(dim=(0, 2, 3)) for x in h]).mean(0))
    for k, v in net.named_parameters():
        assert torch.equal(v, weights[k]), k  # no weight changes
    assert not net.training and not net.bn.training  # modes restored
    assert net.bn.momentum == 0.1 and net.bn_in.momentum == 0.1


def test_reestimate_batchnorm_limits_batches_and_keeps_stats_without_data():
    net = BNNet()
    reestimate_batchnorm(net, _batches(5), max_batches=2)
    torch.testing.assert_close(
        net.bn_in.running_mean, torch.stack([b.mean(dim=(0, 2, 3)) for b in _batches(2)]).mean(0)
    )
    before = net.bn_in.running_mean.clone()
    assert reestimate_batchnorm(net, []) == 0
    assert torch.equal(net.bn_in.running_mean, before)
    assert reestimate_batchnorm(nn.Linear(2, 2), _batches()) == 0  # no BN: nothing to do


# ----------------------------------------------------------------------------------- input_adapt="reinit"
def test_reinit_leaves_the_patch_embedding_and_its_norm_fresh_for_swin(tmp_path):
    kw = dict(embed_dim=8, depths=(1, 1), num_heads=(1, 1))
    torch.manual_seed(0)
    src = SwinTransformer(in_chans=6, **kw)
    torch.save(src.state_dict(), tmp_path / "swin.pt")
    torch.manual_seed(1)
    dst = SwinTransformer(in_chans=20, **kw)
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    load_backbone_weights(dst, tmp_path / "swin.pt", input_adapt="reinit")
    for k, v in dst.state_dict().items():
        if k.startswith(("patch_embed.", "patch_norm.")):  # ECDDP: every patch_embed key (conv + LN) dropped
            assert torch.equal(v, fresh[k]), k
        else:
            assert torch.equal(v, src.state_dict()[k]), k
    # "mean" adapts the kernel instead and loads the rest of the patch embedding
    dst2 = SwinTransformer(in_chans=20, **kw)
    load_backbone_weights(dst2, tmp_path / "swin.pt", input_adapt="mean")
    torch.testing.assert_close(
        dst2.patch_embed.weight, src.patch_embed.weight.mean(1, keepdim=True).repeat(1, 20, 1, 1) * 0.3
    )
    assert torch.equal(dst2.patch_norm.weight, src.patch_norm.weight)


def test_reinit_for_vit_and_resnet_and_only_when_channels_differ():
    v_src, v_dst = VisionTransformer(32, 16, 2, 32, 1, 2), VisionTransformer(32, 16, 5, 32, 1, 2)
    out = adapt_state_dict(v_src.state_dict(), v_dst, input_adapt="reinit")
    assert sorted(set(v_dst.state_dict()) - set(out)) == ["patch_embed.proj.bias", "patch_embed.proj.weight"]
    r_src = ResNet(BasicBlock, [1, 1, 1, 1], in_chans=2, width=4, small_input=True)
    r_dst = ResNet(BasicBlock, [1, 1, 1, 1], in_chans=3, width=4, small_input=True)
    out = adapt_state_dict(r_src.state_dict(), r_dst, input_adapt="reinit")
    assert sorted(set(r_dst.state_dict()) - set(out)) == ["conv1.weight"]
    same = adapt_state_dict(v_src.state_dict(), v_src, input_adapt="reinit")
    assert set(same) == set(v_src.state_dict())
    with pytest.raises(ValueError, match="input_adapt"):
        adapt_state_dict(v_src.state_dict(), v_src, input_adapt="zero")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- layer decay
def test_backbone_param_groups_follow_the_beit_layer_rule():
    vit = VisionTransformer(32, 16, 2, 32, 3, 2)
    plain = backbone_param_groups(vit, lr_scale=0.5)
    assert len(plain) == 1 and plain[0]["lr_scale"] == 0.5
    groups = backbone_param_groups(vit, lr_scale=0.5, layer_decay=0.75, weight_decay=0.05)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(vit.patch_embed.proj.weight)] == pytest.approx(0.5 * 0.75**4)  # layer 0 of L + 1 = 4
    assert scale[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(0.5 * 0.75**3)
    assert scale[id(vit.blocks[2].mlp.fc1.weight)] == pytest.approx(0.5 * 0.75**1)
    assert scale[id(vit.norm.weight)] == pytest.approx(0.5)
    assert all(g["name"].startswith("backbone_layer_") for g in groups)
    with pytest.raises(ValueError, match="needs a ViT"):
        backbone_param_groups(SwinTransformer(embed_dim=8, depths=(1,), num_heads=(1,)), layer_decay=0.75)


# ------------------------------------------------------------------------------- Classifier / DenseTask wiring
def _trainer(**kw):
    from lightning.pytorch import Trainer

    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, **kw)  # fmt: skip


class ConvBN(nn.Module):
    """A probed BN backbone: BN on the input (its running stats = the data's), conv, pooled."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x)).mean(dim=(2, 3))


def test_classifier_reestimates_batchnorm_before_the_linear_probe(tmp_path):
    from evssl.tasks.classification import Classifier
    from tests.helpers import TensorDataModule

    torch.manual_seed(0)
    src = ConvBN()
    with torch.no_grad():
        src.bn.running_mean.fill_(5.0)  # stale pre-training statistics
        src.bn.running_var.fill_(9.0)
    torch.save(src.state_dict(), tmp_path / "bb.pt")
    dm = TensorDataModule(num_samples=32, channels=2, classes=4, batch_size=8)
    model = Classifier(ConvBN(), num_classes=4, mode="linear", pretrained=str(tmp_path / "bb.pt"),
                       bn_reestimate_batches=3, optim=OptimConfig(lr=0.05))  # fmt: skip
    weights = {k: v.clone() for k, v in model.backbone.named_parameters()}
    _trainer(max_epochs=1).fit(model, dm)
    batches = [dm.x[i : i + 8] for i in range(0, 24, 8)]  # the first 3 training batches (fixed order)
    torch.testing.assert_close(
        model.backbone.bn.running_mean, torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    )
    torch.testing.assert_close(
        model.backbone.bn.running_var, torch.stack([b.var(dim=(0, 2, 3)) for b in batches]).mean(0)
    )
    for k, v in model.backbone.named_parameters():
        assert torch.equal(v, weights[k]), k
    # off by default: the pre-training statistics stay
    pretrained = str(tmp_path / "bb.pt")
    plain = Classifier(ConvBN(), num_classes=4, mode="linear", pretrained=pretrained, optim=OptimConfig(lr=0.05))
    _trainer(max_epochs=1).fit(plain, dm)
    assert torch.equal(plain.backbone.bn.running_mean, torch.full((2,), 5.0))
    with pytest.raises(ValueError, match="mode 'linear' only"):
        Classifier(ConvBN(), num_classes=4, mode="finetune", bn_reestimate_batches=2)


def _tiny_vit(in_chans: int = 2) -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=8, in_chans=in_chans, embed_dim=16, depth=2, num_heads=2,
                             class_token=False, num_special_tokens=2, global_pool="special")  # fmt: skip


def test_dense_task_accepts_a_vit_through_the_feature_pyramid(tmp_path):
    from evssl.nn.vitdet import ViTPyramidConfig
    from evssl.tasks.dense import SemanticSegmentation

    task = SemanticSegmentation(_tiny_vit(), num_semantic_classes=3, decoder_channels=8, aux_weight=0.4,
                                vit_pyramid=ViTPyramidConfig(channels=8))  # fmt: skip
    assert task.feature_channels == [8, 8, 8, 8] and task.neck.feature_strides == [4, 8, 16, 32]
    out = task.predict_output(torch.randn(2, 2, 32, 40))
    assert out["logits"].shape == (2, 3, 32, 40) and out["aux"].shape == (2, 3, 32, 40)
    loss = task.compute_loss({"semantic": torch.randint(0, 3, (2, 32, 40))}, out)["loss"]
    loss.backward()
    assert all(p.grad is not None for p in task.backbone.parameters())  # DDP-safe: every ViT parameter used
    # exported backbone = the ViT alone; pretrained loading with patch-embed re-init (other channels)
    torch.save(task.backbone_for_export().state_dict(), tmp_path / "vit.pt")
    vit4 = _tiny_vit(in_chans=4)
    fresh = vit4.patch_embed.proj.weight.clone()
    again = SemanticSegmentation(vit4, num_semantic_classes=3, decoder_channels=8, pretrained=str(tmp_path / "vit.pt"),
                                 input_adapt="reinit", freeze_backbone=True)  # fmt: skip
    torch.testing.assert_close(again.backbone.blocks[1].mlp.fc1.weight, task.backbone.blocks[1].mlp.fc1.weight)
    assert torch.equal(again.backbone.patch_embed.proj.weight, fresh)  # re-initialised, not adapted
    # a frozen ViT still trains its pyramid
    again.train()
    assert not again.backbone.training and again.neck.training
    assert all(p.requires_grad for p in again.neck.parameters())
    with pytest.raises(ValueError, match="feature pyramid"):
        SemanticSegmentation(nn.Linear(2, 2), num_semantic_classes=3)


def test_dense_task_layer_decay_groups(tmp_path):
    from evssl.tasks.dense import DepthEstimation
    from tests.tasks.test_dense import tiny_swin

    task = DepthEstimation(
        _tiny_vit(), decoder_channels=8, layer_decay=0.5, backbone_lr_scale=0.1, optim=OptimConfig(lr=1e-3)
    )
    groups = task._backbone_groups()
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    vit = task.backbone
    assert scale[id(vit.patch_embed.proj.weight)] == pytest.approx(0.1 * 0.5**3)  # L = 2 blocks: layer 0 of 3
    assert scale[id(vit.blocks[1].attn.qkv.weight)] == pytest.approx(0.1 * 0.5**1)
    assert scale[id(vit.norm.weight)] == pytest.approx(0.1)
    assert not any(id(p) in scale for p in task.neck.parameters())  # the pyramid is in the decoder group
    with pytest.raises(ValueError, match="needs a ViT"):
        DepthEstimation(tiny_swin(), decoder_channels=8, layer_decay=0.5)._backbone_groups()
