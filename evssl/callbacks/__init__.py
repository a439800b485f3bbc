"""Callbacks: config saving (W&B-aware), event images for W&B, and task-specific media.

Public classes of every module here are re-exported, so configs may write ``evssl.callbacks.EventImageLogger``.
"""

from __future__ import annotations

import importlib
import pkgutil

from evssl.callbacks.config import EvsslSaveConfigCallback, run_log_dir
from evssl.callbacks.media import EventImageLogger, events_to_rgb, log_images, signed_to_rgb, tensor_to_rgb

__all__ = [
    "EventImageLogger",
    "EvsslSaveConfigCallback",
    "events_to_rgb",
    "log_images",
    "run_log_dir",
    "signed_to_rgb",
    "tensor_to_rgb",
]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_") or _info.name in ("config", "media"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
