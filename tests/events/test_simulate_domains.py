"""Named simulator domains: default unchanged, deterministic, each domain changes what it says it changes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from evssl.events.simulate import DOMAINS, SIZES, domain_config, make_synthetic_store, simulate_clip

BASE = replace(SIZES["vo_tiny"].sequence, duration_us=300_000)


def _clip(domain: str, seed: int = 3):
    return simulate_clip(domain_config(BASE, domain), np.random.default_rng(seed))


def test_default_domain_is_the_preset_and_deterministic():
    assert domain_config(BASE, "default") is BASE
    a, b = _clip("night"), _clip("night")
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.events.t, b.events.t)
    with pytest.raises(ValueError, match="unknown domain"):
        domain_config(BASE, "moon")


def test_domains_change_appearance_and_motion():
    ref = _clip("default")
    night = _clip("night")
    # same scene layout and camera (the generator is consumed identically), darker and flatter frames
    assert np.allclose(night.poses, ref.poses) and np.allclose(night.depth, ref.depth)
    assert night.frames.mean() < 0.7 * ref.frames.mean()
    assert night.frames.astype(float).std() < 0.75 * ref.frames.astype(float).std()
    fast = _clip("fast")
    step = lambda c: np.linalg.norm(np.diff(c.poses[:, :3, 3], axis=0), axis=1).mean()  # noqa: E731
    assert step(fast) == pytest.approx(2 * step(ref), rel=1e-6)
    fine = _clip("fine")
    grad = lambda c: np.abs(np.diff(c.frames.astype(float), axis=2)).mean()  # noqa: E731
    assert grad(fine) > 1.3 * grad(ref)
    gray = _clip("gray")
    assert np.abs(gray.frames[..., 0].astype(int) - gray.frames[..., 1]).max() <= 1
    assert set(DOMAINS) >= {"default", "night", "fast", "fine", "night_fine_fast"}


def test_store_records_the_domain(tmp_path, monkeypatch):
    import evssl.events.simulate as sim

    small = replace(SIZES["vo_tiny"], num_sequences=1, sequence=replace(BASE, duration_us=200_000))
    monkeypatch.setitem(sim.SIZES, "vo_tiny", small)
    from evssl.events.io.store import EventStore

    path = make_synthetic_store(tmp_path / "n.h5", "vo_tiny", seed=0, kinds=("sequence",), domain="night")
    with EventStore(path) as st:
        assert st.attrs["domain"] == "night"
        assert st.attrs["sequence_config"]["brightness"] == DOMAINS["night"][0]["brightness"]
    from evssl.cli import main

    assert (
        main(["synth", "--size", "vo_tiny", "--kinds", "sequence", "--domain", "fast", "-o", str(tmp_path / "f.h5")])
        == 0
    )
    with EventStore(tmp_path / "f.h5") as st:
        assert st.attrs["domain"] == "fast"
