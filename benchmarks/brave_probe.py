"""Does BraVe learn on events? Linear probe of the narrow backbone after pre-training, beside a random-init backbone.

For each seed:

1. pre-train :class:`evssl.methods.brave.BraVe` on the train split of a synthetic store (default ``small``: 64x64
   sensor, 200 ms clips of 10 moving textured shape classes with distractors and a moving textured background; 2,100
   train clips; labels are never used by the loss) with :class:`~evssl.data.views.NarrowBroadViews` — narrow:
   50 ms at 32x32, 5-bin voxel grid; broad: 150 ms windows starting with the narrow one, at 16x16, a 10-bin voxel
   grid and a 2-channel histogram; independent random-area crops (area [0.3, 1], aspect [0.5, 2]) and flips per view,
   RandConv on the broad views — tiny ResNets (one per view), shared projector/predictor, LARS (Nesterov, trust 1e-3,
   predictor lr x10), warm-up + cosine. The peak lr (10) is far above the paper's (1.0 for a batch of 512) because
   the schedule is ~500 steps instead of 300k;
2. freeze the narrow backbone and extract its pooled features once for the train and test splits: plain narrow
   windows over the whole sensor (the evaluation sampler), ``--probe-windows`` (4) windows per clip centred in equal
   parts of the clip. BatchNorm running statistics of every probed backbone (pre-trained *and* random) are first
   re-estimated on the probe's training windows, so the random-init baseline is not handicapped by uncalibrated BN;
3. fit a multinomial logistic regression on standardised features (full-batch L-BFGS to convergence, L2 1e-4; every
   training window is an example) and report test top-1 per clip, averaging the log-probabilities of the clip's
   windows (the paper's multi-crop test averaging);
4. the same for a backbone with the same architecture and the same random initialisation, not pre-trained.

Prints one table (mean ± std over seeds) and the per-seed numbers (with the loss and the collapse monitor
``proj_std·√d`` per epoch). CPU only; one torch thread by default (oversubscribed cores make more threads far slower).

    python benchmarks/brave_probe.py                          # small store, 2 seeds, ~6 min on 2 shared cores
    python benchmarks/brave_probe.py --size tiny --epochs 3   # quick look (tiny has 340 train clips)
    python benchmarks/brave_probe.py --crop-min 1.0 --epochs 8   # ablation: no crops (only flips + RandConv)
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from evssl.data.collate import Collate
from evssl.data.datamodules import EventDataModule
from evssl.data.datasets import StoreDataset
from evssl.data.views import BroadViewSpec, NarrowBroadViews
from evssl.events import augment as aug
from evssl.events.representations import Histogram, VoxelGrid
from evssl.methods.brave import BraVe, BraVeOptim
from evssl.nn.backbones import BasicBlock, ResNet
from evssl.nn.probe import ProbeConfig
from evssl.tasks.transfer import reestimate_batchnorm


def tiny_resnet(in_chans: int, width: int) -> ResNet:
    """ResNet-10-style feature extractor (one BasicBlock per stage), 3x3 stem, ``8 * width`` pooled features."""
    return ResNet(BasicBlock, (1, 1, 1, 1), in_chans=in_chans, small_input=True, width=width)


class ShiftFraction(aug.EventTransform):
    """:func:`evssl.events.augment.shift` by up to ``fraction`` of the view's width/height (events leaving drop)."""

    def __init__(self, fraction: float = 0.2) -> None:
        self.fraction = float(fraction)

    def _apply(self, ev: Any, rng: np.random.Generator) -> tuple[Any, list]:
        return aug.shift(ev, round(self.fraction * min(ev.height, ev.width)), rng), []


EVENT_AUGS = {
    "shift": lambda: ShiftFraction(0.2),
    "flip_y": lambda: aug.FlipY(0.5),
    "time_flip": lambda: aug.TimeFlip(0.5),
    "polarity_flip": lambda: aug.PolarityFlip(0.5),
    "drop": lambda: aug.DropByCount((0.0, 0.5), p=0.5),
}


def view_augment(names: list[str]) -> aug.Compose | None:
    """Extra per-view event augmentation (drawn independently for every view), e.g. ``flip_y time_flip``."""
    return aug.Compose([EVENT_AUGS[n]() for n in names]) if names else None


def make_data(args: argparse.Namespace) -> EventDataModule:
    """The pre-training data: NarrowBroadViews over the synthetic store (narrow = data representation)."""
    nr = (args.narrow_res, args.narrow_res)
    br = (args.broad_res, args.broad_res)
    extra = view_augment(args.event_aug)
    broad = [BroadViewSpec(resolution=br, representation=VoxelGrid(10), augment=extra)]
    if args.broad_views > 1:
        broad.append(BroadViewSpec(resolution=br, representation=Histogram(normalize=True), augment=extra))
    if args.frame_view:
        broad.append(BroadViewSpec(resolution=br, modality="frame"))
    sampler = NarrowBroadViews(
        narrow_us=args.narrow_us,
        broad_us=args.broad_us,
        narrow_resolution=nr,
        broad=broad,
        align=args.align,
        crop_area=(args.crop_min, 1.0),
        narrow_augment=extra,
    )
    return EventDataModule(
        source="synthetic",
        synthetic_size=args.size,
        seed=0,
        sampler=sampler,
        representation=VoxelGrid(5),
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=False,
        val_split=None,
        windows_per_recording=args.windows,
    )


def make_model(args: argparse.Namespace, dm: EventDataModule) -> BraVe:
    """BraVe with tiny ResNets; broad in_chans from each view's representation."""
    chans = [10, 2][: args.broad_views] + ([3] if args.frame_view else [])
    return BraVe(
        tiny_resnet(dm.in_channels, args.width),
        [tiny_resnet(c, args.width) for c in chans],
        proj_hidden_dim=args.proj_hidden,
        proj_dim=128,
        pred_hidden_dim=args.proj_hidden,
        randconv=not args.no_randconv,
        preset=args.preset,
        optim=BraVeOptim(
            name=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs
        ),
        ema_target=args.ema_target,
        probe=ProbeConfig(enabled=False),
    )


@torch.no_grad()
def probe_loader(dm: EventDataModule, split: str, windows: int = 1, batch_size: int = 256) -> DataLoader:
    """Plain labelled narrow windows of one split (evaluation sampler, deterministic), represented in the loader.

    With ``windows = K`` every recording gives K windows centred in K equal parts of the clip (temporal crops), in
    recording-major order (items ``r*K .. r*K+K-1`` belong to recording ``r``).
    """
    ds = StoreDataset(
        dm.store_path, dm.split_indices(split), dm.sampler, train=False, seed=0, windows_per_recording=windows
    )
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=Collate(dm._transform(False)))


def recalibrate_bn(backbone: nn.Module, loader: DataLoader) -> None:
    """Re-estimate BatchNorm running statistics (cumulative average) on the probe's training windows
    (:func:`evssl.tasks.transfer.reestimate_batchnorm`, the implementation ``Classifier(bn_reestimate_batches=...)``
    uses); the backbone is left in eval mode."""
    reestimate_batchnorm(backbone, (batch["input"].float() for batch in loader))
    backbone.eval()


@torch.no_grad()
def features(backbone: nn.Module, loader: DataLoader) -> tuple[Tensor, Tensor]:
    """Pooled features and labels of a whole split (backbone in eval mode)."""
    backbone.eval()
    xs, ys = [], []
    for batch in loader:
        xs.append(backbone(batch["input"].float()))
        ys.append(batch["label"])
    return torch.cat(xs), torch.cat(ys)


def linear_probe(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    l2: float = 1e-4,
    test_windows: int = 1,
) -> float:
    """Test top-1 of a multinomial logistic regression on standardised features (full-batch L-BFGS).

    Every training window is one example; at test time the log-probabilities of the ``test_windows`` consecutive
    windows of a recording are averaged (the paper's multi-crop test averaging) and accuracy is per recording.
    """
    (xtr, ytr), (xte, yte) = train, test
    mu, sd = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xte = ((xtr - mu) / sd).double(), ((xte - mu) / sd).double()
    lin = nn.Linear(xtr.shape[1], num_classes).double()
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), ytr) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    with torch.no_grad():
        logp = F.log_softmax(lin(xte), dim=1).reshape(-1, test_windows, num_classes).mean(1)
        return float((logp.argmax(1) == yte.reshape(-1, test_windows)[:, 0]).double().mean())


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Pre-train one seed, probe pre-trained and random-init narrow backbones."""
    from lightning.pytorch import Trainer, seed_everything

    seed_everything(seed, workers=True)
    dm = make_data(args)
    model = make_model(args, dm)
    random_init = copy.deepcopy(model.backbone)
    history: dict[str, list[float]] = {"loss": [], "proj_std_ratio": []}

    from lightning.pytorch.callbacks import Callback

    class Record(Callback):
        def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
            m = trainer.callback_metrics
            history["loss"].append(float(m.get("train/loss", float("nan"))))
            history["proj_std_ratio"].append(float(m.get("train/proj_std_ratio", float("nan"))))

    t0 = time.time()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Record()],
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=dm)
    pretrain_s = time.time() - t0

    t1 = time.time()
    k = args.probe_windows
    tr_loader, te_loader = probe_loader(dm, "train", k), probe_loader(dm, "test", k)
    out: dict[str, Any] = {"pretrain_s": pretrain_s, "history": history}
    for name, net in (("brave", model.backbone), ("random", random_init)):
        net = copy.deepcopy(net).float()
        recalibrate_bn(net, tr_loader)
        out[name] = linear_probe(features(net, tr_loader), features(net, te_loader), dm.num_classes, test_windows=k)
    out["probe_s"] = time.time() - t1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", help="synthetic store size (tiny, small, ...)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--windows", type=int, default=1, help="training windows per recording and epoch")
    p.add_argument("--narrow-us", type=int, default=50_000)
    p.add_argument("--broad-us", type=int, default=150_000)
    p.add_argument("--narrow-res", type=int, default=32)
    p.add_argument("--broad-res", type=int, default=16)
    p.add_argument("--broad-views", type=int, default=2, choices=[1, 2])
    p.add_argument("--align", default="start", choices=["start", "random"])
    p.add_argument("--crop-min", type=float, default=0.3, help="smallest crop area fraction (BraVe: 0.3)")
    p.add_argument("--width", type=int, default=16, help="ResNet width (pooled features = 8 x width)")
    p.add_argument("--proj-hidden", type=int, default=1024, help="projector/predictor hidden size (paper: 4096)")
    p.add_argument("--optimizer", default="lars", choices=["lars", "adamw", "sgd"])
    p.add_argument(
        "--preset",
        default="official",
        choices=["official", "paper"],
        help="BraVe preset (paper = the pre-v2 behaviour: predictor x10 on the step after LARS)",
    )
    p.add_argument("--lr", type=float, default=10.0, help="peak LARS lr (paper: 1.0 at batch 512, 300k steps)")
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--frame-view", action="store_true", help="add the paired frame as a broad view (3 channels)")
    p.add_argument("--no-randconv", action="store_true")
    p.add_argument("--ema-target", action="store_true", help="ablation: BYOL-style EMA targets (BraVe has none)")
    p.add_argument(
        "--event-aug", nargs="*", default=[], choices=sorted(EVENT_AUGS), help="extra per-view event augmentations"
    )
    p.add_argument("--probe-windows", type=int, default=4, help="probe windows per recording (test: averaged)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: oversubscribed cores make more threads far slower)"
    )
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    start = time.time()
    results = []
    for seed in args.seeds:
        r = run_seed(args, seed)
        results.append(r)
        print(
            f"seed {seed}: BraVe {100 * r['brave']:.1f}%  random init {100 * r['random']:.1f}%  "
            f"(pre-train {r['pretrain_s']:.0f} s, probe {r['probe_s']:.0f} s; loss/epoch "
            + " ".join(f"{v:.3f}" for v in r["history"]["loss"])
            + "; proj_std·√d "
            + " ".join(f"{v:.2f}" for v in r["history"]["proj_std_ratio"])
            + ")",
            flush=True,
        )

    def stat(key: str) -> str:
        v = np.array([100 * r[key] for r in results])
        return f"{v.mean():5.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:4.1f}"

    per_seed = lambda key: "  ".join(f"{100 * r[key]:5.1f}" for r in results)  # noqa: E731
    chance = 100.0 / 10
    print()
    print(
        f"Linear probe (test top-1 %, narrow backbone, frozen) — synthetic '{args.size}', seeds {args.seeds}, "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr}"
    )
    print(f"| {'backbone':<22} | {'mean ± std':>12} | {'per seed':<{7 * len(results)}} |")
    print(f"|{'-' * 24}|{'-' * 14}|{'-' * (7 * len(results) + 2)}|")
    print(f"| {'BraVe pre-trained':<22} | {stat('brave'):>12} | {per_seed('brave'):<{7 * len(results)}} |")
    print(f"| {'random init':<22} | {stat('random'):>12} | {per_seed('random'):<{7 * len(results)}} |")
    print(f"(chance ≈ {chance:.0f}%; total {time.time() - start:.0f} s; lr per group: predictor x10)")
    if math.isnan(np.mean([r["brave"] for r in results])):  # pragma: no cover
        raise SystemExit("probe failed")


if __name__ == "__main__":
    main()
