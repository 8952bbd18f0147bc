# SPDX-License-Identifier: Apache-2.0
"""``use_sim_time`` (issue 22): the node's timers run on the steady clock, so /diagnostics keep
coming and the shutdown transition completes while /clock is paused, and outputs keep the input
stamps (not the sim clock's)."""

import time

import pytest
from lifecycle_msgs.msg import Transition
from ros_testing import NodeHarness, make_image, wait_diag
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros


@pytest.fixture
def paused():
    """A node on sim time whose /clock said t = 500 s once and then stopped."""
    h = NodeHarness(params={"use_sim_time": True})
    try:
        clock = h.client.publisher("/clock", Clock)
        h.client.wait_for_subscribers(clock)
        msg = Clock()
        msg.clock.sec = 500
        for _ in range(3):  # the same instant, repeated: time does not advance
            clock.publish(msg)
            time.sleep(0.1)
        yield h
    finally:
        h.close()


def test_diagnostics_keep_coming_while_clock_is_paused(paused):
    diag = paused.client.diagnostics()
    # The status itself is stamped in the node's ROS time: the paused sim time.
    diag.wait_for(lambda m: m.header.stamp.sec == 500, timeout=10)
    n = diag.count()
    time.sleep(1.5)  # the test period is 0.2 s: several more must arrive on the steady clock
    assert diag.count() - n >= 4, diag.count() - n


def test_outputs_keep_input_stamps_on_sim_time(paused):
    c = paused.client
    seg = c.collect("segmentation/image", Image)
    pub = c.publisher("image", Image)
    c.wait_for_subscribers(pub)
    c.wait_for_matched(seg)
    pub.publish(make_image(stamp=(1234, 5678)))
    m = seg.wait_for(lambda m: m.header.stamp.sec == 1234)
    assert m.header.stamp.nanosec == 5678
    v = wait_diag(c.diagnostics(), lambda v: v["frames processed"] == "1")
    assert v["__level__"] == "0", v


def test_shutdown_completes_while_clock_is_paused(paused):
    c = paused.client
    assert c.change_state(paused.node_name, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert paused.node.wait(timeout=10) == 0, paused.failure_context()
