"""Does ECDDP pre-training help dense transfer? Pre-train, then fine-tune segmentation, flow and depth on the synthetic
set, next to the same fine-tuning from random initialisation under the same budget, over several seeds.

    .venv/bin/python benchmarks/ecddp_dense.py                       # tiny set, 2 seeds: 18-25 min on 2 shared cores
    .venv/bin/python benchmarks/ecddp_dense.py --seeds 0 1 2 --pretrain-epochs 20 --finetune-epochs 6

Protocol (all on CPU, one process):

* data: the cached synthetic store (``--size``, store seed 0 for every run, so seeds vary the model, the crops and
  the shuffling, not the data); 6-bin signed voxel grids of 50 ms windows; ``--windows`` windows per recording;
  training on random 48x48 crops (pre-training without any label), metrics on the full 48x64 frames of the
  **test** split (deterministic windows).
* model: a tiny Swin (patch 2, width 24, one block per stage; the neck grid has stride 8) — the same backbone for
  every run; ECDDP with 2 global crops of 32 px (4x4 tokens, half of them block-masked), ``--local-crops`` local
  crops of 16 px, K = 4 contexts, 256 prototypes per head.
* transfer: full fine-tuning of backbone + UPerNet decoder (width 32) with AdamW, identical lr / schedule / epochs
  for the pre-trained and the random initialisation.

Prints, per seed, each pre-training loss term relative to its value for uniform distributions (1.00 = that level
fits only uniform targets), then one table: mean ± std over seeds of test mIoU (segmentation, 11 classes), EPE (flow,
px) and abs-rel (depth), with the per-seed values.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer, seed_everything

from evssl.data import EventDataModule
from evssl.data.samplers import DenseWindow
from evssl.events.representations import VoxelGrid
from evssl.methods.ecddp import ECDDP
from evssl.nn.backbones import SwinTransformer
from evssl.tasks.dense import DepthEstimation, OpticalFlow, SemanticSegmentation

TASKS = {
    "segmentation": (SemanticSegmentation, "semantic", "test/miou", "mIoU ↑"),
    "flow": (OpticalFlow, "flow", "test/epe", "EPE ↓"),
    "depth": (DepthEstimation, "depth", "test/abs_rel", "abs-rel ↓"),
}


def swin(mask_token: bool = False) -> SwinTransformer:
    """The benchmark backbone: tiny Swin, patch 2, width 24, depths 1-1-1-1, window 4."""
    return SwinTransformer(
        in_chans=6,
        patch_size=2,
        embed_dim=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 3, 6),
        window_size=4,
        mask_token=mask_token,
    )


def data(args: argparse.Namespace, key: str | None, seed: int) -> EventDataModule:
    """Event data: random 48x48 crops for training, full frames for evaluation."""
    dense = key is not None
    keys = (key,) if dense else None
    return EventDataModule(
        source="synthetic",
        synthetic_size=args.size,
        seed=0,
        sampler=DenseWindow(
            50_000, crop_size=(48, 48), hflip_p=0.5, with_frames=False, with_dense=dense, dense_keys=keys
        ),
        eval_sampler=DenseWindow(50_000, with_frames=False, with_dense=dense, dense_keys=keys),
        representation=VoxelGrid(6, normalize=False),
        batch_size=args.batch_size,
        num_workers=0,
        val_split=None,
        windows_per_recording=args.windows,
    )


def trainer(epochs: int, clip: float | None = None) -> Trainer:
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
    )


def pretrain(args: argparse.Namespace, seed: int, out: Path) -> tuple[Path, dict[str, float]]:
    """ECDDP pre-training; returns the exported student backbone and the last training losses."""
    seed_everything(seed, workers=True)
    model = ECDDP(
        swin(mask_token=True),
        neck_dim=64,
        num_prototypes=256,
        head_hidden_dim=128,
        head_bottleneck_dim=32,
        pool_heads=2,
        num_clusters=4,
        global_crop_size=32,
        local_crop_size=16,
        num_local_crops=args.local_crops,
        warmup_teacher_temp_epochs=max(1, args.pretrain_epochs // 4),
        lr=args.pretrain_lr,
        lr_batch_scale=False,
        warmup_epochs=1,
        min_lr_ratio=0.01,
        ema_momentum=0.98,
        log_contexts_every_n_epochs=0,
    )
    tr = trainer(args.pretrain_epochs, clip=3.0)
    tr.fit(model, datamodule=data(args, None, seed))
    path = out / f"ecddp_seed{seed}.pt"
    torch.save(model.backbone_for_export().state_dict(), path)
    losses = {k.split("/", 1)[1]: float(v) for k, v in tr.callback_metrics.items() if k.startswith("train/loss")}
    # each term relative to its value for uniform student and teacher distributions (ln P times its weight): 1.00
    # means that level has collapsed to uniform targets, < 1 that it fits informative targets
    ln_p, n_l, lam = math.log(model.patch_head.out_dim), model.num_local_crops, model.context_weight
    w = 1.0 / (2 * n_l + 2 + lam)
    uniform = {
        "loss_image_local": w * 2 * n_l * ln_p,
        "loss_image_global": w * 2 * ln_p,
        "loss_context": w * lam * ln_p,
        "loss_patch": model.mask_probability * ln_p,
    }
    ratios = {k: losses[k] / u for k, u in uniform.items() if k in losses and u > 0}
    return path, ratios


def finetune(args: argparse.Namespace, task: str, seed: int, pretrained: Path | None) -> float:
    """Fine-tune ``task`` from ``pretrained`` (or random init) and return its test metric."""
    cls, key, metric, _ = TASKS[task]
    seed_everything(seed + 1000, workers=True)
    model = cls(swin(), pretrained=str(pretrained) if pretrained else None, decoder_channels=32,
                lr=args.finetune_lr, weight_decay=1e-4, warmup_epochs=0.5, log_images_every_n_epochs=0)  # fmt: skip
    tr = trainer(args.finetune_epochs)
    dm = data(args, key, seed)
    tr.fit(model, datamodule=dm)
    res = tr.test(model, datamodule=dm, verbose=False)
    return float(res[0][metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", help="synthetic store size (tiny: 84 train / 18 test clips)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--windows", type=int, default=2, help="windows per recording (train and test)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--local-crops", type=int, default=4)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    t0 = time.time()
    rows: dict[str, dict[str, list[float]]] = {t: {"random": [], "ecddp": []} for t in args.tasks}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            ts = time.time()
            path, losses = pretrain(args, seed, Path(tmp))
            loss_txt = ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items()))
            took = time.time() - ts
            print(f"seed {seed}: pre-trained in {took:.0f}s; last-epoch loss / uniform: {loss_txt}", flush=True)
            for task in args.tasks:
                for init, pre in (("random", None), ("ecddp", path)):
                    ts = time.time()
                    value = finetune(args, task, seed, pre)
                    rows[task][init].append(value)
                    print(f"seed {seed}: {task:<12} {init:<6} {value:.4f}  ({time.time() - ts:.0f}s)", flush=True)
    total = time.time() - t0

    def fmt(v: list[float]) -> str:
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

    print()
    print(
        f"ECDDP dense transfer — synthetic {args.size}, seeds {args.seeds}, pre-train {args.pretrain_epochs} ep, "
        f"fine-tune {args.finetune_epochs} ep, batch {args.batch_size}, {args.windows} windows/recording, "
        f"{args.local_crops} local crops; {total / 60:.1f} min"
    )
    header = f"| {'task':<12} | {'metric':<10} | {'random init':<15} | {'ECDDP init':<15} | per seed (random / ECDDP) |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for task in args.tasks:
        r, e = rows[task]["random"], rows[task]["ecddp"]
        per = "; ".join(f"{a:.3f} / {b:.3f}" for a, b in zip(r, e))
        print(f"| {task:<12} | {TASKS[task][3]:<10} | {fmt(r):<15} | {fmt(e):<15} | {per} |")


if __name__ == "__main__":
    main()
