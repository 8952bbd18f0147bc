#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Depth scale across lenses, crops and stretches: does metric depth follow the camera's K?

Renders the same scenes through several cameras (field of view, image size), runs the engine once
per frame without K, and scores the median predicted / true depth (valid pixels 0.5-80 m, sky
excluded) for three ways to convert the canonical depth to the camera (model/canonical_camera.py):
none (today's behaviour without K), the vertical focal length ``fy * s_y`` (what the engine does)
and the geometric mean ``sqrt(fx s_x * fy s_y)``. A ratio of 1.00 is perfect metric scale.
Depth rescaling is a pure multiplication, so one inference per frame scores all three.

    .venv/bin/python bench/depth_intrinsics.py --frames 4 [--weights FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from edgemoe_ros.engine import Engine
from edgemoe_ros.model.canonical_camera import canonical_focal, depth_scale
from edgemoe_ros.model.weights import load_weights, resolve_weights_path
from edgemoe_ros.scenes import render_frame

#: (horizontal field of view in degrees, width, height): the renderer's camera, a long and a wide
#: lens, KITTI's aspect and focal (1242x375, fx 721 px, halved), a 4:3 and a square sensor.
CAMERAS = (
    (90.0, 256, 128),
    (50.0, 512, 256),
    (120.0, 256, 128),
    (81.5, 621, 188),
    (60.0, 400, 300),
    (90.0, 256, 256),
)
#: Ground truth counted: like edgemoe-eval's depth metrics.
VALID_RANGE_M = (0.5, 80.0)


def median_ratio(pred: np.ndarray, gt: np.ndarray) -> float:
    valid = np.isfinite(gt) & (gt > VALID_RANGE_M[0]) & (gt < VALID_RANGE_M[1]) & np.isfinite(pred)
    return float(np.median(pred[valid] / gt[valid]))


def measure(engine: Engine, frames: int, first_seed: int) -> list[dict]:
    cfg = engine.config
    rows = []
    for hfov, w, h in CAMERAS:
        ratios: dict[str, list[float]] = {"none": [], "vertical": [], "geometric": []}
        for seed in range(first_seed, first_seed + frames):
            frame = render_frame(seed, w, h, hfov)
            res = engine.infer(frame.rgb, ("depth",))
            depth = res.depth_at_input()
            sx, sy = res.fit.scale_x, res.fit.scale_y
            geometric = math.sqrt(frame.K[0, 0] * sx * frame.K[1, 1] * sy) / canonical_focal(cfg)
            for rule, scale in (
                ("none", 1.0),
                ("vertical", depth_scale(frame.K, sx, sy, cfg)),
                ("geometric", geometric),
            ):
                ratios[rule].append(median_ratio(depth * scale, frame.depth))
        rows.append(
            {
                "hfov_deg": hfov,
                "width": w,
                "height": h,
                "mode": engine.resize_mode,
                **{rule: float(np.median(v)) for rule, v in ratios.items()},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="weights file (default: the shipped model)")
    ap.add_argument("--frames", type=int, default=4, help="scenes per camera (default 4)")
    ap.add_argument(
        "--seed", type=int, default=0, help="first scene seed (held-out seeds < 900000)"
    )
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = ap.parse_args(argv)
    weights = load_weights(resolve_weights_path(args.weights))
    rows = []
    for mode in ("stretch", "crop"):
        with Engine(weights, "cpu", resize_mode=mode) as engine:
            rows += measure(engine, args.frames, args.seed)
    print(f"# median predicted / true depth, {args.frames} scenes per camera, {weights.source}\n")
    print("| mode | camera | no K | K, vertical focal (engine) | K, geometric mean |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['width']}x{r['height']} @ {r['hfov_deg']:g} deg "
            f"| {r['none']:.3f} | "
            f"{r['vertical']:.3f} | {r['geometric']:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"weights": weights.source, "frames": args.frames, "rows": rows}, fh, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
