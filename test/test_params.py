# SPDX-License-Identifier: Apache-2.0
"""Parameter declarations and validation: one test per invalid value (in-process rclpy node)."""

import os
import uuid

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter

from edgemoe_ros.ros import params as P

os.environ.setdefault("ROS_LOG_DIR", "/tmp/edgemoe_test_ros_log")

INVALID = [
    ("weights_path", "/models/edgemoe.bin"),
    ("weights_path", "model.safetensors\x00"),
    ("backend", "gpu"),
    ("backend", "CPU"),
    ("fallback_backend", "tpu"),
    ("backend_options", "not json"),
    ("backend_options", "[1, 2]"),
    ("backend_options", '"timeout_s"'),
    ("tasks", ["segmentation"]),
    ("tasks", ["semseg", "semseg"]),
    ("tasks", ["auto", "depth"]),
    ("output_resolution", "native"),
    ("resize_mode", "letterbox"),
    ("input_qos", "fast"),
    ("output_qos", "RELIABLE"),
    ("output_qos", "auto"),
    ("output_depth", 0),
    ("output_depth", 1001),
    ("queue_size", 0),
    ("queue_size", -3),
    ("queue_size", 101),
    ("max_image_pixels", 0),
    ("max_image_pixels", -640),
    ("diagnostics_period", 0.0),
    ("diagnostics_period", -1.0),
    ("diagnostics_period", 3600.0),
    ("inference_timeout", 0.0),
    ("inference_timeout", float("nan")),
    ("use_compressed", "yes"),
    ("use_compressed", True),  # removed: image_transport replaces it
    ("image_transport", "theora"),
    ("image_transport", "Raw"),
    ("image_transport", ""),
    ("color_compression", "webp"),
    ("color_compression", "PNG"),
    ("publish_color", 1),
    ("autostart", "true"),
    ("expected_input_rate", -1.0),
    ("expected_input_rate", 1e6),
    ("expected_input_rate", float("nan")),
    ("input_rate_tolerance", 1.0),
    ("input_rate_tolerance", -0.1),
    ("input_rate_window", 0.0),
    ("input_rate_window", -5.0),
    ("input_timeout", 0.0),
    ("input_timeout", "10"),
    ("diagnostics_use_fqn", "false"),
]

VALID = [
    ("weights_path", ""), ("weights_path", "/opt/models/city.safetensors"), ("backend", "fixed"),
    ("fallback_backend", ""), ("fallback_backend", "cpu"), ("backend_options", ""),
    ("backend_options", '{"timeout_s": 2.0}'), ("tasks", []), ("tasks", ["depth"]), ("tasks", ["auto"]),
    ("output_resolution", "model"), ("resize_mode", "crop"), ("resize_mode", ""),
    ("input_qos", "best_effort"), ("input_qos", "auto"), ("output_depth", 1), ("output_depth", 1000),
    ("queue_size", 100), ("max_image_pixels", 1280 * 720),
    ("diagnostics_period", 0.5), ("image_transport", "raw"), ("image_transport", "compressed"),
    ("use_compressed", False), ("color_compression", ""), ("color_compression", "png"),
    ("color_compression", "jpeg"),
    ("expected_input_rate", 0.0), ("expected_input_rate", 29.97), ("input_rate_tolerance", 0.0),
    ("input_rate_window", 0.5), ("input_timeout", 2.0), ("diagnostics_use_fqn", True),
]


@pytest.mark.parametrize("name,value", INVALID, ids=[f"{n}={v!r}" for n, v in INVALID])
def test_invalid_value_rejected_naming_parameter_and_value(name, value):
    with pytest.raises(P.ParameterValueError) as err:
        P.validate(name, value)
    assert f"'{name}'" in str(err.value) and repr(value) in str(err.value)
    assert err.value.reason


@pytest.mark.parametrize("name,value", VALID)
def test_valid_values_accepted(name, value):
    P.validate(name, value)


def test_defaults_are_valid_and_every_parameter_documented():
    for spec in P.PARAMS:
        P.validate(spec.name, spec.default)
        d = spec.descriptor()
        assert len(d.description) > 20, spec.name
    assert set(P.SPECS) == {"weights_path", "backend", "fallback_backend", "backend_options", "tasks",
                            "output_resolution", "resize_mode", "input_qos", "output_qos", "output_depth", "queue_size",
                            "image_transport", "use_compressed", "publish_color", "color_compression",
                            "max_image_pixels", "inference_timeout", "diagnostics_period", "autostart",
                            "expected_input_rate", "input_rate_tolerance", "input_rate_window",
                            "input_timeout", "diagnostics_use_fqn"}


def test_graph_shaping_parameters_are_read_only():
    ro = {p.name for p in P.PARAMS if p.read_only}
    assert ro == {"input_qos", "output_qos", "output_depth", "queue_size", "image_transport", "use_compressed",
                  "color_compression", "diagnostics_period", "autostart"}


def test_backend_options_parse():
    assert P.parse_backend_options('{"bitstream": "a.bit", "timeout_s": 2}') == {"bitstream": "a.bit",
                                                                                 "timeout_s": 2}
    assert P.parse_backend_options("  ") == {}


def _node(ctx, overrides=()):
    return Node(f"params_test_{uuid.uuid4().hex[:8]}", context=ctx, parameter_overrides=list(overrides),
                start_parameter_services=False)


def test_declare_all_reads_typed_snapshot(ros_context):
    node = _node(ros_context, [Parameter("tasks", value=["depth"]), Parameter("queue_size", value=4)])
    try:
        snap = P.declare_all(node)
        assert snap.tasks == ("depth",) and snap.queue_size == 4 and snap.backend == "cpu"
        assert node.describe_parameter("queue_size").integer_range[0].to_value == P.QUEUE_SIZE_RANGE[1]
        assert node.describe_parameter("input_qos").read_only
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name,value", [("backend", "gpu"), ("tasks", ["normals"]), ("input_qos", "fast"),
                                        ("backend_options", "{oops")])
def test_bad_override_fails_at_declare_time(ros_context, name, value):
    node = _node(ros_context, [Parameter(name, value=value)])
    try:
        with pytest.raises(P.ParameterValueError, match=name):
            P.declare_all(node)
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name,value", [("backend", "gpu"), ("tasks", ["semseg", "normals"]),
                                        ("output_resolution", "native"), ("resize_mode", "fill"),
                                        ("fallback_backend", "npu"), ("backend_options", "[]"),
                                        ("weights_path", "x.onnx")])
def test_set_parameters_callback_rejects_with_reason(ros_context, name, value):
    node = _node(ros_context)
    try:
        P.declare_all(node)
        node.add_on_set_parameters_callback(P.check_set_request)
        before = node.get_parameter(name).value
        [result] = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful
        assert f"'{name}'" in result.reason and repr(value) in result.reason
        assert node.get_parameter(name).value == before
        [ok] = node.set_parameters([Parameter("tasks", value=["auto"])])
        assert ok.successful and node.get_parameter("tasks").value == ["auto"]
    finally:
        node.destroy_node()


def test_read_only_and_range_enforced_by_descriptor(ros_context):
    node = _node(ros_context)
    try:
        P.declare_all(node)
        node.add_on_set_parameters_callback(P.check_set_request)
        [ro] = node.set_parameters([Parameter("input_qos", value="reliable")])
        assert not ro.successful and "read-only" in ro.reason
        [rng] = node.set_parameters([Parameter("max_image_pixels", value=0)])
        assert not rng.successful
    finally:
        node.destroy_node()


def test_qos_profiles():
    from rclpy.qos import QoSReliabilityPolicy

    from edgemoe_ros.ros.qos import profile
    assert profile("reliable", 5).reliability == QoSReliabilityPolicy.RELIABLE
    assert profile("best_effort", 5).reliability == QoSReliabilityPolicy.BEST_EFFORT
    assert profile("sensor_data", 5).reliability == QoSReliabilityPolicy.BEST_EFFORT
    assert profile("auto", 5).reliability == QoSReliabilityPolicy.BEST_AVAILABLE
    assert {profile(w, 37).depth for w in ("reliable", "best_effort", "sensor_data", "system_default")} == {37}
