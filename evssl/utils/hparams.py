"""Hyper-parameter saving without module objects, backbone configs, and the batch size of a batch dict."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import Any, TypeVar

from lightning.pytorch import LightningModule
from torch import Tensor, nn

__all__ = [
    "as_config",
    "batch_size_of",
    "class_config",
    "constructor_args",
    "module_hparams_without_modules",
    "records_init_args",
    "save_hparams",
]

C = TypeVar("C")
T = TypeVar("T")


def as_config(cls: type[C], value: Any, default: C | None = None) -> C:
    """An option-group dataclass from ``value``: an instance (kept), a dict (``cls(**value)``), or ``None``
    (``default``, else ``cls()``). Checkpoints store option groups as dicts, so ``load_from_checkpoint`` needs this.
    """
    if value is None:
        return default if default is not None else cls()
    if isinstance(value, dict):
        try:
            return cls(**value)
        except TypeError as err:
            raise ValueError(f"{cls.__name__}: {err}") from None
    if dataclasses.is_dataclass(value):
        return value  # type: ignore[return-value]
    raise ValueError(f"expected a {cls.__name__} or a dict, got {type(value).__name__}")


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch dict (``"label"``, ``"input"``, an :class:`EventBatch` or the first tensor)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for key in ("label", "input"):
            if isinstance(batch.get(key), Tensor):
                return int(batch[key].shape[0])
        for value in batch.values():
            if hasattr(value, "batch_size") and isinstance(value.batch_size, int):
                return int(value.batch_size)
            if isinstance(value, Tensor) and value.ndim > 0:
                return int(value.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size_of(batch[0])
    raise ValueError(f"cannot infer the batch size of {type(batch).__name__}")


def module_hparams_without_modules(module: LightningModule) -> None:
    """Drop ``nn.Module`` values (and lists of them) from ``module.hparams``.

    Under ``LightningCLI`` the hyper-parameters are the parsed config (``class_path`` dicts), so checkpoints can
    rebuild the model; when a module is built in Python the objects themselves would be pickled into every
    checkpoint (and ``torch.load(weights_only=True)`` would refuse them).
    """

    def is_module(v: Any) -> bool:
        return isinstance(v, nn.Module) or (
            isinstance(v, (list, tuple)) and len(v) > 0 and any(isinstance(m, nn.Module) for m in v)
        )

    for k in [k for k, v in module.hparams.items() if is_module(v)]:
        module.hparams.pop(k)
        module._hparams_initial.pop(k, None)  # the copy Lightning logs and saves
    for store in (module.hparams, module._hparams_initial):  # option groups as plain dicts (weights_only loads)
        for k, v in list(store.items()):
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                store[k] = dataclasses.asdict(v)


def save_hparams(module: LightningModule, frame: Any) -> None:
    """``module.save_hyperparameters()`` for an ``__init__`` frame, without ``nn.Module`` values (see above).

    Call as ``save_hparams(self, inspect.currentframe())`` at the top of ``__init__``; Lightning collects the
    arguments of every ``__init__`` up the class hierarchy (and, under the CLI, the parsed config instead).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
        module.save_hyperparameters(frame=frame)
    module_hparams_without_modules(module)


def _plain(value: Any) -> tuple[bool, Any]:
    """``(True, JSON-able value)`` for config-like values (numbers, strings, classes, lists of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, type):
        return True, f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    return False, None


def records_init_args(cls: type[T]) -> type[T]:
    """Class decorator: instances remember the (config-like) arguments their ``__init__`` was called with.

    ``evssl export`` of a module built in Python (no config) then describes its backbone exactly
    (:func:`constructor_args`); only the decorated class itself records (a subclass records nothing unless it is
    decorated too, so a subclass never reports its parent's arguments as its own).
    """
    init = cls.__init__
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self) is cls:
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            plain = {k: _plain(v) for k, v in list(bound.arguments.items())[1:]}
            self._init_args = (cls, {k: v for k, (ok, v) in plain.items() if ok})

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def constructor_args(obj: Any) -> dict[str, Any]:
    """The constructor arguments of ``obj``: those recorded by :func:`records_init_args`, else the ``__init__``
    arguments it keeps as attributes of the same name (config-like values only).

    How a module built in Python (no config) describes itself for ``evssl export``; the export round-trip tests
    check every backbone family.
    """
    recorded = getattr(obj, "_init_args", None)
    if isinstance(recorded, tuple) and len(recorded) == 2 and recorded[0] is type(obj):
        return dict(recorded[1])
    out: dict[str, Any] = {}
    for name, param in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(obj, name):
            continue
        ok, value = _plain(getattr(obj, name))
        if ok:
            out[name] = value
    return out


def class_config(obj: nn.Module, hparam: Any = None) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of ``obj``: from a config dict when given, else its class and the arguments
    it keeps (:func:`constructor_args`)."""
    if isinstance(hparam, dict) and "class_path" in hparam:
        return {"class_path": hparam["class_path"], "init_args": dict(hparam.get("init_args") or {})}
    cls = type(obj)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": constructor_args(obj)}
