# SPDX-License-Identifier: Apache-2.0
"""Node overhead and end-to-end latency of ``edgemoe_node`` with the ``null`` backend (issue 4).

What the node costs *around* inference, at 640x480 and 1280x720 (bgr8 input, outputs at the input
resolution, both tasks, colour output subscribed):

1. pieces, in process: receive (the subscription's serialised bytes read in place; rclpy's own
   deserialisation, which copies the pixels, alongside for comparison), decode, fit to the model
   (resize), backbone (null: ~0), heads, restore to the input size, colourise, build the output
   messages, publish them to a subscriber in another process.
2. node path: the real ``EdgeMoeNode`` (configured and activated in this process) processing one
   frame from its serialised bytes exactly as its subscription callback and worker do, wall time
   per frame. ``overhead`` = node path minus backbone
   and heads (the two parts that are inference and scale with the model, not with the node).
3. end to end, three processes: ``edgemoe-bag play --restamp`` (publisher) -> ``edgemoe_node`` ->
   this process (subscriber). Latency = receive time - header stamp (stamped at publish time), read
   from the raw CDR bytes so the subscriber's own decoding is not counted. Median over the frames.

Prints a table; ``--json FILE`` writes ``{"overhead_ms": {"480p", "720p"}, "e2e_ms": {"480p", "720p"},
...}`` plus the pieces. Target (issue 4): overhead <= 2 ms at 720p. ``--dds`` picks the middleware
set-up of every process (see ``DDS_ENVS``): the transport dominates the end-to-end figure.

    .venv/bin/python bench/bench_node.py --json build/bench_node.json [--dds subnet|localhost|large_data]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_processes import stop_process

from edgemoe_ros.ros.topic_names import DEPTH_IMAGE, SEGMENTATION_COLOR, SEGMENTATION_IMAGE

SIZES: dict[str, tuple[int, int]] = {"480p": (480, 640), "720p": (720, 1280)}
NAMESPACE = "/cam"
#: Outputs the node publishes per frame; the sink subscribes to all so each one is really sent.
OUTPUT_TOPICS = (SEGMENTATION_IMAGE, SEGMENTATION_COLOR, DEPTH_IMAGE)
#: e2e playback rate: well under what the null backend sustains, so latency is not queueing.
E2E_HZ = 10.0
WARMUP = 5
#: How long a node/sink process gets to exit on SIGINT before it is killed.
STOP_TIMEOUT_S = 10.0
BIN = Path(sys.executable).parent


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth synthetic bgr-ordered image (content does not change raw decode cost)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([(xx + seed) % 256, (yy * 2) % 256, (xx + yy) % 256]).astype(np.uint8)


def _ms(samples: list[float], q: float = 50) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def _timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    out, times = None, []
    for i in range(runs + WARMUP):
        t0 = time.perf_counter()
        out = fn()
        if i >= WARMUP:
            times.append((time.perf_counter() - t0) * 1e3)
    return times, out


def _minor_faults() -> int:
    """Minor page faults of this process so far (all threads)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


#: ``--dds`` choices -> environment of every process in the run (this one, node, player, sink).
#: ``localhost``: Fast DDS's default transports with LOCALHOST discovery, which rmw maps to UDP
#: loopback only (how the tests isolate themselves). ``subnet``: what a robot gets out of the box
#: (ROS 2's SUBNET discovery, default transports: UDP + shared memory). ``large_data``: Fast DDS's
#: builtin LARGE_DATA transports (SHM + TCP for data); it must be set on *all* participants
#: (measured here, a LARGE_DATA subscriber and a default publisher, either way round, exchange no
#: samples) and needs discovery beyond LOCALHOST, which overrides the transports. Unset variables
#: are removed from the inherited environment; the random domain keeps runs apart.
DDS_ENVS: dict[str, dict[str, str | None]] = {
    "localhost": {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "FASTDDS_BUILTIN_TRANSPORTS": None},
    "subnet": {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "FASTDDS_BUILTIN_TRANSPORTS": None},
    "large_data": {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
}


def _ros_env(domain: int, log_dir: Path, dds: str = "localhost") -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_LOG_DIR=str(log_dir))
    for key, value in DDS_ENVS[dds].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.setdefault("HOME", str(log_dir))
    return env


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- sink process
def run_sink(namespace: str) -> int:
    """``--sink``: subscribe (raw, no decoding) to the node's outputs until SIGINT."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    from edgemoe_ros.ros.qos import profile

    rclpy.init()
    node = rclpy.create_node("bench_sink")
    for t in OUTPUT_TOPICS:
        node.create_subscription(Image, f"{namespace}/{t}", lambda _m: None, profile("reliable", 10), raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ----------------------------------------------------------------------------- in-process parts
def bench_pieces(weights: Any, size: str, runs: int, pub_node: Any) -> dict[str, float]:
    """Median ms of each step the node performs per frame, measured one by one."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from edgemoe_ros import postprocess as pp
    from edgemoe_ros.engine import Engine
    from edgemoe_ros.ros import conversions as conv
    from edgemoe_ros.ros.cdr_image import read_image
    from edgemoe_ros.ros.outputs import color_at_input
    from edgemoe_ros.ros.params import DEFAULT_MAX_IMAGE_PIXELS
    from edgemoe_ros.ros.qos import profile

    h, w = SIZES[size]
    header = Header(frame_id="cam")
    msg = conv.array_to_image(_frame(h, w, 0)[..., ::-1].copy(), conv.RGB8, header)
    msg.encoding = "bgr8"
    engine = Engine(weights, "null")
    # The node's own output names, so the sink (another process) receives them: publishing with no
    # subscriber skips the transport and would flatter the figure.
    pubs = {t: pub_node.create_publisher(Image, f"{NAMESPACE}/{t}", profile("reliable", 10)) for t in OUTPUT_TOPICS}
    _wait(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30, "the sink")
    out: dict[str, float] = {}
    wire = serialize_message(msg)
    t, _ = _timed(lambda: deserialize_message(wire, Image), runs)
    out["receive_rclpy"] = _ms(t)
    t, view = _timed(lambda: read_image(wire), runs)
    out["receive"] = _ms(t)
    t, rgb = _timed(lambda: conv.image_to_rgb(view, DEFAULT_MAX_IMAGE_PIXELS), runs)
    out["decode"] = _ms(t)
    stages: dict[str, list[float]] = {"preprocess": [], "backbone": [], "heads": []}
    res = None
    for i in range(runs + WARMUP):
        res = engine.infer(rgb, tasks=("semseg", "depth"))
        if i >= WARMUP:
            for k in stages:
                stages[k].append(float(res.timings_ms[k]))
    out.update({k: _ms(v) for k, v in stages.items()})
    t, restored = _timed(lambda: (res.semseg_at_input(), res.depth_at_input()), runs)
    out["restore"] = _ms(t)
    ids, depth = restored
    # As the node does it: palette at model resolution, then the nearest-neighbour map to the input.
    t, color = _timed(lambda: color_at_input(pp.colorize_semseg(res.semseg), res.fit), runs)
    out["colourise"] = _ms(t)
    arrays = ((ids, conv.MONO8), (color, conv.RGB8), (depth.astype(np.float32, copy=False), conv.DEPTH_32FC1))
    t, msgs = _timed(lambda: [conv.array_to_image(a, e, header, borrow=True) for a, e in arrays], runs)
    out["to_msg"] = _ms(t)
    t, _ = _timed(lambda: [pubs[k].publish(m) for k, m in zip(OUTPUT_TOPICS, msgs, strict=True)], runs)
    out["publish"] = _ms(t)
    # The middleware's share alone: the same three messages, serialised beforehand, published as raw
    # CDR bytes. No node code can go below this; it is the DDS copy/transport cost of ~7 MB at 720p.
    raw = [serialize_message(m) for m in msgs]
    t, _ = _timed(lambda: [pubs[k].publish(r) for k, r in zip(OUTPUT_TOPICS, raw, strict=True)], runs)
    out["publish_serialized"] = _ms(t)
    engine.close()
    for p in pubs.values():
        pub_node.destroy_publisher(p)
    return out


def bench_node_path(weights_path: Path, size: str, runs: int, resolution: str = "input") -> dict[str, float]:
    """Wall ms of the node's own per-frame path (decode -> engine -> publish) and its inference part.

    ``resolution``: the node's ``output_resolution`` ("input": outputs restored to the camera size,
    the default; "model": published at 128x256, which skips restore and shrinks colourise/publish).
    """
    from rclpy.parameter import Parameter
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from edgemoe_ros.ros import conversions as conv
    from edgemoe_ros.ros.cdr_image import read_image
    from edgemoe_ros.ros.node import EdgeMoeNode, Frame
    from edgemoe_ros.ros.outputs import TOPIC_SEGMENTATION_COLOR

    node = EdgeMoeNode(f"edgemoe_node_{size}_{resolution}", namespace=NAMESPACE, parameter_overrides=[
        Parameter("weights_path", value=str(weights_path)), Parameter("backend", value="null"),
        Parameter("autostart", value=False), Parameter("output_qos", value="reliable"),
        Parameter("tasks", value=["semseg", "depth"]), Parameter("output_resolution", value=resolution)])
    try:
        node.trigger_configure()
        node.trigger_activate()
        model = node._model  # bench-only peek: time the inference part of each call the node makes
        inner = model.engine.infer
        inference: list[float] = []

        def timed_infer(*a: Any, **kw: Any) -> Any:
            res = inner(*a, **kw)
            inference.append(float(res.timings_ms["backbone"] + res.timings_ms["heads"]))
            return res

        model.engine.infer = timed_infer
        # Outputs go to a subscriber in another process (the sink), as on a robot.
        _wait(lambda: node._outputs.publisher(TOPIC_SEGMENTATION_COLOR).get_subscription_count() > 0, 30, "the sink")
        h, w = SIZES[size]
        msg = conv.array_to_image(_frame(h, w, 1)[..., ::-1].copy(), conv.RGB8, Header(frame_id="cam"))
        msg.encoding = "bgr8"
        wire = serialize_message(msg)  # as the node's raw subscription receives it
        faults_before = _minor_faults()
        times, _ = _timed(lambda: node._process_frame(Frame(read_image(wire), False), node._frame_state()), runs)
        # Load-independent companion of the times: pages the path touches fresh every frame.
        faults = (_minor_faults() - faults_before) / (runs + WARMUP)
        infer = inference[WARMUP:]
        overhead = [a - b for a, b in zip(times, infer, strict=True)]
        return {"node_path": _ms(times), "inference": _ms(infer), "overhead": _ms(overhead),
                "overhead_p90": _ms(overhead, 90), "page_faults": faults}
    finally:
        node.destroy_node()


# ----------------------------------------------------------------------------- end to end
#: Seconds ``play`` waits for the node to subscribe.
PLAY_WAIT_S = 60.0
#: Seconds for the player process to start (imports, rclpy init) on a loaded machine.
PLAY_START_S = 30.0


def _play_limit_s(frames: int) -> float:
    """The longest ``edgemoe-bag play`` can take: each of its waits is bounded (bag/play.py)."""
    from edgemoe_ros.bag.play import FLUSH_TIMEOUT_S, SHUTDOWN_TIMEOUT_S

    return PLAY_START_S + PLAY_WAIT_S + frames / E2E_HZ + FLUSH_TIMEOUT_S + SHUTDOWN_TIMEOUT_S


def bench_e2e(weights_path: Path, size: str, frames: int, tmp: Path, env: dict[str, str],
              listener: Any) -> dict[str, float]:
    """Median/p90 ms from header stamp (set at publish by the player) to receipt here."""
    from edgemoe_ros.bag import CameraInfoParams, write_image_bag

    h, w = SIZES[size]
    bag = tmp / f"e2e_{size}"
    period = int(1e9 / E2E_HZ)
    write_image_bag(bag, ((i * period + 1, _frame(h, w, i)) for i in range(frames)), f"{NAMESPACE}/image",
                    "cam", "mcap", CameraInfoParams.pinhole(w, h, w / 2), encoding="bgr8")
    node = subprocess.Popen([str(BIN / "edgemoe_node"), "--ros-args", "-r", f"__ns:={NAMESPACE}",
                             "-p", f"weights_path:={weights_path}", "-p", "backend:=null",
                             "-p", "input_qos:=reliable", "-p", "output_qos:=reliable",
                             "-p", "tasks:=[semseg,depth]"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"node_{size}.log", "wb"))  # noqa: SIM115
    try:
        listener.reset()
        _wait(listener.matched, 60, "edgemoe_node outputs")
        try:
            play = subprocess.run([str(BIN / "edgemoe-bag"), "play", str(bag), "--restamp", "--qos", "reliable",
                                   "--wait-subscribers", "1", "--wait-timeout", str(PLAY_WAIT_S)], env=env,
                                  capture_output=True, text=True, timeout=_play_limit_s(frames))
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"edgemoe-bag play outlived its own bound ({exc.timeout:.0f} s)") from None
        if play.returncode != 0:
            raise RuntimeError(f"edgemoe-bag play failed: {play.stderr[-2000:]}")
        _wait(lambda: len(listener.latencies) >= frames, 10, f"{frames} outputs")
    except RuntimeError as exc:
        print(f"  e2e {size}: {exc} ({len(listener.latencies)} received)", file=sys.stderr)
    finally:
        stop_process(node, STOP_TIMEOUT_S)
    lat = listener.latencies[WARMUP:] if len(listener.latencies) > WARMUP else listener.latencies
    return {"e2e": _ms(lat), "e2e_p90": _ms(lat, 90), "received": float(len(listener.latencies)),
            "sent": float(frames)}


class Listener:
    """Raw subscription to ``depth/image`` (the node publishes it last for each frame): stamp -> now
    latency."""

    def __init__(self, node: Any):
        from sensor_msgs.msg import Image

        from edgemoe_ros.ros.qos import profile

        self.latencies: list[float] = []
        qos = profile("reliable", 10)
        self.sub = node.create_subscription(Image, f"{NAMESPACE}/{DEPTH_IMAGE}", self._on, qos, raw=True)
        # Subscribe to the other outputs too, so the node publishes (and pays for) all of them.
        self._others = [node.create_subscription(Image, f"{NAMESPACE}/{t}", lambda _m: None, qos, raw=True)
                        for t in OUTPUT_TOPICS if t != DEPTH_IMAGE]

    def reset(self) -> None:
        self.latencies = []

    def matched(self) -> bool:
        return self.sub.get_publisher_count() > 0

    def _on(self, raw: bytes) -> None:
        now = time.time_ns()
        sec, nsec = struct.unpack_from("<iI", raw, 4)  # CDR: 4-byte encapsulation, then header.stamp
        self.latencies.append((now - (sec * 1_000_000_000 + nsec)) / 1e6)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="frames per in-process measurement")
    ap.add_argument("--e2e-frames", type=int, default=40, help="frames played per size end to end")
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated, from " + ", ".join(SIZES))
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--dds", choices=DDS_ENVS, default="subnet",
                    help="middleware set-up of all processes (default: subnet = ROS 2 out of the box; "
                         "localhost = as the tests run; large_data = Fast DDS LARGE_DATA transports)")
    ap.add_argument("--json", help="write results to this file")
    ap.add_argument("--sink", metavar="NS", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sink:
        return run_sink(args.sink)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        ap.error(f"unknown sizes {sorted(unknown)}; choose from {', '.join(SIZES)}")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from edgemoe_ros.allocator import ENV_SWITCH, tune_allocator
    from edgemoe_ros.model.config import ModelConfig
    from edgemoe_ros.model.weights import random_init, save_weights

    # As edgemoe_node's main() does; EDGEMOE_MALLOC_TUNING=0 measures with glibc's defaults (the
    # node subprocess of the e2e part inherits the same setting).
    tuned = tune_allocator()
    print(f"allocator tuning: {'on' if tuned else 'off'} ({ENV_SWITCH})")
    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    env = _ros_env(random.randint(1, 101), tmp / "ros_log", args.dds)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_LOG_DIR")})
    for key in DDS_ENVS[args.dds]:  # this process too: set, or removed when the set-up leaves it unset
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    os.environ.setdefault("HOME", env["HOME"])
    weights = random_init(ModelConfig())  # the shipped model's shape; null backend ignores the values
    weights_path = tmp / "model.safetensors"
    save_weights(weights, weights_path)

    results: dict[str, dict[str, float]] = {}
    rclpy.init()
    sink = subprocess.Popen([sys.executable, __file__, "--sink", NAMESPACE], env=env)
    pub_node = rclpy.create_node("bench_pieces")
    listen_node = None
    executor = SingleThreadedExecutor()
    spin = threading.Thread(target=executor.spin, daemon=True)
    try:
        for size in sizes:
            r = bench_pieces(weights, size, args.runs, pub_node)
            r.update(bench_node_path(weights_path, size, args.runs))
            model_res = bench_node_path(weights_path, size, args.runs, "model")
            r.update({f"{k}_model_res": v for k, v in model_res.items()})
            r["overhead_own"] = r["overhead"] - r["publish_serialized"]
            results[size] = r
        stop_process(sink, STOP_TIMEOUT_S)
        if not args.skip_e2e:
            listen_node = rclpy.create_node("bench_listener")
            listener = Listener(listen_node)
            executor.add_node(listen_node)
            spin.start()
            for size in sizes:
                results[size].update(bench_e2e(weights_path, size, args.e2e_frames, tmp, env, listener))
    finally:
        stop_process(sink, STOP_TIMEOUT_S)
        executor.shutdown()
        for n in (pub_node, listen_node):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown()
        # Delete the DDS participant now (it owns shared-memory segments under /dev/shm), not in
        # interpreter teardown, which the os._exit below skips.
        rclpy.get_default_context().destroy()

    _print_table(results, args)
    if args.json:
        doc = {"overhead_ms": {s: r["overhead"] for s, r in results.items()},
               "e2e_ms": {s: r.get("e2e", float("nan")) for s, r in results.items()},
               "detail_ms": results, "runs": args.runs, "e2e_frames": args.e2e_frames,
               "backend": "null", "input_encoding": "bgr8", "output_resolution": "input", "dds": args.dds,
               "allocator_tuning": tuned}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_finite(doc), indent=2))
    # Everything is written and the DDS participant is gone (so its /dev/shm segments are: leaked
    # ones made later runs fail with "cannot publish data"). Exit without interpreter teardown:
    # about one run in four, a C++ static destructor aborts this process after main() ("terminate
    # called without an active exception", rc 134, no Python frame), even with the context destroyed
    # first; edgemoe_node itself exits 0 (test_node_lifecycle checks it).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _finite(obj: Any) -> Any:
    """NaN (a measurement that could not be taken) -> null, so the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _print_table(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    rows = [("receive: read the CDR bytes in place", "receive"),
            ("  (rclpy deserialise, for comparison)", "receive_rclpy"), ("decode (bgr8 -> rgb)", "decode"),
            ("fit to model (resize)", "preprocess"),
            ("backbone (null)", "backbone"), ("heads (host)", "heads"), ("restore to input size", "restore"),
            ("colourise", "colourise"), ("build 3 output msgs", "to_msg"), ("publish 3 outputs", "publish"),
            ("  same, pre-serialised (DDS floor)", "publish_serialized"),
            ("node path, per frame", "node_path"), ("  of which inference", "inference"),
            ("node overhead (path - inference)", "overhead"), ("  overhead p90", "overhead_p90"),
            ("  overhead minus DDS floor", "overhead_own"),
            ("  page faults per frame (count)", "page_faults"),
            ("output_resolution=model: node path", "node_path_model_res"),
            ("  overhead (path - inference)", "overhead_model_res"),
            ("  page faults per frame (count)", "page_faults_model_res"),
            ("end to end stamp->received p50", "e2e"), ("end to end p90", "e2e_p90")]
    sizes = list(results)
    print(f"\nedgemoe_node with the null backend, bgr8 input, median ms over {args.runs} frames "
          f"(e2e: {args.e2e_frames} frames at {E2E_HZ:g} Hz, 3 processes; DDS set-up: {args.dds})")
    print(f"{'':36}" + "".join(f"{s:>10}" for s in sizes))
    for label, key in rows:
        if any(key in results[s] for s in sizes):
            print(f"{label:36}" + "".join(f"{results[s].get(key, float('nan')):>10.2f}" for s in sizes))
    for s in sizes:
        if "received" in results[s]:
            print(f"e2e {s}: received {int(results[s]['received'])}/{int(results[s]['sent'])} frames")


if __name__ == "__main__":
    sys.exit(main())
