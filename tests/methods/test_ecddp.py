"""ECDDP method: wiring of views, teacher, losses and gradients; attention pooling; export; smoke config."""

from __future__ import annotations

import math
import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from evssl.callbacks.method_media import ecddp_context_pictures
from evssl.losses.ecddp import sinkhorn_targets
from evssl.methods.ecddp import ECDDP
from evssl.methods.ecddp_options import (
    ECDDPContext,
    ECDDPCrops,
    ECDDPHeads,
    ECDDPLoss,
    ECDDPMasking,
    ECDDPOptim,
    ECDDPSwin,
    ecddp_preset,
)
from evssl.nn.attention_pool import AttentionPool
from evssl.nn.backbones import SwinTransformer
from evssl.nn.ema import ema_update_
from evssl.optim import OptimConfig, param_groups
from evssl.tasks.classification import load_backbone_weights

REPO = Path(__file__).resolve().parents[2]


def tiny_swin(in_chans: int = 6, mask_token: bool = True) -> SwinTransformer:
    return SwinTransformer(
        in_chans=in_chans,
        patch_size=2,
        embed_dim=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 3, 6),
        window_size=4,
        mask_token=mask_token,
    )


GROUPS = {"heads": ECDDPHeads, "crops": ECDDPCrops, "masking": ECDDPMasking, "context": ECDDPContext,
          "loss": ECDDPLoss, "swin": ECDDPSwin}  # fmt: skip
TINY = {
    "heads": dict(neck_dim=32, num_prototypes=16, hidden_dim=32, bottleneck_dim=16, pool_heads=2),
    "crops": dict(global_size=32, local_size=16, num_local=2),
    "context": dict(num_clusters=3),
    "loss": dict(warmup_teacher_temp_epochs=2),
}


def tiny_ecddp(**kw) -> ECDDP:
    """A tiny ECDDP: group keywords (``crops={"global_size": 48}``) update the tiny groups, the rest goes to ECDDP."""
    groups = {name: cls(**{**TINY.get(name, {}), **kw.pop(name, {})}) for name, cls in GROUPS.items()}
    return ECDDP(tiny_swin(), **groups, **kw)


def test_forward_backward_teacher_gets_no_gradient() -> None:
    torch.manual_seed(0)
    m = tiny_ecddp()
    m.train()
    assert not m.teacher.training and all(not t.training for t in m.teacher.modules())
    out = m.forward_losses(torch.randn(3, 6, 48, 48))
    for key in ("loss", "loss_patch", "loss_context", "loss_image_global", "loss_image_local"):
        assert torch.isfinite(out[key]), key
    assert out["mask_ratio"] > 0 and out["contexts_per_image"] > 0
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
    student = [p for name, p in m.named_parameters() if not name.startswith(("teacher.", "probe"))]
    assert all(p.grad is not None for p in student if p.requires_grad)
    # prototypes frozen during the first epoch
    m.on_after_backward()
    for head in (m.image_head.head, m.context_head.head, m.patch_head):
        assert all(p.grad is None for p in head.last_layer.parameters())
    assert m.backbone.patch_embed.weight.grad is not None


def test_teacher_excluded_from_optimizer_and_patch_embed_lr() -> None:
    m = tiny_ecddp()
    groups = param_groups(m, m.learnable_params(), m.optim, lr=1.0, exclude=m._ema_targets())
    ids = {id(p) for g in groups for p in g["params"]}
    assert not ids & {id(p) for p in m.teacher.parameters()}
    assert ids == {id(p) for p in m.parameters() if p.requires_grad}
    embed = {g["name"]: g["lr"] for g in groups}
    assert embed["patch_embed"] == pytest.approx(0.2) and embed["backbone"] == 1.0
    pairs = m.momentum_pairs()
    assert [type(o).__name__ for o, _ in pairs] == [
        "SwinTransformer",
        "SwinNeck",
        "PooledPrototypeHead",
        "PooledPrototypeHead",
        "DINOHead",
    ]
    assert all(len(list(o.parameters())) == len(list(t.parameters())) for o, t in pairs)


def test_teacher_temperature_warmup() -> None:
    m = tiny_ecddp(loss={"warmup_teacher_temp_epochs": 30})
    assert m.teacher_temp_at(0) == pytest.approx(0.04)
    assert m.teacher_temp_at(15) == pytest.approx(0.055)
    assert m.teacher_temp_at(30) == m.teacher_temp_at(100) == pytest.approx(0.07)


def test_identity_crops_transport_the_kmeans_assignments_unchanged() -> None:
    torch.manual_seed(0)
    m = tiny_ecddp(crops={"global_size": 48, "global_scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip_p": 0.0})
    views = m.make_views(torch.randn(2, 6, 48, 48))
    torch.testing.assert_close(views["global"].images[:2], views["full"])
    tgt = m.teacher_targets(views, 0.05)
    labels = tgt["crop_membership"].float().argmax(1).view(4, 6, 6)
    torch.testing.assert_close(labels, tgt["assign"].repeat(2, 1, 1))
    # image targets: rows sum to one
    torch.testing.assert_close(tgt["image"].sum(-1), torch.ones(2, 2))


def test_flipped_global_crop_flips_the_assignments() -> None:
    torch.manual_seed(1)
    m = tiny_ecddp(crops={"global_size": 48, "global_scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip_p": 1.0})
    views = m.make_views(torch.randn(2, 6, 48, 48))
    tgt = m.teacher_targets(views, 0.05)
    labels = tgt["crop_membership"].float().argmax(1).view(4, 6, 6)
    torch.testing.assert_close(labels, tgt["assign"].flip(-1).repeat(2, 1, 1))


def test_masked_attention_pooling_equals_pooling_each_context_alone() -> None:
    torch.manual_seed(0)
    pool = AttentionPool(16, num_layers=2, num_heads=2).eval()
    b, grid, k = 2, (3, 4), 3
    tokens = torch.randn(b, 12, 16)
    assign = torch.randint(0, k, (b, 12))
    assign[:, :k] = torch.arange(k)  # every context non-empty
    member = torch.nn.functional.one_hot(assign, k).transpose(1, 2).bool()
    out = pool(tokens, grid, k, member)
    pos = torch.nn.functional.interpolate(pool.pos_embed, size=grid, mode="bicubic").flatten(2).transpose(1, 2)
    x = tokens + pos
    for i in range(b):
        for c in range(k):
            q = pool.cls_token
            sub = x[i : i + 1, member[i, c]]
            for blk in pool.blocks:
                q = blk(q, sub, None)
            torch.testing.assert_close(out[i, c], pool.norm(q)[0, 0], atol=1e-5, rtol=1e-5)


def test_export_is_a_plain_swin_that_dense_tasks_load(tmp_path: Path) -> None:
    m = tiny_ecddp()
    exported = m.backbone_for_export()
    assert exported.mask_token is None and m.backbone.mask_token is not None
    assert m.backbone_config()["init_args"]["mask_token"] is False
    path = tmp_path / "bb.pt"
    torch.save(exported.state_dict(), path)
    plain = tiny_swin(mask_token=False)
    load_backbone_weights(plain, path)
    torch.testing.assert_close(plain.stages[0][0].attn.qkv.weight, m.backbone.stages[0][0].attn.qkv.weight)
    other = tiny_swin(in_chans=4, mask_token=False)  # a different downstream representation: first layer adapted
    load_backbone_weights(other, path)
    assert other.patch_embed.weight.shape[1] == 4


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"crops.global_size=36 must be a multiple of the neck stride"):
        tiny_ecddp(crops={"global_size": 36})
    with pytest.raises(ValueError, match="mask_token=True"):
        ECDDP(tiny_swin(mask_token=False), ECDDPHeads(neck_dim=32, num_prototypes=8, hidden_dim=16, bottleneck_dim=8))
    with pytest.raises(ValueError, match=r"crops.interpolation must be one of .* got 'bicubic'"):
        ECDDPCrops(interpolation="bicubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"context.kmeans_empty must be one of"):
        ECDDPContext(kmeans_empty="drop")  # type: ignore[arg-type]


def test_smoke_config_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evssl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["evssl"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--config", str(REPO / "experiments/smoke/ecddp.yaml"), "--trainer.fast_dev_run", "1"])
    # the EMA teacher is kept in eval mode (FrozenInEval), which Lightning does not report as a user's eval module
    assert not [w for w in caught if "in eval mode" in str(w.message)]


def test_smoke_yaml_groups_round_trip_through_jsonargparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nested ``init_args`` groups of the smoke YAML reach the module as the dataclasses a direct construction
    builds (switches resolved by the preset), and dotted CLI keys override single group fields."""
    from evssl.cli import EvsslCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    smoke = str(REPO / "experiments/smoke/ecddp.yaml")
    parsed = EvsslCLI(args=["--config", smoke, "--trainer.logger", "false"], run=False).model
    direct = ECDDP(
        SwinTransformer(in_chans=6, patch_size=2, embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6),
                        window_size=4, mask_token=True),
        heads=ECDDPHeads(neck_dim=64, num_prototypes=64, hidden_dim=128, bottleneck_dim=32, pool_heads=2),
        crops=ECDDPCrops(global_size=32, local_size=16, num_local=2),
        context=ECDDPContext(num_clusters=4, log_num_samples=2),
        loss=ECDDPLoss(warmup_teacher_temp_epochs=1),
        optim=ECDDPOptim(lr=5e-3, warmup_epochs=0.5),
    )  # fmt: skip
    for group in ("heads", "crops", "masking", "context", "loss_config", "swin", "optim"):
        assert getattr(parsed, group) == getattr(direct, group), group
    assert parsed.heads.neck_dim == 64 and parsed.crops.num_local == 2 and parsed.context.log_num_samples == 2
    switches = (parsed.swin.padding, parsed.masking.count, parsed.optim.no_decay)
    assert switches == ("official", "official", ("bias", "norm"))
    shapes = {k: v.shape for k, v in direct.state_dict().items() if not k.startswith("probe.")}
    assert {k: v.shape for k, v in parsed.state_dict().items() if not k.startswith("probe.")} == shapes

    args = ["--config", smoke, "--trainer.logger", "false", "--model.init_args.crops.num_local", "3",
            "--model.init_args.masking.exact", "true", "--model.init_args.swin.padding", "masked"]  # fmt: skip
    over = EvsslCLI(args=args, run=False).model
    assert over.crops.num_local == 3 and over.crops.global_size == 32  # the other fields of the group stay
    assert (over.masking.exact, over.masking.count, over.swin.padding) == (True, "official", "masked")


PRESET_SWITCHES = {  # (optim.no_decay, masking.count, masking.exact, swin.padding)
    "official": (("bias", "norm"), "official", False, "official"),
    "paper": (OptimConfig().no_decay, "grid", True, "masked"),
}


@pytest.mark.parametrize("preset", sorted(PRESET_SWITCHES))
def test_preset_fills_the_switches_and_explicit_values_win(preset: str) -> None:
    switches = PRESET_SWITCHES[preset]
    optim, masking, swin = ecddp_preset(preset, ECDDPOptim(lr=0.1), ECDDPMasking(probability=0.3), ECDDPSwin())
    assert (optim.no_decay, masking.count, masking.exact, swin.padding) == switches
    assert optim.lr == 0.1 and masking.probability == 0.3  # fields that are no switch are kept
    _, count, exact, padding = PRESET_SWITCHES["paper" if preset == "official" else "official"]
    optim, masking, swin = ecddp_preset(
        preset, ECDDPOptim(no_decay=("bias",)), ECDDPMasking(count=count, exact=exact), ECDDPSwin(padding=padding)
    )
    assert (optim.no_decay, masking.count, masking.exact, swin.padding) == (("bias",), count, exact, padding)
    m = tiny_ecddp(preset=preset, masking={"exact": exact})
    assert m.masking.exact is exact and m.masking.count == switches[1]
    with pytest.raises(ValueError, match="ECDDP: unknown preset 'dino'"):
        ecddp_preset("dino", ECDDPOptim(), ECDDPMasking(), ECDDPSwin())
    with pytest.raises(ValueError, match=r"swin.padding must be one of"):
        ECDDPSwin(padding="clamped")  # type: ignore[arg-type]


def test_context_pictures_one_per_sample() -> None:
    torch.manual_seed(0)
    m = tiny_ecddp()
    views = m.make_views(torch.randn(3, 6, 48, 48))
    tgt = m.teacher_targets(views, 0.05)
    images, captions = ecddp_context_pictures(views, tgt, m.context.num_clusters, num_samples=2)
    assert len(images) == len(captions) == 2
    assert all(im.dtype == np.uint8 for im in images)
    # events | K-means contexts (48 px, enlarged x3) | global crop (32 px, x4) with 2-px gaps
    assert images[0].shape == (144, 144 + 2 + 144 + 2 + 128, 3)
    assert len(ecddp_context_pictures(views, tgt, m.context.num_clusters, num_samples=8)[0]) == 3  # at most B


@pytest.mark.slow
def test_image_level_self_distillation_sharpens_on_a_fixed_batch() -> None:
    """Overfit check of the whole image-level loop (student head -> Sinkhorn teacher targets -> EMA teacher).

    With identical global views (scale 1, no flip, no local crops) of 16 distinct dense inputs, DINO's sharpening
    (teacher 0.04 < student 0.1) must turn the near-uniform initial targets into informative ones, so the image
    loss falls well below its uniform value ``2 ln P`` within ~60 steps (about 0.72 here). On sparse event windows the
    same loop needs ~200+ steps at lr 1e-4 and never leaves 1.00 at lr 2e-3, which is a property of the regime
    (per-image pooled features differ by a few %), not of this loop.
    """
    torch.manual_seed(0)
    m = tiny_ecddp(
        heads={"neck_dim": 64, "num_prototypes": 256, "hidden_dim": 128, "bottleneck_dim": 32},
        context={"num_clusters": 4},
        crops={"num_local": 0, "global_scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip_p": 0.0},
    )
    m.train()
    params = [p for part in m._student_parts().values() for p in part.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04)
    x = torch.randn(16, 6, 48, 48)
    ratios = []
    for _ in range(60):
        out = m.forward_losses(x, epoch=0.0)
        ratios.append(out["loss_image_global"].item() * (2 + 2) / (2 * math.log(256)))  # undo the 1/(2 n_l + 2 + λ1)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        with torch.no_grad():
            for online, target in m.momentum_pairs():
                ema_update_(online, target, 0.98)
    assert ratios[0] > 1.0  # random student sharper than the near-uniform targets
    assert sum(ratios[-5:]) / 5 < 0.9, ratios[-5:]


# ---------------------------------------------------------------------------------------------- 2 processes (gloo)
SK_ROWS = {0: (0, 3), 1: (3, 10)}  # unequal row counts per rank, as masked patches and valid contexts are


def _ddp_worker(rank: int, world: int, port: int, out: dict) -> None:
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        res: dict = {}
        # Sinkhorn centring with all-reduced sums: ranks holding 3 and 7 rows (and 0 and 10) of one batch
        logits = torch.randn(10, 16, generator=torch.Generator().manual_seed(5)) * 3
        a, b = SK_ROWS[rank]
        res["sk"] = sinkhorn_targets(logits[a:b], 0.1, 3)
        res["sk_empty"] = sinkhorn_targets(logits if rank else logits[:0], 0.1, 3)

        # one optimizer step of the method under DDP: the same initial weights on both ranks, different data
        class Step(torch.nn.Module):
            def __init__(self, m: ECDDP) -> None:
                super().__init__()
                self.m = m

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.m.forward_losses(x)["loss"]

        torch.manual_seed(0)
        m = tiny_ecddp()
        m.train()
        ddp = DistributedDataParallel(Step(m), find_unused_parameters=True)
        params = [p for part in m._student_parts().values() for p in part.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        teacher0 = torch.nn.utils.parameters_to_vector(m.teacher.parameters()).clone()
        torch.manual_seed(100 + rank)
        loss = ddp(torch.randn(2, 6, 48, 48))
        loss.backward()
        opt.step()
        with torch.no_grad():
            for online, target in m.momentum_pairs():
                ema_update_(online, target, 0.9)
        teacher = torch.nn.utils.parameters_to_vector(m.teacher.parameters())
        student = torch.nn.utils.parameters_to_vector(params)
        both = [torch.empty_like(teacher) for _ in range(world)]
        torch.distributed.all_gather(both, teacher)
        res["teacher_max_diff"] = (both[0] - both[1]).abs().max().item()
        res["teacher_moved"] = (teacher - teacher0).abs().max().item()
        both = [torch.empty_like(student) for _ in range(world)]
        torch.distributed.all_gather(both, student.detach())
        res["student_max_diff"] = (both[0] - both[1]).abs().max().item()
        res["loss"] = loss.item()
        out[rank] = res
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_two_process_sinkhorn_and_teacher_sync() -> None:
    """2 CPU processes (gloo): Sinkhorn targets with all-reduced sums equal the single-process targets of the
    concatenated batch, also when the ranks hold different numbers of rows (one of them none); after a DDP step
    with different data per rank, students and EMA teachers are identical on both ranks."""
    import torch.multiprocessing as mp

    port = 29500 + (os.getpid() + 7) % 1000
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    logits = torch.randn(10, 16, generator=torch.Generator().manual_seed(5)) * 3
    ref = sinkhorn_targets(logits, 0.1, 3, distributed=False)
    torch.testing.assert_close(torch.cat([out[0]["sk"], out[1]["sk"]]), ref, atol=1e-5, rtol=1e-4)
    assert out[0]["sk_empty"].shape == (0, 16)
    torch.testing.assert_close(out[1]["sk_empty"], ref, atol=1e-5, rtol=1e-4)
    for r in (0, 1):
        assert math.isfinite(out[r]["loss"])
        assert out[r]["teacher_moved"] > 0
        assert out[r]["student_max_diff"] == 0.0 and out[r]["teacher_max_diff"] == 0.0
    assert out[0]["loss"] != out[1]["loss"]  # the ranks did see different data


@pytest.mark.ddp
def test_two_process_gloo_fit_runs_and_sees_world_size(tmp_path: Path) -> None:
    """The smoke config trains for 2 steps with ``devices=2, strategy=ddp`` on CPU (gloo)."""
    import subprocess

    from tests.helpers import cli_env
    from tests.test_cli import evssl_command

    cmd = [
        *evssl_command(),
        "fit",
        "--config",
        str(REPO / "experiments" / "smoke" / "ecddp.yaml"),
        *("--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"),
        *("--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"),
        *("--trainer.enable_checkpointing", "false", "--trainer.callbacks", "null"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Starting with 2 processes" in out, out[-3000:]
    assert "max_steps=2" in out
