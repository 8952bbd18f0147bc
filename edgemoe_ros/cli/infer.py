# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-infer``: run the model on image files and write outputs a person can look at.

For each ``IMAGE`` it writes, at the image's own resolution (stretch or crop fit undone):

* ``<stem>_semseg.png``      class colours (Cityscapes palette), black = ignore / outside crop
* ``<stem>_semseg_ids.png``  raw class ids, mono8 (255 = ignore / outside crop)
* ``<stem>_depth.png``       depth colour map (log scale, near = red), black = invalid
* ``<stem>_depth.npy``       raw metric depth, float32 metres, NaN = invalid
* ``<stem>_mosaic.png``      input | segmentation | depth side by side

and prints per-image timings (preprocess / backbone / heads / total). Exit status: 0 ok, 1 some
images could not be read, 2 bad arguments / weights / backend.

Depth is metric for the camera given by ``--fx`` (and optionally ``--fy``, ``--cx``, ``--cy``), in
pixels of the input images at their own resolution; without ``--fx`` it is the model's canonical
camera's (model/canonical_camera.py), which is right only for that field of view.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..backends import BACKENDS, parse_backend_options
from ..model.canonical_camera import camera_matrix
from ..model.config import RESIZE_MODES
from ..model.weights import SHIPPED_WEIGHTS_NAME, load_weights, resolve_weights_path
from ..postprocess import FitError, colorize_depth, colorize_semseg, model_palette
from . import run_engine_tool

LOG = logging.getLogger("edgemoe-infer")

#: Stage names in the order ``FrameResult.timings_ms`` reports them (docs/ARCHITECTURE.md).
TIMING_STAGES = ("preprocess", "backbone", "heads", "total")
#: Mosaic tiles taller than this are scaled down so the mosaic stays viewable.
MOSAIC_MAX_TILE_HEIGHT = 720


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="edgemoe-infer", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", metavar="IMAGE",
                    help="input image files (any format OpenCV reads)")
    ap.add_argument("--tasks", default="semseg,depth",
                    help="comma-separated tasks to run (default: semseg,depth)")
    ap.add_argument("--out", required=True, type=Path, metavar="DIR",
                    help="output directory (created)")
    ap.add_argument("--weights", type=Path, default=None, metavar="FILE",
                    help="model weights (.safetensors); default: the shipped "
                         f"{SHIPPED_WEIGHTS_NAME}")
    ap.add_argument("--backend", default="cpu", choices=sorted(BACKENDS),
                    help="backbone backend (default: cpu)")
    ap.add_argument("--backend-options", default="", metavar="JSON",
                    help='backend keyword arguments, e.g. \'{"bitstream": "edgemoe.bit", '
                         '"timeout_s": 2}\'')
    ap.add_argument("--resize", default=None, choices=RESIZE_MODES,
                    help="fit images to the model by stretching or centre-cropping "
                         "(default: the model's)")
    ap.add_argument("--fx", type=float, default=None, metavar="PX",
                    help="camera focal length in pixels of the input images, for metric depth of "
                         "that lens (default: the model's canonical camera)")
    ap.add_argument("--fy", type=float, default=None, metavar="PX",
                    help="vertical focal length (default: --fx)")
    ap.add_argument("--cx", type=float, default=None, metavar="PX",
                    help="principal point x (default: image centre)")
    ap.add_argument("--cy", type=float, default=None, metavar="PX",
                    help="principal point y (default: image centre)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each image N times and report the median timings "
                         "(after one warm-up run)")
    return ap.parse_args(argv)


def _tasks(text: str, available: Sequence[str]) -> tuple[str, ...]:
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in tasks if t not in available]
    if not tasks or unknown:
        raise ValueError(f"--tasks {text!r}: unknown or empty; this model has: "
                         f"{','.join(available)}")
    return tasks


def camera_k(args: argparse.Namespace, image_h: int, image_w: int) -> np.ndarray | None:
    """K from --fx/--fy/--cx/--cy for an image of this size; None without --fx."""
    if args.fx is None:
        if (args.fy, args.cx, args.cy) != (None, None, None):
            raise ValueError("--fy/--cx/--cy need --fx")
        return None
    fy = args.fx if args.fy is None else args.fy
    cx = (image_w - 1) / 2 if args.cx is None else args.cx
    cy = (image_h - 1) / 2 if args.cy is None else args.cy
    # IntrinsicsError if fx, fy <= 0
    return camera_matrix([[args.fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{path}: cannot read image (missing, unreadable or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write image")


def _mosaic(tiles: Sequence[np.ndarray]) -> np.ndarray:
    h = tiles[0].shape[0]
    scale = min(1.0, MOSAIC_MAX_TILE_HEIGHT / h)
    if scale < 1.0:
        size = (max(1, round(tiles[0].shape[1] * scale)), max(1, round(h * scale)))
        tiles = [cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in tiles]
    return np.hstack(tiles)


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, semseg: np.ndarray | None,
                  depth: np.ndarray | None, min_depth: float, max_depth: float,
                  palette: np.ndarray | None = None) -> list[Path]:
    """Write the files of one image; returns their paths. ``palette``: the model's class
    colours."""
    written: list[Path] = []
    tiles = [image]
    if semseg is not None:
        color = colorize_semseg(semseg, palette)
        _write_rgb(out_dir / f"{stem}_semseg.png", color)
        ids_path = out_dir / f"{stem}_semseg_ids.png"
        if not cv2.imwrite(str(ids_path), semseg.astype(np.uint8)):
            raise OSError(f"{ids_path}: cannot write image")
        written += [out_dir / f"{stem}_semseg.png", ids_path]
        tiles.append(color)
    if depth is not None:
        color = colorize_depth(depth, min_depth, max_depth)
        _write_rgb(out_dir / f"{stem}_depth.png", color)
        np.save(out_dir / f"{stem}_depth.npy", depth.astype(np.float32))
        written += [out_dir / f"{stem}_depth.png", out_dir / f"{stem}_depth.npy"]
        tiles.append(color)
    _write_rgb(out_dir / f"{stem}_mosaic.png", _mosaic(tiles))
    written.append(out_dir / f"{stem}_mosaic.png")
    return written


def _format_table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    name_w = max([len("image"), len("median")] + [len(r[0]) for r in rows])
    head = (f"{'image':<{name_w}}  {'input':>11}  "
            + "  ".join(f"{s + ' ms':>13}" for s in TIMING_STAGES))
    lines = [head, "-" * len(head)]
    for name, size, t in rows:
        lines.append(f"{name:<{name_w}}  "
                     f"{size:>11}  " + "  ".join(f"{t.get(s, float('nan')):>13.2f}"
                                                                   for s in TIMING_STAGES))
    if len(rows) > 1:
        med = {s: statistics.median(r[2][s] for r in rows if s in r[2]) for s in TIMING_STAGES}
        lines.append(f"{'median':<{name_w}}  {'':>11}  "
                     + "  ".join(f"{med[s]:>13.2f}" for s in TIMING_STAGES))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..engine import Engine  # the engine pulls in backends; import after argument errors

    weights = load_weights(resolve_weights_path(args.weights))
    cfg = weights.config
    tasks = _tasks(args.tasks, cfg.tasks)
    if args.repeat < 1:
        raise ValueError(f"--repeat {args.repeat}: must be >= 1")
    camera_k(args, 1, 1)  # a bad --fx/--fy fails before any work
    args.out.mkdir(parents=True, exist_ok=True)
    engine = Engine(weights, backend=args.backend, resize_mode=args.resize,
                    backend_options=parse_backend_options(args.backend_options))
    rows: list[tuple[str, str, dict[str, float]]] = []
    failed = 0
    try:
        for i, name in enumerate(args.images):
            path = Path(name)
            try:
                image = _read_rgb(path)
            except OSError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
                continue
            k = camera_k(args, *image.shape[:2])
            if args.repeat > 1 and i == 0:
                engine.infer(image, tasks=tasks, camera_k=k)  # warm-up: caches, lazy allocations
            runs = [engine.infer(image, tasks=tasks, camera_k=k) for _ in range(args.repeat)]
            res = runs[-1]
            timings = {s: statistics.median(r.timings_ms[s] for r in runs) for s in TIMING_STAGES
                       if s in res.timings_ms}
            semseg = res.semseg_at_input() if "semseg" in tasks else None
            depth = res.depth_at_input() if "depth" in tasks else None
            if semseg is not None and semseg.shape != image.shape[:2]:
                raise FitError(f"{path}: semseg output {semseg.shape} does not match the input "
                               f"{image.shape[:2]}")
            stem = (path.stem if len(args.images) == len({Path(n).stem for n in args.images})
                    else f"{i:03d}_{path.stem}")
            scale = res.depth_scale  # the colour map spans the depth range of this lens
            write_outputs(args.out, stem, image, semseg, depth, cfg.min_depth * scale,
                          cfg.max_depth * scale, model_palette(cfg))
            rows.append((path.name, f"{image.shape[1]}x{image.shape[0]}", timings))
    finally:
        engine.close()
    lens = f"fx={args.fx:g}" if args.fx is not None else "canonical camera (no --fx)"
    print(f"backend={args.backend} tasks={','.join(tasks)} "
          f"resize={args.resize or cfg.resize_mode} model={cfg.img_h}x{cfg.img_w} "
          f"repeat={args.repeat} depth={lens}")
    if rows:
        print(_format_table(rows))
    print(f"wrote {len(rows)} image(s) to {args.out}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``edgemoe-infer``)."""
    return run_engine_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
