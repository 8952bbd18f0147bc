# SPDX-License-Identifier: Apache-2.0
"""Image/CompressedImage <-> numpy: every accepted encoding round-trips and every bad input kind
of SPEC §7 is rejected with its own ``kind``."""

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from edgemoe_ros.ros import conversions as conv
from edgemoe_ros.ros.conversions import BadInputError

MAX_PX = 4096 * 4096


def _rgb(h=24, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _image(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


def _compressed(rgb: np.ndarray, ext: str = ".jpg", fmt: str = "jpeg") -> CompressedImage:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=fmt)
    msg.data = buf.tobytes()
    return msg


def _kind(fn, *args):
    with pytest.raises(BadInputError) as err:
        fn(*args)
    return err.value.kind


# ----- accepted encodings -----
@pytest.mark.parametrize("encoding,make", [
    ("rgb8", lambda rgb: rgb),
    ("bgr8", lambda rgb: rgb[..., ::-1]),
    ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
    ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_color_encodings_decode_to_rgb(encoding, make, pad):
    rgb = _rgb()
    out = conv.image_to_rgb(_image(np.ascontiguousarray(make(rgb)), encoding, pad), MAX_PX)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_replicates_to_three_channels():
    gray = _rgb()[..., 0].copy()
    out = conv.image_to_rgb(_image(gray, "mono8", pad=3), MAX_PX)
    assert out.shape == gray.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_png_decodes_losslessly_and_jpeg_approximately():
    rgb = _rgb(32, 48)
    np.testing.assert_array_equal(
        conv.compressed_to_rgb(_compressed(rgb, ".png", "png"), MAX_PX), rgb
    )
    smooth = np.tile(np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None], (32, 1, 3))
    out = conv.compressed_to_rgb(_compressed(smooth, ".jpg", "bgr8; jpeg compressed bgr8"), MAX_PX)
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3


# ----- one test per bad input kind -----
def test_unsupported_encoding():
    msg = _image(_rgb(), "rgb8")
    msg.encoding = "nv12"
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_ENCODING
    msg.encoding = "32FC1"
    assert _kind(conv.check_image, msg, MAX_PX) == conv.KIND_ENCODING


def test_zero_size():
    msg = Image(height=0, width=640, encoding="rgb8", step=1920)
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_EMPTY
    msg = Image(height=10, width=0, encoding="rgb8", step=0)
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_EMPTY


@pytest.mark.parametrize("h,w", [(1, 640), (8, 8), (16, 600)])
def test_odd_sizes(h, w):
    msg = _image(_rgb(h, w), "rgb8")
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_ODD_SIZE


def test_step_smaller_than_row():
    msg = _image(_rgb(), "rgb8")
    msg.step = msg.width * 3 - 1
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_STEP


def test_data_longer_than_step_times_height():
    msg = _image(_rgb(), "rgb8")
    msg.data = bytes(msg.data) + b"\x00" * 17
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_STEP


def test_truncated_data():
    msg = _image(_rgb(), "bgr8")
    msg.data = bytes(msg.data)[:-1]
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_TRUNCATED


def test_huge_image_rejected_before_touching_data():
    msg = Image(height=100000, width=100000, encoding="rgb8", step=300000)  # no data at all
    assert _kind(conv.image_to_rgb, msg, MAX_PX) == conv.KIND_TOO_LARGE
    small_limit = _image(_rgb(32, 32), "rgb8")
    assert _kind(conv.image_to_rgb, small_limit, 32 * 32 - 1) == conv.KIND_TOO_LARGE


def test_non_finite_camera_info():
    info = CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    conv.check_camera_info(info)
    info.k[0] = float("nan")
    assert _kind(conv.check_camera_info, info) == conv.KIND_NON_FINITE
    info.k[0] = 500.0
    info.p[3] = float("inf")
    assert _kind(conv.check_camera_info, info) == conv.KIND_NON_FINITE


def test_degenerate_camera_info_k():
    info = CameraInfo(width=640, height=480)
    conv.check_camera_info(info)  # all-zero K: an uncalibrated camera is not bad input
    info.k = [-500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    assert _kind(conv.check_camera_info, info) == conv.KIND_BAD_CALIBRATION
    info.k = [500.0, 0.0, 320.0, 0.0, 0.0, 240.0, 0.0, 0.0, 1.0]
    assert _kind(conv.check_camera_info, info) == conv.KIND_BAD_CALIBRATION


def test_camera_k_for_the_engine_from_camera_info():
    """The node hands the engine the camera_info K at the image's own size (binning undone)."""
    from edgemoe_ros.postprocess import camera_k_from_info

    assert camera_k_from_info(None, 480, 640) is None
    info = CameraInfo(width=640, height=480)
    assert camera_k_from_info(info, 480, 640) is None  # uncalibrated
    info.k = [500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0]
    np.testing.assert_allclose(camera_k_from_info(info, 480, 640), np.reshape(info.k, (3, 3)))
    half = camera_k_from_info(info, 240, 320)  # calibrated at 640x480, images binned 2x2
    np.testing.assert_allclose(half[[0, 1], [0, 1]], [250.0, 255.0])
    np.testing.assert_allclose(half[:2, 2], [159.5, 119.5])
    info.width = info.height = 0  # "same as the image"
    np.testing.assert_allclose(camera_k_from_info(info, 240, 320)[0, 0], 500.0)


def test_corrupt_compressed():
    msg = _compressed(_rgb(32, 48))
    data = bytearray(msg.data)
    data[2:40] = b"\x00" * 38  # markers destroyed, EOI intact
    msg.data = bytes(data)
    assert _kind(conv.compressed_to_rgb, msg, MAX_PX) == conv.KIND_CORRUPT_COMPRESSED
    garbage = CompressedImage(format="jpeg")
    garbage.data = b"this is not an image at all"
    assert _kind(conv.compressed_to_rgb, garbage, MAX_PX) == conv.KIND_CORRUPT_COMPRESSED
    mislabelled = _compressed(_rgb(32, 48), ".png", "jpeg")
    assert _kind(conv.compressed_to_rgb, mislabelled, MAX_PX) == conv.KIND_CORRUPT_COMPRESSED


def test_corrupt_compressed_payload_after_valid_header():
    msg = _compressed(_rgb(32, 48), ".png", "png")
    data = bytearray(msg.data)
    data[40:-12] = b"\xff" * (len(data) - 52)  # IDAT garbage, IHDR and IEND intact
    msg.data = bytes(data)
    assert _kind(conv.compressed_to_rgb, msg, MAX_PX) == conv.KIND_CORRUPT_COMPRESSED


def test_truncated_compressed():
    msg = _compressed(_rgb(32, 48))
    msg.data = bytes(msg.data)[: len(msg.data) // 2]
    assert _kind(conv.compressed_to_rgb, msg, MAX_PX) == conv.KIND_TRUNCATED
    empty = CompressedImage(format="png")
    assert _kind(conv.compressed_to_rgb, empty, MAX_PX) == conv.KIND_TRUNCATED


def test_unsupported_compressed_format():
    msg = _compressed(_rgb(32, 48))
    msg.format = "16UC1; compressedDepth"
    assert _kind(conv.compressed_to_rgb, msg, MAX_PX) == conv.KIND_ENCODING
    msg.format = "tiff"
    assert _kind(conv.compressed_to_rgb, msg, MAX_PX) == conv.KIND_ENCODING


def test_huge_compressed_rejected_from_header():
    msg = _compressed(_rgb(64, 64), ".png", "png")
    assert _kind(conv.compressed_to_rgb, msg, 64 * 64 - 1) == conv.KIND_TOO_LARGE
    jpg = _compressed(_rgb(64, 48))
    assert _kind(conv.check_compressed, jpg, 64 * 48 - 1) == conv.KIND_TOO_LARGE


def test_every_kind_has_a_test():
    tested = {
        "encoding",
        "empty",
        "odd_size",
        "step_mismatch",
        "truncated",
        "too_large",
        "non_finite",
        "corrupt_compressed",
        "bad_calibration",
    }
    assert set(conv.BAD_INPUT_KINDS) == tested


# ----- outputs -----
@pytest.mark.parametrize("encoding,arr", [
    ("mono8", np.arange(30 * 50, dtype=np.uint8).reshape(30, 50)),
    ("rgb8", _rgb(30, 50)),
    ("32FC1", np.linspace(0.5, 80, 30 * 50, dtype=np.float32).reshape(30, 50)),
])
def test_array_to_image_sizes_match_data_and_header_is_copied(encoding, arr):
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.array_to_image(arr, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (30, 50, encoding)
    assert msg.step * msg.height == len(msg.data)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        12,
        345,
        "cam",
    )
    assert msg.header is not header
    back = np.frombuffer(msg.data, dtype=arr.dtype).reshape(arr.shape)
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("encoding, arr", [
    ("mono8", np.arange(30 * 50, dtype=np.uint8).reshape(30, 50)),
    ("rgb8", (np.arange(30 * 50 * 3) % 251).astype(np.uint8).reshape(30, 50, 3)),
    ("32FC1", np.linspace(0.5, 80.0, 30 * 50, dtype=np.float32).reshape(30, 50)),
])
def test_borrowed_image_serialises_to_the_same_bytes_as_a_copied_one(encoding, arr):
    """borrow=True skips two copies; what goes on the wire must carry the same message, no view
    left behind.

    Compared field by field after a round trip, not as raw CDR: Fast CDR leaves alignment padding
    uninitialised, so two serialisations of one message can differ in those bytes.
    """
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 7, 11
    copied = deserialize_message(
        serialize_message(conv.array_to_image(arr, encoding, header)), Image
    )
    source = arr.copy()
    wire = serialize_message(conv.array_to_image(source, encoding, header, borrow=True))
    source[...] = 0  # the published bytes were copied out during serialisation
    back = deserialize_message(wire, Image)
    np.testing.assert_array_equal(
        np.frombuffer(back.data, dtype=arr.dtype).reshape(arr.shape), arr
    )
    assert bytes(back.data) == bytes(copied.data)
    fields = ("height", "width", "step", "encoding", "is_bigendian")
    assert [getattr(back, f) for f in fields] == [getattr(copied, f) for f in fields]
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.header.frame_id) == (
        7,
        11,
        "cam",
    )


def test_borrowed_image_of_a_strided_array_is_made_contiguous():
    arr = (np.arange(40 * 60) % 256).astype(np.uint8).reshape(40, 60)[::2, ::3]
    msg = conv.array_to_image(arr, "mono8", Header(), borrow=True)
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(np.frombuffer(back.data, np.uint8).reshape(arr.shape), arr)
    assert msg.step == arr.shape[1]


def test_array_to_image_rejects_mismatched_array():
    with pytest.raises(ValueError, match="32FC1"):
        conv.array_to_image(np.zeros((4, 4), np.float64), "32FC1", Header())
    with pytest.raises(ValueError, match="rgb8"):
        conv.array_to_image(np.zeros((4, 4), np.uint8), "rgb8", Header())


# ----- camera_info relay -----
def _info(w, h, f=200.0):
    info = CameraInfo(width=w, height=h, distortion_model="plumb_bob")
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    info.k = [f, 0.0, (w - 1) / 2, 0.0, f, (h - 1) / 2, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, (w - 1) / 2, 0.0, 0.0, f, (h - 1) / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_camera_info_relay_at_input_resolution_keeps_calibration_and_copies_header():
    header = Header(frame_id="cam")
    header.stamp.sec = 42
    info = _info(640, 480)
    out = conv.camera_info_for_output(info, header, 480, 640, None)
    assert (out.width, out.height, out.header.frame_id, out.header.stamp.sec) == (
        640,
        480,
        "cam",
        42,
    )
    np.testing.assert_allclose(out.k, info.k)
    np.testing.assert_allclose(out.d, info.d)
    assert out.distortion_model == "plumb_bob"


def test_camera_info_relay_rescales_a_calibration_made_at_another_resolution():
    info = _info(1280, 960, f=400.0)  # calibrated at full res, images arrive 2x binned
    out = conv.camera_info_for_output(info, Header(), 480, 640, None)
    assert (out.width, out.height) == (640, 480)
    assert out.k[0] == pytest.approx(200.0) and out.k[2] == pytest.approx((640 - 1) / 2)


def test_camera_info_relay_to_model_resolution_with_crop():
    from edgemoe_ros.model.config import tiny_config
    from edgemoe_ros.postprocess import compute_fit

    cfg = tiny_config()  # 32 x 64 model input
    fit = compute_fit(480, 640, cfg, "crop")  # 640x320 centre crop, then /10
    out = conv.camera_info_for_output(_info(640, 480), Header(), 480, 640, fit)
    assert (out.width, out.height) == (cfg.img_w, cfg.img_h)
    assert out.k[0] == pytest.approx(20.0) and out.k[4] == pytest.approx(20.0)
    assert out.k[2] == pytest.approx((cfg.img_w - 1) / 2) and out.k[5] == pytest.approx(
        (cfg.img_h - 1) / 2
    )
    assert out.p[0] == pytest.approx(20.0) and out.p[10] == 1.0
