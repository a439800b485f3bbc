"""Cached synthetic stores: generated once, under a lock, at a versioned path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from data_store import write_test_store

from evssl.data import synthetic
from evssl.events import simulate


@pytest.fixture
def fake_generator(monkeypatch):
    """Replace the simulator by a fast writer of the test store; count the calls."""
    calls: list[tuple] = []

    def fake(path, size="tiny", seed=0, kinds=("classification", "sequence"), **kw):
        calls.append((Path(path).name, size, seed))
        time.sleep(0.2)  # long enough for concurrent callers to pile up on the lock
        return write_test_store(Path(path))

    monkeypatch.setattr(simulate, "make_synthetic_store", fake)
    return calls


def test_path_encodes_size_seed_and_version(tmp_path):
    p = synthetic.synthetic_store_path("small", 7, tmp_path)
    assert p.parent == tmp_path
    assert "small" in p.name and "seed7" in p.name and f"gen{simulate.GENERATOR_VERSION}" in p.name


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EVSSL_CACHE", str(tmp_path / "c"))
    assert synthetic.default_cache_dir() == tmp_path / "c"
    assert synthetic.synthetic_store_path().parent == tmp_path / "c"
    monkeypatch.delenv("EVSSL_CACHE")
    assert synthetic.default_cache_dir() == Path.home() / ".cache" / "evssl"


def test_generated_once(fake_generator, tmp_path):
    p = synthetic.synthetic_store("tiny", 0, tmp_path)
    assert p.exists() and len(fake_generator) == 1
    mtime = p.stat().st_mtime_ns
    assert synthetic.synthetic_store("tiny", 0, tmp_path) == p
    assert p.stat().st_mtime_ns == mtime and len(fake_generator) == 1
    synthetic.synthetic_store("tiny", 1, tmp_path)  # another seed: another store
    assert len(fake_generator) == 2
    assert not list(tmp_path.glob("*.tmp-*"))  # the writer's temporary files are gone


def test_concurrent_callers_generate_once(fake_generator, tmp_path):
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(synthetic.synthetic_store("tiny", 0, tmp_path))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_generator) == 1
    assert len(set(paths)) == 1 and paths[0].exists()


@pytest.mark.slow
def test_real_tiny_store(tmp_path):
    from evssl.events.io.store import EventStore

    p = synthetic.synthetic_store("tiny", 0, tmp_path)
    mtime = p.stat().st_mtime_ns
    assert synthetic.synthetic_store("tiny", 0, tmp_path).stat().st_mtime_ns == mtime
    with EventStore(p) as s:
        assert {"train", "val", "test", "sequence"} <= set(s.splits.tolist())
