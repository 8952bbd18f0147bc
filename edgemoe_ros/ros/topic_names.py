# SPDX-License-Identifier: Apache-2.0
"""Topic names of a camera's inputs and outputs, and the two name rules of image_transport.

One place for the layout both nodes publish and ``edgemoe-bag process`` writes (all relative to
the camera's namespace), so no tool or test spells a topic its own way. Plain strings, no rclpy:
the bag tools import it too.

The layout follows what image_transport's ``CameraSubscriber`` and image_pipeline's nodes
(``depth_image_proc/point_cloud_xyz`` ...) expect: the calibration of an image topic is
``camera_info`` beside it (:func:`camera_info_topic`), and a transport of an image topic is a
sub-topic named after the transport (:func:`transport_topic`).
"""

from __future__ import annotations

from typing import Any

# ----- inputs -----
IMAGE = "image"
CAMERA_INFO = "camera_info"
#: The values of the ``image_transport`` parameter: image_transport's plugin names.
TRANSPORT_RAW = "raw"
TRANSPORT_COMPRESSED = "compressed"
TRANSPORTS = (TRANSPORT_RAW, TRANSPORT_COMPRESSED)

# ----- outputs: each image has its camera_info as sibling -----
SEGMENTATION_IMAGE = "segmentation/image"  # mono8 class ids
SEGMENTATION_COLOR = "segmentation/color"  # rgb8 palette
SEGMENTATION_INFO = "segmentation/camera_info"  # camera_info of both segmentation images
SEGMENTATION_COLOR_COMPRESSED = "segmentation/color/compressed"  # optional, by parameter
DEPTH_IMAGE = "depth/image"  # 32FC1 metres
DEPTH_INFO = "depth/camera_info"
LABEL_INFO = "segmentation/label_info"  # latched class names (label_info.py)


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic a ``CameraSubscriber`` pairs with ``image_topic``.

    As image_transport's ``getCameraInfoTopic`` (camera_common.cpp): split the (expanded) name on
    '/', drop empty tokens, keep all but the last, append ``camera_info``. So
    ``/ns/depth/image`` -> ``/ns/depth/camera_info``, ``/image`` -> ``/camera_info``; the result
    always starts with '/'.
    """
    tokens = [t for t in image_topic.split("/")[:-1] if t]
    return "".join(f"/{t}" for t in tokens) + f"/{CAMERA_INFO}"


def transport_topic(base_topic: str, transport: str) -> str:
    """The topic that carries ``base_topic`` over ``transport``: the base itself for raw,
    ``<base>/<transport>`` otherwise (image_transport's ``SimpleSubscriberPlugin``). Give the
    *resolved* base (remaps applied), as image_transport's ``Subscriber`` does, so remapping the
    image topic alone moves its transports too."""
    return base_topic if transport == TRANSPORT_RAW else f"{base_topic.rstrip('/')}/{transport}"


def input_topic(node: Any, image_topic: str, transport: str) -> str:
    """The topic ``node`` subscribes for ``image_topic`` over ``transport``: for raw the name as
    given (rcl remaps it when subscribing); otherwise the transport topic of the name resolved
    with the node's namespace and remaps (``node.resolve_topic_name``), as image_transport does."""
    if transport == TRANSPORT_RAW:
        return image_topic
    return transport_topic(node.resolve_topic_name(image_topic), transport)


def join(namespace: str, topic: str) -> str:
    """``topic`` under ``namespace`` ('' = unchanged, relative names stay relative)."""
    return f"{namespace.rstrip('/')}/{topic}" if namespace else topic
