#!/usr/bin/env python3
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

import numpy as np

from edgemoe_ros.fixedpoint.accuracy import compare, to_markdown
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import load_weights, random_init


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="safetensors weights file (default: seeded random weights)")
    ap.add_argument("--config", choices=("spec", "tiny"), default="spec",
                    help="model for random weights (default: the SPEC model)")
    ap.add_argument("--images", type=int, default=4, help="number of input images (default 4)")
    ap.add_argument("--random", action="store_true", help="uniform-noise images instead of rendered scenes")
    ap.add_argument("--seed", type=int, default=0, help="weights and image seed")
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON")
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be >= 1")
    return args


def _images(cfg: ModelConfig, n: int, seed: int, random: bool) -> np.ndarray:
    if random:
        return np.random.default_rng(seed).integers(0, 256, (n, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    from edgemoe_ros.scenes import render_frame

    return np.stack([render_frame(seed + i, cfg.img_w, cfg.img_h).rgb for i in range(n)])


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.weights:
        weights = load_weights(args.weights)
        source = args.weights
    else:
        cfg = ModelConfig() if args.config == "spec" else tiny_config()
        weights = random_init(cfg, seed=args.seed)
        source = f"random_init(seed={args.seed}, config={args.config})"
    cfg = weights.config
    images = _images(cfg, args.images, args.seed, args.random)
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
