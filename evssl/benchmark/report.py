r"""Tables of a benchmark: mean ± std over seeds and the paired difference to random init (pure functions).

For a metric :math:`a_s` of a row and :math:`r_s` of random init on seed :math:`s` (same data, same backbone
architecture, same probe), the paired difference is :math:`d_s = a_s - r_s`, reported as
:math:`\bar d \pm \mathrm{SE}`, :math:`\mathrm{SE} = \mathrm{sd}(d)/\sqrt{n}` (sample standard deviation,
``ddof = 1``; 0 with one seed). Means and standard deviations are over seeds (``ddof = 1``).

Rows with an online VO stage (records with ``task = "vo"``) get their own columns (:data:`VO_METRICS`, with online
adaptation and without it) and, as their paired difference, adaptation minus no adaptation on the same weights.
With ``eval.dense``, every row's dense records (``task = "dense"``: ``dense_frozen``, ``dense_finetune``) are
summarised like the probes, with the paired difference to random init.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DENSE_MODES",
    "METRICS",
    "VO_METRICS",
    "curve_rows",
    "curves_markdown",
    "dense_markdown",
    "mean_std",
    "paired_difference",
    "summary_rows",
    "to_csv",
    "to_markdown",
    "vo_markdown",
]

METRICS = ("linear", "knn")
#: ``eval.dense`` modes: a frozen backbone with a trained head, and the whole network fine-tuned.
DENSE_MODES = {"frozen": "frozen", "finetune": "fine-tuned"}
#: Online VO metrics of the table (:meth:`evssl.methods.meta_vo.MetaVO.online_end` keys) and their headers.
VO_METRICS = {"t_rel": "t_rel (%)", "ate": "ATE (m)", "rpe_trans": "RPE (m/frame)", "abs_rel": "depth abs-rel"}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mu = sum(values) / n
    sd = math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mu, sd


def paired_difference(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of ``a[s] - b[s]`` over the seeds both have, and that count."""
    d = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if not d:
        return math.nan, math.nan, 0
    mu, sd = mean_std(d)
    return mu, sd / math.sqrt(len(d)), len(d)


def _task(record: dict[str, Any]) -> str:
    return str(record.get("task") or "probe")


def _final(records: list[dict[str, Any]], name: str, task: str = "probe") -> dict[int, dict[str, Any]]:
    """Per seed, the ``task`` record of ``name`` at its largest step."""
    out: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["name"] != name or _task(r) != task:
            continue
        if r["seed"] not in out or r["step"] > out[r["seed"]]["step"]:
            out[r["seed"]] = r
    return out


def summary_rows(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per grid row: per metric mean, std, paired difference to random init ± SE; reason if not run."""
    random = _final(records, "random")
    out = []
    for row in rows:
        rec = _final(records, row["name"])
        item: dict[str, Any] = {"name": row["name"], "label": row["label"], "seeds": sorted(rec),
                                "steps": max((r["step"] for r in rec.values()), default=None),
                                "reason": row.get("reason")}  # fmt: skip
        for m in METRICS:
            vals = {s: float(r[m]) for s, r in rec.items()}
            item[f"{m}_mean"], item[f"{m}_std"] = mean_std(list(vals.values()))
            item[f"{m}_per_seed"] = [vals[s] for s in sorted(vals)]
            if row["name"] == "random":
                item[f"{m}_diff"], item[f"{m}_diff_se"] = math.nan, math.nan
            else:
                item[f"{m}_diff"], item[f"{m}_diff_se"], _ = paired_difference(
                    vals, {s: float(r[m]) for s, r in random.items()}
                )
        item["pretrain_s"] = mean_std([float(r.get("pretrain_s", 0.0)) for r in rec.values()])[0] if rec else math.nan
        dense, dense_random = _final(records, row["name"], "dense"), _final(records, "random", "dense")
        if dense:
            item["dense_seeds"] = sorted(dense)
            for mode in DENSE_MODES:
                vals = {s: float(r[f"dense_{mode}"]) for s, r in dense.items() if f"dense_{mode}" in r}
                item[f"dense_{mode}_mean"], item[f"dense_{mode}_std"] = mean_std(list(vals.values()))
                ref = {s: float(r[f"dense_{mode}"]) for s, r in dense_random.items() if f"dense_{mode}" in r}
                diff = paired_difference(vals, ref) if row["name"] != "random" else (math.nan, math.nan, 0)
                item[f"dense_{mode}_diff"], item[f"dense_{mode}_diff_se"] = diff[0], diff[1]
        vo = _final(records, row["name"], "vo")
        if vo:
            item["vo_seeds"] = sorted(vo)
            for m in VO_METRICS:
                per = {p: {s: float(r.get(f"{p}_{m}", math.nan)) for s, r in vo.items()} for p in ("vo", "vo_noadapt")}
                for p, vals in per.items():
                    item[f"{p}_{m}_mean"], item[f"{p}_{m}_std"] = mean_std(list(vals.values()))
                item[f"vo_{m}_diff"], item[f"vo_{m}_diff_se"], _ = paired_difference(per["vo"], per["vo_noadapt"])
        out.append(item)
    return out


def curve_rows(rows: list[dict[str, Any]], records: list[dict[str, Any]], metric: str = "linear"
               ) -> list[dict[str, Any]]:  # fmt: skip
    """Learning curves: ``{"name", "label", "step", "mean", "std", "n"}`` per (row, step); random init at step 0."""
    out = []
    records = [r for r in records if _task(r) == "probe"]
    for row in rows:
        steps = sorted({r["step"] for r in records if r["name"] == row["name"]})
        for step in steps:
            vals = [float(r[metric]) for r in records if r["name"] == row["name"] and r["step"] == step]
            mu, sd = mean_std(vals)
            out.append({"name": row["name"], "label": row["label"], "step": step, "mean": mu, "std": sd,
                        "n": len(vals)})  # fmt: skip
    return out


def _pct(mu: float, sd: float) -> str:
    return "—" if math.isnan(mu) else f"{100 * mu:.1f} ± {100 * sd:.1f}"


def _diff(mu: float, se: float) -> str:
    return "—" if math.isnan(mu) else f"{100 * mu:+.1f} ± {100 * se:.1f}"


def to_markdown(summary: list[dict[str, Any]], title: str = "") -> str:
    """The results table: accuracy (%) mean ± std over seeds and paired difference to random init ± SE."""
    lines = [title, ""] if title else []
    lines += [
        "| backbone | linear probe (%) | Δ linear vs random (± SE) | kNN (%) | Δ kNN vs random (± SE) "
        "| seeds | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if s["reason"]:
            lines.append(f"| {s['label']} | not run: {s['reason']} | | | | | |")
            continue
        lines.append(
            f"| {s['label']} | {_pct(s['linear_mean'], s['linear_std'])}"
            f" | {_diff(s['linear_diff'], s['linear_diff_se'])}"
            f" | {_pct(s['knn_mean'], s['knn_std'])} | {_diff(s['knn_diff'], s['knn_diff_se'])}"
            f" | {len(s['seeds'])} | {s['steps'] if s['steps'] is not None else ''} |"
        )
    return "\n".join(lines) + "\n"


def _num(mu: float, sd: float, sign: bool = False) -> str:
    return "—" if math.isnan(mu) else (f"{mu:+.3g}" if sign else f"{mu:.3g}") + f" ± {sd:.2g}"


def dense_markdown(summary: list[dict[str, Any]], metric: str = "miou") -> str:
    """The ``eval.dense`` table ("" if no row has one): per mode the test metric (%) mean ± std over seeds and the
    paired difference to random init ± SE."""
    rows = [s for s in summary if s.get("dense_seeds") and not s["reason"]]
    if not rows:
        return ""
    modes = [m for m in DENSE_MODES if any(not math.isnan(s[f"dense_{m}_mean"]) for s in rows)]
    head = " | ".join(f"{DENSE_MODES[m]} {metric} (%) | Δ vs random (± SE)" for m in modes)
    lines = [f"| dense head | {head} | seeds |", "|---|" + "---|---|" * len(modes) + "---|"]
    for s in rows:
        cells = [f"{_pct(s[f'dense_{m}_mean'], s[f'dense_{m}_std'])} | "
                 f"{_diff(s[f'dense_{m}_diff'], s[f'dense_{m}_diff_se'])}" for m in modes]  # fmt: skip
        lines.append(f"| {s['label']} | " + " | ".join(cells) + f" | {len(s['dense_seeds'])} |")
    return "\n".join(lines) + "\n"


def vo_markdown(summary: list[dict[str, Any]]) -> str:
    """The online VO table of the rows that have one ("" if none): per metric mean ± std over seeds with online
    adaptation and without (the same trained weights), and the paired difference adaptation − none ± SE."""
    rows = [s for s in summary if s.get("vo_seeds") and not s["reason"]]
    if not rows:
        return ""
    lines = ["| online VO (test sequences) | " + " | ".join(VO_METRICS.values()) + " | seeds |",
             "|---|" + "---|" * (len(VO_METRICS) + 1)]  # fmt: skip
    for s in rows:
        n = len(s["vo_seeds"])
        for title, p in (("online adaptation", "vo"), ("no adaptation", "vo_noadapt")):
            if all(math.isnan(s[f"{p}_{m}_mean"]) for m in VO_METRICS):
                continue
            cells = [_num(s[f"{p}_{m}_mean"], s[f"{p}_{m}_std"]) for m in VO_METRICS]
            lines.append(f"| {s['label']}, {title} | " + " | ".join(cells) + f" | {n} |")
        if not all(math.isnan(s[f"vo_{m}_diff"]) for m in VO_METRICS):
            cells = [_num(s[f"vo_{m}_diff"], s[f"vo_{m}_diff_se"], sign=True) for m in VO_METRICS]
            lines.append(f"| {s['label']}, Δ adaptation − none (± SE) | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines) + "\n"


def curves_markdown(curves: list[dict[str, Any]], metric: str = "linear") -> str:
    """Learning-curve table: one column per step, one row per backbone (probe accuracy %, mean ± std)."""
    steps = sorted({c["step"] for c in curves})
    names = list(dict.fromkeys(c["label"] for c in curves))
    lines = [f"| {metric} probe (%) | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|" + "---|" * len(steps)]  # fmt: skip
    for name in names:
        by = {c["step"]: c for c in curves if c["label"] == name}
        cells = [_pct(by[s]["mean"], by[s]["std"]) if s in by else "" for s in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], path: str | Path | None = None) -> str:
    """CSV text of a list of flat dicts (lists joined by ``;``); written atomically to ``path`` when given."""
    keys: list[str] = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ";".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list)
                    else ("" if v is None else v) for k, v in r.items()})  # fmt: skip
    text = buf.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text
