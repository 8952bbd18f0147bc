#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Issue 5 benchmark: the fixed-point emulator, the HLS C-simulation and the FPGA estimate.

On the same images and weights (default: the SPEC model with seeded random weights, rendered
driving scenes) it measures, per image and task:

* ``emulator_s``: seconds of the numpy fixed-point emulator (``fixedpoint/``, the ``fixed``
  backend);
* ``csim_s``: seconds of the C-simulation library (``hls_accel/``, the ``csim`` backend);
* ``mismatched_bits``: bits that differ between the two, over the raw int32 features and routing
  (target 0: the emulator is the C++ bit for bit);
* ``cosine_vs_float``: cosine similarity of the fixed-point final features with the float64
  reference model (``reference`` backend), the worst image and task (target >= 0.999);
* ``est_fpga_ms``: the analytic latency of the accelerator at 300 MHz (``accel/latency_model.py``)
  per image and task, next to Edge-MoE's ~59 ms on the board.

Timings are the median of ``--runs`` repetitions of the whole batch, divided by its images.
``--with-driver`` also times the ``fpga`` backend on the simulated PYNQ device (C-simulation as
hardware) and checks it returns the csim bits. ``--json FILE`` writes
``{"emulator_s", "csim_s", "mismatched_bits", "cosine_vs_float", "est_fpga_ms", "resources"}`` plus
details; ``resources`` is ``{bram36, dsp, bram_pct, dsp_pct}`` of ``accel/resources.py``.

    .venv/bin/python bench/bench_fixed.py --images 2 --runs 3 --json bench_fixed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from bench_inputs import bench_images, bench_weights

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.accel import resources
from edgemoe_ros.accel.latency_model import EDGE_MOE_BOARD_MS, estimate
from edgemoe_ros.backends import create_backend
from edgemoe_ros.fixedpoint.emulator import FixedPointEmulator
from edgemoe_ros.fixedpoint.quant import act_to_float32
from edgemoe_ros.model.weights import ModelWeights


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="safetensors weights file (default: seeded random weights)")
    ap.add_argument("--config", choices=("spec", "tiny"), default="spec",
                    help="model for random weights (default: the SPEC model)")
    ap.add_argument("--images", type=int, default=2, help="images per batch (default 2)")
    ap.add_argument(
        "--runs", type=int, default=1, help="timed repetitions per backend and task (default 1)"
    )
    ap.add_argument(
        "--random", action="store_true", help="uniform-noise images instead of rendered scenes"
    )
    ap.add_argument("--seed", type=int, default=0, help="weights and image seed")
    ap.add_argument("--with-driver", action="store_true",
                    help="also time the fpga backend on the simulated PYNQ device")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.images < 1 or args.runs < 1:
        ap.error("--images and --runs must be >= 1")
    return args


def _timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """(median seconds, result of the last run)."""
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _bit_mismatches(a: np.ndarray, b: np.ndarray) -> int:
    x = np.bitwise_xor(np.ascontiguousarray(a, np.int32), np.ascontiguousarray(b, np.int32)).view(
        np.uint8
    )
    return int(np.unpackbits(x).sum())


def _cosines(fixed: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a = fixed.reshape(fixed.shape[0], -1).astype(np.float64)
    b = ref.reshape(ref.shape[0], -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run(weights: ModelWeights, images: np.ndarray, runs: int, with_driver: bool) -> dict:
    cfg = weights.config
    n = images.shape[0]
    packed = itf.pack_weights(weights)
    emulator = FixedPointEmulator(packed, cfg)
    csim = create_backend("csim")
    csim.load(weights)
    reference = create_backend("reference")
    reference.load(weights)
    fpga = None
    if with_driver:
        fpga = create_backend("fpga", simulate=True, max_images=n, timeout_s=600)
        fpga.load(weights)
    rows = []
    emu_s = csim_s = drv_s = 0.0
    bits = 0
    cosines = []
    try:
        for task in cfg.tasks:
            tid = cfg.task_id(task)
            t_emu, emu = _timed(lambda tid=tid: emulator.run(images, [tid])[tid], runs)
            t_csim, (c_feat, c_rout) = _timed(lambda tid=tid: csim.run_raw(images, tid), runs)
            ref = reference.run(images, [task])
            task_bits = _bit_mismatches(emu.features, c_feat) + _bit_mismatches(
                emu.routing, c_rout
            )
            cos = _cosines(act_to_float32(emu.features), ref.features[task])
            row = {
                "task": task,
                "emulator_s": t_emu / n,
                "csim_s": t_csim / n,
                "mismatched_bits": task_bits,
                "cosine_min": float(cos.min()),
                "cosine_mean": float(cos.mean()),
                "routing_agreement": float(
                    (np.sort(emu.routing, -1) == np.sort(ref.routing[task], -1)).all(-1).mean()
                ),
            }
            if fpga is not None:
                t_drv, res = _timed(lambda task=task: fpga.run(images, [task]), runs)
                row["fpga_sim_s"] = t_drv / n
                row["fpga_sim_equals_csim"] = bool(
                    np.array_equal(res.routing[task], c_rout)
                    and np.array_equal(res.features[task], act_to_float32(c_feat))
                )
                drv_s += t_drv / n
            rows.append(row)
            emu_s += t_emu / n
            csim_s += t_csim / n
            bits += task_bits
            cosines.extend(cos.tolist())
    finally:
        csim.close()
        reference.close()
        if fpga is not None:
            fpga.close()
    as_written = estimate(cfg)
    k = len(cfg.tasks)
    out = {
        "emulator_s": emu_s / k, "csim_s": csim_s / k, "mismatched_bits": bits,
        "cosine_vs_float": float(min(cosines)), "est_fpga_ms": as_written.ms_per_image,
        "edge_moe_board_ms": EDGE_MOE_BOARD_MS,
        "tasks": rows, "latency_breakdown": as_written.by_kind(),
    }
    if with_driver:
        out["fpga_sim_s"] = drv_s / k
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    weights, source = bench_weights(args.weights, args.config, args.seed)
    cfg = weights.config
    images = bench_images(cfg, args.images, args.seed, args.random)
    kind = "uniform noise" if args.random else "rendered scenes"
    res = run(weights, images, args.runs, args.with_driver)

    print(
        f"# bench_fixed: {source}, {args.images} {kind} {cfg.img_h}x{cfg.img_w}, median of "
        f"{args.runs} run(s)\n"
    )
    extra = " fpga_sim s/img |" if args.with_driver else ""
    print(
        f"| task | emulator s/img | csim s/img |{extra} mismatched bits | cosine vs float "
        "(min/mean) "
        "| routing = float |"
    )
    print("|---|---|---|" + ("---|" if args.with_driver else "") + "---|---|---|")
    for r in res["tasks"]:
        drv = (
            f" {r['fpga_sim_s']:.3f} {'(=csim)' if r['fpga_sim_equals_csim'] else '(DIFFERS)'} |"
            if args.with_driver
            else ""
        )
        print(
            f"| {r['task']} | {r['emulator_s']:.3f} | {r['csim_s']:.3f} |{drv} "
            f"{r['mismatched_bits']} | "
            f"{r['cosine_min']:.5f} / {r['cosine_mean']:.5f} | {r['routing_agreement']:.1%} |"
        )
    print(
        f"\nemulator {res['emulator_s']:.3f} s/frame, csim {res['csim_s']:.3f} s/frame (per image "
        "per task), "
        f"mismatched bits {res['mismatched_bits']}, cosine vs float {res['cosine_vs_float']:.5f}"
    )
    print(
        f"\n## Accelerator estimate at {itf.CLOCK_MHZ:g} MHz (accel/latency_model.py), per image "
        "per task\n"
    )
    est = estimate(cfg)
    print(est.table())
    print()
    print(est.block_table())
    print(
        f"\nestimate {est.ms_per_image:.2f} ms per image per task (Edge-MoE board, measured: "
        f"{EDGE_MOE_BOARD_MS:g} ms)"
    )
    print(f"\n## Resources of the accelerator on the {itf.FPGA_PART} (accel/resources.py)\n")
    print(resources.estimate(cfg).table())
    if args.json:
        keys = ("emulator_s", "csim_s", "mismatched_bits", "cosine_vs_float", "est_fpga_ms")
        payload = {k: res[k] for k in keys}
        payload["resources"] = resources.estimate(cfg).as_dict()
        payload["details"] = {k: v for k, v in res.items() if k not in keys} | {
            "weights": source, "images": args.images, "image_kind": kind, "runs": args.runs}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
