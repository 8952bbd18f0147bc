# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-demo --out DIR``: the README's first command — watch the model drive down a street.

Renders a continuous synthetic drive, records it as a rosbag (what a camera driver would have
produced), reads it back and runs every frame through the same ``Engine`` the ROS node uses, with
a task schedule that switches mid-sequence (both tasks → segmentation only → depth only → both),
as the node's task services would. Writes:

- ``DIR/demo.mp4``: input | segmentation colours | depth colormap per frame, with the active tasks
  and the frame latency written on it; a disabled task shows a greyed "off" panel;
- ``DIR/mosaic_*.png``: one such frame from each phase of the schedule;
- ``DIR/latency.png``: per-frame latency, coloured by the active task set;
- ``DIR/summary.json``: latency per phase, accuracy against the renderer's ground truth, expert
  usage;
- ``DIR/drive_bag/``: the recorded input bag.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .allocator import tune_allocator
from .bag import CameraInfoParams, read_image_frames, write_image_bag
from .blas_threads import check_blas_kernels, limit_blas_threads
from .engine import Engine
from .model.config import SEMSEG_CLASSES
from .model.weights import WeightsError, load_weights
from .postprocess import PALETTE, colorize_depth, colorize_semseg
from .scenes import DriveSequence
from .training.metrics import SegDepthMeter

log = logging.getLogger(__name__)

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "data" / "edgemoe_synth.safetensors"
TOPIC = "/camera/image_raw"
FRAME_ID = "camera_optical_frame"
#: Task schedule: (fraction of the sequence where the phase starts, active tasks).
SCHEDULE: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.0, ("semseg", "depth")), (0.25, ("semseg",)), (0.5, ("depth",)),
    (0.75, ("semseg", "depth")),
)
PHASE_COLORS = {("semseg", "depth"): (40, 160, 255), ("semseg",): (60, 200, 60),
                ("depth",): (230, 120, 30)}
BANNER_H = 22
#: Grey level of the panel shown for a task that is switched off.
OFF_GREY = 70


@dataclass
class FrameRecord:
    index: int
    tasks: tuple[str, ...]
    total_ms: float
    backbone_ms: float


def tasks_for(i: int, n: int) -> tuple[str, ...]:
    """Active tasks of frame ``i`` of ``n`` under ``SCHEDULE``."""
    active = SCHEDULE[0][1]
    for start, tasks in SCHEDULE:
        if i >= start * n:
            active = tasks
    return active


def _off_panel(h: int, w: int, what: str) -> np.ndarray:
    panel = np.full((h, w, 3), OFF_GREY, np.uint8)
    text = f"{what}: off"
    scale = max(0.4, w / 500)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(panel, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (150, 150, 150), 1, cv2.LINE_AA)
    return panel


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)


def mosaic(rgb: np.ndarray, semseg: np.ndarray | None, depth: np.ndarray | None,
           tasks: tuple[str, ...],
           latency_ms: float, index: int, min_depth: float, max_depth: float) -> np.ndarray:
    """RGB mosaic: banner on top, then input | segmentation | depth (greyed "off" panels)."""
    h, w = rgb.shape[:2]
    panels = [rgb.copy()]
    panels.append(colorize_semseg(semseg) if semseg is not None
                  else _off_panel(h, w, "segmentation"))
    panels.append(colorize_depth(depth, min_depth, max_depth) if depth is not None
                  else _off_panel(h, w, "depth"))
    for p, name in zip(panels, ("camera", "segmentation", "depth (log, near=red)"), strict=True):
        _label(p, name)
    row = np.hstack(panels)
    banner = np.zeros((BANNER_H, row.shape[1], 3), np.uint8)
    color = PHASE_COLORS.get(tasks, (200, 200, 200))
    text = f"frame {index:3d} | tasks: {' + '.join(tasks)} | {latency_ms:6.1f} ms"
    cv2.putText(banner, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    legend_x = row.shape[1] - len(SEMSEG_CLASSES) * 70
    if legend_x < cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] + 20:
        return np.vstack([banner, row])  # too narrow for the class legend
    for c, name in enumerate(SEMSEG_CLASSES):
        x = legend_x + c * 70
        cv2.rectangle(banner, (x, 6), (x + 10, 16), tuple(int(v) for v in PALETTE[c]), -1)
        cv2.putText(banner, name[:8], (x + 13, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (220, 220, 220), 1, cv2.LINE_AA)
    return np.vstack([banner, row])


def latency_plot(records: list[FrameRecord], width: int = 900, height: int = 360) -> np.ndarray:
    """Per-frame latency (total and backbone), points coloured by the active task set; RGB
    image."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 40, 40
    totals = np.array([r.total_ms for r in records])
    ymax = float(np.ceil(max(totals.max(), 1.0) * 1.15 / 10) * 10)
    n = len(records)

    def xy(i: int, ms: float) -> tuple[int, int]:
        x = left + (width - left - right) * (i / max(n - 1, 1))
        y = height - bottom - (height - top - bottom) * (ms / ymax)
        return int(round(x)), int(round(y))

    for k in range(6):  # grid + y labels
        ms = ymax * k / 5
        _, y = xy(0, ms)
        cv2.line(img, (left, y), (width - right, y), (225, 225, 225), 1)
        cv2.putText(img, f"{ms:.0f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1,
                    cv2.LINE_AA)
    cv2.line(img, (left, top), (left, height - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, height - bottom), (width - right, height - bottom), (0, 0, 0), 1)
    cv2.putText(img, "ms", (8, top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(img, "frame", (width - right - 45, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(0, n, max(1, n // 6)):
        x, _ = xy(i, 0)
        cv2.putText(img, str(i), (x - 8, height - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (80, 80, 80), 1, cv2.LINE_AA)
    for a, b in zip(records[:-1], records[1:], strict=True):  # backbone share, thin grey
        cv2.line(img, xy(a.index, a.backbone_ms), xy(b.index, b.backbone_ms), (170, 170, 170), 1,
                 cv2.LINE_AA)
    for a, b in zip(records[:-1], records[1:], strict=True):
        cv2.line(img, xy(a.index, a.total_ms), xy(b.index, b.total_ms),
                 PHASE_COLORS.get(b.tasks, (0, 0, 0)), 2, cv2.LINE_AA)
    x = left + 10
    for tasks, color in [*PHASE_COLORS.items(), (("backbone",), (170, 170, 170))]:
        label = " + ".join(tasks) + (" (total)" if tasks != ("backbone",) else " part")
        cv2.line(img, (x, 18), (x + 20, 18), color, 3)
        cv2.putText(img, label, (x + 25, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                    cv2.LINE_AA)
        x += 30 + cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0] + 15
    return img


def _percentiles(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "median_ms": float(np.median(v)),
            "p95_ms": float(np.percentile(v, 95)), "max_ms": float(v.max())}


def run_demo(out: Path, weights_path: Path, frames: int, width: int, height: int, backend: str,
             seed: int, fps: float, storage: str) -> dict:
    """Everything ``main`` does; returns the summary written to ``summary.json``."""
    weights = load_weights(weights_path)
    cfg = weights.config
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seq = DriveSequence(seed, width, height, fps=fps)
    rendered = list(seq.frames(frames))
    t_render = time.perf_counter() - t0

    bag = out / "drive_bag"
    if bag.exists():
        shutil.rmtree(bag)
    K = rendered[0].K
    info = CameraInfoParams.pinhole(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]),
                                    float(K[1, 2]))
    period_ns = int(round(1e9 / fps))
    write_image_bag(bag, ((i * period_ns, f.rgb) for i, f in enumerate(rendered)), TOPIC, FRAME_ID,
                    storage=storage, camera_info=info)

    video_path = out / "demo.mp4"
    writer: cv2.VideoWriter | None = None
    records: list[FrameRecord] = []
    meter = SegDepthMeter(cfg.num_classes, cfg.max_depth)
    mosaics: list[str] = []
    phase_start, mosaic_offset = 0, min(3, max(frames // len(SCHEDULE) - 1, 0))
    with Engine(weights, backend=backend) as engine:
        for i, msg in enumerate(read_image_frames(bag, TOPIC)):
            tasks = tasks_for(i, frames)
            # the drive's camera: metric depth of its lens
            res = engine.infer(msg.rgb, tasks=tasks, camera_k=K)
            semseg, depth = res.semseg_at_input(), res.depth_at_input()
            gt = rendered[i]
            if semseg is not None:
                meter.add_semseg(semseg, gt.labels)
            if depth is not None:
                meter.add_depth(depth, gt.depth, gt.labels)
            records.append(FrameRecord(i, tasks, res.timings_ms["total"],
                                       res.timings_ms["backbone"]))
            tile = mosaic(msg.rgb, semseg, depth, tasks, res.timings_ms["total"], i, cfg.min_depth,
                          cfg.max_depth)
            bgr = np.ascontiguousarray(tile[..., ::-1])
            if writer is None:
                writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (bgr.shape[1], bgr.shape[0]))
                if not writer.isOpened():
                    raise RuntimeError(f"cannot open video writer for {video_path} (OpenCV mp4v)")
            writer.write(bgr)
            if i == 0 or tasks != records[-2].tasks:
                phase_start = i
            if i - phase_start == mosaic_offset:  # a frame a little into each phase
                name = f"mosaic_{len(mosaics)}_{'_'.join(tasks)}.png"
                cv2.imwrite(str(out / name), bgr)
                mosaics.append(name)
        usage = {t: u.tolist() for t, u in engine.expert_usage.items()}
    if writer is not None:
        writer.release()
    if not records:
        raise RuntimeError(f"no frames read back from {bag}")
    cv2.imwrite(str(out / "latency.png"), latency_plot(records)[..., ::-1])

    phases: dict[str, list[float]] = {}
    for r in records:
        phases.setdefault("+".join(r.tasks), []).append(r.total_ms)
    summary = {
        "frames": len(records), "input_size": [width, height],
        "model_size": [cfg.img_w, cfg.img_h],
        "fps": fps, "seed": seed, "backend": backend, "weights": str(weights_path),
        "weights_notes": cfg.notes, "bag": str(bag), "storage": storage, "topic": TOPIC,
        "schedule": [{"from_frame": int(np.ceil(s * frames)), "tasks": list(t)}
                     for s, t in SCHEDULE],
        "latency": {k: _percentiles(v) for k, v in phases.items()},
        "accuracy_vs_ground_truth": meter.summary(),
        "expert_usage": usage, "render_seconds": round(t_render, 2),
        "outputs": {"video": video_path.name, "mosaics": mosaics, "latency_plot": "latency.png"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgemoe-demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--weights", type=Path, default=SHIPPED_WEIGHTS,
                    help="model file (default: the shipped one)")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--seed", type=int, default=7, help="scene seed of the drive")
    ap.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tune_allocator()
    limit_blas_threads()
    check_blas_kernels()
    if args.frames < 4 or args.width < 16 or args.height < 16:
        print("error: need at least 4 frames of at least 16x16 pixels", file=sys.stderr)
        return 2
    if not args.weights.exists():
        print(f"error: model file not found: {args.weights}\n"
              "The shipped model is edgemoe_ros/data/edgemoe_synth.safetensors; train one with\n"
              "  python -m edgemoe_ros.training.train --out runs/synth --minutes 90\n"
              "or pass --weights FILE.", file=sys.stderr)
        return 2
    try:
        summary = run_demo(args.out, args.weights, args.frames, args.width, args.height,
                           args.backend, args.seed, args.fps, args.storage)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    acc = summary["accuracy_vs_ground_truth"]
    print(f"wrote {args.out}/demo.mp4, {len(summary['outputs']['mosaics'])} mosaics, "
          "latency.png, summary.json")
    for phase, lat in summary["latency"].items():
        print(f"  {phase:<14} {lat['n']:4d} frames  median {lat['median_ms']:7.1f} ms  p95 "
              f"{lat['p95_ms']:7.1f} ms")
    if acc:
        print("  vs ground truth: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
