# SPDX-License-Identifier: Apache-2.0
"""Write our rendered scenes in the layouts the readers read (Cityscapes, KITTI depth, manifest).

Two uses: a synthetic pre-training set a user can mix with real data in exactly the real data's
format, and test fixtures for the readers, the trainer and ``edgemoe-eval`` that need no download.
Labels are stored as Cityscapes labelIds (each category as its representative class, see
``labels.CATEGORY_WRITE_LABEL_ID``), depth in the format's own encoding, so reading an export back
gives the rendered categories exactly and the depth within the format's quantisation. Sky and
anything the format cannot encode (beyond 256 m for KITTI) are stored as "no measurement".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..scenes import Frame, render_frame
from ..scenes.randomise import resolve
from . import cityscapes, kitti
from .imageio import write_image
from .labels import categories_to_label_ids

FORMATS = ("cityscapes", "kitti", "manifest")
#: Default image size and horizontal field of view per format: the real datasets' (Cityscapes
#: is 2048x1024 with fx ~ 2262 px, rendered here at half size; KITTI 1242x375 with fx ~ 721 px),
#: so an export looks to the model like the real set does. A manifest uses the renderer's camera.
FORMAT_DEFAULTS: dict[str, tuple[int, int, float]] = {
    "cityscapes": (1024, 512, 2.0 * math.degrees(math.atan(1024.0 / 2262.52))),
    "kitti": (1242, 375, 2.0 * math.degrees(math.atan(621.0 / 721.5377))),
    "manifest": (512, 256, 90.0),
}
#: Stereo baseline written into the Cityscapes camera files (metres, the real rig's).
CITYSCAPES_BASELINE = 0.209313
#: City name and sequence split of the Cityscapes export: seed s -> synth_<s // 1e6>_<s % 1e6>.
CITYSCAPES_CITY = "synth"
_SEQ_FRAMES = 1_000_000
#: Date and drive folder of the KITTI export (the reader takes the date from the drive name).
KITTI_DATE = "synth"
KITTI_DRIVE = f"{KITTI_DATE}{kitti.DRIVE_DATE_SEPARATOR}0000_sync"
KITTI_CAMERA = "image_02"
MANIFEST_NAME = "manifest.json"


def _sky_as_nan(frame: Frame) -> np.ndarray:
    depth = frame.depth.astype(np.float32).copy()
    depth[~np.isfinite(depth)] = np.nan
    return depth


def write_cityscapes_frame(root: Path, split: str, seed: int, frame: Frame) -> Path:
    """One frame as leftImg8bit / gtFine labelIds / disparity / camera json; returns the image
    path."""
    stem = f"{CITYSCAPES_CITY}_{seed // _SEQ_FRAMES:06d}_{seed % _SEQ_FRAMES:06d}"
    sub = Path(split) / CITYSCAPES_CITY
    cam = cityscapes.Camera(baseline=CITYSCAPES_BASELINE,
                            fx=float(frame.K[0, 0]), fy=float(frame.K[1, 1]),
                            u0=float(frame.K[0, 2]), v0=float(frame.K[1, 2]))
    image = root / "leftImg8bit" / sub / f"{stem}{cityscapes.IMAGE_SUFFIX}"
    write_image(image, frame.rgb)
    write_image(root / "gtFine" / sub / f"{stem}{cityscapes.LABEL_SUFFIX}",
                categories_to_label_ids(frame.labels))
    disparity = cityscapes.depth_to_disparity(_sky_as_nan(frame), cam.baseline, cam.fx)
    write_image(root / "disparity" / sub / f"{stem}{cityscapes.DISPARITY_SUFFIX}", disparity)
    camera_path = root / "camera" / sub / f"{stem}{cityscapes.CAMERA_SUFFIX}"
    camera_path.parent.mkdir(parents=True, exist_ok=True)
    camera_path.write_text(json.dumps(cam.to_json(), indent=2))
    return image


def _kitti_calib_text(K: np.ndarray) -> str:
    P = np.hstack([K, np.zeros((3, 1))])
    return "calib_time: rendered by edgemoe-dataset export\n" + \
        f"P_rect_02: {' '.join(f'{v:.12e}' for v in P.ravel())}\n"


def write_kitti_frame(root: Path, split: str, seed: int, frame: Frame) -> Path:
    """One frame as raw image + annotated depth PNG (+ the date's calibration); returns the image
    path."""
    name = f"{seed:010d}.png"
    calib = root / KITTI_DATE / kitti.CALIB_FILE
    text = _kitti_calib_text(frame.K)
    if calib.is_file() and calib.read_text() != text:
        raise ValueError(f"{calib}: frames of one KITTI date must share one camera; "
                         "export into a new folder")
    calib.parent.mkdir(parents=True, exist_ok=True)
    calib.write_text(text)
    image = root / KITTI_DATE / KITTI_DRIVE / KITTI_CAMERA / "data" / name
    write_image(image, frame.rgb)
    depth = root / split / KITTI_DRIVE / "proj_depth" / "groundtruth" / KITTI_CAMERA / name
    write_image(depth, kitti.depth_to_png(_sky_as_nan(frame)))
    return image


def write_manifest_frame(root: Path, seed: int, frame: Frame) -> dict:
    """One frame as image PNG, labelIds PNG and depth .npy; returns its manifest entry."""
    stem = f"{seed:010d}"
    entry = {"image": f"images/{stem}.png", "semseg_labelIds": f"labels/{stem}_labelIds.png",
             "depth_m": f"depth/{stem}_depth_m.npy", "K": frame.K.tolist(),
             "source": {"dataset": "edgemoe_ros rendered scenes (edgemoe-dataset export)",
                        "seed": seed}}
    write_image(root / entry["image"], frame.rgb)
    write_image(root / entry["semseg_labelIds"], categories_to_label_ids(frame.labels))
    (root / "depth").mkdir(parents=True, exist_ok=True)
    np.save(root / entry["depth_m"], _sky_as_nan(frame))
    return entry


def export(fmt: str, out: Path, seeds: Iterable[int], width: int | None = None,
           height: int | None = None, hfov_deg: float | None = None, split: str = "train",
           progress: Callable[[int], None] | None = None, randomise: str | None = None) -> Path:
    """Render one frame per seed and write them in ``fmt`` under ``out``. Returns the dataset's
    location as the readers take it (the folder, or the manifest file). Size and field of view
    default to ``FORMAT_DEFAULTS[fmt]``; ``progress(i)`` is called after each frame.

    ``randomise``: a domain-randomisation profile (``scenes.randomise.PROFILES``); each frame then
    has its own random lens (its K is written per frame), so the KITTI layout, whose frames share
    one calibration per date, cannot hold them."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if resolve(randomise) is not None and fmt == "kitti":
        raise ValueError("randomised frames each have their own camera; "
                         "the KITTI layout shares one per date: "
                         "export them as cityscapes or manifest")
    dw, dh, dfov = FORMAT_DEFAULTS[fmt]
    width, height, hfov_deg = width or dw, height or dh, hfov_deg or dfov
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, seed in enumerate(seeds):
        frame = render_frame(int(seed), width, height, hfov_deg, randomise=randomise)
        if fmt == "cityscapes":
            write_cityscapes_frame(out, split, int(seed), frame)
        elif fmt == "kitti":
            write_kitti_frame(out, split, int(seed), frame)
        else:
            entries.append(write_manifest_frame(out, int(seed), frame))
        if progress is not None:
            progress(i)
    if fmt == "manifest":
        (out / MANIFEST_NAME).write_text(json.dumps(entries, indent=1))
        return out / MANIFEST_NAME
    return out
