# SPDX-License-Identifier: Apache-2.0
"""One camera's outputs: segmentation (ids, colour), depth and their camera_info relays.

Layout (topic_names.py): ``segmentation/image``, ``segmentation/color`` and their
``segmentation/camera_info``; ``depth/image`` and ``depth/camera_info``; optionally
``segmentation/color/compressed``. Each image has its camera_info as sibling, where
image_transport's CameraSubscriber and depth_image_proc look for it.

Shared by the single-camera node's layout and the multi-camera node (which creates one
``CameraOutputs`` per camera under ``<camera>/``), so both publish the same topics, encodings and
relayed intrinsics from an engine ``FrameResult``. Like image_pipeline, a topic nobody subscribes
to costs no restore, colourise or serialise work.

Publishers can be destroyed (cleanup, shutdown) while a frame or a diagnostics tick still holds
this object: ``destroy`` unpublishes the dict before destroying its entries, and subscriber
counts of a destroyed publisher read as 0 (guards.subscription_count). A ``publish`` that had
already taken the old dict raises ``guards.InvalidHandle``; the caller counts that frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..engine import FrameResult
from ..postprocess import PALETTE, FitInfo, colorize_semseg, restore_to_input
from . import conversions as conv
from . import topic_names as names
from .guards import subscription_count

TOPIC_SEGMENTATION = names.SEGMENTATION_IMAGE
TOPIC_SEGMENTATION_COLOR = names.SEGMENTATION_COLOR
TOPIC_SEGMENTATION_COLOR_COMPRESSED = names.SEGMENTATION_COLOR_COMPRESSED
TOPIC_SEGMENTATION_INFO = names.SEGMENTATION_INFO
TOPIC_DEPTH = names.DEPTH_IMAGE
TOPIC_DEPTH_INFO = names.DEPTH_INFO
#: Output topic -> message type, relative to the camera's namespace (the compressed colour
#: output only with the ``color_compression`` parameter set).
OUTPUT_TOPICS: dict[str, type] = {
    TOPIC_SEGMENTATION: Image,
    TOPIC_SEGMENTATION_COLOR: Image,
    TOPIC_DEPTH: Image,
    TOPIC_SEGMENTATION_INFO: CameraInfo,
    TOPIC_DEPTH_INFO: CameraInfo,
    TOPIC_SEGMENTATION_COLOR_COMPRESSED: CompressedImage,
}
#: The outputs of each task (a task in ``auto`` mode runs while one of them has a subscriber).
TASK_TOPICS = {
    "semseg": (TOPIC_SEGMENTATION, TOPIC_SEGMENTATION_COLOR, TOPIC_SEGMENTATION_COLOR_COMPRESSED,
               TOPIC_SEGMENTATION_INFO),
    "depth": (TOPIC_DEPTH, TOPIC_DEPTH_INFO),
}


def color_at_input(color: np.ndarray, fit: FitInfo) -> np.ndarray:
    """A model-resolution palette image mapped onto the input grid, outside the crop black.

    Equal pixel for pixel to ``colorize_semseg(semseg_at_input())`` because nearest-neighbour
    sampling commutes with a per-pixel palette lookup, and black is the ignore colour; but the
    lookup runs on 32 k model pixels instead of ~1 M camera pixels: about 10x cheaper at 720p.
    """
    return restore_to_input(color, fit, PALETTE[-1], "nearest")


class CameraOutputs:
    """Lifecycle publishers of one camera's outputs under ``prefix`` ('' = node namespace).

    ``color_compression``: '' (no compressed output) or a codec of ``conv.OUTPUT_CODECS``, in which
    the colour segmentation is also published on ``segmentation/color/compressed``."""

    def __init__(
        self, node: Any, prefix: str, qos: QoSProfile, color_compression: str = ""
    ) -> None:
        self._node = node
        self._codec = color_compression
        self._pubs = {
            topic: node.create_lifecycle_publisher(msg_type, names.join(prefix, topic), qos)
            for topic, msg_type in OUTPUT_TOPICS.items()
            if color_compression or topic != TOPIC_SEGMENTATION_COLOR_COMPRESSED
        }

    def destroy(self) -> None:
        """Destroy the publishers; callers that read the dict from now on see none."""
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self._node.destroy_lifecycle_publisher(pub)

    def publisher(self, topic: str) -> Any:
        """The publisher of output ``topic`` (one of OUTPUT_TOPICS); KeyError once destroyed."""
        return self._pubs[topic]

    def subscribed(self) -> dict[str, bool]:
        """Per task: does any of its outputs have a subscriber (``auto`` task mode)."""
        pubs = self._pubs
        return {
            task: any(t in pubs and subscription_count(pubs[t]) > 0 for t in names)
            for task, names in TASK_TOPICS.items()
        }

    def publish(
        self,
        header: Header,
        in_h: int,
        in_w: int,
        result: FrameResult,
        *,
        at_input: bool,
        publish_color: bool,
        palette: np.ndarray | None,
        info: CameraInfo | None,
    ) -> bool:
        """Publish ``result`` with the input ``header``; ``info``: the calibration to relay
        (scaled to the output grid), or None. Returns False if the publishers are gone (cleaned up
        while the frame was in flight), True otherwise."""
        pubs = self._pubs
        if not pubs:
            return False
        relayed = None
        if info is not None:
            # The fit the engine used for this frame (its resize mode, not the parameter, which
            # applies at the next reload).
            relayed = conv.camera_info_for_output(
                info, header, in_h, in_w, None if at_input else result.fit
            )

        def wanted(topic: str) -> bool:
            return topic in pubs and subscription_count(pubs[topic]) > 0

        if result.semseg is not None:
            want_ids = wanted(TOPIC_SEGMENTATION)
            want_raw_color = publish_color and wanted(TOPIC_SEGMENTATION_COLOR)
            want_compressed = publish_color and wanted(TOPIC_SEGMENTATION_COLOR_COMPRESSED)
            if want_ids:
                ids = result.semseg_at_input() if at_input else result.semseg
                pubs[TOPIC_SEGMENTATION].publish(
                    conv.array_to_image(ids, conv.MONO8, header, borrow=True)
                )
            if want_raw_color or want_compressed:
                color = colorize_semseg(
                    result.semseg, palette
                )  # model resolution: see color_at_input
                if at_input:
                    color = color_at_input(color, result.fit)
                if want_raw_color:
                    pubs[TOPIC_SEGMENTATION_COLOR].publish(
                        conv.array_to_image(color, conv.RGB8, header, borrow=True)
                    )
                if want_compressed:
                    pubs[TOPIC_SEGMENTATION_COLOR_COMPRESSED].publish(
                        conv.rgb_to_compressed(color, self._codec, header)
                    )
            if relayed is not None and wanted(TOPIC_SEGMENTATION_INFO):
                pubs[TOPIC_SEGMENTATION_INFO].publish(relayed)
        if result.depth is not None:
            if wanted(TOPIC_DEPTH):
                depth = result.depth_at_input() if at_input else result.depth
                pubs[TOPIC_DEPTH].publish(
                    conv.array_to_image(
                        depth.astype(np.float32, copy=False), conv.DEPTH_32FC1, header, borrow=True
                    )
                )
            if relayed is not None and wanted(TOPIC_DEPTH_INFO):
                pubs[TOPIC_DEPTH_INFO].publish(relayed)
        return True
