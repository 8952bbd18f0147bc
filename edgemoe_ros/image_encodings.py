# SPDX-License-Identifier: Apache-2.0
"""Raw camera images (``sensor_msgs/Image``) to RGB8, with the input validation of SPEC §7.

One implementation for the node (``ros.conversions``, on rclpy messages and zero-copy
:class:`~edgemoe_ros.ros.cdr_image.ImageView` frames) and the bag tools (``bag.messages``, on
``rosbags`` messages), so ``edgemoe-bag process`` accepts, refuses and converts exactly what the
node does. Nothing here imports ROS: a message is anything with the Image fields (``encoding``,
``width``, ``height``, ``step``, ``is_bigendian`` and a buffer ``data``).

Every malformed input raises :class:`BadInputError` whose ``kind`` (one of
:data:`BAD_INPUT_KINDS`) is what diagnostics count, so each failure mode is visible separately.

Input encodings (REP-118 names): rgb8 (no conversion, a view when rows are unpadded), bgr8, rgba8,
bgra8 and mono8, plus what automotive cameras publish: YUV 4:2:2 (``uyvy``/``yuv422``,
``yuyv``/``yuv422_yuy2``), raw Bayer (``bayer_{rggb,bggr,gbrg,grbg}{8,16}``) and 16-bit colour/mono
(``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16``). These are converted with
``cv2.cvtColor`` directly, with the same colour codes and 16->8 bit scaling (x 255/65535) as
cv_bridge's C++ ``cvtColor``, rather than through the ``cv_bridge`` Python package: the frame may
be a zero-copy view with padded rows, and the ``cv_bridge`` wheel on PyPI (what a pip install
gets) ignores ``step``, has no yuv422_yuy2 and misnames bayer_grbg, so going through it would give
different pixels on a pip install than on a rosdep one. YUV is ITU-R BT.601 limited range
(OpenCV's convention, as cv_bridge); Bayer is demosaiced bilinearly.

:func:`encode_rgb` is the other direction, for synthetic camera bags and tests: an RGB frame as
a camera with that encoding would deliver it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# ----- encodings (REP-118 / sensor_msgs/image_encodings names) -----
RGB8 = "rgb8"
BGR8 = "bgr8"
RGBA8 = "rgba8"
BGRA8 = "bgra8"
MONO8 = "mono8"
DEPTH_32FC1 = "32FC1"

UYVY = "uyvy"
YUV422 = "yuv422"  # the older name of uyvy
YUYV = "yuyv"
YUV422_YUY2 = "yuv422_yuy2"  # the older name of yuyv


@dataclass(frozen=True)
class InputEncoding:
    """How one input encoding is laid out and turned into RGB8.

    ``channels`` x ``itemsize`` bytes per pixel (a YUV 4:2:2 pixel is 2 one-byte channels);
    ``to_rgb``: the ``cv2.cvtColor`` code to RGB, None if the channels already are RGB;
    ``even_width``: 4:2:2 macropixels cover two pixels, so the width must be even.
    """

    channels: int
    itemsize: int
    to_rgb: int | None
    even_width: bool = False

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.itemsize


def _color_encodings(bits: int) -> dict[str, InputEncoding]:
    """rgb/bgr/rgba/bgra/mono at 8 or 16 bits per channel."""
    size = bits // 8
    return {
        f"rgb{bits}": InputEncoding(3, size, None),
        f"bgr{bits}": InputEncoding(3, size, cv2.COLOR_BGR2RGB),
        f"rgba{bits}": InputEncoding(4, size, cv2.COLOR_RGBA2RGB),
        f"bgra{bits}": InputEncoding(4, size, cv2.COLOR_BGRA2RGB),
        f"mono{bits}": InputEncoding(1, size, cv2.COLOR_GRAY2RGB),
    }


#: OpenCV names a Bayer pattern by the 2x2 block at (1, 1), ROS by the one at (0, 0).
_BAYER_CODES = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}

#: Accepted input encodings and how each is converted (see the module docstring).
INPUT_ENCODINGS: dict[str, InputEncoding] = {
    **_color_encodings(8),
    **_color_encodings(16),
    UYVY: InputEncoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    YUV422: InputEncoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    YUYV: InputEncoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),
    YUV422_YUY2: InputEncoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),
    **{f"bayer_{pattern}{bits}": InputEncoding(1, bits // 8, code)
       for pattern, code in _BAYER_CODES.items() for bits in (8, 16)},
}
#: 16-bit samples are scaled to 8 bits the way cv_bridge does (full range onto full range).
SCALE_16_TO_8 = 255.0 / 65535.0

#: 4096 x 4096: above any automotive camera in use, below what a 16 GiB host decodes comfortably
#: (the node's ``max_image_pixels`` default).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
#: Smallest accepted image side. Below one ViT patch (16 px) a camera frame carries no usable
#: content, and a centre crop to the model's 1:2 aspect of a smaller side degenerates to 0 rows.
MIN_IMAGE_SIDE = 16
#: Largest accepted width:height (or height:width) ratio; beyond it the frame is not a camera
#: image (a mis-set width/height pair is the usual cause) and a centre crop would keep < 1/16
#: of it.
MAX_ASPECT_RATIO = 16.0

# ----- bad input kinds (diagnostics keys) -----
KIND_ENCODING = "encoding"
KIND_EMPTY = "empty"
KIND_ODD_SIZE = "odd_size"
KIND_STEP = "step_mismatch"
KIND_TRUNCATED = "truncated"
KIND_TOO_LARGE = "too_large"
KIND_NON_FINITE = "non_finite"
KIND_CORRUPT_COMPRESSED = "corrupt_compressed"
#: A camera_info whose K cannot be a camera (a focal length <= 0); all zeros is "uncalibrated",
#: which is fine.
KIND_BAD_CALIBRATION = "bad_calibration"
BAD_INPUT_KINDS: tuple[str, ...] = (
    KIND_ENCODING, KIND_EMPTY, KIND_ODD_SIZE, KIND_STEP, KIND_TRUNCATED, KIND_TOO_LARGE,
    KIND_NON_FINITE, KIND_CORRUPT_COMPRESSED, KIND_BAD_CALIBRATION,
)


class BadInputError(ValueError):
    """A message that cannot be used. ``kind`` is a :data:`BAD_INPUT_KINDS` entry."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in BAD_INPUT_KINDS:
            raise ValueError(f"unknown bad-input kind {kind!r}")
        super().__init__(message)
        self.kind = kind


def check_dims(what: str, width: int, height: int, max_pixels: int) -> None:
    if width == 0 or height == 0:
        raise BadInputError(KIND_EMPTY, f"{what} has zero size {width}x{height}")
    if width * height > max_pixels:
        raise BadInputError(KIND_TOO_LARGE, f"{what} {width}x{height} = {width * height} pixels "
                                            f"exceeds max_image_pixels={max_pixels}")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise BadInputError(KIND_ODD_SIZE, f"{what} {width}x{height}: a side is below "
                                           f"{MIN_IMAGE_SIDE} px")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise BadInputError(KIND_ODD_SIZE, f"{what} {width}x{height}: aspect ratio beyond "
                                           f"{MAX_ASPECT_RATIO:g}:1")


def check_image(msg: Any, max_pixels: int) -> None:
    """Metadata-only validation of a raw image (encoding, sizes, step, data length)."""
    enc = msg.encoding
    spec = INPUT_ENCODINGS.get(enc)
    if spec is None:
        raise BadInputError(KIND_ENCODING, f"unsupported encoding {enc!r}; accepted: "
                                           f"{', '.join(INPUT_ENCODINGS)}")
    w, h, step, n = int(msg.width), int(msg.height), int(msg.step), len(msg.data)
    check_dims(f"image ({enc})", w, h, max_pixels)
    if spec.even_width and w % 2:
        raise BadInputError(KIND_ODD_SIZE, f"{enc} image width {w} is odd; 4:2:2 pixels come "
                                           "in pairs")
    row = w * spec.bytes_per_pixel
    if step < row:
        raise BadInputError(KIND_STEP, f"step {step} < width {w} x {spec.bytes_per_pixel} "
                                       f"bytes = {row}")
    if n < step * h:
        raise BadInputError(KIND_TRUNCATED, f"data has {n} bytes, step {step} x height {h} "
                                            f"needs {step * h}")
    if n > step * h:
        raise BadInputError(KIND_STEP, f"data has {n} bytes but step {step} x height {h} = "
                                       f"{step * h}")


def _pixels(msg: Any, spec: InputEncoding) -> np.ndarray:
    """The (H, W[, C]) samples of a checked image, a view of ``msg.data`` (row padding skipped).

    16-bit samples are read in the byte order ``is_bigendian`` declares.
    """
    w, h, step = int(msg.width), int(msg.height), int(msg.step)
    if spec.itemsize == 1:
        rows = np.frombuffer(msg.data, dtype=np.uint8, count=step * h).reshape(h, step)
        return rows[:, : w * spec.channels].reshape(h, w, spec.channels) if spec.channels > 1 \
            else rows[:, :w]
    dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
    shape = (h, w, spec.channels) if spec.channels > 1 else (h, w)
    strides = (step, spec.bytes_per_pixel, 2) if spec.channels > 1 else (step, 2)
    return np.ndarray(shape, dtype=dtype, buffer=msg.data, strides=strides)


def image_to_rgb(msg: Any, max_pixels: int) -> np.ndarray:
    """A validated raw image as a contiguous (H, W, 3) uint8 RGB array."""
    check_image(msg, max_pixels)
    spec = INPUT_ENCODINGS[msg.encoding]
    px = np.ascontiguousarray(_pixels(msg, spec), dtype=np.uint8 if spec.itemsize == 1
                              else np.uint16)
    rgb = px if spec.to_rgb is None else cv2.cvtColor(px, spec.to_rgb)
    if rgb.dtype != np.uint8:
        rgb = cv2.convertScaleAbs(rgb, alpha=SCALE_16_TO_8)
    return rgb


# ----- the other direction: synthetic camera frames -----
#: A ROS Bayer pattern -> the RGB channel each pixel of its 2x2 block passes, row-major.
_BAYER_FILTERS = {"rggb": (0, 1, 1, 2), "bggr": (2, 1, 1, 0), "gbrg": (1, 2, 0, 1),
                  "grbg": (1, 0, 2, 1)}
#: 8-bit -> 16-bit full scale (255 -> 65535), the inverse of :data:`SCALE_16_TO_8`.
SCALE_8_TO_16 = 257


def _bt601_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 (H, W, 2) of BT.601 limited range; a pixel pair shares its mean chroma."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 219 / 255 * (0.299 * r + 0.587 * g + 0.114 * b)
    u = 128 + 224 / 255 * (-0.168736 * r - 0.331264 * g + 0.5 * b)
    v = 128 + 224 / 255 * (0.5 * r - 0.418688 * g - 0.081312 * b)
    u, v = (u[:, 0::2] + u[:, 1::2]) / 2, (v[:, 0::2] + v[:, 1::2]) / 2
    y0, y1 = y[:, 0::2], y[:, 1::2]
    quads = (u, y0, v, y1) if order == UYVY else (y0, u, y1, v)
    packed = np.clip(np.rint(np.stack(quads, axis=-1)), 0, 255).astype(np.uint8)
    return packed.reshape(rgb.shape[0], rgb.shape[1], 2)


def encode_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame as a camera with ``encoding`` delivers it: its (H, W[, C])
    samples, uint16 in native byte order for the 16-bit encodings (x 257: full range onto full
    range, so :func:`image_to_rgb` gives the frame back exactly). For synthetic bags and tests.

    YUV 4:2:2 is BT.601 limited range, each pixel pair sharing its mean chroma (4:2:2 has one
    chroma sample per pair, so a width must be even); Bayer keeps at each pixel the channel its
    filter passes; mono is OpenCV's RGB->grey; alpha is opaque. ``ValueError`` for another
    encoding or an odd width in 4:2:2.
    """
    spec = INPUT_ENCODINGS.get(encoding)
    if spec is None:
        raise ValueError(f"unsupported encoding {encoding!r}; accepted: "
                         f"{', '.join(INPUT_ENCODINGS)}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    family = encoding.rstrip("0123456789")
    if spec.even_width:
        if w % 2:
            raise ValueError(f"{encoding} needs an even width, got {w}")
        return _bt601_yuv422(rgb, UYVY if encoding in (UYVY, YUV422) else YUYV)
    if family.startswith("bayer_"):
        block = np.asarray(_BAYER_FILTERS[family.removeprefix("bayer_")]).reshape(2, 2)
        channel = np.tile(block, ((h + 1) // 2, (w + 1) // 2))[:h, :w]
        out = np.take_along_axis(rgb, channel[..., None], axis=2)[..., 0]
    elif family == "mono":
        out = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        opaque = np.full((h, w, 1), 255, np.uint8)
        out = {"rgb": rgb, "bgr": rgb[..., ::-1], "rgba": np.concatenate([rgb, opaque], axis=2),
               "bgra": np.concatenate([rgb[..., ::-1], opaque], axis=2)}[family]
    if spec.itemsize == 2:
        out = out.astype(np.uint16) * SCALE_8_TO_16
    return np.ascontiguousarray(out)
