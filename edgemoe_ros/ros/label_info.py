# SPDX-License-Identifier: Apache-2.0
"""The segmentation's class ids and names as vision_msgs/LabelInfo says them, in a std_msgs/String.

A consumer of the ``segmentation/image`` mono8 image needs to know what each id means.
vision_msgs' LabelInfo is the convention for that, but there is no Kilted wheel of vision_msgs
here, so the node publishes the same fields as JSON, latched (transient_local, depth 1) so that a
subscriber that starts later still gets it once::

    {"header": {"stamp": {"sec": 12, "nanosec": 5}, "frame_id": ""},
     "class_map": [{"class_id": 0, "class_name": "flat"}, ..., {"class_id": 255,
                    "class_name": "ignore"}],
     "threshold": 0.0}

``class_map`` lists every id the image can hold, including 255 for pixels that belong to no class
(outside the crop in ``resize_mode: crop``). ``threshold`` is LabelInfo's confidence threshold: 0,
since every pixel gets its arg-max class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String

from ..model.config import IGNORE_INDEX
from .topic_names import LABEL_INFO

#: Topic, relative to the node's namespace: next to the segmentation image it describes.
TOPIC_LABEL_INFO = LABEL_INFO
#: Name of the id that marks "no class".
IGNORE_NAME = "ignore"
#: Latched: late subscribers get the last message, as LabelInfo publishers do.
LABEL_INFO_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                            reliability=ReliabilityPolicy.RELIABLE)


def label_info_dict(class_names: Sequence[str], header: Header,
                    threshold: float = 0.0) -> dict:
    """LabelInfo's fields for classes ``0..len(class_names)-1`` plus the ignore id.

    Raises ``ValueError`` for names that would make the map ambiguous: empty, repeated, or so
    many that an id would collide with the ignore id.
    """
    names = list(class_names)
    if not names:
        raise ValueError("no class names")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{len(names)} classes; ids must stay below the ignore id {IGNORE_INDEX}")
    if any(not isinstance(n, str) or not n for n in names):
        raise ValueError(f"class names must be non-empty strings: {names!r}")
    if len(set(names) | {IGNORE_NAME}) != len(names) + 1:
        raise ValueError(f"class names must be unique and not {IGNORE_NAME!r}: {names!r}")
    class_map = [{"class_id": i, "class_name": n} for i, n in enumerate(names)]
    class_map.append({"class_id": IGNORE_INDEX, "class_name": IGNORE_NAME})
    return {
        "header": {"stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
                   "frame_id": header.frame_id},
        "class_map": class_map,
        "threshold": float(threshold),
    }


def label_info_message(class_names: Sequence[str], header: Header,
                       threshold: float = 0.0) -> String:
    """The std_msgs/String to publish once per loaded model on :data:`TOPIC_LABEL_INFO`."""
    return String(data=json.dumps(label_info_dict(class_names, header, threshold)))


class LabelInfoPublisher:
    """The latched ``segmentation/label_info`` publisher of a node.

    Created with the node, so the topic and its QoS exist in every lifecycle state; ``publish``
    is called once per loaded model (configure, reload), and the middleware keeps the last
    message for subscribers that come later.
    """

    def __init__(self, node: Node, topic: str = TOPIC_LABEL_INFO) -> None:
        self._node = node
        self._pub = node.create_publisher(String, topic, LABEL_INFO_QOS)

    def publish(self, class_names: Sequence[str], frame_id: str = "") -> None:
        """Publish the class map, stamped now (the camera frame is unknown before a frame)."""
        header = Header(stamp=self._node.get_clock().now().to_msg(), frame_id=frame_id)
        self._pub.publish(label_info_message(class_names, header))
