# SPDX-License-Identifier: Apache-2.0
"""N cameras: one ``edgemoe_multi_node`` against N ``edgemoe_node`` processes (issue 19).

For N in ``--cameras`` (default 1, 2, 4, 6) and each size (640x480, 1280x720), two set-ups on the
same machine, one after the other, fed the same traffic:

* multi: one ``edgemoe_multi_node`` with cameras cam0..cam{N-1}, ``max_batch`` N, its cpu backend
  on min(N, cores) threads (the cores the N processes would spread over);
* peer: N ``edgemoe_node`` processes, namespaces /cam0.., cpu backend on 1 thread each.

This process publishes bgr8 frames to every ``/camI/image`` at ``--rate`` Hz (stamp = publish
time; above what the set-ups sustain, so both run saturated and the latest frame wins) and
subscribes to every camera's ``segmentation/image`` and ``depth/image`` (raw bytes). Over
``--seconds`` after a warm-up it counts ``depth/image`` outputs (aggregate frames/s) and their
stamp-to-receipt latency per camera (p50/p90), and reads each node process's RSS (and PSS,
which counts shared pages once).
JSON keys ``cameras.<N>.throughput_ratio`` (multi frames/s / peer frames/s) and
``cameras.<N>.rss_ratio`` (multi RSS / peer summed RSS), at the largest size measured; the
per-size figures are under ``cameras.<N>.<size>``.

``expert_bytes`` (per N, and at the top level for B = 1, 2, 4, 6) explains the batching gain:
from the routing of ``B`` frames in one backbone call, the bytes of expert weights the cpu
backend reads per image (each expert used in a layer is read once per call) for B = 1 (the
distinct experts one image uses) and for B = N, with the config's bound (all experts / B).
``engine`` measures the same in process, without ROS: frames/s of ``infer_batch`` of N frames vs N
``infer`` calls.

    .venv/bin/python bench/bench_multicam.py --json build/bench_multicam.json [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import logging
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

from edgemoe_ros.ros.topic_names import DEPTH_IMAGE, SEGMENTATION_IMAGE

SIZES: dict[str, tuple[int, int]] = {"480p": (480, 640), "720p": (720, 1280)}
CAMERAS = (1, 2, 4, 6)
BIN = Path(sys.executable).parent
#: Seconds of output before counting starts (model warm-up, first batches).
WARMUP_S = 3.0
START_TIMEOUT_S = 180.0
#: How long a node/sink process gets to exit on SIGINT before it is killed.
STOP_TIMEOUT_S = 15.0
ENGINE_RUNS = 5
#: Batch sizes (cameras per backbone call) of the top-level ``expert_bytes``.
EXPERT_BATCHES = (1, 2, 4, 6)


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([(xx + seed) % 256, (yy * 2 + seed) % 256, (xx + yy) % 256]).astype(np.uint8)


def _pct(samples: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(samples), q)) if samples else None


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB of one process (PSS: shared pages split between their sharers)."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pss = rss
    return rss, pss


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process used so far: the work it did, which a
    loaded machine stretches in wall time but not in CPU time."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- ROS traffic
class Rig:
    """Publishers of N cameras' images and raw subscribers of their outputs, in this process."""

    def __init__(self, n: int, size: str, env: dict[str, str]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from edgemoe_ros.ros.qos import profile

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node("bench_multicam", context=self.context)
        qos = profile("reliable", 10)
        h, w = SIZES[size]
        self.cameras = [f"cam{i}" for i in range(n)]
        self.pubs = [self.node.create_publisher(Image, f"/{c}/image", qos) for c in self.cameras]
        self.msgs = []
        for i, c in enumerate(self.cameras):
            msg = Image(height=h, width=w, encoding="bgr8", step=w * 3)
            msg.header.frame_id = c
            msg.data = _frame(h, w, i).tobytes()
            self.msgs.append(msg)
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {c: [] for c in self.cameras}
        self.counting = False
        self.subs = []
        for c in self.cameras:
            self.subs.append(
                self.node.create_subscription(
                    Image, f"/{c}/{DEPTH_IMAGE}", self._on_depth(c), qos, raw=True
                )
            )
            self.subs.append(
                self.node.create_subscription(
                    Image, f"/{c}/{SEGMENTATION_IMAGE}", lambda _m: None, qos, raw=True
                )
            )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def _on_depth(self, camera: str) -> Any:
        def on(raw: bytes) -> None:
            now = time.time_ns()
            sec, nsec = struct.unpack_from("<iI", raw, 4)  # CDR: encapsulation, then header.stamp
            if self.counting:
                with self.lock:
                    self.latencies[camera].append((now - (sec * 1_000_000_000 + nsec)) / 1e6)

        return on

    def matched(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pubs) and all(
            s.get_publisher_count() > 0 for s in self.subs
        )

    def publish_all(self) -> None:
        for pub, msg in zip(self.pubs, self.msgs, strict=True):
            ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = (
                ns // 1_000_000_000,
                ns % 1_000_000_000,
            )
            pub.publish(msg)

    def drive(
        self, rate: float, seconds: float, warmup: float, on_count: Callable[[], None]
    ) -> float:
        """Publish at ``rate`` Hz per camera; count outputs after ``warmup`` for ``seconds``
        (``on_count`` runs when counting starts)."""
        period = 1.0 / rate
        start = time.monotonic()
        t_count = start + warmup
        next_t = start
        while True:
            now = time.monotonic()
            if not self.counting and now >= t_count:
                on_count()
                self.counting = True
            if now >= t_count + seconds:
                break
            self.publish_all()
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        self.counting = False
        return seconds

    def close(self) -> None:
        self.executor.shutdown()
        # The spin thread must be out of rclpy before the node and context go: tearing them down
        # under it aborted the bench now and then ("terminate called without an active exception").
        self._spin.join(STOP_TIMEOUT_S)
        self.node.destroy_node()
        import rclpy

        rclpy.try_shutdown(context=self.context)


def _start(
    setup: str, n: int, weights: str, tmp: Path, env: dict[str, str], multi_threads: int = 0
) -> list[subprocess.Popen]:
    common = [
        "-p",
        f"weights_path:={weights}",
        "-p",
        "input_qos:=reliable",
        "-p",
        "output_qos:=reliable",
        "-p",
        "tasks:=[semseg,depth]",
    ]
    log = open(tmp / f"{setup}_{n}.log", "ab")  # noqa: SIM115 - closed with the process
    if setup == "multi":
        threads = multi_threads or min(n, os.cpu_count() or 1)
        cams = ",".join(f"cam{i}" for i in range(n))
        cmd = [
            str(BIN / "edgemoe_multi_node"),
            "--ros-args",
            *common,
            "-p",
            f"cameras:=[{cams}]",
            "-p",
            f"max_batch:={n}",
            "-p",
            f"backend_options:='{{\"threads\": {threads}}}'",
        ]
        return [subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)]
    return [
        subprocess.Popen(
            [str(BIN / "edgemoe_node"), "--ros-args", "-r", f"__ns:=/cam{i}", *common],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for i in range(n)
    ]


def bench_setup(
    setup: str,
    n: int,
    size: str,
    weights: str,
    rate: float,
    seconds: float,
    tmp: Path,
    multi_threads: int = 0,
) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(random.randint(1, 232)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp / "ros_log"),
    )
    env.setdefault("HOME", str(tmp))
    load_before = os.getloadavg()
    procs = _start(setup, n, weights, tmp, env, multi_threads)
    rig = Rig(n, size, env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not rig.matched():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{setup} x{n}: node(s) did not come up (logs in {tmp})")
            time.sleep(0.1)
        cpu0: list[float] = []
        rig.drive(rate, seconds, WARMUP_S, lambda: cpu0.extend(_cpu_s(p.pid) for p in procs))
        cpu = sum(_cpu_s(p.pid) for p in procs) - sum(cpu0)
        memory = [_memory_kb(p.pid) for p in procs]
    finally:
        for p in procs:
            stop_process(p, STOP_TIMEOUT_S)
        rig.close()
    lat = rig.latencies
    frames = sum(len(v) for v in lat.values())
    return {
        "frames_per_s": frames / seconds,
        "per_camera_frames_per_s": {c: len(v) / seconds for c, v in lat.items()},
        "latency_ms": {c: {"p50": _pct(v, 50), "p90": _pct(v, 90)} for c, v in lat.items()},
        "cpu_ms_per_frame": cpu * 1e3 / frames if frames else None,
        "rss_mb": sum(r for r, _ in memory) / 1024,
        "pss_mb": sum(p for _, p in memory) / 1024,
        "processes": len(procs),
        # 1-min load average before start and after the counted seconds: other jobs on the host.
        "load_avg": [load_before[0], os.getloadavg()[0]],
    }


# ----------------------------------------------------------------------------- in process
def expert_bytes(weights: Any, n: int, size: str) -> dict[str, float]:
    """Bytes of expert weights read per image, from the routing of n frames in one call vs one."""
    from edgemoe_ros.engine import Engine
    from edgemoe_ros.postprocess import fit_to_model

    cfg = weights.config
    per_expert = 4 * (
        2 * cfg.dim * cfg.expert_hidden + cfg.expert_hidden + cfg.dim
    )  # float32 fc1+fc2
    h, w = SIZES[size]
    with Engine(weights, "cpu") as eng:
        batch = np.stack(
            [
                fit_to_model(_frame(h, w, i)[:, :, ::-1].copy(), cfg, eng.resize_mode)[0]
                for i in range(n)
            ]
        )
        out = eng.backend.run(batch, ("semseg", "depth"))
    single = batched = 0
    for task in ("semseg", "depth"):
        r = out.routing[task]  # (B, layers, tokens, k)
        for layer in range(r.shape[1]):
            single += sum(len(np.unique(r[i, layer])) for i in range(n))
            batched += len(np.unique(r[:, layer]))
    all_experts = cfg.num_experts * len(cfg.moe_layers) * 2  # every expert of both tasks, once
    return {
        "bytes_per_expert": float(per_expert),
        # Analytic bound from the config: a batch reads each expert at most once, so per image at
        # most this, however the images route.
        "per_image_bound_mb": all_experts * per_expert / n / 1e6,
        "per_image_alone_mb": single * per_expert / n / 1e6,
        "per_image_batched_mb": batched * per_expert / n / 1e6,
        "distinct_experts_per_image": single / n / 2 / len(cfg.moe_layers),
        "distinct_experts_per_batch": batched / 2 / len(cfg.moe_layers),
    }


def bench_engine(weights: Any, n: int, size: str) -> dict[str, float]:
    """One infer_batch of n frames vs n infer calls, in process on one thread: frames/s (wall)
    and CPU ms per frame (this thread's CPU time, which other processes do not inflate)."""
    from edgemoe_ros.engine import Engine

    h, w = SIZES[size]
    images = [_frame(h, w, i)[:, :, ::-1].copy() for i in range(n)]
    with Engine(weights, "cpu") as eng:
        eng.infer_batch(images)  # warm-up

        def batched() -> None:
            eng.infer_batch(images)

        def single() -> None:
            for img in images:
                eng.infer(img)

        (wall_b, cpu_b), (wall_s, cpu_s) = (_time_runs(fn) for fn in (batched, single))
    frames = n * ENGINE_RUNS
    return {
        "batched_frames_per_s": frames / wall_b,
        "single_frames_per_s": frames / wall_s,
        "batched_cpu_ms_per_frame": cpu_b * 1e3 / frames,
        "single_cpu_ms_per_frame": cpu_s * 1e3 / frames,
        "cpu_ratio": cpu_s / cpu_b,
    }


def _time_runs(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall s, thread CPU s) of ENGINE_RUNS calls."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(ENGINE_RUNS):
        fn()
    return time.perf_counter() - t0, time.thread_time() - c0


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cameras", default=",".join(map(str, CAMERAS)), help="comma-separated camera counts"
    )
    ap.add_argument(
        "--sizes", default=",".join(SIZES), help="comma-separated, from " + ", ".join(SIZES)
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="counted seconds per set-up")
    ap.add_argument("--rate", type=float, default=15.0, help="frames/s published per camera")
    ap.add_argument("--weights", default="", help="model file; '' = the shipped model")
    ap.add_argument(
        "--multi-threads",
        type=int,
        default=0,
        help="cpu threads of the multi-camera node (0 = min(N, cores), the peer's cores)",
    )
    ap.add_argument(
        "--setups",
        default="multi,peer",
        help="'multi,peer' (default: ratios), or one of them alone (e.g. to profile the node)",
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    # The synthetic frames have no camera_info: the engine's one-time warning is noise here.
    logging.getLogger("edgemoe_ros.engine").setLevel(logging.ERROR)

    from edgemoe_ros.model.weights import load_weights
    from edgemoe_ros.ros.model_loader import resolve_weights_path

    weights_path = resolve_weights_path(args.weights)
    weights = load_weights(weights_path)
    counts = [int(c) for c in args.cameras.split(",")]
    sizes = args.sizes.split(",")
    load_before = os.getloadavg()
    doc: dict[str, Any] = {
        "multi_threads": args.multi_threads or "min(N, cores)",
        "cameras": {},
        "rate_hz": args.rate,
        "seconds": args.seconds,
        "cores": os.cpu_count(),
        "model": str(weights_path),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench_multicam_"))
    setups = args.setups.split(",")
    if not setups or any(s not in ("multi", "peer") for s in setups):
        ap.error(f"--setups: 'multi', 'peer' or 'multi,peer', got {args.setups!r}")
    for n in counts:
        entry: dict[str, Any] = {}
        for size in sizes:
            runs = {
                setup: bench_setup(
                    setup,
                    n,
                    size,
                    str(weights_path),
                    args.rate,
                    args.seconds,
                    tmp,
                    args.multi_threads,
                )
                for setup in setups
            }
            print(
                f"N={n} {size}: "
                + " | ".join(
                    f"{setup} {r['frames_per_s']:.1f} fps {r['rss_mb']:.0f} MB "
                    f"{_num(r['cpu_ms_per_frame'])} CPU ms/frame (load {r['load_avg'][0]:.1f})"
                    for setup, r in runs.items()
                ),
                flush=True,
            )
            entry[size] = runs
            if len(runs) == 2:
                entry[size].update(_ratios(runs["multi"], runs["peer"]))
        doc["cameras"][str(n)] = entry
        if len(setups) < 2:
            continue
        last = entry[sizes[-1]]
        entry["throughput_ratio"] = last["throughput_ratio"]
        entry["rss_ratio"] = last["rss_ratio"]
        entry["expert_bytes"] = expert_bytes(weights, n, sizes[-1])
        entry["engine"] = bench_engine(weights, n, sizes[-1])
    # Bytes of expert weights read per image against the batch size, whatever was run above.
    doc["expert_bytes"] = {str(b): expert_bytes(weights, b, sizes[-1]) for b in EXPERT_BATCHES}
    doc["load_avg_before"] = load_before
    doc["load_avg_after"] = os.getloadavg()
    if len(setups) == 2:
        _print_table(doc, sizes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


def _ratios(multi: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """The multi node's figures over the N processes' of the same run."""
    cpu_m, cpu_p = multi["cpu_ms_per_frame"], peer["cpu_ms_per_frame"]
    return {
        "throughput_ratio": multi["frames_per_s"] / peer["frames_per_s"]
        if peer["frames_per_s"]
        else None,
        "rss_ratio": multi["rss_mb"] / peer["rss_mb"],
        "cpu_per_frame_ratio": cpu_m / cpu_p if cpu_m and cpu_p else None,
    }


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _print_table(doc: dict[str, Any], sizes: list[str]) -> None:
    print(
        f"\ncores {doc['cores']}, load average before {doc['load_avg_before'][0]:.1f} after "
        f"{doc['load_avg_after'][0]:.1f}; {doc['rate_hz']:g} Hz per camera, "
        f"{doc['seconds']:g} s counted"
    )
    print(
        f"{'N':>2} {'size':>5} | {'multi fps':>9} {'peer fps':>8} {'ratio':>5} | "
        f"{'multi MB':>8} {'peer MB':>8} "
        f"{'ratio':>5} | {'multi p50/p90 ms':>17} {'peer p50/p90 ms':>16} | "
        f"{'CPU ms/frame multi':>18} {'peer':>6}"
    )
    for n, entry in doc["cameras"].items():
        for size in sizes:
            e = entry[size]

            def lat(setup: str, e: dict = e) -> str:
                p50 = [v["p50"] for v in e[setup]["latency_ms"].values() if v["p50"] is not None]
                p90 = [v["p90"] for v in e[setup]["latency_ms"].values() if v["p90"] is not None]
                return f"{max(p50):.0f}/{max(p90):.0f}" if p50 else "n/a"

            tr = e["throughput_ratio"]
            print(
                f"{n:>2} {size:>5} | {e['multi']['frames_per_s']:9.1f} "
                f"{e['peer']['frames_per_s']:8.1f} {tr if tr is None else f'{tr:.2f}':>5} | "
                f"{e['multi']['rss_mb']:8.0f} {e['peer']['rss_mb']:8.0f} "
                f"{e['rss_ratio']:5.2f} | {lat('multi'):>17} {lat('peer'):>16} | "
                f"{_num(e['multi']['cpu_ms_per_frame']):>18} "
                f"{_num(e['peer']['cpu_ms_per_frame']):>6}"
            )
        eb, en = entry["expert_bytes"], entry["engine"]
        print(
            f"   expert weights read per image: {eb['per_image_alone_mb']:.2f} MB alone, "
            f"{eb['per_image_batched_mb']:.2f} MB in a batch of {n} "
            f"({eb['distinct_experts_per_image']:.1f} of the experts per image and layer, "
            f"{eb['distinct_experts_per_batch']:.1f} per batch); engine in process: batch "
            f"{en['batched_frames_per_s']:.1f} vs single {en['single_frames_per_s']:.1f} "
            f"frames/s, CPU {en['batched_cpu_ms_per_frame']:.1f} vs "
            f"{en['single_cpu_ms_per_frame']:.1f} ms/frame"
        )


if __name__ == "__main__":
    raise SystemExit(main())
