# SPDX-License-Identifier: Apache-2.0
"""cdr_image: a serialised Image read in place agrees with rclpy's deserialiser, field for
field."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from edgemoe_ros.ros import cdr_image
from edgemoe_ros.ros.cdr_image import ImageView, parse_image, read_image
from edgemoe_ros.ros.conversions import image_to_rgb

FIELDS = ("height", "width", "encoding", "is_bigendian", "step")


def _image(h: int, w: int, encoding: str, channels: int, frame_id: str, seed: int = 0) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=w * channels)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000 + seed, 123_456_789
    msg.header.frame_id = frame_id
    msg.data = (
        np.random.default_rng(seed).integers(0, 256, h * w * channels, dtype=np.uint8).tobytes()
    )
    return msg


def _assert_same(view: ImageView, msg: Image) -> None:
    assert isinstance(view, ImageView)
    assert view.header == msg.header
    for f in FIELDS:
        assert getattr(view, f) == getattr(msg, f), f
    assert bytes(view.data) == bytes(msg.data)


# frame_id lengths 0..5 and encodings of different lengths move every later field across alignments
@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "cam0", "front_camera_optical_frame"])
@pytest.mark.parametrize("encoding,channels", [("rgb8", 3), ("bgra8", 4), ("mono8", 1)])
def test_parse_matches_rclpy_for_every_alignment(frame_id, encoding, channels):
    msg = _image(17, 33, encoding, channels, frame_id)
    raw = serialize_message(msg)
    _assert_same(parse_image(raw), msg)
    _assert_same(parse_image(raw), deserialize_message(raw, Image))


def test_pixels_are_a_view_of_the_received_bytes_not_a_copy():
    raw = serialize_message(_image(48, 64, "bgr8", 3, "cam"))
    view = parse_image(raw)
    assert view.data.obj is raw and view.data.readonly
    rgb = image_to_rgb(view, 10**7)
    ref = image_to_rgb(deserialize_message(raw, Image), 10**7)
    np.testing.assert_array_equal(rgb, ref)


def _big_endian(msg: Image) -> bytes:
    """The same Image written by a big-endian CDR publisher (by hand: rclpy only writes
    little-endian)."""
    out = bytearray(b"\x00\x00\x00\x00")

    def align(n: int) -> None:
        out.extend(b"\x00" * (-(len(out) - 4) % n))

    def u32(v: int, fmt: str = ">I") -> None:
        align(4)
        out.extend(struct.pack(fmt, v))

    def string(s: str) -> None:
        u32(len(s) + 1)
        out.extend(s.encode() + b"\x00")

    u32(msg.header.stamp.sec, ">i")
    u32(msg.header.stamp.nanosec)
    string(msg.header.frame_id)
    u32(msg.height)
    u32(msg.width)
    string(msg.encoding)
    out.append(msg.is_bigendian)
    u32(msg.step)
    u32(len(msg.data))
    out.extend(bytes(msg.data))
    return bytes(out)


def test_big_endian_body_parses_as_rclpy_reads_it():
    msg = _image(16, 20, "rgb8", 3, "cam_be")
    raw = _big_endian(msg)
    _assert_same(parse_image(raw), deserialize_message(raw, Image))
    _assert_same(parse_image(raw), msg)


def test_unknown_representation_or_broken_body_gives_none():
    raw = serialize_message(_image(16, 20, "rgb8", 3, "cam"))
    assert parse_image(b"\x00\x03" + raw[2:]) is None  # PL_CDR_LE: not a layout this reader knows
    assert parse_image(raw[:-1]) is None  # data shorter than its count
    assert parse_image(raw[:30]) is None  # cut inside the header
    assert parse_image(b"") is None
    no_nul = bytearray(raw)
    no_nul[12 + 3] = ord("X")  # frame_id "cam" + NUL starts at byte 12; overwrite the NUL
    assert parse_image(bytes(no_nul)) is None


def test_read_image_falls_back_to_rclpy_and_raises_on_garbage(monkeypatch):
    msg = _image(16, 20, "mono8", 1, "cam")
    raw = serialize_message(msg)
    monkeypatch.setattr(cdr_image, "parse_image", lambda _raw: None)
    fallback = read_image(raw)
    assert isinstance(fallback, Image) and fallback == msg
    with pytest.raises(Exception):  # noqa: B017 - rclpy's deserialiser error types are not public
        read_image(b"\x00\x01\x00\x00\x05")
