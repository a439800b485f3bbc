"""MVSEC (+-1 polarity, duplicated flow_dist[0]), E-TartanAir (float32 µs), DDD17 (ESS release) converters."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image
from sets_fixtures import random_events, write_png

from evssl.data.sets import convert_dataset
from evssl.data.sets._common import DatasetError
from evssl.data.sets.ddd17 import read_evsegnet_split, read_frame
from evssl.data.sets.tartanair import float32_times_to_us
from evssl.events.io.store import EventStore

ROS_T0 = 1_506_117_000.0  # ROS epoch seconds, as in the MVSEC files


# ------------------------------------------------------------------------------------------------ MVSEC
def _write_mvsec(root, rng, seq="indoor_flying1", n=5000, polarity=(-1.0, 1.0)):
    """§4: events (N,4) float64 [x, y, t s, p +-1]; image_raw uint8 + ts; depth float32 NaN; flow_dist (F,2,H,W)."""
    x, y, t_us, p = random_events(rng, n, 260, 346, t1=2_000_000)
    ev = np.stack([x, y, ROS_T0 + t_us / 1e6, np.where(p == 1, polarity[1], polarity[0])], 1).astype(np.float64)
    img_ts = ROS_T0 + np.arange(0.0, 2.0, 0.25)
    gt_ts = ROS_T0 + np.arange(0.05, 2.0, 0.2)
    imgs = rng.integers(0, 256, (len(img_ts), 260, 346)).astype(np.uint8)
    depth = rng.uniform(1, 10, (len(gt_ts), 260, 346)).astype(np.float32)
    depth[:, :10] = np.nan
    flow = rng.normal(size=(len(gt_ts), 2, 260, 346))
    flow[0] = flow[1]  # the writer's FlowReader quirk
    poses = np.eye(4)[None].repeat(len(gt_ts), 0)
    poses[:, 0, 3] = np.arange(len(gt_ts))
    with h5py.File(root / f"{seq}_data.hdf5", "w") as f:
        f["davis/left/events"] = ev
        f.create_dataset("davis/left/image_raw", data=imgs, compression="lzf", chunks=(1, 260, 346))
        f["davis/left/image_raw_ts"] = img_ts
    with h5py.File(root / f"{seq}_gt.hdf5", "w") as f:
        f["davis/left/depth_image_rect"] = depth
        f["davis/left/depth_image_rect_ts"] = gt_ts
        f["davis/left/flow_dist"] = flow
        f["davis/left/flow_dist_ts"] = gt_ts
        f["davis/left/pose"] = poses
        f["davis/left/pose_ts"] = gt_ts
    return ev, img_ts, imgs, gt_ts, depth, flow, poses


def test_mvsec_fixture(tmp_path):
    ev, img_ts, imgs, gt_ts, depth, flow, poses = _write_mvsec(tmp_path, np.random.default_rng(0))
    s = EventStore(convert_dataset("mvsec", tmp_path, tmp_path / "o.h5"))
    assert s.names.tolist() == ["indoor_flying1"] and s.splits.tolist() == ["indoor_flying"]
    e = s.events(0)
    np.testing.assert_array_equal(e.t, np.rint(ev[:, 2] * 1e6).astype(np.int64))  # seconds -> absolute µs
    np.testing.assert_array_equal(e.p, ev[:, 3].astype(np.int8))  # already +-1: kept, not 2p-1
    np.testing.assert_array_equal(e.x, ev[:, 0])
    fr = s.frames(0)
    assert fr.shape == (len(imgs), 260, 346, 3)
    np.testing.assert_array_equal(fr[..., 1], imgs)
    np.testing.assert_array_equal(s.frame_times(0), np.rint(img_ts * 1e6).astype(np.int64))
    # flow_dist[0] duplicates [1]: dropped; depth kept at the same (shared) timestamps
    np.testing.assert_array_equal(s.dense_times(0), np.rint(gt_ts[1:] * 1e6).astype(np.int64))
    np.testing.assert_array_equal(s.dense(0, "flow"), flow[1:].astype(np.float32))
    d = s.dense(0, "depth")
    np.testing.assert_array_equal(np.isnan(d), np.isnan(depth[1:]))  # NaN = no depth, kept
    np.testing.assert_allclose(d[~np.isnan(d)], depth[1:][~np.isnan(depth[1:])])
    pm, _pt = s.poses(0)
    np.testing.assert_array_equal(pm, poses)
    assert s.attrs["dropped_duplicate_flow_dist0"] == ["indoor_flying1"]
    depth_only = EventStore(convert_dataset("mvsec", tmp_path, tmp_path / "d.h5", dense=("depth",), frames=False))
    assert len(depth_only.dense_times(0)) == len(gt_ts) and not depth_only.info(0).has_frames


def test_mvsec_polarity_pitfall_and_missing_key(tmp_path):
    _write_mvsec(tmp_path, np.random.default_rng(1), polarity=(0.0, 1.0))
    with pytest.raises(DatasetError, match=r"indoor_flying1_data.hdf5: key 'davis/left/events' row \d+ has polarity 0"):
        convert_dataset("mvsec", tmp_path, tmp_path / "o.h5")
    with h5py.File(tmp_path / "indoor_flying1_gt.hdf5", "a") as f:
        del f["davis/left/flow_dist_ts"]
    with h5py.File(tmp_path / "indoor_flying1_data.hdf5", "a") as f:
        f["davis/left/events"][:, 3] = np.where(f["davis/left/events"][:, 3] == 0, -1.0, 1.0)
    with pytest.raises(DatasetError, match=r"indoor_flying1_gt.hdf5: missing key 'davis/left/flow_dist_ts'"):
        convert_dataset("mvsec", tmp_path, tmp_path / "o.h5")


# ------------------------------------------------------------------------------------------------ E-TartanAir
def _write_etartanair(traj, rng, chunks=(0, 1, 17, 20), n=300):
    """§7.2: event_left/{i:06d}_{i+1:06d}_event.hdf5 (x,y u2, p i1 +-1, t float32 µs NOT re-based, lzf)."""
    (traj / "event_left").mkdir(parents=True)
    truth = []
    for i in chunks:
        x, y, t, p = random_events(rng, n, 480, 640, t0=i * 1_000_000, t1=(i + 1) * 1_000_000)
        t32 = t.astype(np.float32)  # what v2e -> split_event.py stores: quantised to 2 µs from 16.8 s on
        with h5py.File(traj / "event_left" / f"{i:06d}_{i + 1:06d}_event.hdf5", "w") as f:
            f.create_dataset("x", data=x.astype(np.uint16), compression="lzf")
            f.create_dataset("y", data=y.astype(np.uint16), compression="lzf")
            f.create_dataset("p", data=(2 * p - 1).astype(np.int8), compression="lzf")
            f.create_dataset("t", data=t32, compression="lzf")
        truth.append((x, y, t32, 2 * p - 1))
    (traj / "depth_left").mkdir()
    depth = rng.uniform(0.5, 10000, (3, 480, 640)).astype(np.float32)
    for k in range(3):
        np.save(traj / "depth_left" / f"{k:06d}_left_depth.npy", depth[k])
    (traj / "pose_left.txt").write_text("".join(f"{k} 0 0 0 0 0 1\n" for k in range(25)))
    return truth, depth


def test_etartanair_float32_timestamps(tmp_path):
    traj = tmp_path / "hospital" / "Easy" / "P000"
    truth, depth = _write_etartanair(traj, np.random.default_rng(2))
    s = EventStore(convert_dataset("tartanair", tmp_path, tmp_path / "o.h5"))
    assert s.names.tolist() == ["hospital/Easy/P000"] and s.splits.tolist() == ["test"]
    e = s.events(0)
    t_exact = np.concatenate([t.astype(np.float64) for _, _, t, _ in truth])
    np.testing.assert_array_equal(e.t, np.rint(t_exact).astype(np.int64))  # nothing lost beyond the file's float32
    late = e.t[e.t >= 17_000_000]
    assert len(late) and (late % 2 == 0).all()  # chunks >= 17 are on the 2-µs float32 grid
    assert s.attrs["float32_time_step_us"] == 2.0
    # a float32 re-basing before conversion (what the reference warns about) would not be exact
    t32 = truth[-1][2]
    assert (float32_times_to_us(t32) - 20_000_000 == np.rint(t32.astype(np.float64) - 20_000_000)).all()
    np.testing.assert_array_equal(e.p, np.concatenate([p for *_, p in truth]))
    np.testing.assert_array_equal(s.dense_times(0), [0, 1_000_000, 2_000_000])  # frame i at i * 1e6 µs
    np.testing.assert_array_equal(s.dense(0, "depth"), depth)
    pm, pt = s.poses(0)
    assert len(pm) == 25 and pt[-1] == 24_000_000 and pm[3, 0, 3] == 3.0
    np.testing.assert_array_equal(s.intrinsics(0), [[320, 0, 320], [0, 320, 240], [0, 0, 1]])


def test_etartanair_one_recording_per_chunk_and_pair_list(tmp_path):
    traj = tmp_path / "hospital" / "Easy" / "P000"
    truth, depth = _write_etartanair(traj, np.random.default_rng(5), chunks=(0, 1, 2))
    s = EventStore(convert_dataset("tartanair", tmp_path, tmp_path / "o.h5", per_chunk=True))
    assert s.names.tolist() == [f"hospital/Easy/P000/{i:06d}" for i in (0, 1, 2)]
    for k in range(3):
        np.testing.assert_array_equal(s.events(k).t, np.rint(truth[k][2].astype(np.float64)).astype(np.int64))
        np.testing.assert_array_equal(s.dense(k, "depth"), depth[k : k + 1])  # frame k's depth, at k * 1e6 µs
        assert s.poses(k)[1].tolist() == [k * 1_000_000]
    # ECDDP's pair list: '<prev> <chunk>' lines; only the listed chunks are kept
    base = "/data/ETartanAir/hospital/Easy/P000/event_left"
    (tmp_path / "file_path.txt").write_text(f"{base}/000000_000001_event.hdf5 {base}/000001_000002_event.hdf5\n")
    s = EventStore(convert_dataset("tartanair", tmp_path, tmp_path / "p.h5", pair_list=tmp_path / "file_path.txt"))
    np.testing.assert_array_equal(s.events(0).t, np.rint(truth[1][2].astype(np.float64)).astype(np.int64))
    (tmp_path / "bad.txt").write_text("only_one_path\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: expected '<prev_chunk> <chunk>'"):
        convert_dataset("tartanair", tmp_path, tmp_path / "q.h5", pair_list=tmp_path / "bad.txt")


def test_tartanair_without_events_and_bad_depth(tmp_path):
    traj = tmp_path / "office" / "Hard" / "P001"
    traj.mkdir(parents=True)
    (traj / "pose_left.txt").write_text("0 0 0 0 0 0 1\n1 0 0 0 0 0 1\n")
    s = EventStore(convert_dataset("tartanair", tmp_path, tmp_path / "o.h5"))
    assert s.info(0).num_events == 0 and s.info(0).num_poses == 2 and s.splits[0] == "train"
    (traj / "depth_left").mkdir()
    np.save(traj / "depth_left" / "000000_left_depth.npy", np.zeros((480, 641), np.float32))
    with pytest.raises(DatasetError, match=r"000000_left_depth.npy: key 'depth' has shape \(480, 641\)"):
        convert_dataset("tartanair", tmp_path, tmp_path / "o.h5")


# ------------------------------------------------------------------------------------------------ DDD17
FFMPEG_NAME = "img_{:08d}.png"  # mkdir imgs && ffmpeg -i video.mp4 imgs/img_%08d.png


def _write_ddd17_dir(d, rng, n=2000, n_img=6, frame_name=FFMPEG_NAME):
    """§5.3: events.dat.t int64 ns memmap, events.dat.xyp int16 (N,3), index/index_50ms.npy, 1-based mask names
    (``segmentation_<k>.png``, as ESS's example loader maps them to ``img_<k>.png``), imgs/ as ffmpeg writes it (RGB,
    gray in every channel, image k - 1 in ``img_<k:08d>.png``); ``frame_name=None``: no imgs/ folder."""
    d.mkdir(parents=True)
    x, y, t_us, p = random_events(rng, n, 260, 346, t1=3_000_000)
    t_ns = t_us.astype(np.int64) * 1000 + rng.integers(0, 1000, n)
    t_ns.sort()
    t_ns.astype(np.int64).tofile(d / "events.dat.t")
    np.stack([x, y, p], 1).astype(np.int16).tofile(d / "events.dat.xyp")
    (d / "index").mkdir()
    img_t = np.linspace(1e8, 2.9e9, n_img).astype(np.int64)
    np.save(d / "index" / "index_50ms.npy", np.stack([img_t, np.zeros(n_img, np.int64), np.zeros(n_img, np.int64)], 1))
    (d / "segmentation_masks").mkdir()
    masks = rng.integers(0, 6, (2, 200, 346)).astype(np.uint8)
    for k, img in zip((2, 5), masks):  # masks of images 1 and 4 (names are 1-based)
        write_png(d / "segmentation_masks" / f"segmentation_{k:08d}.png", img)
    aps = rng.integers(0, 256, (n_img, 260, 346)).astype(np.uint8)  # every image differs: an index off by one shows
    if frame_name is not None:
        (d / "imgs").mkdir()
        for k in range(n_img):
            write_png(d / "imgs" / frame_name.format(k + 1), np.repeat(aps[k][..., None], 3, axis=-1))
    return (x, y, t_ns, p), img_t, masks, aps


def test_ddd17_ess_release(tmp_path):
    rng = np.random.default_rng(3)
    names = {2: "{:010d}.png", 6: None}  # dir2: the ESS loader's other frame names; dir6: no imgs/ extracted
    truth = {k: _write_ddd17_dir(tmp_path / f"dir{k}", rng, frame_name=names.get(k, FFMPEG_NAME)) for k in range(7)}
    s = EventStore(convert_dataset("ddd17", tmp_path, tmp_path / "o.h5"))
    assert s.classes == ["flat", "background", "object", "vegetation", "human", "vehicle"]
    assert s.splits.tolist() == ["train", "val", "train", "train", "test", "train", "train"]
    (_x, y, t_ns, p), img_t, masks, _ = truth[4]
    e = s.events(4)
    keep = y < 200  # the car-hood rows have no labels
    assert e.sensor_size == (200, 346)
    np.testing.assert_array_equal(e.y, y[keep])
    np.testing.assert_array_equal(e.t, (t_ns[keep] + 500) // 1000)  # ns -> µs
    np.testing.assert_array_equal(e.p, 2 * p[keep] - 1)
    np.testing.assert_array_equal(s.dense_times(4), (img_t[[1, 4]] + 500) // 1000)
    np.testing.assert_array_equal(s.dense(4, "semantic"), masks)
    for k in (4, 2):  # the frames of images 1 and 4 (img_00000002/5.png), label rows, at their masks' times
        np.testing.assert_array_equal(s.frame_times(k), s.dense_times(k))
        frames = s.frames(k)
        assert frames.shape == (2, 200, 346, 3)
        np.testing.assert_array_equal(frames, np.repeat(truth[k][3][[1, 4], :200, :, None], 3, axis=-1))
    assert s.info(6).num_frames == 0 and s.info(6).num_dense == 2
    (tmp_path / "dir0" / "events.dat.xyp").write_bytes(b"\0" * 10)
    with pytest.raises(DatasetError, match=r"dir0/events.dat.xyp: size 10 bytes, expected 12000"):
        convert_dataset("ddd17", tmp_path, tmp_path / "o.h5")


def test_ddd17_frame_errors_and_no_frames(tmp_path, capsys):
    from evssl.events.convert import main_convert

    rng = np.random.default_rng(5)
    truth = _write_ddd17_dir(tmp_path / "dir0", rng)
    (tmp_path / "dir0" / "imgs" / "img_00000005.png").unlink()  # the frame of mask segmentation_00000005.png
    with pytest.raises(DatasetError, match=r"dir0/imgs/img_00000005.png: missing APS frame of mask segmentation_0+5"):
        convert_dataset("ddd17", tmp_path, tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()
    args = ["--dataset", "ddd17", str(tmp_path), "--out", str(tmp_path / "o.h5")]
    assert main_convert([*args, "--no-frames"]) == 0
    s = EventStore(tmp_path / "o.h5")
    assert s.info(0).num_frames == 0
    np.testing.assert_array_equal(s.dense(0, "semantic"), truth[2])
    s.close()
    write_png(tmp_path / "dir0" / "imgs" / "img_00000005.png", truth[3][4, :200])  # already cropped: wrong size
    assert main_convert(args) == 1
    err = capsys.readouterr().err
    assert "dir0/imgs/img_00000005.png: APS frame has shape (200, 346) uint8, expected (260, 346) uint8" in err
    assert len(err.strip().splitlines()) == 1


def test_ddd17_frame_to_gray_as_pillow_l(tmp_path):
    rgb = np.random.default_rng(6).integers(0, 256, (260, 346, 3)).astype(np.uint8)
    write_png(tmp_path / "img_00000001.png", rgb)
    gray = np.asarray(Image.open(tmp_path / "img_00000001.png").convert("L"))  # ESS: transforms.Grayscale
    np.testing.assert_array_equal(read_frame(tmp_path / "img_00000001.png"), np.repeat(gray[:200, :, None], 3, -1))


def test_ddd17_evsegnet_release_pairs_by_sorted_order(tmp_path):
    rng = np.random.default_rng(4)
    base = tmp_path / "train"
    (base / "events").mkdir(parents=True)
    (base / "labels").mkdir()
    tensors = rng.normal(size=(2, 200, 346, 7)).astype(np.float32)  # (H, W, C), more than 6 channels
    labels = rng.integers(0, 6, (2, 200, 346)).astype(np.uint8)
    for k in range(2):
        np.save(base / "events" / f"a_{k}.npy", tensors[k])
        write_png(base / "labels" / f"z_{k}.png", labels[k])
    x, y = read_evsegnet_split(tmp_path, "train")
    assert x.shape == (2, 6, 200, 346)
    np.testing.assert_array_equal(x[1, 3], tensors[1, :, :, 3])
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(DatasetError, match="EV-SegNet release"):
        convert_dataset("ddd17", tmp_path, tmp_path / "o.h5")


def test_real_tartanair_pose_file_through_the_converter(tmp_path):
    from sets_fixtures import REAL_DATA

    src = REAL_DATA / "tartanair-sample" / "pose_gt.txt"
    if not src.is_file():
        pytest.skip(f"{src} not found (set EVSSL_REAL_DATA to shared/real-data)")
    traj = tmp_path / "abandonedfactory" / "Easy" / "P001"
    traj.mkdir(parents=True)
    (traj / "pose_left.txt").symlink_to(src)  # a layout, never a copy
    s = EventStore(convert_dataset("tartanair", tmp_path, tmp_path / "o.h5"))
    pm, pt = s.poses(0)
    raw = np.loadtxt(src)
    assert pm.shape == (734, 4, 4) and s.splits[0] == "train"
    np.testing.assert_allclose(pm[:, :3, 3], raw[:, :3])
    np.testing.assert_array_equal(pt, np.arange(734) * 1_000_000)
