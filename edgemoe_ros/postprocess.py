# SPDX-License-Identifier: Apache-2.0
"""Image geometry and visualisation around the model: fit camera images to the model input, map
outputs back, colourise them, and keep camera intrinsics consistent with whatever was resized.

The model sees a fixed ``img_h x img_w`` (128x256) RGB image. Cameras rarely deliver that, so an
image is either *stretched* (whole field of view, aspect distorted) or *centre-cropped* to the
model's aspect ratio and then resized (no distortion, edges lost). ``FitInfo`` records which
input pixels went where, so the outputs (class ids, depth) and the camera intrinsics can be mapped
back exactly. Pixel-centre convention throughout: that is what ``cv2.resize`` implements, so
intrinsics computed here agree with the pixels the model actually saw.

No ROS import here: the node, the CLIs and the bag tools all share these pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .model.canonical_camera import camera_matrix
from .model.config import IGNORE_INDEX, RESIZE_MODES, SEMSEG_CLASSES, ModelConfig

#: Cityscapes category colours (RGB) in ``SEMSEG_CLASSES`` order, as cityscapesScripts draws the
#: representative class of each category (road, person, car, building, pole, vegetation, sky),
#: followed by black for ``IGNORE_INDEX`` / anything not a class.
PALETTE: np.ndarray = np.array([
    (128, 64, 128),   # flat
    (220, 20, 60),    # human
    (0, 0, 142),      # vehicle
    (70, 70, 70),     # construction
    (153, 153, 153),  # object
    (107, 142, 35),   # nature
    (70, 130, 180),   # sky
    (0, 0, 0),        # ignore
], dtype=np.uint8)
PALETTE.setflags(write=False)
assert len(PALETTE) == len(SEMSEG_CLASSES) + 1
#: ``PALETTE`` as a cv2.LUT table over every uint8 id: ids past the classes (255 = ignore) are
#: black.
_PALETTE_LUT = np.zeros((256, 1, 3), np.uint8)
_PALETTE_LUT[:len(SEMSEG_CLASSES), 0] = PALETTE[:len(SEMSEG_CLASSES)]

#: Interpolation names accepted by ``restore_to_input``. Class ids must use "nearest" (averaging
#: ids is meaningless); depth may use "linear". ``INTER_NEAREST_EXACT`` is pixel-centre correct,
#: unlike ``INTER_NEAREST`` which is biased by half a pixel when enlarging.
INTERPOLATIONS: dict[str, int] = {"nearest": cv2.INTER_NEAREST_EXACT, "linear": cv2.INTER_LINEAR}


class FitError(ValueError):
    """An image or array that cannot be fitted to / restored from the model resolution."""


@dataclass(frozen=True)
class FitInfo:
    """How an input image was mapped to the model input.

    The region of interest ``(roi_x, roi_y, roi_w, roi_h)`` of the ``input_w x input_h`` image
    (the whole image in stretch mode, the centred crop in crop mode) was resized to
    ``model_w x model_h``.
    """

    mode: str
    input_h: int
    input_w: int
    model_h: int
    model_w: int
    roi_x: int
    roi_y: int
    roi_w: int
    roi_h: int

    @property
    def scale_x(self) -> float:
        """Model pixels per input pixel along x."""
        return self.model_w / self.roi_w

    @property
    def scale_y(self) -> float:
        """Model pixels per input pixel along y."""
        return self.model_h / self.roi_h


#: Shrink ratio from which fit_to_model first halves the image with a Gaussian pyramid.
PYRAMID_RATIO = 6


def _interpolation_for(src_w: int, src_h: int, dst_w: int, dst_h: int) -> int:
    # INTER_AREA averages all source pixels under each destination pixel (no aliasing) but is a
    # poor enlarger; bilinear is right for enlarging. Mixed cases (shrink one axis, grow the
    # other) take bilinear: aliasing on one axis is less visible than blockiness.
    if dst_w <= src_w and dst_h <= src_h:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR


def compute_fit(input_h: int, input_w: int, cfg: ModelConfig, mode: str | None = None) -> FitInfo:
    """The ``FitInfo`` for an ``input_h x input_w`` image, without touching pixels.

    Useful where only geometry is needed (camera_info scaling before the first image arrives).
    """
    mode = cfg.resize_mode if mode is None else mode
    if mode not in RESIZE_MODES:
        raise FitError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    if input_h <= 0 or input_w <= 0:
        raise FitError(f"image size {input_w}x{input_h} (WxH) is empty")
    x, y, w, h = 0, 0, input_w, input_h
    if mode == "crop":
        # Compare aspect ratios in integers to avoid float ties; keep the larger inscribed box.
        if input_w * cfg.img_h > input_h * cfg.img_w:  # input wider than the model: crop width
            w = max(1, min(input_w, round(input_h * cfg.img_w / cfg.img_h)))
        else:  # input taller (or equal): crop height
            h = max(1, min(input_h, round(input_w * cfg.img_h / cfg.img_w)))
        x, y = (input_w - w) // 2, (input_h - h) // 2
    return FitInfo(mode, input_h, input_w, cfg.img_h, cfg.img_w, x, y, w, h)


def fit_to_model(image: np.ndarray, cfg: ModelConfig,
                 mode: str | None = None) -> tuple[np.ndarray, FitInfo]:
    """Resize (and in crop mode first centre-crop) an RGB uint8 image to the model input size.

    ``mode``: "stretch" or "crop"; ``None`` uses ``cfg.resize_mode``. Returns a new contiguous
    ``(img_h, img_w, 3)`` uint8 array (never a view of the caller's buffer) and the ``FitInfo``
    needed to map outputs back.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise FitError(f"image must be an (H, W, 3) RGB array, got shape {shape}")
    if image.dtype != np.uint8:
        raise FitError(f"image must be uint8 RGB, got dtype {image.dtype}")
    fit = compute_fit(image.shape[0], image.shape[1], cfg, mode)
    roi = image[fit.roi_y:fit.roi_y + fit.roi_h, fit.roi_x:fit.roi_x + fit.roi_w]
    if (fit.roi_w, fit.roi_h) == (fit.model_w, fit.model_h):
        return np.ascontiguousarray(roi).copy(), fit
    roi = np.ascontiguousarray(roi)
    interp = _interpolation_for(fit.roi_w, fit.roi_h, fit.model_w, fit.model_h)
    if interp == cv2.INTER_AREA:
        return _shrink(roi, fit.model_w, fit.model_h), fit
    return cv2.resize(roi, (fit.model_w, fit.model_h), interpolation=interp), fit


def _shrink(image: np.ndarray, dst_w: int, dst_h: int) -> np.ndarray:
    """Anti-aliased downscale, fast for camera sizes that are not integer multiples of the model's.

    cv2's INTER_AREA is fast only for integer ratios (1280x720 -> 256x128 is 5 x 5.625: ~4.5 ms,
    most of the node's per-frame budget). So: halve with a Gaussian pyramid while the image is
    still >= 6x the target (4K, 1080p), bilinear to exactly 2x the target (a shrink by < 3, mild
    aliasing), then an exact 2x2 box average. 720p: 0.36 ms, mean 0.2 grey levels from INTER_AREA.
    """
    while image.shape[1] >= PYRAMID_RATIO * dst_w and image.shape[0] >= PYRAMID_RATIO * dst_h:
        image = cv2.pyrDown(image)
    src_h, src_w = image.shape[:2]
    if src_w >= 2 * dst_w and src_h >= 2 * dst_h and (src_w, src_h) != (2 * dst_w, 2 * dst_h):
        image = cv2.resize(image, (2 * dst_w, 2 * dst_h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (dst_w, dst_h), interpolation=cv2.INTER_AREA)


def restore_to_input(array: np.ndarray, fit: FitInfo, fill: float | int | np.ndarray,
                     interpolation: str = "nearest") -> np.ndarray:
    """Map a model-resolution ``(img_h, img_w)`` or ``(img_h, img_w, C)`` output back onto the
    input image's pixel grid.

    Pixels outside the crop (crop mode) get ``fill``: ``IGNORE_INDEX`` (255) for class ids, NaN
    for depth, the ignore colour for a palette image, so consumers can tell "not observed" from a
    real value. The dtype is preserved. ``linear`` takes 2-D arrays only.
    """
    if interpolation not in INTERPOLATIONS:
        raise FitError(f"interpolation {interpolation!r} is not one of {tuple(INTERPOLATIONS)}")
    if array.ndim not in (2, 3) or array.shape[:2] != (fit.model_h, fit.model_w):
        raise FitError(f"array shape {array.shape} != model resolution "
                       f"{(fit.model_h, fit.model_w)}")
    if array.ndim == 3 and interpolation != "nearest":
        raise FitError(f"{interpolation!r} restores 2-D arrays only, got shape {array.shape}")
    if array.dtype.kind == "f" and array.dtype != np.float64:
        array = array.astype(np.float32, copy=False)  # cv2 has no float16 resize
    if (fit.roi_w, fit.roi_h) == (fit.model_w, fit.model_h):
        roi = np.array(array, copy=True)
    elif interpolation == "nearest":
        roi = resize_nearest(array, fit.roi_w, fit.roi_h)
    else:
        roi = cv2.resize(np.ascontiguousarray(array), (fit.roi_w, fit.roi_h),
                         interpolation=INTERPOLATIONS[interpolation])
    if (fit.roi_w, fit.roi_h) == (fit.input_w, fit.input_h):
        return roi
    out = np.full((fit.input_h, fit.input_w, *roi.shape[2:]), fill, dtype=roi.dtype)
    out[fit.roi_y:fit.roi_y + fit.roi_h, fit.roi_x:fit.roi_x + fit.roi_w] = roi
    return out


@lru_cache(maxsize=64)
def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each of ``dst`` output pixels, exactly as ``cv2.INTER_NEAREST_EXACT`` picks
    it.

    Taken from cv2 itself (resizing the row 0..src-1, exact in float32), so the fast path below can
    never drift from the cv2 convention the intrinsics are computed for.
    """
    row = np.arange(src, dtype=np.float32)[None, :]
    picked = cv2.resize(row, (dst, 1), interpolation=cv2.INTER_NEAREST_EXACT)[0]
    index = picked.astype(np.intp)
    index.setflags(write=False)
    return index


def resize_nearest(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` or ``(H, W, C)`` array, equal to ``cv2.resize``
    with ``INTER_NEAREST_EXACT`` element for element.

    Why not cv2: its nearest upscale walks every output pixel (~2 ms for a 720p colour image);
    gathering columns at the model's height and then whole rows is ~4x faster and any dtype works.
    """
    if array.ndim not in (2, 3) or width < 1 or height < 1:
        raise FitError(f"cannot resize an array of shape {array.shape} to {width}x{height}")
    cols = np.take(array, _nearest_index(array.shape[1], width), axis=1)
    return np.take(cols, _nearest_index(array.shape[0], height), axis=0)


def colorize_semseg(ids: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Class-id map ``(H, W)`` → RGB ``(H, W, 3)`` uint8 with ``PALETTE`` (or ``palette``, (N, 3)
    uint8 RGB, one colour per class of another scheme); unknown ids are black."""
    if ids.ndim != 2:
        raise FitError(f"class-id map must be 2-D (H, W), got shape {ids.shape}")
    if ids.dtype.kind not in "ui":
        raise FitError(f"class-id map must be an integer array, got dtype {ids.dtype}")
    if palette is not None:
        if not 0 < len(palette) < 256:
            raise FitError(f"a palette needs 1 to 255 colours (255 is ignore), got {len(palette)}")
        lut = np.zeros((256, 3), np.uint8)
        lut[:len(palette)] = palette
        return lut[np.where((ids >= 0) & (ids < len(palette)), ids, 255)]
    if ids.dtype == np.uint8:
        # A 256-entry table through cv2.LUT: ~5x faster than fancy indexing at 720p.
        return cv2.LUT(cv2.merge([ids, ids, ids]), _PALETTE_LUT)
    idx = np.where((ids >= 0) & (ids < len(SEMSEG_CLASSES)), ids, len(SEMSEG_CLASSES))
    return PALETTE[idx]


def model_palette(cfg: ModelConfig) -> np.ndarray | None:
    """The model's class colours ((num_classes, 3) uint8, from its config) for ``colorize_semseg``;
    None: the default category ``PALETTE``."""
    if not cfg.palette:
        return None
    return np.asarray(cfg.palette, dtype=np.uint8).reshape(-1, 3)


def colorize_depth(depth_m: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Metric depth ``(H, W)`` → RGB ``(H, W, 3)`` uint8: log scale, turbo colormap, near = red.

    Log scale because driving depth spans two decades (0.5–80 m) and a linear ramp would spend
    almost all colours on the far field. NaN, Inf and non-positive depths are drawn black.
    """
    if depth_m.ndim != 2:
        raise FitError(f"depth map must be 2-D (H, W), got shape {depth_m.shape}")
    if not 0 < min_depth < max_depth:
        raise FitError(f"depth range ({min_depth}, {max_depth}) must be positive and increasing")
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    lo, hi = np.log(min_depth), np.log(max_depth)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.log(np.where(valid, d, min_depth)) - lo) / (hi - lo)
    level = np.round((1.0 - np.clip(t, 0.0, 1.0)) * 255.0).astype(np.uint8)  # near → 255 → red
    bgr = cv2.applyColorMap(level, cv2.COLORMAP_TURBO)
    rgb = bgr[..., ::-1].copy()
    rgb[~valid] = 0
    return rgb


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5,
            mask: np.ndarray | None = None) -> np.ndarray:
    """Blend a colourised output onto the image: ``(1 - alpha) * image + alpha * color``.

    ``mask`` (H, W) bool limits the blend (e.g. to non-ignore pixels); elsewhere the image shows.
    """
    if image.shape != color.shape or image.ndim != 3 or image.shape[2] != 3:
        raise FitError("overlay needs two (H, W, 3) images of one size, got "
                       f"{image.shape} and {color.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise FitError(f"overlay alpha {alpha} not in [0, 1]")
    blend = cv2.addWeighted(image.astype(np.uint8), 1.0 - alpha, color.astype(np.uint8), alpha,
                            0.0)
    if mask is None:
        return blend
    if mask.shape != image.shape[:2]:
        raise FitError(f"overlay mask shape {mask.shape} != image size {image.shape[:2]}")
    return np.where(mask[..., None], blend, image).astype(np.uint8)


def scale_camera_info_params(K: np.ndarray, P: np.ndarray, width: int, height: int,
                             fit: FitInfo) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Intrinsics of the model-resolution outputs, from the camera's own ``CameraInfo`` values.

    ``K`` (3x3 or 9 values), ``P`` (3x4 or 12 values), ``width``/``height``: as in the incoming
    CameraInfo. If that calibration size differs from the image the fit was computed on (binning
    upstream), it is first scaled to the image; ``width``/``height`` of 0 mean "same as image".
    Then the crop ROI is removed and the ROI scaled to ``model_w x model_h``. With pixel centres at
    integer coordinates, ``u' = (u - roi_x + 0.5) * s - 0.5`` (exactly what ``cv2.resize`` does);
    image_proc's ``resize`` uses ``u' = u * s`` instead, which is off by ``0.5 (s - 1)`` px.
    Outputs restored to the input size keep the camera's CameraInfo unchanged.

    Returns ``(K', P', model_w, model_h)`` as float64 arrays (3x3, 3x4) and ints.
    """
    k = np.asarray(K, dtype=np.float64)
    p = np.asarray(P, dtype=np.float64)
    if k.size != 9 or p.size != 12:
        raise FitError(f"camera K must have 9 values and P 12, got {k.size} and {p.size}")
    k, p = k.reshape(3, 3), p.reshape(3, 4)
    if width < 0 or height < 0:
        raise FitError(f"camera_info size {width}x{height} is negative")
    cam_w = width or fit.input_w
    cam_h = height or fit.input_h

    def pixel_affine(sx: float, sy: float, x0: float, y0: float) -> np.ndarray:
        # u' = (u - x0 + 0.5) * sx - 0.5, likewise v: scaling about pixel centres after a shift.
        return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5],
                         [0.0, sy, (0.5 - y0) * sy - 0.5],
                         [0.0, 0.0, 1.0]])

    to_image = pixel_affine(fit.input_w / cam_w, fit.input_h / cam_h, 0.0, 0.0)
    to_model = pixel_affine(fit.scale_x, fit.scale_y, fit.roi_x, fit.roi_y)
    a = to_model @ to_image
    # Left-multiplying applies the pixel affine to every projection: rows 0/1 of K and P (incl.
    # P's Tx/Ty baseline terms) scale, the principal point also shifts; row 2 stays [0 0 1 (0)].
    return a @ k, a @ p, fit.model_w, fit.model_h


def camera_k_from_info(info: object | None, image_h: int, image_w: int) -> np.ndarray | None:
    """The engine's ``camera_k`` from a CameraInfo (anything with ``k``, ``width``, ``height``:
    a ROS message or a bag's decoded one) for an ``image_w x image_h`` image.

    A calibration made at another size (binning upstream; ``width``/``height`` 0 = the image's) is
    scaled to the image first, as ``scale_camera_info_params`` does for the relayed camera_info.
    None when there is no calibration: no message, or the all-zero K of an uncalibrated camera.
    Raises ``IntrinsicsError`` for a K that cannot be a camera (NaN, focal <= 0).
    """
    if info is None or camera_matrix(info.k) is None:
        return None
    identity = FitInfo("stretch", image_h, image_w, image_h, image_w, 0, 0, image_w, image_h)
    k, _, _, _ = scale_camera_info_params(np.asarray(info.k), np.zeros(12), int(info.width),
                                          int(info.height), identity)
    return camera_matrix(k)


__all__ = [
    "FitError", "FitInfo", "INTERPOLATIONS", "IGNORE_INDEX", "PALETTE", "camera_k_from_info",
    "colorize_depth", "model_palette",
    "colorize_semseg", "compute_fit", "fit_to_model", "overlay", "resize_nearest",
    "restore_to_input", "scale_camera_info_params",
]
