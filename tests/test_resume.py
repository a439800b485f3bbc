"""``evssl fit --ckpt_path`` resumes the weights, the optimizer, the lr schedule and the EMA teacher exactly.

A tiny BYOL-like method (EMA pair + online probe) trains 2 epochs straight, and 1 epoch + resume for 1 epoch from
the end-of-epoch checkpoint; both runs go through the CLI (in-process) and must end with identical weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from evssl.cli import EvsslCLI

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def _config(tmp_path: Path, name: str, callbacks: list[dict]) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 1,
            "accumulate_grad_batches": 2,
            "default_root_dir": str(tmp_path / name),
            "callbacks": callbacks,
        },
        "model": {
            "class_path": "tests.helpers.TinyBYOL",
            "init_args": {
                "backbone": {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}},
                "optim": {"lr": 0.01, "warmup_epochs": 1, "weight_decay": 0.04, "weight_decay_end": 0.4},
                "ema": {"momentum": 0.9},
            },
        },
        "data": {"class_path": "tests.helpers.TensorDataModule", "init_args": {"num_samples": 48, "batch_size": 8}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit(config: Path, *extra: str) -> EvsslCLI:
    return EvsslCLI(args=["fit", "--config", str(config), *extra])


def test_resume_matches_straight_run(tmp_path: Path) -> None:
    straight = _fit(_config(tmp_path, "straight", []))
    ckpt_dir = tmp_path / "ckpt"
    stop = [
        {"class_path": "tests.helpers.StopAfterEpochs", "init_args": {"epochs": 1}},
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(ckpt_dir), "save_last": True},
        },
    ]
    first = _fit(_config(tmp_path, "first", stop))
    assert first.trainer.global_step == 3  # 6 batches / accumulate 2: half of the run
    ckpt = ckpt_dir / "last.ckpt"
    assert ckpt.is_file()
    resumed = _fit(_config(tmp_path, "resumed", []), "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == straight.trainer.global_step == 6

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert set(a) == set(b) and any(k.startswith("target_backbone.") for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)  # bit-identical on CPU
    # the schedules continued, not restarted: same lr / weight decay in every group
    for ga, gb in zip(straight.trainer.optimizers[0].param_groups, resumed.trainer.optimizers[0].param_groups):
        assert ga["lr"] == gb["lr"] and ga["weight_decay"] == gb["weight_decay"]
    sa = straight.trainer.lr_scheduler_configs[0].scheduler
    sb = resumed.trainer.lr_scheduler_configs[0].scheduler
    assert sa.last_epoch == sb.last_epoch == 6
    assert straight.model.ema_momentum_at(5) == resumed.model.ema_momentum_at(5)
