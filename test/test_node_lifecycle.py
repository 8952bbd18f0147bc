# SPDX-License-Identifier: Apache-2.0
"""Lifecycle through the real lifecycle services of a node in its own process (ros2/demos style):
configure -> activate -> deactivate -> cleanup -> shutdown and the exit code; a bad weights file
fails configure and leaves the node alive and reconfigurable; ~/reload_model."""

import time

import pytest
from lifecycle_msgs.msg import Transition
from ros_testing import NodeHarness, make_image, wait_diag, write_tiny_weights
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

pytestmark = pytest.mark.ros

#: How long "no output" is watched for after deactivate.
QUIET_S = 1.0


def _frame_through(h, image_pub, seg, stamp):
    seg.clear()
    image_pub.publish(make_image(stamp=stamp))
    return seg.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)


def test_full_lifecycle_and_exit_code():
    h = NodeHarness(params={"autostart": False})
    try:
        c = h.client
        assert c.get_state(h.node_name) == "unconfigured"
        seg = c.collect("segmentation/image", Image)
        image_pub = c.publisher("image", Image)

        assert c.change_state(h.node_name, Transition.TRANSITION_CONFIGURE)
        assert c.get_state(h.node_name) == "inactive"
        assert c.change_state(h.node_name, Transition.TRANSITION_ACTIVATE)
        assert c.get_state(h.node_name) == "active"
        c.wait_for_subscribers(image_pub)
        c.wait_for_matched(seg)
        _frame_through(h, image_pub, seg, (10, 1))

        assert c.change_state(h.node_name, Transition.TRANSITION_DEACTIVATE)
        assert c.get_state(h.node_name) == "inactive"
        seg.clear()
        image_pub.publish(make_image(stamp=(10, 2)))
        time.sleep(QUIET_S)
        assert seg.count() == 0, "an inactive node must not publish"

        assert c.change_state(h.node_name, Transition.TRANSITION_ACTIVATE)
        c.wait_for_subscribers(image_pub)
        _frame_through(h, image_pub, seg, (10, 3))
        assert c.change_state(h.node_name, Transition.TRANSITION_DEACTIVATE)
        assert c.change_state(h.node_name, Transition.TRANSITION_CLEANUP)
        assert c.get_state(h.node_name) == "unconfigured"
        assert c.change_state(h.node_name, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert h.node.wait(timeout=20) == 0, h.failure_context()
    finally:
        h.close()


def test_bad_weights_fail_configure_node_stays_alive_and_recovers():
    h = NodeHarness(params={"autostart": False})
    try:
        c = h.client
        diag = c.diagnostics()
        bad = h.tmp / "corrupt.safetensors"
        bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
        [res] = c.set_parameters(h.node_name, {"weights_path": str(bad)})
        assert res.successful
        assert not c.change_state(h.node_name, Transition.TRANSITION_CONFIGURE)
        assert c.get_state(h.node_name) == "unconfigured"
        assert h.node.alive()
        values = wait_diag(diag, lambda v: "configure failed" in v["__message__"])
        assert str(bad) in values["__message__"] and values["__level__"] == "2"
        assert "corrupt.safetensors" in h.node.output()

        missing = h.tmp / "missing.safetensors"
        c.set_parameters(h.node_name, {"weights_path": str(missing)})
        assert not c.change_state(h.node_name, Transition.TRANSITION_CONFIGURE)
        assert h.node.alive()

        c.set_parameters(h.node_name, {"weights_path": str(h.weights_path)})
        assert c.change_state(h.node_name, Transition.TRANSITION_CONFIGURE)
        assert c.change_state(h.node_name, Transition.TRANSITION_ACTIVATE)
        wait_diag(diag, lambda v: v["__message__"] == "active" and v["__level__"] == "0")
    finally:
        h.close()


def test_reload_model_swaps_weights_and_keeps_old_model_on_bad_file():
    h = NodeHarness()
    try:
        c = h.client
        depth = c.collect("depth/image", Image)
        image_pub = c.publisher("image", Image)
        c.wait_for_subscribers(image_pub)
        c.wait_for_matched(depth)
        first = _frame_through(h, image_pub, depth, (20, 1))  # same pixels (seed 0) every frame

        other = write_tiny_weights(h.tmp / "other.safetensors", seed=1)
        c.set_parameters(h.node_name, {"weights_path": str(other)})
        resp = c.call(Trigger, h.srv("reload_model"), Trigger.Request())
        assert resp.success, resp.message
        second = _frame_through(h, image_pub, depth, (20, 2))
        assert bytes(second.data) != bytes(first.data), "reload did not change the model"

        bad = h.tmp / "truncated.safetensors"
        bad.write_bytes(other.read_bytes()[:100])
        c.set_parameters(h.node_name, {"weights_path": str(bad)})
        resp = c.call(Trigger, h.srv("reload_model"), Trigger.Request())
        assert not resp.success
        assert "truncated.safetensors" in resp.message and "previous model kept" in resp.message
        third = _frame_through(h, image_pub, depth, (20, 3))
        assert bytes(third.data) == bytes(second.data)
    finally:
        h.close()


@pytest.mark.parametrize("name,value", [("backend", "gpu"), ("tasks", ["semseg", "optical_flow"])])
def test_bad_parameter_override_exits_with_error_naming_it(name, value):
    h = NodeHarness(params={name: value}, wait_active=False)
    try:
        assert h.node.wait(timeout=30) != 0
        out = h.node.output()
        assert f"parameter '{name}'" in out and repr(value) in out, out
    finally:
        h.close()
