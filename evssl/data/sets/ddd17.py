"""DDD17 semantic segmentation (Alonso & Murillo, "EV-SegNet", CVPRW 2019; 6 classes), in the two packagings.

Classes (both): ``0 flat, 1 background (construction + sky), 2 object, 3 vegetation (nature), 4 human, 5 vehicle``,
255 = ignore (EV-SegNet README; ESS ``config/settings.py`` names).

**ESS release** (``ddd17_seg.tar.gz``; :func:`convert_ddd17`, ESS ``datasets/ddd17_events_loader.py`` and
``extract_data_tools/example_loader_ddd17.py``) — raw events, so it becomes an event store::

    <root>/dir*/events.dat.t        np.memmap int64 (N,): event time in **ns**
    <root>/dir*/events.dat.xyp      np.memmap int16 (N, 3): x, y, p in {0, 1}
    <root>/dir*/index/index_{10,50,250}ms.npy   (n_img, 3) int64 [t_img_ns, idx_last_event_before, idx_window_start]
    <root>/dir*/segmentation_masks/*_<k>.png     label of APS image k - 1 (1-based in the name)
    <root>/dir*/imgs/img_<k:08d>.png             APS frame of image k - 1 (260x346), extracted from video.mp4

Split by sorted ``dir*`` order (ESS): train = dirs 0, 2, 3, 5, 6; val = dir 1; test = dir 4. The sensor is
260x346 but labels are 200x346 (the car hood rows are cut), so events with ``y >= 200`` are dropped and the store's
sensor is 200x346. Timestamps: ns -> µs rounded to nearest. A mask's time is column 0 of ``index_50ms.npy`` at its
image index.

APS frames: the release ships them only as ``video.mp4``; this converter does not decode video, so extract
``imgs/`` first in every ``dir*``, as ESS's ``example_loader_ddd17.py`` says::

    mkdir imgs && ffmpeg -i video.mp4 imgs/img_%08d.png

ffmpeg numbers from 1, so ``img_<k>.png`` is image k - 1, the image of mask ``*_<k>.png`` (ESS pairs them by that
number; its loader also accepts ``<k:010d>.png``, read here too). When ``imgs/`` exists (and ``frames`` is on), every
mask's frame is stored as its paired frame at the mask's time: the 200 label rows, gray (Pillow's ``L`` weights, as
ESS's ``Grayscale``) repeated into the store's 3 channels. A missing or wrongly sized image is an error naming it.

**EV-SegNet release** (``<root>/{train,test}/{events,labels}/``, files paired by **sorted order**): the events are
pre-computed (H, W, C) float tensors (the first 6 channels are EV-SegNet's encoding: per polarity a histogram, the
mean and the standard deviation of the normalised timestamps, by the paper; the channel order is not stated in its
code), not events, so they cannot go into an event store;
:func:`read_evsegnet_split` returns the paired arrays (channels first, ``(6, H, W)``) and labels for a tensor
pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from evssl.data.sets._common import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    READ_CHUNK,
    DatasetError,
    PathLike,
    Timed,
    check_array,
    need_dir,
    need_file,
    read_png,
    write_long_recording,
    writer_kwargs,
)
from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events

CLASSES = ("flat", "background", "object", "vegetation", "human", "vehicle")
IGNORE = 255
SENSOR_HEIGHT, WIDTH = 260, 346
LABEL_HEIGHT = 200
SPLIT_BY_DIR_ORDER = {0: "train", 1: "val", 2: "train", 3: "train", 4: "test", 5: "train", 6: "train"}
EVSEGNET_CHANNELS = 6
#: APS frame names in ``imgs/`` for image number k (1-based): ffmpeg's ``img_%08d.png``, the ESS loader's fallback.
FRAME_NAMES = ("img_{:08d}.png", "{:010d}.png")
#: Pillow's ``L`` conversion (ITU-R 601-2 luma, 16-bit fixed point), which ESS's ``transforms.Grayscale`` applies.
LUMA_WEIGHTS = np.array([19595, 38470, 7471], np.uint32)

log = logging.getLogger(__name__)


def _memmaps(d: Path) -> tuple[np.ndarray, np.ndarray]:
    tf = need_file(d / "events.dat.t", "DDD17 event times (int64 ns memmap)")
    xf = need_file(d / "events.dat.xyp", "DDD17 event x, y, p (int16 memmap, N x 3)")
    nt, nx = tf.stat().st_size, xf.stat().st_size
    if nt % 8:
        raise DatasetError(f"{tf}: size {nt} bytes is not a multiple of 8 (int64 ns)")
    n = nt // 8
    if nx != n * 6:
        raise DatasetError(f"{xf}: size {nx} bytes, expected {n * 6} for {n} events of 3 x int16 (as events.dat.t)")
    t = np.memmap(tf, dtype=np.int64, mode="r", shape=(n,))
    xyp = np.memmap(xf, dtype=np.int16, mode="r", shape=(n, 3))
    return t, xyp


def ddd17_chunks(d: Path, chunk: int = READ_CHUNK) -> Iterator[Events]:
    """Events of one ESS ``dir*`` (rows with y >= 200 dropped), in chunks."""
    t, xyp = _memmaps(d)
    n = len(t)
    for a in range(0, max(n, 1), chunk):
        b = min(a + chunk, n)
        tt = (np.asarray(t[a:b], np.int64) + 500) // 1000
        block = np.asarray(xyp[a:b])
        keep = block[:, 1] < LABEL_HEIGHT
        src = f"{d / 'events.dat.xyp'}"
        if len(block) and ((block[:, 2] != 0) & (block[:, 2] != 1)).any():
            i = int(np.flatnonzero((block[:, 2] != 0) & (block[:, 2] != 1))[0])
            raise DatasetError(f"{src}: event {a + i} has polarity {block[i, 2]}, expected 0/1 (column 2)")
        yield Events.from_arrays(
            block[keep, 0], block[keep, 1], tt[keep], block[keep, 2], LABEL_HEIGHT, WIDTH, polarity="01", source=src
        )


def mask_index(path: Path) -> int:
    """Image index of a mask file name (``..._<k>.png`` is image ``k - 1``)."""
    try:
        return int(path.name.split("_")[-1].split(".")[0]) - 1
    except ValueError as e:
        raise DatasetError(f"{path}: mask name does not end in '_<image number>.png'") from e


def read_mask(path: Path) -> np.ndarray:
    """A (200, 346) uint8 mask with ids 0..5 or 255."""
    m = read_png(path)
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != (LABEL_HEIGHT, WIDTH) or m.dtype != np.uint8:
        raise DatasetError(f"{path}: mask has shape {m.shape} {m.dtype}, expected (200, 346) uint8")
    bad = (m >= len(CLASSES)) & (m != IGNORE)
    if bad.any():
        raise DatasetError(f"{path}: mask value {int(m[bad][0])} is not a class id 0..5 or 255")
    return m


def frame_file(mask: Path) -> Path:
    """The APS frame PNG of a mask: ``<dir>/imgs/img_<k:08d>.png`` (or ``<k:010d>.png``) for mask ``..._<k>.png``."""
    imgs = mask.parent.parent / "imgs"
    number = mask_index(mask) + 1
    for pattern in FRAME_NAMES:
        if (imgs / pattern.format(number)).is_file():
            return imgs / pattern.format(number)
    raise DatasetError(
        f"{imgs / FRAME_NAMES[0].format(number)}: missing APS frame of mask {mask.name} "
        "(extract all of video.mp4: ffmpeg -i video.mp4 imgs/img_%08d.png)"
    )


def read_frame(path: Path) -> np.ndarray:
    """A (260, 346) gray or RGB(A) uint8 APS frame PNG as (200, 346, 3) uint8: the label rows, gray in 3 channels."""
    img = read_png(path)
    if img.shape[:2] != (SENSOR_HEIGHT, WIDTH) or img.dtype != np.uint8:
        raise DatasetError(f"{path}: APS frame has shape {img.shape} {img.dtype}, expected (260, 346) uint8")
    img = img[:LABEL_HEIGHT]
    if img.ndim == 3 and img.shape[2] >= 3:
        gray = ((img[..., :3].astype(np.uint32) @ LUMA_WEIGHTS + 0x8000) >> 16).astype(np.uint8)
    else:
        gray = img if img.ndim == 2 else img[..., 0]
    return np.repeat(gray[..., None], 3, axis=-1)


def _stacked(read: Callable[[Path], np.ndarray], files: list[Path]) -> Callable[[np.ndarray], np.ndarray]:
    """A :class:`Timed` loader: ``read`` of the files at the given positions, stacked."""
    return lambda i: np.stack([read(files[j]) for j in i])


def labelled_items(d: Path, index_window: str, frames: bool) -> list[Timed]:
    """One ``dir*``'s masks in time order (``semantic``), and their APS frames (``frames``) when asked and present.

    Every file name is resolved here, so a missing frame is an error before any event is written.
    """
    index_file = need_file(d / "index" / f"index_{index_window}.npy", "DDD17 image index")
    index = check_array(np.load(index_file), index_file, "index", kinds="i", shape=(None, 3))
    masks = sorted((d / "segmentation_masks").glob("*.png"))
    if not masks:
        raise DatasetError(f"{d / 'segmentation_masks'}: missing segmentation masks (*.png)")
    img_idx = np.array([mask_index(m) for m in masks])
    if img_idx.min() < 0 or img_idx.max() >= len(index):
        bad = masks[int(np.flatnonzero((img_idx < 0) | (img_idx >= len(index)))[0])]
        raise DatasetError(f"{bad}: image number outside the {len(index)} rows of {index_file}")
    ts = (index[img_idx, 0].astype(np.int64) + 500) // 1000
    order = np.argsort(ts, kind="stable")
    files = [masks[i] for i in order]
    items = [Timed("semantic", ts[order], _stacked(read_mask, files), LABEL_HEIGHT * WIDTH)]
    if frames and (d / "imgs").is_dir():
        imgs = [frame_file(m) for m in files]
        items.append(Timed("frames", ts[order], _stacked(read_frame, imgs), LABEL_HEIGHT * WIDTH * 3))
    elif frames:
        log.info("DDD17: %s has no imgs/ folder (no APS frames; extract them from video.mp4 with ffmpeg)", d)
    return items


def convert_ddd17(
    root: PathLike,
    out: PathLike,
    *,
    index_window: str = "50ms",
    frames: bool = True,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert the ESS DDD17 segmentation release (events, 6-class masks, APS frames of ``imgs/``); see the module.

    ``frames=False`` (``--no-frames``) leaves the APS frames out even where ``imgs/`` exists.
    """
    root = need_dir(Path(root), "DDD17 (ESS release) root with dir* folders")
    if (root / "train").is_dir() and (root / "train" / "events").is_dir():
        raise DatasetError(
            f"{root}: this is the EV-SegNet release (pre-computed event tensors, no events); "
            "use evssl.data.sets.ddd17.read_evsegnet_split for it"
        )
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("dir"))
    if not dirs:
        raise DatasetError(f"{root}: no dir* recording folders")
    timed = [labelled_items(d, index_window, frames) for d in dirs]
    parts: dict[str, int] = {}
    with StoreWriter(out, **writer_kwargs(options)) as w:
        w.set_classes(list(CLASSES))
        for k, d in enumerate(dirs):
            got = write_long_recording(
                w,
                d.name,
                ddd17_chunks(d),
                timed=timed[k],
                max_events=max_events,
                max_bytes=max_bytes,
                split=SPLIT_BY_DIR_ORDER.get(k, "train"),
                source=str(d),
            )
            if len(got) > 1:
                parts[d.name] = len(got)
        w.set_attrs(
            dataset="ddd17",
            sensor_size=[LABEL_HEIGHT, WIDTH],
            ignore_index=IGNORE,
            num_classes=len(CLASSES),
            split_rule="sorted dir* order: train 0,2,3,5,6; val 1; test 4 (ESS)",
            recording_parts=parts,
        )
    return Path(out)


def read_evsegnet_split(root: PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """EV-SegNet release: ``(tensors (N, 6, H, W) float32, labels (N, H, W) uint8)`` of ``<root>/<split>``.

    ``events/*.npy`` (H, W, C) and ``labels/*.png`` are paired by sorted order (as EV-SegNet's ``Loader``); the first
    6 channels are kept. Errors name the file whose shape or pairing is wrong.
    """
    base = need_dir(Path(root) / split, f"EV-SegNet {split} split")
    ev_files = sorted(need_dir(base / "events", "events/*.npy").glob("*.npy"))
    lab_files = sorted(need_dir(base / "labels", "labels/*.png").glob("*.png"))
    if len(ev_files) != len(lab_files):
        raise DatasetError(f"{base}: {len(ev_files)} event files but {len(lab_files)} label files (paired by order)")
    xs, ys = [], []
    for ef, lf in zip(ev_files, lab_files):
        arr = np.load(ef, allow_pickle=False)
        check_array(arr, ef, "events", kinds="fiu", ndim=3)
        if arr.shape[2] < EVSEGNET_CHANNELS:
            raise DatasetError(f"{ef}: {arr.shape[2]} channels, expected at least 6 (H, W, C layout)")
        lab = read_png(lf)
        lab = lab[..., 0] if lab.ndim == 3 else lab
        if lab.shape != arr.shape[:2]:
            raise DatasetError(f"{lf}: label shape {lab.shape} differs from {ef.name}'s {arr.shape[:2]}")
        xs.append(np.moveaxis(arr[..., :EVSEGNET_CHANNELS].astype(np.float32), -1, 0))
        ys.append(lab.astype(np.uint8))
    if not xs:
        raise DatasetError(f"{base}: no samples")
    return np.stack(xs), np.stack(ys)
