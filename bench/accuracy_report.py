#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Accuracy report: float reference vs our accelerator's fixed point, on the same inputs.

Per task: relative L2 of every layer's output, routing agreement per MoE layer, cosine of the
final features, and on the heads' outputs the segmentation pixel agreement and the depth error.
Inputs are procedural driving scenes (``edgemoe_ros.scenes``, seeded) or ``--random`` uniform
noise; weights a safetensors file (``--weights``) or seeded random weights of the SPEC model.
The fixed-point side is the numpy emulator, which the tests hold bit-exact to the C-simulation.
Prints Markdown tables and, with ``--json FILE``, writes ``{"config", "weights", "images",
"tasks": [...]}``.

    .venv/bin/python bench/accuracy_report.py --images 4 --json accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench_inputs import bench_images, bench_weights

from edgemoe_ros.fixedpoint.accuracy import compare, to_markdown


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="safetensors weights file (default: seeded random weights)")
    ap.add_argument("--config", choices=("spec", "tiny"), default="spec",
                    help="model for random weights (default: the SPEC model)")
    ap.add_argument("--images", type=int, default=4, help="number of input images (default 4)")
    ap.add_argument(
        "--random", action="store_true", help="uniform-noise images instead of rendered scenes"
    )
    ap.add_argument("--seed", type=int, default=0, help="weights and image seed")
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON")
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    weights, source = bench_weights(args.weights, args.config, args.seed)
    cfg = weights.config
    images = bench_images(cfg, args.images, args.seed, args.random)
    t0 = time.perf_counter()
    reports = compare(weights, images)
    elapsed = time.perf_counter() - t0
    kind = "uniform noise" if args.random else "rendered scenes"
    print(f"# Fixed point vs float: {source}, {args.images} {kind}, {cfg.img_h}x{cfg.img_w}\n")
    print(to_markdown(reports))
    print(f"(float reference + emulator: {elapsed:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": cfg.to_dict(), "weights": source, "images": args.images,
                       "image_kind": kind, "tasks": [r.to_dict() for r in reports]}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
