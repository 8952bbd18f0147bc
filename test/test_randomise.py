# SPDX-License-Identifier: Apache-2.0
"""Domain randomisation of the scenes: varied look and camera, geometry (labels, depth) still
exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgemoe_ros.model.config import IGNORE_INDEX
from edgemoe_ros.scenes import CameraPose, camera_rays, raycast, render_frame, render_view
from edgemoe_ros.scenes import randomise as R
from edgemoe_ros.scenes.shading import Lighting
from edgemoe_ros.scenes.world import (
    FLAT,
    GROUND_PAINT,
    GROUND_ROAD,
    MAT_CAR_PAINT,
    NATURE,
    SKY,
    VEHICLE,
    Primitive,
    World,
    car_parts,
)

W, H = 192, 96


@pytest.fixture(scope="module")
def frames():
    return [render_frame(seed, W, H, randomise="domain") for seed in range(12)]


def test_off_is_the_default_distribution_bit_for_bit():
    plain = render_frame(5, 96, 48)
    for off in (None, "off", 0.0, 0):
        f = render_frame(5, 96, 48, randomise=off)
        assert np.array_equal(f.rgb, plain.rgb) and np.array_equal(f.labels, plain.labels)
        assert np.array_equal(f.depth, plain.depth) and np.array_equal(f.K, plain.K)
    assert not np.array_equal(render_frame(5, 96, 48, randomise="domain").rgb, plain.rgb)


def test_randomised_frames_are_deterministic_by_seed():
    a, b = render_frame(9, 96, 48, randomise="domain"), render_frame(9, 96, 48, randomise="domain")
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.depth, b.depth, equal_nan=True)


def test_resolve_profiles_and_bad_values():
    assert R.resolve(None) is None and R.resolve("off") is None and R.resolve(0.0) is None
    assert R.resolve("domain") is R.PROFILES["domain"]
    assert R.resolve(0.5).strength == 0.5
    with pytest.raises(ValueError, match="unknown randomisation profile"):
        R.resolve("wild")
    with pytest.raises(ValueError, match="strength"):
        R.resolve(-1.0)
    with pytest.raises(ValueError, match="strength"):
        R.resolve(float("nan"))


def test_camera_and_lens_vary(frames):
    focals = {round(float(f.K[0, 0]), 3) for f in frames}
    heights = {round(f.pose.height, 3) for f in frames}
    assert len(focals) == len(frames) and len(heights) == len(frames)
    lo, hi = R.Randomisation().hfov_deg
    for f in frames:
        hfov = 2 * np.degrees(np.arctan((W / 2) / f.K[0, 0]))
        assert lo - 1e-6 <= hfov <= hi + 1e-6
    assert any(f.k1 > 0 for f in frames) and any(f.k1 == 0 for f in frames)
    # stretched views (non-square pixels) and square ones
    aspects = [f.K[0, 0] / f.K[1, 1] for f in frames]
    assert min(aspects) < 0.9 and max(aspects) == 1.0


def test_ground_depth_is_the_exact_plane_intersection_for_any_lens(frames):
    """Road pixels' depth is -h / ray_z through each pixel's own (possibly distorted) ray."""
    checked_distorted = 0
    for f in frames:
        rays = camera_rays(f.K, W, H, f.pose, f.k1)
        road = (f.labels == FLAT) & (rays[..., 2] < 0)
        np.testing.assert_allclose(f.depth[road], -f.pose.height / rays[..., 2][road], rtol=1e-5)
        if f.k1 > 0:
            checked_distorted += int(road.sum())
    assert checked_distorted > 1000


def test_sky_ignore_and_surfaces_have_the_right_depth(frames):
    saw_ignore = False
    for f in frames:
        sky, ignore = f.labels == SKY, f.labels == IGNORE_INDEX
        assert np.all(np.isposinf(f.depth[sky]))
        assert np.all(np.isnan(f.depth[ignore]))
        rest = ~sky & ~ignore
        assert np.all(np.isfinite(f.depth[rest]) & (f.depth[rest] > 0))
        saw_ignore |= bool(ignore.any())
    assert saw_ignore  # hoods/borders occur at this profile's rates in 12 frames


def test_distorted_culling_misses_nothing(monkeypatch):
    """With a barrel lens each primitive's pixel rectangle must still hold every pixel it covers:
    labels and depth equal a brute-force cast where every primitive is tested against every
    pixel."""
    world = World(4)
    y = 30.0
    pose = CameraPose(x=float(world.road.center(y)) + world.road.lane_lateral(0), y=y,
                      yaw=world.road.heading(y))
    light = Lighting.random(np.random.default_rng(1))
    culled = render_view(world, pose, W, H, light, 0.0, np.random.default_rng(0), hfov_deg=100.0,
                         k1=0.25)
    monkeypatch.setattr(raycast, "_pixel_rects",
                        lambda K, pose, prims, w, h, shrink=1.0: [(0, h, 0, w)] * len(prims))
    brute = render_view(world, pose, W, H, light, 0.0, np.random.default_rng(0), hfov_deg=100.0,
                        k1=0.25)
    assert np.array_equal(culled.labels, brute.labels)
    assert np.array_equal(culled.depth, brute.depth)
    with pytest.raises(ValueError, match="k1"):
        render_view(world, pose, W, H, light, 0.0, np.random.default_rng(0), k1=-0.1)


def test_shadowed_points_are_those_under_an_occluder():
    box = Primitive("box", np.array([-1.0, -1.0, 1.0]), np.array([1.0, 1.0, 2.0]), VEHICLE,
                    np.ones(3))
    ball = Primitive("ellipsoid", np.array([10.0, 0.0, 3.0]), np.array([1.0, 1.0, 1.0]), NATURE,
                     np.ones(3))
    pts = np.array([[0.0, 0.0, 0.0], [0.9, -0.9, 0.0], [3.0, 0.0, 0.0], [10.0, 0.5, 0.0],
                    [12.0, 0.0, 0.0]])
    up = np.array([0.0, 0.0, 1.0])
    assert raycast.shadowed(pts, [box, ball], up).tolist() == [True, True, False, True, False]
    # sun 45 deg up towards +X: shadows fall to -X
    slanted = np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0)
    assert raycast.shadowed(np.array([[-1.5, 0.0, 0.0], [1.5, 0.0, 0.0]]), [box],
                            slanted).tolist() == [True, False]
    # sun on the horizon: no shadows
    assert not raycast.shadowed(pts, [box], np.array([0.0, 1.0, 0.0])).any()


def test_shadows_change_the_look_not_the_geometry():
    world = World(2)
    y = 50.0
    pose = CameraPose(x=float(world.road.center(y)) + world.road.lane_lateral(0), y=y,
                      yaw=world.road.heading(y))
    base = Lighting.random(np.random.default_rng(3))
    lit = replace(base, shadows=False,
                  sun_dir=np.array([0.6, 0.3, 0.74]) / np.linalg.norm([0.6, 0.3, 0.74]),
                  sun_strength=1.0)
    car = [p.shifted(float(world.road.center(y + 8)) - 2.0, y + 8)
           for p in car_parts(np.random.default_rng(0))]
    a = render_view(world, pose, W, H, lit, 0.0, np.random.default_rng(0), car)
    b = render_view(world, pose, W, H, replace(lit, shadows=True), 0.0, np.random.default_rng(0),
                    car)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.depth, b.depth)
    darker = b.rgb.astype(int).sum(-1) < a.rgb.astype(int).sum(-1) - 30
    rays = camera_rays(a.K, W, H, pose)
    with np.errstate(divide="ignore"):
        on_plane = (rays[..., 2] < 0) & np.isclose(a.depth, -pose.height / rays[..., 2], rtol=1e-5)
    assert darker[on_plane & (a.labels == FLAT)].sum() > 20  # the car's shadow on the road
    assert not darker[~on_plane].any()  # only the ground plane receives cast shadows


def test_restyle_keeps_geometry_and_one_colour_per_object():
    parts = car_parts(np.random.default_rng(0))
    out = R.restyle(parts, np.random.default_rng(1), R.Randomisation(restyle_prob=1.0))
    for a, b in zip(parts, out, strict=True):
        assert a.kind == b.kind and a.label == b.label
        assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi)
    body = [b for a, b in zip(parts, out, strict=True) if np.array_equal(a.color, parts[0].color)]
    assert body[0].material == MAT_CAR_PAINT and not np.allclose(body[0].color, parts[0].color)
    tyres = [b for a, b in zip(parts, out, strict=True) if a.color.max() <= 0.07]
    assert len(tyres) == 4 and all(np.array_equal(t.color, tyres[0].color) for t in tyres)
    assert R.restyle(parts, np.random.default_rng(1),
                     R.Randomisation(strength=0.0))[0].color is parts[0].color


def test_crosswalk_paint_is_flat_road():
    w = World(1)
    w.crosswalks = (40.0,)
    lat = np.linspace(-w.road.half_width + 0.4, w.road.half_width - 0.4, 200)
    y = np.full_like(lat, 40.0)
    region = w.ground(w.road.center(y) + lat, y, y_built_max=200.0)
    assert set(np.unique(region)) <= {GROUND_ROAD, GROUND_PAINT}
    assert 0.3 < (region == GROUND_PAINT).mean() < 0.7  # stripes half the width
    far = w.ground(w.road.center(y) + lat, np.full_like(lat, 45.0), y_built_max=200.0)
    assert (far == GROUND_PAINT).mean() < 0.2  # only lane lines away from the crossing


def test_overlays_are_ignored_with_no_depth():
    rng = np.random.default_rng(0)
    rgb = np.full((H, W, 3), 128, np.uint8)
    labels = np.zeros((H, W), np.uint8)
    depth = np.ones((H, W), np.float32)
    R.overlays(rgb, labels, depth, rng, R.Randomisation(hood_prob=1.0, border_prob=0.0))
    hood = labels == IGNORE_INDEX
    assert hood[-1].all() and not hood[0].any() and 0.05 < hood.mean() < 0.25
    assert np.isnan(depth[hood]).all() and (depth[~hood] == 1).all()


def test_sensor_keeps_shape_and_changes_pixels():
    rgb = render_frame(1, W, H).rgb
    out = R.sensor(rgb, np.random.default_rng(0),
                   R.Randomisation(blur_prob=1.0, jpeg_prob=1.0, vignette_prob=1.0))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert 0.5 < np.abs(out.astype(int) - rgb.astype(int)).mean() < 40
    assert np.array_equal(R.sensor(rgb, np.random.default_rng(0), R.Randomisation(strength=0.0)),
                          rgb)


def test_randomised_scenes_cover_the_real_failure_cues(frames):
    """The cues the shipped model misreads on real frames occur: leafy trees, cars, all classes."""
    seen = set()
    for f in frames:
        seen |= set(np.unique(f.labels).tolist())
    assert set(range(7)) <= seen
