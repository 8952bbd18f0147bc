# SPDX-License-Identifier: Apache-2.0
"""Accuracy of a model on held-out synthetic driving scenes, per backend.

    python bench/eval_model.py [--weights FILE] [--frames 100] [--backends cpu,fixed]
        [--json out.json]

Frames are rendered from seeds starting at ``EVAL_SEED_START`` (never used for training, see
``edgemoe_ros/training/data.py``) at the model's input size, run through ``Engine`` exactly as the
node runs them, and scored: mIoU and per-class IoU for segmentation; AbsRel, RMSE and δ<1.25 for
depth on finite, non-sky pixels within the model's depth range. A backend that cannot be created
(not built, not importable) is reported as unavailable instead of failing the whole run. When
several backends run, their routing agreement (same top-k expert set per token) with the first is
reported too, since SPEC §3 expects fixed point to flip a few routing decisions.

``--breakdown`` says where the first backend's errors are: scored separately within ``--band-px``
pixels of a label edge and inside regions, which share of each class lies at an edge, and depth
accuracy per distance bin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgemoe_ros.engine import Engine
from edgemoe_ros.model.config import SEMSEG_CLASSES
from edgemoe_ros.model.weights import ModelWeights, WeightsError, load_weights
from edgemoe_ros.training.data import EVAL_SEED_START, render_set
from edgemoe_ros.training.metrics import ErrorBreakdown, SegDepthMeter, per_class

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parent.parent / "edgemoe_ros" / "data" / "edgemoe_synth.safetensors"
)
#: Targets of issue 6 on the held-out synthetic set.
TARGETS = {"miou": 0.80, "delta1": 0.90}


def evaluate(weights: ModelWeights, backend: str, scenes: dict[str, np.ndarray],
             breakdown: ErrorBreakdown | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Score one backend; returns (metrics, routing per task stacked over frames). ``breakdown``
    (optional) accumulates the same predictions by region and distance."""
    cfg = weights.config
    meter = SegDepthMeter(cfg.num_classes, cfg.max_depth)
    routing: dict[str, list[np.ndarray]] = {t: [] for t in cfg.tasks}
    times = []
    with Engine(weights, backend=backend) as engine:
        for rgb, labels, depth in zip(
            scenes["rgb"], scenes["labels"], scenes["depth"], strict=True
        ):
            t0 = time.perf_counter()
            res = engine.infer(rgb, tasks=cfg.tasks)
            times.append(time.perf_counter() - t0)
            pred_labels, pred_depth = res.semseg_at_input(), res.depth_at_input()
            meter.add_semseg(pred_labels, labels)
            meter.add_depth(pred_depth, depth, labels)
            if breakdown is not None:
                breakdown.add(pred_labels, pred_depth, labels, depth)
            for t in cfg.tasks:
                routing[t].append(res.routing[t])
    out: dict = meter.summary()
    out["iou"] = per_class(meter.iou())
    out["frames"] = len(times)
    out["ms_per_frame"] = 1e3 * float(np.median(times))
    return out, {t: np.stack(r) for t, r in routing.items()}


def routing_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of (frame, layer, token) whose chosen expert *set* is the same in both runs."""
    return float(np.mean(np.all(np.sort(a, -1) == np.sort(b, -1), axis=-1)))


def _cells(values: dict[str, float | None], fmt: str) -> str:
    """Per-class values as fixed-width table cells (None, a class absent from a set, as nan)."""
    return " ".join(format(float("nan") if v is None else v, fmt) for v in values.values())


def print_table(results: dict, n_frames: int, seeds: tuple[int, int]) -> None:
    print(f"held-out synthetic scenes: {n_frames} frames, seeds {seeds[0]}..{seeds[1] - 1}")
    head = f"{'backend':<8} {'mIoU':>6} " + " ".join(f"{c[:6]:>6}" for c in SEMSEG_CLASSES) + \
        f" {'AbsRel':>7} {'RMSE':>6} {'d<1.25':>7} {'ms/img':>7}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if not r.get("available", True):
            print(f"{name:<8} unavailable: {r['error']}")
            continue
        ious = _cells(r["iou"], "6.3f")
        print(
            f"{name:<8} {r['miou']:6.3f} {ious} {r['absrel']:7.3f} {r['rmse']:6.2f} "
            f"{r['delta1']:7.3f} "
            f"{r['ms_per_frame']:7.1f}"
        )
    print("targets: " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()))


def print_breakdown(name: str, b: dict, radius: int) -> None:
    """The ``--breakdown`` tables: edge band vs interior, then depth by distance."""
    print(
        f"\nwhere {name}'s errors are (band = within {radius} px of a label edge at model "
        "resolution)"
    )
    head = (
        f"{'region':<9} {'pixels':>6} {'mIoU':>6} "
        + " ".join(f"{c[:6]:>6}" for c in SEMSEG_CLASSES)
        + f" {'AbsRel':>7} {'d<1.25':>7}"
    )
    print(head)
    print("-" * len(head))
    for region in ("interior", "band"):
        r = b[region]
        ious = _cells(r["iou"], "6.3f")
        print(
            f"{region:<9} {r['pixel_share']:6.1%} {r['miou']:6.3f} {ious} {r['absrel']:7.3f} "
            f"{r['delta1']:7.3f}"
        )
    print(
        f"{'in band':<9} {'':>6} {'':>6} {_cells(b['band_share'], '6.1%')}   (share of each "
        "class's pixels)"
    )
    print(f"wrongly labelled pixels that lie in the band: {b['wrong_pixels_in_band']:.1%}")
    print(f"{'distance':<10} {'pixels':>8} {'AbsRel':>7} {'RMSE':>6} {'d<1.25':>7}")
    for bin_name, r in b["depth_bins"].items():
        if r["pixels"]:
            print(
                f"{bin_name:<10} {r['pixels']:8d} {r['absrel']:7.3f} {r['rmse']:6.2f} "
                f"{r['delta1']:7.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument(
        "--frames", type=int, default=100, help="held-out frames for the float backends"
    )
    ap.add_argument(
        "--fixed-frames",
        type=int,
        default=20,
        help="frames for the (slow) bit-exact backends: fixed, csim (the first N of the set)",
    )
    ap.add_argument("--backends", default="cpu,fixed")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also score the first backend by label-edge band vs interior and by distance",
    )
    ap.add_argument(
        "--band-px", type=int, default=2, help="half-width of the label-edge band (model pixels)"
    )
    args = ap.parse_args(argv)

    try:
        weights = load_weights(args.weights)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = weights.config
    seeds = (EVAL_SEED_START, EVAL_SEED_START + args.frames)
    scenes = render_set(range(*seeds), cfg.img_w, cfg.img_h)

    results: dict = {}
    routings: dict[str, dict[str, np.ndarray]] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    breakdown = (
        ErrorBreakdown(cfg.num_classes, cfg.max_depth, args.band_px) if args.breakdown else None
    )
    for name in backends:
        n = args.fixed_frames if name in ("fixed", "csim") else args.frames
        subset = {k: v[:n] for k, v in scenes.items()}
        try:
            results[name], routings[name] = evaluate(
                weights, name, subset, breakdown if name == backends[0] else None
            )
        except Exception as exc:  # noqa: BLE001 - any backend failure is reported, not fatal
            results[name] = {"available": False, "error": f"{type(exc).__name__}: {exc}"}
        if n < args.frames and "cpu" in routings and f"cpu@{n}" not in results:
            # the slow backends see fewer frames: score the float model on the same ones for a fair
            # delta
            results[f"cpu@{n}"], _ = evaluate(weights, "cpu", subset)
    names = [n for n in routings]
    for other in names[1:]:
        n = min(len(routings[names[0]][cfg.tasks[0]]), len(routings[other][cfg.tasks[0]]))
        results[other]["routing_agreement_vs_" + names[0]] = {
            t: routing_agreement(routings[names[0]][t][:n], routings[other][t][:n])
            for t in cfg.tasks
        }

    print(
        f"model {args.weights} (head: {cfg.head}, trained: {cfg.notes.get('train_minutes', '?')} "
        "min)"
    )
    print_table(results, args.frames, seeds)
    for other in names[1:]:
        print(
            f"routing agreement {other} vs {names[0]}: "
            f"{results[other]['routing_agreement_vs_' + names[0]]}"
        )
    if breakdown is not None and backends[0] in routings:
        results[backends[0]]["breakdown"] = breakdown.summary()
        print_breakdown(backends[0], results[backends[0]]["breakdown"], args.band_px)
    if args.json:
        payload = {
            **results,
            "weights": str(args.weights),
            "head": cfg.head,
            "seeds": list(seeds),
            "targets": TARGETS,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
