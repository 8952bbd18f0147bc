# SPDX-License-Identifier: Apache-2.0
"""Metric depth through the canonical camera: the conversion, degenerate K, and the engine with
rendered scenes of one street seen through different lenses."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from edgemoe_ros.engine import Engine
from edgemoe_ros.model.canonical_camera import (
    IntrinsicsError,
    camera_matrix,
    canonical_focal,
    depth_scale,
)
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import load_weights, random_init, shipped_weights_path
from edgemoe_ros.scenes import DEFAULT_HFOV_DEG, intrinsics, render_frame


def test_canonical_camera_is_the_renderers_at_the_model_input():
    cfg = ModelConfig()
    assert cfg.canonical_hfov_deg == DEFAULT_HFOV_DEG
    assert canonical_focal(cfg) == pytest.approx(intrinsics(cfg.img_w, cfg.img_h)[0, 0])
    assert canonical_focal(cfg) == pytest.approx(128.0)
    assert canonical_focal(cfg.replace(canonical_hfov_deg=60.0)) == pytest.approx(
        128.0 / math.tan(math.radians(30))
    )


def test_camera_matrix_unknown_and_degenerate():
    assert camera_matrix(None) is None
    assert camera_matrix(np.zeros(9)) is None  # CameraInfo's "uncalibrated"
    k = camera_matrix([700.0, 0, 320, 0, 710.0, 240, 0, 0, 1])
    assert k.shape == (3, 3) and k[1, 1] == 710.0
    bad = {
        "NaN": [np.nan, 0, 1, 0, 1, 1, 0, 0, 1],
        "Inf": [1, 0, 1, 0, np.inf, 1, 0, 0, 1],
        "negative fx": [-700.0, 0, 320, 0, 700, 240, 0, 0, 1],
        "zero fy": [700.0, 0, 320, 0, 0, 240, 0, 0, 1],
        "size": [700.0, 0, 320, 0, 700, 240],
        "not numbers": ["a"] * 9,
    }
    for name, K in bad.items():
        with pytest.raises(IntrinsicsError):
            camera_matrix(K)
        assert name  # each case named for the reader


def test_depth_scale_follows_the_vertical_focal_after_the_fit():
    cfg = ModelConfig()
    K = intrinsics(1024, 512, 90.0)  # the canonical camera at 4x the model resolution
    assert depth_scale(K, 0.25, 0.25, cfg) == pytest.approx(1.0)
    # A 2x longer lens doubles metric depth for the same prediction; a horizontal-only stretch
    # does not change it (vertical rule, measured in bench/depth_intrinsics.py).
    assert depth_scale(K * [[2], [2], [1]], 0.25, 0.25, cfg) == pytest.approx(2.0)
    assert depth_scale(K, 0.5, 0.25, cfg) == pytest.approx(1.0)
    assert depth_scale(K, 0.25, 0.5, cfg) == pytest.approx(2.0)
    with pytest.raises(IntrinsicsError):
        depth_scale(np.zeros((3, 3)), 0.25, 0.25, cfg)
    with pytest.raises(IntrinsicsError):
        depth_scale(K, 0.0, 0.25, cfg)


def test_config_rejects_a_bad_canonical_camera():
    with pytest.raises(ValueError, match="canonical_hfov_deg"):
        tiny_config(canonical_hfov_deg=0.0)
    cfg = tiny_config(canonical_hfov_deg=70.0)
    assert type(cfg).from_json(cfg.to_json()).canonical_hfov_deg == 70.0


@pytest.fixture(scope="module")
def tiny_engine():
    cfg = tiny_config(max_depth=1e4)  # no clipping gets in the way of exact ratios
    with Engine(random_init(cfg, seed=3), "reference") as eng:
        yield eng


def _image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_engine_scales_depth_by_the_effective_focal(tiny_engine):
    cfg = tiny_engine.config
    img = _image(64, 128)  # 2x the tiny model's 32x64
    plain = tiny_engine.infer(img, ("depth",))
    canonical_k = intrinsics(128, 64, cfg.canonical_hfov_deg)
    same = tiny_engine.infer(img, ("depth",), camera_k=canonical_k)
    np.testing.assert_array_equal(same.depth, plain.depth)
    longer = tiny_engine.infer(img, ("depth",), camera_k=canonical_k * [[3], [3], [1]])
    assert longer.depth_scale == pytest.approx(3.0)
    np.testing.assert_allclose(longer.depth, 3.0 * plain.depth, rtol=1e-6)
    assert np.isfinite(longer.depth_at_input()).all()
    # Segmentation does not depend on the camera.
    both = tiny_engine.infer(img, camera_k=canonical_k * [[3], [3], [1]])
    np.testing.assert_array_equal(both.semseg, tiny_engine.infer(img).semseg)


def test_engine_missing_k_warns_once_and_degenerate_k_raises(caplog):
    with Engine(random_init(tiny_config(), seed=1), "reference") as eng:
        img = _image(32, 64)
        with caplog.at_level(logging.WARNING, logger="edgemoe_ros.engine"):
            eng.infer(img, ("semseg",))
            assert not [
                r for r in caplog.records if "intrinsics" in r.message
            ]  # no depth, no warning
            first = eng.infer(img)
            eng.infer(img, camera_k=np.zeros((3, 3)))
            eng.infer(img)
        warnings = [r for r in caplog.records if "without camera intrinsics" in r.message]
        assert len(warnings) == 1
        assert first.depth_scale == 1.0
        for K in (
            [[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]],
            [[-5.0, 0, 0], [0, 5, 0], [0, 0, 1]],
            [1.0, 2.0],
        ):
            with pytest.raises(IntrinsicsError):
                eng.infer(img, camera_k=K)
        assert eng.infer(img, camera_k=intrinsics(64, 32)).depth is not None  # still usable


def _common_view_median(
    depth: np.ndarray, K_wide: np.ndarray, K_narrow: np.ndarray, narrow_wh: tuple[int, int]
) -> float:
    """Median of ``depth`` (wide camera's grid) over the part of the view the narrow one sees."""
    h, w = depth.shape
    nw, nh = narrow_wh
    half_x = (nw / 2) / K_narrow[0, 0] * K_wide[0, 0]
    half_y = (nh / 2) / K_narrow[1, 1] * K_wide[1, 1]
    cx, cy = K_wide[0, 2], K_wide[1, 2]
    region = depth[
        max(0, round(cy - half_y)) : min(h, round(cy + half_y)),
        max(0, round(cx - half_x)) : min(w, round(cx + half_x)),
    ]
    return float(np.nanmedian(np.where(np.isfinite(region), region, np.nan)))


#: The long-lens camera of the two-lens test: 4:3, another resolution than the model's.
NARROW = (400, 300)


@pytest.mark.skipif(shipped_weights_path() is None, reason="shipped model not installed")
@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_same_scene_through_two_lenses_gives_the_same_metric_depth(mode):
    """One street, one pose, rendered at 90 deg (the canonical camera) and through a 50 deg lens at
    another resolution and aspect (4:3: cropped, or stretched anisotropically). With each
    camera's K the engine's depth over the common field of view
    agrees; without K the long lens reads everything ~2x too close (what this change fixes)."""
    with Engine(load_weights(shipped_weights_path()), "cpu", resize_mode=mode) as eng:
        agree, without_k = [], []
        for seed in (0, 1, 2):
            wide = render_frame(seed, 256, 128, 90.0)
            narrow = render_frame(seed, *NARROW, 50.0)
            d_wide = eng.infer(wide.rgb, ("depth",), camera_k=wide.K).depth_at_input()
            d_narrow = eng.infer(narrow.rgb, ("depth",), camera_k=narrow.K).depth_at_input()
            d_narrow_nok = eng.infer(narrow.rgb, ("depth",)).depth_at_input()
            gt_common = _common_view_median(
                np.where(np.isfinite(wide.depth), wide.depth, np.nan), wide.K, narrow.K, NARROW
            )
            gt_narrow = float(
                np.nanmedian(np.where(np.isfinite(narrow.depth), narrow.depth, np.nan))
            )
            assert gt_narrow == pytest.approx(gt_common, rel=0.1)  # the regions do match
            common = _common_view_median(d_wide, wide.K, narrow.K, NARROW)
            agree.append(float(np.nanmedian(d_narrow)) / common)
            without_k.append(float(np.nanmedian(d_narrow_nok)) / common)
    assert np.allclose(agree, 1.0, atol=0.15), agree
    assert max(without_k) < 0.75, without_k  # measured 0.45 cropped, 0.64 stretched
