r"""The benchmark's evaluation of a frozen backbone: linear probe and kNN on pooled features (pure functions).

Every exported backbone of a grid (pre-trained, random init, supervised) goes through the same steps:

1. :func:`probe_backbone` rebuilds it from its export (:func:`evssl.export.load_exported_backbone`), wraps it in
   :class:`evssl.tasks.Classifier` (``mode="linear"``), re-estimates its BatchNorm running statistics on the probe's
   training windows (``Classifier.reestimate_batchnorm`` — the implementation behind ``bn_reestimate_batches``;
   the random-init baseline gets calibrated statistics too) and extracts the pooled features of the train and test
   windows once, in eval mode;
2. :func:`linear_probe`: multinomial logistic regression on standardised features, full-batch L-BFGS to
   convergence with an L2 penalty — the Classifier's linear head trained to its optimum instead of by SGD epochs
   (deterministic, seconds on CPU); at test time the log-probabilities of a recording's ``K`` windows are averaged
   (multi-crop test averaging) and accuracy is per recording;
3. :func:`knn_classify`: weighted k-nearest-neighbour vote on L2-normalised features (Wu et al., CVPR 2018,
   "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", §3.4; the DINO evaluation):
   for a query :math:`q` with neighbours :math:`\mathcal N_k(q)` by cosine similarity :math:`s_i`, class scores
   :math:`S_c = \sum_{i\in\mathcal N_k} e^{s_i/\tau}\,[y_i = c]`; a recording's ``K`` windows add their scores.

Methods with an online VO loop (meta-VO) are also evaluated by :func:`online_vo`: the trained model (not only its
backbone) runs :class:`~evssl.methods.meta_vo.MetaVO`'s online loop over the test sequences window by window
(predict window ``i``, then adapt on it), with or without the adaptation step; the metrics are the method's own
(:mod:`evssl.metrics.odometry`, averaged over sequences): KITTI ``t_rel`` (%) / ``r_rel``, ATE after Sim(3)
alignment, RPE (frame offset 1), depth abs-rel / RMSE / delta1 (median scaling), photometric error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProbeResult", "extract_features", "knn_classify", "linear_probe", "online_vo", "probe_backbone"]


@dataclass
class ProbeResult:
    """Test accuracies of one backbone (fractions in [0, 1])."""

    linear: float
    knn: float
    bn_batches: int
    num_features: int

    def as_dict(self) -> dict[str, Any]:
        return {"linear": self.linear, "knn": self.knn, "bn_batches": self.bn_batches, "dim": self.num_features}


def _per_recording(x: Tensor, windows: int) -> Tensor:
    if x.shape[0] % windows:
        raise ValueError(f"{x.shape[0]} test windows are not a multiple of {windows} windows per recording")
    return x.reshape(-1, windows, *x.shape[1:])


def linear_probe(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    l2: float = 1e-4,
    test_windows: int = 1,
    max_iter: int = 500,
    head: nn.Linear | None = None,
) -> float:
    r"""Test top-1 of :math:`\min_{W,b} \frac1N\sum_i \mathrm{CE}(W\hat f_i + b, y_i) + \lambda\|W\|^2` on
    standardised features :math:`\hat f = (f - \mu_{train}) / \sigma_{train}` (full-batch L-BFGS, strong Wolfe).

    Every training window is one example; test windows come in recording-major blocks of ``test_windows`` whose
    log-probabilities are averaged. ``head`` (optional) receives the fitted weights, mapped back to raw features.
    """
    (xtr, ytr), (xte, yte) = train, test
    mu, sd = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    ztr, zte = ((xtr - mu) / sd).double(), ((xte - mu) / sd).double()
    lin = nn.Linear(ztr.shape[1], num_classes).double()
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(
        lin.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(ztr), ytr) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        for _ in range(3):
            opt.step(closure)
    with torch.no_grad():
        if head is not None:  # W x_hat + b = (W / sd) x + (b - W mu / sd)
            w = lin.weight / sd.double()
            head.weight.copy_(w.to(head.weight.dtype))
            head.bias.copy_((lin.bias - (w * mu.double()).sum(1)).to(head.bias.dtype))
        logp = _per_recording(F.log_softmax(lin(zte), dim=1), test_windows).mean(1)
        labels = _per_recording(yte, test_windows)[:, 0]
        return float((logp.argmax(1) == labels).double().mean())


def knn_classify(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    test_windows: int = 1,
) -> float:
    r"""Test top-1 of the weighted kNN vote :math:`S_c(q) = \sum_{i \in \mathcal N_k(q)} e^{s_i/\tau}[y_i = c]`
    (cosine similarities :math:`s_i` of L2-normalised features; the ``test_windows`` windows of a recording add
    their scores)."""
    (xtr, ytr), (xte, yte) = train, test
    if k < 1:
        raise ValueError(f"knn k must be >= 1, got {k}")
    k = min(k, xtr.shape[0])
    a, b = F.normalize(xtr.double(), dim=1), F.normalize(xte.double(), dim=1)
    sim, idx = (b @ a.T).topk(k, dim=1)
    weight = (sim / temperature).exp()
    scores = torch.zeros(b.shape[0], num_classes, dtype=torch.float64)
    scores.scatter_add_(1, ytr[idx], weight)
    scores = _per_recording(scores, test_windows).sum(1)
    labels = _per_recording(yte, test_windows)[:, 0]
    return float((scores.argmax(1) == labels).double().mean())


@torch.no_grad()
def extract_features(backbone: nn.Module, inputs: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Pooled features (float32) and labels of ``(input, label)`` batches, backbone in eval mode."""
    backbone.eval()
    xs, ys = [], []
    for x, y in inputs:
        xs.append(backbone(x.float()).float())
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def probe_backbone(
    path: str | Path,
    train_batches: list[dict[str, Any]],
    test_batches: list[dict[str, Any]],
    num_classes: int,
    windows: int,
    bn_reestimate_batches: int = 20,
    l2: float = 1e-4,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
) -> ProbeResult:
    """Linear probe + kNN of the backbone exported at ``path`` (see the module docstring).

    ``train_batches`` / ``test_batches``: represented batches (``"input"``, ``"label"``) of the probe's train and
    test windows, computed once per grid and shared by every backbone.
    """
    from evssl.export import load_exported_backbone
    from evssl.tasks import Classifier

    backbone = load_exported_backbone(path)
    clf = Classifier(
        backbone, num_classes, mode="linear", pretrained=str(path), bn_reestimate_batches=max(bn_reestimate_batches, 0)
    )
    n_bn = clf.reestimate_batchnorm(train_batches, bn_reestimate_batches) if bn_reestimate_batches > 0 else 0
    clf.eval()
    tr = extract_features(clf.backbone, ((b["input"], b["label"]) for b in train_batches))
    te = extract_features(clf.backbone, ((b["input"], b["label"]) for b in test_batches))
    head = clf.head[1]
    lin = linear_probe(tr, te, num_classes, l2=l2, test_windows=windows, head=head)
    knn = knn_classify(tr, te, num_classes, k=knn_k, temperature=knn_temperature, test_windows=windows)
    return ProbeResult(linear=lin, knn=knn, bn_batches=int(n_bn), num_features=int(tr[0].shape[1]))


def online_vo(model: Any, sequences: Any, adapt: bool) -> dict[str, float]:
    """Sequence-averaged online VO metrics of ``model`` (a :class:`~evssl.methods.meta_vo.MetaVO`) over the ordered
    windows of ``sequences`` (an :class:`~evssl.data.sequences.OnlineSequenceDataset`), one window at a time;
    ``adapt=False`` keeps the trained weights (same loop, no update). The module's parameters and buffers are left
    as they were."""
    from evssl.data.collate import collate_events

    enabled = model.online_cfg.enabled
    model.online_cfg.enabled = bool(adapt)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.online_begin()
            for k in range(len(sequences)):
                model.online_window(collate_events([sequences[k]]))
            return model.online_end()
    finally:
        model.online_cfg.enabled = enabled
