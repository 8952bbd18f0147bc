# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag play BAG``: publish a bag's camera topics with rclpy, at the recorded pace or flat out.

A stand-in for ``ros2 bag play`` (the ros2 CLI is not installable in this environment) limited to
what a camera replay needs: image / compressed image topics and their camera_info, timed by the
bag timestamps (scaled by ``rate``) or as fast as DDS takes them, with the original header stamps
or restamped with the publish time (``restamp``: what an end-to-end latency measurement needs),
optionally with the bag's time on ``/clock`` for nodes on ``use_sim_time`` (``clock_hz``; see
``bag.clock``).
Messages are published as the recorded CDR bytes unless restamped, so playback costs no
deserialisation and is bit-exact.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import messages as m
from .clock import ClockPublisher, PlaybackClock
from .io import BagError, BagReader

log = logging.getLogger(__name__)

QOS_CHOICES = ("reliable", "best_effort")
#: Original stamps remembered for restamping, so a camera_info and its image (same original stamp)
#: get the same new stamp even when another topic's messages come between them.
_RESTAMP_MEMORY = 64
#: Publisher history depth: unacknowledged frames a reliable subscriber may still get repaired.
#: With 10, a 720p replay at 30 Hz into the node on a busy 2-core host lost 3-19 of 40 frames
#: (the history overwrote frames whose lost fragments were not yet repaired); with 100, 40 of 40
#: in 3 of 3 runs (docs/qos.md). Costs memory only while frames are unacknowledged.
DEFAULT_QUEUE_SIZE = 100
#: How long the end of playback waits, in all, for reliable subscribers to acknowledge the last
#: messages (one budget shared by every publisher, not one per publisher).
FLUSH_TIMEOUT_S = 10.0
#: How long tearing down (destroying the node, shutting rclpy down) may take before the play
#: command gives up on it and exits: with Fast DDS's TCP transports (LARGE_DATA) the middleware's
#: teardown is not bounded by anything of ours, and a player that outlives every timeout it was
#: given stalls whatever waits for it (a benchmark, a test, a launch file).
SHUTDOWN_TIMEOUT_S = 5.0
#: Why ``restamp`` and ``clock_hz`` are refused together.
RESTAMP_WITH_CLOCK = ("--restamp and --clock do not mix: restamped headers carry the system time, "
                      "while nodes on /clock run in the bag's time")


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    loops: int = 0

    @property
    def total(self) -> int:
        return sum(self.published.values())


def message_class(msgtype: str) -> type:
    """The rclpy message class for ``pkg/msg/Name``."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        raise ValueError(f"message type {msgtype!r} is not available in this ROS install") from None


def qos_profile(name: str, depth: int) -> Any:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    if name not in QOS_CHOICES:
        raise ValueError(f"qos {name!r} not one of {QOS_CHOICES}")
    rel = ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)


def select_topics(reader: BagReader, image_topics: Sequence[str] | None) -> list[str]:
    """The image topics asked for (all image topics by default) plus each one's camera_info."""
    info = reader.info()
    chosen = list(image_topics) if image_topics else info.image_topics()
    if not chosen:
        raise BagError(reader.path, "no Image or CompressedImage topic to play")
    for t in chosen:
        reader.require(t, m.IMAGE_TYPES)
    extra = [m.camera_info_topic(t) for t in chosen]
    return chosen + [t for t in dict.fromkeys(extra) if reader.has(t) and t not in chosen]


class BagPlayer:
    """Publishes a bag on an rclpy node it creates in ``context`` (default: the global one)."""

    def __init__(self, path: str | Path, *, topics: Sequence[str] | None = None, rate: float | None = 1.0,
                 qos: str = "reliable", queue_size: int = DEFAULT_QUEUE_SIZE, restamp: bool = False,
                 remap: dict[str, str] | None = None, node_name: str = "edgemoe_bag_play",
                 context: Any = None, clock_hz: float | None = None):
        """``clock_hz``: publish the bag's time on /clock at this frequency (None: no /clock)."""
        from rclpy.node import Node

        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 (or None for as fast as possible), got {rate}")
        if queue_size <= 0:
            raise ValueError(f"queue_size must be > 0, got {queue_size}")
        if restamp and clock_hz is not None:
            raise ValueError(RESTAMP_WITH_CLOCK)
        self.path = Path(path)
        self.rate = rate
        self.restamp = restamp
        profile = qos_profile(qos, queue_size)
        self._reader = BagReader(path)
        try:
            self.topics = select_topics(self._reader, topics)
            self._classes = {}
            for t in self.topics:
                try:
                    self._classes[t] = message_class(self._reader.msgtype(t))
                except ValueError as exc:
                    raise BagError(self.path, str(exc), t) from None
        except BagError:
            self._reader.close()
            raise
        self.node = Node(node_name, context=context)
        remap = remap or {}
        self._pubs = {t: self.node.create_publisher(self._classes[t], remap.get(t, t), profile)
                      for t in self.topics}
        self._new_stamps: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self.clock = PlaybackClock(self._reader.info().start_ns, rate)
        self._clock_pub = ClockPublisher(self.node, self.clock, clock_hz) if clock_hz else None

    def close(self) -> None:
        if self._clock_pub is not None:
            self._clock_pub.close()
        self.node.destroy_node()
        self._reader.close()

    def __enter__(self) -> BagPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for_subscribers(self, count: int, timeout_s: float) -> bool:
        """Block until every played topic has ``count`` subscribers (DDS discovery), or time out.

        Every topic, camera_info included: a consumer matched on the image topic but not yet on
        camera_info would otherwise miss the first calibrations of a fast playback.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._pubs[t].get_subscription_count() >= count for t in self.topics):
                return True
            time.sleep(0.02)
        log.warning("%s: fewer than %d subscribers after %.1f s; playing anyway", self.path, count, timeout_s)
        return False

    def play(self, loops: int = 1, stats: PlayStats | None = None) -> PlayStats:
        """Publish the selected topics ``loops`` times (0 = until rclpy shuts down)."""
        stats = stats or PlayStats()
        start = time.perf_counter()
        while loops == 0 or stats.loops < loops:
            if not self._play_once(stats):
                break
            stats.loops += 1
        self.flush()
        stats.seconds = time.perf_counter() - start
        return stats

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until reliable subscribers acknowledged everything (no-op for best effort).

        Without this, leaving right after a fast playback destroys the publishers while DDS still
        holds unsent samples, and the tail of the bag never arrives.
        """
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        ok = True
        for pub in self._pubs.values():
            left = max(0.0, deadline - time.monotonic())
            ok = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
        if not ok:
            log.warning("%s: subscribers did not acknowledge every message within %.1f s", self.path, timeout_s)
        return ok

    def _play_once(self, stats: PlayStats) -> bool:
        context = self.node.context
        t0_bag = t0_wall = None
        # Each loop gets new stamps: the pairing memory maps original stamps, which repeat.
        self._new_stamps.clear()
        for topic, log_time, raw in self._reader.raw_messages(self.topics):
            if not context.ok():
                return False
            if t0_bag is None:
                t0_bag, t0_wall = log_time, time.monotonic()
                self.clock.run_from(t0_bag, t0_wall)  # a new loop: back to the bag's start
            if self.rate is not None:
                delay = t0_wall + (log_time - t0_bag) / 1e9 / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            else:
                self.clock.hold(log_time)  # no pace: the time steps to each message's
            self._pubs[topic].publish(self._restamped(topic, raw) if self.restamp else raw)
            stats.published[topic] = stats.published.get(topic, 0) + 1
        self.clock.hold()  # the end of the loop: the time stops where playback stopped
        return True

    def _restamped(self, topic: str, raw: bytes) -> Any:
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, self._classes[topic])
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        new = self._new_stamps.get(key)
        if new is None:
            new = self.node.get_clock().now().to_msg()
            self._new_stamps[key] = new
            if len(self._new_stamps) > _RESTAMP_MEMORY:
                self._new_stamps.popitem(last=False)
        msg.header.stamp = new
        return msg
