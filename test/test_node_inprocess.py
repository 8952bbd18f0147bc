# SPDX-License-Identifier: Apache-2.0
"""The node's lifecycle, parameters and fault handling driven in this process (issue 22): no DDS
peer needed, so these check what the node decides, not how frames travel."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from rclpy.parameter import Parameter
from ros_testing import write_tiny_weights

from edgemoe_ros.ros.node import EdgeMoeNode
from edgemoe_ros.ros.outputs import TOPIC_DEPTH, TOPIC_SEGMENTATION

os.environ.setdefault("ROS_LOG_DIR", "/tmp/edgemoe_test_ros_log")


@pytest.fixture
def ctx(ros_context):
    return ros_context


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
        pubs = [node._outputs.publisher(t) for t in (TOPIC_SEGMENTATION, TOPIC_DEPTH)]
        depths = {p.qos_profile.depth for p in pubs}
        assert depths == {37}
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
        # an fpga option, backend cpu
        [r] = _set(node, backend_options='{"bitstream": "/opt/edgemoe.bit"}')
        assert not r.successful and "unknown option 'bitstream'" in r.reason
        assert node.get_parameter("backend_options").value == "{}"
        [r] = _set(node, backend_options='{"threads": 2}')
        assert r.successful
        [r] = _set(node, backend="null")  # null takes no options: refused while threads is set
        assert not r.successful and "backend" in r.reason
        r = node.set_parameters_atomically([Parameter("backend", value="null"),
                                            Parameter("backend_options", value="{}")])
        assert r.successful
        assert all(r.successful
                   for r in _set(node, backend="cpu", backend_options='{"threads": 2}'))
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


def _frame(stamp=(1, 0)):
    from ros_testing import make_image

    from edgemoe_ros.ros.node import Frame
    return Frame(make_image(stamp=stamp), compressed=False)


def _level(node):
    return node._health(node._model, *node._stats.snapshot_counts())


def test_backend_failing_at_configure_falls_back(ctx, weights):
    """A missing bitstream: configure still succeeds on fallback_backend, and /diagnostics says
    why."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn
    bad = {"backend": "fpga", "backend_options": '{"bitstream": "/nonexistent/edgemoe.bit"}'}
    node = make_node(ctx, weights, fallback_backend="cpu", **bad)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._on_fallback and node._model.engine is None
        level, message = _level(node)
        assert (level == DiagnosticStatus.WARN and "failed at configure" in message
                and "does not exist" in message)
        node._process_frame(_frame(), node._frame_state())
        assert node._stats.snapshot_counts()[1]["published"] == 1
    finally:
        node.destroy_node()
    node = make_node(ctx, weights, **bad)  # no fallback: configure fails as before
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    finally:
        node.destroy_node()


class _Hang:
    """Makes a backend's run block until released; records whether it was closed."""

    def __init__(self, backend) -> None:
        import threading
        self.release, self.entered, self.closed = threading.Event(), threading.Event(), False
        self._close = backend.close
        backend.run = self.run
        backend.close = self.close

    def run(self, *a, **kw):
        self.entered.set()
        self.release.wait(60)
        raise RuntimeError("released")

    def close(self):
        self.closed = True
        self._close()


def _process_in_thread(node, frame):
    import threading
    t = threading.Thread(target=node._process_frame, args=(frame, node._frame_state()),
                         daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the frame never returned: no time limit on the backend call"


def test_hung_backend_times_out_falls_back_and_reload_does_not_wait_for_it(ctx, weights):
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_srvs.srv import Trigger
    node = make_node(ctx, weights, fallback_backend="null", inference_timeout=0.5)
    try:
        node.trigger_configure()
        hang = _Hang(node._model.engine.backend)
        _process_in_thread(node, _frame((1, 1)))
        counters = node._stats.snapshot_counts()[1]
        assert (counters["backend_timeouts"] == 1 and counters["backend_faults"] == 1
                and node._on_fallback)
        assert _level(node)[0] in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
        _process_in_thread(node, _frame((1, 2)))  # the next frame runs on the fallback
        assert node._stats.snapshot_counts()[1]["published"] == 1
        # answers while the call is hung
        resp = node._on_reload(Trigger.Request(), Trigger.Response())
        assert resp.success and not node._on_fallback
        assert not hang.closed  # the hung backend is not closed under its running call ...
        hang.release.set()
        _wait(lambda: hang.closed)  # ... but as soon as the call returns
    finally:
        node.destroy_node()


def test_hung_backend_without_fallback_reports_error(ctx, weights):
    from diagnostic_msgs.msg import DiagnosticStatus
    node = make_node(ctx, weights, inference_timeout=0.3)
    try:
        node.trigger_configure()
        hang = _Hang(node._model.engine.backend)
        _process_in_thread(node, _frame((2, 1)))
        level, message = _level(node)
        assert level == DiagnosticStatus.ERROR and "hung" in message
        _process_in_thread(node, _frame((2, 2)))  # refused at once while the first call is inside
        assert node._stats.snapshot_counts()[1]["backend_faults"] == 2
        hang.release.set()
        _wait(lambda: node._model.watchdog.hung_for() is None)
        node.trigger_cleanup()
    finally:
        hang.release.set()
        node.destroy_node()


def _wait(cond, timeout=30.0):
    from ros_testing import wait_until
    wait_until(cond, timeout, "the condition")


def test_camera_info_size_checks():
    from ros_testing import make_camera_info
    from sensor_msgs.msg import CameraInfo

    from edgemoe_ros.ros import conversions as conv
    huge = make_camera_info(480, 640)
    huge.width = 2**32 - 1
    with pytest.raises(conv.BadInputError):
        conv.check_camera_info(huge)
    one_side = make_camera_info(480, 640)
    one_side.height = 0
    with pytest.raises(conv.BadInputError):
        conv.check_camera_info(one_side)
    conv.check_camera_info(CameraInfo())  # 0x0: "same as the image"
    info = make_camera_info(480, 640)
    # binning
    assert conv.calibration_fits(info, 480, 640) and conv.calibration_fits(info, 240, 320)
    assert not conv.calibration_fits(info, 720, 1280)  # another aspect: another camera mode


def test_bad_camera_info_is_not_replaced_by_the_previous_one(ctx, weights):
    """A NaN K after a good calibration: nothing relayed from then on (not the old info,
    restamped)."""
    from ros_testing import make_camera_info
    node = make_node(ctx, weights)
    try:
        node.trigger_configure()
        node._on_camera_info(make_camera_info(96, 160))
        assert node._latest_info is not None
        bad = make_camera_info(96, 160)
        bad.k[0] = float("nan")
        node._on_camera_info(bad)
        assert node._latest_info is None
        assert node._stats.snapshot_counts()[0] == {"non_finite": 1}
        node._on_camera_info(make_camera_info(96, 160))
        assert node._latest_info is not None
    finally:
        node.destroy_node()


def test_camera_info_of_another_size_is_not_stretched_onto_the_image(ctx, weights):
    from diagnostic_msgs.msg import DiagnosticStatus
    from ros_testing import make_camera_info
    node = make_node(ctx, weights)
    try:
        node.trigger_configure()
        node._on_camera_info(make_camera_info(96, 160))  # 5:3; the frames below are 96x160 ...
        node._process_frame(_frame((3, 1)), node._frame_state())
        assert node._stats.snapshot_counts()[1].get("camera_info_mismatch", 0) == 0
        from ros_testing import make_image

        from edgemoe_ros.ros.node import Frame
        # ... then 4:1
        node._process_frame(Frame(make_image(64, 256, stamp=(3, 2)), False), node._frame_state())

        assert node._stats.snapshot_counts()[1]["camera_info_mismatch"] == 1
        level, message = _level(node)
        assert level == DiagnosticStatus.WARN and "camera_info" in message
    finally:
        node.destroy_node()


def test_task_names_are_stored_without_spaces(ctx, weights):
    node = make_node(ctx, weights, tasks=[" semseg "])
    try:
        assert node.get_parameter("tasks").value == ["semseg"]
        [r] = node.set_parameters([Parameter("tasks", value=["depth ", " semseg"])])
        assert r.successful and node.get_parameter("tasks").value == ["depth", "semseg"]
        assert node._tasks.snapshot(()).active == ("semseg", "depth")
    finally:
        node.destroy_node()
