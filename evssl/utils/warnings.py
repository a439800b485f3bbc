"""Narrow filters for third-party noise that evssl cannot fix where it arises, installed by the ``evssl`` command.

What evssl itself causes is fixed at its source instead: the W&B logger's ``anonymous=None`` and missing save
directory (:func:`evssl.cli_lightning.prepare_wandb_loggers`), the validation loop of a data module that has no
validation data (:meth:`evssl.data.EventDataModule.setup`), the eval-mode check on the frozen backbone of a probe
(:class:`evssl.nn.frozen.FrozenInEval`). Each filter here matches one message of one third-party module and says
why it is harmless; none can match a warning about the user's data, config or model.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["EVAL_COMMANDS", "LIGHTNING_TIP", "install_filters"]

#: Commands that only evaluate a checkpoint (they never write one).
EVAL_COMMANDS = ("validate", "test", "predict")

#: Lightning prints info lines starting with this on every run without its optional cloud packages (litlogger,
#: litmodels): adverts that say nothing about the run.
LIGHTNING_TIP = "💡 Tip:"

# (message regex, category, module regex): why it is harmless
_ALWAYS: tuple[tuple[str, type[Warning], str], ...] = (
    # Lightning 2.6 builds torch's deprecated LeafSpec in its own batch flattening (lightning/pytorch/utilities/
    # _pytree.py) on every run; no evssl or user code calls it, and the torch version pinned here still supports it.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
)
_EVALUATION: tuple[tuple[str, type[Warning], str], ...] = (
    # Restoring a checkpoint under a new logger version moves ModelCheckpoint's folder, so Lightning says it will not
    # reload its best-k bookkeeping; validate / test / predict never save a checkpoint, so nothing is lost. (The same
    # warning when resuming `fit` is kept: there the bookkeeping matters.)
    (r"The dirpath has changed from", UserWarning, r"lightning\.pytorch\.callbacks\.model_checkpoint"),
)


class _DropLightningTips(logging.Filter):
    """Drops Lightning's :data:`LIGHTNING_TIP` info lines; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LIGHTNING_TIP)


def install_filters(command: str) -> None:
    """Install the filters for ``evssl <command>`` (idempotent: installing twice adds nothing)."""
    for message, category, module in _ALWAYS + (_EVALUATION if command in EVAL_COMMANDS else ()):
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # every rank_zero_info of Lightning
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLightningTips())
