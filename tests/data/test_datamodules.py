"""EventDataModule: properties before setup, splits, representation in workers vs on the device, Lightning epochs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from data_store import H, W, write_test_store

from evssl.data.datamodules import EventDataModule
from evssl.data.samplers import ClassificationWindow, DenseWindow, SequenceWindows, WindowSampler
from evssl.events.representations import Histogram, VoxelGrid


def _dm(store_path, **kw) -> EventDataModule:
    kw.setdefault("batch_size", 2)
    kw.setdefault("num_workers", 0)
    return EventDataModule(source=str(store_path), **kw)


def test_properties_before_setup(store_path):
    dm = _dm(store_path, representation=VoxelGrid(3))
    assert dm.num_classes == 3
    assert dm.in_channels == 3
    assert dm.sensor_size == (H, W) == dm.store_sensor_size
    assert EventDataModule(source=str(store_path)).in_channels == 5  # default VoxelGrid(5)

    assert _dm(store_path, sampler=DenseWindow(crop_size=(16, 20))).sensor_size == (16, 20)
    assert _dm(store_path, sampler=ClassificationWindow(resolution=(12, 16))).sensor_size == (12, 16)


def test_jsonargparse_builds_the_datamodule(store_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(EventDataModule, "data")
    cfg = parser.parse_object(
        {
            "data": {
                "source": str(store_path),
                "sampler": {
                    "class_path": "evssl.data.DenseWindow",
                    "init_args": {
                        "crop_size": [16, 20],
                        "augment": {"class_path": "evssl.events.augment.PolarityFlip"},
                    },
                },
                "representation": {"class_path": "evssl.events.representations.Histogram"},
            }
        }
    )
    dm = parser.instantiate(cfg).data
    assert isinstance(dm.sampler, DenseWindow) and dm.sampler.crop_size == (16, 20)
    assert dm.in_channels == 2 and dm.sensor_size == (16, 20) and dm.num_classes == 3


def test_dense_batches(store_path):
    dm = _dm(store_path, sampler=DenseWindow(crop_size=(16, 20)), representation_on="worker", num_workers=1)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["input"].shape == (2, 5, 16, 20)
    assert b["semantic"].shape == (2, 16, 20) and b["semantic"].dtype == torch.int64
    assert b["flow"].shape == (2, 2, 16, 20) and b["depth"].shape == (2, 16, 20)
    assert b["frame"].shape == (2, 3, 16, 20) and b["frame"].dtype == torch.uint8


def test_missing_store_and_bad_mode(tmp_path):
    with pytest.raises(FileNotFoundError):
        EventDataModule(source=str(tmp_path / "nope.h5")).num_classes
    with pytest.raises(ValueError):
        EventDataModule(representation_on="gpu")


def test_splits(store_path):
    dm = _dm(store_path)
    assert dm.split_indices("train").tolist() == [0, 1, 2, 5]
    assert dm.split_indices("val").tolist() == [3]
    assert dm.split_indices("sequence").tolist() == [7, 8]
    with pytest.raises(ValueError, match="not in store"):
        dm.split_indices("nope")
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"}
    assert dm.datasets["train"].train and not dm.datasets["val"].train
    assert len(dm.train_dataloader()) == 2  # 4 items, batch 2
    assert len(dm.val_dataloader()) == 1
    assert len(dm.predict_dataloader()) == 1


def test_drop_last_only_when_a_full_batch_remains(store_path):
    for batch_size, batches in ((3, 1), (8, 1)):
        dm = _dm(store_path, batch_size=batch_size)
        dm.setup("fit")
        assert len(dm.train_dataloader()) == batches
    dm = _dm(store_path, batch_size=3, drop_last=False)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 2


class _FakeTrainer:
    """What the data module reads from a trainer: rank, world size, the fit loop's epoch counter."""

    def __init__(self, rank: int, world: int, epoch: int = 0) -> None:
        self.global_rank, self.world_size, self.training = rank, world, True
        self.fit_loop = SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=epoch)))


def test_each_rank_reads_its_own_shard(store_path):
    seen = []
    for rank in range(2):
        dm = _dm(store_path, batch_size=1)
        dm.trainer = _FakeTrainer(rank, 2, epoch=3)
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert loader.sampler.epoch == 3
        seen.append([int(i) for b in loader for i in b["index"]])
    assert len(seen[0]) == len(seen[1]) == 2
    assert sorted(seen[0] + seen[1]) == [0, 1, 2, 5]


def test_fraction_split_without_split_column(tmp_path):
    path = write_test_store(tmp_path / "nosplit.h5", with_splits=False)
    dm = _dm(path, split_fractions=(0.6, 0.2, 0.2))
    parts = [dm.split_indices(s).tolist() for s in ("train", "val", "test")]
    assert sorted(i for p in parts for i in p) == list(range(9))
    assert [len(p) for p in parts] == [5, 2, 2]
    again = _dm(path, split_fractions=(0.6, 0.2, 0.2))
    assert parts == [again.split_indices(s).tolist() for s in ("train", "val", "test")]


def test_representation_on_worker_equals_device(store_path):
    """The same tensors whether the representation runs in the workers or after the batch transfer."""
    dev = _dm(store_path, representation=VoxelGrid(4), representation_on="device", num_workers=0)
    wrk = _dm(store_path, representation=VoxelGrid(4), representation_on="worker", num_workers=2)
    for dm in (dev, wrk):
        dm.setup("fit")
    a = [dev.on_after_batch_transfer(b, 0) for b in dev.train_dataloader()]
    b = list(wrk.train_dataloader())
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x["input"].shape == (2, 4, H, W) and x["input"].dtype == torch.float32
        assert torch.equal(x["input"], y["input"])
        assert torch.equal(x["label"], y["label"])
        assert x["input"].abs().sum() > 0
    # worker-mode batches are left alone on the device
    assert wrk.on_after_batch_transfer(b[0], 0) is b[0]


class TwoViews(WindowSampler):
    """A multi-view sampler (like BraVe's): two event keys with their own representations."""

    def __init__(self) -> None:
        self.inner = ClassificationWindow(duration_us=20_000)
        self.representations = {"narrow_events": Histogram(), "broad_events": VoxelGrid(3)}

    def __call__(self, store, index, rng, train, segment=(0, 1)) -> dict[str, Any]:
        s = self.inner(store, index, rng, train)
        broad = ClassificationWindow(duration_us=100_000)(store, index, rng, train)
        return {
            "narrow_events": s["events"],
            "narrow_events_window": s["window"],
            "broad_events": broad["events"],
            "broad_events_window": broad["window"],
            "label": s["label"],
        }

    def representation_keys(self) -> dict[str, str]:
        return {"narrow_events": "narrow", "broad_events": "broad"}


def test_multi_view_representations(store_path):
    dm = _dm(store_path, sampler=TwoViews(), eval_sampler=ClassificationWindow(), representation=VoxelGrid(5))
    dm.setup("fit")
    batch = dm._transform(train=True)(next(iter(dm.train_dataloader())))
    assert batch["narrow"].shape == (2, 2, H, W) and batch["broad"].shape == (2, 3, H, W)
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)  # no trainer: eval mapping
    assert val["input"].shape == (1, 5, H, W)


def test_sequence_datamodule(store_path):
    sampler = SequenceWindows(num_windows=2, duration_us=50_000, stride_us=100_000)
    dm = _dm(
        store_path,
        sampler=sampler,
        representation=Histogram(),
        train_split="sequence",
        val_split=None,
        test_split=None,
        windows_per_recording=3,
    )
    dm.setup("fit")
    assert dm.val_dataloader() == []
    batches = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    assert len(batches) == 3  # 2 recordings x 3 windows, batch 2
    b = batches[0]
    assert b["input_0"].shape == (2, 2, H, W) and b["input_1"].shape == (2, 2, H, W)
    assert b["frames"].shape == (2, 2, 3, H, W) and b["poses"].shape == (2, 2, 4, 4)
    assert b["intrinsics"].shape == (2, 3, 3)


def test_synthetic_source(monkeypatch, tmp_path):
    from evssl.events import simulate

    monkeypatch.setattr(simulate, "make_synthetic_store", lambda path, **kw: write_test_store(Path(path)))
    dm = EventDataModule(source="synthetic", cache_dir=str(tmp_path), num_workers=0)
    assert dm.num_classes == 3 and dm.sensor_size == (H, W)
    assert dm.store_path.parent == tmp_path


class Recorder(pl.LightningModule):
    """Records (epoch, index, window start) of every training sample it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int, int]] = []

    def training_step(self, batch, batch_idx):
        assert batch["input"].shape[1:] == (2, H, W)
        for i, t in zip(batch["index"].tolist(), batch["events"].t_start.tolist()):
            self.seen.append((self.current_epoch, i, t))
        return (self.w * batch["input"].mean()).sum() + self.w.square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm, ckpt_path=None, **kw) -> Recorder:
    model = Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kw,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model


def test_lightning_keeps_sampler_sets_epoch_and_resumes(store_path, tmp_path):
    def make():
        return _dm(store_path, representation=Histogram(), num_workers=2, persistent_workers=True)

    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    seen = _fit(make(), callbacks=[ckpt]).seen
    e0 = [s for s in seen if s[0] == 0]
    e1 = [s for s in seen if s[0] == 1]
    assert len(e0) == len(e1) == 4  # 4 train items, batch 2
    assert [s[1:] for s in e0] != [s[1:] for s in e1]  # a new epoch: new order and windows
    # resuming after epoch 0 reproduces epoch 1 exactly (workers prefetch before Lightning's set_epoch on resume)
    resumed = _fit(make(), ckpt_path=str(tmp_path / "epoch=0.ckpt"), enable_checkpointing=False)
    assert resumed.seen == e1


class _ShardWriter(pl.Callback):
    """Writes the recording indices each rank trained on (ddp_spawn processes cannot return them)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.out / f"rank{trainer.global_rank}.txt", "a") as fh:
            fh.write(f"{trainer.current_epoch} {' '.join(map(str, batch['index'].tolist()))}\n")


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_get_disjoint_shards(store_path, tmp_path):
    dm = _dm(store_path, batch_size=1, representation=Histogram())
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        callbacks=[_ShardWriter(tmp_path)],
    )
    trainer.fit(Recorder(), datamodule=dm)
    per_rank = [[line.split() for line in (tmp_path / f"rank{r}.txt").read_text().splitlines()] for r in range(2)]
    for epoch in ("0", "1"):
        got = [int(i) for rows in per_rank for e, *idx in rows if e == epoch for i in idx]
        assert sorted(got) == [0, 1, 2, 5]
