# SPDX-License-Identifier: Apache-2.0
"""KITTI depth in the depth-completion benchmark's layout: the raw-data zips (rectified images and
calibration) and ``data_depth_annotated.zip`` unpacked into one folder ROOT::

    ROOT/<date>/calib_cam_to_cam.txt                                  P_rect_02 / P_rect_03
    ROOT/<date>/<drive>/image_02/data/<frame>.png                     rectified RGB (and image_03)
    ROOT/<split>/<drive>/proj_depth/groundtruth/image_02/<frame>.png  annotated depth

e.g. ``<date>`` = ``2011_09_26``, ``<drive>`` = ``2011_09_26_drive_0001_sync`` (the date is the
drive name up to ``_drive_``), ``<split>`` = ``train`` or ``val``, ``<frame>`` = ``0000000005``.
Frames are the annotated depth maps (the raw drives' first and last frames have none), each
paired with its raw image. Depth PNGs are uint16, ``p / 256`` metres, ``0`` = no measurement
(NaN). K is the left 3x3 of the camera's rectified projection matrix ``P_rect_0N``.
KITTI has no semantic labels in this layout (``semseg`` is None); labelled KITTI frames can be
listed in a manifest (``manifest.py``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .frame import DatasetError, FrameDataset, LabelledFrame, check_intrinsics, make_frame
from .imageio import read_mono, read_rgb
from .labels import ClassScheme

SPLITS = ("train", "val")
CAMERAS = ("image_02", "image_03")
CALIB_FILE = "calib_cam_to_cam.txt"
#: Depth PNG encoding: metres = p / DEPTH_SCALE for p > 0.
DEPTH_SCALE = 256.0
DRIVE_DATE_SEPARATOR = "_drive_"


def depth_from_png(raw: np.ndarray) -> np.ndarray:
    """uint16 KITTI depth PNG -> float32 metres, NaN where 0 (no measurement)."""
    depth = raw.astype(np.float32) / np.float32(DEPTH_SCALE)
    depth[raw == 0] = np.nan
    return depth


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """Inverse for the writers: 0 where unknown, non-positive or beyond the format's 255.99 m."""
    with np.errstate(invalid="ignore"):
        p = np.rint(depth.astype(np.float64) * DEPTH_SCALE)
    ok = np.isfinite(p) & (p >= 1) & (p <= np.iinfo(np.uint16).max)
    return np.where(ok, p, 0).astype(np.uint16)


def parse_calib(path: Path) -> dict[str, np.ndarray]:
    """``key: v1 v2 ...`` lines of a KITTI calibration file; non-numeric lines (calib_time)
    skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read calibration: {exc}") from None
    out: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        key, sep, values = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in values.split()])
        except ValueError:
            continue
    return out


def camera_K(calib_path: Path, camera: str) -> np.ndarray:
    """K of ``camera`` (image_02 / image_03) from its date's ``calib_cam_to_cam.txt``."""
    return _camera_K(calib_path, camera).copy()


@lru_cache(maxsize=64)
def _camera_K(calib_path: Path, camera: str) -> np.ndarray:
    key = f"P_rect_{camera[-2:]}"
    calib = parse_calib(calib_path)
    if key not in calib or calib[key].size != 12:
        raise DatasetError(f"{calib_path}: no 12-number {key} line (rectified projection of "
                           f"{camera})")
    return check_intrinsics(calib[key].reshape(3, 4)[:, :3], f"{calib_path} {key}")


def drive_date(drive: str) -> str:
    date, sep, _ = drive.partition(DRIVE_DATE_SEPARATOR)
    if not sep:
        raise DatasetError(f"drive folder {drive!r} is not named "
                           f"<date>{DRIVE_DATE_SEPARATOR}<n>_sync")
    return date


class KittiDepthDataset(FrameDataset):
    """One split of a KITTI depth-completion layout (see the module docstring)."""

    def __init__(self, root: Path | str, split: str = "train",
                 scheme: ClassScheme | str = "categories") -> None:
        super().__init__(scheme)
        self.root, self.split = Path(root), split
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise DatasetError(f"{self.root}: no KITTI depth split {split!r} (expected folder "
                               f"{split_dir} from data_depth_annotated.zip; splits: "
                               f"{', '.join(SPLITS)})")
        self.depth_paths = sorted(p for cam in CAMERAS
                                  for p in split_dir.glob(f"*/proj_depth/groundtruth/{cam}/*.png"))
        if not self.depth_paths:
            raise DatasetError(f"{split_dir}: no <drive>/proj_depth/groundtruth/image_0[23]/*.png "
                               "depth maps")
        missing = [p for p in (self._image_path(p) for p in self.depth_paths) if not p.is_file()]
        if missing:
            raise DatasetError(f"{self.root}: {len(missing)} of {len(self.depth_paths)} annotated "
                               f"frames have no raw image, e.g. {missing[0]} (unpack the raw "
                               f"drives' zips into {self.root})")

    def __len__(self) -> int:
        return len(self.depth_paths)

    @staticmethod
    def _parts(depth_path: Path) -> tuple[str, str, str]:
        """(drive, camera, frame stem) of an annotated depth path."""
        return depth_path.parents[3].name, depth_path.parent.name, depth_path.stem

    def _image_path(self, depth_path: Path) -> Path:
        drive, camera, frame = self._parts(depth_path)
        return self.root / drive_date(drive) / drive / camera / "data" / f"{frame}.png"

    def load(self, index: int) -> LabelledFrame:
        depth_path = self.depth_paths[index]
        drive, camera, frame = self._parts(depth_path)
        K = camera_K(self.root / drive_date(drive) / CALIB_FILE, camera)
        depth = depth_from_png(read_mono(depth_path, np.uint16))
        return make_frame(read_rgb(self._image_path(depth_path)), None, depth, K,
                          f"{drive}_{camera}_{frame}", self.scheme, str(depth_path))

