# SPDX-License-Identifier: Apache-2.0
"""Training augmentation: sensor changes leave ground truth alone; crops keep K and depth targets
right."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemoe_ros.datasets.frame import LabelledFrame
from edgemoe_ros.scenes import CameraPose, intrinsics, render_frame, render_view
from edgemoe_ros.scenes.shading import Lighting
from edgemoe_ros.scenes.world import World
from edgemoe_ros.training import augment as A
from edgemoe_ros.training import train_heads
from edgemoe_ros.training.data import canonical_depth, render_set


def _view(width: int, height: int, hfov: float):
    world = World(6)
    y = 35.0
    pose = CameraPose(x=float(world.road.center(y)) + world.road.lane_lateral(0), y=y,
                      yaw=world.road.heading(y), pitch=0.02)
    light = Lighting.random(np.random.default_rng(2))
    return render_view(world, pose, width, height, light, 0.0, np.random.default_rng(0),
                       hfov_deg=hfov)


def _labelled(f) -> LabelledFrame:
    return LabelledFrame(image=f.rgb, semseg=f.labels, depth=f.depth, K=f.K, name="t")


def test_centre_crop_is_the_narrower_lens_exactly():
    """Cropping the middle of a 90-degree 512x256 view is the same camera as a 256x128 view with
    the same focal length (hfov 2 atan(128/256)): same K, labels, depth and canonical target."""
    wide = _view(512, 256, 90.0)
    narrow_hfov = 2 * math.degrees(math.atan(128 / 256))
    narrow = _view(256, 128, narrow_hfov)
    c = A.crop(_labelled(wide), 128, 64, 256, 128)
    np.testing.assert_allclose(c.K, narrow.K, atol=1e-9)
    assert np.array_equal(c.semseg, narrow.labels)
    np.testing.assert_allclose(c.depth, narrow.depth, rtol=1e-6)
    # the model sees the crop magnified 2x: its canonical targets are half the metric depth
    target = canonical_depth(c.depth, c.K, 256, 128)
    np.testing.assert_allclose(target, canonical_depth(narrow.depth, narrow.K, 256, 128),
                               rtol=1e-6)
    finite = np.isfinite(c.depth)
    np.testing.assert_allclose(target[finite], 0.5 * c.depth[finite], rtol=1e-5)


def test_crop_outside_the_image_is_an_error():
    f = _labelled(render_frame(0, 64, 32))
    with pytest.raises(ValueError, match="not inside"):
        A.crop(f, 40, 0, 32, 16)
    with pytest.raises(ValueError, match="min_scale"):
        A.random_crop(f, np.random.default_rng(0), 2.0, min_scale=0.0)


def test_random_crop_keeps_aspect_and_moves_the_principal_point():
    f = _labelled(render_frame(1, 400, 300))
    rng = np.random.default_rng(0)
    for _ in range(10):
        c = A.random_crop(f, rng, aspect=2.0, min_scale=0.5)
        h, w = c.image.shape[:2]
        assert abs(w / h - 2.0) < 0.05 and 200 <= w <= 400
        assert c.semseg.shape == (h, w) and c.depth.shape == (h, w)
        assert c.K[0, 0] == f.K[0, 0] and c.K[1, 1] == f.K[1, 1]
        x0, y0 = f.K[0, 2] - c.K[0, 2], f.K[1, 2] - c.K[1, 2]
        assert float(x0).is_integer() and float(y0).is_integer()
        assert np.array_equal(c.semseg, f.semseg[int(y0):int(y0) + h, int(x0):int(x0) + w])


def test_flip_mirrors_the_principal_point():
    f = _labelled(_view(96, 48, 90.0))
    f = LabelledFrame(f.image, f.semseg, f.depth,
                      np.array([[50.0, 0, 40.0], [0, 50.0, 20.0], [0, 0, 1]]), "t")
    g = A.hflip(f)
    assert g.K[0, 2] == 55.0 and g.K[1, 2] == 20.0
    assert (np.array_equal(g.semseg[:, 0], f.semseg[:, -1])
            and np.array_equal(A.hflip(g).image, f.image))


def test_photometric_changes_only_the_image_and_strength_zero_is_identity():
    rgb = render_frame(3, 128, 64).rgb
    a = A.photometric(rgb, np.random.default_rng(5))
    b = A.photometric(rgb, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == rgb.shape and a.dtype == np.uint8
    assert np.abs(a.astype(int) - rgb.astype(int)).mean() > 1.0
    assert A.photometric(rgb, np.random.default_rng(5), strength=0.0) is rgb
    many = [A.photometric(rgb, np.random.default_rng(s)).mean() for s in range(12)]
    assert max(many) - min(many) > 20  # brightness/gamma really vary
    with pytest.raises(ValueError, match="uint8"):
        A.photometric(rgb.astype(np.float32), np.random.default_rng(0))


def test_augment_frame_keeps_ground_truth_aligned_with_k():
    """Whatever crop and flip were drawn, K says where the window came from: the labels there are
    the window of the original labels (mirrored when the principal point was mirrored)."""
    f = _labelled(render_frame(4, 256, 128))
    outcomes = set()
    for seed in range(8):
        g = A.augment_frame(f, np.random.default_rng(seed), aspect=2.0)
        h, w = g.image.shape[:2]
        y0 = int(round(f.K[1, 2] - g.K[1, 2]))
        plain_x0 = f.K[0, 2] - g.K[0, 2]
        flip_x0 = f.K[0, 2] - ((w - 1) - g.K[0, 2])
        rows = slice(y0, y0 + h)
        plain_cols = slice(int(round(plain_x0)), int(round(plain_x0)) + w)
        flip_cols = slice(int(round(flip_x0)), int(round(flip_x0)) + w)
        if (plain_x0 >= 0 and float(plain_x0).is_integer()
                and np.array_equal(g.semseg, f.semseg[rows, plain_cols])):
            outcomes.add("plain")
        else:
            assert np.array_equal(g.semseg, f.semseg[rows, flip_cols][:, ::-1])
            outcomes.add("flipped")
    assert outcomes == {"plain", "flipped"}


def test_render_set_randomised_depth_is_the_canonical_target():
    s = render_set([11], 128, 64, randomise="domain")
    f = render_frame(11, 128, 64, randomise="domain")
    expect = f.depth * (intrinsics(128, 64, 90.0)[1, 1] / f.K[1, 1])
    np.testing.assert_allclose(s["depth"][0], expect, rtol=1e-6)
    assert np.array_equal(s["labels"][0], f.labels)
    plain = render_set([11], 128, 64)
    assert np.array_equal(plain["depth"][0], render_frame(11, 128, 64).depth)


def test_randomised_share_of_training_seeds():
    seeds = range(train_heads.FIRST_SEED, train_heads.FIRST_SEED + 2000)
    for share in (0.0, 0.3, 0.7, 1.0):
        got = np.mean([train_heads.randomised_seed(s, share) for s in seeds])
        assert abs(got - share) < 0.04
