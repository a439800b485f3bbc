"""Downstream tasks (LightningModules): classification transfer, and dense / sequence tasks.

Every public class of every module in this package is re-exported here, so configs can use short class names
(``class_path: Classifier``).
"""

from __future__ import annotations

import importlib
import pkgutil

from evssl.tasks.classification import Classifier

__all__ = ["Classifier"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_") or _info.name == "classification":
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
