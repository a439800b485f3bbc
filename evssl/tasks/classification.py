"""Classification transfer: linear probe, fine-tuning or training from scratch on labelled event windows."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from evssl.nn.ema import ema_update_, make_target
from evssl.nn.frozen import FrozenInEval
from evssl.optim import OptimConfig, configure_optimization
from evssl.tasks.transfer import backbone_param_groups, reestimate_batchnorm
from evssl.utils.hparams import as_config, batch_size_of, class_config, save_hparams

__all__ = ["Classifier", "InputAdapt", "adapt_state_dict", "load_backbone_weights"]


def _adapt_input_weight(weight: Tensor, in_chans: int) -> Tensor:
    """Map a first-layer kernel ``(O, I, *k)`` to ``in_chans`` inputs: channel mean, repeated, scaled by ``I/in``.

    The scale keeps the response to an input whose channels carry the same signal unchanged (the sum over input
    channels of ``mean * I / in_chans`` equals the sum of the original kernel).
    """
    mean = weight.mean(dim=1, keepdim=True)
    reps = [1, in_chans] + [1] * (weight.ndim - 2)
    return mean.repeat(*reps) * (weight.shape[1] / in_chans)


InputAdapt = Literal["mean", "reinit"]


def _reinit_keys(key: str, own: dict[str, Tensor]) -> list[str]:
    """Keys left at their fresh initialisation when the input kernel ``key`` is re-initialised: every entry of the
    module owning it (its bias, a patch-embed's norm) and, for a ``patch_embed`` kernel, a sibling ``patch_norm``
    (evssl's Swin keeps the LayerNorm that the official ``PatchEmbed`` holds as ``patch_embed.norm`` beside it)."""
    top = key.split(".")[0]
    prefixes = [key.rsplit(".", 1)[0] + "."] if "." in key else [key]
    if top == "patch_embed":
        prefixes = ["patch_embed.", "patch_norm."]
    return sorted(k for k in own if any(k == p or k.startswith(p) for p in prefixes))


def adapt_state_dict(
    state: dict[str, Tensor],
    target: nn.Module,
    *,
    source: str = "state dict",
    input_adapt: InputAdapt = "mean",
) -> dict[str, Tensor]:
    """Check ``state`` against ``target`` strictly and adapt the input layer when the channel counts differ.

    A conv / patch-embed kernel whose shape differs from the target's only in dimension 1 (input channels) is
    adapted according to ``input_adapt``:

    * ``"mean"``: :func:`_adapt_input_weight` (channel mean, repeated, scaled by ``I / in``);
    * ``"reinit"``: not loaded; the input layer keeps the target's fresh initialisation — the kernel, the other
      parameters of its module and, for a patch embedding, its norm (:func:`_reinit_keys`), as ECDDP's segmentation
      transfer drops every ``patch_embed`` key (``config/seg/swin_small.yml`` ``keep_patch_keys: false``,
      ``model/swin_model.py`` l. 511-513). The returned dict then lacks those keys (load it with ``strict=False``).

    Everything else must match exactly.

    Raises:
        ValueError: naming the missing keys, the unexpected keys and the shape mismatches, or a bad ``input_adapt``.
    """
    if input_adapt not in ("mean", "reinit"):
        raise ValueError(f"input_adapt must be 'mean' or 'reinit', got {input_adapt!r}")
    own = target.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched: list[str] = []
    out: dict[str, Tensor] = {}
    reinit: set[str] = set()
    for key, value in state.items():
        if key not in own:
            continue
        want = own[key]
        if value.shape == want.shape:
            out[key] = value
        elif (
            value.ndim == want.ndim >= 3
            and value.shape[0] == want.shape[0]
            and value.shape[2:] == want.shape[2:]
            and value.shape[1] != want.shape[1]
        ):
            if input_adapt == "reinit":
                reinit.update(_reinit_keys(key, own))
                rank_zero_info(
                    f"evssl: {key} has {value.shape[1]} input channels, the backbone {want.shape[1]}: "
                    "input layer re-initialised"
                )
                continue
            out[key] = _adapt_input_weight(value.float(), want.shape[1]).to(want.dtype)
            rank_zero_info(
                f"evssl: adapted {key} from {value.shape[1]} to {want.shape[1]} input channels (mean, repeated)"
            )
        else:
            mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(want.shape)}")
    if missing or unexpected or mismatched:
        lines = [f"pretrained weights {source} do not fit the backbone {type(target).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches (checkpoint vs backbone): {'; '.join(mismatched)}")
        raise ValueError("\n".join(lines))
    if reinit:
        out = {k: v for k, v in out.items() if k not in reinit}
        rank_zero_info(f"evssl: re-initialised (not loaded): {', '.join(sorted(reinit))}")
    return out


def load_backbone_weights(backbone: nn.Module, path: str | Path, input_adapt: InputAdapt = "mean") -> dict[str, Any]:
    """Load a backbone state dict written by ``evssl export`` into ``backbone`` (strict; the input layer adapted by
    channel mean or re-initialised, ``input_adapt``, when the channel counts differ: :func:`adapt_state_dict`).

    Returns the export metadata (the ``.json`` next to the weights) or ``{}`` when there is none.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is a Lightning checkpoint (export it first) or the keys/shapes do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and "pytorch-lightning_version" in state:
        raise ValueError(f"{path} is a Lightning checkpoint; write the backbone with `evssl export {path} --out X.pt`")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a plain state dict of tensors")
    state = adapt_state_dict(state, backbone, source=str(path), input_adapt=input_adapt)
    result = backbone.load_state_dict(state, strict=False)
    if result.unexpected_keys or (input_adapt == "mean" and result.missing_keys):  # adapt_state_dict checked both
        raise ValueError(f"{path}: state dict does not fit {type(backbone).__name__}: {result}")
    meta_path = path.with_suffix(".json")
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


class Classifier(FrozenInEval):
    """Event classification on a backbone's pooled features: ``logits = W f(x) + b``.

    Modes (the protocols of ECDP, Yang et al. ICCV 2023, Sec. 4):

    * ``"linear"`` — linear probe: the pretrained backbone is frozen and kept in eval mode (BatchNorm statistics
      fixed), only the head trains; features are computed without autograd.
    * ``"finetune"`` — the pretrained backbone and the head train together (optionally ``backbone_lr_scale``).
    * ``"scratch"`` — random initialisation (supervised baseline); ``pretrained`` must be ``None``.

    Args:
        backbone: feature extractor with ``num_features`` (``in_chans`` linked from the data by the CLI).
        num_classes: number of classes (linked from ``data.num_classes`` by the CLI).
        mode: ``"linear"``, ``"finetune"`` or ``"scratch"``.
        pretrained: path to a backbone state dict written by ``evssl export``; loaded strictly, the input layer is
            adapted when the channel count differs.
        optim: optimiser, schedule and weight-decay policy (:class:`~evssl.optim.OptimConfig`: AdamW, lr 1e-3,
            weight decay 0.05 by default).
        label_smoothing: cross-entropy label smoothing (Szegedy et al. 2016).
        head_batchnorm: a parameter-free BatchNorm before the linear head (MAE / ECDP linear-probe recipe).
        backbone_lr_scale: lr multiplier of the backbone in ``"finetune"`` / ``"scratch"`` mode.
        layer_decay: layer-wise lr decay for ViT backbones (BEiT / MAE fine-tuning, ECDP uses 0.75): block ``i`` of
            ``L`` gets ``lr * layer_decay ** (L + 1 - (i + 1))`` (:func:`evssl.nn.backbones.param_groups_lrd`).
        ema_decay: model EMA of backbone + head for evaluation (ECDP / MAE fine-tuning use timm's ModelEma with
            0.9999): after every optimizer step ``theta_ema <- d * theta_ema + (1 - d) * theta`` (BatchNorm
            statistics copied); validation, test, prediction and ``evssl export`` then use the EMA weights, while
            training steps use the online ones. ``None`` (default) disables it.
        input_adapt: when the pretrained input layer has other input channels: ``"mean"`` (channel mean, repeated)
            or ``"reinit"`` (keep the fresh input layer; :func:`adapt_state_dict`).
        bn_reestimate_batches: linear probe only: before training, re-estimate the frozen backbone's BatchNorm
            running statistics on up to this many training batches (cumulative average,
            :func:`~evssl.tasks.transfer.reestimate_batchnorm`; 0 = keep the pre-training statistics). Weights do
            not change; skipped when resuming (the checkpoint holds the re-estimated statistics).

    Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_top5`` (when ``num_classes >= 5``) and
    the same under ``test/``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        mode: Literal["linear", "finetune", "scratch"] = "finetune",
        pretrained: str | None = None,
        optim: OptimConfig | None = None,
        label_smoothing: float = 0.0,
        head_batchnorm: bool = False,
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        ema_decay: float | None = None,
        input_adapt: InputAdapt = "mean",
        bn_reestimate_batches: int = 0,
    ) -> None:
        super().__init__()
        save_hparams(self, inspect.currentframe())
        if bn_reestimate_batches < 0 or (bn_reestimate_batches and mode != "linear"):
            raise ValueError(
                f"bn_reestimate_batches={bn_reestimate_batches}: a count >= 0, used with mode 'linear' only "
                f"(got mode {mode!r}; fine-tuning updates the BatchNorm statistics itself)"
            )
        self.bn_reestimate_batches = int(bn_reestimate_batches)
        if mode not in ("linear", "finetune", "scratch"):
            raise ValueError(f"mode must be 'linear', 'finetune' or 'scratch', got {mode!r}")
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if mode == "scratch" and pretrained:
            raise ValueError("mode 'scratch' trains from random weights; remove `pretrained` or use mode 'finetune'")
        dim = getattr(backbone, "num_features", None)
        if not isinstance(dim, int):
            raise ValueError("Classifier needs backbone.num_features (an int)")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.mode = mode
        self.pretrained_meta: dict[str, Any] = {}
        if pretrained:
            self.pretrained_meta = load_backbone_weights(backbone, pretrained, input_adapt=input_adapt)
        elif mode != "scratch":
            rank_zero_warn(f"Classifier mode {mode!r} without `pretrained`: the backbone starts from random weights")
        if mode == "linear":
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if head_batchnorm else nn.Identity()
        self.head = nn.Sequential(norm, nn.Linear(dim, self.num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)
        self.optim = as_config(OptimConfig, optim)
        self.label_smoothing = label_smoothing
        self.backbone_lr_scale = backbone_lr_scale
        self.layer_decay = layer_decay
        self.ema_decay = ema_decay
        # the EMA copy is a frozen submodule: saved in checkpoints, never in the optimizer, no drop-path
        self.ema = None if ema_decay is None else make_target(nn.ModuleDict({"backbone": backbone, "head": self.head}))
        self.top_k = (1, 5) if self.num_classes >= 5 else (1,)
        for stage in ("train", "val", "test"):
            for k in self.top_k if stage != "train" else (1,):
                setattr(self, f"{stage}_top{k}", MulticlassAccuracy(self.num_classes, top_k=k, average="micro"))

    # ------------------------------------------------------------------------------------------------- model
    def frozen_modules(self) -> list[nn.Module]:
        """Kept in eval mode whatever Lightning asks: a linear probe's backbone, the EMA copy."""
        return ([self.backbone] if self.mode == "linear" else []) + ([self.ema] if self.ema is not None else [])

    def _eval_modules(self) -> tuple[nn.Module, nn.Module]:
        """(backbone, head) used for evaluation: the EMA copies when ``ema_decay`` is set."""
        if self.ema is None:
            return self.backbone, self.head
        return self.ema["backbone"], self.ema["head"]

    def _embed(self, x: Tensor) -> Tensor:
        """Pooled features of ``x``: the EMA backbone outside training, no autograd for it or a frozen backbone."""
        backbone = self.backbone if self.training else self._eval_modules()[0]
        if self.mode == "linear" or backbone is not self.backbone:
            with torch.no_grad():
                return backbone(x)
        return backbone(x)

    def features(self, batch: dict[str, Any]) -> Tensor:
        """Pooled features of ``batch["input"]`` (no autograd in linear mode; the EMA backbone outside training)."""
        return self._embed(batch["input"])

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of a representation tensor ``(B, C, H, W)`` (the EMA model outside training)."""
        head = self.head if self.training else self._eval_modules()[1]
        return head(self._embed(x))

    def backbone_for_export(self) -> nn.Module:
        """The (fine-tuned) backbone, for ``evssl export`` (its EMA when ``ema_decay`` is set)."""
        return self._eval_modules()[0]

    def backbone_config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` of the backbone."""
        return class_config(self.backbone, self.hparams.get("backbone"))

    # ---------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """Head (and backbone unless linear) with a per-step warm-up + cosine schedule."""
        groups: list[dict[str, Any]] = [{"name": "head", "params": list(self.head.parameters())}]
        if self.mode != "linear":
            groups = (
                backbone_param_groups(
                    self.backbone,
                    lr_scale=self.backbone_lr_scale,
                    layer_decay=self.layer_decay,
                    weight_decay=self.optim.weight_decay,
                    policy=self.optim,
                )
                + groups
            )
        return configure_optimization(self, groups, self.optim)

    def on_train_start(self) -> None:
        """Linear probe with ``bn_reestimate_batches``: re-estimate the backbone's BatchNorm statistics first."""
        super().on_train_start()
        if self.bn_reestimate_batches and self.trainer.global_step == 0:
            self.reestimate_batchnorm(self.trainer.train_dataloader, self.bn_reestimate_batches)

    def reestimate_batchnorm(self, loader: Any, max_batches: int) -> int:
        """Re-estimate the backbone's BatchNorm statistics on ``batch["input"]`` of up to ``max_batches`` batches of
        ``loader`` (moved to the device through the trainer's transfer hooks when attached, so device-side
        representations apply); the EMA copy, if any, takes the same statistics. Returns the batches used."""
        strategy = self.trainer.strategy if self._trainer is not None else None

        def inputs() -> Any:
            for batch in loader:
                if strategy is not None:
                    batch = strategy.batch_to_device(batch)
                yield batch["input"]

        n = reestimate_batchnorm(self.backbone, inputs(), max_batches)
        if self.ema is not None:
            online = dict(self.backbone.named_buffers())
            for name, buf in self.ema["backbone"].named_buffers():
                buf.copy_(online[name])
        rank_zero_info(f"evssl: BatchNorm statistics of the probed backbone re-estimated on {n} training batches")
        return n

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step the optimizer, then update the model EMA once (once per optimizer step, also under accumulation)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            ema_update_(self.backbone, self.ema["backbone"], float(self.ema_decay))
            ema_update_(self.head, self.ema["head"], float(self.ema_decay))

    # -------------------------------------------------------------------------------------------------- steps
    def _shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        logits = self(batch["input"])
        labels = batch["label"]
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        bs = batch_size_of(batch)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss.detach(), prog_bar=stage != "test", on_step=on_step, on_epoch=True,
                 batch_size=bs, sync_dist=not on_step)  # fmt: skip
        for k in self.top_k if stage != "train" else (1,):
            metric = getattr(self, f"{stage}_top{k}")
            metric(logits.detach(), labels)
            name = f"{stage}/acc" if k == 1 else f"{stage}/acc_top{k}"
            self.log(name, metric, prog_bar=k == 1, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy (with label smoothing) on ``batch["input"]`` / ``batch["label"]``."""
        loss = self._shared_step(batch, "train")
        if self._trainer is not None and self.trainer.optimizers:
            self.log(
                "train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), batch_size=batch_size_of(batch)
            )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss, top-1 and top-5 accuracy (``val/...``)."""
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss, top-1 and top-5 accuracy (``test/...``)."""
        self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """``{"logits", "pred"}`` (+ ``"label"`` when the batch has one)."""
        logits = self(batch["input"])
        out = {"logits": logits, "pred": logits.argmax(dim=1)}
        if "label" in batch:
            out["label"] = batch["label"]
        return out
