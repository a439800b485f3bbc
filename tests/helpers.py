"""Test-only building blocks: a tiny BYOL-like method, a tensor data module, a tiny backbone, recording callbacks.

Importable as ``tests.helpers`` both in-process and from CLI subprocesses (:func:`cli_env` puts the repository on
``PYTHONPATH``), so configs can say ``class_path: tests.helpers.TinyBYOL``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from evssl.methods.base import PretrainMethod, SSLOutput
from evssl.nn.ema import make_target
from evssl.utils.hparams import records_init_args

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: disabled W&B, one thread, ``tests.helpers`` importable."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra)
    return env


@records_init_args
class TinyNet(nn.Module):
    """Conv -> GroupNorm -> ReLU -> global pool; ``num_features`` = ``width`` (no BatchNorm: rank-independent)."""

    def __init__(self, in_chans: int = 2, width: int = 8) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.num_features = width
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, width)``."""
        h = F.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return self.fc(h)


class TinyBYOL(PretrainMethod):
    """BYOL-like: online backbone + projector + predictor, EMA target backbone + projector; loss ``2 - 2 cos``.

    Two "views" are the input and its horizontal flip plus noise (deterministic given the batch).
    """

    def __init__(self, backbone: nn.Module, proj_dim: int = 8, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        dim = backbone.num_features
        self.projector = nn.Sequential(nn.Linear(dim, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, proj_dim))
        self.predictor = nn.Sequential(nn.Linear(proj_dim, 16), nn.ReLU(), nn.Linear(16, proj_dim))
        self.target_backbone = make_target(self.backbone)
        self.target_projector = make_target(self.projector)

    def learnable_params(self) -> list[dict[str, Any]]:
        """Backbone + probe (base), projector, predictor (lr x 2, as an example of per-group scaling)."""
        return [
            *super().learnable_params(),
            {"name": "projector", "params": list(self.projector.parameters())},
            {"name": "predictor", "params": list(self.predictor.parameters()), "lr_scale": 2.0},
        ]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Backbone and projector are EMA'd."""
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def ssl_step(self, batch: dict[str, Any], batch_idx: int) -> SSLOutput:
        """Symmetric BYOL loss of two deterministic views."""
        x = batch["input"]
        v1, v2 = x, torch.flip(x, dims=[3]) + 0.1 * torch.cos(x)
        feats = self.backbone(v1)
        p1 = self.predictor(self.projector(feats))
        p2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_backbone(v1))
            z2 = self.target_projector(self.target_backbone(v2))
        loss = (2 - 2 * F.cosine_similarity(p1, z2, dim=-1)).mean() + (
            2 - 2 * F.cosine_similarity(p2, z1, dim=-1)
        ).mean()
        return SSLOutput(loss, features=feats.detach())


class _TensorSet(Dataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input": self.x[i], "label": self.y[i]}


class TensorDataModule(LightningDataModule):
    """Deterministic random tensors with class-dependent means: ``{"input": (C, H, W), "label"}`` batches.

    Properties ``in_channels`` and ``num_classes`` as in :class:`evssl.data.EventDataModule` (for the CLI links).
    No shuffling, so the data order is identical for any run and after resuming.
    """

    def __init__(
        self,
        num_samples: int = 32,
        channels: int = 2,
        size: int = 8,
        classes: int = 4,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(num_samples) % classes
        means = torch.randn(classes, channels, 1, 1, generator=g)
        self.x = means[self.y] + 0.5 * torch.randn(num_samples, channels, size, size, generator=g)
        self.channels, self.classes, self.batch_size = channels, classes, batch_size

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self.channels

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.classes

    def train_dataloader(self) -> DataLoader:
        """All samples, fixed order."""
        return DataLoader(_TensorSet(self.x, self.y), batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        """The same samples (a health check, not a benchmark)."""
        return DataLoader(_TensorSet(self.x, self.y), batch_size=self.batch_size, shuffle=False)


class StopAfterEpochs(Callback):
    """Stop ``fit`` at the end of epoch ``epochs`` (keeps the schedule length of the full run)."""

    def __init__(self, epochs: int = 1) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Request the stop."""
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class RecordSteps(Callback):
    """Write per-step training loss (per rank) and, at the end, the model weights (rank 0) to ``out_dir``.

    ``out_dir/loss_rank{r}.json``: list of floats (the loss returned by ``training_step``);
    ``out_dir/weights.pt``: ``state_dict`` after training.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Record the loss of this step."""
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Dump losses (every rank) and weights (rank 0)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"loss_rank{trainer.global_rank}.json").write_text(json.dumps(self.losses))
        if trainer.is_global_zero:
            torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.out_dir / "weights.pt")


_OPTIM_KEYS = {
    "optimizer": "name",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "weight_decay_end": "weight_decay_end",
    "momentum": "momentum",
    "betas": "betas",
    "warmup_epochs": "warmup_epochs",
    "min_lr_ratio": "min_lr_ratio",
    "lr_batch_scale": "lr_batch_scale",
    "no_decay": "no_decay",
    "lr_rules": "lr_rules",
    "lars_masks": "lars_masks",
}


def grouped(kw: dict[str, Any], optim_cls: type | None = None) -> dict[str, Any]:
    """Flat test keywords (``lr=``, ``ema_momentum=``, ``probe_classes=`` ...) as option groups.

    ``optim`` is built from ``optim_cls`` (the method's defaults) only when an optimiser keyword is given; ``ema`` /
    ``probe`` likewise.
    """
    from evssl.nn.probe import ProbeConfig
    from evssl.optim import EmaConfig, OptimConfig

    kw = dict(kw)
    opt = {_OPTIM_KEYS[k]: kw.pop(k) for k in list(kw) if k in _OPTIM_KEYS}
    if opt:
        kw["optim"] = (optim_cls or OptimConfig)(**opt)
    if "ema_momentum" in kw or "ema_momentum_end" in kw:
        kw["ema"] = EmaConfig(kw.pop("ema_momentum", 0.996), kw.pop("ema_momentum_end", 1.0))
    if "probe_classes" in kw or "probe_lr" in kw:
        kw["probe"] = ProbeConfig(classes=kw.pop("probe_classes", 0), lr=kw.pop("probe_lr", 1e-3))
    return kw


def write_fit_config(
    tmp_path: Path, name: str, model: dict, data: dict, resolution: tuple[int, int], **trainer: Any
) -> Path:
    """A small ``evssl fit`` YAML on CPU (``trainer`` entries override; ``data`` adds EventDataModule arguments to a
    ClassificationWindow/Histogram module at ``resolution``); returns its path ``tmp_path/<name>.yaml``."""
    import yaml

    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path / "runs" / name),
            **trainer,
        },
        "model": model,
        "data": {
            "class_path": "evssl.data.EventDataModule",
            "init_args": {
                "batch_size": 4,
                "num_workers": 0,
                "sampler": {
                    "class_path": "evssl.data.ClassificationWindow",
                    "init_args": {"resolution": list(resolution)},
                },
                "representation": {"class_path": "evssl.events.representations.Histogram"},
                **data,
            },
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
