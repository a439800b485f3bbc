"""Fixtures of tests/data: the hand-made test store (see data_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_store import write_test_store


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared test store (read-only)."""
    return write_test_store(tmp_path_factory.mktemp("store") / "test.h5")


@pytest.fixture(scope="session")
def store(store_path: Path):
    """An open EventStore on the shared test store."""
    from evssl.events.io.store import EventStore

    s = EventStore(store_path)
    yield s
    s.close()
