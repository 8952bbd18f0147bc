# SPDX-License-Identifier: Apache-2.0
"""Diagnostics building blocks: rates, latency percentiles, keyed log throttling, the status message."""

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from edgemoe_ros.ros.diagnostics import (
    ERROR,
    OK,
    WARN,
    InputMonitor,
    KeyedThrottle,
    LatencyWindow,
    NodeStats,
    RollingRate,
    StreamCheck,
    StreamLimits,
    build_status,
    expert_usage_values,
    status_prefix,
    values_dict,
    with_stream,
)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_rolling_rate_steady_stream_and_decay():
    clock = FakeClock()
    rate = RollingRate(window_s=5.0, clock=clock)
    assert rate.rate() == 0.0
    for _ in range(40):  # 20 Hz for 2 s
        rate.tick()
        clock.t += 0.05
    assert rate.rate() == pytest.approx(20.0, rel=0.05)
    clock.t += 2.0  # stream stopped: the rate must fall, not freeze
    assert rate.rate() < 11.0
    clock.t += 10.0
    assert rate.rate() == 0.0


def _stream(monitor: InputMonitor, clock: FakeClock, hz: float, seconds: float, **check) -> StreamCheck:
    """Frames at ``hz`` for ``seconds`` with a report every 0.5 s; the last report."""
    result = None
    next_report = clock.t
    for _ in range(int(round(hz * seconds))):
        monitor.tick()
        clock.t += 1.0 / hz
        if clock.t >= next_report:
            result = monitor.check(True, **check)
            next_report += 0.5
    return result if result is not None else monitor.check(True, **check)


def _quiet(monitor: InputMonitor, clock: FakeClock, seconds: float, **check) -> list[StreamCheck]:
    """No frame for ``seconds``; a report every 0.1 s."""
    out = []
    for _ in range(int(round(seconds * 10))):
        clock.t += 0.1
        out.append(monitor.check(True, **check))
    return out


def test_stopped_stream_is_warn_then_error_then_ok_when_it_comes_back():
    """diagnostic_updater's FrequencyStatus/TimeStampStatus semantics on a learned rate: the rate
    over the window falls below learned * (1 - tolerance) -> WARN; no frame for input_timeout ->
    ERROR; frames again -> OK."""
    clock = FakeClock()
    mon = InputMonitor(StreamLimits(tolerance=0.1, window_s=2.0, timeout_s=4.0), clock=clock)
    steady = _stream(mon, clock, 20.0, 3.0)
    assert steady.level == OK and not steady.problems
    v = dict(steady.values)
    assert float(v["input rate hz"]) == pytest.approx(20.0, rel=0.02)
    assert v["expected input rate hz"].startswith("learned 20.0")
    reports = _quiet(mon, clock, 5.0)
    levels = [r.level for r in reports]
    first_warn, first_error = levels.index(WARN), levels.index(ERROR)
    # Seconds since the last frame at each report (the stream left one period after it).
    silence = [0.05 + (i + 1) * 0.1 for i in range(len(levels))]
    # WARN about tolerance * window after the last frame (0.2 s + one period), ERROR after the timeout.
    assert 0.2 <= silence[first_warn] <= 0.6, levels
    assert 4.0 < silence[first_error] <= 4.1, levels
    assert set(levels[first_warn:first_error]) == {WARN}
    assert "below the minimum 18.00 Hz (learned 20.00 Hz - 10 %)" in reports[first_warn].problems[0]
    assert "input stale: no frame for 4." in reports[first_error].problems[0]
    mon.tick()  # the camera is back: its first frame measures no rate yet, and alarms nothing
    clock.t += 0.01
    assert mon.check(True).level == OK
    back = _stream(mon, clock, 20.0, 0.5)
    assert back.level == OK, back.problems


def test_slow_stream_is_warn_only_with_an_expected_rate():
    clock = FakeClock()
    expected = InputMonitor(StreamLimits(expected_hz=30.0, tolerance=0.1, window_s=2.0), clock=clock)
    slow = _stream(expected, clock, 20.0, 4.0)
    assert slow.level == WARN and "expected 30.00 Hz" in slow.problems[0]
    clock2 = FakeClock()
    learned = InputMonitor(StreamLimits(window_s=2.0), clock=clock2)
    assert _stream(learned, clock2, 20.0, 4.0).level == OK  # a steady stream is its own reference
    clock3 = FakeClock()
    met = InputMonitor(StreamLimits(expected_hz=30.0, tolerance=0.1, window_s=2.0), clock=clock3)
    assert _stream(met, clock3, 28.0, 4.0).level == OK  # within tolerance


def test_slow_steady_camera_does_not_flap():
    """A camera at 0.7 Hz with a 5 s window: a whole-frames-per-window count would swing between
    3 and 4 frames (0.6 / 0.8 Hz, around the 0.63 Hz minimum); (frames - 1) / span is exact."""
    clock = FakeClock()
    mon = InputMonitor(StreamLimits(expected_hz=0.7, tolerance=0.1, window_s=5.0), clock=clock)
    levels = []
    for _ in range(40):
        mon.tick()
        for _ in range(14):  # 1/0.7 s in steps of 0.1 s, a report at each
            clock.t += 1 / 0.7 / 14
            levels.append(mon.check(True).level)
    assert set(levels[60:]) == {OK}


def test_absent_stream_warn_then_error_and_nothing_while_not_watching():
    clock = FakeClock()
    mon = InputMonitor(StreamLimits(window_s=1.0, timeout_s=3.0), clock=clock)
    for _ in range(50):  # inactive / no task enabled: never an alarm, however long
        clock.t += 0.1
        assert mon.check(False).level == OK
    reports = _quiet(mon, clock, 3.5)  # activated: no frame ever
    levels = [r.level for r in reports]
    assert levels[:9] == [OK] * 9  # a whole window of grace after checking starts
    assert WARN in levels and levels[-1] == ERROR and levels.index(WARN) < levels.index(ERROR)
    assert "input stale" in reports[levels.index(WARN)].problems[0]
    assert mon.check(False).level == OK  # deactivated: disarmed at once


def test_a_few_frames_by_hand_teach_no_rate_and_raise_no_alarm():
    clock = FakeClock()
    mon = InputMonitor(StreamLimits(window_s=5.0, timeout_s=10.0), clock=clock)
    mon.check(True)
    _stream(mon, clock, 10.0, 0.8)  # 8 frames, as a test publishing by hand does
    reports = _quiet(mon, clock, 4.0)
    assert {r.level for r in reports} == {OK}
    assert dict(reports[-1].values)["expected input rate hz"] == "unknown"


def test_missing_camera_info_is_warn_and_says_what_depth_uses():
    clock = FakeClock()
    mon = InputMonitor(StreamLimits(window_s=1.0), clock=clock)
    first = _stream(mon, clock, 20.0, 0.5, has_camera_info=False, depth_active=True)
    assert first.level == OK  # camera_info usually comes with the first frames: a window of grace
    later = _stream(mon, clock, 20.0, 1.5, has_camera_info=False, depth_active=True)
    assert later.level == WARN and "no camera_info" in later.problems[0]
    assert "model's default camera" in later.problems[0]
    assert dict(later.values)["camera_info received"] == "no"
    seg_only = _stream(mon, clock, 20.0, 0.5, has_camera_info=False, depth_active=False)
    assert "without camera_info" in seg_only.problems[0]
    assert _stream(mon, clock, 20.0, 0.5, has_camera_info=True).level == OK


def test_with_stream_keeps_the_worst_level_and_every_problem():
    from diagnostic_msgs.msg import DiagnosticStatus as S

    stale = StreamCheck(ERROR, ("input stale: no frame for 11.0 s",), ())
    assert with_stream(S.OK, "active", StreamCheck(OK, (), ())) == (S.OK, "active")
    assert with_stream(S.OK, "active", stale) == (S.ERROR, "active: input stale: no frame for 11.0 s")
    level, msg = with_stream(S.WARN, "active: 1 bad input(s) since last report", stale)
    assert level == S.ERROR and msg == "active: 1 bad input(s) since last report; input stale: no frame for 11.0 s"


def test_status_prefix_has_no_leading_slash():
    assert status_prefix("edgemoe_node", "/front/edgemoe_node", use_fqn=False) == "edgemoe_node"
    assert status_prefix("edgemoe_node", "/front/edgemoe_node", use_fqn=True) == "front/edgemoe_node"
    assert status_prefix("edgemoe_node", "/edgemoe_node", use_fqn=True) == "edgemoe_node"


def test_latency_percentiles_over_window():
    lat = LatencyWindow(maxlen=100)
    assert lat.percentiles() is None
    for v in range(1, 201):  # only the last 100 (101..200) are kept
        lat.add(v)
    p = lat.percentiles()
    assert p[50] == pytest.approx(150.5)
    assert p[90] == pytest.approx(np.percentile(np.arange(101, 201), 90))
    assert p[99] > p[90] > p[50]


def test_keyed_throttle_is_per_key_and_reports_suppressed():
    clock = FakeClock()
    th = KeyedThrottle(period_s=5.0, clock=clock)
    assert th.allow("encoding") == 0
    assert th.allow("encoding") is None
    assert th.allow("truncated") == 0  # another kind is not hidden by the first
    assert th.allow("encoding") is None
    clock.t += 5.0
    assert th.allow("encoding") == 2


def test_throttled_log_at_several_levels_on_one_rclpy_logger_never_raises():
    """rclpy binds one severity to each logging call site and raises ValueError when it changes:
    KeyedThrottle.log, the one call site of both nodes' throttled lines, logs at every level."""
    import rclpy.logging

    clock = FakeClock()
    th = KeyedThrottle(period_s=5.0, clock=clock)
    logger = rclpy.logging.get_logger("keyed_throttle_probe")
    for level in ("warning", "error", "debug", "info", "warning"):
        th.log(logger, level, f"key.{level}", f"a line at {level}")
        clock.t += 5.0


def test_expert_usage_values_shares_and_per_layer():
    usage = {"semseg": np.array([[3, 1, 0, 0], [0, 0, 2, 2]]), "depth": np.zeros((2, 4), np.int64)}
    vals = {kv.key: kv.value for kv in expert_usage_values(usage, (1, 3))}
    assert vals["experts semseg share %"] == "37.5 12.5 25.0 25.0"
    assert vals["experts semseg block 3"] == "0 0 2 2"
    assert vals["experts depth share %"] == "0.0 0.0 0.0 0.0"


def test_build_status_reports_everything_spec_asks_for():
    stats = NodeStats()
    stats.count_bad("encoding")
    stats.count_bad("encoding")
    stats.count_bad("truncated")
    stats.count("published", 5)
    stats.count("backend_faults")
    stats.inference_ms.add(10.0)
    stats.stamp_to_publish_ms.add(20.0)
    status = build_status("/ns/edgemoe_node", DiagnosticStatus.WARN, "active", "cpu", ("semseg",), "explicit",
                          stats, {"submitted": 9, "dropped": 2}, {"semseg": np.ones((2, 4), np.int64)}, (1, 3))
    v = values_dict(status)
    assert status.hardware_id == "cpu" and status.level == DiagnosticStatus.WARN
    assert v["backend"] == "cpu" and v["active tasks"] == "semseg"
    assert v["bad input encoding"] == "2" and v["bad input truncated"] == "1" and v["bad inputs"] == "3"
    assert v["frames processed"] == "5" and v["frames dropped (queue)"] == "2" and v["frames received"] == "9"
    assert v["backend faults"] == "1"
    assert v["latency inference ms"] == "p50=10.0 p90=10.0 p99=10.0"
    assert v["latency stamp to publish ms"].startswith("p50=20.0")
    assert "experts semseg share %" in v
    for key in ("input rate hz", "output rate hz", "task mode"):
        assert key in v


# ----- the node's wiring, in this process -----
def test_node_judges_its_input_only_while_active_with_a_task(ros_context, tmp_path):
    """No task enabled, or not active: no stale alarm however long no frame comes; a task
    enabled: ERROR once no frame came for input_timeout. The status is '<node name>: inference'
    and its hardware_id names the CPU."""
    import time
    import uuid

    from rclpy.parameter import Parameter
    from ros_testing import write_tiny_weights

    from edgemoe_ros.ros.hardware_id import host_cpu
    from edgemoe_ros.ros.node import EdgeMoeNode

    name = f"edgemoe_node_{uuid.uuid4().hex[:8]}"
    overrides = {"weights_path": str(write_tiny_weights(tmp_path / "tiny.safetensors")),
                 "autostart": False, "input_rate_window": 0.1, "input_timeout": 0.2}
    node = EdgeMoeNode(name, context=ros_context, namespace="/front",
                       parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    sent = []
    node._diag_pub.publish = sent.append  # the report, without a DDS peer

    def report(wait_s: float = 0.0) -> DiagnosticStatus:
        node._publish_diagnostics()  # arms the check when it starts watching
        time.sleep(wait_s)
        node._publish_diagnostics()
        [status] = sent[-1].status
        return status

    try:
        node.trigger_configure()
        node.trigger_activate()
        [ok] = node.set_parameters([Parameter("tasks", Parameter.Type.STRING_ARRAY, [])])
        assert ok.successful, ok.reason
        idle = report(0.4)
        assert idle.level == DiagnosticStatus.OK and idle.message == "active", idle.message
        assert idle.name == f"{name}: inference" and idle.hardware_id == f"cpu: {host_cpu()}"
        node.set_parameters([Parameter("tasks", value=["semseg"])])
        stale = report(0.4)
        assert stale.level == DiagnosticStatus.ERROR and "input stale: no frame for" in stale.message
        node.trigger_deactivate()
        assert report().level == DiagnosticStatus.OK
    finally:
        node.destroy_node()


# ----- end to end: the running node's /diagnostics -----
@pytest.mark.ros
def test_running_node_reports_rates_latency_and_expert_usage():
    import time

    from ros_testing import NodeHarness, make_image, wait_diag
    from sensor_msgs.msg import Image

    h = NodeHarness(params={"queue_size": 10})
    try:
        c = h.client
        diag = c.diagnostics()
        seg = c.collect("segmentation/image", Image)
        pub = c.publisher("image", Image)
        c.wait_for_subscribers(pub)
        c.wait_for_matched(seg)
        frames = 8
        for i in range(frames):
            pub.publish(make_image(seed=i))
            time.sleep(0.1)
        v = wait_diag(diag, lambda v: int(v["frames processed"]) >= frames)
        assert v["backend"] == "cpu" and v["active tasks"] == "semseg,depth" and v["__level__"] == "0"
        assert float(v["input rate hz"]) > 0 and float(v["output rate hz"]) > 0
        for key in ("latency stamp to publish ms", "latency inference ms"):
            p = dict(item.split("=") for item in v[key].split())
            assert set(p) == {"p50", "p90", "p99"}, v[key]
            assert 0 < float(p["p50"]) <= float(p["p90"]) <= float(p["p99"]) < 10_000
        for task in ("semseg", "depth"):
            shares = [float(x) for x in v[f"experts {task} share %"].split()]
            assert sum(shares) == pytest.approx(100.0, abs=0.5) and len(shares) == 4  # tiny model: 4 experts
            assert f"experts {task} block 1" in v and f"experts {task} block 3" in v
    finally:
        h.close()


@pytest.mark.ros
def test_running_node_camera_stream_ok_warn_error_ok_and_names_itself_and_its_device():
    """The node in its own process, a camera at a steady 10 Hz: OK; without camera_info: WARN
    saying depth uses the default camera; camera stopped: WARN, then ERROR; camera back: OK. The
    status is ``edgemoe_node: inference`` (no namespace, no leading slash) and its hardware_id
    names the CPU."""
    import threading
    import time

    from ros_testing import NodeHarness, make_camera_info, make_image
    from sensor_msgs.msg import CameraInfo, Image

    from edgemoe_ros.ros.hardware_id import host_cpu

    name = "edgemoe_node: inference"
    h = NodeHarness(params={"input_rate_window": 0.5, "input_timeout": 1.5}, namespace="/front")
    try:
        c = h.client
        diag = c.diagnostics()
        image_pub = c.publisher(h.topic("image"), Image)
        info_pub = c.publisher(h.topic("camera_info"), CameraInfo)
        c.wait_for_subscribers(image_pub)
        c.wait_for_subscribers(info_pub)
        streaming = threading.Event()
        done = threading.Event()

        def camera() -> None:
            while not done.is_set():
                if streaming.is_set():
                    image_pub.publish(make_image())
                time.sleep(0.1)

        def ours(msg) -> DiagnosticStatus | None:
            return next((s for s in msg.status if s.name == name), None)

        def wait_level(level: bytes, text: str = "", timeout: float = 20.0) -> DiagnosticStatus:
            start = max(diag.count() - 1, 0)
            msg = diag.wait_for(lambda m: ours(m) is not None and ours(m).level == level
                                and text in ours(m).message, timeout, start=start)
            return ours(msg)

        thread = threading.Thread(target=camera, daemon=True)
        thread.start()
        try:
            streaming.set()
            no_info = wait_level(DiagnosticStatus.WARN, "no camera_info")
            assert "model's default camera" in no_info.message, no_info.message
            info_pub.publish(make_camera_info())
            ok = wait_level(DiagnosticStatus.OK)
            assert ok.hardware_id == f"cpu: {host_cpu()}", ok.hardware_id
            assert not any(s.name.startswith("/") for m in diag.messages for s in m.status)
            v = values_dict(ok)
            assert 5.0 < float(v["input rate hz"]) < 15.0 and v["expected input rate hz"].startswith("learned")

            streaming.clear()  # the camera stops
            warn = wait_level(DiagnosticStatus.WARN, "below the minimum")
            error = wait_level(DiagnosticStatus.ERROR, "input stale: no frame for")
            assert float(values_dict(error)["seconds since last frame"]) > 1.5
            assert warn.message.startswith("active: ")

            streaming.set()  # and comes back
            wait_level(DiagnosticStatus.OK)
        finally:
            done.set()
            thread.join(5.0)
    finally:
        h.close()
