# SPDX-License-Identifier: Apache-2.0
"""Diagnostics building blocks: rates, latency percentiles, keyed log throttling, the status message."""

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from edgemoe_ros.ros.diagnostics import (
    KeyedThrottle,
    LatencyWindow,
    NodeStats,
    RollingRate,
    build_status,
    expert_usage_values,
    values_dict,
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
