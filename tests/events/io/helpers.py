"""Assertions and file writing shared by the reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evssl.events.schema import Events


def assert_same(a: Events, b: Events, *, size: bool = True) -> None:
    """Equal columns (and dtypes); equal sensor size unless ``size=False``."""
    assert len(a) == len(b)
    for f in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
        assert getattr(a, f).dtype == getattr(b, f).dtype, f
    if size:
        assert a.sensor_size == b.sensor_size


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """``data`` written to ``tmp_path / name``."""
    path = tmp_path / name
    path.write_bytes(data)
    return path
