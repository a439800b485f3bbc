"""The one LightningDataModule of evssl: stores (synthetic by default) -> windows -> event batches -> tensors.

Classification, dense (``DenseWindow``), sequence (``SequenceWindows``) and multi-view pre-training data all go
through :class:`EventDataModule`; only the sampler changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from evssl.data.collate import Collate
from evssl.data.datasets import EpochSampler, StoreDataset
from evssl.data.samplers import ClassificationWindow, WindowSampler
from evssl.data.sources import (
    ConcatStoreDataset,
    DropLabels,
    StoreSource,
    auto_val_split,
    first_class_difference,
    parse_sources,
)
from evssl.events.representations import Representation, VoxelGrid

__all__ = ["ApplyRepresentations", "EventDataModule", "StoreMeta", "skip_validation_without_data"]

log = logging.getLogger(__name__)


def skip_validation_without_data(datamodule: Any, stage: str | None) -> None:
    """In ``setup`` of a fit: without a ``"val"`` dataset, switch the trainer's validation loop off
    (``limit_val_batches = 0``) rather than hand Lightning the empty loader ``val_dataloader`` returns, which it
    warns about ("Total length of `list` across ranks is zero"). ``validate`` without data keeps that warning."""
    trainer = getattr(datamodule, "trainer", None)
    if stage in (None, "fit") and "val" not in datamodule.datasets and trainer is not None:
        trainer.limit_val_batches = 0


@dataclass(frozen=True)
class StoreMeta:
    """Cheap store metadata read once in the main process."""

    path: Path
    classes: list[str]
    labels: np.ndarray
    splits: np.ndarray
    sensor_size: tuple[int, int]
    store_id: str | None = None  # the store's identity; datasets refuse a file replaced since (StoreChangedError)

    def __len__(self) -> int:
        return len(self.labels)


class ApplyRepresentations:
    """Batch transform: ``batch[out_key] = representation(batch[event_key])`` for every mapped event key present.

    Picklable (used inside DataLoader workers when ``representation_on="worker"``) and device-agnostic (used in
    ``on_after_batch_transfer`` when ``representation_on="device"``).
    """

    def __init__(self, mapping: dict[str, tuple[str, Any]]) -> None:
        self.mapping = dict(mapping)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for ev_key, (out_key, rep) in self.mapping.items():
            if ev_key in batch:
                batch[out_key] = rep(batch[ev_key])
        return batch


class EventDataModule(LightningDataModule):
    """Event data for every evssl method and task.

    Args:
        source: ``"synthetic"`` (the cached synthetic store, see :func:`evssl.data.synthetic.synthetic_store`) or the
            path of an evssl store.
        synthetic_size: size of the synthetic store (``"tiny"``, ...).
        seed: seed of the synthetic store, of the per-item window/augmentation generators and of the shuffling.
        sampler: training sampler (default :class:`ClassificationWindow()`).
        eval_sampler: validation/test/predict sampler (default: ``sampler``, called with ``train=False``).
        representation: event representation (default ``VoxelGrid(5)``), applied to every event key of
            ``sampler.representation_keys()``; a sampler with a ``representations`` dict overrides it per key.
        representation_on: ``"device"`` (batched, in ``on_after_batch_transfer`` on the accelerator) or
            ``"worker"`` (in the collate function inside the DataLoader workers).
        batch_size: samples per batch and per device.
        num_workers: DataLoader worker processes.
        persistent_workers: keep workers between epochs (only used when ``num_workers > 0``).
        pin_memory: pin host memory; ``None`` = when CUDA is available.
        train_split, val_split, test_split: names in the store's split column (``None`` skips that stage).
            Stores without splits are split deterministically with ``split_fractions`` (train, val, test).
        cache_dir: where synthetic stores are cached (default ``$EVSSL_CACHE`` or ``~/.cache/evssl``).
        drop_last: drop the last incomplete training batch (ignored when a rank has fewer items than one batch).
        windows_per_recording: items per recording in every split (many windows of long sequences).
        split_fractions: (train, val, test) fractions for stores without a split column.
        train, val, test: per-stage sources that override ``source``: a store path, ``"path:split"``, or a list of
            them (the stage reads the recordings of all of them). A source without ``:split`` reads the stage's
            split name (``train_split`` / ``val_split`` / ``test_split``) when the store has it, else every recording
            of a store with at most one split name (a train-only or unsplit store); otherwise it is an error listing
            the store's splits. Metadata (classes, sensor size, ``num_classes``) come from the first store of
            ``train``, else ``val``, else ``test``, else ``source``; labelled stores must share one class list
            (the error names the first difference).
        val_fraction: **automatic validation split** when no ``val`` source is given and the training store(s)
            have no ``val_split``: this fraction of the training recordings of every training store, stratified by
            label and seeded by ``seed`` (:func:`~evssl.data.sources.auto_val_split`), is held out of training and
            used for validation; logged at setup. ``0`` = no validation.
        labels: ``"use"`` (default): samples carry each store's ``"label"`` (and dense ground truth when the
            sampler reads it); pre-training methods feed it only to their online probe, on detached features.
            ``"ignore"``: label-free pre-training from a labelled store: no label key (``label``, ``semantic``,
            ``flow``, ``depth``) reaches the model and ``num_classes`` is 0, so no online probe is built. Setup logs
            which labels are used.

    Epoch handling: samples are keyed by ``(seed, epoch, recording, window)`` and the epoch travels with the indices
    (:class:`~evssl.data.datasets.EpochSampler`), so results are identical for any ``num_workers``, across ranks
    and after resuming from a checkpoint. Under DDP each rank reads its own shard of the split.
    """

    def __init__(
        self,
        source: str = "synthetic",
        synthetic_size: str = "tiny",
        seed: int = 0,
        sampler: WindowSampler | None = None,
        eval_sampler: WindowSampler | None = None,
        representation: Representation | None = None,
        representation_on: str = "device",
        batch_size: int = 32,
        num_workers: int = 2,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        cache_dir: str | None = None,
        drop_last: bool = True,
        windows_per_recording: int = 1,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        val_fraction: float = 0.1,
        labels: str = "use",
    ) -> None:
        super().__init__()
        if labels not in ("use", "ignore"):
            raise ValueError(f"labels must be 'use' or 'ignore', got {labels!r}")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if representation_on not in ("device", "worker"):
            raise ValueError(f"representation_on must be 'device' or 'worker', got {representation_on!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = str(source)
        self.synthetic_size = synthetic_size
        self.seed = int(seed)
        self.sampler = sampler if sampler is not None else ClassificationWindow()
        self.eval_sampler = eval_sampler if eval_sampler is not None else self.sampler
        self.representation = representation if representation is not None else VoxelGrid(5)
        self.representation_on = representation_on
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.cache_dir = cache_dir
        self.drop_last = bool(drop_last)
        self.windows_per_recording = int(windows_per_recording)
        self.split_fractions = tuple(float(f) for f in split_fractions)
        self.sources: dict[str, list[StoreSource]] = {
            "train": parse_sources(train),
            "val": parse_sources(val),
            "test": parse_sources(test),
        }
        self.val_fraction = float(val_fraction)
        self.labels = labels
        self._meta: StoreMeta | None = None
        self._metas: dict[Path, StoreMeta] = {}
        self.datasets: dict[str, Any] = {}
        self.plan: dict[str, list[tuple[Path, np.ndarray, str]]] = {}
        self._described = False

    # ------------------------------------------------------------------ store metadata (no setup needed)
    @property
    def store_path(self) -> Path:
        """The store file (generates the synthetic store on first access)."""
        return self.meta.path

    @property
    def meta(self) -> StoreMeta:
        """Classes, labels, splits and sensor size of the store, read once."""
        if self._meta is None:
            explicit = [src for role in ("train", "val", "test") for src in self.sources[role]]
            if explicit:
                path = explicit[0].path
                what = "data." + next(r for r in ("train", "val", "test") if self.sources[r])
            elif self.source == "synthetic":
                from evssl.data.synthetic import synthetic_store

                path, what = synthetic_store(self.synthetic_size, self.seed, self.cache_dir), "data.source"
            else:
                path, what = Path(self.source).expanduser(), "data.source"
            self._meta = self._store_meta(path, what)
        return self._meta

    def _store_meta(self, path: Path, what: str = "data source") -> StoreMeta:
        """Metadata of any store (cached)."""
        path = Path(path)
        if path not in self._metas:
            if not path.exists():
                raise FileNotFoundError(f"event store {path} not found ({what})")
            from evssl.events.io.store import EventStore

            store = EventStore(path)
            try:
                size = store.attrs.get("sensor_size") if isinstance(store.attrs, dict) else None
                if size is None:
                    info = store.info(0) if len(store) else None
                    size = (info.height, info.width) if info is not None else (0, 0)
                self._metas[path] = StoreMeta(
                    path=path,
                    classes=list(store.classes),
                    labels=np.asarray(store.labels, dtype=np.int64),
                    splits=np.asarray(store.splits).astype(str),
                    sensor_size=(int(size[0]), int(size[1])),
                    store_id=store.store_id,
                )
            finally:
                store.close()
        return self._metas[path]

    @property
    def num_classes(self) -> int:
        """Number of classes of the store (``len(store.classes)``); 0 with ``labels="ignore"``."""
        return 0 if self.labels == "ignore" else len(self.meta.classes)

    @property
    def in_channels(self) -> int:
        """Channels of the default representation (the backbone's ``in_chans``)."""
        return int(self.representation.channels)

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(H, W) of the events the model sees: the training sampler's output size (crop / resolution) or the
        store's sensor size."""
        return tuple(self.sampler.output_size(self.meta.sensor_size))  # type: ignore[return-value]

    @property
    def store_sensor_size(self) -> tuple[int, int]:
        """(H, W) of the store's sensor."""
        return self.meta.sensor_size

    def split_indices(self, name: str) -> np.ndarray:
        """Recording indices of split ``name`` in the main store (store split column, or the deterministic fraction
        split); with an automatic validation split (see ``val_fraction``), ``val_split`` is the held-out part of
        ``train_split`` and ``train_split`` excludes it."""
        splits = self.meta.splits
        if len(splits) and (splits != "").any():
            idx = np.flatnonzero(splits == name)
            if len(idx) == 0 and name == self.val_split and self._auto_val_applies(self.meta):
                return self._auto_val(self.meta)[1]
            if len(idx) == 0:
                hint = ""
                if name == self.test_split:
                    hint = "; give a test store with --data.init_args.test PATH[:SPLIT]"
                raise ValueError(
                    f"split {name!r} not in store {self.meta.path} (has {sorted(set(splits.tolist()))}){hint}"
                )
            if name == self.train_split and self._auto_val_applies(self.meta):
                return self._auto_val(self.meta)[0]
            return idx
        return self._fraction_split(name)

    # ------------------------------------------------------------------ sources, automatic validation split
    def _auto_val_applies(self, meta: StoreMeta) -> bool:
        """No val source, no ``val_split`` in the store, a ``val_fraction`` and a train split to take it from."""
        if self.sources["val"] or self.val_split is None or self.val_fraction <= 0:
            return False
        splits = meta.splits
        return not (splits == self.val_split).any()

    def _auto_val(self, meta: StoreMeta, train_idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(kept training indices, held-out validation indices) of a store's training recordings."""
        if train_idx is None:
            train_idx = np.flatnonzero(meta.splits == self.train_split)
        held = auto_val_split(meta.labels[train_idx], self.val_fraction, self.seed)
        return train_idx[~held], train_idx[held]

    def _source_indices(self, src: StoreSource, role: str) -> tuple[np.ndarray, str]:
        """Indices of a source for a stage, and a description of what they are."""
        meta = self._store_meta(src.path, f"data.{role}")
        splits = meta.splits
        names = sorted(set(splits.tolist()) - {""})
        if src.split is not None:
            idx = np.flatnonzero(splits == src.split)
            if not len(idx):
                raise ValueError(f"split {src.split!r} not in store {src.path} (has {names}) (data.{role})")
            return idx, f"split {src.split!r}"
        want = {"train": self.train_split, "val": self.val_split, "test": self.test_split}[role]
        if want is not None and (splits == want).any():
            return np.flatnonzero(splits == want), f"split {want!r}"
        if len(names) <= 1:
            return np.arange(len(splits)), "all recordings"
        raise ValueError(
            f"store {src.path} has splits {names} but not {want!r} (data.{role}); name one as '{src.path}:SPLIT'"
        )

    def _check_classes(self, path: Path) -> None:
        if self.labels == "ignore":
            return
        a, b = self.meta.classes, self._store_meta(path).classes
        if a and b:
            diff = first_class_difference(a, b)
            if diff is not None:
                raise ValueError(
                    f"stores {self.meta.path} and {path} number their classes differently: {diff}; convert both "
                    "with the same class list, or use labels: ignore"
                )

    def _train_val_of(self, src: StoreSource) -> tuple[np.ndarray, np.ndarray, str, str]:
        """(train indices, val indices, descriptions) of an explicit train source with no val source given: the
        store's own ``val_split`` when it has one, else the automatic held-out part of its training recordings."""
        idx, what = self._source_indices(src, "train")
        meta = self._store_meta(src.path, "data.train")
        own = np.flatnonzero(meta.splits == self.val_split) if self.val_split else np.zeros(0, np.int64)
        if self.val_split is None or self.sources["val"]:
            return idx, np.zeros(0, np.int64), what, ""
        if len(own) and src.split != self.val_split:
            return idx, own, what, f"split {self.val_split!r}"
        if self.val_fraction <= 0:
            return idx, np.zeros(0, np.int64), what, ""
        kept, held = self._auto_val(meta, idx)
        return kept, held, f"{what} minus the automatic validation split", f"automatic {self.val_fraction:g} of {what}"

    def _plan(self, role: str) -> list[tuple[Path, np.ndarray, str]]:
        """``[(store, recording indices, description)]`` of a stage (cached)."""
        if role in self.plan:
            return self.plan[role]
        out: list[tuple[Path, np.ndarray, str]] = []
        if self.sources[role] and role != "train":
            out = [(src.path, *self._source_indices(src, role)) for src in self.sources[role]]
        elif self.sources[role]:  # train: minus an automatic validation split
            out = [(src.path, tr, wt) for src in self.sources["train"] for tr, _, wt, _ in [self._train_val_of(src)]]
        elif any(self.sources.values()):
            if role == "val":
                out = [(s.path, va, wv) for s in self.sources["train"] for _, va, _, wv in [self._train_val_of(s)]]
                out = [o for o in out if len(o[1])]
        else:
            split = {"train": self.train_split, "val": self.val_split, "test": self.test_split}[role]
            if split is not None:
                meta = self.meta
                labelled_splits = bool(len(meta.splits)) and bool((meta.splits != "").any())
                what = f"split {split!r}"
                if labelled_splits and role in ("train", "val") and self._auto_val_applies(meta):
                    what = (
                        f"split {self.train_split!r} minus the automatic validation split"
                        if role == "train"
                        else f"automatic {self.val_fraction:g} of split {self.train_split!r}"
                    )
                elif not labelled_splits:
                    what = f"fraction split {split!r}"
                out = [(meta.path, self.split_indices(split), what)]
        for path, _, _ in out:
            self._check_classes(path)
        self.plan[role] = out
        return out

    def describe(self) -> str:
        """One line per stage: which stores, splits and how many recordings; and which labels batches carry."""
        lines = []
        for role in ("train", "val", "test"):
            try:
                plan = self._plan(role)
            except ValueError as e:
                lines.append(f"  {role}: not available ({e})")
                continue
            if not plan:
                lines.append(f"  {role}: none")
                continue
            parts = [f"{p.name} {w} ({len(i)} recordings)" for p, i, w in plan]
            lines.append(f"  {role}: " + " + ".join(parts))
        if any("automatic" in ln for ln in lines):
            lines.append(
                f"  automatic validation split: {self.val_fraction:g} of the training recordings, stratified by "
                f"label, seed {self.seed}, held out of training"
            )
        classes = self.meta.classes
        if self.labels == "ignore":
            lines.append("  labels: ignore: batches carry no 'label' or dense ground truth (num_classes = 0, no probe)")
        elif classes:
            shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
            lines.append(
                f"  labels: use: batches carry the stores' 'label' ({len(classes)} classes: {shown}); pre-training "
                "methods train only their online probe on it (detached features); labels: ignore drops it"
            )
        else:
            lines.append("  labels: the store has no classes (unlabelled)")
        return "evssl data:\n" + "\n".join(lines)

    def _fraction_split(self, name: str) -> np.ndarray:
        n = len(self.meta)
        perm = np.random.default_rng([self.seed, 0x5B11]).permutation(n)
        f_train, f_val, _ = self.split_fractions
        n_train = round(n * f_train)
        n_val = round(n * f_val)
        parts = {
            self.train_split: perm[:n_train],
            self.val_split: perm[n_train : n_train + n_val],
            self.test_split: perm[n_train + n_val :],
        }
        if name not in parts:
            raise ValueError(f"store {self.meta.path} has no split column; split {name!r} is not one of {parts}")
        return np.sort(parts[name])

    # ------------------------------------------------------------------ checkpoint state: the class list
    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the class list (and path) of the store the model was trained on."""
        return {"classes": list(self.meta.classes), "store": str(self.meta.path)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """On ``--ckpt_path`` (resume, ``test``, ``validate``): refuse a store whose class list differs from the one
        the checkpoint was trained on, naming the first difference (label ``k`` must mean the same class)."""
        if "classes" not in state:
            return
        from evssl.events.io.store import check_class_lists

        check_class_lists(
            [
                (f"the checkpoint's training store {state.get('store', '')}".strip(), list(state["classes"])),
                (str(self.meta.path), list(self.meta.classes)),
            ]
        )

    # ------------------------------------------------------------------ representation
    def representation_mapping(self, sampler: WindowSampler) -> dict[str, tuple[str, Any]]:
        """{event key: (output key, representation)} for a sampler."""
        own = getattr(sampler, "representations", None) or {}
        return {k: (out, own.get(k, self.representation)) for k, out in sampler.representation_keys().items()}

    def _transform(self, train: bool) -> ApplyRepresentations:
        return ApplyRepresentations(self.representation_mapping(self.sampler if train else self.eval_sampler))

    # ------------------------------------------------------------------ datasets and loaders
    def prepare_data(self) -> None:
        """Generate the synthetic store if needed (Lightning calls this once per node before ``setup``)."""
        _ = self.meta

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the stage (``fit``, ``validate``, ``test``, ``predict``)."""
        plan: list[tuple[str, str | None, bool]] = []
        if stage in (None, "fit"):
            plan += [("train", self.train_split, True), ("val", self.val_split, False)]
        if stage == "validate":
            plan.append(("val", self.val_split, False))
        if stage in (None, "test", "predict"):
            plan.append(("test", self.test_split, False))
        if not self._described:
            self._described = True
            from lightning.pytorch.utilities.rank_zero import rank_zero_info

            rank_zero_info(self.describe())
        for role, split, train in plan:
            if role in self.datasets or (split is None and not self.sources[role]):
                continue
            parts = [
                StoreDataset(
                    path,
                    idx,
                    self.sampler if train else self.eval_sampler,
                    train=train,
                    seed=self.seed,
                    windows_per_recording=self.windows_per_recording,
                    store_id=self._store_meta(path).store_id,
                )
                for path, idx, _ in self._plan(role)
                if len(idx)
            ]
            if not parts:
                continue
            ds: Any = parts[0] if len(parts) == 1 else ConcatStoreDataset(parts)
            self.datasets[role] = DropLabels(ds) if self.labels == "ignore" else ds
        skip_validation_without_data(self, stage)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _loop_epoch(self) -> int:
        """The fit loop's epoch counter (restored from a checkpoint on resume), 0 without a trainer.

        Lightning calls ``sampler.set_epoch`` at every epoch start, but on resume it creates the first iterator (and
        worker processes prefetch their first indices) *before* that call; starting the sampler at the restored
        epoch makes the resumed epoch identical to the uninterrupted run.
        """
        trainer = getattr(self, "trainer", None)
        try:
            return int(trainer.fit_loop.epoch_progress.current.processed)  # type: ignore[union-attr]
        except AttributeError:
            return 0

    def _loader(self, role: str, train: bool) -> DataLoader | list:
        if role not in self.datasets:
            self.setup("fit" if role in ("train", "val") else "test")
        ds = self.datasets.get(role)
        if ds is None:
            if role == "test" and any(self.sources.values()) and self.test_split is not None:
                raise ValueError(
                    "no test data: give it with --data.init_args.test PATH[:SPLIT] (a store, or a list of stores)"
                )
            return []
        rank, world = self._rank_world()
        sampler = EpochSampler(ds, num_replicas=world, rank=rank, shuffle=train, seed=self.seed)
        sampler.set_epoch(self._loop_epoch())
        drop_last = train and self.drop_last and len(sampler) >= self.batch_size
        transform = self._transform(train) if self.representation_on == "worker" else None
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=Collate(transform),
            pin_memory=self.pin_memory,
            drop_last=drop_last,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, sharded training batches."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches (deterministic windows); ``[]`` when ``val_split`` is None."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader | list:
        """Test batches (deterministic windows)."""
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader | list:
        """The test split, as for :meth:`test_dataloader`."""
        return self._loader("test", False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply the representation on the device (``representation_on="device"``)."""
        if self.representation_on != "device" or not isinstance(batch, dict):
            return batch
        trainer = getattr(self, "trainer", None)
        train = bool(trainer is not None and trainer.training)
        return self._transform(train)(batch)
