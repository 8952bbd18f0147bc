# SPDX-License-Identifier: Apache-2.0
"""Reading and writing the image files of the dataset layouts (OpenCV), with errors that name the
file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .frame import DatasetError


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path}: cannot read image (missing, unreadable or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mono(path: Path, dtype: type[np.generic]) -> np.ndarray:
    """A single-channel PNG stored as ``dtype`` (uint8 labelIds, uint16 depth/disparity),
    unconverted."""

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"{path}: cannot read image (missing, unreadable or not an image)")
    if img.ndim != 2 or img.dtype != dtype:
        raise DatasetError(f"{path}: expected a single-channel {np.dtype(dtype).name} PNG, got "
                           f"{img.dtype.name} with shape {img.shape}")
    return img


def write_image(path: Path, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) uint8 image or a mono uint8/uint16 image; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), data):
        raise OSError(f"{path}: cannot write image")
