# SPDX-License-Identifier: Apache-2.0
"""The evaluation loop: every frame through the engine, scored at the image's own resolution."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import FrameDataset
from ..datasets.imageio import write_image
from .figures import confusion_image, mosaic
from .meter import EVAL_MAX_DEPTH, EVAL_MIN_DEPTH, DatasetMeter

CONFUSION_PNG = "confusion.png"
MOSAIC_DIR = "mosaics"


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def evaluate(engine: Any, dataset: FrameDataset, limit: int | None = None,
             save_dir: Path | None = None, min_depth: float = EVAL_MIN_DEPTH,
             max_depth: float = EVAL_MAX_DEPTH, use_k: bool = True,
             progress: Callable[[dict], None] | None = None) -> dict:
    """Run ``engine`` on the first ``limit`` frames (all when None) and score them; returns the
    ``DatasetMeter`` summary plus timing. Each frame's K goes to the engine (metric depth for that
    lens) unless ``use_k`` is False (the canonical camera, to measure what K buys). ``save_dir``:
    also write ``confusion.png`` and one ``mosaics/<frame>.png`` per frame. ``progress(record)``
    is called after each frame."""
    cfg = engine.config
    if dataset.scheme.class_names != tuple(cfg.class_names):
        raise ValueError(f"dataset read with classes {dataset.scheme.class_names} but the model "
                         f"predicts {tuple(cfg.class_names)}")
    meter = DatasetMeter(tuple(cfg.class_names), min_depth, max_depth)
    if save_dir is not None:
        (save_dir / MOSAIC_DIR).mkdir(parents=True, exist_ok=True)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    times = []
    for i in range(n):
        frame = dataset[i]
        t0 = time.perf_counter()
        res = engine.infer(frame.image, tasks=tuple(cfg.tasks),
                           camera_k=frame.K if use_k else None)
        times.append(time.perf_counter() - t0)
        pred_semseg = res.semseg_at_input() if "semseg" in cfg.tasks else None
        pred_depth = res.depth_at_input() if "depth" in cfg.tasks else None
        record = meter.add(frame.name, pred_semseg, pred_depth, frame.semseg, frame.depth)
        record["ms"] = 1e3 * times[-1]
        if save_dir is not None:
            tile = mosaic(frame.image, dataset.scheme.palette, pred_semseg, frame.semseg,
                          pred_depth, frame.depth, (cfg.min_depth, cfg.max_depth))
            write_image(save_dir / MOSAIC_DIR / f"{i:04d}_{_file_safe(frame.name)}.png", tile)
        if progress is not None:
            progress(record)
    summary = meter.summary()
    summary["ms_per_frame"] = 1e3 * float(np.median(times)) if times else None
    summary["camera_k"] = use_k
    if save_dir is not None:
        write_image(save_dir / CONFUSION_PNG,
                    confusion_image(meter.seg.confusion, meter.class_names))

    return summary
