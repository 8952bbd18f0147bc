# SPDX-License-Identifier: Apache-2.0
"""Cityscapes in its standard layout (as the official zips unpack)::

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png    8-bit RGB
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     uint8 labelIds
    ROOT/disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png        uint16
    ROOT/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json             calibration

Frames are the ``leftImg8bit`` images; labels and disparity are optional per frame (the test
split has no labels), the camera json is required (it gives K). Disparity pixel ``p > 0`` means
``d = (p - 1) / 256`` pixels, ``p = 0`` invalid; depth is ``baseline * fx / d`` metres
(``extrinsic.baseline``, ``intrinsic.fx``), unknown (NaN) where ``d`` is not positive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frame import DatasetError, FrameDataset, LabelledFrame, check_intrinsics, make_frame
from .imageio import read_mono, read_rgb
from .labels import ClassScheme

SPLITS = ("train", "val", "test", "train_extra")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
DISPARITY_SUFFIX = "_disparity.png"
CAMERA_SUFFIX = "_camera.json"
#: Disparity PNG encoding: d = (p - 1) / DISPARITY_SCALE for p > 0.
DISPARITY_SCALE = 256.0


@dataclass(frozen=True)
class Camera:
    """The fields of a ``*_camera.json`` that depth and K need."""

    baseline: float
    fx: float
    fy: float
    u0: float
    v0: float

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.u0], [0.0, self.fy, self.v0], [0.0, 0.0, 1.0]])

    def to_json(self) -> dict:
        """The subset of the official file's structure that ``read_camera`` reads."""
        return {"extrinsic": {"baseline": self.baseline, "pitch": 0.0, "roll": 0.0, "yaw": 0.0,
                              "x": 0.0, "y": 0.0, "z": 0.0},
                "intrinsic": {"fx": self.fx, "fy": self.fy, "u0": self.u0, "v0": self.v0}}


def read_camera(path: Path) -> Camera:
    try:
        data = json.loads(path.read_text())
        cam = Camera(baseline=float(data["extrinsic"]["baseline"]),
                     fx=float(data["intrinsic"]["fx"]), fy=float(data["intrinsic"]["fy"]),
                     u0=float(data["intrinsic"]["u0"]), v0=float(data["intrinsic"]["v0"]))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read camera file: {exc}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: not a Cityscapes camera json (need extrinsic.baseline and "
                           f"intrinsic.fx/fy/u0/v0): {type(exc).__name__}: {exc}") from None
    if not (np.isfinite(cam.baseline) and cam.baseline > 0):
        raise DatasetError(f"{path}: baseline must be positive, got {cam.baseline}")
    check_intrinsics(cam.K, str(path))
    return cam


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """uint16 disparity PNG -> float32 metres, NaN where invalid (p = 0, or zero disparity)."""
    disp = (raw.astype(np.float32) - 1.0) / DISPARITY_SCALE
    depth = np.full(raw.shape, np.nan, np.float32)
    ok = (raw > 0) & (disp > 0)
    depth[ok] = np.float32(baseline * fx) / disp[ok]
    return depth


def depth_to_disparity(depth: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Inverse of ``disparity_to_depth`` for the writers: 0 where depth is unknown or too far to
    encode."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.rint(baseline * fx / depth.astype(np.float64) * DISPARITY_SCALE + 1.0)
    ok = np.isfinite(depth) & (depth > 0) & (p >= 2) & (p <= np.iinfo(np.uint16).max)
    return np.where(ok, p, 0).astype(np.uint16)


class CityscapesDataset(FrameDataset):
    """One split of a Cityscapes-layout folder (see the module docstring)."""

    def __init__(self, root: Path | str, split: str = "train",
                 scheme: ClassScheme | str = "categories") -> None:
        super().__init__(scheme)
        self.root, self.split = Path(root), split
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise DatasetError(f"{self.root}: no Cityscapes split {split!r} (expected folder "
                               f"{image_dir}; splits are usually {', '.join(SPLITS)})")
        self.images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.images:
            raise DatasetError(f"{image_dir}: no <city>/*{IMAGE_SUFFIX} images")

    def __len__(self) -> int:
        return len(self.images)

    def _companion(self, index: int, folder: str, suffix: str) -> Path:
        image = self.images[index]
        stem = image.name[:-len(IMAGE_SUFFIX)]
        return self.root / folder / self.split / image.parent.name / f"{stem}{suffix}"

    def load(self, index: int) -> LabelledFrame:
        image_path = self.images[index]
        name = image_path.name[:-len(IMAGE_SUFFIX)]
        camera = read_camera(self._companion(index, "camera", CAMERA_SUFFIX))
        label_path = self._companion(index, "gtFine", LABEL_SUFFIX)
        disp_path = self._companion(index, "disparity", DISPARITY_SUFFIX)
        label_ids = read_mono(label_path, np.uint8) if label_path.is_file() else None
        depth = None
        if disp_path.is_file():
            depth = disparity_to_depth(read_mono(disp_path, np.uint16), camera.baseline, camera.fx)
        return make_frame(read_rgb(image_path), label_ids, depth, camera.K, name, self.scheme,
                          str(image_path))

