"""Event representations: batched, device-agnostic, pure torch functions over an :class:`EventBatch`.

Every function takes the flat event columns of a whole batch (``x, y, t, p, batch_index`` plus each sample's time
window ``[t_start, t_end)``) and returns a float32 tensor of shape ``(B, C, H, W)`` on the events' device. The whole
batch is rasterised in one pass over the flat event list, scattering into the flat index

.. math::  i = b \\cdot C H W + c \\cdot H W + y \\cdot W + x,

so there is no per-sample Python loop, no per-bin pass over the events, and no host synchronisation except one
optional min/max reduction that turns out-of-range coordinates into a clear :class:`ValueError` (``check=False``
skips it). Index arithmetic is int32 whenever ``B*C*H*W < 2**31``; time arithmetic is exact (float64 differences of
int64 µs).

Two implementations, one API:

* **CPU** (when numba imports): fused single-pass kernels (:mod:`evssl.events._kernels`), the same arithmetic
  operation for operation, so both agree to float32 rounding of the accumulation order. They check every event's
  coordinates as they go (free there, and needed: a compiled loop must never write outside the grid), so they raise
  the same :class:`ValueError` whatever ``check`` says. :func:`voxel_grid`, :func:`histogram`,
  :func:`event_image`, :func:`stacked_histogram` and :func:`time_surface` use them.
* **torch** (other devices; CPU without numba): elementwise ops and ``scatter_add_`` over the flat index. On CPU the
  pass runs over blocks of 64k events so that every temporary stays in cache (see :func:`_blocks`); on a GPU the
  batch is one block.

Time normalisation (voxel grid, stacked histogram, time surface) is per sample and uses the sample's window, not its
first/last event, so empty and single-timestamp samples are well defined:

* the *last timestamp* of a window is ``t_end - 1`` (windows are half-open, timestamps are integer µs);
* events outside their window are clamped into the first/last temporal bin (the samplers never produce them).

Representations (``C`` = output channels):

=====================  ============  ========================================================================
function               C             what
=====================  ============  ========================================================================
:func:`voxel_grid`     bins          signed polarity, bilinear in time (E-RAFT / DSEC / ECDDP)
:func:`histogram`      2             ON counts (ch 0), OFF counts (ch 1)
:func:`event_image`    2             ECDP: histogram → (hot-pixel clip) → ``h / (max_hw h + 1)`` → ``[-1, 1)``
:func:`stacked_histogram` 2·bins    RVT: per time slice an ON/OFF count pair, clipped at 255
:func:`time_surface`   2             ``exp(-(t_ref - t_last) / tau)`` of the newest ON / OFF event per pixel
=====================  ============  ========================================================================
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evssl.events.batch import EventBatch

__all__ = [
    "REPRESENTATIONS",
    "EventImage",
    "Histogram",
    "Representation",
    "StackedHistogram",
    "TimeSurface",
    "VoxelGrid",
    "build_representation",
    "check_coordinates",
    "event_image",
    "histogram",
    "normalize_nonzero",
    "stacked_histogram",
    "time_surface",
    "voxel_grid",
]

_I32_MAX = 2**31 - 1
_CPU_CHUNK = 1 << 16  # events per cache-resident block on CPU (temporaries stay in L2, no page faults)
_MAGIC = 0x4330000000000000  # int64 bit pattern of the float64 2**52
_TWO52 = float(2**52)
_USE_FUSED = True  # private switch: False sends CPU batches down the torch path too (tests, benchmarks)
_KERNELS: Any = None  # evssl.events._kernels once imported; False when numba is unavailable
_U32_CELLS = 2**32  # grids with fewer cells use uint32 kernel indices


# ---------------------------------------------------------------------------------------------------- fused CPU path
def _fused_kernels(ev: EventBatch) -> Any:
    """The numba kernels when ``ev`` is on CPU and numba imports (imported on first use: ``import numba`` costs
    ~0.3 s, which ``import evssl`` should not pay), else None (torch path)."""
    global _KERNELS
    if not _USE_FUSED or ev.device.type != "cpu":
        return None
    if _KERNELS is None:
        try:
            kernels = importlib.import_module("evssl.events._kernels")
        except (ImportError, OSError) as err:  # numba missing, or incompatible with this NumPy / platform
            warnings.warn(
                f"numba is unavailable ({err}); CPU event representations fall back to the slower torch path",
                RuntimeWarning,
                stacklevel=3,
            )
            _KERNELS = False
        else:
            _KERNELS = kernels
    return _KERNELS or None


def _columns(ev: EventBatch) -> tuple[np.ndarray, ...]:
    """NumPy views (no copy for an EventBatch built by its constructors) of the columns in the kernels' dtypes."""
    cols = (ev.x, ev.y, ev.t, ev.p, ev.batch_index, ev.t_start, ev.t_end)
    dtypes = (torch.int16, torch.int16, torch.int64, torch.int8, torch.int64, torch.int64, torch.int64)
    return tuple(c.to(d).contiguous().numpy() for c, d in zip(cols, dtypes))


def _scratch(total: int, values: int = 0) -> tuple[np.ndarray, ...]:
    """One block's index buffer (uint32 when the grid has < 2**32 cells) and ``values`` float32 value buffers."""
    block = _KERNELS.BLOCK
    index = np.empty(block, np.uint32 if total < _U32_CELLS else np.uint64)
    return (index, *(np.empty(block, np.float32) for _ in range(values)))


def _fused_failed(ev: EventBatch, position: int, out_samples: int) -> None:
    """Raise for the event a kernel rejected: the coordinate error of :func:`check_coordinates`, else the sample."""
    check_coordinates(ev)
    b = int(ev.batch_index[position])
    raise ValueError(
        f"event {position} has batch_index {b}, outside the {min(out_samples, len(ev.t_start), len(ev.t_end))} "
        f"samples of the batch (batch_size {ev.batch_size}, {len(ev.t_start)} windows)"
    )


# ---------------------------------------------------------------------------------------------------- helpers
def check_coordinates(ev: EventBatch) -> None:
    """Raise :class:`ValueError` naming the field and value when an event lies outside the ``H x W`` sensor.

    One ``aminmax`` per coordinate column and a single device-to-host copy of the four numbers.
    """
    if len(ev) == 0:
        return
    xmin, xmax = torch.aminmax(ev.x)
    ymin, ymax = torch.aminmax(ev.y)
    x0, x1, y0, y1 = torch.stack([xmin, xmax, ymin, ymax]).tolist()
    for field, lo, hi, size in (("x", x0, x1, ev.width), ("y", y0, y1, ev.height)):
        bad = lo if lo < 0 else hi if hi >= size else None
        if bad is not None:
            raise ValueError(
                f"event field '{field}' has value {bad} outside the sensor range [0, {size}) "
                f"(sensor {ev.height}x{ev.width})"
            )


def _zeros(numel: int, device: torch.device) -> Tensor:
    """A float32 zero vector. On CPU through ``calloc`` (``np.zeros``): a large grid gets zero pages straight from the
    kernel, where ``torch.zeros`` writes every byte once more (measured: 49 MB grid 11 ms vs 28 ms with the scatter)."""
    if device.type == "cpu":
        return torch.from_numpy(np.zeros(numel, dtype=np.float32))
    return torch.zeros(numel, dtype=torch.float32, device=device)


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel <= _I32_MAX else torch.int64


def _blocks(ev: EventBatch) -> Iterator[tuple[slice, int | None]]:
    """Event ranges to process, with the sample they all belong to (None: several samples, gather per event).

    On CPU the events are cut into cache-sized blocks (a loop over *events*, not samples): elementwise temporaries of
    a 64k-event block live in L2, where one pass over all events would allocate and page-fault fresh megabytes per
    operation. On other devices the whole batch is one block, and nothing is read back to the host.
    """
    n = len(ev)
    if ev.device.type != "cpu":
        yield slice(0, n), (0 if ev.batch_size == 1 else None)
        return
    bi = ev.batch_index
    for s in range(0, n, _CPU_CHUNK):
        e = min(n, s + _CPU_CHUNK)
        if ev.batch_size == 1:
            yield slice(s, e), 0
        else:
            first, last = int(bi[s]), int(bi[e - 1])  # CPU tensor reads, no device sync
            yield slice(s, e), (first if first == last else None)


def _take(per_sample: Tensor, bi: Tensor | None, sample: int | None) -> Tensor:
    """Per-sample values for a block: a broadcastable (1,) slice of ``sample``, or gathered by ``bi`` per event."""
    if sample is not None:
        return per_sample[sample : sample + 1]
    assert bi is not None
    return per_sample.index_select(0, bi)


def _magic(device: torch.device) -> int:
    return _MAGIC if device.type == "cpu" else 0


def _f64(device: torch.device) -> torch.dtype:
    """float64 for time arithmetic, except on MPS (no float64 there; float32 is exact for windows < 16.7 s)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _to_f64(diff: Tensor) -> Tensor:
    """A difference computed as ``a - (b - _magic)`` (or ``(a + _magic) - b``) as float64, exactly.

    On CPU int64 → float64 conversion is not vectorised; adding 2**52's bit pattern and reinterpreting the bits is
    exact for 0 <= value < 2**52 (negative values come out negative, which every caller clamps to 0).
    """
    if diff.device.type == "cpu":
        v = diff.view(torch.float64)
        v -= _TWO52
        return v
    return diff.to(_f64(diff.device))


def _pixel_index(x: Tensor, y: Tensor, width: int, itype: torch.dtype) -> Tensor:
    """``y * W + x`` in the index dtype (a new tensor)."""
    return torch.add(x.to(itype), y.to(itype), alpha=width)


def _add_sample_offset(idx: Tensor, bi: Tensor | None, sample: int | None, size: int) -> None:
    """``idx += b * size`` in place (``size`` = C*H*W of one sample; ``b`` = ``sample``, or ``bi`` per event)."""
    if sample is None:
        assert bi is not None
        idx.add_(bi.to(idx.dtype), alpha=size)
    elif sample:
        idx += sample * size


def _scatter_add(out: Tensor, idx: Tensor, values: Tensor) -> None:
    # scatter_add_ with int64 indices is the fastest CPU accumulate (≈ 1.7x index_add_, put_ or bincount at 64k
    # events); on CUDA it uses atomics (float sums are then not bit-reproducible; integer-valued counts are exact).
    out.scatter_add_(0, idx.to(torch.int64), values)


def normalize_nonzero(grid: Tensor) -> Tensor:
    """E-RAFT voxel normalisation, per sample over its non-zero cells (in place, returns ``grid``).

    For sample ``b`` with non-zero cells ``S_b`` (``n = |S_b|``):
    ``mean = Σ_S v / n``, ``std = sqrt(Σ_S (v - mean)^2 / (n - 1))`` (unbiased, as ``torch.std``), and
    ``v ← (v - mean) / std`` on ``S_b`` when ``std > 0``, else ``v ← v - mean`` (E-RAFT's branch; a sample with a
    single non-zero cell has an undefined std in E-RAFT and therefore becomes all zero, as there). Zero cells stay 0.
    """
    b = grid.shape[0]
    v = grid.view(b, -1)
    nz = v.sign().abs_()  # 1 on non-zero cells, 0 elsewhere (float: cheaper than a bool mask and its reductions)
    n = nz.sum(1, keepdim=True)
    mean = v.sum(1, keepdim=True) / n.clamp_min(1)
    v.addcmul_(nz, mean, value=-1.0)  # v - mean on non-zero cells only
    std = torch.linalg.vector_norm(v, dim=1, keepdim=True) / (n - 1).clamp_min(1).sqrt()
    v /= torch.where((n > 1) & (std > 0), std, 1.0)
    return grid


# ---------------------------------------------------------------------------------------------------- functions
def voxel_grid(ev: EventBatch, bins: int, normalize: bool = False, check: bool = True) -> Tensor:
    """Voxel grid with signed polarity and bilinear interpolation in time (E-RAFT / DSEC convention).

    For an event ``(x, y, t, p)`` of sample ``b`` with window ``[t_s, t_e)``:

    .. math::

        t^* = \\operatorname{clamp}\\left((\\text{bins} - 1) \\frac{t - t_s}{\\max(t_e - 1 - t_s, 1)},\\;
        0,\\; \\text{bins} - 1\\right)

        V_b[k, y, x] \\mathrel{+}= p \\cdot \\max(0, 1 - |t^* - k|), \\qquad k = 0 \\ldots \\text{bins} - 1

    i.e. each event splits its polarity ``p ∈ {-1, +1}`` between bins ``⌊t*⌋`` and ``⌊t*⌋ + 1``. The window's first
    timestamp ``t_s`` maps to bin 0 and its last timestamp ``t_e - 1`` to bin ``bins - 1``; with the default windows of
    :meth:`EventBatch.from_events` (``[t_first, t_last + 1)``) this is exactly E-RAFT's
    ``(bins - 1)(t - t_first) / (t_last - t_first)``. A one-microsecond window (denominator 0, e.g. all timestamps
    equal) puts every event in bin 0 instead of dividing by zero. ``bins == 1`` sums the polarities. ``t - t_s`` is
    exact (float64) and ``t*`` is rounded once to float32.

    ``normalize=True`` applies E-RAFT's per-sample mean/std normalisation of the non-zero cells
    (:func:`normalize_nonzero`).

    Returns:
        float32 ``(B, bins, H, W)``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    B, H, W = ev.batch_size, ev.height, ev.width
    kernels = _fused_kernels(ev)
    if kernels is not None:
        total = B * bins * H * W
        out = _zeros(total, ev.device)
        bad = kernels.voxel_grid(*_columns(ev), bins, H, W, out.numpy(), *_scratch(total, 2))
        if bad >= 0:
            _fused_failed(ev, bad, B)
        grid = out.view(B, bins, H, W)
    else:
        grid = _voxel_grid_torch(ev, bins, check)
    return normalize_nonzero(grid) if normalize else grid


def _voxel_grid_torch(ev: EventBatch, bins: int, check: bool) -> Tensor:
    if check:
        check_coordinates(ev)
    B, H, W = ev.batch_size, ev.height, ev.width
    HW = H * W
    total = B * bins * HW
    itype = _index_dtype(total)
    # one spare plane: an event on a window's last timestamp (t* = bins - 1) sends weight 0 "one bin up"
    out = _zeros(total + HW, ev.device)
    upper = out[HW:]  # view one bin later: the upper bilinear neighbour without a second index tensor
    origin = ev.t_start - _magic(ev.device)
    scale = (bins - 1) / (ev.t_end - 1 - ev.t_start).clamp_min(1).to(_f64(ev.device))
    for sl, sample in _blocks(ev):
        bi = ev.batch_index[sl] if sample is None else None  # only needed to gather per event
        idx = _pixel_index(ev.x[sl], ev.y[sl], W, itype)
        _add_sample_offset(idx, bi, sample, bins * HW)
        pv = ev.p[sl].to(torch.float32, copy=True)
        if bins == 1:
            _scatter_add(out, idx, pv)
            continue
        tn64 = _to_f64(ev.t[sl] - _take(origin, bi, sample))
        tn64 *= _take(scale, bi, sample)
        tn = tn64.to(torch.float32)
        tn.clamp_(0.0, float(bins - 1))
        idx.add_(tn.to(itype), alpha=HW)  # lower bin ⌊t*⌋ (truncation = floor for t* >= 0)
        tn.frac_()  # upper weight w = t* - ⌊t*⌋ ∈ [0, 1); t* = bins-1 gives w = 0 into the spare plane
        tn *= pv  # p·w
        pv -= tn  # p·(1 - w)
        i64 = idx.to(torch.int64)
        out.scatter_add_(0, i64, pv)
        upper.scatter_add_(0, i64, tn)  # the same index one bin later
    return out[:total].view(B, bins, H, W)


def _count_histogram(ev: EventBatch, check: bool) -> Tensor:
    if _fused_kernels(ev) is not None:
        return _fused_stacked_histogram(ev, 1)
    if check:
        check_coordinates(ev)
    B, H, W = ev.batch_size, ev.height, ev.width
    HW = H * W
    total = B * 2 * HW
    itype = _index_dtype(total)
    out = _zeros(total, ev.device)
    ones: Tensor | None = None
    for sl, sample in _blocks(ev):
        idx = _pixel_index(ev.x[sl], ev.y[sl], W, itype)
        idx.add_((ev.p[sl] < 0).to(itype), alpha=HW)  # polarity channel: 0 = ON, 1 = OFF
        _add_sample_offset(idx, ev.batch_index[sl] if sample is None else None, sample, 2 * HW)
        if ones is None:
            ones = torch.ones(len(idx), dtype=torch.float32, device=ev.device)
        _scatter_add(out, idx, ones[: len(idx)])
    return out.view(B, 2, H, W)


def histogram(ev: EventBatch, normalize: bool = False, check: bool = True) -> Tensor:
    """Two-channel event count image: channel 0 counts ON events (``p = +1``), channel 1 OFF events (``p = -1``).

    .. math::  H_b[0, y, x] = \\#\\{i \\in b : p_i > 0, (x_i, y_i) = (x, y)\\},\\quad
        H_b[1, y, x] = \\#\\{i \\in b : p_i < 0, (x_i, y_i) = (x, y)\\}

    ``normalize=True`` divides each channel of each sample by its maximum (``H / max_{hw} H``, values in [0, 1]; an
    empty channel stays 0). The window is not used.

    Returns:
        float32 ``(B, 2, H, W)``.
    """
    h = _count_histogram(ev, check)
    if normalize:
        h /= h.amax(dim=(2, 3), keepdim=True).clamp_min(1.0)
    return h


def event_image(ev: EventBatch, remove_hot_pixels: bool = False, signed: bool = True, check: bool = True) -> Tensor:
    """ECDP event image (Yang et al., ICCV 2023; ``data/imagenet_dataset.py``): a normalised 2-channel histogram.

    1. ``h`` = :func:`histogram` (ch 0 ON counts, ch 1 OFF counts), as ECDP's ``reshape_then_acc_count_pol``.
    2. optional ``remove_hot_pixels`` (ECDP's fine-tuning option): ``h ← min(h, mean{h > 0.1})`` with the mean over all
       non-zero cells of both channels of the sample.
    3. per sample and channel ``h ← h / (max_{hw} h + 1)`` ∈ [0, 1) (ECDP's dataset normalisation).
    4. ``signed=True``: ``h ← (h - 0.5) · 2`` ∈ [-1, 1) (what ECDP's trainer feeds the ViT; empty pixels are -1).

    Returns:
        float32 ``(B, 2, H, W)``.
    """
    h = _count_histogram(ev, check)
    if remove_hot_pixels:
        flat = h.view(h.shape[0], -1)
        thr = flat.sum(1) / flat.sign().sum(1).clamp_min(1)  # counts: h > 0.1 ⇔ h != 0
        torch.minimum(h, thr.view(-1, 1, 1, 1), out=h)
    h /= h.amax(dim=(2, 3), keepdim=True) + 1.0
    if signed:
        h -= 0.5
        h *= 2.0
    return h


def stacked_histogram(ev: EventBatch, bins: int, clip: int | None = 255, check: bool = True) -> Tensor:
    """Stacked histogram (RVT, Gehrig & Scaramuzza CVPR 2023): ON/OFF counts in ``bins`` equal time slices.

    Slice of an event of sample ``b`` with window ``[t_s, t_e)``:

    .. math::  k = \\operatorname{clamp}\\left(\\left\\lfloor \\frac{\\text{bins} \\cdot (t - t_s)}{\\max(t_e - t_s, 1)}
        \\right\\rfloor, 0, \\text{bins} - 1\\right), \\qquad S_b[2k + c, y, x] = \\#\\text{events}

    with ``c = 0`` for ON and ``c = 1`` for OFF, so channels ``2k, 2k+1`` are the :func:`histogram` of slice ``k``
    (``bins = 1`` equals :func:`histogram`). The quotient is one correctly rounded float64 division of integers, so
    slice boundaries are exact. RVT orders channels polarity-major (OFF bins then ON bins); this layout is time-major.
    ``clip`` caps each count (RVT: 255, so the tensor fits uint8); ``None`` keeps raw counts.

    Returns:
        float32 ``(B, 2 * bins, H, W)``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    out = _fused_stacked_histogram(ev, bins) if _fused_kernels(ev) is not None else _stacked_torch(ev, bins, check)
    if clip is not None:
        out.clamp_(max=float(clip))
    return out


def _fused_stacked_histogram(ev: EventBatch, bins: int) -> Tensor:
    B, H, W = ev.batch_size, ev.height, ev.width
    total = B * 2 * bins * H * W
    out = _zeros(total, ev.device)
    bad = _KERNELS.stacked_histogram(*_columns(ev), bins, H, W, out.numpy(), *_scratch(total))
    if bad >= 0:
        _fused_failed(ev, bad, B)
    return out.view(B, 2 * bins, H, W)


def _stacked_torch(ev: EventBatch, bins: int, check: bool) -> Tensor:
    if check:
        check_coordinates(ev)
    B, H, W = ev.batch_size, ev.height, ev.width
    HW = H * W
    C = 2 * bins
    total = B * C * HW
    itype = _index_dtype(total)
    out = _zeros(total, ev.device)
    origin = ev.t_start - _magic(ev.device)
    duration = (ev.t_end - ev.t_start).clamp_min(1).to(_f64(ev.device))
    ones: Tensor | None = None
    for sl, sample in _blocks(ev):
        bi = ev.batch_index[sl] if sample is None else None
        channel = (ev.p[sl] < 0).to(itype)
        if bins > 1:
            k64 = _to_f64(ev.t[sl] - _take(origin, bi, sample))
            k64 *= bins  # exact: an integer < 2**53
            k64 /= _take(duration, bi, sample)
            k64.clamp_(0.0, float(bins - 1))
            channel.add_(k64.to(itype), alpha=2)  # truncation = floor for k >= 0
        idx = _pixel_index(ev.x[sl], ev.y[sl], W, itype)
        idx.add_(channel, alpha=HW)
        _add_sample_offset(idx, bi, sample, C * HW)
        if ones is None:
            ones = torch.ones(len(idx), dtype=torch.float32, device=ev.device)
        _scatter_add(out, idx, ones[: len(idx)])
    return out.view(B, C, H, W)


def time_surface(ev: EventBatch, tau_us: float, check: bool = True) -> Tensor:
    """Exponentially decaying time surface of the newest ON and OFF event per pixel (Lagorce et al., HOTS 2017).

    .. math::  T_b[c, y, x] = \\exp\\left(-\\frac{\\max(t_{\\text{ref}} - t_{\\text{last}}(c, y, x), 0)}{\\tau}\\right),
        \\qquad t_{\\text{ref}} = t_e - 1

    where ``t_last`` is the largest timestamp of polarity channel ``c`` (0 = ON, 1 = OFF) at the pixel and ``t_ref`` the
    window's last timestamp (an event on it gives exactly 1). Pixels without events are 0. Because ``exp(-(t_ref-t)/τ)``
    increases with ``t``, the value is computed per event and reduced with one ``scatter_reduce(amax)``.

    Returns:
        float32 ``(B, 2, H, W)``.
    """
    if tau_us <= 0:
        raise ValueError(f"tau_us must be > 0, got {tau_us}")
    B, H, W = ev.batch_size, ev.height, ev.width
    kernels = _fused_kernels(ev)
    if kernels is not None:
        total = B * 2 * H * W
        out = _zeros(total, ev.device)
        bad = kernels.time_surface(*_columns(ev), -1.0 / float(tau_us), H, W, out.numpy(), *_scratch(total, 1))
        if bad >= 0:
            _fused_failed(ev, bad, B)
        return out.view(B, 2, H, W)
    if check:
        check_coordinates(ev)
    HW = H * W
    total = B * 2 * HW
    itype = _index_dtype(total)
    out = _zeros(total, ev.device)
    ref = ev.t_end - 1 + _magic(ev.device)
    for sl, sample in _blocks(ev):
        bi = ev.batch_index[sl] if sample is None else None
        idx = _pixel_index(ev.x[sl], ev.y[sl], W, itype)
        idx.add_((ev.p[sl] < 0).to(itype), alpha=HW)
        _add_sample_offset(idx, bi, sample, 2 * HW)
        dt = _to_f64(_take(ref, bi, sample) - ev.t[sl])
        dt *= -1.0 / float(tau_us)
        dt.clamp_(max=0.0)  # events after t_ref count as on it
        val = dt.to(torch.float32)
        val.exp_()
        out.scatter_reduce_(0, idx.to(torch.int64), val, reduce="amax", include_self=True)
    return out.view(B, 2, H, W)


# ---------------------------------------------------------------------------------------------------- config classes
class Representation:
    """Base of the jsonargparse-friendly representation callables: ``rep(ev) -> (B, rep.channels, H, W)`` float32."""

    @property
    def channels(self) -> int:
        """Number of output channels."""
        raise NotImplementedError

    def __call__(self, ev: EventBatch) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class VoxelGrid(Representation):
    """Signed, temporally bilinear voxel grid with ``bins`` channels (:func:`voxel_grid`; E-RAFT normalisation)."""

    def __init__(self, bins: int = 5, normalize: bool = True) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = int(bins)
        self.normalize = bool(normalize)

    @property
    def channels(self) -> int:
        return self.bins

    def __call__(self, ev: EventBatch) -> Tensor:
        return voxel_grid(ev, self.bins, normalize=self.normalize)


class Histogram(Representation):
    """Two-channel ON/OFF count image (:func:`histogram`); ``normalize`` divides each channel by its maximum."""

    def __init__(self, normalize: bool = False) -> None:
        self.normalize = bool(normalize)

    @property
    def channels(self) -> int:
        return 2

    def __call__(self, ev: EventBatch) -> Tensor:
        return histogram(ev, normalize=self.normalize)


class EventImage(Representation):
    """ECDP's normalised two-channel event image in [-1, 1) (:func:`event_image`)."""

    def __init__(self, remove_hot_pixels: bool = False, signed: bool = True) -> None:
        self.remove_hot_pixels = bool(remove_hot_pixels)
        self.signed = bool(signed)

    @property
    def channels(self) -> int:
        return 2

    def __call__(self, ev: EventBatch) -> Tensor:
        return event_image(ev, remove_hot_pixels=self.remove_hot_pixels, signed=self.signed)


class StackedHistogram(Representation):
    """RVT stacked histogram: ``bins`` time slices × ON/OFF counts, capped at ``clip`` (:func:`stacked_histogram`)."""

    def __init__(self, bins: int = 5, clip: int | None = 255) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = int(bins)
        self.clip = clip

    @property
    def channels(self) -> int:
        return 2 * self.bins

    def __call__(self, ev: EventBatch) -> Tensor:
        return stacked_histogram(ev, self.bins, clip=self.clip)


class TimeSurface(Representation):
    """ON/OFF exponential time surface with decay constant ``tau_us`` microseconds (:func:`time_surface`)."""

    def __init__(self, tau_us: int = 50_000) -> None:
        if tau_us <= 0:
            raise ValueError(f"tau_us must be > 0, got {tau_us}")
        self.tau_us = tau_us

    @property
    def channels(self) -> int:
        return 2

    def __call__(self, ev: EventBatch) -> Tensor:
        return time_surface(ev, self.tau_us)


REPRESENTATIONS: dict[str, type[Representation]] = {
    "voxel_grid": VoxelGrid,
    "histogram": Histogram,
    "event_image": EventImage,
    "stacked_histogram": StackedHistogram,
    "time_surface": TimeSurface,
}


def build_representation(name: str, **kwargs: Any) -> Representation:
    """Instantiate a representation by name (``voxel_grid``, ``histogram``, ``event_image``, ``stacked_histogram``,
    ``time_surface``; case-insensitive, ``-`` accepted for ``_``) with keyword arguments for its ``__init__``."""
    key = name.lower().replace("-", "_")
    if key not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {name!r}; choose from {sorted(REPRESENTATIONS)}")
    return REPRESENTATIONS[key](**kwargs)
