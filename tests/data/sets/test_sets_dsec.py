"""DSEC events (+ rectification), DSEC-Semantic (both layouts, 440x640 crop, ESS labels) and DSEC-Flow (PNG pitfall)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from sets_fixtures import encode_flow_png, random_events, shift_rectify_map, write_dsec_events, write_png

from evssl.data.sets import convert_dataset
from evssl.data.sets._common import DatasetError, read_png
from evssl.data.sets.dsec import decode_flow_png, ess_label_indices
from evssl.events.io.store import EventStore

T_OFFSET = 49_599_300_000


def _events(rng, n=3000, t1=900_000):
    x, y, t, p = random_events(rng, n, 480, 640, t1=t1)
    t[:50] = t[0]  # repeated timestamps and (below) empty milliseconds
    return x, y, t, p


def test_dsec_events_rectified_absolute_time(tmp_path):
    rng = np.random.default_rng(0)
    x, y, t, p = _events(rng)
    write_dsec_events(
        tmp_path / "train/zurich_city_00_a/events/left", x, y, t, p, T_OFFSET, shift_rectify_map(2.4, -1.6)
    )
    s = EventStore(convert_dataset("dsec", tmp_path, tmp_path / "o.h5", max_events=1000))
    # rectified: (x + 2.4, y - 1.6) rounded, events mapped out of the frame dropped
    xr, yr = np.rint(x + 2.4).astype(int), np.rint(y - 1.6).astype(int)
    keep = (xr < 640) & (yr >= 0)
    ev = [s.events(i) for i in range(len(s))]
    allt = np.concatenate([e.t for e in ev])
    np.testing.assert_array_equal(allt, t[keep] + T_OFFSET)  # absolute µs: t + t_offset
    np.testing.assert_array_equal(np.concatenate([e.x for e in ev]), xr[keep])
    np.testing.assert_array_equal(np.concatenate([e.y for e in ev]), yr[keep])
    np.testing.assert_array_equal(np.concatenate([e.p for e in ev]), 2 * p[keep] - 1)
    assert keep.sum() < len(t)  # the map really sends some events out of frame
    assert len(s) > 1 and s.names[0] == "zurich_city_00_a#part000" and set(s.splits) == {"train"}
    assert s.attrs["recording_parts"] == {"zurich_city_00_a": len(s)}
    raw = EventStore(convert_dataset("dsec", tmp_path, tmp_path / "raw.h5", rectify=False))
    np.testing.assert_array_equal(raw.events(0).x, x)
    assert raw.names.tolist() == ["zurich_city_00_a"]


def test_dsec_errors_name_file_and_key(tmp_path):
    rng = np.random.default_rng(1)
    seq = tmp_path / "seq"
    ev_file = write_dsec_events(seq / "events/left", *_events(rng, 200), 0, None)
    with pytest.raises(DatasetError, match=r"rectify_map.h5: missing DSEC rectify_map.h5"):
        convert_dataset("dsec", seq, tmp_path / "o.h5")
    with h5py.File(ev_file, "a") as f:
        del f["ms_to_idx"]
    with pytest.raises(DatasetError, match=r"events.h5: missing key 'ms_to_idx'"):
        convert_dataset("dsec", seq, tmp_path / "o.h5", rectify=False)
    with h5py.File(ev_file, "a") as f:
        f["ms_to_idx"] = np.zeros(1000, np.uint64) + 5  # breaks ms_to_idx[0] == 0
    with pytest.raises(DatasetError, match=r"events.h5: key 'ms_to_idx' must start at 0"):
        convert_dataset("dsec", seq, tmp_path / "o.h5", rectify=False)
    with h5py.File(ev_file, "a") as f:
        del f["events/p"]
    with pytest.raises(DatasetError, match=r"events.h5: missing key 'p'"):
        convert_dataset("dsec", seq, tmp_path / "o.h5", rectify=False)
    assert not (tmp_path / "o.h5").exists()


def _semantic_seq(root, rng, layout: str, n_labels=12, classes=11):
    seq = root / ("train" if layout == "A" else "") / "zurich_city_13_a"
    x, y, t, p = _events(rng, 4000, t1=700_000)
    write_dsec_events(seq / "events/left", x, y, t, p, T_OFFSET, shift_rectify_map(0.0, 0.0))
    ts = T_OFFSET + 50_000 * (np.arange(n_labels) + 1)
    labels = rng.integers(0, classes, (n_labels, 440, 640)).astype(np.uint8)
    labels[:, :5, :5] = 255
    if layout == "A":
        d, tfile = seq / "semantic" / f"{classes}classes" / "data", seq / "semantic" / "timestamps.txt"
    else:
        d, tfile = seq / f"{classes}classes", seq / "zurich_city_13_a_semantic_timestamps.txt"
    d.mkdir(parents=True)
    for k in range(n_labels):
        write_png(d / f"{k:06d}.png", labels[k])
    tfile.write_text("\n".join(str(v) for v in ts) + "\n")
    return (x, y, t, p), ts, labels


@pytest.mark.parametrize("layout", ["A", "B"])
def test_dsec_semantic_crop_and_ess_labels(tmp_path, layout):
    rng = np.random.default_rng(2)
    (_x, y, _t, _p), ts, labels = _semantic_seq(tmp_path, rng, layout)
    s = EventStore(convert_dataset("dsec_semantic", tmp_path, tmp_path / "o.h5"))
    assert s.classes[0] == "background" and s.classes[10] == "traffic sign" and len(s.classes) == 11
    assert s.info(0).sensor_size == (440, 640)
    ev = s.events(0)
    np.testing.assert_array_equal(ev.y, y[y < 440])  # bottom 40 rows cropped (no labels there)
    assert s.splits[0] == "test"  # ECDDP's split table (zurich_city_13_a is a test sequence)
    keep = ess_label_indices(12)
    np.testing.assert_array_equal(keep, [6, 8, 10])  # (250 // 100 + 1) * 2 = 6 dropped, then every second one
    np.testing.assert_array_equal(s.dense_times(0), ts[keep])
    np.testing.assert_array_equal(s.dense(0, "semantic"), labels[keep])
    everything = EventStore(
        convert_dataset("dsec_semantic", tmp_path, tmp_path / "all.h5", label_subsample="all", eval_split="val")
    )
    assert len(everything.dense_times(0)) == 12 and everything.splits[0] == "val"


def test_dsec_semantic_bad_label_png(tmp_path):
    rng = np.random.default_rng(3)
    _semantic_seq(tmp_path, rng, "B")
    write_png(tmp_path / "zurich_city_13_a/11classes/000008.png", np.full((440, 640), 12, np.uint8))
    with pytest.raises(DatasetError, match=r"000008.png: label value 12 is not a class id < 11"):
        convert_dataset("dsec_semantic", tmp_path, tmp_path / "o.h5")
    write_png(tmp_path / "zurich_city_13_a/11classes/000008.png", np.zeros((480, 640), np.uint8))
    with pytest.raises(DatasetError, match=r"000008.png: label PNG has shape \(480, 640\), expected \(440, 640\)"):
        convert_dataset("dsec_semantic", tmp_path, tmp_path / "o.h5")


def _flow_seq(root, rng, n=4):
    seq = root / "train" / "thun_00_a"
    x, y, t, p = _events(rng, 2000, t1=600_000)
    write_dsec_events(seq / "events/left", x, y, t, p, T_OFFSET, shift_rectify_map(0.0, 0.0))
    flows = np.round(rng.uniform(-200, 200, (n, 2, 480, 640)) * 128) / 128  # exactly representable at 1/128 px
    valid = rng.random((n, 480, 640)) > 0.3
    d = seq / "flow" / "forward"
    d.mkdir(parents=True)
    for k in range(n):
        write_png(d / f"{2 * k + 2:06d}.png", encode_flow_png(flows[k], valid[k]))  # named by image index
    pairs = [(T_OFFSET + 100_000 * (k + 1), T_OFFSET + 100_000 * (k + 2)) for k in range(n)]
    (seq / "flow" / "forward_timestamps.txt").write_text(
        "# from_timestamp_us, to_timestamp_us\n" + "".join(f"{a}, {b}\n" for a, b in pairs)
    )
    return flows, valid, pairs


def test_dsec_flow_decode_and_store(tmp_path):
    rng = np.random.default_rng(4)
    flows, valid, pairs = _flow_seq(tmp_path, rng)
    s = EventStore(convert_dataset("dsec_flow", tmp_path, tmp_path / "o.h5"))
    got = s.dense(0, "flow")
    assert got.shape == (4, 2, 480, 640) and got.dtype == np.float32
    np.testing.assert_array_equal(np.isfinite(got[:, 0]), valid)  # invalid pixels are NaN
    np.testing.assert_array_equal(got[:, 0][valid], flows[:, 0][valid])  # x from channel 0 (R), 1/128 px steps
    np.testing.assert_array_equal(got[:, 1][valid], flows[:, 1][valid])
    np.testing.assert_array_equal(s.dense_times(0), [a for a, _ in pairs])
    assert s.attrs["flow_to_us"]["thun_00_a"] == [b for _, b in pairs]
    # a test sequence: events only, and its benchmark requests (from, to, file index) kept
    seq = tmp_path / "test" / "interlaken_00_b"
    write_dsec_events(seq / "events/left", *_events(rng, 500), T_OFFSET, shift_rectify_map(0.0, 0.0))
    (seq / "test_forward_flow_timestamps.csv").write_text(
        "# from_timestamp_us, to_timestamp_us, file_index\n" + f"{T_OFFSET + 1000}, {T_OFFSET + 101000}, 820\n"
    )
    s = EventStore(convert_dataset("dsec_flow", tmp_path, tmp_path / "o2.h5"))
    i = s.index_of("interlaken_00_b")
    assert s.splits[i] == "test" and not s.info(i).has_dense
    assert s.attrs["flow_test_requests"]["interlaken_00_b"] == [[T_OFFSET + 1000, T_OFFSET + 101000, 820]]


def test_dsec_flow_bgr_pitfall(tmp_path):
    rng = np.random.default_rng(5)
    flow = np.stack([np.full((480, 640), 3.5), np.full((480, 640), -1.25)])
    valid = np.ones((480, 640), bool)
    img = encode_flow_png(flow, valid)
    write_png(tmp_path / "rgb.png", img)
    f, v = decode_flow_png(read_png(tmp_path / "rgb.png"), "rgb.png")
    assert float(f[0, 0, 0]) == 3.5 and float(f[1, 0, 0]) == -1.25 and v.all()
    # an OpenCV array (BGR) written without flipping: the valid bit lands in channel 0
    write_png(tmp_path / "bgr.png", img[..., ::-1].copy())
    with pytest.raises(DatasetError, match=r"bgr.png: flow PNG channel 2 .* BGR order"):
        decode_flow_png(read_png(tmp_path / "bgr.png"), tmp_path / "bgr.png")
    f2, _ = decode_flow_png(read_png(tmp_path / "bgr.png"), "bgr.png", channel_order="bgr")
    np.testing.assert_array_equal(f2, f)
    # a whole sequence of such files is refused unless channel_order='bgr' is given
    flows, valid, _ = _flow_seq(tmp_path / "ds", rng, n=1)
    png = tmp_path / "ds/train/thun_00_a/flow/forward/000002.png"
    write_png(png, read_png(png)[..., ::-1].copy())
    with pytest.raises(DatasetError, match="BGR"):
        convert_dataset("dsec_flow", tmp_path / "ds", tmp_path / "o.h5")
    s = EventStore(convert_dataset("dsec_flow", tmp_path / "ds", tmp_path / "o.h5", channel_order="bgr"))
    np.testing.assert_array_equal(s.dense(0, "flow")[0, 0][valid[0]], flows[0, 0][valid[0]])
