# SPDX-License-Identifier: Apache-2.0
"""Run-time controls of the multi-camera node in its own process: every task-switch path of
SPEC §5 per camera (``~/<c>/enable_*``, ``~/<c>/task_request``, ``<c>.tasks``, ``auto`` by that
camera's subscribers) and for all cameras (``~/enable_*``, ``~/task_request``, ``tasks``), each
seen in what the node publishes; ``~/reload_model`` with a good and a bad file."""

import itertools
import time

import pytest
from ros_testing import (
    MULTI_NODE_EXECUTABLE,
    MULTI_NODE_NAME,
    NodeHarness,
    image_array,
    make_image,
    wait_diag,
    write_tiny_weights,
)
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from edgemoe_ros.ros.outputs import TOPIC_DEPTH, TOPIC_SEGMENTATION

pytestmark = pytest.mark.ros

EXECUTABLE = MULTI_NODE_EXECUTABLE
NODE = MULTI_NODE_NAME
CAMERAS = ("front", "side")
BOTH = ["semseg", "depth"]
TASK_OUTPUTS = {"semseg": TOPIC_SEGMENTATION, "depth": TOPIC_DEPTH}
#: After the expected outputs of a frame arrived, how long an output that must NOT come is awaited.
ABSENT_GRACE_S = 0.5
_stamps = itertools.count(1)


@pytest.fixture(scope="module")
def env():
    with NodeHarness(
        params={"cameras": list(CAMERAS)}, executable=EXECUTABLE, node_name=NODE
    ) as h:
        c = h.client
        outs = {
            (cam, task): c.collect(f"{cam}/{topic}", Image)
            for cam in CAMERAS
            for task, topic in TASK_OUTPUTS.items()
        }
        pubs = {cam: c.publisher(f"{cam}/image", Image) for cam in CAMERAS}
        for pub in pubs.values():
            c.wait_for_subscribers(pub)
        for col in outs.values():
            c.wait_for_matched(col)
        yield h, outs, pubs, c.diagnostics()


@pytest.fixture(autouse=True)
def both_tasks_everywhere(env):
    h = env[0]
    [res] = h.client.set_parameters(h.node_name, {"tasks": BOTH})
    assert res.successful
    yield


def _frame(env, cam: str, expect: set[str], seed: int = 0) -> tuple[set[str], dict]:
    """Publish one frame on ``cam``; return the tasks whose output came back for it (and those
    outputs). Waits for every task in ``expect`` (or 20 s), then ``ABSENT_GRACE_S`` more so an
    output that should not exist can show up and fail the comparison."""
    _, outs, pubs, _ = env
    stamp = (100, next(_stamps))
    pubs[cam].publish(make_image(48, 64, stamp=stamp, frame_id=cam, seed=seed))

    def got() -> dict[str, Image]:
        found = {}
        for task in TASK_OUTPUTS:
            for m in list(outs[cam, task].messages):
                if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp:
                    found[task] = m
        return found

    deadline = time.monotonic() + 20.0
    while not expect <= set(got()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(ABSENT_GRACE_S)
    found = got()
    return set(found), found


def _params(h, names) -> dict[str, list[str]]:
    return {k: list(v) for k, v in h.client.get_parameters(h.node_name, names).items()}


def _enable(h, path: str, on: bool) -> SetBool.Response:
    resp = h.client.call(SetBool, h.srv(path), SetBool.Request(data=on))
    assert resp.success, resp.message
    return resp


def test_camera_setbool_switches_that_camera_only(env):
    """The integrator's case: depth off on a side camera, kept on the front one."""
    h = env[0]
    resp = _enable(h, "side/enable_depth", False)
    assert "depth disabled" in resp.message and "side ['semseg']" in resp.message
    assert _frame(env, "side", {"semseg"})[0] == {"semseg"}
    assert _frame(env, "front", {"semseg", "depth"})[0] == {"semseg", "depth"}
    assert _params(h, ["side.tasks", "front.tasks", "tasks"]) == {
        "side.tasks": ["semseg"],
        "front.tasks": BOTH,
        "tasks": BOTH,
    }
    _enable(h, "side/enable_depth", True)
    assert _frame(env, "side", {"semseg", "depth"})[0] == {"semseg", "depth"}


def test_node_wide_setbool_switches_every_camera_from_its_own_state(env):
    h = env[0]
    [res] = h.client.set_parameters(h.node_name, {"side.tasks": ["semseg"]})
    assert res.successful
    _enable(h, "enable_segmentation", False)  # every camera loses semseg, keeps the rest
    assert _frame(env, "front", {"depth"})[0] == {"depth"}
    skipped = "frames skipped (no task)"
    before = wait_diag(env[3], lambda v: v["active tasks"] == "none", name_contains="camera side")
    assert _frame(env, "side", set())[0] == set()
    wait_diag(  # the side frame arrived and was skipped, not lost
        env[3], lambda v: int(v[skipped]) > int(before[skipped]), name_contains="camera side"
    )
    assert _params(h, ["tasks", "front.tasks", "side.tasks"]) == {
        "tasks": ["depth"],
        "front.tasks": ["depth"],
        "side.tasks": [],
    }
    _enable(h, "enable_segmentation", True)
    assert _frame(env, "front", {"semseg", "depth"})[0] == {"semseg", "depth"}
    assert _frame(env, "side", {"semseg"})[0] == {"semseg"}


def test_node_wide_tasks_parameter_sets_every_camera(env):
    h = env[0]
    [res] = h.client.set_parameters(h.node_name, {"tasks": ["depth"]})
    assert res.successful
    for cam in CAMERAS:
        assert _frame(env, cam, {"depth"})[0] == {"depth"}, cam
    assert _params(h, ["front.tasks", "side.tasks"]) == {
        "front.tasks": ["depth"],
        "side.tasks": ["depth"],
    }
    [res] = h.client.set_parameters(h.node_name, {"tasks": ["depth", "normals"]})
    assert not res.successful and "normals" in res.reason


def test_task_request_per_camera_and_for_all_and_a_bad_one_counted(env):
    h, _, _, diag = env
    c = h.client
    front_req = c.publisher(h.srv("front/task_request"), String)
    all_req = c.publisher(h.srv("task_request"), String)
    c.wait_for_subscribers(front_req)
    c.wait_for_subscribers(all_req)

    front_req.publish(String(data="semseg"))
    wait_diag(diag, lambda v: v["active tasks"] == "semseg", name_contains="camera front")
    assert _frame(env, "front", {"semseg"})[0] == {"semseg"}
    assert _frame(env, "side", {"semseg", "depth"})[0] == {"semseg", "depth"}

    all_req.publish(String(data="depth"))
    wait_diag(diag, lambda v: v["active tasks"] == "depth", name_contains="camera front")
    wait_diag(diag, lambda v: v["active tasks"] == "depth", name_contains="camera side")
    assert _frame(env, "side", {"depth"})[0] == {"depth"}

    all_req.publish(String(data="depth,normals"))  # refused for every camera, nothing changes
    for cam in CAMERAS:
        values = wait_diag(
            diag, lambda v: int(v["bad task requests"]) >= 1, name_contains=f"camera {cam}"
        )
        assert values["active tasks"] == "depth"
    assert "normals" in h.node.output()
    assert _params(h, ["tasks", "front.tasks", "side.tasks"]) == {
        "tasks": ["depth"],
        "front.tasks": ["depth"],
        "side.tasks": ["depth"],
    }


def test_auto_follows_each_cameras_own_subscribers(env):
    h, outs, _, diag = env
    c = h.client
    [res] = c.set_parameters(h.node_name, {"front.tasks": ["auto"]})
    assert res.successful
    wait_diag(
        diag,
        lambda v: v["task mode"] == "auto" and v["active tasks"] == "semseg,depth",
        name_contains="camera front",
    )
    c.unsubscribe(outs["front", "depth"])  # front's depth listener leaves; side's stays
    try:
        wait_diag(diag, lambda v: v["active tasks"] == "semseg", name_contains="camera front")
        assert _frame(env, "front", {"semseg"})[0] == {"semseg"}
        assert _frame(env, "side", {"semseg", "depth"})[0] == {"semseg", "depth"}
        # Leaving auto by SetBool starts from what runs on that camera now.
        _enable(h, "front/enable_segmentation", True)
        assert _params(h, ["front.tasks"]) == {"front.tasks": ["semseg"]}
    finally:
        outs["front", "depth"] = c.collect(f"front/{TOPIC_DEPTH}", Image)
        c.wait_for_matched(outs["front", "depth"])


def test_reload_model_good_file_then_bad_file_keeps_the_serving_model(env):
    h, _, _, diag = env
    c = h.client
    _, first = _frame(env, "front", {"depth"})
    other = write_tiny_weights(h.tmp / "other.safetensors", seed=1)
    [res] = c.set_parameters(h.node_name, {"weights_path": str(other)})
    assert res.successful
    resp = c.call(Trigger, h.srv("reload_model"), Trigger.Request())
    assert resp.success, resp.message
    _, second = _frame(env, "front", {"depth"})
    assert bytes(second["depth"].data) != bytes(first["depth"].data), "reload changed nothing"
    assert _frame(env, "side", {"semseg", "depth"})[0] == {"semseg", "depth"}

    bad = h.tmp / "truncated.safetensors"
    bad.write_bytes(other.read_bytes()[:100])
    [res] = c.set_parameters(h.node_name, {"weights_path": str(bad)})
    assert res.successful
    resp = c.call(Trigger, h.srv("reload_model"), Trigger.Request())
    assert not resp.success
    assert "truncated.safetensors" in resp.message and "previous model kept" in resp.message
    # The parameter tells what runs again, and the model that runs is the second one.
    assert c.get_parameters(h.node_name, ["weights_path"])["weights_path"] == str(other)
    _, third = _frame(env, "front", {"depth"})
    assert image_array(third["depth"]).tobytes() == image_array(second["depth"]).tobytes()
    values = wait_diag(
        diag, lambda v: v["failed model reloads"] == "1", name_contains="accelerator"
    )
    assert values["model reloads"] == "1"
    assert values["__level__"] == "1" and "reload failed" in values["__message__"]


# ----------------------------------------------------------------------------- in process
@pytest.fixture
def idle_node(ros_context):
    """A multi-camera node, never configured: the switches and parameters are all there is."""
    from rclpy.parameter import Parameter

    from edgemoe_ros.ros.multi_camera_node import MultiCameraNode

    node = MultiCameraNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("autostart", value=False),
            Parameter("cameras", value=list(CAMERAS)),
        ],
    )
    yield node
    node.destroy_node()


def _tasks_of(node, cam: str) -> list[str]:
    return node._cameras[cam].tasks.as_parameter()


def test_node_wide_switch_passes_no_camera_through_another_state(idle_node):
    """The write-back of a node-wide switch into ``tasks`` is not a new command to all cameras:
    re-applied, it set the side camera to the front's tasks for a moment (a frame in between
    ran tasks nobody asked for)."""
    from rclpy.parameter import Parameter

    node = idle_node
    node.set_parameters([Parameter("side.tasks", value=["semseg"])])
    side = node._cameras["side"].tasks
    before = side.snapshot().version
    message = node._all_task_controls.enable("semseg", False)
    assert "semseg disabled" in message
    assert side.snapshot().version == before + 1, "side went through an intermediate state"
    assert (_tasks_of(node, "front"), _tasks_of(node, "side")) == (["depth"], [])
    assert list(node.get_parameter("side.tasks").value) == []
    assert list(node.get_parameter("tasks").value) == ["depth"]


def test_tasks_and_a_camera_in_one_request_the_camera_keeps_its_value(idle_node):
    from rclpy.parameter import Parameter

    node = idle_node
    result = node.set_parameters_atomically(
        [Parameter("tasks", value=["depth"]), Parameter("front.tasks", value=["semseg"])]
    )
    assert result.successful
    assert (_tasks_of(node, "front"), _tasks_of(node, "side")) == (["semseg"], ["depth"])
    assert list(node.get_parameter("front.tasks").value) == ["semseg"]
    assert list(node.get_parameter("side.tasks").value) == ["depth"]
