# SPDX-License-Identifier: Apache-2.0
"""Task switching across processes, every path of SPEC §5: SetBool services, the ``tasks``
parameter, the ``~/task_request`` topic, and ``auto`` with subscribers coming and going.
A switch takes effect on the next frame and the ``tasks`` parameter always tells the truth."""

import itertools
import time

import pytest
from ros_testing import NodeHarness, make_image, wait_diag
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

pytestmark = pytest.mark.ros

#: After the expected outputs of a frame arrived, how long an output that must NOT come is awaited.
#: Both tasks of a frame are published back to back, so this is generous.
ABSENT_GRACE_S = 0.5
_stamps = itertools.count(1)


@pytest.fixture(scope="module")
def env():
    h = NodeHarness()
    try:
        c = h.client
        outs = {"semseg": c.collect("segmentation/image", Image), "depth": c.collect("depth/image", Image)}
        image_pub = c.publisher("image", Image)
        c.wait_for_subscribers(image_pub)
        for col in outs.values():
            c.wait_for_matched(col)
        yield h, outs, image_pub
    finally:
        h.close()


@pytest.fixture(autouse=True)
def both_tasks(env):
    h = env[0]
    h.client.set_parameters(h.node_name, {"tasks": ["semseg", "depth"]})
    yield


def _frame(env, expect, outs=None):
    """Publish one frame; return the set of tasks whose output came back for it.

    Waits until every task in ``expect`` delivered (or 20 s), then ``ABSENT_GRACE_S`` more so an
    output that should not exist has the chance to show up and fail the comparison.
    """
    h, default_outs, image_pub = env
    outs = outs or default_outs
    stamp = (100, next(_stamps))
    image_pub.publish(make_image(stamp=stamp))

    def got():
        return {t for t, col in outs.items()
                if any((m.header.stamp.sec, m.header.stamp.nanosec) == stamp for m in list(col.messages))}

    deadline = time.monotonic() + 20.0
    while not set(expect) <= got() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(ABSENT_GRACE_S)
    return got()


def _tasks_param(h):
    return h.client.get_parameters(h.node_name, ["tasks"])["tasks"]


def test_setbool_services(env):
    h = env[0]
    c = h.client
    assert _frame(env, {"semseg", "depth"}) == {"semseg", "depth"}
    resp = c.call(SetBool, h.srv("enable_depth"), SetBool.Request(data=False))
    assert resp.success and "depth disabled" in resp.message
    assert _frame(env, {"semseg"}) == {"semseg"}
    assert _tasks_param(h) == ["semseg"]
    c.call(SetBool, h.srv("enable_segmentation"), SetBool.Request(data=False))
    c.call(SetBool, h.srv("enable_depth"), SetBool.Request(data=True))
    assert _frame(env, {"depth"}) == {"depth"}
    assert _tasks_param(h) == ["depth"]
    c.call(SetBool, h.srv("enable_segmentation"), SetBool.Request(data=True))
    assert _frame(env, {"semseg", "depth"}) == {"semseg", "depth"}


def test_tasks_parameter(env):
    h = env[0]
    [res] = h.client.set_parameters(h.node_name, {"tasks": ["depth"]})
    assert res.successful
    assert _frame(env, {"depth"}) == {"depth"}
    [res] = h.client.set_parameters(h.node_name, {"tasks": ["depth", "normals"]})
    assert not res.successful and "normals" in res.reason
    assert _frame(env, {"depth"}) == {"depth"}
    assert _tasks_param(h) == ["depth"]


def test_task_request_topic_and_unknown_request_counted(env):
    h = env[0]
    c = h.client
    diag = c.diagnostics()
    req = c.publisher(h.srv("task_request"), String)
    c.wait_for_subscribers(req)
    req.publish(String(data="semseg"))
    wait_diag(diag, lambda v: v["active tasks"] == "semseg")
    assert _frame(env, {"semseg"}) == {"semseg"}
    req.publish(String(data="semseg,normals"))
    values = wait_diag(diag, lambda v: int(v["bad task requests"]) >= 1)
    assert values["active tasks"] == "semseg"
    assert _frame(env, {"semseg"}) == {"semseg"}
    assert "normals" in h.node.output()
    req.publish(String(data="depth,semseg"))
    wait_diag(diag, lambda v: v["active tasks"] == "semseg,depth")
    assert _frame(env, {"semseg", "depth"}) == {"semseg", "depth"}
    assert _tasks_param(h) == ["semseg", "depth"]


def test_auto_runs_tasks_only_while_subscribed(env):
    h, outs, _ = env
    c = h.client
    diag = c.diagnostics()
    [res] = c.set_parameters(h.node_name, {"tasks": ["auto"]})
    assert res.successful
    wait_diag(diag, lambda v: v["task mode"] == "auto" and v["active tasks"] == "semseg,depth")
    assert _frame(env, {"semseg", "depth"}) == {"semseg", "depth"}

    c.unsubscribe(outs["depth"])  # depth listener leaves
    wait_diag(diag, lambda v: v["active tasks"] == "semseg")
    assert _frame(env, {"semseg"}, {"semseg": outs["semseg"]}) == {"semseg"}

    c.unsubscribe(outs["semseg"])  # nobody listens: frames are skipped, not processed
    before = wait_diag(diag, lambda v: v["active tasks"] == "none")
    _, _, image_pub = env
    image_pub.publish(make_image(stamp=(101, 1)))
    wait_diag(diag, lambda v: int(v["frames skipped (no task)"]) > int(before["frames skipped (no task)"]))

    color = c.collect("segmentation/color", Image)  # any output of a task wakes it
    depth = c.collect("depth/image", Image)
    c.wait_for_matched(color)
    c.wait_for_matched(depth)
    wait_diag(diag, lambda v: v["active tasks"] == "semseg,depth")
    assert _frame(env, {"semseg", "depth"}, {"semseg": color, "depth": depth}) == {"semseg", "depth"}
    assert _tasks_param(h) == ["auto"]

    # leaving auto by SetBool starts from what runs now
    c.unsubscribe(color)
    wait_diag(diag, lambda v: v["active tasks"] == "depth")
    c.call(SetBool, h.srv("enable_segmentation"), SetBool.Request(data=False))
    assert _tasks_param(h) == ["depth"]
    # restore the module's collectors for any later test
    outs["semseg"] = c.collect("segmentation/image", Image)
    outs["depth"] = depth
    c.wait_for_matched(outs["semseg"])
