# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag play`` ends within the timeouts it was given, whatever the middleware does.

Once (of two fresh-clone runs) ``play --wait-timeout 60`` outlived its caller's 121 s limit. Our
own waits are bounded; these tests pin that down for the two that were not: the end-of-playback
flush (one budget for all publishers, not one each) and the ROS teardown (a watchdog).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from ros_testing import DOMAIN_RANGE

from edgemoe_ros.bag import CameraInfoParams, write_image_bag
from edgemoe_ros.bag import play as play_mod


class _SlowPublisher:
    """Never acknowledged: waits out whatever timeout it is given."""

    def __init__(self, given: list[float]) -> None:
        self.given = given

    def wait_for_all_acked(self, timeout) -> bool:
        seconds = timeout.nanoseconds / 1e9
        self.given.append(seconds)
        time.sleep(seconds)
        return False


def test_flush_shares_one_budget_across_publishers():
    given: list[float] = []
    player = play_mod.BagPlayer.__new__(play_mod.BagPlayer)  # no node: only flush is exercised
    player.path = Path("bag")
    player._pubs = {f"/t{i}": _SlowPublisher(given) for i in range(4)}
    assert player.flush(timeout_s=0.2) is False
    assert len(given) == 4 and sum(given) <= 0.2 + 1e-6, given


_STUCK_TEARDOWN = textwrap.dedent("""
    import sys, threading, rclpy
    from edgemoe_ros.bag import play
    play.SHUTDOWN_TIMEOUT_S = 0.5
    # a middleware teardown that hangs:
    rclpy.try_shutdown = lambda *a, **k: threading.Event().wait()
    from edgemoe_ros.bag.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_play_exits_when_the_ros_teardown_hangs(tmp_path):
    bag = tmp_path / "bag"
    frames = [(i * 10_000_000 + 1, np.zeros((32, 48, 3), np.uint8)) for i in range(2)]
    write_image_bag(
        bag, frames, "/cam/image", "cam", "mcap", CameraInfoParams.pinhole(48, 32, 24.0)
    )
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.randint(*DOMAIN_RANGE)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path / "log"),
    )
    stats = tmp_path / "stats.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _STUCK_TEARDOWN,
            "play",
            str(bag),
            "--max-rate",
            "--json",
            str(stats),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "published 4 messages" in proc.stderr and "teardown still running" in proc.stderr
    assert stats.is_file()  # reported before the teardown, so nothing is lost to the watchdog
