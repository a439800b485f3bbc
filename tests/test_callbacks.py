"""Media helpers (red = positive, blue = negative), tolerant image logging, and the W&B-aware config callback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from evssl.callbacks.config import EvsslSaveConfigCallback, run_log_dir
from evssl.callbacks.media import EventImageLogger, events_to_rgb, log_images, signed_to_rgb, tensor_to_rgb
from evssl.events.batch import EventBatch
from evssl.events.schema import Events


def test_signed_colours() -> None:
    rgb = signed_to_rgb(np.array([[1.0, -1.0, 0.0]]))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert tuple(rgb[0, 0]) == (255, 0, 0)  # positive: red
    assert tuple(rgb[0, 1]) == (0, 0, 255)  # negative: blue
    assert tuple(rgb[0, 2]) == (255, 255, 255)  # nothing: white
    # ON/OFF channels: auto mode for two non-negative channels
    onoff = tensor_to_rgb(torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]]))
    assert tuple(onoff[0, 0]) == (255, 0, 0) and tuple(onoff[0, 1]) == (0, 0, 255)
    # voxel grid: the signed sum over bins
    vox = tensor_to_rgb(torch.tensor([[[1.0, -1.0]], [[0.5, -0.5]], [[0.0, 0.0]]]))
    assert tuple(vox[0, 0]) == (255, 0, 0) and tuple(vox[0, 1]) == (0, 0, 255)
    ev = events_to_rgb(np.array([0, 1]), np.array([0, 0]), np.array([1, -1]), 1, 3)
    assert tuple(ev[0, 0]) == (255, 0, 0) and tuple(ev[0, 1]) == (0, 0, 255) and tuple(ev[0, 2]) == (255, 255, 255)


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def log_image(self, key: str, images: list, step: int | None = None, **kw) -> None:
        if self.fail:
            raise RuntimeError("offline")
        self.calls.append((key, images, step, kw))


def test_log_images_is_tolerant() -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    fake = SimpleNamespace(is_global_zero=True, global_step=7, loggers=[])
    assert not log_images(None, "k", [img])
    assert not log_images(fake, "k", [img])  # no logger: nothing, no error
    rec = _Recorder()
    fake.loggers = [rec, object()]  # a logger without image support is skipped
    assert log_images(fake, "k", [img, torch.ones(3, 4, 5)], captions=["a", "b"])
    key, images, step, kw = rec.calls[0]
    assert key == "k" and step == 7 and kw == {"caption": ["a", "b"]}
    assert images[1].shape == (4, 5, 3) and images[1].dtype == np.uint8 and images[1].max() == 255
    fake.loggers = [_Recorder(fail=True)]
    with pytest.warns(UserWarning, match="image logging"):
        assert not log_images(fake, "k", [img])
    fake.is_global_zero = False
    assert not log_images(SimpleNamespace(is_global_zero=False, loggers=[rec]), "k", [img])


def test_event_image_logger_renders_events_and_input() -> None:
    ev = Events.from_arrays(
        x=np.array([1, 2, 3]), y=np.array([0, 1, 2]), t=np.array([0, 5, 9]), p=np.array([1, -1, 1]), height=4, width=6
    )
    batch = {
        "events": EventBatch.from_events([ev, ev]),
        "input": torch.randn(2, 5, 4, 6),
        "label": torch.tensor([3, 1]),
    }
    images, captions = EventImageLogger(num_samples=4, min_height=0).render(batch)
    assert len(images) == 2 and captions == ["label 3", "label 1"]
    assert images[0].shape == (4, 6 + 2 + 6, 3) and images[0].dtype == np.uint8
    assert tuple(images[0][0, 1]) == (255, 0, 0) and tuple(images[0][1, 2]) == (0, 0, 255)  # ON red, OFF blue
    big, _ = EventImageLogger(num_samples=1, min_height=10).render(batch)
    assert big[0].shape == (12, 3 * 14, 3)  # enlarged x3 (nearest) for viewing


def test_config_callback_writes_into_the_run_dir_and_pushes_to_wandb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evssl.cli import EvsslCLI

    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = EvsslCLI(args=["--config", str(Path(__file__).parents[1] / "experiments/smoke/supervised.yaml")], run=False)
    csv = CSVLogger(tmp_path, name="x")
    wandb = WandbLogger(save_dir=str(tmp_path))
    for _ in range(2):  # a second run in the same directory neither crashes nor overwrites the first
        trainer = Trainer(logger=[wandb, csv], enable_progress_bar=False, max_epochs=1)
        cb = EvsslSaveConfigCallback(cli.parser, cli.config)
        cb.setup(trainer, cli.model, "fit")
        assert run_log_dir(trainer) == csv.log_dir
        assert (Path(csv.log_dir) / "config.yaml").is_file()
        csv = CSVLogger(tmp_path, name="x")
    assert len(list((tmp_path / "x").glob("version_*/config.yaml"))) == 2  # one per run
    assert wandb.experiment.config["config"]["model"]["class_path"] == "evssl.tasks.Classifier"
