# SPDX-License-Identifier: Apache-2.0
"""Rosbag2 tools: read/write camera bags, run the engine over a bag, play a bag into ROS 2.

``io`` and ``messages`` need only ``rosbags`` (no ROS install); ``play`` and ``record`` import
rclpy.
"""

from .io import (
    BagError,
    BagImage,
    BagInfo,
    BagReader,
    BagWriter,
    bag_info,
    read_image_frames,
    write_image_bag,
)
from .messages import CameraInfoParams, camera_info_topic

__all__ = [
    "BagError", "BagImage", "BagInfo", "BagReader", "BagWriter", "CameraInfoParams",
    "bag_info", "camera_info_topic", "read_image_frames", "write_image_bag",
]
