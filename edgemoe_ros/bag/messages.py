# SPDX-License-Identifier: Apache-2.0
"""numpy arrays <-> ROS 2 messages as the ``rosbags`` library represents them (no rclpy).

Bag files hold CDR bytes; ``rosbags`` turns them into plain dataclasses through a *typestore*.
We use the newest typestore the installed ``rosbags`` knows (Kilted, else Jazzy): the sensor_msgs
definitions we touch (Image, CompressedImage, CameraInfo) are identical across Humble..Kilted, so
bags recorded by any of them read and write the same way.

The conversions raise ``ValueError`` with a plain message; ``bag.io`` adds the file and topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

from .. import image_encodings as enc
from ..image_encodings import DEFAULT_MAX_IMAGE_PIXELS, INPUT_ENCODINGS
from ..ros import topic_names as names


def _newest_store() -> Stores:
    for name in ("ROS2_KILTED", "ROS2_JAZZY"):
        if hasattr(Stores, name):
            return getattr(Stores, name)
    return Stores.LATEST


#: One typestore for every bag this package reads or writes.
TYPESTORE = get_typestore(_newest_store())

IMAGE_MSG = "sensor_msgs/msg/Image"
COMPRESSED_MSG = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_MSG = "sensor_msgs/msg/CameraInfo"
#: Message types that carry a camera frame.
IMAGE_TYPES: tuple[str, ...] = (IMAGE_MSG, COMPRESSED_MSG)

#: Raw encodings read and written: the node's input encodings (SPEC §5), converted by the node's
#: own code (``image_encodings``), so a bag frame gives the pixels the node would get.
RAW_ENCODINGS: tuple[str, ...] = tuple(INPUT_ENCODINGS)
#: CompressedImage formats we write; reading accepts anything OpenCV can decode.
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
#: Output encodings (REP-118 depth in metres as 32FC1).
MONO8 = "mono8"
RGB8 = "rgb8"
DEPTH_32FC1 = "32FC1"

_Image = TYPESTORE.types[IMAGE_MSG]
_Compressed = TYPESTORE.types[COMPRESSED_MSG]
_CameraInfo = TYPESTORE.types[CAMERA_INFO_MSG]
_Header = TYPESTORE.types["std_msgs/msg/Header"]
_Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
_Roi = TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"]

_NS = 1_000_000_000


def header(stamp_ns: int, frame_id: str) -> Any:
    """A std_msgs/Header for a stamp in integer nanoseconds."""
    if stamp_ns < 0:
        raise ValueError(f"stamp {stamp_ns} ns is negative")
    return _Header(stamp=_Time(sec=int(stamp_ns // _NS), nanosec=int(stamp_ns % _NS)), frame_id=frame_id)


def stamp_ns(msg: Any) -> int:
    """Header stamp of a message in integer nanoseconds (exact, no float round trip)."""
    return int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"frame must be a non-empty uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")


def rgb_to_image(rgb: np.ndarray, stamp: int, frame_id: str, encoding: str = RGB8) -> Any:
    """An RGB frame as sensor_msgs/Image in one of ``RAW_ENCODINGS``, as a camera with that
    encoding delivers it (``image_encodings.encode_rgb``: 4:2:2 chroma shared per pixel pair,
    Bayer mosaic, 16-bit full scale)."""
    _check_rgb(rgb)
    return array_to_image(enc.encode_rgb(rgb, encoding), encoding, stamp, frame_id)


def array_to_image(arr: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    """Wrap an HxW or HxWxC array whose dtype already matches ``encoding`` (mono8, rgb8, 32FC1, ...)."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    step = arr.strides[0]
    return _Image(header=header(stamp, frame_id), height=h, width=w, encoding=encoding,
                  is_bigendian=int(arr.dtype.byteorder == ">"), step=step,
                  data=arr.view(np.uint8).reshape(-1))


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB with the node's checks and conversion (any of
    ``RAW_ENCODINGS``, row padding and byte order honoured); ``image_encodings.BadInputError``
    (a ``ValueError``) for what the node refuses."""
    return enc.image_to_rgb(msg, max_pixels)


def rgb_to_compressed(rgb: np.ndarray, stamp: int, frame_id: str, fmt: str = "jpeg",
                      jpeg_quality: int = 95) -> Any:
    """An RGB frame as sensor_msgs/CompressedImage (``format`` "jpeg" or "png", as image_transport writes)."""
    _check_rgb(rgb)
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"unsupported compressed format {fmt!r}; choose one of {COMPRESSED_FORMATS}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), rgb[..., ::-1], params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} frame as {fmt}")
    return _Compressed(header=header(stamp, frame_id), format=fmt, data=buf.reshape(-1))


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage -> HxWx3 uint8 RGB; undecodable data raises ``ValueError``."""
    data = np.asarray(msg.data, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"cannot decode compressed frame (format {msg.format!r}, {data.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any, msgtype: str,
                   max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """Either image message type -> (RGB array, encoding or compressed format)."""
    if msgtype == IMAGE_MSG:
        return image_to_rgb(msg, max_pixels), msg.encoding
    if msgtype == COMPRESSED_MSG:
        return compressed_to_rgb(msg), msg.format
    raise ValueError(f"{msgtype} is not an image message type ({', '.join(IMAGE_TYPES)})")


@dataclass(frozen=True)
class CameraInfoParams:
    """Pinhole intrinsics for a sensor_msgs/CameraInfo (row-major K 3x3, R 3x3, P 3x4, D plumb_bob)."""

    width: int
    height: int
    k: tuple[float, ...]
    d: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    r: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    p: tuple[float, ...] = field(default=())
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size {self.width}x{self.height} must be positive")
        if len(self.k) != 9 or len(self.r) != 9:
            raise ValueError(f"K and R need 9 values, got {len(self.k)} and {len(self.r)}")
        if not self.p:  # monocular: P = [K | 0]
            k = self.k
            object.__setattr__(self, "p", (k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0))
        if len(self.p) != 12:
            raise ValueError(f"P needs 12 values, got {len(self.p)}")

    @classmethod
    def pinhole(cls, width: int, height: int, fx: float, fy: float | None = None,
                cx: float | None = None, cy: float | None = None) -> CameraInfoParams:
        """Undistorted pinhole camera; principal point defaults to the image centre."""
        fy = fx if fy is None else fy
        cx = (width - 1) / 2.0 if cx is None else cx
        cy = (height - 1) / 2.0 if cy is None else cy
        return cls(width, height, (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0))

    def to_msg(self, stamp: int, frame_id: str) -> Any:
        f64 = np.float64
        return _CameraInfo(
            header=header(stamp, frame_id), height=self.height, width=self.width,
            distortion_model=self.distortion_model, d=np.asarray(self.d, f64), k=np.asarray(self.k, f64),
            r=np.asarray(self.r, f64), p=np.asarray(self.p, f64), binning_x=0, binning_y=0,
            roi=_Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    @classmethod
    def from_msg(cls, msg: Any) -> CameraInfoParams:
        return cls(int(msg.width), int(msg.height), tuple(float(v) for v in msg.k),
                   tuple(float(v) for v in msg.d), tuple(float(v) for v in msg.r),
                   tuple(float(v) for v in msg.p), msg.distortion_model)


def topic_namespace(image_topic: str) -> str:
    """The namespace a camera's topics share: ``/cam/image_raw`` and ``/cam/image/compressed`` -> ``/cam``.

    Returns "" for a topic at the root (``/image``).
    """
    base = image_topic.removesuffix("/compressed").rstrip("/")
    return base.rsplit("/", 1)[0] if "/" in base.lstrip("/") else ""


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic beside an image topic or its ``/compressed`` transport topic
    (image_transport's rule: ros/topic_names.camera_info_topic of the base topic)."""
    return names.camera_info_topic(image_topic.removesuffix("/compressed"))


def serialize(msg: Any) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    return TYPESTORE.deserialize_cdr(raw, msgtype)
