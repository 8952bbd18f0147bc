# SPDX-License-Identifier: Apache-2.0
"""A bad parameter at start (issue 22): one FATAL line naming it, exit code 2, no traceback."""

import pytest
from ros_testing import NodeHarness

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("name,value,says", [
    ("backend", "gpu", "must be one of"),
    ("autostart", "maybe", "must be true or false"),  # rclpy's own type check before ours
    ("queue_size", 0, "[1, 100]"),  # rclpy's descriptor range before ours
    ("backend_options", '{"threads": 100000}', "[1, 64]"),
])
def test_bad_parameter_at_start_is_one_fatal_line_and_exit_2(name, value, says):
    h = NodeHarness(params={name: value}, wait_active=False)
    try:
        assert h.node.wait(timeout=30) == 2, h.failure_context()
        out = h.node.output()
        assert "[FATAL]" in out and f"parameter '{name}' = {value!r}" in out and says in out, out
        assert "Traceback" not in out, out
    finally:
        h.close()


def test_ctrl_c_mid_frame_exits_cleanly():
    """SIGINT while 720p frames are in flight on the shipped model: exit 0 and no traceback (rclpy
    shuts the context down under the worker; before the fix its publish raised and was logged)."""
    import os
    import signal
    import time

    import numpy as np
    from ros_testing import make_image
    from sensor_msgs.msg import Image
    h = NodeHarness(weights=False)
    try:
        c = h.client
        pub = c.publisher("image", Image)
        seg = c.collect("segmentation/image", Image)
        c.wait_for_subscribers(pub)
        c.wait_for_matched(seg)
        px = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
        for _ in range(15):
            pub.publish(make_image(pixels=px))
            time.sleep(0.1)
        os.killpg(h.node.proc.pid, signal.SIGINT)
        assert h.node.wait(timeout=30) == 0, h.failure_context()
        assert "Traceback" not in h.node.output(), h.failure_context()
    finally:
        h.close()
