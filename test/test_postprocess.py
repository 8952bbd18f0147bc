# SPDX-License-Identifier: Apache-2.0
"""Fit/restore geometry, colourisation and camera-intrinsics scaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgemoe_ros.model.config import IGNORE_INDEX, SEMSEG_CLASSES, ModelConfig, tiny_config
from edgemoe_ros.postprocess import (
    PALETTE,
    FitError,
    colorize_depth,
    colorize_semseg,
    compute_fit,
    fit_to_model,
    overlay,
    resize_nearest,
    restore_to_input,
    scale_camera_info_params,
)

CFG = ModelConfig()  # 128 x 256 model input


def rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "h,w", [(480, 640), (1080, 1920), (64, 128), (128, 256), (300, 200), (17, 9)]
)
@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_fit_output_shape_and_roi(h, w, mode):
    img = rand_image(h, w)
    out, fit = fit_to_model(img, CFG, mode)
    assert out.shape == (128, 256, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (fit.input_h, fit.input_w, fit.model_h, fit.model_w) == (h, w, 128, 256)
    assert (
        0 <= fit.roi_x
        and fit.roi_x + fit.roi_w <= w
        and 0 <= fit.roi_y
        and fit.roi_y + fit.roi_h <= h
    )
    if mode == "stretch":
        assert (fit.roi_x, fit.roi_y, fit.roi_w, fit.roi_h) == (0, 0, w, h)
    else:
        # centred, the model's 1:2 aspect ratio (to a pixel), and one side kept whole
        assert abs(fit.roi_w - 2 * fit.roi_h) <= 2
        assert fit.roi_w == w or fit.roi_h == h
        assert (
            abs((w - fit.roi_w) - 2 * fit.roi_x) <= 1 and abs((h - fit.roi_h) - 2 * fit.roi_y) <= 1
        )


def test_fit_never_aliases_the_input():
    img = rand_image(128, 256)
    out, _ = fit_to_model(img, CFG, "stretch")
    np.testing.assert_array_equal(out, img)
    out[0, 0] = 255 - out[0, 0]
    assert not np.array_equal(out[0, 0], img[0, 0])


def test_crop_takes_the_centre_pixels():
    # 4:3 image, 2x the model width: the crop is rows 64..319 at full width, then halved.
    img = np.zeros((384, 512, 3), np.uint8)
    img[64:320] = 200
    out, fit = fit_to_model(img, CFG, "crop")
    assert (fit.roi_x, fit.roi_y, fit.roi_w, fit.roi_h) == (0, 64, 512, 256)
    assert (out == 200).all()  # only the bright band was used


def test_interpolation_choice_shrink_area_enlarge_linear():
    img = rand_image(256, 512, seed=1)
    out, _ = fit_to_model(img, CFG, "stretch")
    np.testing.assert_array_equal(out, cv2.resize(img, (256, 128), interpolation=cv2.INTER_AREA))
    small = rand_image(64, 128, seed=2)
    out, _ = fit_to_model(small, CFG, "stretch")
    np.testing.assert_array_equal(
        out, cv2.resize(small, (256, 128), interpolation=cv2.INTER_LINEAR)
    )


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_fit_rejects_bad_images(bad):
    with pytest.raises(FitError):
        fit_to_model(bad, CFG)


def test_fit_rejects_unknown_mode():
    with pytest.raises(FitError, match="resize mode 'zoom'"):
        fit_to_model(rand_image(10, 10), CFG, "zoom")


def test_mode_defaults_to_config():
    _, fit = fit_to_model(rand_image(480, 640), CFG.replace(resize_mode="crop"))
    assert fit.mode == "crop" and fit.roi_h == 320


@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_restore_classes_fill_outside_crop(mode):
    _, fit = fit_to_model(rand_image(480, 640), CFG, mode)
    ids = np.random.default_rng(0).integers(0, 7, (128, 256)).astype(np.uint8)
    back = restore_to_input(ids, fit, fill=IGNORE_INDEX)
    assert back.shape == (480, 640) and back.dtype == np.uint8
    inside = back[fit.roi_y : fit.roi_y + fit.roi_h, fit.roi_x : fit.roi_x + fit.roi_w]
    # nearest: no new ids
    assert inside.max() < 7 and set(np.unique(inside)) <= set(np.unique(ids))
    outside = np.ones(back.shape, bool)
    outside[fit.roi_y:fit.roi_y + fit.roi_h, fit.roi_x:fit.roi_x + fit.roi_w] = False
    assert outside.sum() == (0 if mode == "stretch" else 480 * 640 - 320 * 640)
    assert (back[outside] == IGNORE_INDEX).all()


def test_restore_depth_nan_outside_and_linear_values_in_range():
    _, fit = fit_to_model(rand_image(600, 600), CFG, "crop")
    depth = np.linspace(1.0, 50.0, 128 * 256, dtype=np.float32).reshape(128, 256)
    back = restore_to_input(depth, fit, fill=np.nan, interpolation="linear")
    assert back.shape == (600, 600) and back.dtype == np.float32
    inside = back[fit.roi_y:fit.roi_y + fit.roi_h]
    assert np.isfinite(inside).all() and inside.min() >= 1.0 and inside.max() <= 50.0
    assert np.isnan(back[:fit.roi_y]).all() and np.isnan(back[fit.roi_y + fit.roi_h:]).all()


def test_restore_is_exact_for_integer_upscale():
    """A 2x nearest restore repeats each model pixel 2x2 (pixel-centre correct, no half-pixel
    shift)."""
    _, fit = fit_to_model(rand_image(256, 512), CFG, "stretch")
    ids = np.random.default_rng(3).integers(0, 7, (128, 256)).astype(np.uint8)
    np.testing.assert_array_equal(
        restore_to_input(ids, fit, 255), np.repeat(np.repeat(ids, 2, 0), 2, 1)
    )


@pytest.mark.parametrize("src_h,src_w", [(128, 256), (17, 9), (5, 300)])
@pytest.mark.parametrize(
    "dst_h,dst_w", [(720, 1280), (480, 640), (1080, 1920), (61, 333), (3, 2), (128, 256)]
)
@pytest.mark.parametrize(
    "dtype,channels", [(np.uint8, 0), (np.uint8, 3), (np.float32, 0), (np.float64, 0)]
)
def test_resize_nearest_equals_cv2_nearest_exact(src_h, src_w, dst_h, dst_w, dtype, channels):
    """The gather-based nearest resize is element-for-element cv2's INTER_NEAREST_EXACT (up and
    down)."""
    shape = (src_h, src_w, channels) if channels else (src_h, src_w)
    a = (np.random.default_rng(src_h * dst_w).random(shape) * 250).astype(dtype)
    ref = cv2.resize(a, (dst_w, dst_h), interpolation=cv2.INTER_NEAREST_EXACT)
    got = resize_nearest(a, dst_w, dst_h)
    assert got.shape == ref.shape and got.dtype == a.dtype
    np.testing.assert_array_equal(got, ref)


def test_resize_nearest_rejects_bad_shapes():
    with pytest.raises(FitError, match="resize"):
        resize_nearest(np.zeros(5, np.uint8), 4, 4)
    with pytest.raises(FitError, match="resize"):
        resize_nearest(np.zeros((4, 4), np.uint8), 0, 4)


@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_restore_of_a_colour_image_matches_restoring_each_channel(mode):
    """(H, W, C) arrays restore like C separate 2-D maps; outside the crop every channel gets its
    fill."""
    _, fit = fit_to_model(rand_image(300, 900), CFG, mode)
    color = np.random.default_rng(4).integers(0, 256, (CFG.img_h, CFG.img_w, 3), dtype=np.uint8)
    fill = np.array([1, 2, 3], np.uint8)
    got = restore_to_input(color, fit, fill)
    assert got.shape == (300, 900, 3) and got.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(
            got[..., c], restore_to_input(color[..., c].copy(), fit, int(fill[c]))
        )
    with pytest.raises(FitError, match="2-D arrays only"):
        restore_to_input(color.astype(np.float32), fit, 0.0, interpolation="linear")


def test_restore_rejects_wrong_shape_and_interpolation():
    _, fit = fit_to_model(rand_image(100, 100), CFG)
    with pytest.raises(FitError, match="model resolution"):
        restore_to_input(np.zeros((10, 10), np.uint8), fit, 255)
    with pytest.raises(FitError, match="interpolation"):
        restore_to_input(np.zeros((128, 256), np.uint8), fit, 255, interpolation="cubic")


def test_palette_and_colorize_semseg():
    assert PALETTE.shape == (len(SEMSEG_CLASSES) + 1, 3) and PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE)  # every class distinguishable
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, IGNORE_INDEX], [7, 100, 6, 0]], np.uint8)
    rgb = colorize_semseg(ids)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    for cls in range(7):
        assert (rgb[ids == cls] == PALETTE[cls]).all()
    assert (rgb[ids >= 7] == 0).all()
    np.testing.assert_array_equal(PALETTE[6], (70, 130, 180))  # Cityscapes sky
    with pytest.raises(FitError):
        colorize_semseg(np.zeros((2, 2), np.float32))


def test_colorize_depth_log_scale_near_red_far_blue_nan_black():
    d = np.array([[0.5, 2.0, 80.0, np.nan, -1.0, np.inf, 0.1, 500.0]], np.float32)
    rgb = colorize_depth(d, 0.5, 80.0)
    assert rgb.shape == (1, 8, 3) and rgb.dtype == np.uint8
    near, far = rgb[0, 0].astype(int), rgb[0, 2].astype(int)
    assert near[0] > near[2] and far[2] > far[0]  # near is red-ish, far blue-ish
    assert (rgb[0, 3:6] == 0).all()  # NaN, negative, Inf are black
    np.testing.assert_array_equal(rgb[0, 6], rgb[0, 0])  # clipped to the range ends
    np.testing.assert_array_equal(rgb[0, 7], rgb[0, 2])
    # log scale: the geometric middle of the range maps to the middle colour
    mid = colorize_depth(np.array([[np.sqrt(0.5 * 80.0)]]), 0.5, 80.0)[0, 0]
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_TURBO)[0, :, ::-1]
    np.testing.assert_array_equal(mid, lut[128])
    with pytest.raises(FitError):
        colorize_depth(d, 5.0, 1.0)


def test_overlay_blends_and_masks():
    img = np.full((4, 4, 3), 100, np.uint8)
    color = np.full((4, 4, 3), 200, np.uint8)
    np.testing.assert_array_equal(overlay(img, color, 0.5), 150)
    np.testing.assert_array_equal(overlay(img, color, 0.0), img)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    out = overlay(img, color, 1.0, mask)
    assert (out[0, 0] == 200).all() and (out[1:] == 100).all()
    with pytest.raises(FitError):
        overlay(img, color[:2], 0.5)
    with pytest.raises(FitError):
        overlay(img, color, 1.5)


def _project(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    x = P @ np.append(X, 1.0)
    return x[:2] / x[2]


@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_camera_info_scaling_matches_the_resized_pixels(mode):
    """A 3-D point's projection with the new P lands where cv2.resize moved its pixel."""
    w, h = 640, 480
    K = np.array([[520.0, 0, 318.2], [0, 515.0, 241.7], [0, 0, 1]])
    P = np.hstack([K, [[-52.0], [0.0], [0.0]]])  # right camera of a stereo pair: Tx = -fx * B
    fit = compute_fit(h, w, CFG, mode)
    K2, P2, w2, h2 = scale_camera_info_params(K.ravel(), P.ravel(), w, h, fit)
    assert (w2, h2) == (256, 128) and K2.shape == (3, 3) and P2.shape == (3, 4)
    np.testing.assert_array_equal(K2[2], [0, 0, 1])
    for X in (np.array([0.3, -0.2, 4.0]), np.array([-1.0, 0.5, 12.0])):
        u, v = _project(P, X)
        u2, v2 = _project(P2, X)
        # model pixel centre mapping of cv2.resize: u' = (u - roi_x + 0.5) * sx - 0.5
        assert u2 == pytest.approx((u - fit.roi_x + 0.5) * fit.scale_x - 0.5)
        assert v2 == pytest.approx((v - fit.roi_y + 0.5) * fit.scale_y - 0.5)
    assert P2[0, 3] == pytest.approx(-52.0 * fit.scale_x)  # baseline term scales with fx


def test_camera_info_from_a_binned_calibration():
    """CameraInfo calibrated at 1280x960 for a 640x480 image (binning 2), or width=0 (unset)."""
    fit = compute_fit(480, 640, CFG, "stretch")
    K = np.array([[1000.0, 0, 639.5], [0, 1000.0, 479.5], [0, 0, 1]])
    P = np.hstack([K, np.zeros((3, 1))])
    K2, _, _, _ = scale_camera_info_params(K, P, 1280, 960, fit)
    K_img = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    K3, _, _, _ = scale_camera_info_params(K_img, np.hstack([K_img, np.zeros((3, 1))]), 0, 0, fit)
    np.testing.assert_allclose(K2, K3)
    np.testing.assert_allclose(K2[:2, 2], [127.5, 63.5])  # image centre stays the centre
    with pytest.raises(FitError):
        scale_camera_info_params(K[:2], P, 640, 480, fit)


def test_tiny_config_fit():
    out, fit = fit_to_model(rand_image(90, 160), tiny_config(), "crop")
    assert out.shape == (32, 64, 3) and fit.roi_w == 160 and fit.roi_h == 80


def test_shrink_from_non_integer_ratio_matches_area_average():
    """720p -> 256x128 takes the fast two-stage path; it must stay an anti-aliased box average."""
    rng = np.random.default_rng(3)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3)).astype(np.uint8), (0, 0), 3)
    out, _ = fit_to_model(smooth, CFG, "stretch")
    area = cv2.resize(smooth, (256, 128), interpolation=cv2.INTER_AREA)
    diff = np.abs(out.astype(int) - area.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 12
    # A one-pixel checkerboard averages to grey; plain bilinear decimation would alias to 0/255.
    checker = np.indices((720, 1280)).sum(axis=0) % 2 * 255
    out, _ = fit_to_model(
        np.repeat(checker[..., None], 3, axis=2).astype(np.uint8), CFG, "stretch"
    )
    assert abs(out.astype(float).mean() - 127.5) < 3 and out.std() < 20


def test_colorize_lut_path_equals_palette_for_every_uint8_id():
    """uint8 maps go through a cv2.LUT table; every id (classes, unknown, 255 ignore) must
    match."""
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    want = PALETTE[np.where(ids < len(PALETTE) - 1, ids, len(PALETTE) - 1)]
    np.testing.assert_array_equal(colorize_semseg(ids), want)
    np.testing.assert_array_equal(colorize_semseg(ids.astype(np.int32)), want)
