# SPDX-License-Identifier: Apache-2.0
"""Camera encodings beyond rgb/bgr/mono8 (YUV 4:2:2, Bayer, 16-bit), each checked with a pattern
whose RGB is known independently of OpenCV: a debayered flat colour stays that colour, YUV made
from known RGB with the BT.601 formulas comes back within rounding, 16-bit samples scale to 8 bits.
Unknown encodings are still refused (SPEC §7)."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from edgemoe_ros.ros import conversions as conv
from edgemoe_ros.ros.cdr_image import ImageView, parse_image
from edgemoe_ros.ros.conversions import BadInputError

MAX_PX = 4096 * 4096
H, W = 24, 32
#: A colour with R, G and B all different, so any swapped Bayer phase or channel order shows.
FLAT = (200, 100, 50)
#: Bayer pattern -> colour index (0 R, 1 G, 2 B) of its 2x2 block, row-major.
BAYER = {"rggb": (0, 1, 1, 2), "bggr": (2, 1, 1, 0), "gbrg": (1, 2, 0, 1), "grbg": (1, 0, 2, 1)}


def _message(samples: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """An Image from (H, W[, C]) samples, rows padded by ``pad`` bytes, in the given byte order."""
    h, w = samples.shape[:2]
    if samples.dtype == np.uint16:
        samples = samples.astype(">u2" if big_endian else "<u2")
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1],
                is_bigendian=int(big_endian))
    msg.data = rows.tobytes()
    return msg


def _zero_copy(msg: Image) -> ImageView:
    view = parse_image(serialize_message(msg))
    assert isinstance(view, ImageView)
    return view


def _bayer(pattern: str, colour: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    block = np.array([colour[i] for i in BAYER[pattern]], dtype=dtype).reshape(2, 2)
    return np.tile(block, (H // 2, W // 2))


# ----- Bayer -----
@pytest.mark.parametrize("pattern", sorted(BAYER))
@pytest.mark.parametrize("pad", [0, 6])
def test_bayer8_flat_colour_stays_that_colour(pattern, pad):
    msg = _message(_bayer(pattern, FLAT), f"bayer_{pattern}8", pad)
    for m in (msg, _zero_copy(msg)):
        out = conv.image_to_rgb(m, MAX_PX)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8
        assert (out == np.array(FLAT, np.uint8)).all(), np.unique(out.reshape(-1, 3), axis=0)


@pytest.mark.parametrize("pattern", sorted(BAYER))
@pytest.mark.parametrize("big_endian", [False, True])
def test_bayer16_flat_colour_scales_to_8_bits(pattern, big_endian):
    colour16 = tuple(257 * c for c in FLAT)  # 257 * x is x in 16-bit full scale
    msg = _message(_bayer(pattern, colour16, np.uint16), f"bayer_{pattern}16", 2, big_endian)
    out = conv.image_to_rgb(_zero_copy(msg), MAX_PX)
    assert (out == np.array(FLAT, np.uint8)).all()


# ----- YUV 4:2:2 -----
def _bt601_limited(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V of ITU-R BT.601 in limited range (Y 16..235, chroma 16..240)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 219 / 255 * (0.299 * r + 0.587 * g + 0.114 * b)
    u = 128 + 224 / 255 * (-0.168736 * r - 0.331264 * g + 0.5 * b)
    v = 128 + 224 / 255 * (0.5 * r - 0.418688 * g - 0.081312 * b)
    return tuple(np.clip(np.rint(a), 0, 255).astype(np.uint8) for a in (y, u, v))


def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 of an image whose pixel pairs share a colour (so subsampling loses nothing)."""
    y, u, v = _bt601_limited(rgb)
    y0, y1, u, v = y[:, 0::2], y[:, 1::2], u[:, 0::2], v[:, 0::2]
    quads = {"uyvy": (u, y0, v, y1), "yuyv": (y0, u, y1, v)}[order]
    return np.stack(quads, axis=-1).reshape(rgb.shape[0], rgb.shape[1], 2)


def _pairs_rgb(seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W // 2, 3), dtype=np.uint8)
    rgb[0, :4] = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    return np.repeat(rgb, 2, axis=1)


@pytest.mark.parametrize("encoding,order", [("uyvy", "uyvy"), ("yuv422", "uyvy"),
                                            ("yuyv", "yuyv"), ("yuv422_yuy2", "yuyv")])
@pytest.mark.parametrize("pad", [0, 4])
def test_yuv422_of_known_rgb_comes_back(encoding, order, pad):
    rgb = _pairs_rgb()
    msg = _message(_yuv422(rgb, order), encoding, pad)
    for m in (msg, _zero_copy(msg)):
        out = conv.image_to_rgb(m, MAX_PX)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        # Rounding Y, U and V to bytes moves a channel by at most ~2 levels.
        assert np.abs(out.astype(int) - rgb).max() <= 2


def test_yuv422_wrong_byte_order_is_far_off():
    # The two 4:2:2 orders must not be interchangeable, or the test above proves nothing.
    rgb = _pairs_rgb()
    out = conv.image_to_rgb(_message(_yuv422(rgb, "uyvy"), "yuyv"), MAX_PX)
    assert np.abs(out.astype(int) - rgb).mean() > 20


def test_yuv422_odd_width_refused():
    msg = _message(np.zeros((H, W - 1, 2), np.uint8), "yuv422")
    with pytest.raises(BadInputError, match="width 31 is odd") as err:
        conv.check_image(msg, MAX_PX)
    assert err.value.kind == conv.KIND_ODD_SIZE


# ----- 16-bit colour and mono -----
@pytest.mark.parametrize("encoding,make", [
    ("rgb16", lambda rgb: rgb),
    ("bgr16", lambda rgb: rgb[..., ::-1]),
    ("rgba16", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, rgb.dtype)])),
    ("bgra16", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, rgb.dtype)])),
])
@pytest.mark.parametrize("big_endian", [False, True])
def test_16bit_colour_scales_to_8_bits(encoding, make, big_endian):
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    samples = np.ascontiguousarray(make(rgb.astype(np.uint16) * 257))
    msg = _message(samples, encoding, 2, big_endian)
    for m in (msg, _zero_copy(msg)):
        np.testing.assert_array_equal(conv.image_to_rgb(m, MAX_PX), rgb)


def test_mono16_rounds_full_scale_onto_8_bits():
    levels = np.array([0, 128, 257, 32767, 32768, 65535], np.uint16)
    samples = np.tile(levels, (H, W // len(levels) + 1))[:, :W]
    out = conv.image_to_rgb(_message(samples, "mono16", 4, big_endian=True), MAX_PX)
    want = np.rint(samples / 65535 * 255).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], want)


# ----- still refused -----
@pytest.mark.parametrize("encoding", ["nv12", "32FC1", "16UC1", "8UC3", "RGB8", "bayer_rggb"])
def test_unknown_encodings_still_refused(encoding):
    msg = _message(np.zeros((H, W, 3), np.uint8), "rgb8")
    msg.encoding = encoding
    with pytest.raises(BadInputError, match=f"unsupported encoding '{encoding}'.*accepted: .*"
                                            "bayer_rggb8") as err:
        conv.image_to_rgb(msg, MAX_PX)
    assert err.value.kind == conv.KIND_ENCODING


@pytest.mark.parametrize("encoding,bpp", [("mono16", 2), ("uyvy", 2), ("bayer_gbrg16", 2),
                                          ("rgba16", 8)])
def test_step_checked_in_bytes_of_the_encoding(encoding, bpp):
    msg = Image(height=H, width=W, encoding=encoding, step=W * bpp - 1)
    msg.data = bytes(msg.step * H)
    with pytest.raises(BadInputError, match=f"x {bpp} bytes") as err:
        conv.check_image(msg, MAX_PX)
    assert err.value.kind == conv.KIND_STEP


# ----- through the node -----
@pytest.mark.ros
def test_node_segments_yuv_bayer_and_16bit_frames():
    from ros_testing import NodeHarness

    frames = {
        "yuv422": _message(_yuv422(_pairs_rgb(), "uyvy"), "yuv422"),
        "bayer_rggb8": _message(_bayer("rggb", FLAT), "bayer_rggb8", 2),
        "mono16": _message(np.full((H, W), 40000, np.uint16), "mono16", big_endian=True),
    }
    h = NodeHarness()
    try:
        seg = h.client.collect("segmentation/image", Image)
        pub = h.client.publisher("image", Image)
        h.client.wait_for_subscribers(pub)
        h.client.wait_for_matched(seg)
        for sec, (encoding, msg) in enumerate(frames.items(), start=1):
            msg.header.stamp.sec = sec
            pub.publish(msg)
            out = seg.wait_for(lambda m, s=sec: m.header.stamp.sec == s)
            assert (out.height, out.width) == (H, W), (encoding, h.failure_context())
    finally:
        h.close()
