# SPDX-License-Identifier: Apache-2.0
"""Procedural driving scenes with exact labels and metric depth (numpy + OpenCV only, no
downloads).

``render_frame(seed, w, h)`` gives one random street view for training; ``DriveSequence`` a
continuous drive for the demo. Depth is z-depth in metres; sky pixels are ``+inf`` (no surface),
which depth metrics must treat as invalid.
"""

from .camera import (
    DEFAULT_CAMERA_HEIGHT,
    DEFAULT_HFOV_DEG,
    CameraPose,
    camera_rays,
    intrinsics,
    project,
)
from .render import SKY_DEPTH, DriveSequence, Frame, render_frame, render_view
from .world import World

__all__ = [
    "DEFAULT_CAMERA_HEIGHT", "DEFAULT_HFOV_DEG", "SKY_DEPTH", "CameraPose", "DriveSequence",
    "Frame", "World", "camera_rays", "intrinsics", "project", "render_frame", "render_view",
]
