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


def _set(node, **values):
    return node.set_parameters([Parameter(k, value=v) for k, v in values.items()])


def test_unbounded_backend_options_refused_when_set(ctx, weights):
    node = make_node(ctx, weights)
    try:
        node.trigger_configure()
        [r] = _set(node, backend_options='{"threads": 100000}')
        assert not r.successful and "threads" in r.reason and "[1, 64]" in r.reason
        [r] = _set(node, backend_options='{"bitstream": "/opt/edgemoe.bit"}')  # an fpga option, backend cpu
        assert not r.successful and "unknown option 'bitstream'" in r.reason
        assert node.get_parameter("backend_options").value == "{}"
        [r] = _set(node, backend_options='{"threads": 2}')
        assert r.successful
        [r] = _set(node, backend="null")  # null takes no options: refused while threads is set
        assert not r.successful and "backend" in r.reason
        r = node.set_parameters_atomically([Parameter("backend", value="null"),
                                            Parameter("backend_options", value="{}")])
        assert r.successful
        assert all(r.successful for r in _set(node, backend="cpu", backend_options='{"threads": 2}'))
    finally:
        node.destroy_node()


def test_unbounded_backend_options_refused_at_start(ctx, weights):
    from edgemoe_ros.ros.params import ParameterValueError
    with pytest.raises(ParameterValueError, match="threads"):
        make_node(ctx, weights, backend_options='{"threads": 100000}')


def test_failed_reload_sets_the_model_parameters_back_and_warns(ctx, weights, tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_srvs.srv import Trigger
    node = make_node(ctx, weights)
    try:
        node.trigger_configure()
        missing = str(tmp_path / "missing.safetensors")
        assert all(r.successful for r in _set(node, weights_path=missing, resize_mode="crop"))
        resp = node._on_reload(Trigger.Request(), Trigger.Response())
        assert not resp.success and "missing.safetensors" in resp.message
        assert "weights_path, resize_mode" in resp.message and "set back" in resp.message
        assert node.get_parameter("weights_path").value == str(weights)
        assert node.get_parameter("resize_mode").value == ""
        level, message = node._health(node._model, *node._stats.snapshot_counts())
        assert level == DiagnosticStatus.WARN and "reload failed" in message
        resp = node._on_reload(Trigger.Request(), Trigger.Response())
        assert resp.success
        assert node._health(node._model, *node._stats.snapshot_counts())[0] == DiagnosticStatus.OK
    finally:
        node.destroy_node()
