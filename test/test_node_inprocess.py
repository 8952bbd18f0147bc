"""The node's lifecycle, parameters and fault handling driven in this process (issue 22): no DDS
peer needed, so these check what the node decides, not how frames travel."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import rclpy
from rclpy.parameter import Parameter
from ros_testing import write_tiny_weights

from edgemoe_ros.ros.node import TOPIC_DEPTH, TOPIC_SEGMENTATION, EdgeMoeNode

os.environ.setdefault("ROS_LOG_DIR", "/tmp/edgemoe_test_ros_log")


@pytest.fixture
def ctx():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(uuid.uuid4().int % 100) + 100)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors")


def make_node(ctx, weights: Path, **params) -> EdgeMoeNode:
    overrides = {"weights_path": str(weights), "autostart": False, **params}
    return EdgeMoeNode(f"edgemoe_node_{uuid.uuid4().hex[:8]}", context=ctx,
                       parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def test_output_depth_parameter_sets_the_publishers_history(ctx, weights):
    node = make_node(ctx, weights, output_depth=37)
    try:
        node.trigger_configure()
        assert {node._pubs[t].qos_profile.depth for t in (TOPIC_SEGMENTATION, TOPIC_DEPTH)} == {37}
    finally:
        node.destroy_node()
