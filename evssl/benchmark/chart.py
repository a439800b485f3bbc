"""PNG charts of a benchmark drawn with Pillow (no matplotlib): grouped bars with error bars, learning curves.

Both write to a temporary name and rename. Colours are fixed per series so charts of different grids compare.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = ["bar_chart", "curve_chart"]

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]  # fmt: skip
GREY, BLACK, WHITE = (150, 150, 150), (0, 0, 0), (255, 255, 255)


def _save(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def _axes(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], lo: float, hi: float, font: Any,
          label: str) -> None:  # fmt: skip
    x0, y0, x1, y1 = box
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=BLACK, width=1)
    for i in range(6):
        v = lo + (hi - lo) * i / 5
        y = y1 - (y1 - y0) * i / 5
        draw.line([(x0 - 4, y), (x1, y)], fill=(230, 230, 230) if i else BLACK, width=1)
        draw.text((x0 - 8, y), f"{100 * v:.0f}", fill=BLACK, font=font, anchor="rm")
    draw.text((x0, y0 - 16), label, fill=BLACK, font=font, anchor="ls")


def _range(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    hi = max(finite, default=1.0)
    return 0.0, min(1.0, math.ceil((hi + 0.05) * 10) / 10) if hi <= 1.0 else hi * 1.1


def bar_chart(summary: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Grouped bars (linear probe, kNN) per backbone, mean over seeds with ± std error bars; rows not run skipped."""
    rows = [s for s in summary if not s.get("reason")]
    metrics = [("linear", "linear probe"), ("knn", "kNN")]
    w, h = max(480, 140 + 110 * len(rows)), 420
    img = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    box = (60, 50, w - 20, h - 80)
    lo, hi = _range([s[f"{m}_mean"] + s[f"{m}_std"] for s in rows for m, _ in metrics])
    _axes(draw, box, lo, hi, font, title or "test accuracy (%)")
    x0, y0, x1, y1 = box
    slot = (x1 - x0) / max(1, len(rows))
    bw = slot * 0.8 / len(metrics)

    def ypos(v: float) -> float:
        return y1 - (y1 - y0) * (v - lo) / (hi - lo)

    for i, s in enumerate(rows):
        for j, (m, _) in enumerate(metrics):
            mu, sd = s[f"{m}_mean"], s[f"{m}_std"]
            if math.isnan(mu):
                continue
            bx = x0 + i * slot + slot * 0.1 + j * bw
            draw.rectangle([bx, ypos(mu), bx + bw - 2, y1], fill=PALETTE[j])
            cx = bx + (bw - 2) / 2
            draw.line([(cx, ypos(mu - sd)), (cx, ypos(mu + sd))], fill=BLACK, width=1)
            for v in (mu - sd, mu + sd):
                draw.line([(cx - 4, ypos(v)), (cx + 4, ypos(v))], fill=BLACK, width=1)
        draw.text((x0 + (i + 0.5) * slot, y1 + 8), str(s["label"])[:18], fill=BLACK, font=font, anchor="mt")
    for j, (_, name) in enumerate(metrics):
        lx = x0 + 10 + 130 * j
        draw.rectangle([lx, h - 30, lx + 12, h - 18], fill=PALETTE[j])
        draw.text((lx + 18, h - 24), name, fill=BLACK, font=font, anchor="lm")
    return _save(img, path)


def curve_chart(curves: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Probe accuracy against pre-training steps per method (± std band as error bars); random init as the
    horizontal line from step 0 (grey), supervised as the dashed ceiling (black)."""
    w, h = 640, 420
    img = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    box = (60, 50, w - 170, h - 50)
    lo, hi = _range([c["mean"] + c["std"] for c in curves])
    _axes(draw, box, lo, hi, font, title or "linear probe (%) vs pre-training steps")
    x0, y0, x1, y1 = box
    max_step = max((c["step"] for c in curves), default=1) or 1

    def xy(step: float, v: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * step / max_step, y1 - (y1 - y0) * (v - lo) / (hi - lo)

    for s in sorted({c["step"] for c in curves}):
        draw.text((xy(s, lo)[0], y1 + 6), str(s), fill=BLACK, font=font, anchor="mt")
    draw.text(((x0 + x1) / 2, y1 + 22), "pre-training steps", fill=BLACK, font=font, anchor="mt")
    legend = []
    names = list(dict.fromkeys(c["name"] for c in curves))
    colour = 0
    rand = [c["mean"] for c in curves if c["name"] == "random"]
    random_mean = rand[0] if rand else None
    for name in names:
        pts = sorted((c for c in curves if c["name"] == name), key=lambda c: c["step"])
        label = pts[0]["label"]
        if name in ("random", "supervised"):
            v = pts[-1]["mean"]
            y = xy(0, v)[1]
            fill = GREY if name == "random" else BLACK
            seg = 10 if name == "supervised" else (x1 - x0)
            for xs in range(int(x0), int(x1), 2 * seg if name == "supervised" else int(x1 - x0)):
                draw.line([(xs, y), (min(xs + seg, x1), y)], fill=fill, width=2)
            legend.append((label, fill))
            continue
        fill = PALETTE[colour % len(PALETTE)]
        colour += 1
        coords = [xy(c["step"], c["mean"]) for c in pts]
        if random_mean is not None and pts[0]["step"] > 0:  # every curve starts at the random-init point
            coords.insert(0, xy(0, random_mean))
        if len(coords) > 1:
            draw.line(coords, fill=fill, width=2)
        for c, (px, py) in zip(pts, coords):
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=fill)
            if c["std"] > 0:
                draw.line([(px, xy(0, c["mean"] - c["std"])[1]), (px, xy(0, c["mean"] + c["std"])[1])], fill=fill)
        legend.append((label, fill))
    for k, (label, fill) in enumerate(legend):
        ly = y0 + 16 * k
        draw.line([(x1 + 15, ly), (x1 + 35, ly)], fill=fill, width=3)
        draw.text((x1 + 40, ly), str(label)[:20], fill=BLACK, font=font, anchor="lm")
    return _save(img, path)
