# SPDX-License-Identifier: Apache-2.0
"""Canonical camera: metric depth that holds for any lens, crop and stretch (as Metric3D does).

A monocular depth network judges distance from how large things look. The same car at the same
distance looks twice as large through a lens of twice the focal length, so a model trained at one
focal length reads a longer lens as "closer". We therefore define what the depth head predicts:
the depth the scene *would have* if the model input had been taken by a fixed **canonical
camera**, a pinhole whose horizontal field of view across the model input is
``ModelConfig.canonical_hfov_deg`` (the renderer's camera the shipped model was trained with).
Its focal length in model-input pixels is ``f_c = img_w / (2 tan(hfov / 2))`` (128 px for the
SPEC model, 256 px wide at 90 degrees).

An object of size ``S`` at depth ``Z`` spans ``f S / Z`` pixels, so an input whose effective focal
length at the model input is ``f_eff`` looks like the canonical camera at depth
``Z_c = Z f_c / f_eff``: metric depth is ``Z = Z_c * f_eff / f_c`` (``depth_scale``), and training
targets go the other way (``Z_c = Z / depth_scale``).

``f_eff`` follows the fit to the model input: for camera intrinsics ``K`` of the image handed to
the engine and the fit's scales ``s_x``, ``s_y`` (model pixels per image pixel; a centre crop
changes neither, a stretch makes them differ), ``f_eff = fy * s_y``, the *vertical* focal length.
For square pixels fitted without distortion (crop mode, or a stretch of an image that already has
the model's aspect) ``fx s_x = fy s_y`` and the choice does not matter. Under an anisotropic
stretch it does, and the vertical one is what a driving model reads: its strongest cues are
vertical (the ground's row below the horizon, ``Z = fy h / (v - v0)``; object heights). Measured
with the shipped model on rendered scenes (median over 4 seeds of the median predicted / true
depth; bench/depth_intrinsics.py): stretched to 256x128 from 400x300 at 60 deg
(``s_x / s_y = 1.5``), 621x188 at 81.5 deg (KITTI's aspect, 0.6), 512x128 (0.5) and 256x256 (2.0):
the vertical rule gives 0.98, 1.08, 1.09, 0.97; the geometric mean of the two focal lengths 1.20,
0.84, 0.77, 1.37; crop mode 1.01 for all four. The principal point does
not change a depth scale and is not used.

Degenerate intrinsics: an all-zero K is ROS's "uncalibrated camera" (sensor_msgs/CameraInfo) and
means "unknown", like no K at all; anything else that is not a finite 3x3 with ``fx, fy > 0``
raises ``IntrinsicsError`` so a caller can reject the calibration where it arrives.

No ROS, no torch: the engine, the node, the bag tool, the CLIs and the trainer share this.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig


class IntrinsicsError(ValueError):
    """Camera intrinsics that cannot describe a camera (wrong size, non-finite, focal <= 0)."""


def canonical_focal(cfg: ModelConfig) -> float:
    """Focal length of the canonical camera in model-input pixels."""
    return cfg.img_w / (2.0 * math.tan(math.radians(cfg.canonical_hfov_deg) / 2.0))


def camera_matrix(K: object) -> np.ndarray | None:
    """``K`` (3x3 or 9 values) as a float64 3x3, or None for "unknown" (None or all zeros).

    Raises ``IntrinsicsError`` naming the problem for anything else that is unusable.
    """
    if K is None:
        return None
    try:
        k = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise IntrinsicsError(f"camera K must be 9 numbers, got {K!r}") from None
    if k.size != 9:
        raise IntrinsicsError(f"camera K must have 9 values (3x3), got {k.size}")
    k = k.reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise IntrinsicsError("camera K contains NaN or Inf")
    if not np.any(k):
        return None  # sensor_msgs/CameraInfo: K all zero = uncalibrated
    fx, fy = k[0, 0], k[1, 1]
    if not (fx > 0 and fy > 0):
        raise IntrinsicsError(f"camera K focal lengths must be positive, got fx={fx:g}, fy={fy:g}")
    return k


def effective_focal(K: np.ndarray, scale_x: float, scale_y: float) -> float:
    """Focal length at the model input, in model pixels: the vertical one, ``fy * s_y``.

    ``scale_x``/``scale_y``: model pixels per pixel of the image ``K`` describes (``FitInfo``).
    ``scale_x`` is checked but does not enter (see the module docstring for why vertical).
    """
    k = camera_matrix(K)
    if k is None:
        raise IntrinsicsError(
            "effective_focal needs calibrated intrinsics, got an unknown (zero) K"
        )
    if not (scale_x > 0 and scale_y > 0):
        raise IntrinsicsError(
            f"image-to-model scales must be positive, got {scale_x:g}, {scale_y:g}"
        )
    return float(k[1, 1] * scale_y)


def depth_scale(K: np.ndarray, scale_x: float, scale_y: float, cfg: ModelConfig) -> float:
    """Metric / canonical depth for an image with intrinsics ``K`` fitted with these scales."""
    return effective_focal(K, scale_x, scale_y) / canonical_focal(cfg)


__all__ = ["IntrinsicsError", "camera_matrix", "canonical_focal", "depth_scale", "effective_focal"]
