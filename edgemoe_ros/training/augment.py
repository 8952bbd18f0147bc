# SPDX-License-Identifier: Apache-2.0
"""Training-time augmentation of labelled frames: photometric (the sensor) and geometric
(crops, flips).

Why: real cameras differ from our renderer in colour response, exposure, noise, sharpness and
compression, and real datasets come at many resolutions and framings. A model that has only seen
one of each keys on it (docs/datasets.md's real-frame error breakdown).

Geometric augmentation must keep the depth target right. Cropping a window out of an image
changes no 3D point, so metric depth is untouched, but the principal point moves, and when the
crop is then fitted to the model input it is magnified: the canonical camera
(model/canonical_camera.py) sees the scene through a longer focal length. So every geometric
operation here returns a frame with its ``K`` adjusted, and the depth target is derived from that
``K`` afterwards (``training.data.canonical_depth`` for a frame at model size, or the fitting
code of the data path), never from the original one.

No torch here: these run per frame in data workers, on ``datasets.LabelledFrame``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..datasets.frame import LabelledFrame
from ..scenes.randomise import jpeg_roundtrip


@dataclass(frozen=True)
class Photometric:
    """Ranges of the sensor-side changes (each applied with its probability)."""

    brightness: tuple[float, float] = (0.7, 1.35)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.6, 1.4)
    white_balance: float = 0.12       # per-channel gain 1 +- this
    gamma: tuple[float, float] = (0.7, 1.45)
    noise_sigma: tuple[float, float] = (0.0, 8.0)   # grey levels
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.4)
    jpeg_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (30, 95)


def photometric(rgb: np.ndarray, rng: np.random.Generator, params: Photometric = Photometric(),
                strength: float = 1.0) -> np.ndarray:
    """A uint8 RGB image with random colour jitter, gamma, white balance, noise, blur and JPEG.

    ``strength`` interpolates every range towards "no change" (0 returns the input unchanged).
    Only the image changes: labels and depth of the frame stay valid."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"photometric needs an (H, W, 3) uint8 image, "
                         f"got {rgb.shape} {rgb.dtype}")
    if strength <= 0:
        return rgb

    def draw(lo: float, hi: float, neutral: float) -> float:
        return neutral + strength * (float(rng.uniform(lo, hi)) - neutral)

    x = rgb.astype(np.float32) / 255.0
    gray = x.mean(-1, keepdims=True)
    x = gray + (x - gray) * draw(*params.saturation, 1.0)
    mean = float(x.mean())
    x = (mean + (x - mean) * draw(*params.contrast, 1.0)) * draw(*params.brightness, 1.0)
    x = x * (1.0 + strength * rng.uniform(-params.white_balance, params.white_balance, 3)
             ).astype(np.float32)
    x = np.clip(x, 0.0, 1.0) ** draw(*params.gamma, 1.0)
    x = x * 255.0 + rng.normal(0.0, draw(*params.noise_sigma, 0.0), x.shape).astype(np.float32)
    if rng.random() < params.blur_prob * strength:
        x = cv2.GaussianBlur(x, (0, 0), draw(*params.blur_sigma, 0.0) + 1e-3)
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < params.jpeg_prob * strength:
        out = jpeg_roundtrip(
            out, int(round(100 - strength * (100 - rng.integers(*params.jpeg_quality)))))
    return out


def crop(frame: LabelledFrame, x0: int, y0: int, width: int, height: int) -> LabelledFrame:
    """The window ``[x0, x0 + width) x [y0, y0 + height)`` of a frame: image and ground truth cut
    alike, principal point moved by the offset (focal lengths unchanged: no pixel was resized)."""
    h, w = frame.image.shape[:2]
    if not (0 <= x0 and 0 <= y0 and width >= 1 and height >= 1
            and x0 + width <= w and y0 + height <= h):
        raise ValueError(f"crop window {width}x{height}+{x0}+{y0} "
                         f"is not inside the {w}x{h} image")
    win = (slice(y0, y0 + height), slice(x0, x0 + width))
    K = np.array(frame.K, dtype=np.float64)
    K[0, 2] -= x0
    K[1, 2] -= y0
    return replace(frame, image=np.ascontiguousarray(frame.image[win]),
                   semseg=None if frame.semseg is None
                   else np.ascontiguousarray(frame.semseg[win]),
                   depth=None if frame.depth is None
                   else np.ascontiguousarray(frame.depth[win]), K=K)


def random_crop(frame: LabelledFrame, rng: np.random.Generator, aspect: float,
                min_scale: float = 0.5) -> LabelledFrame:
    """A random window of aspect ``aspect`` (width / height, the model input's) whose size is a
    uniform ``min_scale``..1 of the largest such window: fitted to the model it is a zoom of
    1..1/min_scale, which the adjusted K turns into the right canonical depth target."""
    if not (0.0 < min_scale <= 1.0):
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    h, w = frame.image.shape[:2]
    full_w = min(float(w), h * aspect)
    s = float(rng.uniform(min_scale, 1.0))
    cw = max(1, min(w, int(round(full_w * s))))
    ch = max(1, min(h, int(round(full_w * s / aspect))))
    return crop(frame, int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch)


def hflip(frame: LabelledFrame) -> LabelledFrame:
    """Mirror left-right; the principal point mirrors with the image (``cx -> W - 1 - cx``)."""
    w = frame.image.shape[1]
    K = np.array(frame.K, dtype=np.float64)
    K[0, 2] = (w - 1) - K[0, 2]
    return replace(frame, image=np.ascontiguousarray(frame.image[:, ::-1]),
                   semseg=None if frame.semseg is None
                   else np.ascontiguousarray(frame.semseg[:, ::-1]),
                   depth=None if frame.depth is None
                   else np.ascontiguousarray(frame.depth[:, ::-1]), K=K)


def augment_frame(frame: LabelledFrame, rng: np.random.Generator, aspect: float,
                  min_scale: float = 0.5, strength: float = 1.0) -> LabelledFrame:
    """Random crop (zoom), flip and sensor changes of one frame, K kept consistent throughout."""
    out = random_crop(frame, rng, aspect, min_scale) if strength > 0 else frame
    if rng.random() < 0.5:
        out = hflip(out)
    return replace(out, image=photometric(out.image, rng, strength=strength))


__all__ = ["Photometric", "augment_frame", "crop", "hflip", "photometric", "random_crop"]
