# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-dataset``: write our rendered scenes in real datasets' layouts, and check a dataset.

    edgemoe-dataset export --format cityscapes|kitti|manifest --out DIR --frames N [--seed S]
    edgemoe-dataset check cityscapes:ROOT [--split val]     # reads every frame, prints a summary

``export`` renders frames from seeds S .. S+N-1 (default: the training seeds; pass ``--seed 0``
for frames of the held-out evaluation range) at the format's usual size and field of view
(``--width/--height/--hfov`` override). Layouts and encodings: docs/datasets.md.
Exit status: 0 ok, 2 bad arguments or an unreadable dataset.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets import KINDS, SCHEMES, DatasetError, open_dataset
from ..datasets.export import FORMAT_DEFAULTS, FORMATS, export
from ..scenes.randomise import PROFILES
from ..training.data import TRAIN_SEED_START


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="edgemoe-dataset", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="render synthetic scenes into a dataset layout")
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, type=Path, metavar="DIR")
    ex.add_argument("--frames", required=True, type=int, metavar="N")
    ex.add_argument("--seed", type=int, default=TRAIN_SEED_START, metavar="S",
                    help=f"first scene seed (default {TRAIN_SEED_START}, the training range; "
                         "0 = held-out range)")
    ex.add_argument("--split", default="train",
                    help="split folder of the cityscapes/kitti layouts (default train)")
    ex.add_argument("--width", type=int, default=None,
                    help="image width (default: per format, see docs)")
    ex.add_argument("--height", type=int, default=None, help="image height (default: per format)")
    ex.add_argument("--hfov", type=float, default=None,
                    help="horizontal field of view, degrees (default: per format)")
    ex.add_argument("--randomise", choices=sorted(PROFILES), default="off",
                    help="domain-randomisation profile (scenes/randomise.py; "
                         "default off: the training scenes' look)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ck = sub.add_parser("check", help="read every frame of a dataset and summarise it")
    ck.add_argument("dataset", metavar="KIND:PATH", help=f"KIND one of {', '.join(KINDS)}")
    ck.add_argument("--split", default=None, help="split of a folder layout (default train)")
    ck.add_argument("--classes", default="categories", choices=sorted(SCHEMES),
                    help="class scheme")
    return ap.parse_args(argv)


def _bar(total: int, disabled: bool):  # noqa: ANN202 - a tqdm bar or None
    if disabled:
        return None
    from ..bag.process import tqdm_progress

    return tqdm_progress(total)


def run_export(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ValueError(f"--frames {args.frames}: must be >= 1")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and value < 2:
            raise ValueError(f"--{name} {value}: must be >= 2")
    bar = _bar(args.frames, args.no_progress)
    try:
        where = export(args.format, args.out, range(args.seed, args.seed + args.frames),
                       args.width, args.height, args.hfov, args.split,
                       progress=None if bar is None else lambda _i: bar.update(1),
                       randomise=args.randomise)
    finally:
        if bar is not None:
            bar.close()
    w, h, fov = FORMAT_DEFAULTS[args.format]
    lens = ("random lens per frame" if args.randomise != "off"
            else f"hfov {args.hfov or fov:.1f} deg")
    print(f"wrote {args.frames} {args.format} frame(s) "
          f"(seeds {args.seed}..{args.seed + args.frames - 1}, "
          f"{args.width or w}x{args.height or h}, {lens}, randomise {args.randomise}) "
          f"to {where}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    ds = open_dataset(args.dataset, args.split, args.classes)
    counts = np.zeros(ds.scheme.num_classes, np.int64)
    labelled = with_depth = depth_px = 0
    for frame in ds:
        if frame.semseg is not None:
            labelled += 1
            counts += np.bincount(frame.semseg.ravel(), minlength=256)[:ds.scheme.num_classes]
        if frame.depth is not None:
            with_depth += 1
            depth_px += int(np.count_nonzero(np.isfinite(frame.depth)))
    print(f"{args.dataset}: {len(ds)} frame(s), {labelled} with labels, {with_depth} with depth "
          f"({depth_px} depth pixels)")
    if labelled:
        share = counts / max(int(counts.sum()), 1)
        print("class pixel share: " + ", ".join(f"{n} {s:.1%}" for n, s in
                                                zip(ds.scheme.class_names, share, strict=True)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``edgemoe-dataset``)."""
    args = parse_args(argv)
    try:
        return run_export(args) if args.command == "export" else run_check(args)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
