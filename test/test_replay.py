# SPDX-License-Identifier: Apache-2.0
"""Replay across processes: ``edgemoe-bag play`` -> ``edgemoe_node`` -> ``edgemoe-bag record``.

A generated sequence is written with ``rosbags``, played into the real node (own process, tiny
random model, RELIABLE QoS, queue long enough that nothing is dropped at the played rate) and the
outputs are recorded by a third process. Every output stamp must be an input stamp and every input
must come out. Each test runs in its own ROS domain on localhost with logs under tmp.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ros_testing as rt

from edgemoe_ros.bag import CameraInfoParams, write_image_bag
from edgemoe_ros.bag import messages as m
from edgemoe_ros.bag.cli import RECORD_READY
from edgemoe_ros.bag.io import BagReader

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent
H, W = 48, 80
FRAMES = 16
PERIOD_NS = 100_000_000  # 10 Hz: a tiny model on the cpu backend sustains this with a wide margin
START_NS = 1_700_000_000_000_000_000
STARTUP_TIMEOUT_S = rt.START_TIMEOUT_S
#: After the last frame is played: the node needs a few ms per frame; the rest is margin for a busy box.
DRAIN_TIMEOUT_S = 30.0


@pytest.fixture()
def ros_env(tmp_path: Path) -> dict[str, str]:
    return rt.ros_env(tmp_path)


class Procs:
    """Child processes with their stderr in files; all terminated (then killed) on exit."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.nodes: list[rt.NodeProcess] = []

    def start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.tmp / f"{name}.log"
        fh = open(log, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()
        self.procs.append((proc, log))
        return proc, log

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        parts = [f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for _, log in self.procs]
        return "\n".join(parts + [f"--- node\n{n.output()[-3000:]}" for n in self.nodes])


@pytest.fixture()
def procs(tmp_path: Path, ros_env: dict[str, str]) -> Iterator[Procs]:
    p = Procs(tmp_path, ros_env)
    try:
        yield p
    finally:
        p.close()


def _wait_for_text(log: Path, text: str, proc: subprocess.Popen, timeout: float, procs: Procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"{log.name}: no {text!r} within {timeout:.0f} s\n{procs.logs()}")


def _sequence(tmp_path: Path, storage: str) -> tuple[Path, list[int]]:
    rng = np.random.default_rng(2)
    stamps = [START_NS + i * PERIOD_NS for i in range(FRAMES)]
    frames = [(s, rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for s in stamps]
    bag = tmp_path / f"input_{storage}"
    write_image_bag(bag, frames, "/cam/image", "cam_optical", storage, CameraInfoParams.pinhole(W, H, 50.0),
                    "bgr8")
    return bag, stamps


def _recorded(bag: Path) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    with BagReader(bag) as reader:
        topics = [t.topic for t in reader.info().topics]
        for t, _, raw in reader.raw_messages(topics):
            out.setdefault(t, []).append(reader.deserialize(t, raw))
    return out


def test_play_into_node_every_frame_comes_out_with_its_stamp(tmp_path: Path, procs: Procs) -> None:
    bag, stamps = _sequence(tmp_path, "sqlite3")
    weights = rt.write_tiny_weights(tmp_path / "tiny.safetensors", seed=4)
    node = rt.NodeProcess(tmp_path, procs.env, namespace="/cam", params={
        "weights_path": str(weights), "backend": "cpu", "tasks": ["semseg", "depth"],
        "input_qos": "reliable", "output_qos": "reliable", "queue_size": FRAMES, "autostart": True})
    procs.nodes.append(node)
    out, out_info = tmp_path / "outputs", tmp_path / "output_info"
    images = ["/cam/segmentation/image", "/cam/segmentation/color", "/cam/depth/image"]
    # Images stop the recorder by count once all arrive; camera_info relays (which may start a frame
    # late, whenever the first camera_info reaches the node) go to a second recorder stopped by signal.
    rec, rec_log = procs.start("record", [str(BIN / "edgemoe-bag"), "record", str(out),
                                          *[f"{t}:{m.IMAGE_MSG}" for t in images],
                                          "--count", str(len(images) * FRAMES), "--queue-size", "100"])
    rec_info, info_log = procs.start("record_info", [str(BIN / "edgemoe-bag"), "record", str(out_info),
                                                     f"/cam/depth/camera_info:{m.CAMERA_INFO_MSG}"])
    for proc, log in ((rec, rec_log), (rec_info, info_log)):  # node configured, outputs matched
        _wait_for_text(log, RECORD_READY, proc, STARTUP_TIMEOUT_S, procs)

    play = subprocess.run([str(BIN / "edgemoe-bag"), "play", str(bag), "--qos", "reliable",
                           "--queue-size", str(FRAMES), "--wait-subscribers", "1",
                           "--wait-timeout", str(STARTUP_TIMEOUT_S)],
                          env=procs.env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S + 30)
    assert play.returncode == 0, play.stderr + procs.logs()
    assert f"published {2 * FRAMES} messages" in play.stderr

    try:
        rec.wait(timeout=DRAIN_TIMEOUT_S)  # exits by itself once every output arrived
    except subprocess.TimeoutExpired:
        rec.send_signal(signal.SIGINT)  # finish the bag with what arrived; the checks say what is missing
        rec.wait(timeout=20)
    rec_info.send_signal(signal.SIGINT)
    rec_info.wait(timeout=20)
    assert node.alive(), "node died during replay\n" + procs.logs()

    got = _recorded(out)
    for topic in ("/cam/segmentation/image", "/cam/depth/image", "/cam/segmentation/color"):
        msgs = got.get(topic, [])
        out_stamps = [m.stamp_ns(x) for x in msgs]
        assert set(out_stamps) <= set(stamps), f"{topic}: stamps not from the input: {set(out_stamps) - set(stamps)}"
        missing = sorted(set(stamps) - set(out_stamps))
        assert not missing, f"{topic}: {len(missing)} of {FRAMES} frames missing: {missing}\n{procs.logs()}"
        assert len(out_stamps) == FRAMES, f"{topic}: duplicates in {out_stamps}"
        assert out_stamps == sorted(out_stamps), f"{topic}: out of order"
        assert all(x.header.frame_id == "cam_optical" and (x.height, x.width) == (H, W) for x in msgs)
    assert {x.encoding for x in got["/cam/segmentation/image"]} == {"mono8"}
    assert {x.encoding for x in got["/cam/depth/image"]} == {"32FC1"}
    infos = _recorded(out_info).get("/cam/depth/camera_info", [])
    assert infos and {m.stamp_ns(x) for x in infos} <= set(stamps)
    assert all((x.width, x.height) == (W, H) for x in infos)


@pytest.mark.parametrize("restamp", [False, True])
def test_play_publishes_recorded_bytes_or_restamps_pairs(tmp_path: Path, procs: Procs, restamp: bool) -> None:
    """Without a node: play -> record keeps every message bit-exact, or restamps image+camera_info alike."""
    bag, stamps = _sequence(tmp_path, "mcap")
    out = tmp_path / "copy"
    rec, rec_log = procs.start("record", [str(BIN / "edgemoe-bag"), "record", str(out), "/cam/image",
                                          "/cam/camera_info", "--count", str(2 * FRAMES)])
    argv = [str(BIN / "edgemoe-bag"), "play", str(bag), "--max-rate", "--queue-size", str(2 * FRAMES),
            "--wait-subscribers", "1", "--wait-timeout", str(STARTUP_TIMEOUT_S)]
    play = subprocess.run(argv + (["--restamp"] if restamp else []), env=procs.env, capture_output=True,
                          text=True, timeout=STARTUP_TIMEOUT_S + 30)
    assert play.returncode == 0, play.stderr
    assert rec.wait(timeout=30) == 0, procs.logs()
    got, src = _recorded(out), _recorded(bag)
    images, infos = got["/cam/image"], got["/cam/camera_info"]
    assert len(images) == len(infos) == FRAMES
    if not restamp:
        for a, b in zip(images, src["/cam/image"], strict=True):
            assert m.stamp_ns(a) == m.stamp_ns(b)
            np.testing.assert_array_equal(a.data, b.data)
        return
    new = [m.stamp_ns(x) for x in images]
    assert not set(new) & set(stamps), "restamped messages kept an original stamp"
    assert new == sorted(new) and len(set(new)) == FRAMES
    assert [m.stamp_ns(x) for x in infos] == new, "camera_info must carry its image's new stamp"
    assert abs(new[0] - time.time_ns()) < 600 * 10**9
