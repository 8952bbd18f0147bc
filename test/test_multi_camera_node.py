# SPDX-License-Identifier: Apache-2.0
"""The multi-camera node in its own process on a tiny model: three cameras, each with its own
inputs, outputs, stamps, tasks and output resolution, diagnostics per camera; bad input or a
stopped stream on one camera leaves the others alone."""

import json
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition
from ros_testing import (
    MULTI_NODE_EXECUTABLE,
    MULTI_NODE_NAME,
    NodeHarness,
    diag_values,
    image_array,
    make_camera_info,
    make_image,
    wait_until,
)
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.ros.label_info import LABEL_INFO_QOS

pytestmark = pytest.mark.ros

EXECUTABLE = MULTI_NODE_EXECUTABLE
NODE = MULTI_NODE_NAME
#: camera -> (tasks, output_resolution, image size)
CAMERAS = {
    "front": (["semseg", "depth"], "input", (96, 160)),
    "left": (["semseg"], "input", (60, 80)),
    "rear": (["depth"], "model", (72, 128)),
}
#: Short stream-diagnostics windows, so a stopped camera is WARN then ERROR within seconds; a
#: wide tolerance, so a live camera stays OK through this busy host's hiccups: a learned-rate
#: WARN needs a gap of 1 / min + window * tol / (1 - tol) = 0.2 + 0.5 s at 10 Hz.
RATE_WINDOW_S, RATE_TOLERANCE, INPUT_TIMEOUT_S = 0.5, 0.5, 1.5
OK, WARN, ERROR = (
    int.from_bytes(x, "little")
    for x in (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
)


@pytest.fixture(scope="module")
def harness():
    params = {
        "cameras": list(CAMERAS),
        "input_rate_window": RATE_WINDOW_S,
        "input_rate_tolerance": RATE_TOLERANCE,
        "input_timeout": INPUT_TIMEOUT_S,
    }
    for name, (tasks, resolution, _) in CAMERAS.items():
        params[f"{name}.tasks"] = tasks
        params[f"{name}.output_resolution"] = resolution
    with NodeHarness(params=params, executable=EXECUTABLE, node_name=NODE) as h:
        yield h


@pytest.fixture(scope="module")
def io(harness):
    c = harness.client
    outs = {
        (cam, topic): c.collect(f"{cam}/{topic}", typ)
        for cam in CAMERAS
        for topic, typ in (
            ("segmentation/image", Image),
            ("segmentation/color", Image),
            ("depth/image", Image),
            ("depth/camera_info", CameraInfo),
        )
    }
    pubs = {
        cam: (c.publisher(f"{cam}/image", Image), c.publisher(f"{cam}/camera_info", CameraInfo))
        for cam in CAMERAS
    }
    for image_pub, info_pub in pubs.values():
        c.wait_for_subscribers(image_pub)
        c.wait_for_subscribers(info_pub)
    for col in outs.values():
        c.wait_for_matched(col)
    return outs, pubs, c.diagnostics()


def _camera_diag(diag, camera: str, predicate, timeout: float = 20.0) -> dict[str, str]:
    start = max(diag.count() - 1, 0)
    msg = diag.wait_for(
        lambda m: (
            bool(diag_values(m, f"camera {camera}"))
            and predicate(diag_values(m, f"camera {camera}"))
        ),
        timeout,
        start=start,
    )
    return diag_values(msg, f"camera {camera}")


def _stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_each_camera_gets_its_own_outputs_stamps_and_tasks(io, harness):
    outs, pubs, _ = io
    cfg = tiny_config()
    stamps = {"front": (100, 1), "left": (200, 2), "rear": (300, 3)}
    for cam, (_image_pub, info_pub) in pubs.items():
        h, w = CAMERAS[cam][2]
        info_pub.publish(make_camera_info(h, w, stamp=stamps[cam], frame_id=cam))
    time.sleep(0.3)
    for cam, (image_pub, _) in pubs.items():
        h, w = CAMERAS[cam][2]
        image_pub.publish(make_image(h, w, stamp=stamps[cam], frame_id=cam, seed=len(cam)))
    front_seg = outs["front", "segmentation/image"].wait_for(
        lambda m: _stamp_of(m) == stamps["front"]
    )
    front_depth = outs["front", "depth/image"].wait_for(lambda m: _stamp_of(m) == stamps["front"])
    left_seg = outs["left", "segmentation/image"].wait_for(
        lambda m: _stamp_of(m) == stamps["left"]
    )
    rear_depth = outs["rear", "depth/image"].wait_for(lambda m: _stamp_of(m) == stamps["rear"])
    rear_info = outs["rear", "depth/camera_info"].wait_for(
        lambda m: _stamp_of(m) == stamps["rear"]
    )
    assert image_array(front_seg).shape == (96, 160) and front_seg.header.frame_id == "front"
    assert image_array(front_depth).shape == (96, 160)
    front_color = outs["front", "segmentation/color"].wait_for(
        lambda m: _stamp_of(m) == stamps["front"]
    )
    assert image_array(front_color).shape == (96, 160, 3)
    assert image_array(left_seg).shape == (60, 80) and left_seg.header.frame_id == "left"
    assert image_array(rear_depth).shape == (cfg.img_h, cfg.img_w)  # rear: output_resolution model
    assert (rear_info.width, rear_info.height) == (cfg.img_w, cfg.img_h)
    time.sleep(0.5)  # the per-camera task sets: no output of a task the camera does not run
    assert not any(_stamp_of(m) == stamps["left"] for m in outs["left", "depth/image"].messages)
    rear_seg = outs["rear", "segmentation/image"].messages
    assert not any(_stamp_of(m) == stamps["rear"] for m in rear_seg)
    # No camera's frame was published under another camera's topics.
    for (cam, _topic), col in outs.items():
        assert all(m.header.frame_id == cam for m in col.messages), cam


def test_each_cameras_outputs_leave_in_the_order_its_frames_came(io):
    """Backbone, heads and publishing run on three threads (stage.py), a batch's heads while the
    next batch's backbone runs: a camera's outputs must still go out oldest first."""
    outs, pubs, _ = io
    first, frames = 5000, 15
    for i in range(frames):
        for cam, (image_pub, _) in pubs.items():
            h, w = CAMERAS[cam][2]
            image_pub.publish(make_image(h, w, stamp=(first + i, 7), frame_id=cam, seed=i))
        time.sleep(0.01)
    # The last frame of each camera is never replaced, so it is always processed.
    checked = {"front": "depth/image", "left": "segmentation/image", "rear": "depth/image"}
    for cam, topic in checked.items():
        outs[cam, topic].wait_for(lambda m: _stamp_of(m) == (first + frames - 1, 7))
    for cam, topic in checked.items():
        secs = [
            m.header.stamp.sec
            for m in outs[cam, topic].messages
            if first <= m.header.stamp.sec < first + frames
        ]
        assert secs == sorted(set(secs)), (cam, secs)  # increasing, none twice
        assert len(secs) >= 2, (cam, secs)  # more than the last frame went through


def test_each_camera_has_its_latched_label_info(harness):
    for cam in CAMERAS:
        col = harness.client.collect(f"{cam}/segmentation/label_info", String, LABEL_INFO_QOS)
        doc = json.loads(col.wait_for(timeout=20.0).data)
        assert [c["class_name"] for c in doc["class_map"]][:-1] == list(tiny_config().class_names)


def test_bad_input_on_one_camera_leaves_the_others_running(io):
    outs, pubs, diag = io
    bad = make_image(60, 80, frame_id="left")
    bad.step = 10  # shorter than a row: rejected as bad input before any pixel is read
    pubs["left"][0].publish(bad)
    values = _camera_diag(diag, "left", lambda v: int(v.get("bad inputs", "0")) >= 1)
    assert values["__level__"] in (str(WARN), str(ERROR))
    stamp = (400, 4)
    pubs["front"][0].publish(make_image(96, 160, stamp=stamp, frame_id="front"))
    outs["front", "segmentation/image"].wait_for(lambda m: _stamp_of(m) == stamp)
    assert _camera_diag(diag, "front", lambda v: True)["bad inputs"] == "0"


def test_stopped_camera_turns_warn_then_error_while_a_live_one_stays_ok(io):
    outs, pubs, diag = io
    # Stamps 0.1 s apart from 1 s on: below earlier tests' stamps, so the reception estimate
    # restarts (ReceptionMonitor) and sees a steady 10 Hz camera.
    frame = 0

    def stamp() -> tuple[int, int]:
        return 1 + frame // 10, (frame % 10) * 100_000_000

    for cam in ("front", "rear"):  # calibrated: no camera_info warning
        pubs[cam][1].publish(make_camera_info(*CAMERAS[cam][2], frame_id=cam))
    stop = time.monotonic() + 2.0
    while time.monotonic() < stop:  # both cameras streaming at ~10 Hz
        for cam in ("front", "rear"):
            h, w = CAMERAS[cam][2]
            pubs[cam][0].publish(make_image(h, w, stamp=stamp(), frame_id=cam))
        frame += 1
        time.sleep(0.1)
    streaming = _camera_diag(diag, "front", lambda v: True)
    assert streaming["__level__"] == str(OK), streaming
    # front stops; rear keeps streaming: front goes WARN then ERROR, rear stays OK.
    warn = error = rear = None
    deadline = time.monotonic() + 15.0
    while error is None and time.monotonic() < deadline:
        h, w = CAMERAS["rear"][2]
        pubs["rear"][0].publish(make_image(h, w, stamp=stamp(), frame_id="rear"))
        frame += 1
        time.sleep(0.1)
        last = diag.messages[-1] if diag.messages else None
        if last is None:
            continue
        front = diag_values(last, "camera front")
        level = int(front.get("__level__", OK))
        if level == WARN and warn is None:
            warn = front
        if level == ERROR:
            error = front
            rear = diag_values(last, "camera rear")
    # WARN: its rate fell below the rate learned from its stream; ERROR: no frame for a timeout.
    assert warn is not None and "below the minimum" in warn["__message__"], warn
    assert error is not None and "input stale: no frame for" in error["__message__"], error
    assert rear["__level__"] == str(OK), rear
    assert float(rear["input rate hz"]) > 1.0
    accel = diag_values(diag.messages[-1], "accelerator")
    assert accel["backend"] == "cpu" and accel["cameras"] == "front,left,rear"


def test_per_camera_expected_rate_judges_that_camera_only(io, harness):
    """rear.expected_input_rate 50 Hz with rear at ~10 Hz: rear WARN naming the expected rate;
    front at the same rate, learned, stays OK. A negative rate is refused."""
    _, pubs, diag = io
    c = harness.client
    [bad] = c.set_parameters(harness.node_name, {"rear.expected_input_rate": -1.0})
    assert not bad.successful and "rear.expected_input_rate" in bad.reason
    # A 2 s window: front's learned rate then tolerates the loop's hiccups on a busy host.
    changes = {"rear.expected_input_rate": 50.0, "input_rate_window": 2.0}
    assert all(r.successful for r in c.set_parameters(harness.node_name, changes))
    for cam in ("front", "rear"):  # calibrated: no camera_info warning
        pubs[cam][1].publish(make_camera_info(*CAMERAS[cam][2], frame_id=cam))
    try:
        frame, slow = 0, None
        deadline = time.monotonic() + 15.0
        while slow is None and time.monotonic() < deadline:
            for cam in ("front", "rear"):
                h, w = CAMERAS[cam][2]
                # From ~0 s: below the earlier tests' stamps, so the reception estimate restarts.
                stamp = (frame // 10, (frame % 10) * 100_000_000 + 1)
                pubs[cam][0].publish(make_image(h, w, stamp=stamp, frame_id=cam))
            frame += 1
            time.sleep(0.1)
            last = diag.messages[-1] if diag.messages and frame > 25 else None
            rear = diag_values(last, "camera rear") if last is not None else {}
            if rear.get("__level__") == str(WARN) and "expected 50.00 Hz" in rear["__message__"]:
                slow = last
        assert slow is not None, "rear never WARN for its expected rate"
        assert diag_values(slow, "camera rear")["expected input rate hz"] == "50.00"
        front = diag_values(slow, "camera front")
        assert front["__level__"] == str(OK), front["__message__"]
    finally:
        restore = {"rear.expected_input_rate": 0.0, "input_rate_window": RATE_WINDOW_S}
        c.set_parameters(harness.node_name, restore)


def test_camera_parameters_validated_and_applied(io, harness):
    outs, pubs, _ = io
    c = harness.client
    results = c.set_parameters(harness.node_name, {"left.tasks": ["bogus"]})
    assert not results[0].successful and "left.tasks" in results[0].reason
    assert c.set_parameters(harness.node_name, {"left.tasks": ["depth"]})[0].successful
    assert list(c.get_parameters(harness.node_name, ["left.tasks"])["left.tasks"]) == ["depth"]
    stamp = (600, 6)
    pubs["left"][0].publish(make_image(60, 80, stamp=stamp, frame_id="left"))
    outs["left", "depth/image"].wait_for(lambda m: _stamp_of(m) == stamp)


def test_bad_camera_list_stops_the_node_naming_the_parameter():
    h = NodeHarness(
        params={"cameras": ["front", "front"]},
        executable=EXECUTABLE,
        node_name=NODE,
        wait_active=False,
    )
    try:
        wait_until(lambda: not h.node.alive(), 30.0, "the node to exit")
        assert h.node.proc.returncode == 2
        assert "parameter 'cameras'" in h.node.output() and "unique" in h.node.output()
    finally:
        h.close()


def test_lifecycle_deactivate_activate_and_shutdown_exit_cleanly():
    h = NodeHarness(params={"cameras": ["a", "b"]}, executable=EXECUTABLE, node_name=NODE)
    try:
        c = h.client
        assert c.change_state(h.node_name, Transition.TRANSITION_DEACTIVATE)
        assert c.get_state(h.node_name) == "inactive"
        assert c.change_state(h.node_name, Transition.TRANSITION_ACTIVATE)
        col = c.collect("b/segmentation/image", Image)
        pub = c.publisher("b/image", Image)
        c.wait_for_subscribers(pub)
        c.wait_for_matched(col)
        pub.publish(make_image(48, 64, stamp=(9, 0), frame_id="b"))
        col.wait_for(lambda m: _stamp_of(m) == (9, 0))  # the threads restarted after reactivation
        assert c.change_state(h.node_name, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert h.node.wait(30) == 0
    finally:
        h.close()
