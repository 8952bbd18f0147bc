# SPDX-License-Identifier: Apache-2.0
"""The shipped configuration receives every 720p frame of a same-host camera (issue 22), follows a
best-effort camera, and says on /diagnostics when fewer frames arrive than the camera sent.

Unlike the other node tests these run the node on config/edgemoe.yaml as shipped (no reliable
override): the defaults are what a user gets."""

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.qos import HistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from ros_testing import (
    NODE_SCRIPT,
    NodeProcess,
    RosClient,
    make_image,
    ros_env,
    tmp_dir,
    wait_diag,
    write_tiny_weights,
)
from sensor_msgs.msg import Image

from edgemoe_ros.ros.diagnostics import ReceptionMonitor

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "edgemoe.yaml"
#: The issue's bar: a same-host 720p camera at 30 Hz delivers >= 99 % of its frames to the node.
FRAMES, RATE_HZ, DELIVERED = 100, 30.0, 0.99


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _feed(monitor, clock, stamps_ns):
    for s in stamps_ns:
        clock.t += 0.033
        monitor.add(s)


def test_reception_monitor_infers_offered_frames_from_stamps():
    clock = _Clock()
    every = ReceptionMonitor(window_s=5.0, clock=clock)
    _feed(every, clock, [10**9 + i * 33_333_333 for i in range(60)])
    est = every.estimate()
    assert (est.received == 60 and abs(est.offered - 60) < 0.5
            and abs(est.offered_rate_hz - 30) < 0.1)
    assert every.shortfall() is None
    clock1 = _Clock()
    # a software-stamped camera: +-20 % jitter
    jittery = ReceptionMonitor(window_s=5.0, clock=clock1)
    jitter = np.random.default_rng(1).uniform(-0.2, 0.2, 60) * 33_333_333
    _feed(jittery, clock1, [int(10**9 + i * 33_333_333 + j) for i, j in enumerate(jitter)])
    assert jittery.estimate().offered == 60 and jittery.shortfall() is None
    clock2 = _Clock()
    third = ReceptionMonitor(window_s=5.0, clock=clock2)
    _feed(third, clock2, [10**9 + i * 33_333_333 for i in range(0, 60, 3) if i % 9 != 3] +
          [10**9 + i * 33_333_333 for i in range(60, 70)])
    assert "receiving" in third.shortfall()


def test_reception_monitor_restarts_on_stamps_going_back_and_forgets_old_frames():
    clock = _Clock()
    m = ReceptionMonitor(window_s=1.0, clock=clock)
    # 3 of 4 frames arrive
    _feed(m, clock, [10**9 + i * 100_000_000 for i in range(40) if i % 4 != 3])
    assert m.shortfall() is not None
    # a bag restarted: stamps go back
    _feed(m, clock, [5 * 10**8 + i * 100_000_000 for i in range(6)])
    est = m.estimate()
    assert est.received == 6 and m.shortfall() is None
    clock.t += 2.0
    assert m.estimate() is None  # nothing arrived within the window


class _ShippedNode:
    """edgemoe_node on the shipped config/edgemoe.yaml (only the model file and a faster
    diagnostics period changed) as the launch file starts it, and a client on its graph."""

    def __init__(self, tmp) -> None:
        body = next(iter(yaml.safe_load(CONFIG.read_text()).values()))["ros__parameters"]
        # what this test is about: the default, not the override
        assert body["input_qos"] != "reliable"
        weights = write_tiny_weights(tmp / "tiny.safetensors")
        params = tmp / "override.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
            "weights_path": str(weights), "diagnostics_period": 0.25}}}))
        self.env = ros_env(tmp)
        cmd = [str(NODE_SCRIPT), "--ros-args", "-r", "__node:=edgemoe_node",
               "--params-file", str(CONFIG), "--params-file", str(params), "-p", "autostart:=true"]
        self.node = NodeProcess(tmp, self.env, command=cmd)
        self.client = RosClient(self.env)
        self.client.wait_for_state("/edgemoe_node", "active")

    def close(self) -> None:
        self.client.close()
        self.node.stop()


@pytest.fixture
def shipped():
    n = _ShippedNode(Path(tmp_dir()))
    try:
        yield n
    finally:
        n.close()


def _publish_at(pub, messages, rate_hz, stamps):
    t0 = time.monotonic()
    for i, (msg, stamp) in enumerate(zip(messages, stamps, strict=True)):
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        pub.publish(msg)
        delay = t0 + (i + 1) / rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _matched_both_ways(pub, diag, shipped) -> int:
    """Frames the node received once it hears ``pub`` (small warm-up frames until one arrives).

    Discovery matches the two sides at slightly different times; frames published before the
    node's reader matched the writer are not delivered (volatile durability), on any QoS."""
    while pub.get_subscription_count() < 1:
        time.sleep(0.05)
    for i in range(100):
        pub.publish(make_image(stamp=(50, i)))
        time.sleep(0.3)  # > the diagnostics period
        if int(wait_diag(diag, lambda v: "frames received" in v)["frames received"]) > 0:
            time.sleep(0.3)
            return int(wait_diag(diag, lambda v: True)["frames received"])
    raise AssertionError("the node never received a warm-up frame: "
                         f"{shipped.node.output()[-3000:]}")


@pytest.mark.ros
def test_shipped_config_receives_every_720p_frame_of_a_reliable_camera(shipped):
    """A reliable camera, 100 1280x720 bgr8 frames at 30 Hz: at least 99 of them arrive.

    Before the fix the shipped input_qos (sensor_data) turned the link best effort and 4 of 60
    such frames arrived here. The publisher keeps all samples: with a driver's usual depth 10 a
    host starved of CPU (load 10 on these 2 cores) lets the *publisher* overwrite 1-5 of 40 frames
    before they are delivered; that is the camera's choice, and the node then reports them as
    'frames lost in transport' (DDS's lost-sample count), which this test also checks stays 0."""
    c = shipped.client
    diag = c.diagnostics()
    pub = c.publisher("image", Image, QoSProfile(history=HistoryPolicy.KEEP_ALL,
                                                 reliability=QoSReliabilityPolicy.RELIABLE))
    base = _matched_both_ways(pub, diag, shipped)
    px = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    frames = [make_image(pixels=np.roll(px, 7 * i, axis=1), encoding="bgr8")
              for i in range(FRAMES)]
    _publish_at(pub, frames, RATE_HZ, [(100, int(i * 1e9 / RATE_HZ)) for i in range(FRAMES)])
    try:
        v = wait_diag(diag, lambda v: int(v.get("frames received", 0)) >= base + FRAMES,
                      timeout=20)
    except AssertionError:
        v = wait_diag(diag, lambda v: True)
    keys = ("frames received", "frames lost in transport", "bad inputs", "__message__")
    received = int(v["frames received"]) - base
    assert received >= DELIVERED * FRAMES and v["bad inputs"] == "0", \
        {k: v[k] for k in keys}
    assert v["frames lost in transport"] == "0", {k: v[k] for k in keys}


@pytest.mark.ros
def test_shipped_config_follows_a_best_effort_camera_that_starts_later(shipped):
    """input_qos auto subscribes reliable; a best-effort publisher appearing later is still
    heard."""
    c = shipped.client
    diag = c.diagnostics()
    pub = c.publisher("image", Image, qos_profile_sensor_data)
    c.wait_for_subscribers(pub)
    got = 0
    # small frames: best effort delivers them; until the switch nothing arrives
    for i in range(40):
        pub.publish(make_image(stamp=(300, i)))
        time.sleep(0.1)
        got = int(wait_diag(diag, lambda v: "frames received" in v, timeout=10)["frames received"])
        if got >= 3:
            break
    assert got >= 3, shipped.node.output()[-3000:]
    assert "best-effort publisher appeared" in shipped.node.output()


@pytest.mark.ros
def test_diagnostics_warn_when_fewer_frames_arrive_than_the_camera_stamped(shipped):
    """A 30 Hz camera of which 3 frames of 4 get through: /diagnostics WARN, saying so.

    (A loss that keeps exactly every n-th frame looks like a camera at 1/n of the rate and is not
    detectable from stamps; real losses are irregular.)"""
    c = shipped.client
    diag = c.diagnostics()
    pub = c.publisher("image", Image)
    c.wait_for_subscribers(pub)
    kept = [i for i in range(32) if i % 4 != 3]
    _publish_at(pub, [make_image() for _ in kept], RATE_HZ * 3 / 4,
                [(400, int(i * 1e9 / RATE_HZ)) for i in kept])
    v = wait_diag(diag, lambda v: v["__level__"] == "1" and "receiving" in v["__message__"],
                  timeout=15)
    assert "of ~" in v["__message__"] and abs(float(v["offered rate hz"]) - RATE_HZ) < 1.0, v


def test_fastdds_profile_is_a_default_profile_and_installed():
    import xml.etree.ElementTree as ET
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(ROOT / "config" / "fastdds_large_frames.xml").getroot()
    [participant] = root.findall(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    kinds = {t.findtext("d:type", namespaces=ns)
             for t in root.findall(".//d:transport_descriptor", ns)}
    # both kept: interoperates with participants without the profile
    assert kinds == {"SHM", "UDPv4"}

    assert 'glob("config/*.xml")' in (ROOT / "setup.py").read_text()
