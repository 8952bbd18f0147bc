# SPDX-License-Identifier: Apache-2.0
"""Helpers for tests that run ``edgemoe_node`` in its own process and drive it with real rclpy
clients.

Why a subprocess: it is how the node runs on a robot (its own executor, signals, exit code), and
it keeps a crashed node from taking pytest down. Every test gets its own ``ROS_DOMAIN_ID`` with
discovery limited to localhost, so parallel test runs on one machine never see each other.
RELIABLE QoS throughout: BEST_EFFORT drops large frames between processes on this machine.

Shared by the node tests and the bag replay tests.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from launch_xml import PACKAGE, REPO_ROOT, NodeDescription, launch_description  # noqa: F401
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init, save_weights
from edgemoe_ros.ros.conversions import rgb_to_compressed

#: The executable the package declares (console script); falls back to ``python -m``.
NODE_SCRIPT = Path(sys.executable).with_name("edgemoe_node")
NODE_NAME = "edgemoe_node"
MULTI_NODE_SCRIPT = Path(sys.executable).with_name("edgemoe_multi_node")
MULTI_NODE_NAME = "edgemoe_multi_node"
#: The multi-camera node's command for NodeHarness(executable=...), installed or from source.
MULTI_NODE_EXECUTABLE = (
    [str(MULTI_NODE_SCRIPT)] if MULTI_NODE_SCRIPT.exists()
    else [sys.executable, "-m", "edgemoe_ros.ros.executables", "multi"])
#: Generous: 2 shared CPU cores, many engineers; discovery + model import take a few seconds.
START_TIMEOUT_S = 60.0
MSG_TIMEOUT_S = 30.0
#: One get_state call while waiting for a state: a lost request is asked again after this.
STATE_POLL_TIMEOUT_S = 5.0
#: Fast DDS supports domain ids 0..232; 0 is the default everyone else uses.
DOMAIN_RANGE = (1, 232)

#: Set to keep NodeHarness temp dirs (node logs, params files) for post-mortem debugging.
KEEP_TMP_ENV = "EDGEMOE_KEEP_TEST_TMP"
#: Parameters every test node gets unless a test overrides them.
TEST_PARAMS: dict[str, Any] = {
    "input_qos": "reliable",
    "output_qos": "reliable",
    "diagnostics_period": 0.2,
}


def reliable_qos(depth: int = 10) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)


def ros_env(tmp_dir: str | os.PathLike, domain_id: int | None = None) -> dict[str, str]:
    """Environment for an isolated ROS graph: random domain, localhost discovery, logs in tmp."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(
        domain_id if domain_id is not None else random.randint(*DOMAIN_RANGE)
    )
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(Path(tmp_dir) / "ros_log")
    env.setdefault("HOME", str(tmp_dir))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_tiny_weights(path: str | os.PathLike, seed: int = 0, **config: Any) -> Path:
    """A small random model file (``random_init(tiny_config())``) the real Engine can run fast."""
    path = Path(path)
    save_weights(random_init(tiny_config(**config), seed=seed), path)
    return path


def write_params_file(
    path: str | os.PathLike, params: Mapping[str, Any], node_name: str = "/**"
) -> Path:
    """A ROS params YAML for ``--params-file`` (safer than ``-p`` for JSON strings and empty
    values)."""
    path = Path(path)
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": dict(params)}}, sort_keys=True))
    return path


def node_command(
    params_file: str | os.PathLike | None = None,
    params: Mapping[str, Any] | None = None,
    remaps: Mapping[str, str] | None = None,
    namespace: str | None = None,
    executable: Iterable[str] | None = None,
) -> list[str]:
    """The command line the launch file would produce: ``exe --ros-args [-r ns] [-r a:=b]
    [--params-file]``."""
    exe = (
        list(executable)
        if executable
        else (
            [str(NODE_SCRIPT)]
            if NODE_SCRIPT.exists()
            else [sys.executable, "-m", "edgemoe_ros.ros.executables"]
        )
    )
    cmd = exe + ["--ros-args"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    if params_file:
        cmd += ["--params-file", str(params_file)]
    for name, value in (params or {}).items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        cmd += ["-p", f"{name}:={text}"]
    return cmd


class NodeProcess:
    """``edgemoe_node`` in its own process group; output captured to a log file for failure
    messages."""

    def __init__(
        self,
        tmp_dir: str | os.PathLike,
        env: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        remaps: Mapping[str, str] | None = None,
        namespace: str | None = None,
        extra_params_file: str | os.PathLike | None = None,
        command: list[str] | None = None,
        executable: Iterable[str] | None = None,
    ) -> None:
        self.tmp = Path(tmp_dir)
        self.env = dict(env)
        self.log_path = (
            self.tmp / f"node_{int(time.time() * 1e3)}_{random.randint(0, 1 << 20)}.log"
        )
        if command is None:
            merged = {**TEST_PARAMS, **(params or {})}
            pfile = write_params_file(self.tmp / f"params_{self.log_path.stem}.yaml", merged)
            command = node_command(extra_params_file, None, remaps, namespace, executable)
            command += ["--params-file", str(pfile)]
        self.command = command
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (the node's clean path), then SIGKILL the whole process group if it hangs."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Collector:
    """Messages received on one topic, with blocking waits."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(
        self,
        predicate: Callable[[Any], bool] = lambda m: True,
        timeout: float = MSG_TIMEOUT_S,
        start: int = 0,
    ) -> Any:
        """The first message at index >= ``start`` satisfying ``predicate``; AssertionError on
        timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[start:]:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching message within {timeout} s ({len(self.messages)} received)"
                    )
                self._cond.wait(left)

    def count(self) -> int:
        with self._cond:
            return len(self.messages)


class RosClient:
    """An rclpy node in its own context, spun in a background thread, for driving the node under
    test."""

    def __init__(self, env: Mapping[str, str], name: str = "edgemoe_test_client") -> None:
        self.context = rclpy.Context()
        os.environ.setdefault("ROS_LOG_DIR", env["ROS_LOG_DIR"])
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = Node(f"{name}_{random.randint(0, 1 << 30)}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us at teardown
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)

    def __enter__(self) -> RosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- topics -----
    def collect(self, topic: str, msg_type: type, qos: QoSProfile | None = None) -> Collector:
        col = Collector()
        sub = self.node.create_subscription(msg_type, topic, col, qos or reliable_qos())
        col.subscription = sub  # type: ignore[attr-defined]
        return col

    def unsubscribe(self, collector: Collector) -> None:
        self.node.destroy_subscription(collector.subscription)  # type: ignore[attr-defined]

    def publisher(self, topic: str, msg_type: type, qos: QoSProfile | None = None) -> Any:
        return self.node.create_publisher(msg_type, topic, qos or reliable_qos())

    def wait_for_subscribers(
        self, publisher: Any, count: int = 1, timeout: float = START_TIMEOUT_S
    ) -> None:
        wait_until(
            lambda: publisher.get_subscription_count() >= count,
            timeout,
            f"{count} subscriber(s) on {publisher.topic_name}",
        )

    def wait_for_publishers(
        self, topic: str, count: int = 1, timeout: float = START_TIMEOUT_S
    ) -> None:
        wait_until(
            lambda: self.node.count_publishers(topic) >= count, timeout, f"publisher on {topic}"
        )

    def wait_for_matched(self, collector: Collector, timeout: float = START_TIMEOUT_S) -> None:
        """Until our subscription is matched with a publisher (so nothing published is missed)."""
        sub = collector.subscription  # type: ignore[attr-defined]
        wait_until(
            lambda: sub.get_publisher_count() >= 1,
            timeout,
            f"publisher matched on {sub.topic_name}",
        )

    # ----- services -----
    def call(self, srv_type: type, name: str, request: Any, timeout: float = MSG_TIMEOUT_S) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available within {timeout} s")
            future = client.call_async(request)
            wait_until(future.done, timeout, f"response from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def wait_for_service(
        self, srv_type: type, name: str, timeout: float = START_TIMEOUT_S
    ) -> None:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available within {timeout} s")
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node: str, values: Mapping[str, Any]) -> list[Any]:
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(SetParameters, f"{node}/set_parameters", req).results

    def get_parameters(self, node: str, names: Iterable[str]) -> dict[str, Any]:
        req = GetParameters.Request()
        req.names = list(names)
        values = self.call(GetParameters, f"{node}/get_parameters", req).values
        return {n: parameter_value_to_python(v) for n, v in zip(req.names, values, strict=True)}

    def change_state(self, node: str, transition_id: int) -> bool:
        req = ChangeState.Request()
        req.transition = Transition(id=transition_id)
        return bool(self.call(ChangeState, f"{node}/change_state", req).success)

    def get_state(self, node: str, timeout: float = MSG_TIMEOUT_S) -> str:
        req = GetState.Request()
        return self.call(GetState, f"{node}/get_state", req, timeout).current_state.label

    def wait_for_state(self, node: str, label: str, timeout: float = START_TIMEOUT_S) -> None:
        def reached() -> bool:
            # A request sent just after the service was discovered can go unanswered (its
            # response is dropped while the server's writer is not yet matched with our reader:
            # make test waited 30 s once): each poll asks again rather than waiting on one call.
            try:
                return self.get_state(node, timeout=STATE_POLL_TIMEOUT_S) == label
            except AssertionError:
                return False

        wait_until(reached, timeout, f"{node} in state {label}", poll=0.2)

    # ----- diagnostics -----
    def diagnostics(self) -> Collector:
        return self.collect("/diagnostics", DiagnosticArray)


def diag_values(msg: DiagnosticArray, name_contains: str = "edgemoe") -> dict[str, str]:
    """The key/values of our status entry in a DiagnosticArray (empty dict if absent)."""
    for status in msg.status:
        if name_contains in status.name:
            out = {kv.key: kv.value for kv in status.values}
            out["__level__"] = str(
                int.from_bytes(status.level, "little")
                if isinstance(status.level, bytes)
                else status.level
            )
            out["__message__"] = status.message
            return out
    return {}


def wait_diag(collector: Collector, predicate: Callable[[dict[str, str]], bool],
              timeout: float = MSG_TIMEOUT_S, name_contains: str = "edgemoe") -> dict[str, str]:
    """The first diagnostics values (received from now on) of the status whose name contains
    ``name_contains`` (e.g. ``camera front`` of the multi-camera node) satisfying ``predicate``."""

    def values(m: DiagnosticArray) -> dict[str, str]:
        return diag_values(m, name_contains)

    msg = collector.wait_for(lambda m: bool(values(m)) and predicate(values(m)), timeout,
                             start=max(collector.count() - 1, 0))
    return values(msg)


def wait_until(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


# ----- generated inputs -----
def now_stamp() -> tuple[int, int]:
    """Wall-clock (sec, nanosec): what a live camera driver stamps, so latency figures are real."""
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


def make_image(
    height: int = 96,
    width: int = 160,
    encoding: str = "rgb8",
    stamp: tuple[int, int] | None = None,
    frame_id: str = "camera",
    seed: int = 0,
    pixels: np.ndarray | None = None,
) -> Image:
    """A synthetic Image with data from ``tobytes()`` (row-major, no padding); stamp defaults to
    now."""
    stamp = stamp or now_stamp()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding, 3)
    if pixels is None:
        rng = np.random.default_rng(seed)
        shape = (height, width) if channels == 1 else (height, width, channels)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.step = int(
        pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1) * pixels.itemsize
    )
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def make_compressed(height: int = 96, width: int = 160, stamp: tuple[int, int] | None = None,
                    frame_id: str = "camera", seed: int = 0, pixels: np.ndarray | None = None,
                    codec: str = "png") -> CompressedImage:
    """``make_image``'s rgb8 frame as image_transport's compressed plugin publishes it (format
    ``"rgb8; png compressed bgr8"``); png is lossless, so it decodes to ``make_image``'s pixels."""
    raw = make_image(height, width, "rgb8", stamp, frame_id, seed, pixels)
    return rgb_to_compressed(image_array(raw), codec, raw.header)


def make_camera_info(height: int = 96, width: int = 160, stamp: tuple[int, int] | None = None,
                     frame_id: str = "camera", focal: float = 100.0) -> CameraInfo:
    """A pinhole calibration with the principal point at the image centre."""
    stamp = stamp or now_stamp()
    info = CameraInfo()
    info.header.stamp.sec, info.header.stamp.nanosec = stamp
    info.header.frame_id = frame_id
    info.height, info.width = height, width
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info

def image_array(msg: Image) -> np.ndarray:
    """An output Image as numpy, checking that its size fields match its data."""
    dtype = np.float32 if msg.encoding == "32FC1" else np.uint8
    channels = 3 if msg.encoding == "rgb8" else 1
    assert msg.step == msg.width * channels * np.dtype(dtype).itemsize, (
        msg.step,
        msg.width,
        msg.encoding,
    )
    assert len(msg.data) == msg.step * msg.height, (len(msg.data), msg.step, msg.height)
    arr = np.frombuffer(bytes(msg.data), dtype=dtype)
    return arr.reshape((msg.height, msg.width, 3) if channels == 3 else (msg.height, msg.width))


def tmp_dir(prefix: str = "edgemoe_ros_test_") -> str:
    return tempfile.mkdtemp(prefix=prefix)


class NodeHarness:
    """A node process on a private ROS graph, plus a client on that graph, torn down by ``close``
    (or at the end of a ``with`` block: a module fixture is ``with NodeHarness(...) as h: yield
    h``).

    ``weights``: True writes a tiny random model and points ``weights_path`` at it.
    """

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        remaps: Mapping[str, str] | None = None,
        namespace: str | None = None,
        weights: bool = True,
        wait_active: bool = True,
        executable: Iterable[str] | None = None,
        node_name: str = NODE_NAME,
    ) -> None:
        self.tmp = Path(tmp_dir())
        self.env = ros_env(self.tmp)
        params = dict(params or {})
        self.weights_path: Path | None = None
        if weights:
            self.weights_path = write_tiny_weights(self.tmp / "tiny.safetensors")
            params.setdefault("weights_path", str(self.weights_path))
        self.params = params
        self.namespace = namespace
        self.node_name = f"{namespace.rstrip('/') if namespace else ''}/{node_name}"
        self.node = NodeProcess(
            self.tmp,
            self.env,
            params=params,
            remaps=remaps,
            namespace=namespace,
            executable=executable,
        )
        self.client: RosClient | None = None
        try:
            self.client = RosClient(self.env)
            if wait_active and params.get("autostart", True):
                self.client.wait_for_state(self.node_name, "active")
        except BaseException:
            self.close()
            raise

    def srv(self, name: str) -> str:
        """Fully qualified private name, e.g. ``srv('enable_depth')`` ->
        ``/ns/edgemoe_node/enable_depth``."""
        return f"{self.node_name}/{name}"

    def topic(self, name: str) -> str:
        return f"{self.namespace.rstrip('/')}/{name}" if self.namespace else name

    def failure_context(self) -> str:
        return f"\n--- node output ({self.node.command}) ---\n{self.node.output()[-4000:]}"

    def __enter__(self) -> NodeHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> int | None:
        """Stop client and node; remove the temp dir unless ``EDGEMOE_KEEP_TEST_TMP`` is set."""
        try:
            if self.client is not None:
                self.client.close()
        finally:
            code = self.node.stop()
            if not os.environ.get(KEEP_TMP_ENV):
                shutil.rmtree(self.tmp, ignore_errors=True)
        return code


# ----------------------------------------------------------------------------- launch files
# The launch package is not installable here: launch_xml interprets our launch files as ros2
# launch would (PACKAGE, REPO_ROOT and launch_description are imported from it above).


def launch_command(desc: NodeDescription) -> list[str]:
    """The command ros2 launch runs for ``desc``, with the console script this venv installed."""
    assert desc.pkg == PACKAGE, desc.pkg
    exe = NODE_SCRIPT.with_name(desc.exec)
    assert exe.exists(), f"console script {desc.exec} not installed at {exe}"
    return desc.command(exe)


# ----------------------------------------------------------------------------- bench scripts
def run_bench(script: str, args: Iterable[str], timeout_s: float,
              env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``bench/<script>`` with this interpreter from the repo root, as ``make bench`` does, and
    fail the test with the end of its stderr unless it exits 0; the caller reads its --json."""
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        env=None if env is None else dict(env),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
