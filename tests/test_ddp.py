"""Two-process DDP (gloo, CPU) of the supervised smoke config equals one process on the same global batch.

Data: :class:`~evssl.data.datasets.EpochSampler` is a ``DistributedSampler`` (rank ``r`` takes positions
``r, r + 2, ...`` of one seeded permutation), so one process with batch ``2B`` and two ranks with batch ``B`` see the
same samples in every step, and every sample's window/augmentation is seeded by its key, not by the rank.

Model: the smoke config's ResNet uses BatchNorm, whose per-rank batch statistics differ from the statistics of the
full batch, and ``SyncBatchNorm`` is GPU-only in PyTorch. The test therefore swaps in a GroupNorm backbone
(``tests.helpers.TinyNet``, per-sample normalisation) — everything else (data module, representation, Classifier,
AdamW, warm-up/cosine schedule, label smoothing) is the smoke config. With BN on GPUs, ``trainer.sync_batchnorm``
gives the same equivalence.

Expected: the mean of the two ranks' losses equals the single-process loss at every step (DDP averages gradients,
the single process averages the loss over the 2B samples), and the final weights agree.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import REPO, cli_env
from tests.test_cli import evssl_command

SUPERVISED = REPO / "experiments" / "smoke" / "supervised.yaml"
STEPS = 3


def _run(tmp_path: Path, name: str, batch: int, extra: list[str]) -> Path:
    out = tmp_path / name
    override = {
        "trainer": {
            "max_steps": STEPS,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "callbacks": [{"class_path": "tests.helpers.RecordSteps", "init_args": {"out_dir": str(out)}}],
        },
        "model": {"init_args": {"backbone": {"class_path": "tests.helpers.TinyNet", "init_args": {"width": 8}}}},
        "data": {"init_args": {"batch_size": batch, "windows_per_recording": 1, "num_workers": 0}},
    }
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(override))
    cmd = [*evssl_command(), "fit", "--config", str(SUPERVISED), "--config", str(cfg), *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


@pytest.mark.ddp
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    single = _run(tmp_path, "single", 8, [])
    ddp = _run(
        tmp_path,
        "ddp",
        4,
        ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
    )
    one = json.loads((single / "loss_rank0.json").read_text())
    r0 = json.loads((ddp / "loss_rank0.json").read_text())
    r1 = json.loads((ddp / "loss_rank1.json").read_text())
    assert len(one) == len(r0) == len(r1) == STEPS
    assert r0 != r1  # the ranks really saw different halves of the batch
    for step, (a, b0, b1) in enumerate(zip(one, r0, r1)):
        assert (b0 + b1) / 2 == pytest.approx(a, rel=1e-5, abs=1e-6), f"step {step}"
    w1 = torch.load(single / "weights.pt", weights_only=True)
    w2 = torch.load(ddp / "weights.pt", weights_only=True)
    assert set(w1) == set(w2)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=key)
