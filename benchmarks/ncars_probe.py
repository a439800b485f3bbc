"""First evaluation on real recordings: N-Cars linear probe after label-free pre-training (issue 15 §2).

For each seed and method (BraVe, ECDDP; ``--methods``):

1. convert the labelled N-Cars subset (``$EVSSL_REAL_DATA_LABELLED/ncars-subset``: 1,000 train / 1,000 test real
   ATIS recordings, background / car, crops <= 120x100) with :func:`evssl.data.sets.convert_dataset` (``ncars``;
   ``--max-per-class`` files per split and class, evenly spread; once, cached in ``--work``);
2. pre-train the method on the **train** split with ``EventDataModule(train=store, labels="ignore")`` — no label
   reaches the model and no online probe is built;
3. export the backbone (:func:`evssl.export.export_backbone`) and load it back (:func:`load_exported_backbone`), so
   the probed weights are the exported ones;
4. linear probe: freeze it, extract pooled features of ``--probe-windows`` centred windows per recording (train and
   test), re-estimate BatchNorm statistics on the train windows (every probed backbone, random init too), fit a
   multinomial logistic regression on standardised features (full-batch L-BFGS, L2 1e-4) on the **train labels**,
   report **test** top-1 per recording (log-probabilities of its windows averaged);
5. beside it: the same architecture randomly initialised (the pre-training run's initial weights) and probed the
   same way, and the same architecture trained **supervised from scratch** on the train labels (``--sup-epochs``,
   AdamW, random windows + horizontal flips) and tested the same way.

ECDP needs an image paired with every recording (its loss aligns events with CLIP image embeddings); N-Cars has
events only, so its row says so instead of a number.

Inputs per method: BraVe — narrow view ``--narrow-ms`` (30) at 40x48 (the 100x120 crop binned 2.5x), 5-bin voxel
grid; broad views 55 ms (fits the shortest clip, 57.7 ms) at 20x24: a 10-bin voxel grid and a 2-channel histogram;
tiny ResNets (one BasicBlock per stage, width 16, 128 pooled features), LARS. ECDDP — 6-bin voxel grid of 55 ms at
48x56, random 48x48 crops, tiny Swin (patch 2, width 24, 192 pooled features), 2 global 32 px + 2 local 16 px crops.
The probe uses each method's backbone input (same window length, resolution and representation).

    python benchmarks/ncars_probe.py                                     # full subset, 3 seeds (long on CPU)
    python benchmarks/ncars_probe.py --max-per-class 40 --epochs 1 --sup-epochs 1 --methods brave   # smoke

Budget, seeds and load are printed with the table. The store is never written into the repository (``--work``
defaults to a temporary folder).

Measured so far (a smoke budget that only proves the path runs end to end; not evidence about any method):
``--max-per-class 50 --epochs 2 --sup-epochs 2 --seeds 0 1 2`` (100 train / 100 test recordings, 2 pre-training
steps per seed, 1 torch thread, 77 s wall on 2 CPU cores shared with six other jobs, load ~6):

| backbone / method | probe after label-free pre-training | random init, probed | supervised scratch |
|---|---|---|---|
| BraVe | 56.3 ± 6.1 (55.0 / 51.0 / 63.0) | 59.3 ± 1.2 (58.0 / 60.0 / 60.0) | 50.0 ± 0.0 (50.0 / 50.0 / 50.0) |
| ECDDP | 51.0 ± 6.6 (44.0 / 52.0 / 57.0) | 51.3 ± 6.5 (45.0 / 51.0 / 58.0) | 49.3 ± 1.2 (48.0 / 50.0 / 50.0) |
| ECDP | n/a: needs a paired image per recording; N-Cars has events only | | |

Everything is at chance within the seed spread (2 optimiser steps). The real table (all 2,000 recordings, tens of
epochs, >= 3 seeds) is for a session with more CPU time.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brave_probe import features, linear_probe, recalibrate_bn, tiny_resnet

from evssl.data.collate import Collate
from evssl.data.datamodules import EventDataModule
from evssl.data.datasets import StoreDataset
from evssl.data.samplers import ClassificationWindow, DenseWindow
from evssl.data.sets import convert_dataset
from evssl.events import augment as aug
from evssl.events.representations import Histogram, VoxelGrid
from evssl.export import export_backbone, load_exported_backbone

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("EVSSL_REAL_DATA_LABELLED", REPO / "../shared/real-data-labelled")) / "ncars-subset"
BROAD_US = 55_000


# ------------------------------------------------------------------------------------------------ method API
def method_kwargs(cls: type, *, optimizer: str, lr: float, weight_decay: float, warmup_epochs: float, **rest: Any):
    """Optimiser / EMA / probe arguments in the form ``cls`` takes: today's flat keywords, or the Methods-v2 groups
    (``optim: OptimConfig``, ``ema: EmaConfig``, ``probe: ProbeConfig``) once that API has landed."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    ema = rest.pop("ema_momentum", None)
    lr_batch_scale = rest.pop("lr_batch_scale", False)
    min_lr_ratio = rest.pop("min_lr_ratio", 0.0)
    if "optim" not in params:
        out = dict(optimizer=optimizer, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, probe_classes=0)
        if "lr_batch_scale" in params:
            out.update(lr_batch_scale=lr_batch_scale, min_lr_ratio=min_lr_ratio)
        if ema is not None:
            out["ema_momentum"] = ema
        return {**out, **rest}
    from evssl.optim import EmaConfig, OptimConfig  # type: ignore[import-not-found]

    try:
        from evssl.optim import ProbeConfig  # type: ignore[import-not-found]
    except ImportError:  # ProbeConfig may live next to the probe module
        from evssl.nn.probe import ProbeConfig  # type: ignore[import-not-found]
    out = dict(
        optim=OptimConfig(
            name=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            lr_batch_scale=lr_batch_scale,
            min_lr_ratio=min_lr_ratio,
        ),
        probe=ProbeConfig(enabled=False, classes=0),
    )
    if ema is not None:
        out["ema"] = EmaConfig(momentum=ema)
    return {**out, **rest}


# ------------------------------------------------------------------------------------------------ per-method setup
class MethodSetup:
    """How one method pre-trains and what its backbone sees (window, resolution, representation)."""

    name = ""
    window_us = BROAD_US
    resolution = (48, 56)
    representation: Any = None

    def backbone(self) -> nn.Module:
        raise NotImplementedError

    def pretrain_data(self, store: Path, args: argparse.Namespace) -> EventDataModule:
        raise NotImplementedError

    def model(self, backbone: nn.Module, args: argparse.Namespace) -> Any:
        raise NotImplementedError


class BraVeSetup(MethodSetup):
    name = "BraVe"

    def __init__(self, args: argparse.Namespace) -> None:
        self.window_us = args.narrow_ms * 1000
        self.resolution = (40, 48)
        self.representation = VoxelGrid(5)

    def backbone(self) -> nn.Module:
        return tiny_resnet(5, 16)

    def pretrain_data(self, store: Path, args: argparse.Namespace) -> EventDataModule:
        from evssl.methods.brave import BroadViewSpec, NarrowBroadViews

        broad = [
            BroadViewSpec(resolution=(20, 24), representation=VoxelGrid(10)),
            BroadViewSpec(resolution=(20, 24), representation=Histogram(normalize=True)),
        ]
        sampler = NarrowBroadViews(
            narrow_us=self.window_us, broad_us=BROAD_US, narrow_resolution=self.resolution, broad=broad
        )
        return _dm(store, sampler, self.representation, args, labels="ignore")

    def model(self, backbone: nn.Module, args: argparse.Namespace) -> Any:
        from evssl.methods.brave import BraVe

        return BraVe(
            backbone,
            [tiny_resnet(10, 16), tiny_resnet(2, 16)],
            proj_hidden_dim=1024,
            proj_dim=128,
            pred_hidden_dim=1024,
            **method_kwargs(
                BraVe, optimizer="lars", lr=args.brave_lr, weight_decay=1e-2, warmup_epochs=min(1.0, args.epochs / 4)
            ),
        )


class ECDDPSetup(MethodSetup):
    name = "ECDDP"

    def __init__(self, args: argparse.Namespace) -> None:
        self.window_us = BROAD_US
        self.resolution = (48, 56)
        self.representation = VoxelGrid(6, normalize=False)

    def backbone(self, mask_token: bool = True) -> nn.Module:
        from evssl.nn.backbones import SwinTransformer

        return SwinTransformer(
            in_chans=6,
            patch_size=2,
            embed_dim=24,
            depths=(1, 1, 1, 1),
            num_heads=(1, 2, 3, 6),
            window_size=4,
            mask_token=mask_token,
        )

    def pretrain_data(self, store: Path, args: argparse.Namespace) -> EventDataModule:
        sampler = DenseWindow(
            self.window_us, resolution=self.resolution, crop_size=(48, 48), with_frames=False, with_dense=False
        )
        return _dm(store, sampler, self.representation, args, labels="ignore")

    def model(self, backbone: nn.Module, args: argparse.Namespace) -> Any:
        from evssl.methods.ecddp import ECDDP

        return ECDDP(
            backbone,
            neck_dim=64,
            num_prototypes=64,
            head_hidden_dim=128,
            head_bottleneck_dim=32,
            pool_heads=2,
            num_clusters=4,
            global_crop_size=32,
            local_crop_size=16,
            num_local_crops=2,
            teacher_temp=0.04,
            warmup_teacher_temp=0.04,
            warmup_teacher_temp_epochs=1,
            log_contexts_every_n_epochs=0,
            **method_kwargs(
                ECDDP,
                optimizer="adamw",
                lr=args.ecddp_lr,
                weight_decay=0.04,
                warmup_epochs=min(1.0, args.epochs / 4),
                lr_batch_scale=False,
                min_lr_ratio=0.01,
                ema_momentum=0.98,
            ),
        )


SETUPS = {"brave": BraVeSetup, "ecddp": ECDDPSetup}


# ------------------------------------------------------------------------------------------------ helpers
def _dm(store: Path, sampler: Any, rep: Any, args: argparse.Namespace, labels: str = "use") -> EventDataModule:
    return EventDataModule(
        train=f"{store}:train",
        test=f"{store}:test",
        sampler=sampler,
        representation=rep,
        batch_size=args.batch_size,
        num_workers=0,
        persistent_workers=False,
        val_fraction=0.0,
        labels=labels,
        windows_per_recording=args.windows,
    )


def _trainer(epochs: int, clip: float | None = None):
    from lightning.pytorch import Trainer

    return Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=clip,
        log_every_n_steps=1,
    )


def probe_loaders(store: Path, setup: MethodSetup, windows: int) -> tuple[DataLoader, DataLoader]:
    """Labelled, deterministic windows (K per recording, centred in K equal parts) of the train and test splits."""
    sampler = ClassificationWindow(duration_us=setup.window_us, resolution=setup.resolution)
    dm = _dm(store, sampler, setup.representation, argparse.Namespace(batch_size=1, windows=1))
    out = []
    for role in ("train", "test"):
        ((path, idx, _),) = dm._plan(role)
        ds = StoreDataset(path, idx, sampler, train=False, seed=0, windows_per_recording=windows)
        out.append(DataLoader(ds, batch_size=256, shuffle=False, collate_fn=Collate(dm._transform(False))))
    return out[0], out[1]


def supervised_scratch(store: Path, setup: MethodSetup, args: argparse.Namespace, seed: int, te: DataLoader) -> float:
    """Backbone + linear head trained on the train labels from random init; test top-1 with window averaging."""
    from lightning.pytorch import seed_everything

    from evssl.tasks.classification import Classifier

    seed_everything(seed, workers=True)
    bb = setup.backbone() if not isinstance(setup, ECDDPSetup) else setup.backbone(mask_token=False)
    sampler = ClassificationWindow(duration_us=setup.window_us, resolution=setup.resolution, augment=aug.FlipX(0.5))
    eval_sampler = ClassificationWindow(duration_us=setup.window_us, resolution=setup.resolution)
    dm = _dm(store, sampler, setup.representation, args)
    dm.eval_sampler = eval_sampler
    clf = Classifier(bb, num_classes=2, mode="scratch", lr=args.sup_lr, weight_decay=0.05, warmup_epochs=0.5)
    _trainer(args.sup_epochs).fit(clf, datamodule=dm)
    clf.eval()
    k = args.probe_windows
    with torch.no_grad():
        logits, labels = [], []
        for batch in te:
            logits.append(clf(batch["input"].float()))
            labels.append(batch["label"])
        lp = F.log_softmax(torch.cat(logits).double(), 1).reshape(-1, k, 2).mean(1)
        y = torch.cat(labels).reshape(-1, k)[:, 0]
    return float((lp.argmax(1) == y).double().mean())


def probe(backbone: nn.Module, tr: DataLoader, te: DataLoader, k: int) -> float:
    net = copy.deepcopy(backbone).float()
    recalibrate_bn(net, tr)
    return linear_probe(features(net, tr), features(net, te), 2, test_windows=k)


def run(setup: MethodSetup, store: Path, args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """One method, one seed: pre-train (no labels), export, probe; random init; supervised scratch."""
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True)
    backbone = setup.backbone()
    random_init = copy.deepcopy(backbone)
    model = setup.model(backbone, args)
    dm = setup.pretrain_data(store, args)
    t0 = time.time()
    tr_ = _trainer(args.epochs, clip=3.0 if isinstance(setup, ECDDPSetup) else None)
    tr_.fit(model, datamodule=dm)
    pre_s, steps = time.time() - t0, int(tr_.global_step)
    loss = float(tr_.callback_metrics.get("train/loss", float("nan")))
    out_pt = work / f"{setup.name.lower()}_seed{seed}.pt"
    export_backbone(None, out_pt, module=model)
    try:
        exported, export_note = load_exported_backbone(out_pt), "export round trip"
    except Exception as e:  # issue 18 §1: an export JSON that loses the backbone's arguments
        exported = setup.backbone() if not isinstance(setup, ECDDPSetup) else setup.backbone(mask_token=False)
        exported.load_state_dict(torch.load(out_pt, weights_only=True), strict=True)
        export_note = f"export JSON not loadable ({type(e).__name__}); weights loaded into the known architecture"
    t1 = time.time()
    tr, te = probe_loaders(store, setup, args.probe_windows)
    res = {"pretrain_s": pre_s, "steps": steps, "loss": loss, "export": export_note}
    res["pretrained"] = probe(exported, tr, te, args.probe_windows)
    res["random"] = probe(random_init, tr, te, args.probe_windows)
    res["probe_s"] = time.time() - t1
    t2 = time.time()
    res["supervised"] = supervised_scratch(store, setup, args, seed, te) if args.sup_epochs > 0 else float("nan")
    res["sup_s"] = time.time() - t2
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the N-Cars folder (train/, test/)")
    p.add_argument("--work", type=Path, default=None, help="folder for the store and exports (default: a temp dir)")
    p.add_argument("--max-per-class", type=int, default=None, help="files per split and class (default: all)")
    p.add_argument("--methods", nargs="+", default=["brave", "ecddp"], choices=sorted(SETUPS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10, help="pre-training epochs")
    p.add_argument("--sup-epochs", type=int, default=10, help="supervised-from-scratch epochs (0: skip)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--windows", type=int, default=1, help="pre-training windows per recording and epoch")
    p.add_argument("--narrow-ms", type=int, default=30)
    p.add_argument("--brave-lr", type=float, default=10.0, help="peak LARS lr (as benchmarks/brave_probe.py)")
    p.add_argument("--ecddp-lr", type=float, default=5e-4)
    p.add_argument("--sup-lr", type=float, default=2e-3)
    p.add_argument("--probe-windows", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if not (args.root / "train").is_dir():
        raise SystemExit(f"N-Cars not found at {args.root} (set EVSSL_REAL_DATA_LABELLED or --root)")
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ncars_probe_")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    store = args.work / f"ncars_{args.max_per_class or 'all'}.h5"
    if not store.exists():
        convert_dataset("ncars", args.root, store, max_per_class=args.max_per_class)
    from evssl.events.io.store import EventStore

    with EventStore(store) as s:
        n_train, n_test = int((s.splits == "train").sum()), int((s.splits == "test").sum())
    print(f"store {store.name}: {n_train} train / {n_test} test recordings (converted in {time.time() - start:.1f} s)")

    results: dict[str, list[dict[str, Any]]] = {}
    for m in args.methods:
        setup = SETUPS[m](args)
        for seed in args.seeds:
            r = run(setup, store, args, seed, args.work)
            results.setdefault(setup.name, []).append(r)
            print(
                f"{setup.name} seed {seed}: pre-trained {100 * r['pretrained']:.1f}%  random {100 * r['random']:.1f}%  "
                f"supervised {100 * r['supervised']:.1f}%  (pre-train {r['steps']} steps {r['pretrain_s']:.0f} s, "
                f"last loss {r['loss']:.3f}; probe {r['probe_s']:.0f} s; supervised {r['sup_s']:.0f} s; {r['export']})",
                flush=True,
            )

    def cell(rs: list[dict[str, Any]], key: str) -> str:
        v = np.array([100 * r[key] for r in rs])
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        return f"{v.mean():5.1f} ± {sd:4.1f} ({' / '.join(f'{x:.1f}' for x in v)})"

    print()
    print(
        f"N-Cars (real, {n_train} train / {n_test} test), test top-1 % (mean ± std over seeds {args.seeds}; per seed)"
    )
    print("| backbone / method | probe after label-free pre-training | random init, probed | supervised scratch |")
    print("|---|---|---|---|")
    for name, rs in results.items():
        print(f"| {name} | {cell(rs, 'pretrained')} | {cell(rs, 'random')} | {cell(rs, 'supervised')} |")
    print("| ECDP | n/a: needs a paired image per recording (CLIP alignment); N-Cars has events only | | |")
    print(
        f"budget: {args.epochs} pre-training epochs (batch {args.batch_size}, {args.windows} window/recording), "
        f"{args.sup_epochs} supervised epochs, probe {args.probe_windows} windows/recording; {args.threads} torch "
        f"thread(s), CPU; total {time.time() - start:.0f} s wall (chance 50%)"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
