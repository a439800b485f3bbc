"""A small, fast, deterministic event-camera simulator with exact dense ground truth.

Everything here is numpy (no torch, no Lightning); it makes the synthetic data sets every smoke config and test uses.

Scene model
-----------
A pinhole camera (OpenCV convention: x right, y down, z forward; intrinsics ``K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]``
with ``f = focal_scale * width`` and the principal point at the sensor centre ``((W-1)/2, (H-1)/2)``) looks at

* a **background plane** ``n . X = d`` (world frame; tilted up to ``background_tilt_deg``, ``d`` in
  ``background_depth`` metres) carrying a smooth random texture (a band-limited sum of random sinusoids in the plane's
  own metric coordinates, squashed through ``tanh`` into blobs and mapped between two random colours), and
* 1..``max_shapes`` **foreground shapes**, each a flat textured cut-out on its own fronto-parallel plane ``Z = Z_k``
  (world frame; always in front of the background). A shape's outline is one of :data:`SHAPE_CLASSES` (exact or
  near-exact signed distance functions), its texture is a band-limited sinusoid mix in the shape's own coordinates, so
  the texture moves with the shape. Each shape moves in its plane by a similarity transform that is an analytic
  function of time: ``centre(t) = c + v (t - T/2) + A sin(w (t - T/2) + phi) - A sin(phi)``, rotation
  ``theta0 + omega t`` and scale ``s0 exp(a sin(w_s t + phi_s))``.
* The **camera** moves too: position ``v_c t + A_c (sin(w_c t + phi_c) - sin phi_c)`` and rotation vector
  ``w_r t + B (sin(w_b t + phi_b) - sin phi_b)`` (Rodrigues), so the pose at ``t = 0`` is the identity (world frame =
  first camera frame). The background therefore moves by the homography its plane induces, and each shape by its own.

The first shape is the *main* shape: it is the largest and nearest, starts near the image centre, and its class is the
clip's label. Distractors are smaller, farther away and of other classes.

Rendering at time ``t`` casts one ray per pixel centre, intersects every plane, and composites back to front with an
anti-aliased coverage ``alpha = clip(0.5 - sdf_in_pixels, 0, 1)`` (sinusoid textures are pre-filtered analytically with
a Gaussian of half a pixel, so nothing aliases; textures and outlines are evaluated in float32, geometry in float64).
Outputs per rendered time:

* RGB frame (uint8 ``(H, W, 3)``; the event model uses the float luminance ``0.299 R + 0.587 G + 0.114 B`` *before*
  quantisation),
* semantic mask (uint8 ``(H, W)``): ``0`` = background, ``1 + k`` = shape class ``k`` of the front-most surface with
  coverage >= 0.5; the label set is :data:`SEMANTIC_CLASSES` = ``["background", *SHAPE_CLASSES]`` (first
  ``1 + num_classes`` entries),
* depth (float32 ``(H, W)``, metres, camera-frame ``z`` of the front-most surface; always > 0; quantised to 1/4096 m),
* optical flow (float32 ``(2, H, W)``, channel 0 = dx, 1 = dy, pixels): the exact forward displacement of the surface
  point seen at each pixel at ``t`` to where it projects at ``t + 1/fps`` (the next frame time), computed from the known
  motion, not estimated (quantised to 1/256 px; both quantisation grids are powers of two, exact in float32, so the
  arrays compress ~5-10x in a store),
* camera pose (float64 ``(4, 4)`` camera-to-world) and intrinsics (float64 ``(3, 3)``).

Event model (ESIM / v2e style)
------------------------------
Per pixel the log intensity is ``L = log(I + log_eps)`` with ``I`` the linear luminance in [0, 1]. Each pixel keeps a
reference level ``ref`` (initialised to ``L`` at ``t = 0``) and its own thresholds ``C_on``, ``C_off`` drawn once per
clip from ``N(contrast_on|off, contrast_sigma)`` (clipped below at ``min_contrast``). Between two consecutive rendered
sub-frames ``(t_a, L_a)`` and ``(t_b, L_b)`` ``L`` is interpolated linearly in time; every level ``ref + k C_on`` (or
``ref - k C_off``) crossed emits one ON (+1) (or OFF (-1)) event at the interpolated time
``t_a + (level - L_a) / (L_b - L_a) (t_b - t_a)`` (rounded to integer microseconds) and moves ``ref`` to that level, so
a step can emit several events per pixel. A crossing less than ``refractory_us`` after the pixel's previous emitted
event still moves ``ref`` but emits nothing (the change is lost, as in a pixel held in reset). Shot noise: per step a
Poisson number (rate ``noise_rate_hz`` per pixel) of events at uniform random pixels, times and polarities; they are
independent of the pixel state (neither limited by nor resetting the refractory period, and not moving ``ref``).

Sub-frames: every frame interval is split into ``substeps`` equal steps; a step whose largest ``|L_b - L_a|`` exceeds
``adaptive_log_step`` is bisected (rendering the midpoint), up to ``max_bisections`` times (adaptive sampling in the
spirit of ESIM). Events are sorted by ``t`` (stable) and returned in the evssl schema (:class:`~evssl.events.Events`).

Limits (by design; this is a test/smoke-data generator, not a sensor model)
-------------------------------------------------------------------------------
* No motion blur, no APS/frame noise, no exposure model; frames are ideal samples at the frame times.
* Linear interpolation of log intensity between sub-frames (exact only where ``L`` is linear in time; the adaptive
  bisection bounds the error); no pixel bandwidth / low-pass filter, no leak events, no hot pixels, no photoreceptor
  latency, no threshold drift over time, timestamps quantised to 1 µs.
* Shot-noise events bypass the refractory period (the refractory guarantee holds for all events when
  ``noise_rate_hz = 0``).
* Flow is the motion of the surface visible at ``t``; there is no occlusion mask, so at boundaries of moving shapes the
  target may be hidden at ``t + 1/fps`` (disocclusions and occlusions are not marked). Coverage (``alpha``) is
  anti-aliased for intensity but semantic/depth/flow take the front-most surface with coverage >= 0.5.
* Extreme camera motion is not guarded against: a camera that passes a shape's plane no longer sees that shape, and
  rays nearly parallel to the background plane are clamped to a far point (neither happens with the presets).
* Planar, Lambertian, unlit textures: brightness constancy holds exactly along the flow (up to the anti-aliasing
  filter, which depends on depth).
* Byte-identical output for the same seed holds on one machine / numpy build (transcendental functions may differ in
  the last ulp across CPUs or numpy versions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from evssl.events.schema import Events

__all__ = [
    "DOMAINS",
    "GENERATOR_VERSION",
    "PALETTES",
    "SEMANTIC_CLASSES",
    "SHAPE_CLASSES",
    "SIZES",
    "EventEmulator",
    "Scene",
    "SimClip",
    "SimConfig",
    "SizePreset",
    "domain_config",
    "emulate",
    "make_synthetic_store",
    "simulate_clip",
    "synthetic_store_attrs",
]

#: Bump when the generator's output changes for the same config and seed (caches compare it).
GENERATOR_VERSION = 2  # 2: tiny preset with 480 clips and larger main shapes

#: Shape classes; a classification clip's label indexes this list.
SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "ellipse",
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "ring",
    "crescent",
)
#: Semantic mask labels: 0 = background, 1 + k = shape class k.
SEMANTIC_CLASSES: tuple[str, ...] = ("background", *SHAPE_CLASSES)

_LUMA = np.array([0.299, 0.587, 0.114])
#: Colour families of the textures: ``any`` (uniform RGB in [0.08, 0.92]), ``gray`` (the same draw averaged to grey),
#: ``warm`` (the same draw with blue damped and red lifted).
PALETTES: tuple[str, ...] = ("any", "gray", "warm")
_AA_SIGMA_PX = 0.5  # Gaussian pre-filter (pixels) of the analytic textures


# ---------------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated clip (besides the random generator).

    Lengths are pixels unless named otherwise; speeds of shapes are fractions of ``min(height, width)`` per second;
    camera speeds are metres (radians) per second. Frames and dense ground truth are rendered at
    ``t = 0, 1/fps, ...`` up to the last frame time <= ``duration_us`` (which is the clip's actual end).
    """

    height: int = 64
    width: int = 64
    duration_us: int = 200_000
    fps: float = 25.0
    substeps: int = 8
    adaptive_log_step: float = 0.5
    max_bisections: int = 3
    dense_stride: int = 1
    # event model
    contrast_on: float = 0.2
    contrast_off: float = 0.2
    contrast_sigma: float = 0.03
    min_contrast: float = 0.05
    refractory_us: int = 100
    noise_rate_hz: float = 0.1
    log_eps: float = 0.01
    # scene
    num_classes: int = 10
    max_shapes: int = 3
    focal_scale: float = 0.9
    main_radius: tuple[float, float] = (0.17, 0.27)
    distractor_radius: tuple[float, float] = (0.07, 0.12)
    shape_speed: float = 2.0
    shape_oscillation: float = 0.0
    rotation_speed: float = 3.0
    scale_amplitude: float = 0.15
    camera_speed: float = 0.2
    camera_rotation_speed: float = 0.3
    camera_oscillation: float = 0.0
    camera_rotation_oscillation: float = 0.0
    background_depth: tuple[float, float] = (3.5, 6.0)
    background_tilt_deg: float = 20.0
    # appearance (domain shift, see DOMAINS); the defaults leave the output unchanged
    brightness: float = 1.0
    contrast: float = 1.0
    texture_freq_scale: float = 1.0
    texture_gain_scale: float = 1.0
    palette: str = "any"

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"sensor size must be positive, got {self.height}x{self.width}")
        if not 1 <= self.num_classes <= len(SHAPE_CLASSES):
            raise ValueError(f"num_classes must be in [1, {len(SHAPE_CLASSES)}], got {self.num_classes}")
        if self.max_shapes < 1:
            raise ValueError("max_shapes must be >= 1")
        if self.fps <= 0 or self.substeps < 1 or self.dense_stride < 1:
            raise ValueError("fps, substeps and dense_stride must be positive")
        if self.frame_dt_us < self.substeps:
            raise ValueError("frame interval shorter than one microsecond per sub-step")
        if self.duration_us < self.frame_dt_us:
            raise ValueError(f"duration_us={self.duration_us} is shorter than one frame interval")
        if min(self.contrast_on, self.contrast_off, self.min_contrast) <= 0:
            raise ValueError("contrast thresholds must be positive")
        if min(self.brightness, self.contrast, self.texture_freq_scale, self.texture_gain_scale) <= 0:
            raise ValueError("brightness, contrast, texture_freq_scale and texture_gain_scale must be positive")
        if self.palette not in PALETTES:
            raise ValueError(f"palette must be one of {PALETTES}, got {self.palette!r}")

    @property
    def frame_dt_us(self) -> int:
        """Frame interval in microseconds."""
        return round(1e6 / self.fps)

    @property
    def num_frames(self) -> int:
        """Number of rendered frames (at both ends of the clip)."""
        return self.duration_us // self.frame_dt_us + 1

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return self.focal_scale * self.width

    def intrinsics(self) -> np.ndarray:
        """The 3x3 pinhole matrix (float64)."""
        return np.array(
            [[self.focal, 0.0, (self.width - 1) / 2], [0.0, self.focal, (self.height - 1) / 2], [0.0, 0.0, 1.0]]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-normalised fields (tuples become lists), suitable for store attributes."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class SimClip:
    """One simulated clip: events plus frames and exact dense ground truth.

    ``frames`` (F, H, W, 3) uint8 at ``frame_t`` (F,) int64 µs; ``semantic`` (D, H, W) uint8, ``flow`` (D, 2, H, W)
    float32 (forward flow to ``dense_t + 1/fps``), ``depth`` (D, H, W) float32 metres at ``dense_t`` (D,);
    ``poses`` (P, 4, 4) float64 camera-to-world at ``pose_t``; ``intrinsics`` (3, 3) float64; ``label`` the main shape's
    class; ``shape_classes`` every shape's class, main first.
    """

    events: Events
    frames: np.ndarray
    frame_t: np.ndarray
    semantic: np.ndarray
    flow: np.ndarray
    depth: np.ndarray
    dense_t: np.ndarray
    poses: np.ndarray
    pose_t: np.ndarray
    intrinsics: np.ndarray
    label: int
    shape_classes: tuple[int, ...] = field(default=())


# ---------------------------------------------------------------------------------------------------- event model
class EventEmulator:
    """Per-pixel contrast-threshold event generation from a sequence of log-intensity frames (see module docstring).

    Call :meth:`reset` with the first log frame, then :meth:`step` with each later frame (non-decreasing times in µs),
    then :meth:`events` for the sorted stream.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        contrast_on: float = 0.2,
        contrast_off: float = 0.2,
        contrast_sigma: float = 0.0,
        min_contrast: float = 0.01,
        refractory_us: int = 0,
        noise_rate_hz: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.height, self.width = int(height), int(width)
        n = self.height * self.width
        self.rng = rng if rng is not None else np.random.default_rng(0)
        if contrast_sigma > 0:
            c_on = self.rng.normal(contrast_on, contrast_sigma, n)
            c_off = self.rng.normal(contrast_off, contrast_sigma, n)
        else:
            c_on, c_off = np.full(n, float(contrast_on)), np.full(n, float(contrast_off))
        self.c_on = np.maximum(c_on, min_contrast)
        self.c_off = np.maximum(c_off, min_contrast)
        self.refractory_us = int(refractory_us)
        self.noise_rate_hz = float(noise_rate_hz)
        self.ref: np.ndarray | None = None
        self.log: np.ndarray | None = None
        self.t = 0
        self.last_event_t = np.full(n, np.iinfo(np.int64).min // 4, np.int64)
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def reset(self, log_frame: np.ndarray, t: int) -> None:
        """Start at ``t`` with reference levels equal to ``log_frame`` ((H, W) or flat)."""
        self.log = np.asarray(log_frame, np.float64).ravel().copy()
        if self.log.size != self.height * self.width:
            raise ValueError(f"log frame has {self.log.size} pixels, expected {self.height * self.width}")
        self.ref = self.log.copy()
        self.t = int(t)

    def _crossings(self, idx: np.ndarray, la: np.ndarray, lb: np.ndarray, ta: int, tb: int, sign: int) -> list:
        """Emit every crossing of the pixels ``idx`` in polarity ``sign``; returns (pixel, t, p) chunks."""
        assert self.ref is not None
        c = self.c_on if sign > 0 else self.c_off
        out = []
        dt = float(tb - ta)
        while idx.size:
            level = self.ref[idx] + sign * c[idx]
            frac = (level - la[idx]) / (lb[idx] - la[idx])
            tc = np.clip(np.rint(ta + np.clip(frac, 0.0, 1.0) * dt).astype(np.int64), ta, tb)
            ok = tc - self.last_event_t[idx] >= self.refractory_us
            if ok.any():
                pix = idx[ok]
                out.append((pix, tc[ok], np.full(pix.size, sign, np.int8)))
                self.last_event_t[pix] = tc[ok]
            self.ref[idx] = level
            idx = idx[sign * (lb[idx] - self.ref[idx]) >= c[idx]]
        return out

    def step(self, log_frame: np.ndarray, t: int) -> int:
        """Advance to ``(t, log_frame)``, emitting the events of the interval; returns how many."""
        if self.ref is None or self.log is None:
            raise RuntimeError("call reset() before step()")
        t = int(t)
        if t < self.t:
            raise ValueError(f"time goes backwards: {t} < {self.t}")
        la, lb = self.log, np.asarray(log_frame, np.float64).ravel()
        ta, tb = self.t, t
        diff = lb - self.ref
        chunks = self._crossings(np.flatnonzero(diff >= self.c_on), la, lb, ta, tb, +1)
        chunks += self._crossings(np.flatnonzero(-diff >= self.c_off), la, lb, ta, tb, -1)
        if self.noise_rate_hz > 0 and tb > ta:
            k = int(self.rng.poisson(self.noise_rate_hz * lb.size * (tb - ta) * 1e-6))
            if k:
                pix = self.rng.integers(0, lb.size, k)
                tn = self.rng.integers(ta, tb, k, endpoint=True)
                pn = np.where(self.rng.random(k) < 0.5, 1, -1).astype(np.int8)
                chunks.append((pix, tn, pn))
        n = 0
        if chunks:
            pix = np.concatenate([c[0] for c in chunks])
            ts = np.concatenate([c[1] for c in chunks])
            ps = np.concatenate([c[2] for c in chunks])
            order = np.argsort(ts, kind="stable")
            self._chunks.append((pix[order], ts[order], ps[order]))
            n = pix.size
        self.log = lb.copy()
        self.t = tb
        return n

    def events(self) -> Events:
        """All events emitted so far, sorted by time."""
        if not self._chunks:
            return Events.empty(self.height, self.width)
        pix = np.concatenate([c[0] for c in self._chunks])
        t = np.concatenate([c[1] for c in self._chunks])
        p = np.concatenate([c[2] for c in self._chunks])
        x = (pix % self.width).astype(np.int16)
        y = (pix // self.width).astype(np.int16)
        return Events(x, y, t.astype(np.int64), p, self.height, self.width)


def emulate(log_frames: np.ndarray, times: Sequence[int], **kwargs: Any) -> Events:
    """Events from ``log_frames`` (T, H, W) at ``times`` (T,) µs with an :class:`EventEmulator` (``kwargs``)."""
    log_frames = np.asarray(log_frames)
    emu = EventEmulator(log_frames.shape[1], log_frames.shape[2], **kwargs)
    emu.reset(log_frames[0], int(times[0]))
    for frame, t in zip(log_frames[1:], times[1:]):
        emu.step(frame, int(t))
    return emu.events()


# ---------------------------------------------------------------------------------------------------------- scene
def _rodrigues(r: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(theta) * kx + (1.0 - math.cos(theta)) * (kx @ kx)


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _sd_star(qx: np.ndarray, qy: np.ndarray, r: float, n: int, m: float) -> np.ndarray:
    """Signed distance to a regular ``n``-gon (``m = 2``) or ``n``-pointed star (``2 < m < n``), circumradius ``r``.

    After Inigo Quilez's ``sdStar`` (exact).
    """
    an, en = math.pi / n, math.pi / m
    acs = (math.cos(an), math.sin(an))
    ecs = (math.cos(en), math.sin(en))
    bn = np.mod(np.arctan2(qx, qy), 2.0 * an) - an
    ln = np.hypot(qx, qy)
    px = ln * np.cos(bn) - r * acs[0]
    py = ln * np.abs(np.sin(bn)) - r * acs[1]
    h = np.clip(-(px * ecs[0] + py * ecs[1]), 0.0, r * acs[1] / ecs[1])
    px = px + ecs[0] * h
    py = py + ecs[1] * h
    return np.hypot(px, py) * np.sign(px)


def _sd_box(qx: np.ndarray, qy: np.ndarray, bx: float, by: float) -> np.ndarray:
    dx, dy = np.abs(qx) - bx, np.abs(qy) - by
    return np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0)) + np.minimum(np.maximum(dx, dy), 0.0)


def _sd_ellipse(qx: np.ndarray, qy: np.ndarray, a: float, b: float) -> np.ndarray:
    k0 = np.hypot(qx / a, qy / b)
    k1 = np.hypot(qx / (a * a), qy / (b * b))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _shape_sdf(cls: int, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of shape class ``cls`` in its unit coordinates (size ~1)."""
    name = SHAPE_CLASSES[cls]
    if name == "circle":
        return np.hypot(qx, qy) - 0.95
    if name == "ellipse":
        return _sd_ellipse(qx, qy, 1.1, 0.55)
    if name == "triangle":
        return _sd_star(qx, qy, 1.15, 3, 2.0)
    if name == "square":
        return _sd_star(qx, qy, 1.1, 4, 2.0)
    if name == "pentagon":
        return _sd_star(qx, qy, 1.05, 5, 2.0)
    if name == "hexagon":
        return _sd_star(qx, qy, 1.0, 6, 2.0)
    if name == "star":
        return _sd_star(qx, qy, 1.15, 5, 3.0)
    if name == "cross":
        return np.minimum(_sd_box(qx, qy, 1.0, 0.32), _sd_box(qx, qy, 0.32, 1.0))
    if name == "ring":
        return np.abs(np.hypot(qx, qy) - 0.7) - 0.3
    if name == "crescent":
        return np.maximum(np.hypot(qx, qy) - 1.0, 0.8 - np.hypot(qx - 0.5, qy))
    raise ValueError(f"unknown shape class {cls}")


@dataclass
class _Texture:
    """Band-limited random texture ``g = 0.5 + 0.5 tanh(gain * sum_j a_j cos(2 pi k_j . q + phi_j))``, two colours."""

    waves: np.ndarray  # (K, 2) cycles per coordinate unit
    phases: np.ndarray  # (K,)
    amps: np.ndarray  # (K,)
    gain: float
    color_a: np.ndarray  # (3,)
    color_b: np.ndarray  # (3,)

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        n_waves: int,
        freq: tuple[float, float],
        colors: tuple[np.ndarray, np.ndarray],
        gain_scale: float = 1.0,
    ) -> _Texture:
        ang = rng.uniform(0.0, 2.0 * math.pi, n_waves)
        mag = rng.uniform(freq[0], freq[1], n_waves)
        waves = np.stack([mag * np.cos(ang), mag * np.sin(ang)], axis=1)
        amps = rng.uniform(0.3, 1.0, n_waves)
        amps = amps / np.sqrt(np.sum(amps**2) / 2.0)  # std of the sum ~ 1
        phases = rng.uniform(0.0, 2.0 * math.pi, n_waves)
        return cls(waves, phases, amps, float(rng.uniform(1.0, 2.0)) * gain_scale, *colors)

    def gray(self, qx: np.ndarray, qy: np.ndarray, units_per_px: np.ndarray) -> np.ndarray:
        """Grey level in [0, 1] at coordinates ``(qx, qy)``; ``units_per_px`` sets the anti-aliasing per point.

        Evaluated in float32 (SIMD transcendental functions; phases stay accurate to ~1e-5 rad).
        """
        f32 = np.float32
        w = (2.0 * math.pi * self.waves).astype(f32)
        arg = np.multiply.outer(w[:, 0], qx.astype(f32))
        arg += np.multiply.outer(w[:, 1], qy.astype(f32))
        arg += self.phases.astype(f32)[:, None]
        np.cos(arg, out=arg)
        # Gaussian pre-filter: a sinusoid of f cycles/px is attenuated by exp(-2 (pi sigma f)^2)
        k2 = (-2.0 * (math.pi * _AA_SIGMA_PX) ** 2 * np.sum(self.waves**2, axis=1)).astype(f32)
        upp = units_per_px.astype(f32)
        arg *= np.exp(np.multiply.outer(k2, upp * upp))
        s = np.einsum("k,kn->n", self.amps.astype(f32), arg).astype(np.float64)
        return 0.5 + 0.5 * np.tanh(self.gain * s)

    def rgb(self, g: np.ndarray) -> np.ndarray:
        return g[:, None] * self.color_a + (1.0 - g[:, None]) * self.color_b

    @property
    def mean_luma(self) -> float:
        return float(0.5 * (self.color_a + self.color_b) @ _LUMA)


@dataclass
class _Shape:
    cls: int
    z: float  # world depth of the shape's plane (metres)
    s0: float  # radius in metres
    centre: np.ndarray  # (2,) world XY at t_mid
    vel: np.ndarray  # (2,) m/s
    osc_amp: np.ndarray  # (2,) m
    osc_freq: np.ndarray  # (2,) rad/s
    osc_phase: np.ndarray  # (2,)
    theta0: float
    omega: float
    log_scale_amp: float
    scale_freq: float
    scale_phase: float
    texture: _Texture
    t_mid: float

    def state(self, t: float) -> tuple[np.ndarray, float, float]:
        """(centre XY (m), rotation (rad), radius (m)) at ``t`` seconds."""
        u = t - self.t_mid
        c = self.centre + self.vel * u + self.osc_amp * (np.sin(self.osc_freq * u + self.osc_phase))
        c = c - self.osc_amp * np.sin(self.osc_phase)
        theta = self.theta0 + self.omega * t
        scale = self.s0 * math.exp(self.log_scale_amp * math.sin(self.scale_freq * t + self.scale_phase))
        return c, theta, scale


def _random_color(rng: np.random.Generator, palette: str = "any") -> np.ndarray:
    c = rng.uniform(0.08, 0.92, 3)  # one draw for every palette, so the rest of the scene keeps its randomness
    if palette == "gray":
        return np.full(3, c.mean())
    if palette == "warm":
        return np.array([0.5 + 0.5 * c[0], c[1], 0.4 * c[2]])
    return c


class Scene:
    """A random procedural scene (background plane, shapes, camera trajectory) that renders at any time.

    ``label`` forces the main shape's class (random when None). All randomness is drawn here from ``rng``.
    """

    def __init__(self, config: SimConfig, rng: np.random.Generator, label: int | None = None) -> None:
        cfg = self.config = config
        h, w = cfg.height, cfg.width
        self.f = cfg.focal
        self.cx, self.cy = (w - 1) / 2, (h - 1) / 2
        self.intrinsics = cfg.intrinsics()
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        self.px, self.py = xs.ravel(), ys.ravel()
        self.rays = np.stack([(self.px - self.cx) / self.f, (self.py - self.cy) / self.f, np.ones(h * w)])
        self.t_end = (cfg.num_frames - 1) * cfg.frame_dt_us * 1e-6
        t_mid = self.t_end / 2
        min_dim = min(h, w)

        # camera trajectory
        self.cam_vel = _unit(rng, 3) * rng.uniform(0.0, cfg.camera_speed) * np.array([1.0, 1.0, 0.5])
        self.cam_rot_vel = _unit(rng, 3) * rng.uniform(0.0, cfg.camera_rotation_speed)
        self.cam_amp = rng.uniform(-1.0, 1.0, 3) * cfg.camera_oscillation * np.array([1.0, 1.0, 0.5])
        self.cam_freq = 2.0 * math.pi * rng.uniform(0.15, 0.5, 3)
        self.cam_phase = rng.uniform(0.0, 2.0 * math.pi, 3)
        self.rot_amp = rng.uniform(-1.0, 1.0, 3) * cfg.camera_rotation_oscillation
        self.rot_freq = 2.0 * math.pi * rng.uniform(0.15, 0.5, 3)
        self.rot_phase = rng.uniform(0.0, 2.0 * math.pi, 3)

        # background plane n . X = d with in-plane basis (e1, e2)
        tilt = math.radians(rng.uniform(0.0, cfg.background_tilt_deg))
        az = rng.uniform(0.0, 2.0 * math.pi)
        self.n = np.array([math.sin(tilt) * math.cos(az), math.sin(tilt) * math.sin(az), math.cos(tilt)])
        self.d = float(rng.uniform(*cfg.background_depth))
        a = np.array([1.0, 0.0, 0.0]) if abs(self.n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = a - (a @ self.n) * self.n
        self.e1 = e1 / np.linalg.norm(e1)
        self.e2 = np.cross(self.n, self.e1)
        self.p0 = self.d * self.n + rng.uniform(-5.0, 5.0) * self.e1 + rng.uniform(-5.0, 5.0) * self.e2
        px_per_m = self.f / self.d
        bg_colors = (_random_color(rng, cfg.palette), _random_color(rng, cfg.palette))
        fs = cfg.texture_freq_scale
        self.bg_texture = _Texture.sample(
            rng, 8, (fs * px_per_m / 20.0, fs * px_per_m / 6.0), bg_colors, cfg.texture_gain_scale
        )

        # shapes: main first (nearest, largest, near the centre), then distractors
        main_cls = int(rng.integers(cfg.num_classes)) if label is None else int(label)
        if not 0 <= main_cls < cfg.num_classes:
            raise ValueError(f"label {main_cls} outside [0, {cfg.num_classes})")
        n_shapes = int(rng.integers(1, cfg.max_shapes + 1))
        others = [c for c in range(cfg.num_classes) if c != main_cls] or [main_cls]
        classes = [main_cls] + [int(others[i]) for i in rng.integers(0, len(others), n_shapes - 1)]
        self.shapes: list[_Shape] = []
        for j, c in enumerate(classes):
            main = j == 0
            z = rng.uniform(1.2, 1.6) if main else rng.uniform(1.8, 2.6)
            radius_px = rng.uniform(*(cfg.main_radius if main else cfg.distractor_radius)) * min_dim
            if main:
                u = self.cx + rng.uniform(-0.12, 0.12) * w
                v = self.cy + rng.uniform(-0.12, 0.12) * h
                speed = rng.uniform(0.2, 1.0) * cfg.shape_speed * min_dim
            else:
                u, v = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
                speed = rng.uniform(0.0, 1.0) * cfg.shape_speed * min_dim
            m_per_px = z / self.f
            colors = (_random_color(rng, cfg.palette), _random_color(rng, cfg.palette))
            texture = _Texture.sample(
                rng, 4, (fs * radius_px / 16.0, fs * radius_px / 6.0), colors, cfg.texture_gain_scale
            )
            for _ in range(32):  # the main shape must stand out from the background
                if not main or abs(texture.mean_luma - self.bg_texture.mean_luma) >= 0.15:
                    break
                texture.color_a, texture.color_b = _random_color(rng, cfg.palette), _random_color(rng, cfg.palette)
            self.shapes.append(
                _Shape(
                    cls=c,
                    z=z,
                    s0=radius_px * m_per_px,
                    centre=np.array([(u - self.cx) * m_per_px, (v - self.cy) * m_per_px]),
                    vel=_unit(rng, 2) * speed * m_per_px,
                    osc_amp=rng.uniform(-1.0, 1.0, 2) * cfg.shape_oscillation * min_dim * m_per_px,
                    osc_freq=2.0 * math.pi * rng.uniform(0.2, 1.0, 2),
                    osc_phase=rng.uniform(0.0, 2.0 * math.pi, 2),
                    theta0=rng.uniform(0.0, 2.0 * math.pi),
                    omega=rng.uniform(-1.0, 1.0) * cfg.rotation_speed,
                    log_scale_amp=rng.uniform(0.0, cfg.scale_amplitude),
                    scale_freq=2.0 * math.pi * rng.uniform(0.5, 2.0),
                    scale_phase=rng.uniform(0.0, 2.0 * math.pi),
                    texture=texture,
                    t_mid=t_mid,
                )
            )
        self.draw_order = sorted(range(len(self.shapes)), key=lambda i: -self.shapes[i].z)  # far to near

    @property
    def label(self) -> int:
        """The main shape's class."""
        return self.shapes[0].cls

    def camera(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera-to-world rotation (3, 3) and centre (3,) at ``t`` seconds (identity at t = 0)."""
        c = self.cam_vel * t + self.cam_amp * (np.sin(self.cam_freq * t + self.cam_phase) - np.sin(self.cam_phase))
        r = self.cam_rot_vel * t + self.rot_amp * (np.sin(self.rot_freq * t + self.rot_phase) - np.sin(self.rot_phase))
        return _rodrigues(r), c

    def pose(self, t: float) -> np.ndarray:
        """Camera-to-world 4x4 at ``t`` seconds."""
        r, c = self.camera(t)
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = r, c
        return out

    def _project(self, xw: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        r, c = self.camera(t)
        xc = r.T @ (xw - c[:, None])
        return self.f * xc[0] / xc[2] + self.cx, self.f * xc[1] / xc[2] + self.cy

    def render(self, t_us: int, dense: bool = False) -> dict[str, np.ndarray]:
        """Render at ``t_us`` µs: ``"rgb"`` (H, W, 3) float in [0, 1] and ``"log"`` (H, W) log luminance; with
        ``dense`` also ``"semantic"`` (H, W) uint8, ``"depth"`` (H, W) float32 and ``"flow"`` (2, H, W) float32
        (forward flow to ``t + 1/fps``)."""
        cfg = self.config
        h, w = cfg.height, cfg.width
        t = t_us * 1e-6
        rot, cam = self.camera(t)
        rw = rot @ self.rays
        # background plane
        # rays (nearly) parallel to the plane get a far but finite point (only reachable with extreme rotations)
        s_bg = (self.d - self.n @ cam) / np.maximum(self.n @ rw, 0.05)
        xw_bg = cam[:, None] + s_bg * rw
        rel = xw_bg - self.p0[:, None]
        g = self.bg_texture.gray(self.e1 @ rel, self.e2 @ rel, s_bg / self.f)
        rgb = self.bg_texture.rgb(g)
        if dense:
            depth = s_bg.copy()
            surface = np.zeros(h * w, np.int64)  # 0 = background, 1 + j = shape j
            local: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for j in self.draw_order:
            sh = self.shapes[j]
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(rw[2] > 1e-9, (sh.z - cam[2]) / rw[2], np.inf)
            valid = np.isfinite(s) & (s > 0)
            s = np.where(valid, s, 1.0)
            centre, theta, scale = sh.state(t)
            dx = cam[0] + s * rw[0] - centre[0]
            dy = cam[1] + s * rw[1] - centre[1]
            ct, st = math.cos(theta), math.sin(theta)
            qx = (ct * dx + st * dy) / scale
            qy = (-st * dx + ct * dy) / scale
            px_per_unit = scale * self.f / s
            qx32, qy32 = qx.astype(np.float32), qy.astype(np.float32)  # outline and texture in float32 (speed)
            alpha = np.clip(0.5 - _shape_sdf(sh.cls, qx32, qy32) * px_per_unit, 0.0, 1.0) * valid
            hit = alpha > 0
            if hit.any():
                gs = sh.texture.gray(qx32[hit], qy32[hit], 1.0 / px_per_unit[hit])
                a = alpha[hit, None]
                rgb[hit] = rgb[hit] * (1.0 - a) + sh.texture.rgb(gs) * a
            if dense:
                front = (alpha >= 0.5) & (s < depth)
                depth[front] = s[front]
                surface[front] = 1 + j
                local[j] = (qx, qy, s)
        if cfg.brightness != 1.0 or cfg.contrast != 1.0:  # exposure of the domain: I' = b (0.5 + c (I - 0.5))
            rgb = np.clip(cfg.brightness * (0.5 + cfg.contrast * (rgb - 0.5)), 0.0, 1.0)
        out: dict[str, np.ndarray] = {
            "rgb": rgb.reshape(h, w, 3),
            "log": np.log(rgb @ _LUMA + cfg.log_eps).reshape(h, w),
        }
        if not dense:
            return out
        t2 = t + cfg.frame_dt_us * 1e-6
        flow = np.zeros((2, h * w))
        sel = surface == 0
        if sel.any():
            u2, v2 = self._project(xw_bg[:, sel], t2)
            flow[0, sel], flow[1, sel] = u2 - self.px[sel], v2 - self.py[sel]
        semantic = np.zeros(h * w, np.uint8)
        for j, sh in enumerate(self.shapes):
            sel = surface == 1 + j
            if not sel.any():
                continue
            semantic[sel] = 1 + sh.cls
            qx, qy, _ = local[j]
            centre, theta, scale = sh.state(t2)
            ct, st = math.cos(theta), math.sin(theta)
            xw = np.stack(
                [
                    centre[0] + scale * (ct * qx[sel] - st * qy[sel]),
                    centre[1] + scale * (st * qx[sel] + ct * qy[sel]),
                    np.full(int(sel.sum()), sh.z),
                ]
            )
            u2, v2 = self._project(xw, t2)
            flow[0, sel], flow[1, sel] = u2 - self.px[sel], v2 - self.py[sel]
        out["semantic"] = semantic.reshape(h, w)
        # quantised to power-of-two grids (1/4096 m, 1/256 px): exact in float32 and compresses well in a store
        out["depth"] = (np.round(depth * 4096.0) / 4096.0).reshape(h, w).astype(np.float32)
        out["flow"] = (np.round(flow * 256.0) / 256.0).reshape(2, h, w).astype(np.float32)
        return out


# -------------------------------------------------------------------------------------------------------- clips
def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def simulate_clip(config: SimConfig, rng: np.random.Generator, *, label: int | None = None) -> SimClip:
    """Simulate one clip: a random :class:`Scene` (main shape of class ``label`` or random), its events and dense GT.

    Deterministic given the state of ``rng``.
    """
    cfg = config
    scene = Scene(cfg, rng, label=label)
    emu = EventEmulator(
        cfg.height,
        cfg.width,
        contrast_on=cfg.contrast_on,
        contrast_off=cfg.contrast_off,
        contrast_sigma=cfg.contrast_sigma,
        min_contrast=cfg.min_contrast,
        refractory_us=cfg.refractory_us,
        noise_rate_hz=cfg.noise_rate_hz,
        rng=rng,
    )
    frame_t = np.arange(cfg.num_frames, dtype=np.int64) * cfg.frame_dt_us
    dense_idx = set(range(0, cfg.num_frames, cfg.dense_stride))
    frames, semantic, flow, depth = [], [], [], []

    def keep(i: int, r: dict[str, np.ndarray]) -> None:
        frames.append(_to_uint8(r["rgb"]))
        if i in dense_idx:
            semantic.append(r["semantic"])
            flow.append(r["flow"])
            depth.append(r["depth"])

    def advance(ta: int, la: np.ndarray, tb: int, lb: np.ndarray, level: int) -> None:
        if (
            cfg.adaptive_log_step > 0
            and level < cfg.max_bisections
            and tb - ta >= 2
            and float(np.max(np.abs(lb - la))) > cfg.adaptive_log_step
        ):
            tm = (ta + tb) // 2
            lm = scene.render(tm)["log"]
            advance(ta, la, tm, lm, level + 1)
            advance(tm, lm, tb, lb, level + 1)
        else:
            emu.step(lb, tb)

    r = scene.render(0, dense=0 in dense_idx)
    keep(0, r)
    emu.reset(r["log"], 0)
    t_prev, l_prev = 0, r["log"]
    for i in range(1, cfg.num_frames):
        t0 = int(frame_t[i - 1])
        for k in range(1, cfg.substeps + 1):
            tk = t0 + cfg.frame_dt_us * k // cfg.substeps
            last = k == cfg.substeps
            r = scene.render(tk, dense=last and i in dense_idx)
            advance(t_prev, l_prev, tk, r["log"], 0)
            t_prev, l_prev = tk, r["log"]
        keep(i, r)
    dense_t = frame_t[sorted(dense_idx)]
    return SimClip(
        events=emu.events(),
        frames=np.stack(frames),
        frame_t=frame_t,
        semantic=np.stack(semantic),
        flow=np.stack(flow),
        depth=np.stack(depth),
        dense_t=dense_t,
        poses=np.stack([scene.pose(t * 1e-6) for t in frame_t]),
        pose_t=frame_t.copy(),
        intrinsics=scene.intrinsics.copy(),
        label=scene.label,
        shape_classes=tuple(s.cls for s in scene.shapes),
    )


# -------------------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class SizePreset:
    """How many clips of which configs a synthetic store holds."""

    num_classification: int
    num_sequences: int
    classification: SimConfig
    sequence: SimConfig


def _sequence_config(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(
        shape_speed=0.0,
        shape_oscillation=0.25,
        rotation_speed=1.0,
        camera_speed=0.2,
        camera_rotation_speed=0.0,  # no rotation drift: long sequences keep looking at the background plane
        camera_oscillation=0.5,
        camera_rotation_oscillation=0.2,
    )
    base.update(kw)
    return SimConfig(**base)


#: Preset data sets for :func:`make_synthetic_store` (CPU time of the simulation, one core; measured on a busy box):
#:
#: * ``"tiny"``: 48x64 sensor (non-square on purpose), 480 classification clips of 200 ms (6 frames, 6 dense; main
#:   shape radius 0.25-0.35 of the sensor height and ``adaptive_log_step=1.0``, so that a small CNN can tell the classes
#:   apart at this resolution and the clips stay cheap) + 4 sequences of 1 s; ~10 s, ~1.3 M events, ~41 MB. For tests
#:   and smoke configs (``make demo``: ~0.5 validation accuracy vs 0.1 chance).
#: * ``"small"``: 64x64, 3000 clips of 200 ms (6 frames, 3 dense) + 16 sequences of 3 s; ~2 min (about 1 min on
#:   2 workers), ~12 M events, ~260 MB.
#: * ``"vo_tiny"``: sequences only, 8 camera sequences of 4 s at 10 fps (41 frames, ~1-3 px of motion per frame) on a
#:   32x48 sensor, for the online-adaptive VO method's tests, smoke configs and domain-shift benchmark (~15 s).
#: * ``"medium"``: 128x128, 4000 clips of 300 ms (4 frames, 2 dense) + 32 sequences of 5 s; ~20 min (~10 min on 2
#:   workers), ~40 k events per clip, ~1.5 GB. For experiments, not CI.
SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(
        num_classification=480,
        num_sequences=4,
        classification=SimConfig(
            height=48,
            width=64,
            duration_us=200_000,
            fps=25.0,
            substeps=4,
            adaptive_log_step=1.0,
            main_radius=(0.25, 0.35),
        ),
        sequence=_sequence_config(height=48, width=64, duration_us=1_000_000, fps=25.0, substeps=4),
    ),
    "small": SizePreset(
        num_classification=3000,
        num_sequences=16,
        classification=SimConfig(height=64, width=64, duration_us=200_000, fps=25.0, substeps=4, dense_stride=2),
        sequence=_sequence_config(height=64, width=64, duration_us=3_000_000, fps=25.0, substeps=4),
    ),
    "vo_tiny": SizePreset(
        num_classification=0,
        num_sequences=8,
        classification=SimConfig(height=32, width=48, duration_us=200_000, fps=25.0, substeps=4),
        sequence=_sequence_config(height=32, width=48, duration_us=4_000_000, fps=10.0, substeps=4),
    ),
    "medium": SizePreset(
        num_classification=4000,
        num_sequences=32,
        classification=SimConfig(height=128, width=128, duration_us=300_000, fps=10.0, substeps=12, dense_stride=3),
        sequence=_sequence_config(height=128, width=128, duration_us=5_000_000, fps=20.0, substeps=6),
    ),
}

# -------------------------------------------------------------------------------------------------------- domains
_MOTION_FIELDS = (
    "camera_speed",
    "camera_oscillation",
    "camera_rotation_oscillation",
    "shape_oscillation",
    "rotation_speed",
)

#: Named domains for train/test domain shift: each is ``(appearance overrides, motion-speed factor)``. The appearance
#: fields are SimConfig's ``brightness`` / ``contrast`` (``I' = clip(b (0.5 + c (I - 0.5)), 0, 1)`` on the linear
#: RGB before the log-intensity event model and the uint8 frames), ``texture_freq_scale`` (band of the sinusoid
#: textures: finer or coarser), ``texture_gain_scale`` (tanh gain: softer blobs or hard-edged patterns) and
#: ``palette``; the motion factor multiplies camera speed and oscillation amplitudes (hence speeds), shape
#: oscillation and rotation speed. ``default`` leaves a preset unchanged (byte-identical output).
DOMAINS: dict[str, tuple[dict[str, Any], float]] = {
    "default": ({}, 1.0),
    "night": ({"brightness": 0.45, "contrast": 0.6}, 1.0),
    "bright": ({"brightness": 1.3, "contrast": 1.2}, 1.0),
    "fine": ({"texture_freq_scale": 2.0, "texture_gain_scale": 2.5}, 1.0),
    "coarse": ({"texture_freq_scale": 0.5}, 1.0),
    "gray": ({"palette": "gray"}, 1.0),
    "warm": ({"palette": "warm"}, 1.0),
    "fast": ({}, 2.0),
    "slow": ({}, 0.5),
    # combined shift used by experiments/meta_vo/synthetic_shift.yaml and benchmarks/meta_vo_shift.py
    "night_fine_fast": (
        {"brightness": 0.45, "contrast": 0.6, "texture_freq_scale": 2.0, "texture_gain_scale": 2.5},
        2.0,
    ),
}


def domain_config(config: SimConfig, domain: str) -> SimConfig:
    """``config`` in the named :data:`DOMAINS` entry (appearance overrides and motion-speed factor)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose from {sorted(DOMAINS)}")
    overrides, speed = DOMAINS[domain]
    kw = dict(overrides)
    if speed != 1.0:
        kw.update({f: getattr(config, f) * speed for f in _MOTION_FIELDS})
    return replace(config, **kw) if kw else config


_KINDS = ("classification", "sequence")
_SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


def synthetic_store_attrs(
    size: str = "tiny",
    seed: int = 0,
    kinds: Iterable[str] = ("classification", "sequence"),
    domain: str = "default",
) -> dict[str, Any]:
    """The store attributes :func:`make_synthetic_store` writes (JSON-normalised), for cache validity checks."""
    preset = _preset(size, domain)
    kinds = _check_kinds(kinds)
    attrs = {
        "generator": "evssl.events.simulate",
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": int(seed),
        "kinds": list(kinds),
        "num_classification": preset.num_classification if "classification" in kinds else 0,
        "num_sequences": preset.num_sequences if "sequence" in kinds else 0,
        "classification_config": preset.classification.to_dict(),
        "sequence_config": preset.sequence.to_dict(),
        "semantic_classes": list(SEMANTIC_CLASSES[: preset.classification.num_classes + 1]),
        "split_fractions": dict(_SPLIT_FRACTIONS),
        "domain": domain,
    }
    return json.loads(json.dumps(attrs))


def _preset(size: str, domain: str = "default") -> SizePreset:
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose from {sorted(SIZES)}")
    p = SIZES[size]
    if domain == "default":
        return p
    return replace(
        p, classification=domain_config(p.classification, domain), sequence=domain_config(p.sequence, domain)
    )


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in _KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {_KINDS}, got {kinds!r}")
    return tuple(k for k in _KINDS if k in kinds)


def _balanced_labels_and_splits(n: int, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels in random order, and a per-class (stratified) 70/15/15 split."""
    labels = rng.permutation(np.arange(n) % num_classes)
    splits = np.empty(n, dtype=object)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        n_train = round(len(idx) * _SPLIT_FRACTIONS["train"])
        n_val = round(len(idx) * _SPLIT_FRACTIONS["val"])
        splits[idx[:n_train]] = "train"
        splits[idx[n_train : n_train + n_val]] = "val"
        splits[idx[n_train + n_val :]] = "test"
    return labels, splits


def _job(args: tuple[SimConfig, np.random.SeedSequence, int | None]) -> SimClip:
    cfg, ss, label = args
    return simulate_clip(cfg, np.random.default_rng(ss), label=label)


def _ordered_map(fn: Callable[[Any], Any], jobs: list[Any], num_workers: int) -> Iterator[Any]:
    """``map(fn, jobs)`` in order, on ``num_workers`` worker processes with a bounded number in flight."""
    if num_workers <= 1 or len(jobs) < 2:
        yield from map(fn, jobs)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # fork where available: workers only run numpy, and spawn would re-import an unguarded __main__ script
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=mp.get_context(method)) as pool:
        pending: deque = deque()
        it = iter(jobs)
        for job in it:
            pending.append(pool.submit(fn, job))
            if len(pending) >= 8 * num_workers:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))


def make_synthetic_store(
    path: str | Path,
    size: str = "tiny",
    seed: int = 0,
    kinds: Iterable[str] = ("classification", "sequence"),
    *,
    num_workers: int | None = None,
    domain: str = "default",
) -> Path:
    """Simulate a preset data set and write it as an evssl store at ``path``; returns the path.

    * ``"classification"``: ``SIZES[size].num_classification`` clips, one recording each (name ``cls_00000``...),
      label = main shape class (balanced over classes), split ``"train"``/``"val"``/``"test"`` stratified 70/15/15 per
      class (deterministic from ``seed``), with frames, semantic/flow/depth, poses and intrinsics.
    * ``"sequence"``: ``SIZES[size].num_sequences`` longer recordings with a moving camera (name ``seq_000``...), split
      ``"sequence"``, label -1, with the same ground truth.

    ``domain`` (:data:`DOMAINS`) changes the appearance and motion speed of both kinds (the scenes' random layout is
    the same as in ``default`` for the same seed: every domain consumes the generator identically).
    Classes are :data:`SHAPE_CLASSES` (first ``num_classes``); store attrs are :func:`synthetic_store_attrs`. Every
    sample has its own seed from ``np.random.SeedSequence(seed).spawn``, so output is identical for any
    ``num_workers`` (default: 1 for fewer than 500 clips, else up to 2 worker processes).
    """
    from evssl.events.io.store import StoreWriter  # lazy: the store pulls in h5py/hdf5plugin

    preset = _preset(size, domain)
    kinds = _check_kinds(kinds)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cls_ss, seq_ss, meta_ss = np.random.SeedSequence(seed).spawn(3)
    num_classes = preset.classification.num_classes
    jobs: list[tuple[SimConfig, np.random.SeedSequence, int | None]] = []
    meta: list[dict[str, Any]] = []
    if "classification" in kinds:
        n = preset.num_classification
        labels, splits = _balanced_labels_and_splits(n, num_classes, np.random.default_rng(meta_ss))
        for i, ss in enumerate(cls_ss.spawn(n)):
            jobs.append((preset.classification, ss, int(labels[i])))
            meta.append({"name": f"cls_{i:05d}", "label": int(labels[i]), "split": str(splits[i])})
    if "sequence" in kinds:
        for i, ss in enumerate(seq_ss.spawn(preset.num_sequences)):
            jobs.append((preset.sequence, ss, None))
            meta.append({"name": f"seq_{i:03d}", "label": -1, "split": "sequence"})
    if num_workers is None:
        import os

        num_workers = 1 if len(jobs) < 500 else max(1, min(2, os.cpu_count() or 1))
    with StoreWriter(path) as writer:
        writer.set_classes(list(SHAPE_CLASSES[:num_classes]))
        writer.set_attrs(**synthetic_store_attrs(size, seed, kinds, domain))
        for m, clip in zip(meta, _ordered_map(_job, jobs, num_workers)):
            writer.add(
                clip.events,
                name=m["name"],
                label=m["label"],
                source=f"evssl.simulate:{size}:{seed}" + ("" if domain == "default" else f":{domain}"),
                split=m["split"],
                frames=clip.frames,
                frame_t=clip.frame_t,
                semantic=clip.semantic,
                flow=clip.flow,
                depth=clip.depth,
                dense_t=clip.dense_t,
                poses=clip.poses,
                pose_t=clip.pose_t,
                intrinsics=clip.intrinsics,
            )
    return path
