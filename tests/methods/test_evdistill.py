"""EvDistill: frozen teacher through fit, crafted pairs, unpaired / paired sampling, export, metrics, smoke chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer

from evssl.data import EventDataModule
from evssl.data.views.evdistill import CrossModalPairs, derangement_partners
from evssl.events.io.store import EventStore
from evssl.events.representations import Histogram
from evssl.methods.evdistill import (
    PRESETS,
    BMRConfig,
    EvDistill,
    EvDistillOptim,
    EvDistillTeacher,
    HeadConfig,
    KDConfig,
    LossConfig,
)
from evssl.nn.backbones import BasicBlock, ResNet
from evssl.tasks import SemanticSegmentation
from tests.helpers import cli_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")
HEAD = HeadConfig(aspp_channels=8, aspp_rates=(1, 2, 3), decoder_channels=8, low_level_channels=4)


def enc(in_chans: int) -> ResNet:
    return ResNet(BasicBlock, (1, 1, 1, 1), in_chans=in_chans, width=4, small_input=True, output_stride=4)


def method(**kw) -> EvDistill:
    kw.setdefault("bmr", BMRConfig(width=4, depth=1))
    kw.setdefault("kd", KDConfig(affinity_nodes=32))
    kw.setdefault("preset", "small")
    return EvDistill(enc(2), enc(3), num_semantic_classes=11, head=HEAD, **kw)


def datamodule(pairing: str = "unpaired", use_event_labels: bool = False, crop=(48, 48), hflip=0.5, **kw):
    sampler = CrossModalPairs(pairing=pairing, use_event_labels=use_event_labels, crop_size=crop, hflip_p=hflip, **kw)
    return EventDataModule(sampler=sampler, eval_sampler=CrossModalPairs(), representation=Histogram(normalize=True),
                           batch_size=8, num_workers=0)  # fmt: skip


# ------------------------------------------------------------------------------------------- frozen teacher
class _TeacherWatch(Callback):
    def __init__(self) -> None:
        self.checked = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        t = pl_module.teacher
        assert not t.training and not any(m.training for m in t.modules())
        assert all(not p.requires_grad and p.grad is None for p in t.parameters())
        # gradients did reach the student and both generators
        assert pl_module.student.aspp.project[0].weight.grad is not None
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pl_module.e2i.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pl_module.i2e.parameters())
        self.checked += 1


def test_teacher_frozen_through_fit_and_excluded_from_optimizer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = method()
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    watch = _TeacherWatch()
    trainer = Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
        callbacks=[watch], enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="random teacher"):
        trainer.fit(m, datamodule=datamodule())
    assert watch.checked == 2
    after = m.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats too: eval mode
    in_opt = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in m.teacher.parameters()}
    assert {id(p) for p in m.student.parameters()} <= in_opt
    assert "val/miou" in trainer.callback_metrics and "val/teacher_miou" in trainer.callback_metrics


def test_kd_through_teacher_switch_routes_the_event_pair_gradient() -> None:
    torch.manual_seed(1)
    batch = next(iter(_loader(datamodule())))
    only_event_kd = KDConfig(pairs=("event",), dist_weight=0, affinity_weight=0, affinity_nodes=32)
    for through, expect in ((True, True), (False, False)):
        m = method(
            kd=only_event_kd,
            bmr=BMRConfig(width=4, depth=1, cycle_weight=0.0, kd_through_teacher=through),
            loss=LossConfig(ce_weight=0.0),
        )
        m.train()
        m.ssl_step(batch, 0).loss.backward()
        got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.e2i.parameters())
        assert got is expect
        assert all(p.grad is None for p in m.teacher.parameters())


def _loader(dm: EventDataModule):
    dm.setup("fit")
    for b in dm.train_dataloader():
        yield dm._transform(True)(b)


def test_crafted_pairs_channels_and_ranges() -> None:
    m = method().eval()
    x_e = torch.rand(2, 2, 48, 64)
    x_a = torch.rand(2, 3, 48, 64)
    xa_hat, xe_hat = m.crafted_pairs(x_e, x_a)
    assert xa_hat.shape == (2, 3, 48, 64) and 0 <= xa_hat.min() and xa_hat.max() <= 1  # the teacher's frames
    assert xe_hat.shape == (2, 2, 48, 64) and 0 <= xe_hat.min() and xe_hat.max() <= 1  # normalised histograms
    off = method(bmr=BMRConfig(enabled=False))
    assert off.e2i is None and off.i2e is None
    xa_hat, xe_hat = off.crafted_pairs(x_e, x_a)
    assert xa_hat.shape == (2, 3, 48, 64) and float(xa_hat.max()) == pytest.approx(1.0)
    torch.testing.assert_close(xe_hat[:, 1], x_a.mean(1))


def test_presets_fill_only_unset_switches() -> None:
    m = method(preset="paper", kd=KDConfig(tau=4.0, affinity_nodes=32))
    assert m.kd.tau == 4.0 and m.kd.affinity_stage == PRESETS["paper"]["affinity_stage"]
    assert m.bmr.kd_through_teacher is True and m.bmr.cycle_weight == 0.0
    official = method(preset="official", kd=KDConfig(affinity_nodes=32, dist_stage="pointwise"))
    assert official.pointwise is not None and official.kd.affinity_stage == "pointwise"
    out = official.ssl_step(next(iter(_loader(datamodule()))), 0)
    assert out.loss.isfinite() and out.logs["kd_affinity_event"] >= 0 and "kd_dist_image" in out.logs
    out.loss.backward()
    assert official.pointwise[0].weight.grad is not None  # the 1x1 projection is trained by the KD terms
    with pytest.raises(ValueError, match="preset"):
        method(preset="nope")


# ------------------------------------------------------------------------------------------------- sampling
def test_unpaired_batches_never_pair_a_window_with_its_own_frame() -> None:
    dm = datamodule(crop=None, hflip=0.0)
    dm.setup("fit")
    seen_frames = []
    store = EventStore(dm.store_path)
    train_ids = set(dm.split_indices("train").tolist())
    for epoch in range(2):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for i, b in enumerate(loader):
            assert (b["index"] != b["frame_index"]).all()
            assert not b["paired"].any()
            assert "semantic" not in b and "label" not in b  # no event label reaches training
            assert set(b["frame_index"].tolist()) <= train_ids
            if epoch == 0:
                seen_frames += b["frame_index"].tolist()
            if i == 0:  # the frame and mask really are the partner's
                j, k = int(b["frame_index"][0]), int(b["index"][0])
                assert int(b["frame_label"][0]) == store.info(j).label
                frames = store.frames(j).transpose(0, 3, 1, 2)
                assert any(np.array_equal(b["frame"][0].numpy(), f) for f in frames)
                assert not any(np.array_equal(b["frame"][0].numpy(), f) for f in store.frames(k).transpose(0, 3, 1, 2))
    assert len(seen_frames) == len(set(seen_frames))  # a permutation: every frame at most once per epoch
    store.close()


def test_derangement_and_resampling() -> None:
    ids = np.arange(10, 30)
    part = derangement_partners(ids, 3)
    assert sorted(part) == sorted(part.values()) == ids.tolist()
    assert all(a != b for a, b in part.items())
    with pytest.raises(ValueError, match=">= 2"):
        derangement_partners(np.array([4]), 0)
    dm = datamodule(resample_each_epoch=True)
    b = next(iter(_loader(dm)))
    assert (b["index"] != b["frame_index"]).all()
    with pytest.raises(ValueError, match="pairing"):
        CrossModalPairs(pairing="sometimes")  # type: ignore[arg-type]


def test_paired_sampling_aligns_frame_events_and_labels() -> None:
    b = next(iter(_loader(datamodule("paired", use_event_labels=True))))
    assert (b["index"] == b["frame_index"]).all() and b["paired"].all()
    assert torch.equal(b["semantic"], b["frame_semantic"])
    assert b["input"].shape[-2:] == b["frame"].shape[-2:] == (48, 48)
    dm = datamodule()
    dm.setup("fit")
    v = next(iter(dm.val_dataloader()))
    assert (v["index"] == v["frame_index"]).all() and "semantic" in v and "label" in v


# --------------------------------------------------------------------------------------- teacher + export
def test_teacher_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(2)
    teacher = EvDistillTeacher(enc(3), num_semantic_classes=11, head=HEAD)
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    m = method(teacher_checkpoint=str(path))
    m.setup("fit")
    for k, v in teacher.teacher.state_dict().items():
        assert torch.equal(m.teacher.state_dict()[k], v)
    assert not m.teacher.training and all(not p.requires_grad for p in m.teacher.parameters())
    with pytest.raises(FileNotFoundError, match="teacher_checkpoint not found"):
        method(teacher_checkpoint=str(tmp_path / "missing.ckpt")).setup("fit")
    torch.save({"state_dict": EvDistillTeacher(enc(3), num_semantic_classes=5, head=HEAD).state_dict()}, path)
    with pytest.raises(ValueError, match="do not fit"):
        method(teacher_checkpoint=str(path)).setup("fit")
    with pytest.raises(ValueError, match="in_chans must be 3"):
        EvDistillTeacher(enc(2))


def test_export_is_the_student_alone_and_loads_into_semantic_segmentation(tmp_path: Path) -> None:
    from evssl.export import export_backbone

    torch.manual_seed(3)
    m = method()
    meta = export_backbone(None, tmp_path / "student.pt", module=m)
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    assert set(state) == set(m.student.backbone.state_dict())
    assert all(torch.equal(state[k], v) for k, v in m.student.backbone.state_dict().items())
    assert state["conv1.weight"].shape[1] == 2  # the event student, not the RGB teacher
    assert meta["num_parameters"] == sum(p.numel() for p in m.student.backbone.parameters())
    seg = SemanticSegmentation(enc(2), num_semantic_classes=11, pretrained=str(tmp_path / "student.pt"),
                               decoder_channels=8)  # fmt: skip
    assert torch.equal(seg.backbone.layer4[0].conv1.weight, m.student.backbone.layer4[0].conv1.weight)


def test_event_labels_and_head_lr_scale_live_in_their_option_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    import evssl.methods.evdistill_teacher as teacher_module

    m = method(loss=LossConfig(use_event_labels=True), optim=EvDistillOptim(head_lr_scale=10.0))
    scales = {g["name"]: g.get("lr_scale", 1.0) for g in m.learnable_params()}
    assert scales["student_head"] == 10.0 and scales["backbone"] == 1.0
    teacher = EvDistillTeacher(enc(3), num_semantic_classes=11, head=HEAD, optim=EvDistillOptim(head_lr_scale=10.0))
    monkeypatch.setattr(teacher_module, "configure_optimization", lambda module, groups, optim: groups)
    scales = {g["name"]: g.get("lr_scale", 1.0) for g in teacher.configure_optimizers()}
    assert scales == {"backbone": 1.0, "head": 10.0}
    paired = next(iter(_loader(datamodule("paired", use_event_labels=True))))
    assert "ce_events" in m.ssl_step(paired, 0).logs
    with pytest.raises(KeyError, match="use_event_labels"):
        m.ssl_step(next(iter(_loader(datamodule()))), 0)


def test_media_tensors_and_picture_rows() -> None:
    from evssl.callbacks.evdistill_media import evdistill_rows
    from evssl.callbacks.method_media import evdistill_media

    m = method().eval()
    dm = datamodule()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    media = evdistill_media(m, dm._transform(False)(batch), num=2)
    assert set(media) == {"events", "e2i", "i2e", "frame", "teacher", "student", "label"}
    assert media["e2i"].shape[:2] == (2, 3) and media["i2e"].shape[:2] == (2, 2) and media["student"].ndim == 3
    rows, captions = evdistill_rows(media, 11)
    assert len(rows) == 2 and rows[0].dtype == np.uint8 and captions[0].endswith("label")


# ------------------------------------------------------------------------------------------------- recognition
def test_recognition_step_and_metrics() -> None:
    m = EvDistill(enc(2), enc(3), task="recognition", num_classes=10, head=HEAD, preset="small",
                  bmr=BMRConfig(width=4, depth=1), kd=KDConfig(dist_stage="aspp", affinity_stage="aspp"))  # fmt: skip
    dm = datamodule(dense_keys=())
    b = next(iter(_loader(dm)))
    out = m.ssl_step(b, 0)
    assert out.loss.isfinite() and {"kd_logit_event", "kd_dist_image", "kd_affinity_event"} <= set(out.logs)
    assert m(b["input"]).shape == (8, 10)


# ------------------------------------------------------------------------------------- console-script chain
def test_teacher_then_student_then_export_through_the_console_script(tmp_path: Path) -> None:
    evssl = [str(Path(sys.executable).with_name("evssl"))]
    if not Path(evssl[0]).exists():
        evssl = [sys.executable, "-m", "evssl.cli"]
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]

    def run(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([*evssl, *args], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
        return p

    run("fit", "--config", str(REPO / "experiments/smoke/evdistill_teacher_seg.yaml"), *quick)
    (teacher_ckpt,) = tmp_path.glob("runs/smoke/evdistill_teacher_seg/version_0/checkpoints/*.ckpt")
    run("fit", "--config", str(REPO / "experiments/smoke/evdistill_seg.yaml"), *quick,
        "--model.init_args.teacher_checkpoint", str(teacher_ckpt))  # fmt: skip
    (ckpt,) = tmp_path.glob("runs/smoke/evdistill_seg/version_0/checkpoints/*.ckpt")
    run("export", str(ckpt), "--out", str(tmp_path / "student.pt"))
    from evssl.export import load_exported_backbone

    student = load_exported_backbone(tmp_path / "student.pt")
    assert student.in_chans == 2
    teacher_state = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for k, v in teacher_state.items():  # the distillation run kept the loaded teacher unchanged
        assert torch.equal(state[k], v), k


@pytest.mark.parametrize("config", sorted((REPO / "experiments" / "evdistill").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_and_synthetic_configs_parse(config: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    from evssl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"].rsplit(".", 1)[-1] in ("EvDistill", "EvDistillTeacher")


def test_reconstruction_and_mutual_terms_only_where_frames_are_paired() -> None:
    torch.manual_seed(5)
    m = method(kd=KDConfig(affinity_nodes=32, mutual_weight=1.0), bmr=BMRConfig(width=4, depth=1, ssim_weight=0.5))
    unpaired = next(iter(_loader(datamodule())))
    logs = m.ssl_step(unpaired, 0).logs
    assert not {"rec_l1", "rec_ssim", "mutual"} & set(logs) and "cycle_l1" in logs
    paired = next(iter(_loader(datamodule("paired"))))
    logs = m.ssl_step(paired, 0).logs
    assert {"rec_l1", "rec_ssim", "mutual"} <= set(logs)
    x_a = paired["frame"].float() / 255
    xa_hat, xe_hat = m.crafted_pairs(paired["input"].float(), x_a)
    expected = (xa_hat - x_a).abs().mean() + (xe_hat - paired["input"]).abs().mean()
    assert logs["rec_l1"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_distribution_adapter_when_channels_differ() -> None:
    wide_student = ResNet(BasicBlock, (1, 1, 1, 1), in_chans=2, width=8, small_input=True, output_stride=4)
    m = EvDistill(wide_student, enc(3), head=HEAD, preset="small", bmr=BMRConfig(width=4, depth=1),
                  kd=KDConfig(dist_stage="layer4", affinity_stage="layer4", affinity_nodes=16))  # fmt: skip
    assert isinstance(m.dist_adapter, torch.nn.Conv2d)
    assert (m.dist_adapter.in_channels, m.dist_adapter.out_channels) == (64, 32)
    assert m.teacher.backbone.bn1.num_batches_tracked.item() == 0  # probing did not touch BN statistics
    out = m.ssl_step(next(iter(_loader(datamodule()))), 0)
    assert out.loss.isfinite() and "kd_dist_event" in out.logs
    names = {g["name"] for g in m.learnable_params()}
    assert "kd_projections" in names and "student_head" in names and "bmr" in names
