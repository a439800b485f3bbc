r"""Training diagnostics of a pre-training run, logged per epoch (issue 17 §1: diagnose before tuning).

:class:`PretrainDiagnostics` logs under ``diag/``:

* ``diag/knn_acc`` (and ``diag/linear_acc`` with ``linear: true``) — a cheap probe of the *current* backbone on a
  fixed labelled subset: the first ``num_train`` / ``num_eval`` recordings of the train / validation split (no
  validation split: the train split's last ``num_eval`` recordings, disjoint from the first ``num_train``) as
  plain evaluation windows (the data module's ``eval_sampler``, ``train=False``: deterministic), backbone in eval
  mode; weighted kNN vote (:func:`evssl.benchmark.evaluate.knn_classify`, Wu et al. 2018) and optionally
  the L-BFGS logistic probe (:func:`evssl.benchmark.evaluate.linear_probe`);
* collapse monitors on the same subset, for the pooled backbone features ``f`` and the projections
  ``g(f)`` (``pl_module.<projector_attr>`` when present):
  ``std·√d`` :math:`= \sqrt d \cdot \frac1d\sum_j \mathrm{std}_i(\bar z_{ij})` of the L2-normalised
  :math:`\bar z = z/\|z\|` (≈ 1 for well-spread embeddings, → 0 under complete collapse; SimSiam, Chen & He 2021,
  §4.1), and the effective rank :math:`\exp(-\sum_k p_k \log p_k)`, :math:`p_k = \sigma_k / \sum \sigma` of the
  singular values of the centred embedding matrix (Roy & Vetterli 2007; RankMe, Garrido et al. 2023) — 1 =
  one-dimensional collapse, ``min(n, d)`` = full rank;
* ``diag/train/<term>`` — the epoch mean of every scalar the method logs per step under ``train/`` (its loss terms
  from :class:`~evssl.methods.base.SSLOutput` ``logs``, ``train/loss``, collapse monitors of the step);
* ``diag/grad_norm/<group>`` — the epoch mean of the L2 norm of the gradients of each optimizer parameter group
  (by the group's ``name``), measured before the optimizer step (after gradient scaling rules of the group are
  *not* applied: it is the raw ``.grad``);
* ``diag/data/events_per_window`` (mean, and ``_min``) and ``diag/data/empty_pixel_fraction`` — the data the model
  sees: events per training sample of the event stream represented into ``batch["input"]`` (other streams, e.g.
  BraVe's broad views, as ``diag/data/<key>/events_per_window``) and the fraction of pixels where every channel
  of ``batch["input"]`` is zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

__all__ = [
    "PretrainDiagnostics",
    "effective_rank",
    "empty_pixel_fraction",
    "events_per_window",
    "probe_subsets",
    "std_sqrt_d",
]


def std_sqrt_d(z: Tensor) -> float:
    r""":math:`\sqrt d \cdot \mathrm{mean}_j\,\mathrm{std}_i(z_{ij}/\|z_i\|)` (population std over the batch)."""
    if z.shape[0] < 2:
        return math.nan
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    return float(zn.std(dim=0, unbiased=False).mean() * math.sqrt(z.shape[1]))


def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    r"""Roy & Vetterli's effective rank :math:`\exp H(p)`, :math:`p = \sigma / \|\sigma\|_1`, of the centred ``z``."""
    if z.shape[0] < 2:
        return math.nan
    s = torch.linalg.svdvals(z.double() - z.double().mean(0, keepdim=True))
    if float(s.sum()) <= eps:
        return 1.0
    p = s / s.sum()
    p = p[p > eps]
    return float(torch.exp(-(p * p.log()).sum()))


def events_per_window(batch_index: Tensor, batch_size: int) -> Tensor:
    """Events of every sample (``(B,)`` counts) from a flat batch index."""
    return torch.bincount(batch_index.long(), minlength=batch_size)[:batch_size]


def empty_pixel_fraction(x: Tensor) -> float:
    """Fraction of pixels of a ``(B, C, H, W)`` representation where every channel is zero."""
    return float((x.abs().sum(dim=1) == 0).double().mean())


def probe_subsets(
    train: np.ndarray, evals: np.ndarray, num_train: int, num_eval: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The diagnostics probe's fixed recordings: ``(bank, queries)``, sorted store indices.

    Each is a seeded random subset of its split (stores are often sorted by class, so a prefix or a tail can hold a
    single class, and a kNN then scores 0 or 1 whatever the features). Without evaluation recordings the queries are
    ``num_eval`` other train recordings, disjoint from the bank (none if the split has no more than ``num_train``).
    """
    rng = np.random.default_rng(seed)
    train = np.asarray(train)[rng.permutation(len(train))]
    evals = np.asarray(evals)[rng.permutation(len(evals))]
    bank = train[:num_train]
    queries = evals[:num_eval] if len(evals) else train[max(num_train, len(train) - num_eval) :]
    return np.sort(bank), np.sort(queries)


class PretrainDiagnostics(Callback):
    """Per-epoch diagnostics of a pre-training method (see the module docstring for every value it logs).

    Args:
        num_train: recordings of the train split in the probe's memory bank (a fixed seeded random subset: stores
            are often sorted by class).
        num_eval: recordings of the evaluation split queried by the probe (fixed seeded random subset).
        eval_split: ``"val"`` (the data module's ``val_split``) or a split name such as ``"test"``; without such a
            split the probe queries ``num_eval`` other recordings of the train split (disjoint from the bank).
        knn_k, knn_temperature: kNN vote (k neighbours, similarity temperature).
        linear: also fit the L-BFGS logistic probe (a few seconds more per epoch).
        projector_attr: attribute of the method holding its projector (``None`` = only backbone features).
        every_n_epochs: probe and collapse monitors every n epochs (running averages are logged every epoch).
    """

    def __init__(
        self,
        num_train: int = 256,
        num_eval: int = 128,
        eval_split: str = "val",
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        linear: bool = False,
        projector_attr: str | None = "projector",
        every_n_epochs: int = 1,
    ) -> None:
        if num_train < 1 or num_eval < 1 or every_n_epochs < 1:
            raise ValueError("PretrainDiagnostics: num_train, num_eval and every_n_epochs must be >= 1")
        self.num_train, self.num_eval, self.eval_split = int(num_train), int(num_eval), eval_split
        self.knn_k, self.knn_temperature, self.linear = int(knn_k), float(knn_temperature), bool(linear)
        self.projector_attr = projector_attr
        self.every_n_epochs = int(every_n_epochs)
        self._subset: tuple[list[dict[str, Any]], list[dict[str, Any]], int] | None = None
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------------------------------------- helpers
    def _add(self, key: str, value: float) -> None:
        if not math.isnan(value):
            self._sums[key] += value
            self._counts[key] += 1

    def _fixed_subset(self, trainer: Trainer) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int] | None:
        if self._subset is not None:
            return self._subset
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "split_indices") or not getattr(dm, "num_classes", 0):
            return None
        from torch.utils.data import DataLoader

        from evssl.data.collate import Collate
        from evssl.data.datasets import StoreDataset

        def load(idx: np.ndarray) -> list[dict[str, Any]]:
            if not len(idx):
                return []
            ds = StoreDataset(dm.store_path, idx, dm.eval_sampler, train=False, seed=0)
            loader = DataLoader(ds, batch_size=64, shuffle=False, collate_fn=Collate(dm._transform(False)))
            return [{"input": b["input"].float(), "label": b["label"]} for b in loader]

        def indices(split: str | None) -> np.ndarray:
            try:
                return np.asarray(dm.split_indices(split)) if split is not None else np.zeros(0, np.int64)
            except (KeyError, ValueError):
                return np.zeros(0, np.int64)

        split = dm.val_split if self.eval_split == "val" else self.eval_split
        bank, queries = probe_subsets(indices(dm.train_split), indices(split), self.num_train, self.num_eval)
        train, evals = load(bank), load(queries)
        if not train or not evals:
            return None
        self._subset = (train, evals, int(dm.num_classes))
        return self._subset

    @torch.no_grad()
    def _embed(self, pl_module: LightningModule, batches: list[dict[str, Any]]) -> tuple[Tensor, Tensor, Tensor | None]:
        feats, labels, projs = [], [], []
        projector = getattr(pl_module, self.projector_attr, None) if self.projector_attr else None
        for b in batches:
            x = b["input"].to(pl_module.device)
            if hasattr(pl_module, "probe_features"):
                f = pl_module.probe_features({"input": x})
            elif hasattr(pl_module, "features"):  # Classifier
                f = pl_module.features({"input": x})
            else:
                f = pl_module.backbone(x)
            feats.append(f.float().cpu())
            labels.append(b["label"])
            if projector is not None:
                try:
                    projs.append(projector(f).float().cpu())
                except (RuntimeError, TypeError, ValueError):
                    projector = None
                    projs = []
        return torch.cat(feats), torch.cat(labels), (torch.cat(projs) if projs else None)

    # ----------------------------------------------------------------------------------------------- hooks
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sums.clear()
        self._counts.clear()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not isinstance(batch, dict):
            return
        streams = {k: v for k, v in batch.items() if hasattr(v, "batch_index") and hasattr(v, "batch_size")}
        main = self._input_key(trainer, streams)
        for key, ev in streams.items():
            counts = events_per_window(ev.batch_index, int(ev.batch_size)).double()
            prefix = "data" if key == main else f"data/{key}"
            self._add(f"{prefix}/events_per_window", float(counts.mean()))
            self._add(f"{prefix}/events_per_window_min", float(counts.min()))
        x = batch.get("input")
        if isinstance(x, Tensor) and x.dim() == 4:
            self._add("data/empty_pixel_fraction", empty_pixel_fraction(x))

    @staticmethod
    def _input_key(trainer: Trainer, streams: dict[str, Any]) -> str | None:
        """The event key represented into ``batch["input"]`` (the sampler's ``representation_keys``)."""
        sampler = getattr(getattr(trainer, "datamodule", None), "sampler", None)
        try:
            keys = sampler.representation_keys() if sampler is not None else {}
        except (AttributeError, TypeError):
            keys = {}
        main = next((k for k, out in keys.items() if out == "input" and k in streams), None)
        return main or ("events" if "events" in streams else next(iter(streams), None))

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        for i, group in enumerate(optimizer.param_groups):
            grads = [p.grad.detach().double().pow(2).sum() for p in group["params"] if p.grad is not None]
            if grads:
                self._add(f"grad_norm/{group.get('name', f'group{i}')}", float(torch.stack(grads).sum().sqrt()))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and isinstance(value, Tensor) and value.numel() == 1:
                self._add(key, float(value))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logs = {f"diag/{k}": self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}
        if trainer.current_epoch % self.every_n_epochs == 0:
            logs.update(self.probe(trainer, pl_module))
        self.history.append({"epoch": float(trainer.current_epoch), **logs})
        for logger in trainer.loggers:
            logger.log_metrics(logs, step=trainer.global_step)

    def probe(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """kNN (and linear) probe + collapse monitors of the current backbone on the fixed subset."""
        from evssl.benchmark.evaluate import knn_classify, linear_probe

        subset = self._fixed_subset(trainer)
        if subset is None:
            return {}
        train, evals, classes = subset
        was_training = pl_module.training
        pl_module.eval()
        try:
            ftr, ytr, ptr = self._embed(pl_module, train)
            fte, yte, _ = self._embed(pl_module, evals)
        finally:
            pl_module.train(was_training)
        out = {
            "diag/knn_acc": knn_classify((ftr, ytr), (fte, yte), classes, self.knn_k, self.knn_temperature),
            "diag/feat_std_sqrt_d": std_sqrt_d(ftr),
            "diag/feat_effective_rank": effective_rank(ftr),
        }
        if self.linear:
            out["diag/linear_acc"] = linear_probe((ftr, ytr), (fte, yte), classes)
        if ptr is not None:
            out["diag/proj_std_sqrt_d"] = std_sqrt_d(ptr)
            out["diag/proj_effective_rank"] = effective_rank(ptr)
        return out
