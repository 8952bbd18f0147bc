# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag``: process, play, record and inspect rosbag2 camera bags.

Exit codes (one per kind of failure, so scripts can tell them apart):
0 success · 2 bad command line (argparse) · 3 bag problem (missing/corrupt bag, missing topic,
output exists) · 4 model problem (weights file, backend, unknown task) · 130 interrupted ·
1 ``play`` failed and its ROS teardown then hung (abandoned after ``SHUTDOWN_TIMEOUT_S``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..allocator import tune_allocator
from ..backends.base import BackendError
from ..blas_threads import check_blas_kernels, limit_blas_threads
from ..model.config import ConfigError
from ..model.weights import WeightsError
from .clock import DEFAULT_CLOCK_HZ
from .io import BagError, bag_info
from .play import DEFAULT_QUEUE_SIZE

EXIT_OK = 0
#: The play command's teardown was abandoned after playback failed (the error was logged).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BAG = 3
EXIT_MODEL = 4
EXIT_INTERRUPTED = 130

#: Printed on stderr by ``record`` once every topic has a publisher.
RECORD_READY = "recording: every topic has a publisher"
#: How often ``record`` re-checks the graph for topics whose type or publisher is still unknown.
DISCOVERY_PERIOD_S = 0.2

log = logging.getLogger("edgemoe-bag")


def _tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError("--tasks needs at least one task name")
    return tasks


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _remap(text: str) -> tuple[str, str]:
    old, sep, new = text.partition(":=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"remap must be OLD:=NEW, got {text!r}")
    return old, new


def build_parser() -> argparse.ArgumentParser:
    from .play import QOS_CHOICES
    from .process import OUTPUT_RESOLUTIONS

    parser = argparse.ArgumentParser(prog="edgemoe-bag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="run the model over an image topic, write a new mcap bag",
                       usage="%(prog)s IN OUT [options]  |  %(prog)s IN [IN ...] --out DIR [options]",
                       description="IN OUT: one bag (directory, .mcap or .db3; sqlite3 or mcap storage) "
                                   "into a new mcap bag OUT (must not exist). "
                                   "IN... --out DIR: bags and folders of bags, one output each in DIR "
                                   "(resumable; see docs/fleet.md).")
    p.add_argument("paths", nargs="+", metavar="IN", help="input bag(s) or folder(s) of bags; without --out: IN OUT")
    p.add_argument("--topic", help="image topic (default: the bag's only Image/CompressedImage topic)")
    p.add_argument("--tasks", type=_tasks, help="comma-separated tasks (default: all tasks of the model)")
    p.add_argument("--weights", default=None, help="model weights (.safetensors); default: the shipped model")
    p.add_argument("--backend", default="cpu", help="backbone backend (cpu, reference, fixed, csim, fpga, null)")
    p.add_argument("--backend-options", default="", metavar="JSON",
                   help='backend keyword arguments, e.g. \'{"bitstream": "edgemoe.bit", "timeout_s": 2}\'')
    p.add_argument("--output-resolution", choices=OUTPUT_RESOLUTIONS, default="input",
                   help="outputs at the camera's size (default) or the model's")
    p.add_argument("--resize-mode", choices=("stretch", "crop"), help="override the model's fit mode")
    p.add_argument("--namespace", help="output namespace (default: the image topic's namespace)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    fleet = p.add_argument_group("many bags (docs/fleet.md)")
    fleet.add_argument("--out", metavar="DIR", help="one output bag per input in DIR, same name")
    fleet.add_argument("--overwrite", action="store_true", help="redo outputs that are already finished")
    fleet.add_argument("--workers", type=_positive_int, metavar="N",
                       help="parallel workers; N > 1 runs on a local Ray started for the run "
                            "(default with Ray installed: one per core; 1: this process, no Ray)")
    fleet.add_argument("--ray", metavar="ADDRESS",
                       help="run on an existing Ray cluster, e.g. ray://head:10001 (default without --workers: "
                            "$RAY_ADDRESS when set); 'local': a local Ray even for one worker")
    fleet.add_argument("--max-retries", type=_non_negative_int, default=None, metavar="N",
                       help="re-runs of a piece of work whose worker process died (default 2)")
    fleet.add_argument("--chunk-frames", type=_positive_int, default=None, metavar="N",
                       help="on Ray, split bags longer than N frames into time chunks (default 300)")
    fleet.add_argument("--json", metavar="FILE", help="write the run's summary (per-bag results) to FILE")

    p = sub.add_parser("play", help="publish a bag's image (+camera_info) topics with rclpy")
    p.add_argument("bag")
    p.add_argument("--topic", action="append", help="image topic to play (repeatable; default: all)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive_float, default=1.0, help="recorded pace x RATE (default 1)")
    pace.add_argument("--max-rate", action="store_true", help="publish as fast as possible")
    p.add_argument("--qos", choices=QOS_CHOICES, default="reliable")
    p.add_argument("--queue-size", type=_positive_int, default=DEFAULT_QUEUE_SIZE, help="publisher history depth")
    p.add_argument("--loop", action="store_true", help="repeat until interrupted")
    p.add_argument("--restamp", action="store_true", help="replace header stamps with the publish time")
    p.add_argument("--clock", type=_positive_float, nargs="?", const=DEFAULT_CLOCK_HZ, default=None,
                   metavar="HZ",
                   help="publish the bag's time on /clock for nodes with use_sim_time, at HZ "
                        f"(default {DEFAULT_CLOCK_HZ:g}, as ros2 bag play --clock); follows --rate "
                        "and --loop; not with --restamp")
    p.add_argument("--remap", type=_remap, action="append", default=[], metavar="OLD:=NEW",
                   help="publish a bag topic under another name (repeatable)")
    p.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="before playing, wait until each played topic (images and camera_info) has N subscribers")
    p.add_argument("--wait-timeout", type=_positive_float, default=10.0, help="seconds (default 10)")
    p.add_argument("--json", help="write the play statistics to this file")

    p = sub.add_parser("record", help="record topics into a new bag until interrupted")
    p.add_argument("output", help="output bag directory (must not exist)")
    p.add_argument("topics", nargs="+", metavar="TOPIC[:TYPE]",
                   help="absolute topic, optionally with its type (pkg/msg/Name); else discovered")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--qos", choices=QOS_CHOICES, default="reliable")
    p.add_argument("--queue-size", type=_positive_int, default=100, help="subscription history depth")
    p.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    p.add_argument("--count", type=_positive_int, help="stop after this many messages in total")

    p = sub.add_parser("info", help="print topics, types, counts and duration")
    p.add_argument("bag")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_info(args: argparse.Namespace) -> int:
    info = bag_info(args.bag)
    if args.json:
        print(json.dumps({"path": info.path, "storage": info.storage, "duration_ns": info.duration_ns,
                          "start_ns": info.start_ns, "message_count": info.message_count,
                          "topics": [t.__dict__ for t in info.topics]}, indent=2))
        return EXIT_OK
    print(f"bag:      {info.path} ({info.storage})")
    print(f"duration: {info.duration_ns / 1e9:.3f} s, {info.message_count} messages")
    width = max((len(t.topic) for t in info.topics), default=0)
    for t in info.topics:
        print(f"  {t.topic:<{width}}  {t.msgtype:<32} {t.count:>7}")
    return EXIT_OK


#: ``process`` options that only the many-bags form takes (they make a pair IN OUT use it too).
FLEET_OPTIONS = ("out", "overwrite", "workers", "ray", "max_retries", "chunk_frames", "json")


def cmd_process(args: argparse.Namespace) -> int:
    from ..backends import parse_backend_options
    from ..model.weights import load_weights, resolve_weights_path

    fleet = any(getattr(args, k) not in (None, False) for k in FLEET_OPTIONS)
    if not fleet and len(args.paths) != 2:
        log.error("process takes IN OUT, or several inputs with --out DIR")
        return EXIT_USAGE
    try:
        weights = load_weights(resolve_weights_path(args.weights))
        for t in args.tasks or ():
            weights.config.task_id(t)
        backend_options = parse_backend_options(args.backend_options)
    except (WeightsError, ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_MODEL
    if fleet:
        return _process_fleet(args, weights, backend_options)
    return _process_one(args, weights, backend_options)


def _process_fleet(args: argparse.Namespace, weights: Any, backend_options: dict[str, Any]) -> int:
    """Many bags (``--out``), or one pair with fleet options; see ``fleet``."""
    import os
    from pathlib import Path

    from . import fleet as fl
    from .process import tqdm_progress

    options = fl.ProcessOptions(args.topic, tuple(args.tasks) if args.tasks else None, args.backend,
                                backend_options, args.output_resolution, args.resize_mode, args.namespace)
    # Ray's own convention: RAY_ADDRESS names the cluster unless the command line chooses.
    address = args.ray or (os.environ.get("RAY_ADDRESS") or None if args.workers is None else None)
    if args.workers is not None:
        workers = args.workers
    elif address is not None and address != "local":
        workers = 0  # the cluster's CPUs
    elif address == "local" or fl.ray_available():
        workers = max(1, len(os.sched_getaffinity(0)) // options.threads)  # the cores this process may use
    else:
        workers = 1
        log.info("Ray is not installed: one worker in this process (for parallel workers: %s)", fl.INSTALL_HINT)
    try:
        if workers != 1 or address is not None:
            fl.require_ray()  # before any output directory is made
        if args.out is not None:
            tasks = fl.plan_outputs(fl.find_bags(args.paths), args.out)
        elif len(args.paths) == 2:
            tasks = [fl.BagTask(Path(args.paths[0]), Path(args.paths[1]))]
        else:
            log.error("several inputs need --out DIR")
            return EXIT_USAGE
        Path(args.out or Path(args.paths[1]).parent).mkdir(parents=True, exist_ok=True)
        summary = fl.run_fleet(tasks, weights, options, workers=workers, ray_address=address,
                               overwrite=args.overwrite,
                               max_retries=fl.DEFAULT_MAX_RETRIES if args.max_retries is None else args.max_retries,
                               chunk_frames=args.chunk_frames or fl.DEFAULT_CHUNK_FRAMES,
                               progress=None if args.no_progress else tqdm_progress)
    except fl.MissingExtraError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except fl.WorkerStartError as exc:
        log.error("%s", exc)
        return EXIT_MODEL
    except fl.FleetError as exc:
        log.error("%s", exc)
        return EXIT_BAG
    for line in summary.lines():
        print(line)
    if args.json:
        summary.write_json(args.json)
    return EXIT_BAG if summary.count(fl.FAILED) else EXIT_OK


def _process_one(args: argparse.Namespace, weights: Any, backend_options: dict[str, Any]) -> int:
    """The single-bag form ``process IN OUT``, as it always was."""
    from .process import process_bag, tqdm_progress

    args.input, args.output = args.paths
    summary = process_bag(args.input, args.output, weights, topic=args.topic, tasks=args.tasks,
                          backend=args.backend, backend_options=backend_options,
                          output_resolution=args.output_resolution,
                          resize_mode=args.resize_mode, namespace=args.namespace,
                          progress=None if args.no_progress else tqdm_progress)
    for line in summary.lines():
        print(line)
    print(f"wrote {args.output}")
    return EXIT_OK


def _ros_init() -> Any:
    import rclpy

    rclpy.init(args=None)
    return rclpy


def cmd_play(args: argparse.Namespace) -> int:
    """Play, report, then tear down within ``SHUTDOWN_TIMEOUT_S``.

    Every wait of ours is bounded (``--wait-timeout``, the bag's duration, ``FLUSH_TIMEOUT_S``);
    the middleware's teardown is not, so the report comes first and a watchdog ends the process
    if the teardown outlives its budget.
    """
    from .play import SHUTDOWN_TIMEOUT_S, BagPlayer, PlayStats

    if args.clock is not None and args.restamp:
        from .play import RESTAMP_WITH_CLOCK

        log.error("%s", RESTAMP_WITH_CLOCK)
        return EXIT_USAGE
    rclpy = _ros_init()
    stats = PlayStats()
    player = None
    played = False
    try:
        player = BagPlayer(args.bag, topics=args.topic, rate=None if args.max_rate else args.rate, qos=args.qos,
                           queue_size=args.queue_size, restamp=args.restamp, remap=dict(args.remap),
                           clock_hz=args.clock)
        if args.wait_subscribers > 0:
            player.wait_for_subscribers(args.wait_subscribers, args.wait_timeout)
        player.play(loops=0 if args.loop else 1, stats=stats)
        played = True
    finally:
        _report_play(stats, args.json)
        watchdog = threading.Timer(SHUTDOWN_TIMEOUT_S, _abandon_teardown,
                                   (SHUTDOWN_TIMEOUT_S, EXIT_OK if played else EXIT_FAILED))
        watchdog.daemon = True
        watchdog.start()
        try:
            if player is not None:
                player.close()
            rclpy.try_shutdown()
        finally:
            watchdog.cancel()
    return EXIT_OK


def _report_play(stats: Any, json_path: str | None) -> None:
    rate = stats.total / stats.seconds if stats.seconds > 0 else 0.0
    print(f"published {stats.total} messages in {stats.seconds:.2f} s ({rate:.1f} msg/s), "
          f"{stats.loops} loop(s)", file=sys.stderr, flush=True)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"published": stats.published, "seconds": stats.seconds, "loops": stats.loops}, fh)


def _abandon_teardown(timeout_s: float, code: int) -> None:
    """Watchdog: the middleware's teardown hangs; everything is reported, so leave now."""
    log.warning("ROS teardown still running after %.1f s; exiting without waiting for it", timeout_s)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_record(args: argparse.Namespace) -> int:
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from .record import Recorder

    rclpy = _ros_init()
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # finish the bag on `kill`
    try:
        rec = Recorder(args.output, args.topics, storage=args.storage, qos=args.qos, queue_size=args.queue_size)
    except ValueError as exc:
        rclpy.try_shutdown()
        log.error("%s", exc)
        return EXIT_USAGE
    except BagError:
        rclpy.try_shutdown()
        raise
    executor = SingleThreadedExecutor()
    executor.add_node(rec.node)
    deadline = time.monotonic() + args.duration if args.duration else None
    last_discovery = 0.0
    matched = False
    try:
        while not stop["flag"] and rclpy.ok():
            if not matched and time.monotonic() - last_discovery > DISCOVERY_PERIOD_S:
                rec.subscribe_known()
                last_discovery = time.monotonic()
                if rec.all_matched():
                    matched = True  # scripts wait for this line before they start publishing
                    print(f"{RECORD_READY}: {', '.join(rec.counts)}", file=sys.stderr, flush=True)
            executor.spin_once(timeout_sec=0.05)
            if args.count and rec.total >= args.count:
                break
            if deadline and time.monotonic() > deadline:
                break
    except ExternalShutdownException:
        pass  # Ctrl-C: rclpy shut the context down; the bag is still finished below
    finally:
        executor.shutdown()
        rec.close()
        rclpy.try_shutdown()
        print(f"recorded {rec.total} messages: " + ", ".join(f"{t}={n}" for t, n in rec.counts.items()),
              file=sys.stderr)
    return EXIT_OK


COMMANDS = {"process": cmd_process, "play": cmd_play, "record": cmd_record, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (see module docstring)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    tune_allocator()
    limit_blas_threads()
    check_blas_kernels()
    try:
        return COMMANDS[args.command](args)
    except BagError as exc:
        log.error("%s", exc)
        return EXIT_BAG
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_MODEL
    except (BackendError, WeightsError) as exc:
        log.error("%s", exc)
        return EXIT_MODEL
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
