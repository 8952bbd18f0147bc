# SPDX-License-Identifier: Apache-2.0
"""sensor_msgs <-> numpy, with the input validation of SPEC §7.

Every malformed input raises :class:`BadInputError` whose ``kind`` (one of :data:`BAD_INPUT_KINDS`)
is what diagnostics count, so each failure mode is visible separately on ``/diagnostics``.

Validation is split in two on purpose: :func:`check_image` / :func:`check_compressed` only read
message metadata and headers (O(1), safe in the DDS callback, so a bad frame is counted even if a
later good one replaces it in the latest-frame-wins queue); :func:`image_to_rgb` /
:func:`compressed_to_rgb` do the pixel work on the worker thread.

Raw images are checked and converted by ``edgemoe_ros.image_encodings`` (no ROS there, so the
bag tools use the same code): rgb8, bgr8, rgba8, bgra8, mono8, YUV 4:2:2, Bayer 8/16 and 16-bit
colour/mono; its names are importable from here too.

Outputs are built from ``ndarray.tobytes()``: assigning an ndarray to ``msg.data`` goes through
rosidl's per-element Python check and costs tens of milliseconds per frame. Messages built only to
be published at once can instead *borrow* the array (``borrow=True``): rosidl's C conversion copies
any buffer-protocol ``data`` straight into the outgoing message, which saves two full-frame copies
(``tobytes`` and the ``array.array`` the setter makes), ~1 ms per frame at 720p.
"""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

# Raw-image decoding lives in the ROS-free image_encodings (shared with the bag tools); its
# names stay importable from here.
from ..image_encodings import (  # noqa: F401
    BAD_INPUT_KINDS,
    BGR8,
    BGRA8,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEPTH_32FC1,
    INPUT_ENCODINGS,
    KIND_BAD_CALIBRATION,
    KIND_CORRUPT_COMPRESSED,
    KIND_EMPTY,
    KIND_ENCODING,
    KIND_NON_FINITE,
    KIND_ODD_SIZE,
    KIND_STEP,
    KIND_TOO_LARGE,
    KIND_TRUNCATED,
    MAX_ASPECT_RATIO,
    MIN_IMAGE_SIDE,
    MONO8,
    RGB8,
    RGBA8,
    SCALE_16_TO_8,
    UYVY,
    YUV422,
    YUV422_YUY2,
    YUYV,
    BadInputError,
    InputEncoding,
    check_dims,
    check_image,
    image_to_rgb,
)
from ..model.canonical_camera import IntrinsicsError, camera_matrix
from ..postprocess import FitInfo, scale_camera_info_params

#: Output encodings -> (channels, numpy dtype).
OUTPUT_ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    MONO8: (1, np.dtype(np.uint8)),
    RGB8: (3, np.dtype(np.uint8)),
    DEPTH_32FC1: (1, np.dtype(np.float32)),
}

#: Compressed codecs we decode, recognised by their magic bytes (the format string is only a hint).
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"


def _compressed_dims(data: bytes) -> tuple[str, int, int]:
    """Codec and (width, height) from the JPEG SOF / PNG IHDR header, without decoding pixels.

    Reading the header first lets a decompression bomb be rejected before it allocates anything.
    """
    if data.startswith(PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadInputError(KIND_CORRUPT_COMPRESSED, "PNG without a valid IHDR chunk")
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(JPEG_MAGIC):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise BadInputError(KIND_CORRUPT_COMPRESSED, f"JPEG marker expected at byte {i}")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            seg_len = int.from_bytes(data[i + 2:i + 4], "big")
            # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC) carry the frame size.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if i + 9 > len(data):
                    break
                width = int.from_bytes(data[i + 7:i + 9], "big")
                return "jpeg", width, int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + seg_len
        raise BadInputError(KIND_CORRUPT_COMPRESSED, "JPEG without a frame header (SOF)")
    raise BadInputError(KIND_CORRUPT_COMPRESSED, "data is neither JPEG nor PNG (bad magic bytes)")


def compressed_codec(fmt: str) -> str | None:
    """The codec a CompressedImage ``format`` names ('jpeg'/'png'), or None if unsupported.

    image_transport writes e.g. ``"bgr8; jpeg compressed bgr8"``; plain ``"jpeg"``/``"png"`` too.
    """
    f = fmt.lower()
    if "compresseddepth" in f:
        return None
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    if "png" in f:
        return "png"
    return None


def check_compressed(msg: CompressedImage, max_pixels: int) -> None:
    """Header-only validation of a compressed image (format, magic, size, completeness)."""
    codec = compressed_codec(msg.format)
    if codec is None:
        raise BadInputError(KIND_ENCODING, f"unsupported compressed format {msg.format!r}; "
                                           "accepted: jpeg, png")
    data = bytes(msg.data)
    if not data:
        raise BadInputError(KIND_TRUNCATED, "compressed image has no data")
    found, w, h = _compressed_dims(data)
    if found != codec:
        raise BadInputError(KIND_CORRUPT_COMPRESSED, f"format says {codec} but data is {found}")
    check_dims(f"compressed {codec} image", w, h, max_pixels)
    tail = data.rstrip(b"\x00")  # some encoders pad; the end marker must still be there
    if codec == "jpeg" and not tail.endswith(JPEG_EOI):
        raise BadInputError(KIND_TRUNCATED, "JPEG data ends without an EOI marker")
    if codec == "png" and not tail.endswith(PNG_IEND):
        raise BadInputError(KIND_TRUNCATED, "PNG data ends without an IEND chunk")


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """A validated JPEG/PNG as a contiguous (H, W, 3) uint8 RGB array."""
    check_compressed(msg, max_pixels)
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise BadInputError(KIND_CORRUPT_COMPRESSED, f"cannot decode {msg.format!r} data "
                                                     f"({buf.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def check_camera_info(msg: CameraInfo, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Calibration values must be finite (a NaN K or P would poison every downstream projection),
    K either all zeros (an uncalibrated camera) or with positive focal lengths, since the engine's
    metric depth is scaled by them, and its size a camera's: 0x0 ("same as the image") or within
    the limits images have."""
    for name in ("k", "p", "r", "d"):
        values = getattr(msg, name)
        if not all(math.isfinite(v) for v in values):
            raise BadInputError(KIND_NON_FINITE, f"camera_info.{name} contains NaN or Inf")
    try:
        camera_matrix(msg.k)
    except IntrinsicsError as exc:
        raise BadInputError(KIND_BAD_CALIBRATION, f"camera_info.k: {exc}") from None
    w, h = int(msg.width), int(msg.height)
    if (w, h) != (0, 0):
        if w == 0 or h == 0:
            raise BadInputError(KIND_ODD_SIZE, f"camera_info size {w}x{h}: one side is 0")
        check_dims("camera_info", w, h, max_pixels)


#: How far the calibration's aspect ratio may differ from the image's and still be scaled onto
#: it (binning and resizing keep the aspect; rounding of odd sizes moves it by < 1 %).
CALIBRATION_ASPECT_TOLERANCE = 0.01


def calibration_fits(info: CameraInfo, image_h: int, image_w: int) -> bool:
    """Whether ``info`` can describe an ``image_w x image_h`` image: the same size, 0x0, or a
    uniform scale of it (binning). A camera that changed resolution with another aspect (a new
    mode, another sensor crop) needs a new calibration, not a stretched old one."""
    w, h = int(info.width), int(info.height)
    if (w, h) in ((0, 0), (image_w, image_h)):
        return True
    return abs((w / h) / (image_w / image_h) - 1.0) <= CALIBRATION_ASPECT_TOLERANCE


def copy_header(header: Header) -> Header:
    """A fresh header with the input's stamp and frame_id (outputs never alias the input)."""
    out = Header()
    out.stamp.sec = header.stamp.sec
    out.stamp.nanosec = header.stamp.nanosec
    out.frame_id = header.frame_id
    return out


#: rosidl's generated Image keeps ``data`` in the ``_data`` slot; borrowing needs that layout.
_CAN_BORROW = "_data" in getattr(Image, "__slots__", ())


def array_to_image(arr: np.ndarray, encoding: str, header: Header, *,
                   borrow: bool = False) -> Image:
    """An output Image whose width/height/step always match its data (SPEC §7).

    ``borrow=True``: ``msg.data`` is a flat view of ``arr`` (no copy), for a message handed to
    ``publish`` right away, which copies it once into the middleware's message. Do not keep such a
    message, compare it, or change ``arr`` before it is published.
    """
    try:
        channels, dtype = OUTPUT_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"output encoding {encoding!r} not one of "
                         f"{', '.join(OUTPUT_ENCODINGS)}") from None
    want_ndim = 2 if channels == 1 else 3
    if arr.dtype != dtype or arr.ndim != want_ndim or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(f"array {arr.dtype} {arr.shape} does not match encoding {encoding} "
                         f"({channels} x {dtype})")
    h, w = arr.shape[:2]
    msg = Image()
    msg.header = copy_header(header)
    msg.height, msg.width = int(h), int(w)
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = int(w * channels * dtype.itemsize)
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    if borrow and _CAN_BORROW:
        msg._data = flat  # noqa: SLF001 - bypasses the copying setter; see the module docstring
    else:
        msg.data = flat.tobytes()
    return msg


def camera_info_for_output(info: CameraInfo, header: Header, image_h: int, image_w: int,
                           fit: FitInfo | None) -> CameraInfo:
    """The CameraInfo relayed with an output: header copied from the image, intrinsics scaled.

    ``fit`` None: outputs are at the image resolution; a calibration made at another resolution
    (binning upstream) is still rescaled to the image, so width/height always match the output.
    Otherwise ``fit`` maps the image to the model resolution (crop offset and scale).
    """
    if fit is None:
        fit = FitInfo("stretch", image_h, image_w, image_h, image_w, 0, 0, image_w, image_h)
    k, p, w, h = scale_camera_info_params(np.asarray(info.k), np.asarray(info.p), int(info.width),
                                          int(info.height), fit)
    out = CameraInfo()
    out.header = copy_header(header)
    out.width, out.height = int(w), int(h)
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = list(info.r)
    out.k = k.ravel().tolist()
    out.p = p.ravel().tolist()
    return out


#: Codecs of the optional compressed colour output (``color_compression`` parameter).
OUTPUT_CODECS = ("png", "jpeg")
#: image_transport compressed plugin's default JPEG quality (0..100).
JPEG_QUALITY = 95
#: PNG zlib settings for palette images (large flat regions): run-length matching makes them
#: smaller than the default strategy (8 vs 18 kB at 720p) and no slower; with it the level changes
#: neither size nor time, so the fastest (docs/ros_conventions.md has the measurement).
PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 1,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


def rgb_to_compressed(rgb: np.ndarray, codec: str, header: Header) -> CompressedImage:
    """An rgb8 image as image_transport's compressed plugin publishes it: the pixels encoded
    from BGR, ``format`` = ``"rgb8; <codec> compressed bgr8"``, the header copied."""
    if codec not in OUTPUT_CODECS:
        raise ValueError(f"output codec {codec!r} not one of {', '.join(OUTPUT_CODECS)}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"array {rgb.dtype} {rgb.shape} is not an rgb8 image")
    params = list(PNG_PARAMS) if codec == "png" else [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ok, data = cv2.imencode(f".{codec}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cv2.imencode could not encode a {rgb.shape} image as {codec}")
    msg = CompressedImage()
    msg.header = copy_header(header)
    msg.format = f"{RGB8}; {codec} compressed {BGR8}"
    msg.data = data.tobytes()
    return msg
