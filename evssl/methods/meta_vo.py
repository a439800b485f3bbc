"""Self-supervised deep visual odometry with online meta-learned adaptation (Li et al., CVPR 2020, arXiv 2005.06136).

No public code exists; this is a first implementation from the abstract/introduction, the digest
(``shared/reference/evdistill_brave_vo.md`` §2, formulas marked [R] there are unverified) and the seed note. Every
unverified choice is an option (:mod:`evssl.methods.meta_vo_options`), with its formula here.

Networks (:func:`evssl.nn.depth_pose.depth_pose_net`): DepthNet (``backbone`` + Monodepth2 decoder) and PoseNet
(``[x_t, x_s]`` -> ``T_t2s``) with ConvLSTM memory carried from window to window and reset at sequence start (selling
point 2) and online feature alignment (selling point 3). Input frames or event voxel grids (``data.input``); the
photometric loss always uses the frames.

Window loss (:func:`evssl.losses.photometric.multiscale_view_synthesis_loss`), window ``D = (I_{t-1}, I_t, I_{t+1})``:

    L(theta; D) = (1/S) sum_s [ min-reprojection photometric (alpha = 0.85, auto-mask) + lambda_s / 2^s L_smooth ]

Training (selling point 1, :func:`evssl.nn.meta.meta_objective`): a snippet ``D_1 .. D_{M+1}`` of consecutive windows;
``meta.enabled``: ``theta_{i+1} = theta_i - alpha grad L(theta_i; D_i)`` and the outer loss
``(1/M) sum_i L(theta_{i+1}; D_{i+1})`` (second order, or ``first_order``); the outer step is the configured
optimizer. ``alpha`` is fixed by default (the digest has it as a hyper-parameter; the test-time loop uses the same
fixed step, so the meta-learned initialisation is trained for exactly the update it will get online);
``learn_inner_lr`` makes ``log alpha`` a parameter (Meta-SGD-like, one scalar). Logged: ``train/grad_cos`` = cosine
between the gradients of consecutive windows (the inner product the first-order expansion of the meta-objective
maximises). ``meta.enabled=False`` trains on the mean window loss (the "naive online fine-tuning" baseline).

Test / predict (online adaptation, ``trainer.inference_mode: false`` is required): for every test sequence, window by
window: (1) predict depth and pose of window ``i`` with the current fast weights ``theta_i`` and the carried ConvLSTM
state (these predictions are what is evaluated), (2) fold window ``i``'s feature statistics into the online
alignment statistics (so the adaptation pass of step 3 and window ``i + 1`` see them; window ``i`` itself was
predicted with the statistics of windows ``< i``), (3) ``steps`` SGD (or Adam) steps on ``L(theta_i; D_i)`` ->
``theta_{i+1}``, (4) carry the state. ``test_step`` takes the ``dataloader_iter`` and pulls one window at a time, so
window ``i + 1`` is not even read before window ``i`` has been predicted (Lightning's default fetcher would read one
batch ahead). Fast weights live in a separate dict: the module's parameters, and therefore checkpoints, are never
changed by adaptation; all buffers (alignment statistics, BatchNorm statistics) are restored after the test epoch.

Metrics per sequence, averaged over sequences (:mod:`evssl.metrics.online_vo`): KITTI ``t_rel`` / ``r_rel``, ATE
(Sim(3)), RPE, depth errors; per-window curves (:attr:`MetaVO.online_curves`); ``VOMedia`` (:mod:`evssl.callbacks`)
draws trajectories and depth maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import move_data_to_device
from lightning_utilities import apply_to_collection
from torch import Tensor, nn
from torch.func import functional_call

from evssl.losses.photometric import VOLossConfig, multiscale_view_synthesis_loss, upsampled_depth
from evssl.methods.base import PretrainMethod, apply_preset
from evssl.methods.meta_vo_options import META_VO_PRESETS, MetaConfig, MetaVOOptim, OnlineConfig
from evssl.metrics.online_vo import OnlineVORecorder, mean_over_sequences
from evssl.nn.backbones.resnet import ResNet
from evssl.nn.depth_pose import NetworkConfig, depth_pose_net, feature_alignments
from evssl.nn.meta import adam_step, functional_params, meta_objective
from evssl.nn.probe import DEFAULT_PROBE, ProbeConfig
from evssl.utils.batch import first_item
from evssl.utils.hparams import as_config

__all__ = ["META_VO_PRESETS", "MetaConfig", "MetaVO", "MetaVOOptim", "NetworkConfig", "OnlineConfig", "VOLossConfig"]


def _f64(t: Tensor) -> Any:
    """A tensor as a float64 numpy array (for the metrics)."""
    return t.detach().double().cpu().numpy()


# ------------------------------------------------------------------------------------------------------- method
class MetaVO(PretrainMethod):
    """Self-supervised depth + pose with online meta-learned adaptation (see module docstring).

    Args:
        backbone: the DepthNet encoder (an evssl :class:`ResNet`; ``in_chans`` linked from ``data.in_channels``);
            the pose encoder is a fresh ResNet of the same kind with twice the input channels.
        network, loss, meta, online: option groups (:class:`NetworkConfig`, :class:`VOLossConfig`,
            :class:`MetaConfig`, :class:`OnlineConfig`).
        preset: ``"paper"`` or ``"small"`` (:data:`META_VO_PRESETS`).
        optim: the outer optimiser (:class:`MetaVOOptim`: AdamW, no weight decay, constant lr).
        probe: accepted for the CLI's class-count link; the VO data has no labels, so no probe is built.
    """

    def __init__(
        self,
        backbone: nn.Module,
        network: NetworkConfig | None = None,
        loss: VOLossConfig | None = None,
        meta: MetaConfig | None = None,
        online: OnlineConfig | None = None,
        preset: Literal["paper", "small"] = "small",
        optim: MetaVOOptim | None = None,
        probe: ProbeConfig | None = DEFAULT_PROBE,
    ) -> None:
        super().__init__(backbone, optim, None, ProbeConfig(enabled=False), default_optim=MetaVOOptim())
        if not isinstance(backbone, ResNet):
            raise TypeError(f"MetaVO needs an evssl ResNet backbone (DepthNet encoder), got {type(backbone).__name__}")
        self.automatic_optimization = False
        self.network_cfg = as_config(NetworkConfig, network)
        self.loss_cfg = as_config(VOLossConfig, loss)
        self.meta_cfg = apply_preset(as_config(MetaConfig, meta), META_VO_PRESETS, preset, "MetaVO.meta")
        self.online_cfg = apply_preset(as_config(OnlineConfig, online), META_VO_PRESETS, preset, "MetaVO.online")
        self.preset = preset
        self.net = depth_pose_net(backbone, self.network_cfg)
        self.log_inner_lr = nn.Parameter(
            torch.tensor(math.log(float(self.meta_cfg.inner_lr))), requires_grad=self.meta_cfg.learn_inner_lr
        )
        self._set_alignment_mode("source" if self.online_cfg.feature_alignment else "off")
        self.online_results: list[dict[str, Any]] = []
        self.online_curves: list[dict[str, Any]] = []
        self.online_media: list[dict[str, Any]] = []
        self._seq: OnlineVORecorder | None = None
        self._state: Any = None  # ConvLSTM state carried from window to window

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def inner_lr(self) -> Tensor:
        """alpha (learnable or fixed)."""
        return self.log_inner_lr.exp()

    def learnable_params(self) -> list[dict[str, Any]]:
        """One group for both networks (the backbone is inside ``net``) and the learnable inner lr (no decay)."""
        groups: list[dict[str, Any]] = [{"name": "networks", "params": list(self.net.parameters())}]
        if self.meta_cfg.learn_inner_lr:
            groups.append({"name": "inner_lr", "params": [self.log_inner_lr], "weight_decay": 0.0})
        return groups

    def _set_alignment_mode(self, mode: str) -> None:
        for fa in feature_alignments(self.net):
            fa.mode = mode  # type: ignore[assignment]

    @staticmethod
    def _window(batch: dict[str, Any], i: int, size: int) -> tuple[list[Tensor], list[Tensor]]:
        inputs = batch["inputs"][:, i : i + size]
        frames = batch["frames"][:, i : i + size]
        return list(inputs.unbind(1)), list(frames.unbind(1))

    def window_loss(
        self, params: dict[str, Tensor] | None, inputs: list[Tensor], frames: list[Tensor], k: Tensor, state: Any = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Any]]:
        """``L(theta; D)`` of one window (mean over scales), its parts, and the network output."""
        out = self.net(inputs, state) if params is None else functional_call(self.net, params, (inputs, state))
        c = len(frames) // 2
        sources = [frames[j] for j in range(len(frames)) if j != c]
        n = self.network_cfg
        parts = multiscale_view_synthesis_loss(
            out["disp"], frames[c], sources, out["T_t2s"], k, n.min_depth, n.max_depth, self.loss_cfg
        )
        return parts.pop("loss"), parts, out

    # ------------------------------------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        """Fresh snippet positions each epoch (the VO data module's snippet dataset is epoch-keyed)."""
        dm = getattr(self.trainer, "datamodule", None)
        ds = getattr(dm, "datasets", {}).get("train") if dm is not None else None
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(int(self.current_epoch))
        self._set_alignment_mode("source" if self.online_cfg.feature_alignment else "off")

    def snippet_objective(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Meta-objective (or plain mean window loss) of one batch of snippets; returns ``(loss, logs)``."""
        wf = int(first_item(batch["window_frames"])) if "window_frames" in batch else 3
        n_win = int(batch["inputs"].shape[1]) - wf + 1
        k = batch["intrinsics"]
        states: dict[int, Any] = {0: None}

        def loss_fn(params: dict[str, Tensor] | None, i: int) -> Tensor:
            inputs, frames = self._window(batch, i, wf)
            loss, _, out = self.window_loss(params, inputs, frames, k, states.get(i))
            st = out["state"]
            states.setdefault(i + 1, st if self.meta_cfg.bptt else apply_to_collection(st, Tensor, Tensor.detach))
            return loss

        logs: dict[str, Tensor] = {}
        if self.meta_cfg.enabled and n_win >= 2:
            mc = self.meta_cfg
            theta = functional_params(self.net)
            res = meta_objective(loss_fn, theta, n_win, self.inner_lr, first_order=bool(mc.first_order), chain=mc.chain)
            logs["inner_loss"] = torch.stack(res.inner_losses).mean()
            logs["outer_loss"] = torch.stack(res.outer_losses).mean()
            if res.grad_cosines:
                logs["grad_cos"] = torch.stack(res.grad_cosines).mean()
            logs["inner_lr"] = self.inner_lr.detach()
            return res.loss, logs
        losses = [loss_fn(None, i) for i in range(n_win)]
        return torch.stack(losses).mean(), logs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One outer step (manual optimisation: the meta-gradient is built here)."""
        opt = self.optimizers()
        sched = self.lr_schedulers()
        loss, logs = self.snippet_objective(batch)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if sched is not None:
            sched.step()
        bs = int(batch["inputs"].shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for key, val in logs.items():
            self.log(f"train/{key}", val.detach().float(), batch_size=bs)
        self.log("train/lr", float(opt.param_groups[0]["lr"]), batch_size=bs)
        return loss.detach()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Window loss of the fixed model (no adaptation) on validation windows, logged as ``val/loss``."""
        inputs, frames = self._window(batch, 0, batch["inputs"].shape[1])
        loss, parts, _ = self.window_loss(None, inputs, frames, batch["intrinsics"])
        self.log("val/loss", loss, prog_bar=True, batch_size=int(batch["inputs"].shape[0]))
        self.log("val/photometric", parts["photometric"], batch_size=int(batch["inputs"].shape[0]))

    # ------------------------------------------------------------------------------------------ online loop
    def online_begin(self) -> None:
        """Start an online evaluation: snapshot buffers, BN to eval, alignment to online mode."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "MetaVO adapts online during test/predict and needs gradients: set trainer.inference_mode: false"
            )
        self._buffer_backup = {k: v.detach().clone() for k, v in self.net.named_buffers()}
        self.online_results, self.online_curves, self.online_media = [], [], []
        self._seq = None
        self._set_alignment_mode("online" if self.online_cfg.feature_alignment else "off")
        self.net.eval() if self.online_cfg.bn_eval else self.net.train()

    def online_end(self) -> dict[str, float]:
        """Close the last sequence, restore every buffer, return the sequence-averaged metrics."""
        self.flush_online()
        backup = getattr(self, "_buffer_backup", None)
        if backup is not None:
            with torch.no_grad():
                for k, v in self.net.named_buffers():
                    v.copy_(backup[k])
        self._set_alignment_mode("source" if self.online_cfg.feature_alignment else "off")
        return mean_over_sequences(self.online_results)

    def flush_online(self) -> None:
        """Finish the open sequence (its metrics, curves and media), e.g. one cut short by ``limit_test_batches``."""
        seq, self._seq = self._seq, None
        report = seq.finish() if seq is not None else None
        if report is not None:
            self.online_results.append(report.metrics)
            self.online_curves.append(report.curve)
            self.online_media.append(report.media)

    def _start_sequence(self, seq_id: int) -> None:
        self.flush_online()
        if self.online_cfg.reset_per_sequence or not hasattr(self, "_fast"):
            self._fast = {k: v.detach().clone().requires_grad_(True) for k, v in functional_params(self.net).items()}
            self._adam_state: dict[str, Any] = {}
        for fa in feature_alignments(self.net):
            fa.reset_online()
        cfg = self.online_cfg
        self._seq = OnlineVORecorder(seq_id, cfg.kitti_lengths, cfg.kitti_step, self.network_cfg.max_depth)
        self._state = None

    def online_window(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Predict window ``i`` with the current fast weights, then adapt on it (module docstring, steps 1-4)."""
        seq_id = int(first_item(batch["seq_id"]))
        if bool(first_item(batch["seq_start"])) or self._seq is None or self._seq.seq_id != seq_id:
            self._start_sequence(seq_id)
        seq = self._seq
        assert seq is not None
        wf = int(batch["inputs"].shape[1])
        inputs, frames = self._window(batch, 0, wf)
        k = batch["intrinsics"]
        state_in = self._state
        last = bool(first_item(batch.get("seq_end", False)))
        # (1) predict with theta_i (no gradient) -- these are the recorded outputs
        with torch.no_grad():
            loss0, parts0, out = self.window_loss(self._fast, inputs, frames, k, state_in)
        # (2) alignment statistics of window i are folded in after it has been predicted
        for fa in feature_alignments(self.net):
            fa.update_online()
        n = self.network_cfg
        depth = upsampled_depth(out["disp"][0], frames[0].shape[-2:], n.min_depth, n.max_depth)[1][0, 0]
        t2s = [_f64(t[0]) for t in out["T_t2s"]]
        start, gt_poses, gt_depth = int(first_item(batch["start_frame"])), batch["poses"][0], batch["depth"][0, wf // 2]
        seq.add(start, _f64(gt_poses), t2s, _f64(depth), _f64(gt_depth), float(parts0["photometric"]), last)
        # (3) adapt on window i -> theta_{i+1}
        if self.online_cfg.enabled and self.online_cfg.steps > 0:
            with torch.enable_grad():
                self._adapt(inputs, frames, k, state_in)
        # (4) carry the recurrent state
        self._state = apply_to_collection(out["state"], Tensor, Tensor.detach)
        result = {
            "seq_id": seq_id,
            "window_index": int(first_item(batch["window_index"])),
            "depth": depth.detach().cpu(),
            "T_t2s": [torch.from_numpy(t) for t in t2s],
            "loss": float(loss0),
        }
        if last:
            self.flush_online()
        return result

    def _adapt(self, inputs: list[Tensor], frames: list[Tensor], k: Tensor, state: Any) -> None:
        cfg = self.online_cfg
        lr = float(cfg.lr)  # type: ignore[arg-type]
        for _ in range(int(cfg.steps)):
            theta = {n: p.detach().requires_grad_(True) for n, p in self._fast.items()}
            loss, _, _ = self.window_loss(theta, inputs, frames, k, state)
            grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
            with torch.no_grad():
                new = {}
                for (n, p), g in zip(theta.items(), grads):
                    if g is None:
                        new[n] = p
                    elif cfg.optimizer == "adam":
                        new[n] = adam_step(p, g, self._adam_state.setdefault(n, {}), lr)
                    else:
                        new[n] = p - lr * g
            self._fast = {n: v.detach().requires_grad_(True) for n, v in new.items()}
            for fa in feature_alignments(self.net):  # the adaptation pass must not add statistics twice
                fa._pending = None

    # ----------------------------------------------------------------------------------------- Lightning hooks
    def on_test_epoch_start(self) -> None:
        self.online_begin()

    def test_step(self, dataloader_iter: Iterator) -> None:  # type: ignore[override]
        """One window of the online loop; pulls its own batch so nothing is read ahead."""
        batch, _, _ = next(dataloader_iter)
        self.online_window(move_data_to_device(batch, self.device))

    def on_test_epoch_end(self) -> None:
        metrics = self.online_end()
        for key, val in metrics.items():
            self.log(f"test/{key}", val)

    def on_predict_epoch_start(self) -> None:
        self.online_begin()

    def predict_step(self, dataloader_iter: Iterator) -> dict[str, Any]:  # type: ignore[override]
        """Online prediction of one window: ``{"seq_id", "window_index", "depth" (H, W), "T_t2s", "loss"}``."""
        batch, _, _ = next(dataloader_iter)
        return self.online_window(move_data_to_device(batch, self.device))

    def on_predict_epoch_end(self) -> None:
        self.online_end()

    def backbone_for_export(self) -> nn.Module:
        """The DepthNet's ResNet encoder (``backbone``)."""
        return self.backbone

    def extra_repr(self) -> str:
        return f"preset={self.preset}, meta={asdict(self.meta_cfg)}, online={asdict(self.online_cfg)}"
