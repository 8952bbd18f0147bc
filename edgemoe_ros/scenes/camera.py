# SPDX-License-Identifier: Apache-2.0
"""Pinhole camera of the synthetic scenes: intrinsics from resolution + field of view, and pose.

Frames follow ROS conventions: the camera optical frame is x right, y down, z forward (REP-103
``*_optical_frame``); the world is X right, Y forward along the road, Z up. Rays are generated with
a camera-frame z component of exactly 1, so the ray parameter ``t`` of any intersection *is* the
z-depth along the optical axis (REP-118 depth images), with no normalisation step to get wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Horizontal field of view of the synthetic camera (a typical wide automotive front camera).
DEFAULT_HFOV_DEG = 90.0
#: Height of the optical centre above the road, metres (roof/windscreen camera of a car).
DEFAULT_CAMERA_HEIGHT = 1.5

#: Camera axes expressed in the world frame when yaw = pitch = roll = 0 (columns: x, y, z).
_WORLD_FROM_OPTICAL = np.array([[1.0, 0.0, 0.0],
                                [0.0, 0.0, 1.0],
                                [0.0, -1.0, 0.0]])


def intrinsics(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """3x3 K with square pixels and the principal point at the image centre (OpenCV convention:
    pixel ``u`` has coordinate ``u``, so the centre is ``(w - 1) / 2``)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 1.0 < hfov_deg < 179.0:
        raise ValueError(f"hfov_deg must be in (1, 179), got {hfov_deg}")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class CameraPose:
    """Camera position (world, metres) and orientation (radians).

    ``yaw``: heading left of the road direction (about world Z); ``pitch``: positive looks down
    (about the optical x axis); ``roll``: about the optical z axis.
    """

    x: float
    y: float
    height: float = DEFAULT_CAMERA_HEIGHT
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x, self.y, self.height])

    def world_from_camera(self) -> np.ndarray:
        """Rotation taking optical-frame vectors to world vectors."""
        return _rot_z(self.yaw) @ _WORLD_FROM_OPTICAL @ _rot_x(-self.pitch) @ _rot_z(self.roll)


def undistort_factor(K: np.ndarray, width: int, height: int, k1: float) -> np.ndarray:
    """Per pixel, how much farther from the optical axis its ray points than a pinhole's (H, W).

    The radial lens model is the division-style one, written from image to world:
    ``x_pinhole = x_image * (1 + k1 * r_image^2)`` in normalised coordinates. ``k1 > 0`` is barrel
    distortion (the image edges see wider angles, as a real wide lens does). Because the map goes
    from pixel to ray, every pixel's ray is exact, so labels and depth stay exact from geometry.
    """
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    x = (u[None, :] - K[0, 2]) / K[0, 0]
    y = (v[:, None] - K[1, 2]) / K[1, 1]
    return 1.0 + k1 * (x * x + y * y)


def camera_rays(K: np.ndarray, width: int, height: int, pose: CameraPose,
                k1: float = 0.0) -> np.ndarray:
    """World-frame ray directions (H, W, 3) whose optical-frame z component is 1 (``k1``: radial
    distortion, see ``undistort_factor``; 0 = pinhole)."""
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    x = (u[None, :] - K[0, 2]) / K[0, 0]
    y = (v[:, None] - K[1, 2]) / K[1, 1]
    if k1:
        s = undistort_factor(K, width, height, k1)
        x, y = x * s, y * s
    d_cam = np.stack(np.broadcast_arrays(x, y, np.ones_like(x)), axis=-1)
    return d_cam @ pose.world_from_camera().T


def project(K: np.ndarray, pose: CameraPose, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (N, 3): returns pixel coordinates (N, 2) and z-depths (N,)."""
    cam = (points - pose.origin) @ pose.world_from_camera()
    z = cam[:, 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = np.stack([K[0, 0] * cam[:, 0] / safe + K[0, 2], K[1, 1] * cam[:, 1] / safe + K[1, 2]],
                  axis=1)
    return uv, z
