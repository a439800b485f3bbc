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

``convert``, ``synth`` and ``export`` are plain argparse commands dispatched before Lightning is imported (the
Lightning CLI lives in :mod:`evssl.cli_lightning`, imported only for the training commands, so ``evssl --help``,
``convert`` and ``synth`` start in well under a second).
W&B runs offline unless ``WANDB_MODE=online`` is set in the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evssl import __version__

__all__ = ["EvsslCLI", "main", "run_guarded"]  # noqa: F822 (EvsslCLI: lazy, see __getattr__)

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
    "benchmark": "methods x seeds, one backbone and budget, probed beside random init and supervised (cached)",
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
        "  evssl benchmark --config experiments/benchmark/smoke.yaml",
        "",
        "W&B logging is offline unless WANDB_MODE=online is set.",
    ]
    return "\n".join(lines)


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
    # named simulator domains (train/test domain shift), see evssl.events.simulate.DOMAINS
    from evssl.events.simulate import DOMAINS

    parser.add_argument("--domain", default="default", choices=sorted(DOMAINS), help="appearance/motion domain")
    args = parser.parse_args(argv)
    path = make_synthetic_store(
        args.out, size=args.size, seed=args.seed, kinds=args.kinds, num_workers=args.workers, domain=args.domain
    )
    print(f"wrote {path} (synthetic {args.size}, seed {args.seed}, domain {args.domain})")
    return 0


def main_convert(argv: Sequence[str]) -> int:
    """``evssl convert`` (see :mod:`evssl.events.convert`)."""
    from evssl.events.convert import add_convert_arguments, run_convert

    parser = argparse.ArgumentParser(prog="evssl convert", description=EXTRA_COMMANDS["convert"])
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(list(argv)))


def main_export(argv: Sequence[str]) -> int:
    """``evssl export CKPT --out backbone.pt`` (see :mod:`evssl.export`); refuses to write over the checkpoint."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("checkpoint", nargs="?")
    probe.add_argument("-o", "--out", type=Path)
    known, _ = probe.parse_known_args(list(argv))
    if known.checkpoint and known.out is not None:
        ckpt = Path(known.checkpoint)
        for target in (known.out, known.out.with_suffix(".json")):
            if ckpt.exists() and target.exists() and os.path.samefile(ckpt, target):
                raise ValueError(f"{target}: --out would overwrite the checkpoint {ckpt}; choose another file")
            if target.resolve() == ckpt.resolve():
                raise ValueError(f"{target}: --out would overwrite the checkpoint {ckpt}; choose another file")
    from evssl.export import main_export as _main

    return int(_main(list(argv)) or 0)


def main_benchmark(argv: Sequence[str]) -> int:
    """``evssl benchmark --config experiments/benchmark/<name>.yaml`` (see :mod:`evssl.benchmark`)."""
    from evssl.benchmark import main_benchmark as _main

    return int(_main(list(argv)) or 0)


_EXTRA = {"convert": main_convert, "synth": main_synth, "export": main_export, "benchmark": main_benchmark}
#: Exceptions that are bad input (a file, a field, a value) rather than a bug: reported as one message, exit 1.
DATA_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    env = os.environ.get("EVSSL_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or "--debug" in argv, [a for a in argv if a != "--debug"]


def run_guarded(prog: str, fn: Callable[[], Any], debug: bool | None = None) -> int:
    """Run ``fn``; a data error (:data:`DATA_ERRORS`) prints ``prog: error: message`` and returns 1.

    With ``debug`` (default: ``EVSSL_DEBUG=1``) the exception propagates with its traceback. Usage errors keep
    argparse's exit status 2.
    """
    if debug is None:
        debug, _ = _debug_requested([])
    if debug:
        return int(fn() or 0)
    try:
        return int(fn() or 0)
    except DATA_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, OSError) and not msg:
            msg = repr(e)
        print(f"{prog}: error: {msg}", file=sys.stderr)
        print("(run with --debug or EVSSL_DEBUG=1 for the traceback)", file=sys.stderr)
        if getattr(e, "hdf5_failed", False):
            # HDF5 hit the failed write itself; releasing its handles can crash the library, so leave now
            # (the writer already removed its temporary file).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1


def _install_warning_filters(command: str) -> None:
    """Third-party noise filters of :mod:`evssl.utils.warnings` (the command line only; importing evssl adds none)."""
    from evssl.utils.warnings import install_filters

    install_filters(command)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``evssl`` console script (``args``: command line without the program name).

    Data errors print one message naming the file, field and value and exit 1; usage errors exit 2; ``--debug``
    (anywhere on the command line) or ``EVSSL_DEBUG=1`` shows the traceback instead.
    """
    debug, argv = _debug_requested(list(sys.argv[1:] if args is None else args))
    os.environ.setdefault("WANDB_MODE", "offline")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help_text())
        return 0
    if argv[0] == "--version":
        print(f"evssl {__version__}")
        return 0
    if argv[0] in _EXTRA:
        cmd = argv[0]
        if cmd == "benchmark":
            _install_warning_filters(cmd)
        return run_guarded(f"evssl {cmd}", lambda: _EXTRA[cmd](argv[1:]), debug)
    if not argv[0].startswith("-") and argv[0] not in TRAIN_COMMANDS:
        print(f"evssl: unknown command {argv[0]!r}\n\n{_help_text()}", file=sys.stderr)
        return 2

    def train() -> int:
        from evssl.cli_lightning import EvsslCLI

        _install_warning_filters(argv[0])

        EvsslCLI(args=None if args is None else argv)
        return 0

    prog = f"evssl {argv[0]}" if argv[0] in TRAIN_COMMANDS else "evssl"
    return run_guarded(prog, train, debug)


def __getattr__(name: str) -> Any:
    """``evssl.cli.EvsslCLI`` (and its helpers) import Lightning only when asked for."""
    if name in ("EvsslCLI", "_drop_unaccepted_hparams", "_chance_level", "_import_components"):
        import evssl.cli_lightning as lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
