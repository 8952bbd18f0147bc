# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag record OUT TOPIC...``: a small rclpy recorder writing rosbag2 with ``rosbags``.

Replaces ``ros2 bag record`` where the ros2 CLI is not installed (here, and in the replay test).
Subscriptions take serialized messages (``raw=True``), so recording never deserialises an image
and the bytes in the bag are exactly what was on the wire. The bag timestamp is the receive time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .io import BagWriter
from .play import message_class, qos_profile

log = logging.getLogger(__name__)


def parse_topic_spec(spec: str) -> tuple[str, str | None]:
    """``/cam/depth:sensor_msgs/msg/Image`` -> (topic, type); without ``:TYPE`` the type is
    discovered."""
    topic, _, msgtype = spec.partition(":")
    if not topic.startswith("/"):
        raise ValueError(f"topic {topic!r} must be absolute (start with '/')")
    return topic, (msgtype or None)


class Recorder:
    """Subscribes to topics and appends every message to a new bag until ``close``."""

    def __init__(self, out: str | Path, topics: Sequence[str], *, storage: str = "mcap",
                 qos: str = "reliable",
                 queue_size: int = 100, node_name: str = "edgemoe_bag_record",
                 context: Any = None):
        from rclpy.node import Node

        self.specs = [parse_topic_spec(s) for s in topics]
        if not self.specs:
            raise ValueError("no topic to record")
        for _, msgtype in self.specs:
            if msgtype:
                message_class(msgtype)  # a typo fails here, before any file is created
        self._profile = qos_profile(qos, queue_size)
        self._writer = BagWriter(out, storage).open()
        self.node = Node(node_name, context=context)
        self.counts: dict[str, int] = {t: 0 for t, _ in self.specs}
        self._subs: dict[str, Any] = {}
        self._pending = {t: ty for t, ty in self.specs}
        self.subscribe_known()

    def subscribe_known(self) -> list[str]:
        """Subscribe to every pending topic whose type is given or now discoverable; returns those
        left."""
        discovered = dict(self.node.get_topic_names_and_types())
        for topic, msgtype in list(self._pending.items()):
            msgtype = msgtype or (discovered.get(topic) or [None])[0]
            if msgtype is None:
                continue
            cls = message_class(msgtype)
            self._subs[topic] = self.node.create_subscription(
                cls, topic, lambda raw, t=topic, ty=msgtype: self._on_message(t, ty, raw),
                self._profile, raw=True)
            del self._pending[topic]
        return list(self._pending)

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        self._writer.write_raw(topic, msgtype, time.time_ns(), raw)
        self.counts[topic] += 1

    @property
    def pending(self) -> list[str]:
        """Topics not subscribed yet because their type is not discovered."""
        return list(self._pending)

    def all_matched(self) -> bool:
        """Every topic is subscribed and has at least one publisher (so nothing sent from now is
        lost to discovery)."""
        return not self._pending and all(sub.get_publisher_count() > 0
                                         for sub in self._subs.values())

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        """Finish the bag (index and metadata); what was received so far is kept."""
        for sub in self._subs.values():
            self.node.destroy_subscription(sub)
        self._subs.clear()
        self._writer.close()
        self.node.destroy_node()
