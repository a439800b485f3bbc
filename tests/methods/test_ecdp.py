"""ECDP (evssl.methods.ecdp): views, crops, conditional masking, loss wiring, gradients, EMA, image encoders, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from evssl.callbacks.method_media import masked_view_picture
from evssl.data.views.ecdp import ECDPViews, RandomResizedCropNearest
from evssl.events.schema import Events
from evssl.losses.ecdp import distribution_alignment_loss
from evssl.methods.ecdp import ECDP, ECDPOptim
from evssl.nn.backbones.vit import VisionTransformer
from evssl.nn.crops import random_resized_crop_nearest, resized_crop_nearest, sample_resized_crop_boxes
from evssl.nn.ema import cosine_schedule
from evssl.nn.image_encoders import FrozenImageEncoder, RandomFeatureEncoder, as_frozen_image_encoder
from evssl.optim import param_groups
from tests.helpers import grouped

REPO = Path(__file__).resolve().parents[2]
IMG, PATCH, EMB = 32, 8, 24


# ----------------------------------------------------------------------------------------------------- helpers
def tiny_vit() -> VisionTransformer:
    return VisionTransformer(
        img_size=IMG,
        patch_size=PATCH,
        in_chans=2,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_special_tokens=2,
        class_token=False,
        global_pool="special",
    )


def tiny_ecdp(**kw) -> ECDP:
    kw.setdefault("image_encoder", RandomFeatureEncoder(embed_dim=EMB, width=4, grid=2))
    kw.setdefault("image_embed_dim", EMB)
    kw.setdefault("proj_hidden_dim", 32)
    kw.setdefault("proj_dim", 16)
    kw.setdefault("pred_hidden_dim", 32)
    torch.manual_seed(0)
    return ECDP(tiny_vit(), **grouped(kw, ECDPOptim))


def event_images(b: int, seed: int = 0, empty_half: bool = False) -> torch.Tensor:
    """Signed ECDP event images (B, 2, 32, 32) in [-1, 1): sparse random counts, optionally none on the left half."""
    g = torch.Generator().manual_seed(seed)
    counts = (torch.rand(b, 2, IMG, IMG, generator=g) < 0.15).float() * torch.randint(
        1, 5, (b, 2, IMG, IMG), generator=g
    )
    if empty_half:
        counts[..., : IMG // 2] = 0
    return (counts / (counts.amax(dim=(2, 3), keepdim=True) + 1) - 0.5) * 2


def tiny_batch(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 100)
    return {
        "input": event_images(b, seed),
        "frame": torch.randint(0, 256, (b, 3, 24, 32), generator=g, dtype=torch.uint8),
        "label": torch.arange(b) % 3,
    }


# ----------------------------------------------------------------------------------------------------- crops
def test_resized_crop_nearest_matches_interpolate_and_flip() -> None:
    x = torch.randn(3, 2, 20, 28)
    boxes = torch.tensor([[0, 0, 20, 28], [3, 5, 9, 14], [7, 1, 13, 6]])
    flip = torch.tensor([False, True, False])
    out = resized_crop_nearest(x, boxes, (16, 16), flip)
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        ref = F.interpolate(x[i : i + 1, :, t : t + h, l : l + w], size=(16, 16), mode="nearest")[0]
        if flip[i]:
            ref = ref.flip(-1)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=0)
    # nearest: every output value is an input value of the same sample (counts are copied, never blended)
    assert set(out[1].flatten().tolist()) <= set(x[1].flatten().tolist())


def test_crop_boxes_follow_scale_and_ratio() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = sample_resized_crop_boxes(2000, 32, 32, scale=(0.45, 1.0), generator=g)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).float() / 1024
    assert area.min() >= 0.45 - 0.06 and area.max() <= 1.0  # rounding of h, w
    ratio = w.float() / h.float()
    assert ratio.min() >= 0.75 * 0.85 and ratio.max() <= 4 / 3 / 0.85
    assert len(set(map(tuple, boxes.tolist()))) > 100  # independent per sample
    y, _, fl = random_resized_crop_nearest(
        torch.randn(64, 2, 32, 32), (16, 16), hflip_p=0.5, generator=g, return_params=True
    )
    assert y.shape == (64, 2, 16, 16) and 10 < int(fl.sum()) < 54


# ----------------------------------------------------------------------------------------------------- masking
@pytest.mark.parametrize("form", ["paper", "code"])
@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_conditional_masking_keeps_configured_number(form: str, ratio: float) -> None:
    m = tiny_ecdp(mask_ratio=ratio, mask_form=form)
    x = event_images(8, empty_half=True)
    keep = m.keep_index(x, torch.Generator().manual_seed(1))
    n = (IMG // PATCH) ** 2
    k = int(n * (1 - ratio))
    assert keep.shape == (8, k) and m.num_keep(IMG, IMG) == k
    assert all(len(set(row)) == k for row in keep.tolist())
    # patches on the empty left half (columns 0, 1 of the 4x4 grid) are only kept when too few non-empty ones exist
    col = keep % (IMG // PATCH)
    if k <= n // 2:
        assert (col >= 2).all()


def test_vit_receives_only_kept_tokens() -> None:
    m = tiny_ecdp(mask_ratio=0.5)
    seen: dict[str, tuple] = {}
    m.backbone.blocks[0].register_forward_pre_hook(lambda mod, a: seen.__setitem__("online", tuple(a[0].shape)))
    m.momentum_backbone.blocks[0].register_forward_pre_hook(lambda mod, a: seen.__setitem__("ema", tuple(a[0].shape)))
    m.forward_pretrain(tiny_batch(5), torch.Generator().manual_seed(0))
    k = m.num_keep(IMG, IMG)
    assert k == 8
    assert seen["online"] == (5, 2 + k, 64) and seen["ema"] == (5, 2 + k, 64)


# ----------------------------------------------------------------------------------------------------- losses
def test_loss_terms_match_hand_computation() -> None:
    """L_evt = InfoNCE(ζ(q), ζ(k)) on the method's own intermediates (ζ wired, no re-normalisation, ×2τ)."""
    m = tiny_ecdp()
    out = m.forward_pretrain(tiny_batch(6), torch.Generator().manual_seed(0))
    terms = m.loss_terms(out["q_evt"], out["k_evt"], out["q_img"], out["y"])

    y_hat = out["y"] / out["y"].norm(dim=1, keepdim=True)

    def zeta(v: torch.Tensor) -> torch.Tensor:
        v_hat = v / v.norm(dim=1, keepdim=True)
        return (v_hat * y_hat).sum(1, keepdim=True) * y_hat

    logits = zeta(out["q_evt"]) @ zeta(out["k_evt"]).t() / 0.2
    l_evt = -torch.log_softmax(logits, dim=1).diagonal().mean() * 2 * 0.2
    torch.testing.assert_close(terms["loss_evt"], l_evt)

    qn = F.normalize(out["q_img"], dim=1)
    l_rgb = -torch.log_softmax(qn @ y_hat.t() / 0.1, dim=1).diagonal().mean() * 2 * 0.1
    torch.testing.assert_close(terms["loss_rgb"], l_rgb)
    torch.testing.assert_close(terms["loss_kl"], distribution_alignment_loss(out["q_img"], out["y"], 0.1, "code"))
    torch.testing.assert_close(terms["loss"], l_evt + l_rgb + 2.0 * terms["loss_kl"])
    # the k side uses the momentum encoder and the event projector copy
    assert out["k_evt"].requires_grad is False and out["features"].shape == (6, 128)


def test_each_loss_is_minimised_by_the_right_configuration() -> None:
    m = tiny_ecdp()
    g = torch.Generator().manual_seed(3)
    y = torch.randn(16, 16, generator=g)
    noise = 0.1 * torch.randn(16, 16, generator=g)
    perm = torch.roll(torch.arange(16), 1)
    rand = torch.randn(16, 16, generator=g)
    aligned = m.loss_terms(y + noise, y + noise, y + noise, y)
    shuffled = m.loss_terms(y + noise, (y + noise)[perm], (y + noise)[perm], y)
    assert aligned["loss_rgb"] < shuffled["loss_rgb"]  # event embedding = its paired RGB embedding
    assert aligned["loss_evt"] < shuffled["loss_evt"]  # query and key of the same sample agree
    assert m.loss_terms(y, y, y, y)["loss_kl"] < m.loss_terms(y, y, rand, y)["loss_kl"]  # same similarity structure
    paper = tiny_ecdp(kl_form="paper")
    assert paper.loss_terms(y, y, y, y)["loss_kl"].abs() < 1e-6  # KL(s^q || s^y) = 0 when the embeddings agree


@pytest.mark.parametrize(
    ("key_grad", "lambdas", "h_image_trained"),
    [
        ("global", (0.0, 1.0, 0.0), True),  # paper intent: L_RGB trains h_I
        ("none", (0.0, 1.0, 0.0), False),  # official code: h_I gets nothing from L_RGB ...
        ("none", (0.0, 0.0, 2.0), True),  # ... only from the Sinkhorn target of L_kl
        ("global", (1.0, 0.0, 0.0), False),  # ζ detaches y: L_evt never trains h_I
    ],
)
def test_gradient_paths(key_grad: str, lambdas: tuple[float, float, float], h_image_trained: bool) -> None:
    m = tiny_ecdp(rgb_key_grad=key_grad, lambda_evt=lambdas[0], lambda_rgb=lambdas[1], lambda_kl=lambdas[2])
    m.ssl_step(tiny_batch(6), 1).loss.backward()
    grad = m.h_image.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == h_image_trained
    for mod in (m.momentum_backbone, m.momentum_h_evt, m.momentum_h_img, m.image_encoder):
        assert all(not p.requires_grad and p.grad is None for p in mod.parameters())
    assert m.backbone.special_tokens.grad is not None


def test_momentum_encoder_and_image_encoder_are_not_optimised() -> None:
    m = tiny_ecdp(
        image_encoder=FrozenImageEncoder(nn.Sequential(nn.Conv2d(3, EMB, 3), nn.AdaptiveAvgPool2d(1)), image_size=16)
    )
    groups = param_groups(m, m.learnable_params(), m.optim, exclude=m._ema_targets())
    in_opt = {id(p) for g in groups for p in g["params"]}
    frozen = [*m.momentum_backbone.parameters(), *m.momentum_h_evt.parameters(), *m.momentum_h_img.parameters()]
    frozen += list(m.image_encoder.parameters())
    assert frozen and not any(id(p) in in_opt for p in frozen)
    online = [m.backbone, m.h_evt, m.h_img, m.pred_evt, m.pred_img, m.h_image]
    assert all(id(p) in in_opt for mod in online for p in mod.parameters())
    pairs = m.momentum_pairs()
    assert [(a, b) for a, b in pairs] == [
        (m.backbone, m.momentum_backbone),
        (m.h_evt, m.momentum_h_evt),
        (m.h_img, m.momentum_h_img),
    ]
    assert not any(mod in (m.pred_evt, m.pred_img) for pair in pairs for mod in pair)


def test_momentum_update_follows_the_schedule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    import evssl.methods.base as base

    seen: list[float] = []
    real = base.ema_update_

    def recording(online: nn.Module, target: nn.Module, momentum: float) -> None:
        before = [p.detach().clone() for p in target.parameters()]
        real(online, target, momentum)
        if target is m.momentum_backbone:
            seen.append(momentum)
            for b, p, o in zip(before, target.parameters(), online.parameters()):
                torch.testing.assert_close(p, momentum * b + (1 - momentum) * o.detach())

    monkeypatch.setattr(base, "ema_update_", recording)
    m = tiny_ecdp(warmup_epochs=0, lr=1e-2, lr_batch_scale=False, log_views_every_n_epochs=0)
    batches = [tiny_batch(4, seed=s) for s in range(3)]
    loader = DataLoader(batches, batch_size=None)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(m, train_dataloaders=loader)
    assert seen == pytest.approx([cosine_schedule(s, 3, 0.99, 1.0) for s in range(3)])
    assert not torch.equal(m.backbone.special_tokens, m.momentum_backbone.special_tokens)


# ----------------------------------------------------------------------------------------------------- transfer
def test_probe_features_are_concatenated_special_tokens() -> None:
    m = tiny_ecdp()
    m.eval()
    x = event_images(3)
    f = m.probe_features({"input": x})
    special = m.backbone.forward_features(x)["special"]
    assert f.shape == (3, 128) and m.backbone_for_export() is m.backbone
    torch.testing.assert_close(f, torch.cat([special[:, 0], special[:, 1]], dim=1))


def test_masked_view_picture() -> None:
    pic = masked_view_picture(event_images(1)[0], torch.tensor([0, 5, 10, 15]), PATCH)
    assert pic.shape == (128, 128, 3) and pic.dtype == np.uint8


# ----------------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def ecdp_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evssl.events.io.store import StoreWriter

    path = tmp_path_factory.mktemp("ecdp") / "pairs.h5"
    rng = np.random.default_rng(0)
    with StoreWriter(path) as w:
        w.set_classes(["a", "b"])
        for i in range(4):
            n = 3000
            t = np.sort(rng.integers(0, 100_000, n))
            ev = Events.from_arrays(rng.integers(0, 64, n), rng.integers(0, 48, n), t, rng.choice([-1, 1], n), 48, 64)
            frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
            w.add(
                ev,
                name=f"r{i}",
                label=i % 2,
                split="train",
                frames=frames,
                frame_t=np.array([0, 50_000, 100_000]),
                embedding=np.full(EMB, i, np.float32),
            )
    return path


def test_ecdp_views_train_and_eval(ecdp_store: Path) -> None:
    from evssl.events.io.store import EventStore

    store = EventStore(ecdp_store)
    s = ECDPViews(num_events=1000, resolution=(32, 32), rgb="frame", frame_size=(24, 32))
    tr = s(store, 1, np.random.default_rng(0), True)
    assert set(tr) == {"events", "window", "label", "index", "frame"}
    assert (tr["events"].height, tr["events"].width) == (32, 32) and tr["label"] == 1
    assert tr["frame"].shape == (3, 24, 32) and tr["frame"].dtype == torch.uint8
    assert len(tr["events"]) >= 900  # 1000 events, minus the shifted-out ones, plus correlated noise
    ev1 = s(store, 1, np.random.default_rng(5), False)
    ev2 = s(store, 1, np.random.default_rng(6), False)
    assert set(ev1) == {"events", "window", "label", "index"} and len(ev1["events"]) == 1000
    assert ev1["window"] == ev2["window"]  # deterministic, centred evaluation window
    assert s.shift_range(224, 224) == 20 and s.shift_range(32, 32) == 3
    emb = ECDPViews(num_events=500, resolution=(32, 32), rgb="embedding")(store, 2, np.random.default_rng(0), True)
    torch.testing.assert_close(emb["embedding"], torch.full((EMB,), 2.0))
    store.close()


def test_transfer_sampler_crops_training_samples_only(ecdp_store: Path) -> None:
    """train_representation (ECDP's crop + flip for linear probe / fine-tuning) never touches evaluation batches."""
    from evssl.data import EventDataModule
    from evssl.events.representations import EventImage, event_image

    sampler = ECDPViews(
        num_events=800,
        resolution=(32, 32),
        rgb="none",
        train_representation=RandomResizedCropNearest(EventImage(), crop_min=0.5),
    )
    dm = EventDataModule(
        source=str(ecdp_store),
        sampler=sampler,
        representation=EventImage(),
        batch_size=4,
        num_workers=0,
        train_split="train",
        val_split="train",
        test_split=None,
    )
    dm.setup("fit")
    tb = dm._transform(True)(next(iter(dm.train_dataloader())))
    vb = dm._transform(False)(next(iter(dm.val_dataloader())))
    assert "train_events" in tb and "events" not in tb and "frame" not in tb and tb["input"].shape == (4, 2, 32, 32)
    assert "events" in vb and "train_events" not in vb
    torch.testing.assert_close(vb["input"], event_image(vb["events"]))


def test_fit_on_store_batches(ecdp_store: Path, tmp_path: Path) -> None:
    """One real DataModule → method step with precomputed embeddings (no image encoder)."""
    import lightning.pytorch as pl

    from evssl.data import EventDataModule
    from evssl.events.representations import EventImage

    dm = EventDataModule(
        source=str(ecdp_store),
        sampler=ECDPViews(num_events=800, resolution=(32, 32), rgb="embedding"),
        representation=EventImage(),
        batch_size=4,
        num_workers=0,
        val_split=None,
        test_split=None,
        train_split="train",
    )
    m = tiny_ecdp(image_encoder=None, probe_classes=2, warmup_epochs=0, log_views_every_n_epochs=0)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(m, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


# ----------------------------------------------------------------------------------------------------- encoders
def test_random_feature_encoder_is_fixed_and_frozen() -> None:
    a, b = RandomFeatureEncoder(32, width=4, seed=7), RandomFeatureEncoder(32, width=4, seed=7)
    torch.manual_seed(123)
    c = RandomFeatureEncoder(32, width=4, seed=8)
    frames = torch.randint(0, 256, (2, 3, 24, 32), dtype=torch.uint8)
    torch.testing.assert_close(a(frames), b(frames))
    torch.testing.assert_close(a(frames), a(frames.float() / 255))
    assert not torch.allclose(a(frames), c(frames))
    assert not list(a.parameters()) and not a.state_dict()
    a.train()
    assert not a.training


def test_frozen_image_encoder_loads_local_weights(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": {f"visual.{k}": v for k, v in net.state_dict().items()}}, path)
    fresh = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc = FrozenImageEncoder(fresh, weights=str(path), weights_prefix="visual.", image_size=16)
    assert enc.embed_dim == 8 and not any(p.requires_grad for p in enc.parameters())
    torch.testing.assert_close(enc.backbone[0].weight, net[0].weight)
    with pytest.raises(FileNotFoundError):
        as_frozen_image_encoder(nn.Linear(2, 2), str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------------------------------------- CLI
def test_smoke_config_fast_dev_run(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "evssl.cli",
        "fit",
        "--config",
        str(REPO / "experiments/smoke/ecdp.yaml"),
        "--trainer.fast_dev_run",
        "1",
    ]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


# ------------------------------------------------------------------------------------------------- MoCo-v3 init
def _fake_mocov3_checkpoint(path: Path, dim: int = 64) -> dict[str, torch.Tensor]:
    """A checkpoint laid out as MoCo v3's main_moco.py saves it (timm ViT names, 3-channel patch embedding)."""
    from evssl.nn.heads import mocov3_predictor, mocov3_projector

    torch.manual_seed(1)
    enc = VisionTransformer(img_size=IMG, patch_size=PATCH, in_chans=3, embed_dim=dim, depth=2, num_heads=4)
    state = {f"module.base_encoder.{k}": v.clone() for k, v in enc.state_dict().items()}
    state["module.base_encoder.pos_embed"] = torch.randn(1, 1 + (IMG // PATCH) ** 2, dim)
    for k, v in mocov3_projector(dim, 32, 16).state_dict().items():
        state[f"module.base_encoder.head.{k.removeprefix('layers.')}"] = v.float().clone() + torch.rand(())
    for k, v in mocov3_predictor(16, 32, 16).state_dict().items():
        state[f"module.predictor.{k.removeprefix('layers.')}"] = v.float().clone() + torch.rand(())
    state.update({k.replace("base_encoder", "momentum_encoder"): torch.zeros_like(v) for k, v in list(state.items())})
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": state}, path)
    return {k.removeprefix("module."): v for k, v in state.items()}


@pytest.mark.parametrize("pos_embed", ["sincos", "learn"])
def test_mocov3_init_loads_blocks_tokens_heads_and_predictors_as_ecdp_does(tmp_path: Path, pos_embed: str) -> None:
    src = _fake_mocov3_checkpoint(tmp_path / "moco.pth.tar")
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=IMG,
        patch_size=PATCH,
        in_chans=2,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_special_tokens=2,
        class_token=False,
        global_pool="special",
        pos_embed=pos_embed,
    )
    patch0 = vit.patch_embed.proj.weight.clone()
    enc = RandomFeatureEncoder(embed_dim=EMB, width=4, grid=2)
    ckpt = str(tmp_path / "moco.pth.tar")
    heads = {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32}
    model = ECDP(vit, enc, image_embed_dim=EMB, init_checkpoint=ckpt, **heads)
    own = model.state_dict()
    for k in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "norm.weight"):
        torch.testing.assert_close(own[f"backbone.{k}"], src[f"base_encoder.{k}"])
        torch.testing.assert_close(own[f"momentum_backbone.{k}"], src[f"base_encoder.{k}"])  # EMA starts as a copy
    for t in range(2):  # the cls token duplicated into both special tokens
        torch.testing.assert_close(own["backbone.special_tokens"][0, t], src["base_encoder.cls_token"][0, 0])
    torch.testing.assert_close(model.backbone.patch_embed.proj.weight, patch0)  # 3 -> 2 channels: not loaded
    assert any(s.startswith("base_encoder.patch_embed.proj.weight (shape") for s in model.init_report["skipped"])
    for head in ("h_evt", "h_img", "momentum_h_evt"):
        for idx in ("0.weight", "1.bias", "6.weight", "7.running_var"):
            torch.testing.assert_close(own[f"{head}.layers.{idx}"], src[f"base_encoder.head.{idx}"])
    for pred in ("pred_evt", "pred_img"):
        torch.testing.assert_close(own[f"{pred}.layers.3.weight"], src["predictor.3.weight"])
    if pos_embed == "learn":  # cls position dropped, patch positions loaded
        torch.testing.assert_close(own["backbone.pos_embed"], src["base_encoder.pos_embed"][:, 1:])
    else:
        assert any(s.startswith("base_encoder.pos_embed") for s in model.init_report["skipped"])
    assert not any(k.startswith("momentum_encoder") for k in model.init_report["loaded"])


def test_mocov3_init_rejects_a_file_without_vit_blocks(tmp_path: Path) -> None:
    torch.save({"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(1)}}, tmp_path / "r50.pth.tar")
    with pytest.raises(ValueError, match=r"r50\.pth\.tar: not a MoCo-v3 ViT checkpoint"):
        tiny_ecdp(init_checkpoint=str(tmp_path / "r50.pth.tar"))
