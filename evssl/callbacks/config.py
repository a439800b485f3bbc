"""Save the resolved config once per run: into the run's own log directory and into the W&B run config."""

from __future__ import annotations

import json
import os
from typing import Any

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["EvsslSaveConfigCallback", "run_log_dir"]


def run_log_dir(trainer: Trainer) -> str:
    """The directory of *this run*: the first versioned logger directory (CSV/TensorBoard ``.../version_N``).

    Lightning's ``trainer.log_dir`` is ``save_dir`` when the first logger is a ``WandbLogger``, shared by every run
    (the source of the "config.yaml already exists" crash). Must be called on every rank (it broadcasts).
    """
    path = None
    for logger in trainer.loggers:
        if isinstance(logger, (CSVLogger, TensorBoardLogger)):
            path = logger.log_dir
            break
    if path is None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.save_dir:
                path = os.path.join(logger.save_dir, "configs", str(logger.version or "run"))
                break
    if path is None:
        path = trainer.default_root_dir
    return trainer.strategy.broadcast(path)


class EvsslSaveConfigCallback(SaveConfigCallback):
    """Write ``config.yaml`` (every value resolved, links applied) once per run and push it to W&B.

    Differences to Lightning's callback: the file goes to :func:`run_log_dir` (a fresh ``version_N`` per run, so
    repeated runs in one directory never collide), an existing file is overwritten rather than raising, and when a
    ``WandbLogger`` is attached the config is stored in the W&B run config under ``"config"`` (offline runs keep it
    in their local files until ``wandb sync``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["overwrite"] = True
        super().__init__(*args, **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Save on global rank zero, once; all ranks agree on the directory and on 'already saved'."""
        if self.already_saved:
            return
        log_dir = run_log_dir(trainer)
        if trainer.is_global_zero:
            fs = get_filesystem(log_dir)
            fs.makedirs(log_dir, exist_ok=True)
            self.parser.save(
                self.config,
                os.path.join(log_dir, self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Push the resolved config to every W&B logger (rank zero only; no collectives here)."""
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            try:
                config = self.parser.dump(self.config, skip_none=False, format="json")
                logger.experiment.config.update({"config": json.loads(config)}, allow_val_change=True)
            except Exception as err:  # never let bookkeeping stop a run
                rank_zero_warn(f"evssl: could not store the config in the W&B run: {err}")
