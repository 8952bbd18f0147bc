# SPDX-License-Identifier: Apache-2.0
"""Manifest datasets: a JSON list of labelled images, the format of
``shared/real_dev/manifest.json``.

Each entry::

    {"image": "a/b.png",                   # path relative to the manifest's folder
     "semseg_labelIds": "a/b_labelIds.png", # uint8 PNG of Cityscapes labelIds, same size, or null
     "depth_m": "a/b_depth_m.npy",          # float32 .npy in metres, same size, NaN = unknown,
                                            # or null
     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],  # intrinsics of the image as stored
     "source": {...}}                       # optional: where it came from (kept, not interpreted)

The whole list is validated when the dataset is opened (fields, types, K, that the files exist),
so a bad manifest fails at once with the entry it is about, not halfway through an evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .frame import DatasetError, FrameDataset, LabelledFrame, check_intrinsics, make_frame
from .imageio import read_mono, read_rgb
from .labels import ClassScheme

REQUIRED_KEYS = ("image", "semseg_labelIds", "depth_m", "K")


@dataclass(frozen=True)
class ManifestEntry:
    image: Path
    label_ids: Path | None
    depth: Path | None
    K: np.ndarray
    source: Any = None


def _path(base: Path, value: Any, key: str, where: str, optional: bool) -> Path | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where}: {key!r} must be a relative path string"
                           f"{' or null' if optional else ''}, got {value!r}")
    path = base / value
    if not path.is_file():
        raise DatasetError(f"{where}: {key} file {path} does not exist")
    return path


def parse_manifest(path: Path) -> list[ManifestEntry]:
    """Read and validate a manifest; DatasetError names the entry and field at fault."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read manifest: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path}: a manifest is a non-empty JSON list of entries")
    base = Path(path).parent
    entries = []
    for i, item in enumerate(data):
        where = f"{path} entry {i}"
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: must be a JSON object, got {type(item).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in item]
        if missing:
            raise DatasetError(f"{where}: missing key(s) {', '.join(missing)} "
                               f"(need {', '.join(REQUIRED_KEYS)})")
        image = _path(base, item["image"], "image", where, optional=False)
        assert image is not None
        labels = _path(base, item["semseg_labelIds"], "semseg_labelIds", where, optional=True)
        depth = _path(base, item["depth_m"], "depth_m", where, optional=True)
        entries.append(ManifestEntry(image, labels, depth, check_intrinsics(item["K"], where),
                                     item.get("source")))
    return entries


def read_depth_npy(path: Path) -> np.ndarray:
    """(H, W) float32 metres from a .npy; non-positive and non-finite values become NaN
    (unknown)."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read depth .npy: {exc}") from None
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise DatasetError(f"{path}: depth must be a 2-D float array in metres, got {depth.dtype} "
                           f"{depth.shape}")
    depth = depth.astype(np.float32)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


class ManifestDataset(FrameDataset):
    """Frames listed in a manifest file (see the module docstring)."""

    def __init__(self, manifest: Path | str, scheme: ClassScheme | str = "categories") -> None:
        super().__init__(scheme)
        self.path = Path(manifest)
        self.entries = parse_manifest(self.path)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> LabelledFrame:
        e = self.entries[index]
        where = f"{self.path} entry {index}"
        image = read_rgb(e.image)
        label_ids = read_mono(e.label_ids, np.uint8) if e.label_ids is not None else None
        depth = read_depth_npy(e.depth) if e.depth is not None else None
        return make_frame(image, label_ids, depth, e.K, self.name(index), self.scheme, where)

    def name(self, index: int) -> str:
        """The image's path relative to the manifest, without suffix, '/' as '_' (unique,
        file-safe)."""

        rel = self.entries[index].image.relative_to(self.path.parent).with_suffix("")
        return "_".join(rel.parts)
