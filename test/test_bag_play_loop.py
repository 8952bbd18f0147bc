# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag play --loop --restamp`` (issue 22): every loop gets new stamps, and an image and
its camera_info still share one. In process, publishers replaced by recorders: no DDS needed."""

import os

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from edgemoe_ros.bag import CameraInfoParams, write_image_bag
from edgemoe_ros.bag.play import BagPlayer

os.environ.setdefault("ROS_LOG_DIR", "/tmp/edgemoe_test_ros_log")
FRAMES = 3


@pytest.fixture
def ctx(ros_context):
    return ros_context


class _Recorder:
    def __init__(self) -> None:
        self.stamps: list[tuple[int, int]] = []

    def publish(self, msg) -> None:
        if isinstance(msg, bytes):  # recorded bytes (no restamp)
            msg = deserialize_message(msg, Image)
        self.stamps.append((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def wait_for_all_acked(self, timeout) -> bool:
        return True


def test_restamp_gives_every_loop_new_stamps(tmp_path, ctx):
    rng = np.random.default_rng(0)
    frames = [(1_000_000_000 + i * 100_000_000, rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
              for i in range(FRAMES)]
    bag = tmp_path / "cam"
    write_image_bag(bag, frames, "/cam/image", "cam", "mcap",
                    CameraInfoParams.pinhole(48, 32, 40.0))
    with BagPlayer(bag, rate=None, restamp=True, context=ctx) as player:
        recorders = {t: _Recorder() for t in player.topics}
        player._pubs = recorders
        player.play(loops=2)
    images, infos = recorders["/cam/image"].stamps, recorders["/cam/camera_info"].stamps
    assert len(images) == 2 * FRAMES and len(set(images)) == 2 * FRAMES, images  # no stamp reused
    assert images == infos  # each camera_info shares its image's new stamp
    assert images == sorted(images)


def test_play_keeps_enough_history_for_reliable_repairs(tmp_path, ctx):
    """Publisher depth 10 lost 3-19 of 40 720p frames at 30 Hz into the node on a busy host."""
    from edgemoe_ros.bag.cli import build_parser
    from edgemoe_ros.bag.play import DEFAULT_QUEUE_SIZE
    bag = tmp_path / "cam"
    write_image_bag(bag, [(1, np.zeros((32, 48, 3), np.uint8))], "/cam/image", "cam", "mcap")
    with BagPlayer(bag, context=ctx) as player:
        assert ({p.qos_profile.depth for p in player._pubs.values()} == {DEFAULT_QUEUE_SIZE}
                and DEFAULT_QUEUE_SIZE >= 100)

    assert build_parser().parse_args(["play", str(bag)]).queue_size == DEFAULT_QUEUE_SIZE
