# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-eval``: score the model on a labelled dataset (real or exported) and say where it
fails.

    edgemoe-eval --manifest FILE | --cityscapes ROOT [--split val] | --kitti ROOT [--split val]
                 [--backend cpu|fixed|csim] [--weights FILE] [--json OUT] [--save DIR] [--frames N]

Every frame goes through the engine exactly as the node runs it (full-size image in, fitted to
the model, outputs restored to the image size) and is scored at the image's own resolution:
segmentation mIoU / pixel accuracy / per-class IoU over labelled pixels, metric depth AbsRel /
RMSE / δ<1.25 over ground truth in 0.5-80 m, with no median scaling (the median-scaled δ1 is an
extra). ``--json`` writes nested objects: ``semseg.miou``, ``semseg.iou.<class>``,
``depth.delta1``, ``frames``, ``per_frame`` ... (docs/datasets.md). ``--save DIR`` writes
``confusion.png`` and ``mosaics/`` (image, truth, prediction, errors per frame). Exit status:
0 ok, 2 bad arguments, weights, backend or dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..backends import BACKENDS, parse_backend_options
from ..datasets import open_dataset, scheme_for_classes
from ..evaluation import EVAL_MAX_DEPTH, EVAL_MIN_DEPTH, evaluate
from ..model.config import RESIZE_MODES
from ..model.weights import SHIPPED_WEIGHTS_NAME, load_weights, resolve_weights_path
from . import run_engine_tool

LOG = logging.getLogger("edgemoe-eval")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="edgemoe-eval", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, metavar="FILE",
                     help="JSON list of labelled images (docs/datasets.md)")
    src.add_argument("--cityscapes", type=Path, metavar="ROOT", help="Cityscapes layout folder")
    src.add_argument("--kitti", type=Path, metavar="ROOT",
                     help="KITTI depth-completion layout folder")
    ap.add_argument("--split", default=None, help="split of --cityscapes / --kitti (default: val)")
    ap.add_argument("--weights", type=Path, default=None, metavar="FILE",
                    help="model weights (.safetensors); default: the shipped "
                         f"{SHIPPED_WEIGHTS_NAME}")
    ap.add_argument("--backend", default="cpu", choices=sorted(BACKENDS),
                    help="backbone backend (default: cpu)")
    ap.add_argument("--backend-options", default="", metavar="JSON",
                    help="backend keyword arguments as JSON")
    ap.add_argument("--resize", default=None, choices=RESIZE_MODES,
                    help="fit mode (default: the model's)")
    ap.add_argument("--frames", type=int, default=None, metavar="N",
                    help="only the first N frames")
    ap.add_argument("--min-depth", type=float, default=EVAL_MIN_DEPTH,
                    help="depth scored from (m, default 0.5)")
    ap.add_argument("--max-depth", type=float, default=EVAL_MAX_DEPTH,
                    help="depth scored up to (m, default 80)")
    ap.add_argument("--ignore-k", action="store_true",
                    help="do not give the engine the frames' intrinsics (depth as for the "
                         "canonical camera)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the figures as JSON")
    ap.add_argument("--save", type=Path, metavar="DIR",
                    help="write confusion.png and per-frame mosaics here")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def dataset_spec(args: argparse.Namespace) -> tuple[str, str | None]:
    """(``kind:path`` spec, split) from the source flags."""
    if args.manifest is not None:
        if args.split is not None:
            raise ValueError("--split applies to --cityscapes and --kitti, not to a manifest")
        return f"manifest:{args.manifest}", None
    kind, root = (("cityscapes", args.cityscapes) if args.cityscapes is not None
                  else ("kitti", args.kitti))
    return f"{kind}:{root}", args.split or "val"


def _fmt(v: float | None, spec: str = "6.3f") -> str:
    return format(float("nan") if v is None else v, spec)


def format_report(s: dict) -> str:
    """The tables ``edgemoe-eval`` prints."""
    seg, dep = s["semseg"], s["depth"]
    lines = [f"{s['dataset']}: {s['frames']} frame(s), {seg['frames']} with labels, "
             f"{dep['frames']} with depth; "
             f"backend {s['backend']}, {_fmt(s['ms_per_frame'], '.1f')} ms/frame, camera K "
             f"{'used' if s['camera_k'] else 'ignored (--ignore-k)'}"]
    if seg["frames"]:
        lines += [f"segmentation: mIoU {_fmt(seg['miou'], '.3f')}  "
                  f"pixel acc {_fmt(seg['pixel_acc'], '.3f')}  "
                  f"(coverage {_fmt(seg['coverage'], '.1%')} of labelled pixels)",
                  f"  {'class':<14} {'IoU':>6} {'truth':>7} {'pred':>7}"]
        for name in seg["classes"]:
            lines.append(f"  {name:<14} {_fmt(seg['iou'][name])} "
                         f"{_fmt(seg['gt_share'][name], '7.1%')} "
                         f"{_fmt(seg['pred_share'][name], '7.1%')}")
    if dep["frames"]:
        lo, hi = dep["range_m"]
        lines += [f"depth ({lo:g}-{hi:g} m, {dep['pixels']} px, metric): "
                  f"AbsRel {_fmt(dep['absrel'], '.3f')}  "
                  f"RMSE {_fmt(dep['rmse'], '.2f')} m  d<1.25 {_fmt(dep['delta1'], '.3f')}   "
                  f"median-scaled: d<1.25 {_fmt(dep['delta1_median_scaled'], '.3f')}  "
                  f"AbsRel {_fmt(dep['absrel_median_scaled'], '.3f')}",
                  f"  {'distance':<12} {'pixels':>8} {'AbsRel':>7} {'RMSE':>6} {'d<1.25':>7}"]
        rows = [(n, r) for n, r in dep["by_distance"].items() if r["pixels"]]
        if dep["by_class"]:
            rows += [("by ground-truth class (frames with labels and depth)", None),
                     *dep["by_class"].items()]
        for name, r in rows:
            lines.append(f"  {name}" if r is None else
                         f"  {name:<12} {r['pixels']:8d} {_fmt(r['absrel'], '7.3f')} "
                         f"{_fmt(r['rmse'], '6.2f')} {_fmt(r['delta1'], '7.3f')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..bag.process import tqdm_progress
    from ..engine import Engine  # the engine pulls in backends; import after argument errors

    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames {args.frames}: must be >= 1")
    if not 0 <= args.min_depth < args.max_depth:
        raise ValueError(f"--min-depth {args.min_depth} / --max-depth {args.max_depth}: "
                         "need 0 <= min < max")
    weights_path = resolve_weights_path(args.weights)
    weights = load_weights(weights_path)
    spec, split = dataset_spec(args)
    dataset = open_dataset(spec, split, scheme_for_classes(weights.config.class_names))
    n = len(dataset) if args.frames is None else min(args.frames, len(dataset))
    bar = None if args.no_progress else tqdm_progress(n)
    try:
        with Engine(weights, backend=args.backend, resize_mode=args.resize,
                    backend_options=parse_backend_options(args.backend_options)) as engine:
            summary = evaluate(engine, dataset, args.frames, args.save, args.min_depth,
                               args.max_depth, not args.ignore_k,
                               progress=None if bar is None else lambda _r: bar.update(1))

    finally:
        if bar is not None:
            bar.close()
    summary = {"dataset": spec + (f" (split {split})" if split else ""), "backend": args.backend,
               "weights": str(weights_path), "head": weights.config.head,
               "resize": args.resize or weights.config.resize_mode, **summary}
    print(format_report(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    if args.save is not None:
        print(f"wrote {args.save}/confusion.png and {n} mosaic(s) in {args.save}/mosaics")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``edgemoe-eval``)."""
    return run_engine_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
