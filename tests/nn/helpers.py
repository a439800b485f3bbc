"""Parameter counting shared by the backbone tests."""

from __future__ import annotations

import torch


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count(factory, **kw) -> int:
    """Parameter count of a full-size model built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        return n_params(factory(**kw))
