# SPDX-License-Identifier: Apache-2.0
"""Segmentation and depth metrics (numpy only), shared by training validation and
bench/eval_model.py.

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


def depth_valid_mask(gt_depth: np.ndarray, gt_labels: np.ndarray | None, max_depth: float,
                     min_depth: float = 0.0) -> np.ndarray:
    """Finite ground truth in (min_depth, max_depth], not labelled sky. ``gt_labels`` None: the
    depth map alone says what is valid (real data marks sky and missing returns as NaN)."""
    valid = np.isfinite(gt_depth) & (gt_depth > max(min_depth, 0.0)) & (gt_depth <= max_depth)
    return valid if gt_labels is None else valid & (gt_labels != SKY_CLASS)


@dataclass
class SegDepthMeter:
    """Accumulates a confusion matrix and depth error sums over many frames."""

    num_classes: int = len(SEMSEG_CLASSES)
    max_depth: float = 80.0
    #: depth ground truth at or below this is not scored (0.5 m in KITTI-style real-data
    #: evaluation)
    min_depth: float = 0.0
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
            raise ValueError(f"semseg prediction {pred.shape} and ground truth {gt.shape} differ "
                             "in shape")
        idx = (gt[keep].astype(np.int64) * self.num_classes
               + np.minimum(pred[keep], self.num_classes - 1))
        self.confusion += np.bincount(idx, minlength=self.num_classes ** 2).reshape(
            self.num_classes, -1)

    def add_depth(self, pred: np.ndarray, gt_depth: np.ndarray, gt_labels: np.ndarray | None,
                  where: np.ndarray | None = None) -> None:
        """``where``: optional mask of the pixels to score (on top of the valid-depth rule);
        ``gt_labels`` None: no label-based exclusion (see ``depth_valid_mask``)."""
        if pred.shape != gt_depth.shape:
            raise ValueError(f"depth prediction {pred.shape} and ground truth {gt_depth.shape} "
                             "differ in shape")
        valid = (depth_valid_mask(gt_depth, gt_labels, self.max_depth, self.min_depth)
                 & np.isfinite(pred))
        if where is not None:
            valid &= where
        g = gt_depth[valid].astype(np.float64)
        p = np.maximum(pred[valid].astype(np.float64), 1e-6)
        self._abs_rel += float(np.sum(np.abs(p - g) / g))
        self._sq += float(np.sum((p - g) ** 2))
        self._delta1 += int(np.count_nonzero(np.maximum(p / g, g / p) < DELTA1_THRESHOLD))
        self._n_depth += int(g.size)

    @property
    def depth_pixels(self) -> int:
        return self._n_depth

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


#: Upper edges (metres) of the distance bins of the depth breakdown; the last bin ends at
#: max_depth.
DEPTH_BIN_EDGES = (10.0, 20.0, 40.0)


def boundary_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (Chebyshev distance) of a pixel of another label, ignore included.

    Used to split errors into "at an edge" and "inside a region": a prediction made per 16×16 token
    and refined by a small pixel head is expected to fail at edges first.
    """
    if radius <= 0:
        return np.zeros(labels.shape, dtype=bool)
    lab = np.asarray(labels, dtype=np.uint8)
    k = 2 * radius + 1
    pad = np.pad(lab, [(0, 0)] * (lab.ndim - 2) + [(radius, radius), (radius, radius)],
                 mode="edge")
    h, w = lab.shape[-2:]
    lo, hi = lab.copy(), lab.copy()
    for dy in range(k):
        for dx in range(k):
            win = pad[..., dy:dy + h, dx:dx + w]
            np.minimum(lo, win, out=lo)
            np.maximum(hi, win, out=hi)
    return lo != hi


@dataclass
class DepthByDistance:
    """Depth accuracy per ground-truth distance bin (``DEPTH_BIN_EDGES``, the last bin up to
    max_depth)."""

    max_depth: float = 80.0
    min_depth: float = 0.0
    bins: list[SegDepthMeter] = field(init=False)

    def __post_init__(self) -> None:
        self.bins = [SegDepthMeter(1, self.max_depth, self.min_depth)
                     for _ in range(len(DEPTH_BIN_EDGES) + 1)]

    def add(self, pred_depth: np.ndarray, gt_depth: np.ndarray,
            gt_labels: np.ndarray | None) -> None:
        edges = (0.0, *DEPTH_BIN_EDGES, np.inf)
        for meter, lo, hi in zip(self.bins, edges[:-1], edges[1:], strict=True):
            meter.add_depth(pred_depth, gt_depth, gt_labels,
                            where=(gt_depth > lo) & (gt_depth <= hi))

    def summary(self) -> dict[str, dict]:
        """``{"0-10 m": {absrel, rmse, delta1, pixels}, ...}`` (a bin without pixels has only
        ``pixels``)."""
        names = [f"{lo:g}-{hi:g} m" for lo, hi in zip((0.0, *DEPTH_BIN_EDGES),
                                                      (*DEPTH_BIN_EDGES, self.max_depth),
                                                      strict=True)]
        return {n: {**m.summary(), "pixels": m.depth_pixels}
                for n, m in zip(names, self.bins, strict=True)}


@dataclass
class ErrorBreakdown:
    """Where the errors are: segmentation and depth scored separately at label edges (``band``) and
    inside regions (``interior``), plus depth accuracy by distance. Frames at the model's
    resolution."""

    num_classes: int = len(SEMSEG_CLASSES)
    max_depth: float = 80.0
    radius: int = 2
    regions: dict[str, SegDepthMeter] = field(init=False)
    distance: DepthByDistance = field(init=False)
    #: per class: [pixels in band, pixels in total] of the ground truth
    class_band: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.regions = {r: SegDepthMeter(self.num_classes, self.max_depth)
                        for r in ("interior", "band")}
        self.distance = DepthByDistance(self.max_depth)
        self.class_band = np.zeros((self.num_classes, 2), dtype=np.int64)

    def add(self, pred_labels: np.ndarray, pred_depth: np.ndarray, gt_labels: np.ndarray,
            gt_depth: np.ndarray
            ) -> None:
        band = boundary_band(gt_labels, self.radius)
        for name, keep in (("interior", ~band), ("band", band)):
            gt = np.where(keep, gt_labels, IGNORE_INDEX)
            self.regions[name].add_semseg(pred_labels, gt)
            self.regions[name].add_depth(pred_depth, gt_depth, gt_labels, where=keep)
        known = gt_labels != IGNORE_INDEX
        cls = gt_labels[known].astype(np.int64)
        self.class_band[:, 0] += np.bincount(cls[band[known]],
                                             minlength=self.num_classes)[:self.num_classes]
        self.class_band[:, 1] += np.bincount(cls, minlength=self.num_classes)[:self.num_classes]
        self.distance.add(pred_depth, gt_depth, gt_labels)

    def summary(self) -> dict:
        """``interior``/``band``: their SegDepthMeter summaries plus per-class IoU and pixel share;
        ``band_share``: per class, the fraction of its pixels in the band; ``depth_bins``: per
        bin."""
        total = {r: int(m.confusion.sum()) for r, m in self.regions.items()}
        out: dict = {}
        for name, meter in self.regions.items():
            out[name] = {**meter.summary(),
                         "pixel_share": total[name] / max(sum(total.values()), 1),
                         "iou": per_class(meter.iou())}
        with np.errstate(invalid="ignore", divide="ignore"):
            share = self.class_band[:, 0] / self.class_band[:, 1]
        out["band_share"] = per_class(share)
        wrong = {r: int(m.confusion.sum() - np.trace(m.confusion))
                 for r, m in self.regions.items()}
        out["wrong_pixels_in_band"] = wrong["band"] / max(sum(wrong.values()), 1)
        out["depth_bins"] = self.distance.summary()
        return out


def per_class(values: np.ndarray,
              class_names: tuple[str, ...] = SEMSEG_CLASSES) -> dict[str, float | None]:
    """Per-class values keyed by class name, NaN as None (JSON has no NaN)."""
    return {name: (None if np.isnan(v) else float(v))
            for name, v in zip(class_names, values, strict=False)}
