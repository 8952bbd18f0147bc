# SPDX-License-Identifier: Apache-2.0
"""Labelled real-world datasets for evaluation and training (no ROS, no torch).

Readers yield ``LabelledFrame`` (RGB image, class ids of a scheme, metric depth, K, name) from

* ``ManifestDataset(FILE)``: a JSON list of images with labelIds / depth .npy / K (manifest.py);
* ``CityscapesDataset(ROOT, split)``: the standard Cityscapes layout, depth from disparity;
* ``KittiDepthDataset(ROOT, split)``: KITTI depth-completion layout (raw images + annotated depth).

``open_dataset("cityscapes:ROOT")`` picks one from a ``kind:location`` spec (the form the
command lines take). ``labels`` holds the class schemes (``categories``: 7, ``cityscapes19``: 19)
and the labelId maps; ``export`` writes our rendered scenes in these layouts. docs/datasets.md.
"""

from __future__ import annotations

from pathlib import Path

from .cityscapes import CityscapesDataset
from .frame import DatasetError, FrameDataset, LabelledFrame
from .kitti import KittiDepthDataset
from .labels import SCHEMES, ClassScheme, get_scheme, scheme_for_classes
from .manifest import ManifestDataset

#: Dataset kinds of ``open_dataset`` / ``kind:location`` specs.
KINDS = ("manifest", "cityscapes", "kitti")


def open_dataset(spec: str, split: str | None = None,
                 scheme: ClassScheme | str = "categories") -> FrameDataset:
    """``manifest:FILE``, ``cityscapes:ROOT`` or ``kitti:ROOT`` -> its reader. ``split`` applies to
    the folder layouts (default ``train``); a manifest has none."""
    kind, sep, location = spec.partition(":")
    if not sep or not location or kind not in KINDS:
        raise DatasetError(f"dataset {spec!r}: expected KIND:PATH with KIND one of "
                           f"{', '.join(KINDS)}")
    path = Path(location)
    if kind == "manifest":
        if split is not None:
            raise DatasetError(f"dataset {spec!r}: a manifest has no splits (got split {split!r})")
        return ManifestDataset(path, scheme)
    if kind == "cityscapes":
        return CityscapesDataset(path, split or "train", scheme)
    return KittiDepthDataset(path, split or "train", scheme)


__all__ = [
    "KINDS", "SCHEMES", "CityscapesDataset", "ClassScheme", "DatasetError", "FrameDataset",
    "KittiDepthDataset", "LabelledFrame", "ManifestDataset", "get_scheme", "open_dataset",
    "scheme_for_classes",

]
