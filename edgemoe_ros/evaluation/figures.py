# SPDX-License-Identifier: Apache-2.0
"""Pictures of an evaluation a person can look at: the confusion matrix and a mosaic per frame."""

from __future__ import annotations

import cv2
import numpy as np

from ..model.config import IGNORE_INDEX
from ..postprocess import colorize_depth, colorize_semseg

#: Mosaic tiles are scaled to this width (a 1242-wide KITTI frame at half size).
TILE_WIDTH = 624
#: Confusion-matrix cell size and the label margin, pixels.
CELL = 56
MARGIN = 150
_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Colours (RGB) of the segmentation error tile.
RIGHT, WRONG, UNSCORED = (40, 160, 40), (220, 30, 30), (0, 0, 0)


def confusion_image(confusion: np.ndarray, class_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction) as an RGB image;
    each cell shows the percentage of that ground-truth class's pixels, darker = more."""
    n = len(class_names)
    rows = confusion.sum(1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(rows > 0, confusion / rows, np.nan)
    size = (MARGIN + n * CELL + 10, MARGIN + n * CELL + 10)
    img = np.full((*size, 3), 255, np.uint8)
    for r in range(n):
        for c in range(n):
            x, y = MARGIN + c * CELL, MARGIN + r * CELL
            v = frac[r, c]
            shade = ((230, 230, 230) if np.isnan(v)
                     else tuple(int(255 - v * s) for s in (215, 160, 40)))
            cv2.rectangle(img, (x, y), (x + CELL - 1, y + CELL - 1), shade, -1)
            if not np.isnan(v) and v >= 0.005:
                ink = (255, 255, 255) if v > 0.5 else (0, 0, 0)
                cv2.putText(img, f"{100 * v:.0f}", (x + 8, y + CELL // 2 + 6), _FONT, 0.5, ink, 1,
                            cv2.LINE_AA)
    for i, name in enumerate(class_names):
        cv2.putText(img, name[:14], (6, MARGIN + i * CELL + CELL // 2 + 5), _FONT, 0.45, (0, 0, 0),
                    1, cv2.LINE_AA)
        label = np.full((CELL, MARGIN - 10, 3), 255, np.uint8)  # column names written vertically
        cv2.putText(label, name[:14], (4, CELL // 2 + 5), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        img[0:MARGIN - 10, MARGIN + i * CELL:MARGIN + (i + 1) * CELL] = np.rot90(label)[:, :CELL]
    cv2.putText(img, "rows: truth, cols: prediction (% of row)", (6, 20), _FONT, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    return img


def _tile(image: np.ndarray, caption: str) -> np.ndarray:
    h = max(1, round(image.shape[0] * TILE_WIDTH / image.shape[1]))
    interp = cv2.INTER_AREA if image.shape[1] > TILE_WIDTH else cv2.INTER_NEAREST
    tile = np.ascontiguousarray(cv2.resize(image, (TILE_WIDTH, h), interpolation=interp))
    cv2.putText(tile, caption, (6, 18), _FONT, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, caption, (6, 18), _FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _blank(shape: tuple[int, int]) -> np.ndarray:
    return np.full((*shape, 3), 64, np.uint8)


def _sparse_for_display(depth: np.ndarray) -> np.ndarray:
    """Grow sparse LiDAR points so they are visible after downscaling (display only)."""
    if np.mean(np.isfinite(depth)) > 0.5:
        return depth
    filled = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
    return cv2.dilate(filled, np.ones((5, 5), np.uint8))


def mosaic(image: np.ndarray, palette: np.ndarray, pred_semseg: np.ndarray | None,
           gt_semseg: np.ndarray | None, pred_depth: np.ndarray | None,
           gt_depth: np.ndarray | None, depth_range: tuple[float, float]) -> np.ndarray:
    """Two rows: image | truth | prediction (semseg), error map | truth | prediction (depth).
    The error map is green where the class is right, red where wrong, black where unscored; for a
    frame with depth but no labels it shows the depth ratio error instead (white = off by
    > 25 %)."""
    hw = image.shape[:2]
    seg_gt = colorize_semseg(gt_semseg, palette) if gt_semseg is not None else _blank(hw)
    seg_pred = colorize_semseg(pred_semseg, palette) if pred_semseg is not None else _blank(hw)
    d_gt = (colorize_depth(_sparse_for_display(gt_depth), *depth_range) if gt_depth is not None
            else _blank(hw))
    d_pred = colorize_depth(pred_depth, *depth_range) if pred_depth is not None else _blank(hw)
    if gt_semseg is not None and pred_semseg is not None:
        err = np.zeros((*hw, 3), np.uint8)
        scored = (gt_semseg != IGNORE_INDEX) & (pred_semseg != IGNORE_INDEX)
        err[scored & (gt_semseg == pred_semseg)] = RIGHT
        err[scored & (gt_semseg != pred_semseg)] = WRONG
        err_caption = "semseg right / wrong"
    elif gt_depth is not None and pred_depth is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.maximum(pred_depth / gt_depth, gt_depth / pred_depth)
        bad = np.clip((ratio - 1.0) / 0.25, 0, 1)
        grey = np.where(np.isfinite(bad), 40 + 215 * bad, 0).astype(np.float32)
        grey = np.nan_to_num(_sparse_for_display(np.where(np.isfinite(bad), grey, np.nan)))
        err = cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2RGB)
        err_caption = "depth error (white: > 25 %)"
    else:
        err, err_caption = _blank(hw), "no ground truth"
    top = np.hstack([_tile(image, "image"), _tile(seg_gt, "semseg truth"),
                     _tile(seg_pred, "semseg predicted")])
    bottom = np.hstack([_tile(err, err_caption), _tile(d_gt, "depth truth"),
                        _tile(d_pred, "depth predicted")])

    return np.vstack([top, bottom])
