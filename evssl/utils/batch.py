"""Reading per-sample values out of a collated batch."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["first_item"]


def first_item(x: Any) -> Any:
    """The first sample's value of a collated field: element 0 of a tensor (any shape) or of a list / tuple, else
    ``x`` itself (a plain scalar). Online loops run with batch size 1 and read flags and indices this way."""
    if isinstance(x, Tensor):
        return x.reshape(-1)[0]
    return x[0] if isinstance(x, (list, tuple)) else x
