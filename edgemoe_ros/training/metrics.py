"""Segmentation and depth metrics (numpy only), shared by training validation and bench/eval_model.py.

Depth is evaluated where the ground truth is a finite, non-sky distance within the model's range
(``max_depth``, like the usual 80 m cap of KITTI-style evaluation): the scenes mark sky as +inf,
and a prediction clipped to ``max_depth`` cannot be judged on farther ground.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.config import IGNORE_INDEX, SEMSEG_CLASSES

SKY_CLASS = SEMSEG_CLASSES.index("sky")
#: δ threshold of the standard depth accuracy metric (δ < 1.25).
DELTA1_THRESHOLD = 1.25


def depth_valid_mask(gt_depth: np.ndarray, gt_labels: np.ndarray, max_depth: float) -> np.ndarray:
    return np.isfinite(gt_depth) & (gt_depth > 0) & (gt_depth <= max_depth) & (gt_labels != SKY_CLASS)


@dataclass
class SegDepthMeter:
    """Accumulates a confusion matrix and depth error sums over many frames."""

    num_classes: int = len(SEMSEG_CLASSES)
    max_depth: float = 80.0
    confusion: np.ndarray = field(init=False)
    _abs_rel: float = 0.0
    _sq: float = 0.0
    _delta1: int = 0
    _n_depth: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add_semseg(self, pred: np.ndarray, gt: np.ndarray) -> None:
        keep = gt != IGNORE_INDEX
        if pred.shape != gt.shape:
            raise ValueError(f"semseg prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        idx = gt[keep].astype(np.int64) * self.num_classes + np.minimum(pred[keep], self.num_classes - 1)
        self.confusion += np.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def add_depth(self, pred: np.ndarray, gt_depth: np.ndarray, gt_labels: np.ndarray) -> None:
        if pred.shape != gt_depth.shape:
            raise ValueError(f"depth prediction {pred.shape} and ground truth {gt_depth.shape} differ in shape")
        valid = depth_valid_mask(gt_depth, gt_labels, self.max_depth) & np.isfinite(pred)
        g = gt_depth[valid].astype(np.float64)
        p = np.maximum(pred[valid].astype(np.float64), 1e-6)
        self._abs_rel += float(np.sum(np.abs(p - g) / g))
        self._sq += float(np.sum((p - g) ** 2))
        self._delta1 += int(np.count_nonzero(np.maximum(p / g, g / p) < DELTA1_THRESHOLD))
        self._n_depth += int(g.size)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and predictions."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.confusion.sum():
            out["miou"] = float(np.nanmean(self.iou()))
            out["pixel_acc"] = float(np.trace(self.confusion) / self.confusion.sum())
        if self._n_depth:
            out["absrel"] = self._abs_rel / self._n_depth
            out["rmse"] = float(np.sqrt(self._sq / self._n_depth))
            out["delta1"] = self._delta1 / self._n_depth
        return out
