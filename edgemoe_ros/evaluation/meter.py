# SPDX-License-Identifier: Apache-2.0
"""Scores of a model on a labelled dataset: what ``edgemoe-eval`` accumulates and writes as JSON.

Segmentation: a confusion matrix over the labelled pixels the model predicted (pixels outside a
crop-mode fit have no prediction; their share is reported as ``coverage``), mIoU, pixel accuracy,
per-class IoU. Depth: over ground truth in ``[min_depth, max_depth]`` (0.5-80 m by default, the
KITTI convention), *metric* AbsRel, RMSE and δ<1.25 with no rescaling, since the node publishes
metres; δ1 and AbsRel after per-frame median scaling are extra keys that separate "wrong scale"
from "wrong shape". Built on ``training.metrics`` so training, the synthetic benchmark and this
evaluation compute the same numbers the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.config import IGNORE_INDEX
from ..training.metrics import DepthByDistance, SegDepthMeter, depth_valid_mask, per_class

#: Depth range scored on real data (metres): the usual KITTI evaluation's cap, and a floor below
#: which LiDAR/stereo returns are mostly the ego vehicle or noise.
EVAL_MIN_DEPTH = 0.5
EVAL_MAX_DEPTH = 80.0


def _clean(value: float | None) -> float | None:
    """JSON has no NaN: None instead."""
    return None if value is None or not np.isfinite(value) else float(value)


def median_scale(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float | None:
    """median(gt) / median(pred) over ``valid`` pixels (None when there are none)."""
    if not valid.any():
        return None
    p = float(np.median(pred[valid]))
    return float(np.median(gt[valid])) / p if p > 0 else None


@dataclass
class DatasetMeter:
    """Accumulates one evaluation run; ``summary()`` is the JSON ``edgemoe-eval --json`` writes."""

    class_names: tuple[str, ...]
    min_depth: float = EVAL_MIN_DEPTH
    max_depth: float = EVAL_MAX_DEPTH
    seg: SegDepthMeter = field(init=False)
    depth: SegDepthMeter = field(init=False)
    depth_scaled: SegDepthMeter = field(init=False)
    distance: DepthByDistance = field(init=False)
    #: depth scored per ground-truth class, on frames that have both labels and depth
    depth_by_class: list[SegDepthMeter] = field(init=False)
    frames: list[dict] = field(init=False, default_factory=list)
    _labelled_px: int = 0
    _predicted_px: int = 0

    def __post_init__(self) -> None:
        n = len(self.class_names)
        self.seg = SegDepthMeter(n, self.max_depth, self.min_depth)
        self.depth, self.depth_scaled = (SegDepthMeter(1, self.max_depth, self.min_depth)
                                         for _ in range(2))
        self.distance = DepthByDistance(self.max_depth, self.min_depth)
        self.depth_by_class = [SegDepthMeter(1, self.max_depth, self.min_depth) for _ in range(n)]
        self.frames = []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def add(self, name: str, pred_semseg: np.ndarray | None, pred_depth: np.ndarray | None,
            gt_semseg: np.ndarray | None, gt_depth: np.ndarray | None) -> dict:
        """Score one frame (all maps at the image's own size); returns and keeps its per-frame
        record."""
        record: dict = {"name": name, "semseg": None, "depth": None}
        if gt_semseg is not None and pred_semseg is not None:
            record["semseg"] = self._add_semseg(pred_semseg, gt_semseg)
        if gt_depth is not None and pred_depth is not None:
            record["depth"] = self._add_depth(pred_depth, gt_depth, gt_semseg)
        self.frames.append(record)
        return record

    def _add_semseg(self, pred: np.ndarray, gt: np.ndarray) -> dict:
        labelled = gt != IGNORE_INDEX
        predicted = labelled & (pred < self.num_classes)
        self._labelled_px += int(np.count_nonzero(labelled))
        self._predicted_px += int(np.count_nonzero(predicted))
        scored = np.where(predicted, gt, IGNORE_INDEX)
        frame = SegDepthMeter(self.num_classes)
        frame.add_semseg(pred, scored)
        self.seg.confusion += frame.confusion
        return {k: v for k, v in frame.summary().items() if k in ("miou", "pixel_acc")}

    def _add_depth(self, pred: np.ndarray, gt: np.ndarray, gt_semseg: np.ndarray | None) -> dict:
        frame = SegDepthMeter(1, self.max_depth, self.min_depth)
        frame.add_depth(pred, gt, None)
        self.depth.add_depth(pred, gt, None)
        self.distance.add(pred, gt, None)
        valid = depth_valid_mask(gt, None, self.max_depth, self.min_depth) & np.isfinite(pred)
        scale = median_scale(pred, gt, valid)
        if scale is not None:
            self.depth_scaled.add_depth(pred * np.float32(scale), gt, None)
        if gt_semseg is not None:
            for c, meter in enumerate(self.depth_by_class):
                meter.add_depth(pred, gt, None, where=gt_semseg == c)
        return {**frame.summary(), "pixels": frame.depth_pixels, "median_scale": _clean(scale)}

    def summary(self) -> dict:
        """Nested JSON: ``semseg``/``depth`` (None-valued keys when a set has no such ground
        truth)."""
        seg = self.seg.summary()
        scaled = self.depth_scaled.summary()
        depth = self.depth.summary()
        with np.errstate(invalid="ignore", divide="ignore"):
            gt_share = self.seg.confusion.sum(1) / self.seg.confusion.sum()
            pred_share = self.seg.confusion.sum(0) / self.seg.confusion.sum()
        by_class = {n: {**m.summary(), "pixels": m.depth_pixels}
                    for n, m in zip(self.class_names, self.depth_by_class, strict=True)
                    if m.depth_pixels}
        return {
            "frames": len(self.frames),
            "semseg": {
                "frames": sum(f["semseg"] is not None for f in self.frames),
                "miou": _clean(seg.get("miou")), "pixel_acc": _clean(seg.get("pixel_acc")),
                "iou": per_class(self.seg.iou(), self.class_names),
                "gt_share": per_class(gt_share, self.class_names),
                "pred_share": per_class(pred_share, self.class_names),
                "coverage": _clean(self._predicted_px / self._labelled_px
                                   if self._labelled_px else None),

                "classes": list(self.class_names),
                "confusion": self.seg.confusion.tolist(),
            },
            "depth": {
                "frames": sum(f["depth"] is not None for f in self.frames),
                "pixels": self.depth.depth_pixels,
                "range_m": [self.min_depth, self.max_depth],
                "absrel": _clean(depth.get("absrel")), "rmse": _clean(depth.get("rmse")),
                "delta1": _clean(depth.get("delta1")),
                "delta1_median_scaled": _clean(scaled.get("delta1")),
                "absrel_median_scaled": _clean(scaled.get("absrel")),
                "by_distance": self.distance.summary(),
                "by_class": by_class,
            },
            "per_frame": self.frames,
        }
