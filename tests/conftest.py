"""Shared fixtures: real-data location, tiny synthetic stores, deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("EVSSL_REAL_DATA", REPO.parent / "shared" / "real-data"))


def real_file(rel: str) -> Path:
    """Path of a real recording under $EVSSL_REAL_DATA, or skip the test with the reason."""
    path = REAL_DATA / rel
    if not path.exists():
        pytest.skip(f"real recording {rel} not found under {REAL_DATA} (set EVSSL_REAL_DATA)")
    return path
