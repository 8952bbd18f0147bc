# SPDX-License-Identifier: Apache-2.0
"""The frame every dataset reader yields, the readers' common base, and their error type."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..model.canonical_camera import IntrinsicsError, camera_matrix
from .labels import ClassScheme, get_scheme


class DatasetError(ValueError):
    """A dataset that cannot be read as its layout says: missing files, bad shapes, bad fields."""


@dataclass(frozen=True)
class LabelledFrame:
    """One camera image with whatever ground truth its dataset has.

    image: (H, W, 3) uint8 RGB, as stored (full size; the engine fits it to the model).
    semseg: (H, W) uint8 class ids of the reader's scheme, ``IGNORE_INDEX`` = void; None if
        unlabelled.
    depth: (H, W) float32 metres along the optical axis, NaN = unknown; None if no depth.
    K: (3, 3) float64 intrinsics of ``image`` in pixels.
    name: a stable, human-readable id (file stem), unique within its dataset.
    """

    image: np.ndarray
    semseg: np.ndarray | None
    depth: np.ndarray | None
    K: np.ndarray
    name: str


class FrameDataset(Sequence[LabelledFrame]):
    """Random access over a dataset's frames, each read from disk when asked for (nothing cached),
    so a reader over a whole Cityscapes split costs only its file list."""

    def __init__(self, scheme: ClassScheme | str = "categories") -> None:
        self.scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> LabelledFrame:
        """Read frame ``index`` (0 <= index < len)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> LabelledFrame:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range ({n} frames)")
        return self.load(int(index) % n)

    def __iter__(self) -> Iterator[LabelledFrame]:
        for i in range(len(self)):
            yield self.load(i)


def check_intrinsics(K: object, where: str) -> np.ndarray:
    """A 3x3 pinhole K as float64 (the engine's rule, ``camera_matrix``: finite, fx, fy > 0), with
    a last row of (0, 0, 1); a dataset must give one, so "uncalibrated" (all zeros) is an error
    too."""
    try:
        k = camera_matrix(K)
    except IntrinsicsError as exc:
        raise DatasetError(f"{where}: K is not usable: {exc}") from None
    if k is None or np.shape(K) != (3, 3) or not np.allclose(k[2], (0, 0, 1)):
        raise DatasetError(f"{where}: K must be a 3x3 pinhole intrinsics matrix "
                           f"[[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {np.asarray(K).tolist()}")
    return k


def check_same_size(image: np.ndarray, other: np.ndarray | None, what: str, where: str) -> None:
    """Ground truth must cover the image pixel for pixel."""
    if other is not None and other.shape[:2] != image.shape[:2]:
        raise DatasetError(f"{where}: {what} is {other.shape[1]}x{other.shape[0]} but the image "
                           f"is {image.shape[1]}x{image.shape[0]}")


def make_frame(image: np.ndarray, label_ids: np.ndarray | None, depth: np.ndarray | None,
               K: np.ndarray, name: str, scheme: ClassScheme, where: str) -> LabelledFrame:

    """Check sizes and map labelIds through ``scheme``; the last step of every reader."""
    check_same_size(image, label_ids, "the label image", where)
    check_same_size(image, depth, "the depth map", where)
    semseg = scheme.from_label_ids(label_ids) if label_ids is not None else None
    return LabelledFrame(image=image, semseg=semseg, depth=depth, K=K, name=name)
