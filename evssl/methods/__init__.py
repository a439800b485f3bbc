"""Pre-training methods: one :class:`~evssl.methods.base.PretrainMethod` subclass per paper.

Every public class of every module in this package is re-exported here, so configs can name a method by its short
class name (``class_path: BraVe``) as well as by its full path (``evssl.methods.brave.BraVe``).
"""

from __future__ import annotations

import importlib
import pkgutil

from evssl.methods.base import PretrainMethod

__all__ = ["PretrainMethod"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_") or _info.name == "base":
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        if _name not in __all__:  # a name re-exported by a sibling module (EvDistill's teacher and options)
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
