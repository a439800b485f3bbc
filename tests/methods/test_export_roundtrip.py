"""Issue 18 item 1: every method's export round-trips (export -> ``load_exported_backbone`` with no backbone given
-> the same outputs), for every method and backbone family, built in Python (no config) and through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from evssl.export import export_backbone, load_exported_backbone
from evssl.methods.brave import BraVe
from evssl.methods.ecddp import ECDDP
from evssl.methods.ecddp_options import ECDDPCrops, ECDDPHeads, ECDDPSwin
from evssl.methods.ecdp import ECDP
from evssl.nn.backbones import BasicBlock, Bottleneck, ResNet, SwinTransformer, VisionTransformer
from evssl.nn.image_encoders import RandomFeatureEncoder
from evssl.tasks import Classifier, SemanticSegmentation
from tests.helpers import TinyBYOL, TinyNet


def _resnet(block: type = BasicBlock, in_chans: int = 3) -> ResNet:
    return ResNet(block, (1, 1, 1, 1), in_chans=in_chans, small_input=True, width=4)


def _vit(**kw) -> VisionTransformer:
    args = dict(img_size=16, patch_size=8, in_chans=2, embed_dim=32, depth=1, num_heads=2)
    return VisionTransformer(**{**args, **kw})


def _swin(mask_token: bool = False) -> SwinTransformer:
    return SwinTransformer(in_chans=3, patch_size=2, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                           window_size=4, mask_token=mask_token)  # fmt: skip


def _ecddp(**kw) -> ECDDP:
    heads = ECDDPHeads(neck_dim=16, num_prototypes=8, hidden_dim=8, bottleneck_dim=4, pool_heads=2)
    crops = ECDDPCrops(global_size=32, local_size=16, num_local=1)
    return ECDDP(_swin(mask_token=True), heads, crops, **kw)


def _ecdp() -> ECDP:
    vit = _vit(num_special_tokens=2, class_token=False, global_pool="special")
    enc = RandomFeatureEncoder(embed_dim=8, width=4, grid=2)
    return ECDP(vit, image_encoder=enc, image_embed_dim=8, proj_hidden_dim=8, proj_dim=4, pred_hidden_dim=8)


def _brave() -> BraVe:
    return BraVe(_resnet(), [_resnet(in_chans=2)], proj_hidden_dim=8, proj_dim=4, pred_hidden_dim=8)


CASES = {
    "byol-tinynet": (lambda: TinyBYOL(TinyNet(3, 8)), (2, 3, 16, 16)),
    "brave-resnet": (_brave, (2, 3, 16, 16)),
    "ecdp-vit": (_ecdp, (2, 2, 16, 16)),
    "ecddp-swin": (_ecddp, (2, 3, 32, 32)),
    "ecddp-swin-teacher-paper": (lambda: _ecddp(swin=ECDDPSwin(export_teacher=True), preset="paper"), (2, 3, 32, 32)),
    "classifier-resnet-bottleneck": (lambda: Classifier(_resnet(Bottleneck), 3, mode="scratch"), (2, 3, 16, 16)),
    "classifier-vit": (lambda: Classifier(_vit(), num_classes=3, mode="scratch"), (2, 2, 16, 16)),
    "segmentation-swin": (lambda: SemanticSegmentation(_swin(), 3, decoder_channels=8), (2, 3, 32, 32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_round_trip_in_python(case: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    build, shape = CASES[case]
    module = build()
    with torch.no_grad():  # non-trivial weights everywhere (zero-initialised tokens, norms, ...)
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    meta = export_backbone(None, tmp_path / "bb.pt", module=module)
    assert meta["backbone"]["init_args"], "the export must describe the constructor arguments"
    rebuilt = load_exported_backbone(tmp_path / "bb.pt").eval()
    source: nn.Module = module.backbone_for_export().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), source(x))
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary name


def test_ecddp_export_through_the_cli_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The case of the issue: ECDDP's JSON kept only ``{"mask_token": false}`` and loading failed."""
    from evssl.cli import main
    from tests.helpers import REPO

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "experiments/smoke/ecddp.yaml"), "--trainer.max_steps", "1"]
    args += ["--trainer.limit_val_batches", "0", "--trainer.logger", "false", "--trainer.callbacks", "null"]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    try:
        main(args)
    except SystemExit as exc:  # pragma: no cover - the CLI exits only on errors
        assert not exc.code
    ckpt = next(tmp_path.rglob("*.ckpt"))
    meta = export_backbone(ckpt, tmp_path / "ecddp.pt")
    init = meta["backbone"]["init_args"]
    assert init["mask_token"] is False and {"embed_dim", "depths", "in_chans", "window_padding"} <= set(init)
    rebuilt = load_exported_backbone(tmp_path / "ecddp.pt").eval()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, state[f"backbone.{k}"]), k
