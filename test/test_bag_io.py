# SPDX-License-Identifier: Apache-2.0
"""Rosbag2 read/write: round trips over both storages and every encoding, and clear errors on bad bags."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros.bag import (
    BagError,
    BagWriter,
    CameraInfoParams,
    bag_info,
    camera_info_topic,
    read_image_frames,
    write_image_bag,
)
from edgemoe_ros.bag import messages as m
from edgemoe_ros.bag.io import BagReader

TOPIC = "/cam/image_raw"
H, W = 24, 40


def _frames(n: int = 4, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    # Stamps straddle a second boundary to catch sec/nanosec mistakes.
    return [(1_700_000_000_900_000_000 + i * 70_000_000, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            for i in range(n)]


def _smooth_frames(n: int = 3) -> list[tuple[int, np.ndarray]]:
    """Gradients survive JPEG with small error, unlike noise."""
    yy, xx = np.mgrid[0:H, 0:W]
    return [(10**9 + i, np.dstack([xx * 6, yy * 10, (xx + yy + 20 * i) * 3]).clip(0, 255).astype(np.uint8))
            for i in range(n)]


def _data_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_raw_colour_round_trip_is_exact(tmp_path: Path, storage: str, encoding: str) -> None:
    frames = _frames()
    info = CameraInfoParams.pinhole(W, H, 30.0)
    assert write_image_bag(tmp_path / "b", frames, TOPIC, "cam_optical", storage, info, encoding) == len(frames)
    out = list(read_image_frames(tmp_path / "b"))
    assert len(out) == len(frames)
    for (stamp, rgb), got in zip(frames, out, strict=True):
        assert got.stamp_ns == stamp and got.log_time_ns == stamp
        assert got.frame_id == "cam_optical" and got.encoding == encoding and got.topic == TOPIC
        assert got.rgb.dtype == np.uint8 and got.rgb.shape == (H, W, 3)
        np.testing.assert_array_equal(got.rgb, rgb)
    meta = bag_info(tmp_path / "b")
    assert meta.storage == storage
    assert {(t.topic, t.msgtype, t.count) for t in meta.topics} == {
        (TOPIC, m.IMAGE_MSG, len(frames)), ("/cam/camera_info", m.CAMERA_INFO_MSG, len(frames))}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_mono8_round_trip_is_grey(tmp_path: Path, storage: str) -> None:
    frames = _frames(2)
    write_image_bag(tmp_path / "b", frames, TOPIC, "cam", storage, encoding="mono8")
    for (_, rgb), got in zip(frames, read_image_frames(tmp_path / "b", TOPIC), strict=True):
        grey = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
        assert np.all(got.rgb[..., 0] == got.rgb[..., 1]) and np.all(got.rgb[..., 1] == got.rgb[..., 2])
        assert np.abs(got.rgb[..., 0] - grey).max() <= 1.0


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("fmt,tolerance", [("png", 0), ("jpeg", 12)])
def test_compressed_round_trip(tmp_path: Path, storage: str, fmt: str, tolerance: int) -> None:
    frames = _smooth_frames()
    write_image_bag(tmp_path / "b", frames, "/cam/image/compressed", "cam", storage, encoding=fmt)
    assert bag_info(tmp_path / "b").topics[0].msgtype == m.COMPRESSED_MSG
    out = list(read_image_frames(tmp_path / "b"))
    assert [o.stamp_ns for o in out] == [s for s, _ in frames]
    for (_, rgb), got in zip(frames, out, strict=True):
        assert got.encoding == fmt
        assert np.abs(got.rgb.astype(int) - rgb).max() <= tolerance


def test_camera_info_round_trip_and_sibling_topic(tmp_path: Path) -> None:
    info = CameraInfoParams.pinhole(W, H, 31.5, 30.0, 19.0, 11.0)
    write_image_bag(tmp_path / "b", _frames(2), TOPIC, "cam", camera_info=info)
    with BagReader(tmp_path / "b") as reader:
        msgs = [reader.deserialize(t, raw) for t, _, raw in reader.raw_messages(["/cam/camera_info"])]
    assert [m.stamp_ns(x) for x in msgs] == [s for s, _ in _frames(2)]
    got = CameraInfoParams.from_msg(msgs[0])
    assert got == info
    assert got.p == (31.5, 0.0, 19.0, 0.0, 0.0, 30.0, 11.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert camera_info_topic("/cam/image/compressed") == "/cam/camera_info"
    assert camera_info_topic("/image") == "/camera_info"


def test_camera_info_size_mismatch_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"camera_info.*is 40x24 but camera_info is 64x48"):
        write_image_bag(tmp_path / "b", _frames(1), TOPIC, "cam", camera_info=CameraInfoParams.pinhole(64, 48, 1.0))
    assert not (tmp_path / "b").exists(), "a failed write must not leave a partial bag"


def test_row_padding_is_honoured() -> None:
    rgb = _frames(1)[0][1]
    padded = np.zeros((H, W * 3 + 8), np.uint8)
    padded[:, : W * 3] = rgb.reshape(H, -1)
    msg = m.array_to_image(padded, "rgb8", 5, "cam")
    msg.width = W  # step stays W*3+8: the decoder must skip the 8 padding bytes per row
    np.testing.assert_array_equal(m.image_to_rgb(msg), rgb)


def test_single_file_is_readable_without_metadata_dir(tmp_path: Path) -> None:
    write_image_bag(tmp_path / "b", _frames(2), TOPIC, "cam")
    assert len(list(read_image_frames(_data_file(tmp_path / "b")))) == 2


def test_unsupported_write_encoding(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"\[topic /cam/image_raw\]: unsupported encoding 'nv12'"):
        write_image_bag(tmp_path / "b", _frames(1), TOPIC, "cam", encoding="nv12")


def test_bad_frame_is_rejected_by_name(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"frame 1 .*uint8 HxWx3"):
        write_image_bag(tmp_path / "b", [_frames(1)[0], (2, np.zeros((4, 4), np.uint8))], TOPIC, "cam")


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    write_image_bag(tmp_path / "b", _frames(1), TOPIC, "cam")
    with pytest.raises(BagError, match="already exists"):
        write_image_bag(tmp_path / "b", _frames(1), TOPIC, "cam")


def _write_raw_image(path: Path, encoding: str, data: np.ndarray, h: int, w: int, step: int) -> None:
    msg = m.array_to_image(np.zeros((1, 1), np.uint8), "mono8", 7, "cam")
    msg.encoding, msg.height, msg.width, msg.step, msg.data = encoding, h, w, step, data
    with BagWriter(path) as writer:
        writer.write(TOPIC, 7, msg)


@pytest.mark.parametrize("encoding,h,w,step,nbytes,match", [  # the node's checks and messages
    ("nv12", 16, 16, 16, 256, r"unsupported encoding 'nv12'; accepted: .*yuv422"),
    ("16UC1", 16, 16, 32, 512, r"unsupported encoding '16UC1'"),
    ("rgb8", 16, 16, 48, 100, r"data has 100 bytes, step 48 x height 16 needs 768"),
    ("rgb8", 16, 16, 6, 96, r"step 6 < width 16 x 3 bytes = 48"),
    ("rgb8", 0, 16, 48, 0, r"image \(rgb8\) has zero size 16x0"),
    ("yuv422", 16, 17, 34, 544, r"yuv422 image width 17 is odd"),
    ("rgb8", 4, 4, 12, 48, r"image \(rgb8\) 4x4: a side is below 16 px"),
])
def test_undecodable_image_names_file_topic_and_stamp(tmp_path: Path, encoding: str, h: int, w: int,
                                                       step: int, nbytes: int, match: str) -> None:
    _write_raw_image(tmp_path / "b", encoding, np.zeros(nbytes, np.uint8), h, w, step)
    with pytest.raises(BagError, match=rf"b \[topic {TOPIC}\]: frame at 7 ns: {match}"):
        list(read_image_frames(tmp_path / "b"))


def test_corrupt_compressed_frame(tmp_path: Path) -> None:
    msg = m.rgb_to_compressed(_smooth_frames(1)[0][1], 3, "cam", "jpeg")
    msg.data = msg.data[: 40]
    with BagWriter(tmp_path / "b") as writer:
        writer.write("/cam/image/compressed", 3, msg)
    with pytest.raises(BagError, match=r"cannot decode compressed frame \(format 'jpeg', 40 bytes\)"):
        list(read_image_frames(tmp_path / "b"))


def test_missing_topic_lists_what_is_there(tmp_path: Path) -> None:
    write_image_bag(tmp_path / "b", _frames(1), TOPIC, "cam")
    with pytest.raises(BagError, match=r"\[topic /front/image\]: topic not in bag; topics: /cam/image_raw"):
        list(read_image_frames(tmp_path / "b", "/front/image"))


def test_non_image_topic_is_refused(tmp_path: Path) -> None:
    write_image_bag(tmp_path / "b", _frames(1), TOPIC, "cam", camera_info=CameraInfoParams.pinhole(W, H, 9.0))
    with pytest.raises(BagError, match=r"type sensor_msgs/msg/CameraInfo is not one of"):
        list(read_image_frames(tmp_path / "b", "/cam/camera_info"))


def test_ambiguous_image_topic_asks_for_one(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "b") as writer:
        for topic in ("/left/image", "/right/image"):
            writer.write(topic, 1, m.rgb_to_image(_frames(1)[0][1], 1, "cam"))
    with pytest.raises(BagError, match=r"2 image topics \(/left/image, /right/image\); name one with --topic"):
        list(read_image_frames(tmp_path / "b"))
    assert len(list(read_image_frames(tmp_path / "b", "/right/image"))) == 1


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "no_metadata"])
def test_corrupt_bag_is_a_bag_error(tmp_path: Path, storage: str, damage: str) -> None:
    good = tmp_path / "good"
    write_image_bag(good, _frames(8), TOPIC, "cam", storage)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    data = _data_file(bad)
    raw = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        data.write_bytes(np.random.default_rng(1).integers(0, 256, len(raw), dtype=np.uint8).tobytes())
    elif damage == "empty":
        data.write_bytes(b"")
    else:
        (bad / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"^.*bad.*: .+"):
        list(read_image_frames(bad))


def test_not_a_bag_at_all(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such file or directory"):
        bag_info(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match=r"notes.txt: not a readable rosbag2 bag"):
        bag_info(tmp_path / "notes.txt")


def test_corrupt_message_bytes(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "b", "sqlite3") as writer:
        writer.write_raw(TOPIC, m.IMAGE_MSG, 5, b"\x00\x01\x00\x00\xff\xff\xff\x7f")
    with pytest.raises(BagError, match=r"\[topic /cam/image_raw\]: corrupt message"):
        list(read_image_frames(tmp_path / "b"))


def test_writer_removes_partial_bag_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), BagWriter(tmp_path / "b") as writer:
        writer.write(TOPIC, 1, m.rgb_to_image(_frames(1)[0][1], 1, "cam"))
        raise RuntimeError("boom")
    assert not (tmp_path / "b").exists()


def test_one_topic_one_type(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"already written as sensor_msgs/msg/Image"), \
            BagWriter(tmp_path / "b") as writer:
        writer.write(TOPIC, 1, m.rgb_to_image(_frames(1)[0][1], 1, "cam"))
        writer.write(TOPIC, 2, CameraInfoParams.pinhole(W, H, 1.0).to_msg(2, "cam"))


def test_depth_and_labels_keep_their_bits(tmp_path: Path) -> None:
    depth = np.array([[0.5, np.nan], [80.0, 1e-3]], np.float32)
    labels = np.array([[0, 6], [255, 3]], np.uint8)
    with BagWriter(tmp_path / "b") as writer:
        writer.write("/cam/depth", 1, m.array_to_image(depth, m.DEPTH_32FC1, 1, "cam"))
        writer.write("/cam/segmentation", 1, m.array_to_image(labels, m.MONO8, 1, "cam"))
    with BagReader(tmp_path / "b") as reader:
        msgs = {t: reader.deserialize(t, raw) for t, _, raw in reader.raw_messages(["/cam/depth", "/cam/segmentation"])}
    d = msgs["/cam/depth"]
    assert (d.encoding, d.step, d.is_bigendian) == ("32FC1", 8, 0)
    np.testing.assert_array_equal(d.data.view(np.float32).reshape(2, 2), depth)
    s = msgs["/cam/segmentation"]
    assert (s.encoding, s.step) == ("mono8", 2)
    np.testing.assert_array_equal(s.data.reshape(2, 2), labels)
