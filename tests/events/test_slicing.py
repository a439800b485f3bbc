"""Value tests of the window helpers in evssl.events.slicing."""

from __future__ import annotations

import numpy as np
import pytest

from evssl.events.slicing import (
    index_at,
    ms_index,
    random_window,
    window_indices,
    windows_by_count,
    windows_by_time,
)


def test_windows_by_time_values() -> None:
    t = np.array([100, 150, 400, 1099])  # span [100, 1100) = 1000 µs
    np.testing.assert_array_equal(windows_by_time(t, 500), [[100, 600], [600, 1100]])
    np.testing.assert_array_equal(windows_by_time(t, 400), [[100, 500], [500, 900]])
    np.testing.assert_array_equal(
        windows_by_time(t, 400, include_incomplete=True), [[100, 500], [500, 900], [900, 1300]]
    )
    np.testing.assert_array_equal(windows_by_time(t, 600, 200), [[100, 700], [300, 900], [500, 1100]])
    assert windows_by_time(t, 2000).shape == (0, 2)
    np.testing.assert_array_equal(windows_by_time(t, 2000, include_incomplete=True), [[100, 2100]])
    assert windows_by_time(np.zeros(0, np.int64), 10, include_incomplete=True).shape == (0, 2)
    np.testing.assert_array_equal(windows_by_time(np.array([5]), 1), [[5, 6]])
    with pytest.raises(ValueError, match="duration_us"):
        windows_by_time(t, 0)


def test_windows_by_count_values() -> None:
    np.testing.assert_array_equal(windows_by_count(10, 4), [[0, 4], [4, 8]])
    np.testing.assert_array_equal(windows_by_count(10, 4, include_incomplete=True), [[0, 4], [4, 8], [8, 10]])
    np.testing.assert_array_equal(windows_by_count(10, 4, 3), [[0, 4], [3, 7], [6, 10]])
    np.testing.assert_array_equal(windows_by_count(10, 4, 4, include_incomplete=True)[-1], [8, 10])
    np.testing.assert_array_equal(windows_by_count(3, 4, include_incomplete=True), [[0, 3]])
    assert windows_by_count(3, 4).shape == (0, 2)
    assert windows_by_count(0, 4, include_incomplete=True).shape == (0, 2)


def test_window_indices() -> None:
    t = np.array([0, 10, 10, 20, 30])
    np.testing.assert_array_equal(window_indices(t, [[0, 10], [10, 21], [31, 40]]), [[0, 1], [1, 4], [5, 5]])


def test_ms_index_values() -> None:
    t = np.array([1000, 1000, 1500, 2999, 3000, 5200])
    # bounds 1000, 2000, 3000, 4000, 5000, 6000 -> first index with t >= bound
    np.testing.assert_array_equal(ms_index(t), [0, 3, 4, 5, 5, 6])
    np.testing.assert_array_equal(ms_index(np.zeros(0, np.int64)), [0])
    np.testing.assert_array_equal(ms_index(np.array([7])), [0, 1])
    # agrees with searchsorted for random data
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(-5000, 50_000, 500))
    ms = ms_index(t)
    assert len(ms) == (t[-1] - t[0]) // 1000 + 2 and ms[-1] == len(t)
    bounds = t[0] + 1000 * np.arange(len(ms))
    np.testing.assert_array_equal(ms, np.searchsorted(t, bounds))


def test_index_at_matches_searchsorted() -> None:
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(0, 20_000, 300))
    ms = ms_index(t)
    queries = [*rng.integers(-1000, 22_000, 200).tolist(), int(t[0]), int(t[-1]), int(t[-1]) + 1, int(t[0]) + 1000]
    for q in queries:
        assert index_at(t, ms, q) == np.searchsorted(t, q), q
    assert index_at(np.zeros(0, np.int64), np.zeros(1, np.int64), 5) == 0


def test_random_window_time() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        t0, t1 = random_window(rng, t_start=100, t_end=104, duration_us=3)
        assert t1 - t0 == 3 and 100 <= t0 and t1 <= 105
        starts.add(t0)
    assert starts == {100, 101, 102}  # every valid integer start is reachable
    assert random_window(None, t_start=100, t_end=109, duration_us=4) == (103, 107)  # centred
    assert random_window(rng, t_start=100, t_end=101, duration_us=10) == (100, 110)  # too short: from the start
    assert random_window(None, t_start=100, t_end=101, duration_us=10) == (96, 106)  # too short: centred


def test_random_window_count() -> None:
    rng = np.random.default_rng(0)
    seen = {random_window(rng, num_events=5, count=3) for _ in range(200)}
    assert seen == {(0, 3), (1, 4), (2, 5)}
    assert random_window(None, num_events=10, count=4) == (3, 7)
    assert random_window(rng, num_events=2, count=4) == (0, 2)
    assert random_window(rng, num_events=0, count=4) == (0, 0)
    with pytest.raises(ValueError, match="exactly one"):
        random_window(rng, num_events=3)
    with pytest.raises(ValueError, match="exactly one"):
        random_window(rng, num_events=3, count=1, duration_us=1)
