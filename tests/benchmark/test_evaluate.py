"""Probe functions of the benchmark against clean-room restatements; report statistics by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evssl.benchmark.evaluate import knn_classify, linear_probe
from evssl.benchmark.report import mean_std, paired_difference, summary_rows, to_markdown


def _knn_loop(xtr, ytr, xte, yte, classes, k, tau, windows):
    """One query at a time, plain Python sorting (the restatement)."""
    correct = 0
    n_rec = xte.shape[0] // windows
    for r in range(n_rec):
        score = [0.0] * classes
        for w in range(windows):
            q = xte[r * windows + w]
            sims = [float(F.cosine_similarity(q.double(), x.double(), dim=0)) for x in xtr]
            order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
            for i in order:
                score[int(ytr[i])] += math.exp(sims[i] / tau)
        correct += int(max(range(classes), key=lambda c: score[c]) == int(yte[r * windows]))
    return correct / n_rec


@pytest.mark.parametrize("windows", [1, 2])
def test_knn_matches_loop(windows: int) -> None:
    g = torch.Generator().manual_seed(0)
    xtr, ytr = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    xte = torch.randn(12, 6, generator=g)
    yte = torch.randint(0, 3, (12 // windows,), generator=g).repeat_interleave(windows)
    got = knn_classify((xtr, ytr), (xte, yte), 3, k=5, temperature=0.1, test_windows=windows)
    assert got == pytest.approx(_knn_loop(xtr, ytr, xte, yte, 3, 5, 0.1, windows))


def test_knn_perfect_on_separated_clusters() -> None:
    centres = torch.eye(4) * 10
    xtr = centres.repeat_interleave(5, 0) + 0.01 * torch.randn(20, 4)
    ytr = torch.arange(4).repeat_interleave(5)
    assert knn_classify((xtr, ytr), (centres, torch.arange(4)), 4, k=3) == 1.0


def test_linear_probe_separable_and_head_reproduces_logits() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 5, generator=g)
    x = torch.randn(300, 5, generator=g) * 3 + 2
    y = (x @ w.T).argmax(1)
    head = torch.nn.Linear(5, 3)
    acc = linear_probe((x[:200], y[:200]), (x[200:], y[200:]), 3, l2=1e-6, head=head)
    assert acc > 0.9
    # the head on raw features = the fitted standardised model: its predictions give the same accuracy
    with torch.no_grad():
        assert float((head(x[200:]).argmax(1) == y[200:]).float().mean()) == pytest.approx(acc)


def test_linear_probe_chance_on_random_labels() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(400, 4, generator=g), torch.randint(0, 4, (400,), generator=g)
    acc = linear_probe((x[:300], y[:300]), (x[300:], y[300:]), 4)
    assert acc < 0.45


def test_stats_by_hand() -> None:
    mu, sd = mean_std([0.1, 0.3])
    assert mu == pytest.approx(0.2) and sd == pytest.approx(math.sqrt(0.02))
    assert mean_std([0.5]) == (0.5, 0.0)
    d, se, n = paired_difference({0: 0.5, 1: 0.7, 2: 0.6}, {0: 0.4, 1: 0.4, 2: 0.5})
    # differences 0.1, 0.3, 0.1: mean 1/6·... = 0.1667, sd = 0.11547, se = sd/√3
    assert n == 3 and d == pytest.approx(0.5 / 3) and se == pytest.approx(0.115470 / math.sqrt(3), rel=1e-4)


def test_summary_and_markdown_rows() -> None:
    rows = [
        {"name": "random", "label": "random init", "reason": None},
        {"name": "m", "label": "M", "reason": None},
        {"name": "x", "label": "X", "reason": "needs frames"},
    ]
    rec = [
        {"name": "random", "seed": 0, "step": 0, "linear": 0.2, "knn": 0.1},
        {"name": "random", "seed": 1, "step": 0, "linear": 0.4, "knn": 0.3},
        {"name": "m", "seed": 0, "step": 5, "linear": 0.1, "knn": 0.1},  # earlier checkpoint: ignored
        {"name": "m", "seed": 0, "step": 10, "linear": 0.5, "knn": 0.2},
        {"name": "m", "seed": 1, "step": 10, "linear": 0.6, "knn": 0.5},
    ]
    s = summary_rows(rows, rec)
    assert s[1]["linear_mean"] == pytest.approx(0.55) and s[1]["linear_diff"] == pytest.approx(0.25)
    assert s[1]["linear_diff_se"] == pytest.approx(0.05 * math.sqrt(2) / math.sqrt(2))
    md = to_markdown(s)
    assert "| M | 55.0 ± 7.1 | +25.0 ± 5.0 |" in md
    assert "| X | not run: needs frames |" in md


def test_vo_and_dense_summaries_by_hand() -> None:
    from evssl.benchmark.report import dense_markdown, vo_markdown

    rows = [{"name": "random", "label": "random init", "reason": None}, {"name": "vo", "label": "VO", "reason": None}]
    vo = {"vo_t_rel": 50.0, "vo_ate": 0.2, "vo_rpe_trans": 0.1, "vo_abs_rel": 0.3}
    rec = [
        {"name": "random", "seed": 0, "step": 0, "linear": 0.2, "knn": 0.1},
        {"name": "random", "task": "dense", "seed": 0, "step": 0, "dense_frozen": 0.10, "dense_finetune": 0.30},
        {"name": "random", "task": "dense", "seed": 1, "step": 0, "dense_frozen": 0.20, "dense_finetune": 0.30},
        {"name": "vo", "task": "probe", "seed": 0, "step": 4, "linear": 0.3, "knn": 0.2},
        {"name": "vo", "task": "dense", "seed": 0, "step": 4, "dense_frozen": 0.20, "dense_finetune": 0.40},
        {"name": "vo", "task": "dense", "seed": 1, "step": 4, "dense_frozen": 0.40, "dense_finetune": 0.40},
        {"name": "vo", "task": "vo", "seed": 0, "step": 4, **vo, "vo_noadapt_ate": 0.25, "vo_noadapt_t_rel": 60.0},
        {"name": "vo", "task": "vo", "seed": 1, "step": 4, **{**vo, "vo_ate": 0.4}, "vo_noadapt_ate": 0.25},
    ]
    s = {r["name"]: r for r in summary_rows(rows, rec)}
    assert s["vo"]["linear_mean"] == pytest.approx(0.3)  # the VO / dense records do not enter the probe columns
    assert s["vo"]["vo_ate_mean"] == pytest.approx(0.3) and s["vo"]["vo_noadapt_ate_mean"] == pytest.approx(0.25)
    assert s["vo"]["vo_ate_diff"] == pytest.approx(0.05) and s["vo"]["vo_ate_diff_se"] == pytest.approx(0.1)
    assert math.isnan(s["vo"]["vo_noadapt_t_rel_mean"])  # seed 1 has no value: nan propagates, never dropped
    # dense: frozen differences to random 0.1, 0.2 -> mean 0.15, se = sd(0.1, 0.2) / sqrt 2 = 0.05
    assert s["vo"]["dense_frozen_diff"] == pytest.approx(0.15)
    assert s["vo"]["dense_frozen_diff_se"] == pytest.approx(0.05)
    assert math.isnan(s["random"]["dense_frozen_diff"]) and "vo_seeds" not in s["random"]
    md = vo_markdown(list(s.values()))
    assert "| VO, online adaptation | 50 ± 0 | 0.3 ± 0.14 | 0.1 ± 0 | 0.3 ± 0 | 2 |" in md
    assert "| VO, Δ adaptation − none (± SE) | — | +0.05 ± 0.1 |" in md
    dm = dense_markdown(list(s.values()))
    assert "| VO | 30.0 ± 14.1 | +15.0 ± 5.0 | 40.0 ± 0.0 | +10.0 ± 0.0 | 2 |" in dm
    assert "| random init | 15.0 ± 7.1 | — |" in dm
