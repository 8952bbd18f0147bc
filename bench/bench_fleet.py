# SPDX-License-Identifier: Apache-2.0
"""Fleet throughput: ``edgemoe-bag process IN... --out DIR`` on 1 and 2 local Ray workers against
the single-process loop (issue 21).

The set: ``--bags`` bags (default 8) of ``--frames`` 720p frames each (a rendered street scene
panned per frame), as JPEG
CompressedImage with camera_info (how fleets record), the shipped model, cpu backend on one thread
per worker, both tasks, outputs at the camera's size. Three ways through the same set:

* ``loop``: ``process_bag`` over the bags one after the other in this process, as a shell loop or a
  script over the single-bag form does (the peer; its model load per bag is counted, ~0.3 s);
* ``ray1`` / ``ray2``: ``run_fleet`` on a local Ray started for the run with 1 or 2 workers. Wall
  time includes Ray's start-up (``ray.init`` and the actors' model load) and shutdown.

Every configuration runs ``--repeats`` times, interleaved in a rotating order so a change in the
machine's load hits all of them alike; the table shows the median and every run, with the 1-minute
load average before each. ``speedup`` = frames/s of ray2 / loop (start-up included).
``scaling_efficiency`` = ray2 / (2 x ray1) on the time after start-up; ``ray_startup_s`` is the
median start-up (init + actors ready).

    .venv/bin/python bench/bench_fleet.py --json build/bench_fleet.json [--frames 100 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgemoe_ros.allocator import tune_allocator
from edgemoe_ros.bag import CameraInfoParams, bag_info, write_image_bag
from edgemoe_ros.bag.fleet import (
    BagTask,
    ProcessOptions,
    find_bags,
    plan_outputs,
    require_ray,
    run_fleet,
)
from edgemoe_ros.bag.process import process_bag
from edgemoe_ros.blas_threads import limit_blas_threads
from edgemoe_ros.model.weights import load_weights, resolve_weights_path

SIZES = {"720p": (720, 1280), "small": (48, 80)}
TOPIC = "/cam/image/compressed"
CONFIGS = ("loop", "ray1", "ray2")
#: Stamps of the generated bags: 10 Hz from an arbitrary epoch.
T0, PERIOD = 1_700_000_000_000_000_000, 100_000_000
#: Horizontal pan between consecutive frames of a generated bag.
PAN_PX = 7


def make_set(root: Path, bags: int, frames: int, size: str) -> list[Path]:
    """``bags`` JPEG camera bags of ``frames`` frames each: one rendered scene per bag (rendering a
    720p scene takes seconds), panned a few pixels per frame so no two frames are alike."""
    import numpy as np

    from edgemoe_ros.scenes import render_frame

    h, w = SIZES[size]
    info = CameraInfoParams.pinhole(w, h, 0.8 * w)
    for b in range(bags):
        scene = render_frame(1000 + b, w, h).rgb
        frames_b = [(T0 + i * PERIOD, np.roll(scene, PAN_PX * i, axis=1)) for i in range(frames)]
        write_image_bag(
            root / f"drive_{b:02d}", frames_b, TOPIC, "cam_optical", "mcap", info, "jpeg"
        )
    return find_bags([root])


def _input_set(root: Path, args: argparse.Namespace) -> list[Path]:
    """The generated set, or the one a previous run left in ``--dir`` if it is the same shape."""
    if root.exists():
        bags = find_bags([root])
        frames = {t.count for b in bags for t in bag_info(b).topics if t.topic == TOPIC}
        if len(bags) != args.bags or frames != {args.frames}:
            raise SystemExit(
                f"{root} holds another set ({len(bags)} bags of {sorted(frames)} frames); "
                "remove it or choose another --dir"
            )
        print(f"reusing {len(bags)} bags x {args.frames} frames in {root}", file=sys.stderr)
        return bags
    t = time.perf_counter()
    bags = make_set(root, args.bags, args.frames, args.size)
    print(
        f"generated {len(bags)} bags x {args.frames} frames ({args.size}) "
        f"in {time.perf_counter() - t:.1f} s",
        file=sys.stderr,
    )
    return bags


def run_loop(tasks: list[BagTask], weights: Any, options: ProcessOptions) -> dict[str, float]:
    start = time.perf_counter()
    frames = 0
    for t in tasks:
        frames += process_bag(
            t.input,
            t.output,
            weights,
            topic=options.topic,
            tasks=options.tasks,
            backend=options.backend,
            backend_options=options.backend_options,
            output_resolution=options.output_resolution,
        ).frames
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": seconds, "startup_s": 0.0}


def run_ray(
    tasks: list[BagTask], weights: Any, options: ProcessOptions, workers: int
) -> dict[str, float]:
    s = run_fleet(tasks, weights, options, workers=workers, ray_address="local")
    if s.count("failed"):
        raise RuntimeError(f"fleet run failed: {s.to_dict()['errors']}")
    return {"frames": s.frames, "seconds": s.seconds, "startup_s": s.startup_seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bags", type=int, default=8)
    ap.add_argument(
        "--frames", type=int, default=100, help="frames per bag (default: 10 s drives at 10 Hz)"
    )
    ap.add_argument("--size", choices=SIZES, default="720p")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", help="model (default: the shipped one)")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    ap.add_argument("--json", help="write results to this file")
    args = ap.parse_args(argv)
    require_ray()
    tune_allocator()
    limit_blas_threads()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_fleet_"))
    try:
        results = _measure(args, work)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    doc = _summarise(results, args)
    _print_table(doc)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def _measure(args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, float]]]:
    bags = _input_set(work / "in", args)
    weights = load_weights(resolve_weights_path(args.weights))
    options = ProcessOptions()
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for r in range(args.repeats):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
        for config in order:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            tasks = plan_outputs(bags, out)
            load = os.getloadavg()[0]
            if config == "loop":
                res = run_loop(tasks, weights, options)
            else:
                res = run_ray(tasks, weights, options, int(config[-1]))
            res["load_before"] = load
            res["fps"] = res["frames"] / res["seconds"]
            results[config].append(res)
            print(
                f"repeat {r + 1} {config}: {res['frames']} frames in {res['seconds']:.1f} s "
                f"= {res['fps']:.2f} "
                f"frames/s (start-up {res['startup_s']:.1f} s, load {load:.2f})",
                file=sys.stderr,
            )
    shutil.rmtree(work / "out", ignore_errors=True)
    return results


def _summarise(
    results: dict[str, list[dict[str, float]]], args: argparse.Namespace
) -> dict[str, Any]:
    fps = {c: statistics.median(r["fps"] for r in runs) for c, runs in results.items()}

    def steady(c: str) -> float:
        return statistics.median(r["frames"] / (r["seconds"] - r["startup_s"]) for r in results[c])

    return {
        "speedup": fps["ray2"] / fps["loop"],
        "speedup_ray1": fps["ray1"] / fps["loop"],
        "scaling_efficiency": steady("ray2") / (2 * steady("ray1")),
        "scaling_efficiency_with_startup": fps["ray2"] / (2 * fps["ray1"]),
        "ray_startup_s": statistics.median(
            r["startup_s"] for c in ("ray1", "ray2") for r in results[c]
        ),
        "fps": fps,
        "fps_after_startup": {c: steady(c) for c in ("ray1", "ray2")},
        "runs": results,
        "set": {
            "bags": args.bags,
            "frames_per_bag": args.frames,
            "size": args.size,
            "encoding": "jpeg",
            "tasks": "semseg+depth",
            "output_resolution": "input",
            "backend": "cpu (1 thread per worker)",
        },
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
    }


def _print_table(doc: dict[str, Any]) -> None:
    s = doc["set"]
    print(
        f"\n{s['bags']} bags x {s['frames_per_bag']} frames {s['size']} {s['encoding']}, "
        f"{s['tasks']}, {s['backend']}, {doc['cpus']} CPUs; frames/s, wall time incl. start-up, "
        f"{doc['repeats']} interleaved runs"
    )
    print(f"{'':8}{'median':>9}   runs (load avg before)")
    for c in CONFIGS:
        runs = "  ".join(f"{r['fps']:.2f} ({r['load_before']:.1f})" for r in doc["runs"][c])
        print(f"{c:8}{doc['fps'][c]:>9.2f}   {runs}")
    print(
        f"speedup ray2/loop {doc['speedup']:.2f} (ray1/loop {doc['speedup_ray1']:.2f}); "
        f"scaling efficiency {doc['scaling_efficiency']:.2f} after start-up "
        f"({doc['scaling_efficiency_with_startup']:.2f} with it); "
        f"Ray start-up {doc['ray_startup_s']:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
