"""Cached synthetic stores: generated once per (size, seed, generator version), shared by all processes.

The store is written by :func:`evssl.events.simulate.make_synthetic_store`, whose :class:`StoreWriter` writes to a
temporary file and renames it into place, so a reader never sees a half-written store. Generation happens under an
exclusive ``fcntl`` lock on ``<store>.lock``: when several processes (DDP ranks, pytest-xdist workers) ask for the
same store at once, one generates it and the others wait and then reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "synthetic_store", "synthetic_store_path"]


def default_cache_dir() -> Path:
    """``$EVSSL_CACHE`` when set, else ``~/.cache/evssl``."""
    env = os.environ.get("EVSSL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "evssl"


def _generator_version() -> str:
    from evssl.events import simulate

    for name in ("GENERATOR_VERSION", "VERSION", "__version__"):
        v = getattr(simulate, name, None)
        if v is not None:
            return str(v)
    return "0"


def synthetic_store_path(
    size: str = "tiny", seed: int = 0, cache_dir: str | Path | None = None, domain: str = "default"
) -> Path:
    """Where the cached store of this size, seed, domain and generator version lives (it may not exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dom = "" if domain == "default" else f"-{domain}"
    return root / f"synthetic-{size}{dom}-seed{int(seed)}-gen{_generator_version()}.h5"


def synthetic_store(
    size: str = "tiny", seed: int = 0, cache_dir: str | Path | None = None, domain: str = "default"
) -> Path:
    """Path of the synthetic store of ``size``, ``seed`` and ``domain`` (see :data:`evssl.events.simulate.DOMAINS`),
    generating it on first use (process-safe)."""
    if domain != "default":
        from evssl.events.simulate import DOMAINS

        if domain not in DOMAINS:
            raise ValueError(f"unknown synthetic domain {domain!r}; choose from {sorted(DOMAINS)}")
    path = synthetic_store_path(size, seed, cache_dir, domain)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as fh:
        _lock(fh.fileno())
        try:
            if not path.exists():  # another process may have finished while we waited
                from evssl.events.simulate import make_synthetic_store

                make_synthetic_store(path, size=size, seed=seed, domain=domain)
        finally:
            _unlock(fh.fileno())
    return path


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no inter-process lock, the atomic rename still holds
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return
    fcntl.flock(fd, fcntl.LOCK_UN)
