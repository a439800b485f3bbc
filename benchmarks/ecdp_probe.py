"""Does ECDP learn? Linear probe of concat(token0, token1) after ECDP pre-training on synthetic events + frames.

Three rows, each over several seeds, same ViT (patch 8, two special tokens), same data (synthetic store: moving
textured shapes, 10 classes, label = class of the main shape; windows of N consecutive events rescaled to the model
resolution, ECDP event augmentations, signed ECDP event image):

* ``random init + linear probe`` — the untrained backbone, probed like the others (the floor);
* ``ECDP + linear probe``        — :class:`evssl.methods.ECDP` pre-trained without labels, backbone frozen, probed;
* ``supervised from scratch``    — the same backbone trained end to end with labels for the same number of epochs
                                   (crop 0.85 + flip), test top-1 of its own head (a reference, not a target).

Linear probe: features of one centred window per recording (train split → fit, test split → score), standardised
with the train statistics, multinomial logistic regression (L-BFGS, L2 1e-3), test top-1.

To fit a CPU budget the event pipeline runs once: :class:`~evssl.methods.ecdp.ECDPViews` draws ``--pool`` augmented
training windows per recording (random position, time flip, shift, correlated noise) through the real
``EventDataModule`` (collate + ``EventImage`` on the batch) and the paired frames are embedded once by the frozen
:class:`~evssl.nn.image_encoders.RandomFeatureEncoder` (the precomputed-``embedding`` path of ECDP, as the paper
does with CLIP). Each epoch then draws one window per recording from that pool; the two random-resized crops and the
conditional masks are drawn fresh at every step by the method. The random-feature encoder is a deterministic
stand-in for CLIP with no semantic knowledge (its own linear probe is printed), so these numbers say whether the
method and its wiring learn, not how ECDP with CLIP compares with the paper.

Reference result (2 CPU cores shared with other jobs, 1 torch thread, defaults, 329 s):

    | model                      | seed 0 | seed 1 | mean  |
    | random init + linear probe | 0.104  | 0.109  | 0.107 |
    | ECDP + linear probe        | 0.151  | 0.178  | 0.164 |
    | supervised from scratch    | 0.100  | 0.100  | 0.100 |

The task is hard for linear read-outs (a linear probe on the raw 2x32x32 event images scores 0.118; on the RGB
target 0.125), and a ViT trained from scratch on 2100 clips does not leave chance in 20 epochs (its training loss
stays at ln 10 — small-data ViTs need far longer or a convolutional stem); ECDP's features are the only ones here
that a linear probe reads the class from, consistently over seeds.

    .venv/bin/python benchmarks/ecdp_probe.py                      # synthetic "small" if cached, else "tiny"
    .venv/bin/python benchmarks/ecdp_probe.py --size tiny --seeds 0 1 --epochs 30
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

os.environ.setdefault("WANDB_MODE", "disabled")

Split = tuple[torch.Tensor, torch.Tensor]  # (inputs or features, labels)


# ------------------------------------------------------------------------------------------------------ data
def event_datamodule(args: argparse.Namespace, rgb: str, split: str, windows: int = 1) -> Any:
    """The real evssl data pipeline over one split, with ECDP's sampler (rgb: 'frame' or 'none')."""
    from evssl.data import EventDataModule
    from evssl.events.representations import EventImage
    from evssl.methods.ecdp import ECDPViews

    sampler = ECDPViews(
        num_events=args.num_events,
        resolution=(args.res, args.res),
        rgb=rgb,
        noise_count=(args.num_events // 30, args.num_events // 3),
        noise_min_events=args.num_events // 3,
    )
    return EventDataModule(
        source="synthetic",
        synthetic_size=args.size,
        seed=0,
        sampler=sampler,
        representation=EventImage(),
        batch_size=256,
        num_workers=0,
        train_split=split,
        val_split=split,
        test_split=None,
        windows_per_recording=windows,
        drop_last=False,
    )


@torch.no_grad()
def training_pool(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """``--pool`` augmented training windows per train recording: event images, frame embeddings, labels, ids."""
    from evssl.nn.image_encoders import RandomFeatureEncoder

    encoder = RandomFeatureEncoder(embed_dim=args.embed, width=16, grid=4, seed=0)
    dm = event_datamodule(args, "frame", "train", windows=args.pool)
    dm.setup("fit")
    xs, es, ys, ids = [], [], [], []
    for batch in dm.train_dataloader():
        batch = dm._transform(True)(batch)
        xs.append(batch["input"].float())
        es.append(encoder(batch["frame"]))
        ys.append(batch["label"])
        ids.append(batch["index"])
    return {"input": torch.cat(xs), "embedding": torch.cat(es), "label": torch.cat(ys), "index": torch.cat(ids)}


@torch.no_grad()
def eval_inputs(args: argparse.Namespace, split: str) -> Split:
    """Event images and labels of one centred (deterministic) window per recording of ``split``."""
    dm = event_datamodule(args, "none", split)
    dm.setup("fit")
    xs, ys = [], []
    for batch in dm.val_dataloader():
        batch = dm._transform(False)(batch)
        xs.append(batch["input"].float())
        ys.append(batch["label"])
    return torch.cat(xs), torch.cat(ys)


class PoolDataset(Dataset):
    """Items of the cached pool as sample dicts."""

    def __init__(self, pool: dict[str, torch.Tensor], keys: tuple[str, ...]) -> None:
        self.pool = pool
        self.keys = keys

    def __len__(self) -> int:
        return len(self.pool["label"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: self.pool[k][i] for k in self.keys}


def pool_loader(
    args: argparse.Namespace, pool: dict[str, torch.Tensor], keys: tuple[str, ...], seed: int, collate: Any = None
) -> DataLoader:
    """One epoch = as many samples as training recordings, drawn without replacement from the pool."""
    ds = PoolDataset(pool, keys)
    sampler = RandomSampler(ds, num_samples=len(ds) // args.pool, generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch_size=args.batch, sampler=sampler, drop_last=True, collate_fn=collate)


class CropFlip:
    """Collate + ECDP's fine-tuning augmentation on the batch: nearest random-resized crop (0.85, 1) + h-flip."""

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        from evssl.nn.crops import random_resized_crop_nearest

        batch = torch.utils.data.default_collate(items)
        batch["input"] = random_resized_crop_nearest(batch["input"], None, (0.85, 1.0), hflip_p=0.5)
        return batch


# ------------------------------------------------------------------------------------------------------ models
def make_backbone(args: argparse.Namespace, seed: int, drop_path: float = 0.0) -> torch.nn.Module:
    from evssl.nn.backbones.vit import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=args.res,
        patch_size=args.patch,
        in_chans=2,
        embed_dim=args.dim,
        depth=args.depth,
        num_heads=args.heads,
        drop_path_rate=drop_path,
        num_special_tokens=2,
        class_token=False,
        global_pool="special",
    )


def trainer(epochs: int) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def pretrain_ecdp(args: argparse.Namespace, pool: dict[str, torch.Tensor], seed: int) -> tuple[Any, list[float]]:
    """ECDP pre-training on the pool (precomputed frame embeddings); returns the backbone and per-epoch mean loss."""
    import lightning.pytorch as pl

    from evssl.methods.ecdp import ECDP

    class EpochLoss(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self._acc: list[float] = []

        def on_train_batch_end(self, tr: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self._acc.append(float(outputs["loss"]))

        def on_train_epoch_end(self, tr: Any, pl_module: Any) -> None:
            self.losses.append(float(np.mean(self._acc)))
            self._acc = []

    pl.seed_everything(seed, verbose=False)
    model = ECDP(
        make_backbone(args, seed),
        image_encoder=None,
        image_embed_dim=args.embed,
        proj_hidden_dim=args.proj_hidden,
        proj_dim=128,
        pred_hidden_dim=args.proj_hidden,
        mask_ratio=0.5,
        lr=args.lr,
        weight_decay=0.05,
        warmup_epochs=max(1.0, args.epochs / 10),
        lr_batch_scale=True,
        log_views_every_n_epochs=0,
    )
    cb = EpochLoss()
    tr = trainer(args.epochs)
    tr.callbacks.append(cb)
    tr.fit(model, train_dataloaders=pool_loader(args, pool, ("input", "embedding", "label"), seed))
    return model.backbone, cb.losses


def supervised(args: argparse.Namespace, pool: dict[str, torch.Tensor], test: Split, seed: int) -> float:
    """The same ViT trained from scratch with labels (Classifier, scratch mode); test top-1 of its own head."""
    import lightning.pytorch as pl

    from evssl.tasks import Classifier

    pl.seed_everything(seed, verbose=False)
    model = Classifier(
        make_backbone(args, seed, drop_path=0.1),
        num_classes=int(pool["label"].max()) + 1,
        mode="scratch",
        lr=args.lr,
        weight_decay=0.05,
        warmup_epochs=max(1.0, args.epochs / 10),
        lr_batch_scale=True,
        label_smoothing=0.1,
    )
    loader = pool_loader(args, pool, ("input", "label"), seed, collate=CropFlip())
    trainer(args.epochs).fit(model, train_dataloaders=loader)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x in test[0].split(256)])
    return float((logits.argmax(1) == test[1]).float().mean())


# ------------------------------------------------------------------------------------------------------ probe
@torch.no_grad()
def features(backbone: torch.nn.Module, data: Split) -> Split:
    """concat(token0, token1) of the cached inputs (backbone in eval mode)."""
    backbone.eval()
    x, y = data
    return torch.cat([backbone(chunk) for chunk in x.split(256)]), y


def linear_probe(train: Split, test: Split, seed: int) -> float:
    """Multinomial logistic regression on standardised features (L-BFGS, L2 1e-3); test top-1."""
    (xtr, ytr), (xte, yte) = train, test
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(seed)
    head = torch.nn.Linear(xtr.shape[1], int(ytr.max()) + 1)
    opt = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(xtr), ytr) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((head(xte).argmax(1) == yte).float().mean())


def probe(backbone: torch.nn.Module, data: dict[str, Split], seed: int) -> float:
    return linear_probe(features(backbone, data["train"]), features(backbone, data["test"]), seed)


# ------------------------------------------------------------------------------------------------------ main
def main() -> None:
    from evssl.data.synthetic import synthetic_store_path

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default=None, help="synthetic size (default: small when cached, else tiny)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=None, help="epochs of ECDP and of the supervised run")
    p.add_argument("--pool", type=int, default=3, help="cached augmented windows per training recording")
    p.add_argument("--num-events", type=int, default=1500)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--proj-hidden", type=int, default=512)
    p.add_argument("--embed", type=int, default=128, help="frame embedding size (random-feature encoder)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3, help="AdamW lr per 256 samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = p.parse_args()
    if args.size is None:
        args.size = "small" if synthetic_store_path("small", 0).exists() else "tiny"
    if args.epochs is None:
        args.epochs = 20 if args.size == "small" else 60
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    t_all = time.time()
    timing = {"data": 0.0, "ecdp": 0.0, "supervised": 0.0, "probe": 0.0}
    pool = training_pool(args)
    data = {split: eval_inputs(args, split) for split in ("train", "test")}
    timing["data"] = time.time() - t_all
    print(f"data: pool {tuple(pool['input'].shape)}, probe train {len(data['train'][1])}, test {len(data['test'][1])} "
          f"({timing['data']:.0f} s)", flush=True)  # fmt: skip
    held_out = pool["index"] % 5 == 0  # recordings, not windows, split the RGB-target probe
    rgb_probe = linear_probe(
        (pool["embedding"][~held_out], pool["label"][~held_out]),
        (pool["embedding"][held_out], pool["label"][held_out]),
        0,
    )

    rows: dict[str, list[float]] = {"random init + linear probe": [], "ECDP + linear probe": [],
                                    "supervised from scratch": []}  # fmt: skip
    curves = {}
    for seed in args.seeds:
        t = time.time()
        rows["random init + linear probe"].append(probe(make_backbone(args, seed), data, seed))
        timing["probe"] += time.time() - t
        t = time.time()
        backbone, curves[seed] = pretrain_ecdp(args, pool, seed)
        timing["ecdp"] += time.time() - t
        t = time.time()
        rows["ECDP + linear probe"].append(probe(backbone, data, seed))
        timing["probe"] += time.time() - t
        t = time.time()
        rows["supervised from scratch"].append(supervised(args, pool, data["test"], seed))
        timing["supervised"] += time.time() - t
        print(f"seed {seed} done ({time.time() - t_all:.0f} s)", flush=True)

    n_cls = int(pool["label"].max()) + 1
    print()
    print(
        f"ECDP on synthetic '{args.size}' ({n_cls} classes, chance {1 / n_cls:.2f}): ViT d={args.dim}"
        f" depth={args.depth} patch={args.patch} on {args.res}x{args.res} event images of {args.num_events}-event"
        f" windows; {args.epochs} epochs of {len(data['train'][1])} windows (pool {args.pool}/recording),"
        f" batch {args.batch}, AdamW lr {args.lr:g} per 256, mask 0.5 ('paper'), KL 'code', rgb_key_grad 'global'"
    )
    print("| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|" + "---|" * (len(args.seeds) + 2))
    for name, accs in rows.items():
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {np.mean(accs):.3f} |")
    print()
    print(f"linear probe of the RGB target (random-feature frame embeddings; 4/5 vs 1/5 of train): {rgb_probe:.3f}")
    for seed, losses in curves.items():
        print(f"ECDP train loss, seed {seed}: epoch 1 {losses[0]:.3f} -> epoch {len(losses)} {losses[-1]:.3f}")
    print(
        f"time: data {timing['data']:.0f} s, ECDP {timing['ecdp']:.0f} s, supervised {timing['supervised']:.0f} s, "
        f"probes {timing['probe']:.0f} s, total {time.time() - t_all:.0f} s"
    )


if __name__ == "__main__":
    main()
