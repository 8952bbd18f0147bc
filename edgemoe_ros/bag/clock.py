# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag play --clock``: the bag's time on ``/clock``, so that nodes with ``use_sim_time``
replay in the recording's time, as with ``ros2 bag play --clock``.

The time published is the bag's recorded (log) time that playback has reached: held at the bag's
start until the first message goes out (so nodes started with the player have a time at once),
then advancing with the steady clock x ``rate`` between messages (published at ``hz``, not only at
message times, like rosbag2's player clock), held at the end of each loop, and back at the start
when ``--loop`` begins again (time jumps back, as the recorded stamps do). With ``--max-rate``
there is no pace to follow, so the time steps to each message's log time as it is published.

QoS: reliable, depth 1 (KEEP_LAST, so a slow subscriber never blocks the player); a reliable
publisher also serves the best-effort subscription of ROS time sources (rclpy, rclcpp).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: ``ros2 bag play --clock`` without a value publishes at 40 Hz; so does ``edgemoe-bag play``.
DEFAULT_CLOCK_HZ = 40.0
CLOCK_TOPIC = "/clock"
_NS = 1_000_000_000


class PlaybackClock:
    """The bag time playback is at: held, or advancing at ``rate`` x steady time from an anchor.

    Thread-safe: the player moves it, the publishing thread reads it.
    """

    def __init__(self, start_ns: int, rate: float | None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 (or None for as fast as possible), got {rate}")
        self._rate = rate
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._held: int | None = int(start_ns)
        self._anchor = (int(start_ns), 0.0)

    def run_from(self, bag_ns: int, steady_s: float) -> None:
        """Bag time ``bag_ns`` is steady time ``steady_s``; from there it advances at ``rate``
        (held instead with no rate: ``--max-rate`` has no pace)."""
        with self._lock:
            if self._rate is None:
                self._held = int(bag_ns)
            else:
                self._held, self._anchor = None, (int(bag_ns), steady_s)

    def hold(self, bag_ns: int | None = None) -> None:
        """Stop at ``bag_ns`` (default: where the clock is now)."""
        now = self.now_ns() if bag_ns is None else int(bag_ns)
        with self._lock:
            self._held = now

    def now_ns(self) -> int:
        with self._lock:
            if self._held is not None:
                return self._held
            bag_ns, steady_s = self._anchor
            rate = self._rate
        return bag_ns + int((self._monotonic() - steady_s) * rate * _NS)


class ClockPublisher:
    """Publishes a :class:`PlaybackClock` on ``/clock`` at ``hz`` from a thread of its own until
    ``close``, so the time keeps coming while the player sleeps between messages."""

    def __init__(self, node: Any, clock: PlaybackClock, hz: float = DEFAULT_CLOCK_HZ) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        if not hz > 0:
            raise ValueError(f"clock frequency must be > 0 Hz, got {hz}")
        self.clock = clock
        self.period_s = 1.0 / hz
        self._context = node.context
        self.published = 0
        self._msg_type = Clock
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = node.create_publisher(Clock, CLOCK_TOPIC, qos)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bag-clock", daemon=True)
        self._thread.start()

    def publish_now(self) -> None:
        ns = self.clock.now_ns()
        msg = self._msg_type()
        msg.clock.sec, msg.clock.nanosec = ns // _NS, ns % _NS
        self.publisher.publish(msg)
        self.published += 1

    def _run(self) -> None:
        while self._context.ok():
            try:
                self.publish_now()
            except Exception:
                if self._context.ok():
                    raise
                return  # rclpy shut down under us (Ctrl-C): nothing left to publish to
            if self._stop.wait(self.period_s):
                return

    def close(self) -> None:
        """Stop publishing (before the node is destroyed)."""
        self._stop.set()
        self._thread.join(max(1.0, 2 * self.period_s))
