"""The online linear probe: a monitor of pre-training, trained on detached features.

``logits = W sg(f(x)) + b`` with cross-entropy on the data's labels; the gradient never reaches the backbone (the
features are detached), so the self-supervised objective is unchanged. It is a *monitor* (``val/probe_acc``), not
the evaluation protocol of any paper (see ``evssl.tasks.Classifier`` for linear probing). Switch it off with
``probe.enabled: false``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["DEFAULT_PROBE", "OnlineProbe", "ProbeConfig"]


@dataclass
class ProbeConfig:
    """Online probe options.

    Args:
        enabled: build and train the probe (``False``: no probe even when the data has labels).
        classes: number of classes, linked from ``data.num_classes`` by the CLI; 0 = no probe.
        lr: learning rate of the probe (absolute: not batch-scaled; no weight decay, no LARS adaptation; same
            warm-up/cosine schedule as the method).
    """

    enabled: bool = True
    classes: int = 0
    lr: float = 1e-3

    @property
    def active(self) -> bool:
        """Whether a probe is built."""
        return bool(self.enabled) and int(self.classes) > 0


class OnlineProbe(nn.Module):
    """Linear classifier on detached features with its own accuracy metric."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        if classes < 1:
            raise ValueError(f"the online probe needs classes >= 1, got {classes}")
        self.linear = nn.Linear(int(dim), int(classes))
        self.accuracy = MulticlassAccuracy(int(classes), top_k=1, average="micro")

    def forward(self, features: Tensor) -> Tensor:
        """Logits of detached ``features`` (B, dim)."""
        return self.linear(features.detach().float())

    def loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the probe on ``(features, labels)``."""
        return F.cross_entropy(self(features), labels)


#: Default ``probe`` argument of the methods: an instance (not ``None``) so that the CLI can link
#: ``data.num_classes`` into ``probe.classes``; never mutated (``probe: null`` also means this default).
DEFAULT_PROBE = ProbeConfig()
