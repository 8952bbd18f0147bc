# SPDX-License-Identifier: Apache-2.0
"""Class names, latched: LabelInfo's fields as JSON, and a subscriber that starts after the
publish still receives them."""

from __future__ import annotations

import json
import random
import time

import pytest
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from std_msgs.msg import Header, String

from edgemoe_ros.model.config import IGNORE_INDEX, SEMSEG_CLASSES
from edgemoe_ros.ros.label_info import (
    LABEL_INFO_QOS,
    TOPIC_LABEL_INFO,
    LabelInfoPublisher,
    label_info_dict,
    label_info_message,
)

HEADER = Header(stamp=Time(sec=12, nanosec=5), frame_id="cam_front")


def test_message_carries_labelinfo_fields_for_the_model_classes():
    data = json.loads(label_info_message(SEMSEG_CLASSES, HEADER).data)
    assert set(data) == {"header", "class_map", "threshold"}
    assert data["header"] == {"stamp": {"sec": 12, "nanosec": 5}, "frame_id": "cam_front"}
    assert data["threshold"] == 0.0
    ids = {entry["class_id"]: entry["class_name"] for entry in data["class_map"]}
    assert ids == {**dict(enumerate(SEMSEG_CLASSES)), IGNORE_INDEX: "ignore"}
    assert IGNORE_INDEX == 255


@pytest.mark.parametrize("names,match", [
    ([], "no class names"),
    (["road", "road"], "unique"),
    (["road", "ignore"], "unique"),
    (["road", ""], "non-empty"),
    ([f"c{i}" for i in range(256)], "below the ignore id 255"),
])
def test_ambiguous_class_names_refused(names, match):
    with pytest.raises(ValueError, match=match):
        label_info_dict(names, HEADER)


def test_qos_is_latched():
    assert LABEL_INFO_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert LABEL_INFO_QOS.reliability == ReliabilityPolicy.RELIABLE
    assert LABEL_INFO_QOS.depth == 1
    assert not TOPIC_LABEL_INFO.startswith("/")  # relative: follows the node's namespace


@pytest.mark.ros
def test_late_subscriber_receives_the_latched_message(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # read by rclpy.init
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(1, 232))
    executor = SingleThreadedExecutor(context=context)
    try:
        pub_node = rclpy.create_node("label_info_pub", context=context)
        LabelInfoPublisher(pub_node).publish(SEMSEG_CLASSES, frame_id="cam_front")
        sub_node = rclpy.create_node("label_info_late_sub", context=context)
        got: list[String] = []
        sub_node.create_subscription(String, TOPIC_LABEL_INFO, got.append, LABEL_INFO_QOS)
        for node in (pub_node, sub_node):
            executor.add_node(node)
        deadline = time.monotonic() + 20.0
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert got, "a transient_local subscriber created after the publish got nothing"
        data = json.loads(got[0].data)
        assert data["class_map"][0]["class_name"] == SEMSEG_CLASSES[0]
        assert data["header"]["frame_id"] == "cam_front" and data["header"]["stamp"]["sec"] > 0
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)


@pytest.mark.ros
def test_node_latches_class_names_and_republishes_on_reload():
    from ros_testing import NodeHarness, write_tiny_weights
    from std_srvs.srv import Trigger

    h = NodeHarness()  # active: configured with a tiny model of the default classes
    try:
        late = h.client.collect(TOPIC_LABEL_INFO, String, LABEL_INFO_QOS)  # after configure
        first = json.loads(late.wait_for().data)
        assert [c["class_name"] for c in first["class_map"]] == [*SEMSEG_CLASSES, "ignore"]

        renamed = ("road", "person", "car", "building", "pole", "tree", "sky")
        other = write_tiny_weights(h.tmp / "renamed.safetensors", class_names=renamed)
        h.client.set_parameters(h.node_name, {"weights_path": str(other)})
        late.clear()
        resp = h.client.call(Trigger, h.srv("reload_model"), Trigger.Request())
        assert resp.success, resp.message
        second = json.loads(late.wait_for().data)
        assert [c["class_name"] for c in second["class_map"]] == [*renamed, "ignore"]
    finally:
        h.close()
