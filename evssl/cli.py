"""The ``evssl`` command: Lightning's CLI for training plus data / export commands.

Training and evaluation (``fit``, ``validate``, ``test``, ``predict``) are a :class:`LightningCLI` in subclass mode:
a config names any method or task and any data module by class path (short names work: ``Classifier``,
``EventDataModule``, ``BraVe``), every nested object (backbone, sampler, representation) too, and
``--print_config`` prints every value. Derived values are linked instead of typed twice (applied when the data
module is instantiated):

* ``data.in_channels`` -> ``model.init_args.backbone.init_args.in_chans`` (channels of the representation);
* ``data.num_classes`` -> ``model.init_args.num_classes`` (downstream tasks) and
  ``model.init_args.probe.classes`` (online probe of pre-training methods); a model without that argument ignores
  the link.

``convert``, ``synth`` and ``export`` are plain argparse commands dispatched before Lightning is set up.
W&B runs offline unless ``WANDB_MODE=online`` is set in the environment.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _get_module_type, _InstantiatorFn
from lightning.pytorch.utilities import rank_zero_only

from evssl import __version__
from evssl.callbacks.config import EvsslSaveConfigCallback

__all__ = ["EvsslCLI", "main"]

TRAIN_COMMANDS = {
    "fit": "train a method or task (Trainer.fit)",
    "validate": "one evaluation epoch on the validation split",
    "test": "one evaluation epoch on the test split",
    "predict": "run inference on the predict split",
}
EXTRA_COMMANDS = {
    "convert": "convert event recordings (any supported format) into an evssl HDF5 store",
    "synth": "write a synthetic labelled event store (deterministic from --seed)",
    "export": "write a checkpoint's backbone as a plain state dict (+ JSON with its class path and args)",
}


def _help_text() -> str:
    lines = [
        "usage: evssl <command> [options]",
        "",
        f"evssl {__version__}: self-supervised learning on event-camera data (PyTorch Lightning).",
        "",
        "training and evaluation (`evssl <command> --help` lists every option):",
        *(f"  {k:<10} {v}" for k, v in TRAIN_COMMANDS.items()),
        "",
        "data and models:",
        *(f"  {k:<10} {v}" for k, v in EXTRA_COMMANDS.items()),
        "",
        "examples:",
        "  evssl fit --config experiments/smoke/supervised.yaml",
        "  evssl fit --config experiments/smoke/supervised.yaml --print_config",
        "  evssl fit --config experiments/smoke/supervised.yaml --trainer.max_epochs 1 --data.batch_size 8",
        "  evssl fit --config cfg.yaml --ckpt_path runs/.../checkpoints/last.ckpt      # resume",
        "  evssl synth --size tiny --seed 0 --out tiny.h5",
        "  evssl convert data/N-Caltech101 --out ncaltech101.h5",
        "  evssl export runs/.../checkpoints/last.ckpt --out backbone.pt",
        "",
        "W&B logging is offline unless WANDB_MODE=online is set.",
    ]
    return "\n".join(lines)


def _import_components() -> None:
    """Import the packages whose classes configs name, so short class names resolve."""
    import evssl.callbacks
    import evssl.data
    import evssl.events.representations
    import evssl.methods
    import evssl.nn
    import evssl.tasks  # noqa: F401


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
        """Drop class-count link values the chosen model does not take from its saved hyper-parameters.

        ``data.num_classes`` is linked to both ``num_classes`` (tasks) and ``probe.classes`` (methods); jsonargparse
        skips the target a model lacks, but Lightning still records it in ``hparams``, which would break
        ``--ckpt_path`` resume and ``evssl export`` (the model would be rebuilt with an unexpected argument).
        """
        _drop_unaccepted_hparams(self.model, ("num_classes", "probe_classes"))

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


def _accepted_arguments(model_class: type) -> set[str]:
    """``__init__`` argument names of ``model_class`` and its bases up to ``LightningModule`` (``**kwargs`` chains)."""
    accepted: set[str] = set()
    for cls in model_class.__mro__:
        if cls is LightningModule or not issubclass(cls, LightningModule):
            break
        if "__init__" in cls.__dict__:
            accepted |= set(inspect.signature(cls.__init__).parameters)
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


# ------------------------------------------------------------------------------------------- extra commands
def main_synth(argv: Sequence[str]) -> int:
    """``evssl synth --size tiny --seed 0 --out x.h5``."""
    from evssl.events.simulate import SIZES, make_synthetic_store

    parser = argparse.ArgumentParser(prog="evssl synth", description=EXTRA_COMMANDS["synth"])
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES), help="preset size")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("-o", "--out", type=Path, required=True, help="store to write (.h5)")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["classification", "sequence"],
        choices=["classification", "sequence"],
        help="labelled clips and/or long sequences",
    )
    parser.add_argument("--workers", type=int, default=None, help="generator processes (output does not depend on it)")
    # --- domain shift (engineer metavo, issue 12): named simulator domains, see evssl.events.simulate.DOMAINS ---
    from evssl.events.simulate import DOMAINS

    parser.add_argument("--domain", default="default", choices=sorted(DOMAINS), help="appearance/motion domain")
    # --- end domain shift ---
    args = parser.parse_args(argv)
    path = make_synthetic_store(
        args.out, size=args.size, seed=args.seed, kinds=args.kinds, num_workers=args.workers, domain=args.domain
    )
    print(f"wrote {path} (synthetic {args.size}, seed {args.seed}, domain {args.domain})")
    return 0


def main_convert(argv: Sequence[str]) -> int:
    """``evssl convert`` (see :mod:`evssl.events.convert`)."""
    from evssl.events.convert import main_convert as _main

    return int(_main(list(argv)) or 0)


def main_export(argv: Sequence[str]) -> int:
    """``evssl export CKPT --out backbone.pt`` (see :mod:`evssl.export`)."""
    from evssl.export import main_export as _main

    return int(_main(list(argv)) or 0)


_EXTRA = {"convert": main_convert, "synth": main_synth, "export": main_export}


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``evssl`` console script (``args``: command line without the program name)."""
    argv = list(sys.argv[1:] if args is None else args)
    os.environ.setdefault("WANDB_MODE", "offline")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help_text())
        return 0
    if argv[0] == "--version":
        print(f"evssl {__version__}")
        return 0
    if argv[0] in _EXTRA:
        return _EXTRA[argv[0]](argv[1:])
    if not argv[0].startswith("-") and argv[0] not in TRAIN_COMMANDS:
        print(f"evssl: unknown command {argv[0]!r}\n\n{_help_text()}", file=sys.stderr)
        return 2
    EvsslCLI(args=None if args is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
