"""Lightning's CLI for ``evssl fit/validate/test/predict``: :class:`EvsslCLI` and its links (imported lazily by
:mod:`evssl.cli`, so ``evssl --help``, ``convert`` and ``synth`` never import Lightning).

See :mod:`evssl.cli` for the command line; the data -> model links are listed there.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _get_module_type, _InstantiatorFn
from lightning.pytorch.utilities import rank_zero_only

from evssl import __version__
from evssl.callbacks.config import EvsslSaveConfigCallback

__all__ = ["EvsslCLI", "prepare_wandb_loggers"]


def _import_components() -> None:
    """Import the packages whose classes configs name, so short class names resolve."""
    import evssl.callbacks
    import evssl.data
    import evssl.events.representations
    import evssl.methods
    import evssl.nn
    import evssl.tasks

    evssl.data.import_all()


class EvsslCLI(LightningCLI):
    """``LightningCLI`` for any evssl method, task and data module (subclass mode), with linked arguments.

    Extra top-level option ``--demo true``: after ``fit``, print ``validation accuracy: X (chance: Y)``.
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", EvsslSaveConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)  # methods and tasks own their optimizers
        kwargs.setdefault("parser_kwargs", {"prog": "evssl", "version": f"evssl {__version__}"})
        _import_components()
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--demo`` and the data -> model links."""
        parser.add_argument(
            "--demo",
            type=bool,
            default=False,
            help="after fit, print 'validation accuracy: X (chance: Y)' (used by `make demo`)",
        )
        parser.link_arguments("data.in_channels", "model.init_args.backbone.init_args.in_chans", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.probe.classes", apply_on="instantiate")

    def _add_instantiators(self) -> None:
        """Lightning's instantiators, with the model's one skipping links into arguments the model lacks.

        ``data.num_classes -> model.init_args.probe.classes`` targets a nested option group that tasks do not have;
        jsonargparse ignores such a link, but Lightning would still write it into the task's recorded hparams (and
        fail on the missing parent ``probe``).
        """
        self.parser.add_instantiator(
            _LinkTolerantInstantiator(cli=self, key="model"),
            _get_module_type(self._model_class),
            subclasses=self.subclass_mode_model,
        )
        self.parser.add_instantiator(
            _InstantiatorFn(cli=self, key="data"),
            _get_module_type(self._datamodule_class),
            subclasses=self.subclass_mode_data,
        )

    def after_instantiate_classes(self) -> None:
        """Drop class-count link values the chosen model does not take from its saved hyper-parameters; prepare the
        W&B loggers (:func:`prepare_wandb_loggers`).

        ``data.num_classes`` is linked to both ``num_classes`` (tasks) and ``probe.classes`` (methods); jsonargparse
        skips the target a model lacks, but Lightning still records it in ``hparams``, which would break
        ``--ckpt_path`` resume and ``evssl export`` (the model would be rebuilt with an unexpected argument).
        """
        _drop_unaccepted_hparams(self.model, ("num_classes", "probe_classes"))
        prepare_wandb_loggers(self.trainer.loggers)

    def after_fit(self) -> None:
        """With ``--demo true``: the final validation accuracy next to the chance level."""
        if self._get(self.config, "demo"):
            self._print_demo()

    @rank_zero_only
    def _print_demo(self) -> None:
        metrics = self.trainer.callback_metrics
        key = next((k for k in ("val/acc", "val/probe_acc") if k in metrics), None)
        if key is None:
            print("validation accuracy: n/a (no val/acc or val/probe_acc was logged)")
            return
        acc = float(metrics[key])
        print(f"validation accuracy: {acc:.3f} (chance: {_chance_level(self.datamodule, self.model):.3f})")


class _LinkTolerantInstantiator(_InstantiatorFn):
    """Drops applied links whose first ``init_args`` component is not an argument of the class being built."""

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
        accepted = _accepted_arguments(class_type)
        prefix = f"{self.key}.init_args."
        kept = {
            k: v
            for k, v in applied_instantiation_links.items()
            if not k.startswith(prefix) or k[len(prefix) :].split(".")[0] in accepted
        }
        return super().__call__(class_type, *args, applied_instantiation_links=kept, **kwargs)


def prepare_wandb_loggers(loggers: Sequence[Any]) -> None:
    """Before a W&B run starts: drop the ``anonymous=None`` Lightning's ``WandbLogger`` always passes to
    ``wandb.init`` (W&B 0.31 warns "The anonymous setting has no effect" for any value given, ``None`` included;
    an explicit ``anonymous=True`` is kept, and its warning with it), and create the save folder (W&B warns
    "git root ... does not exist" when it looks for a repository in a folder not made yet)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is not None:
            continue
        init = logger._wandb_init  # the keyword arguments of wandb.init (no public accessor)
        if init.get("anonymous", "unset") is None:
            del init["anonymous"]
        if logger.save_dir:
            Path(logger.save_dir).mkdir(parents=True, exist_ok=True)


def _accepted_arguments(model_class: type) -> set[str]:
    """``__init__`` argument names of ``model_class`` and its bases up to ``LightningModule`` (``**kwargs`` chains)."""
    accepted: set[str] = set()
    for cls in model_class.__mro__:
        if cls is LightningModule or not issubclass(cls, LightningModule):
            break
        if "__init__" in cls.__dict__:
            params = inspect.signature(cls.__init__).parameters
            accepted |= set(params)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                break  # the bases' arguments reach the class only through its own ``**kwargs``
    return accepted


def _drop_unaccepted_hparams(model: LightningModule, keys: Sequence[str]) -> None:
    accepted = _accepted_arguments(type(model))
    for key in keys:
        if key not in accepted and key in model.hparams:
            model.hparams.pop(key)
            model._hparams_initial.pop(key, None)


def _chance_level(datamodule: Any, model: Any) -> float:
    """Accuracy of always answering the most frequent validation class (``1 / num_classes`` as a fallback)."""
    import numpy as np

    try:
        labels = datamodule.meta.labels[datamodule.split_indices(datamodule.val_split)]
        labels = labels[labels >= 0]
        if len(labels):
            return float(np.bincount(labels).max() / len(labels))
    except Exception:  # any data module: fall back to the uniform chance level
        pass
    n = getattr(datamodule, "num_classes", None) or getattr(model, "num_classes", None)
    return 1.0 / n if n else float("nan")
