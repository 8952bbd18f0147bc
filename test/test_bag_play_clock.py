# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag play --clock``: the bag's time on /clock, held at the start until playback begins,
advancing with ``--rate`` between messages, stepping to each message under ``--max-rate``, back to
the start on each ``--loop``; across processes a subscriber sees it advance through the bag's
stamps and a node on ``use_sim_time`` stamps its diagnostics in the bag's time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from ros_testing import NodeHarness
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from edgemoe_ros.bag import CameraInfoParams, write_image_bag
from edgemoe_ros.bag.cli import EXIT_USAGE, build_parser, main
from edgemoe_ros.bag.clock import DEFAULT_CLOCK_HZ, PlaybackClock
from edgemoe_ros.bag.play import BagPlayer
from edgemoe_ros.ros.outputs import TOPIC_SEGMENTATION

os.environ.setdefault("ROS_LOG_DIR", "/tmp/edgemoe_test_ros_log")
NS = 1_000_000_000
#: Bag time starts at 1000 s: far from the system time (~1.7e9 s), so the two cannot be confused.
START_NS = 1000 * NS
BIN = Path(sys.executable).parent


def _bag(path: Path, n: int, period_ns: int, h: int = 32, w: int = 48) -> list[int]:
    stamps = [START_NS + i * period_ns for i in range(n)]
    rng = np.random.default_rng(0)
    write_image_bag(path, [(s, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for s in stamps],
                    "/image", "cam", "mcap", CameraInfoParams.pinhole(w, h, 40.0))
    return stamps


# ----- the clock itself, on a fake steady clock
def test_clock_held_at_start_advances_at_rate_holds_and_loops_back():
    steady = [100.0]
    clock = PlaybackClock(START_NS, rate=2.0, monotonic=lambda: steady[0])
    steady[0] = 103.0
    assert clock.now_ns() == START_NS  # held until the first message goes out
    clock.run_from(START_NS, 103.0)
    steady[0] = 103.5
    assert clock.now_ns() == START_NS + NS  # 0.5 s of steady time at rate 2
    clock.hold()
    steady[0] = 200.0
    assert clock.now_ns() == START_NS + NS  # the end of a loop: stopped
    clock.run_from(START_NS, 200.0)
    assert clock.now_ns() == START_NS  # the next loop starts over, as the stamps do


def test_clock_without_a_pace_steps_to_each_message():
    steady = [0.0]
    clock = PlaybackClock(START_NS, rate=None, monotonic=lambda: steady[0])
    clock.run_from(START_NS + 5, 0.0)
    steady[0] = 10.0
    assert clock.now_ns() == START_NS + 5
    clock.hold(START_NS + 9)
    assert clock.now_ns() == START_NS + 9


# ----- the player in process: publishers replaced by recorders that note the clock
class _Recorder:
    def __init__(self, player: BagPlayer, seen: list[tuple[int, int]]) -> None:
        self.player, self.seen = player, seen

    def publish(self, raw: bytes) -> None:
        stamp = deserialize_message(raw, Image).header.stamp  # camera_info shares the layout
        self.seen.append((stamp.sec * NS + stamp.nanosec, self.player.clock.now_ns()))

    def wait_for_all_acked(self, timeout) -> bool:
        return True


@pytest.mark.parametrize("rate", [None, 20.0])
def test_player_clock_follows_playback_across_loops(tmp_path, ros_context, rate):
    stamps = _bag(tmp_path / "bag", 4, 50_000_000)
    seen: list[tuple[int, int]] = []
    with BagPlayer(tmp_path / "bag", rate=rate, clock_hz=100.0, context=ros_context) as player:
        assert player.clock.now_ns() == START_NS
        player._pubs = {t: _Recorder(player, seen) for t in player.topics}
        player.play(loops=2)
        end = player.clock.now_ns()
        published = player._clock_pub.published
    assert len(seen) == 2 * 2 * len(stamps)  # image + camera_info, two loops
    first, second = seen[: len(seen) // 2], seen[len(seen) // 2:]
    for loop in (first, second):
        clocks = [c for _, c in loop]
        assert clocks == sorted(clocks)  # within a loop time only moves forward
        if rate is None:
            assert all(c == s for s, c in loop)  # stepped to each message as it goes out
        else:
            assert all(c >= s for s, c in loop)  # a message goes out once its time is reached
    assert second[0][1] < first[-1][1] and second[0][1] >= START_NS  # loop 2: back to the start
    assert end >= stamps[-1] and (rate is not None or end == stamps[-1])
    assert published >= 1


def test_clock_refuses_restamp_and_parses_like_ros2_bag(tmp_path, ros_context):
    _bag(tmp_path / "bag", 1, NS)
    with pytest.raises(ValueError, match="do not mix"):
        BagPlayer(tmp_path / "bag", restamp=True, clock_hz=40.0, context=ros_context)
    assert main(["play", str(tmp_path / "bag"), "--restamp", "--clock"]) == EXIT_USAGE
    parser = build_parser()
    assert parser.parse_args(["play", "b", "--clock"]).clock == DEFAULT_CLOCK_HZ == 40.0
    assert parser.parse_args(["play", "b", "--clock", "100"]).clock == 100.0
    assert parser.parse_args(["play", "b"]).clock is None


# ----- across processes
@pytest.mark.ros
def test_node_on_sim_time_runs_in_the_bag_time_of_play_clock(tmp_path):
    """play --clock into a node with use_sim_time: a /clock subscriber (best effort, as ROS
    time sources subscribe) sees the bag's time advance; the node stamps diagnostics in it."""
    stamps = _bag(tmp_path / "bag", 8, 100_000_000, 96, 160)
    with NodeHarness(params={"use_sim_time": True}) as h:
        c = h.client
        clock = c.collect("/clock", Clock, QoSProfile(depth=1000,
                                                      reliability=ReliabilityPolicy.BEST_EFFORT))
        diag = c.diagnostics()
        seg = c.collect(TOPIC_SEGMENTATION, Image)
        c.wait_for_matched(seg)
        proc = subprocess.run(
            # --rate 0.2: the 0.7 s between the first and last message take 3.5 s, so a /clock
            # subscription DDS matches late (a loaded host: it failed once at --rate 1, with
            # one tick seen) still sees the clock advance between messages.
            [str(BIN / "edgemoe-bag"), "play", str(tmp_path / "bag"), "--clock", "50",
             "--rate", "0.2", "--wait-subscribers", "1", "--wait-timeout", "30"],
            env=h.env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:] + h.failure_context()
        seg.wait_for(lambda m: m.header.stamp.sec * NS + m.header.stamp.nanosec == stamps[-1])
        clocks = [m.clock.sec * NS + m.clock.nanosec for m in clock.messages]
        assert clocks and clocks == sorted(clocks), clocks
        assert START_NS <= clocks[0] and clocks[-1] < START_NS + 60 * NS  # bag time, not wall time
        inside = {t for t in clocks if stamps[0] < t < stamps[-1]}
        assert len(inside) >= 5, clocks  # advancing between the messages, not only at the ends
        assert clocks[-1] >= stamps[-1]  # held at the end once playback is over
        d = diag.wait_for(lambda m: START_NS <= m.header.stamp.sec * NS < START_NS + 60 * NS)
        assert d.status, d
