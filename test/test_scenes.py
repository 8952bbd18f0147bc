# SPDX-License-Identifier: Apache-2.0
"""The procedural scenes: labels and depth must agree with the geometry that produced them."""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.model.config import SEMSEG_CLASSES
from edgemoe_ros.scenes import DriveSequence, camera_rays, intrinsics, project, render_frame
from edgemoe_ros.scenes.world import GROUND_PAINT, GROUND_PAVEMENT, GROUND_ROAD, GROUND_TERRAIN

FLAT, HUMAN, VEHICLE, CONSTRUCTION, OBJECT, NATURE, SKY = range(7)
W, H = 256, 128


@pytest.fixture(scope="module")
def frames():
    return [render_frame(seed, W, H) for seed in range(12)]


def test_class_ids_follow_spec_order():
    assert (
        SEMSEG_CLASSES[FLAT] == "flat"
        and SEMSEG_CLASSES[SKY] == "sky"
        and SEMSEG_CLASSES[HUMAN] == "human"
    )


def test_frame_types_and_shapes(frames):
    f = frames[0]
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
    assert f.labels.shape == (H, W) and f.labels.dtype == np.uint8
    assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
    assert f.K.shape == (3, 3)
    assert int(f.labels.max()) < len(SEMSEG_CLASSES)


def test_intrinsics_from_fov():
    K = intrinsics(256, 128, 90.0)
    assert K[0, 0] == pytest.approx(128.0)  # f = (w/2) / tan(45°)
    assert K[0, 0] == K[1, 1]
    assert (K[0, 2], K[1, 2]) == (127.5, 63.5)
    with pytest.raises(ValueError, match="hfov"):
        intrinsics(256, 128, 180.0)


def _plane_depth(f, mask):
    """Analytic z-depth of the ground plane Z=0 through each pixel, from K and the camera pose
    only."""
    rays = camera_rays(f.K, W, H, f.pose)
    return -f.pose.height / rays[..., 2][mask]


def test_road_depth_is_the_analytic_plane_intersection(frames):
    checked = 0
    for f in frames:
        road = (f.labels == FLAT) & np.isfinite(f.depth)
        rays = camera_rays(f.K, W, H, f.pose)
        # flat pixels on the plane (not the tops of objects): their ray points down
        road &= rays[..., 2] < 0
        np.testing.assert_allclose(f.depth[road], _plane_depth(f, road), rtol=1e-5)
        checked += int(road.sum())
    assert checked > 10_000


def test_untilted_camera_plane_depth_matches_closed_form():
    """With zero pitch/roll the plane depth is f*h/(v - cy) for rows below the horizon."""
    from edgemoe_ros.scenes import CameraPose, render_view
    from edgemoe_ros.scenes.shading import Lighting
    from edgemoe_ros.scenes.world import World

    world = World(3)
    y = 40.0
    pose = CameraPose(
        x=float(world.road.center(y)) + world.road.lane_lateral(0), y=y, yaw=world.road.heading(y)
    )
    f = render_view(
        world, pose, W, H, Lighting.random(np.random.default_rng(0)), 0.0, np.random.default_rng(0)
    )
    v = np.arange(H, dtype=np.float64)[:, None].repeat(W, 1)
    road = f.labels == FLAT
    road &= v > f.K[1, 2] + 1
    expected = f.K[1, 1] * pose.height / (v[road] - f.K[1, 2])
    np.testing.assert_allclose(f.depth[road], expected, rtol=1e-5)
    assert road.sum() > 2000


def test_sky_has_no_finite_depth_and_everything_else_does(frames):
    for f in frames:
        sky = f.labels == SKY
        assert sky.any()
        assert np.all(np.isinf(f.depth[sky]))
        assert np.all(np.isfinite(f.depth[~sky]))
        assert np.all(f.depth[~sky] > 0)


def test_sky_is_above_the_horizon(frames):
    for f in frames:
        rays = camera_rays(f.K, W, H, f.pose)
        assert np.all(rays[..., 2][f.labels == SKY] >= 0)


def test_road_depth_grows_toward_the_horizon(frames):
    f = frames[1]
    col = W // 2
    rows = [
        v
        for v in range(H - 1, -1, -1)
        if f.labels[v, col] == FLAT and np.isfinite(f.depth[v, col])
    ]
    assert len(rows) > 10
    d = f.depth[rows, col]
    # walking up the image from the bottom, the road gets farther (until something stands on it)
    run = np.argmax(np.diff(d) <= 0) if np.any(np.diff(d) <= 0) else len(d) - 1
    assert run >= 10
    assert np.all(np.diff(d[: run + 1]) > 0)


def test_all_classes_appear_across_frames(frames):
    seen = set()
    for f in frames:
        seen |= set(np.unique(f.labels).tolist())
    assert seen == set(range(len(SEMSEG_CLASSES)))


def test_objects_are_closer_than_the_ground_behind_them(frames):
    """An object pixel occludes the plane: its depth is smaller than the plane depth along its
    ray."""
    for f in frames[:4]:
        rays = camera_rays(f.K, W, H, f.pose)
        obj = np.isin(f.labels, (HUMAN, VEHICLE, OBJECT)) & (rays[..., 2] < 0)
        if obj.any():
            assert np.all(f.depth[obj] <= _plane_depth(f, obj) + 1e-3)


def test_deterministic_by_seed():
    a, b, c = render_frame(7, 96, 48), render_frame(7, 96, 48), render_frame(8, 96, 48)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.rgb, c.rgb)


def test_any_resolution_same_scene():
    """The same seed at double resolution is the same scene: class shares agree closely."""
    lo, hi = render_frame(5, 128, 64), render_frame(5, 256, 128)
    share_lo = np.bincount(lo.labels.ravel(), minlength=7) / lo.labels.size
    share_hi = np.bincount(hi.labels.ravel(), minlength=7) / hi.labels.size
    np.testing.assert_allclose(share_lo, share_hi, atol=0.02)


def test_images_are_not_flat_colour(frames):
    for f in frames:
        assert f.rgb.std() > 20
        # each visible class has more than one colour (texture, shading)
        for c in np.unique(f.labels):
            px = f.rgb[f.labels == c]
            if len(px) > 200:
                assert px.std(axis=0).max() > 2.0


def test_ground_regions():
    from edgemoe_ros.scenes.world import World

    w = World(1)
    y = np.array([10.0, 10.0])
    x = w.road.center(y) + np.array(
        [0.3 * w.road.half_width, w.road.half_width + w.road.sidewalk_width + 50]
    )
    region = w.ground(x, y, y_built_max=200.0)
    assert region[1] in (GROUND_TERRAIN, GROUND_PAVEMENT)  # far beyond the sidewalk
    assert region[0] in (GROUND_ROAD, GROUND_PAINT)  # on the road (or its lane paint)
    far = w.ground(x[1:], np.array([500.0]), y_built_max=200.0)
    assert far[0] == GROUND_TERRAIN  # past the generated blocks everything off-road is terrain


def test_sequence_road_depth_constant_while_objects_approach():
    seq = DriveSequence(seed=11, width=160, height=80, fps=10.0)
    frames = list(seq.frames(6))
    # deterministic
    again = seq.frame(3)
    assert np.array_equal(again.rgb, frames[3].rgb) and np.array_equal(
        again.depth, frames[3].depth
    )
    # the camera advances by speed / fps per frame
    ys = [f.pose.y for f in frames]
    np.testing.assert_allclose(np.diff(ys), seq.speed / seq.fps)
    # a road pixel at the bottom centre sees the same plane depth every frame (camera height fixed,
    # pitch varies slightly: depth changes only by that pitch)
    v, u = 78, 80
    d = np.array([f.depth[v, u] for f in frames])
    assert all(f.labels[v, u] == FLAT for f in frames)
    np.testing.assert_allclose(d, d[0], rtol=0.05)
    # static surfaces ahead approach: back-project frame 0's buildings/poles/vegetation into the
    # world, re-project them into frame 3, and find them there at the predicted (smaller) depth
    f0, f3 = frames[0], frames[3]
    static = np.isin(f0.labels, (CONSTRUCTION, OBJECT, NATURE)) & (f0.depth < 60)
    rays = camera_rays(f0.K, 160, 80, f0.pose)
    points = f0.pose.origin + f0.depth[static][:, None] * rays[static]
    uv, z3 = project(f3.K, f3.pose, points)
    u3, v3 = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (u3 >= 0) & (u3 < 160) & (v3 >= 0) & (v3 < 80) & (z3 > 1)
    assert inside.sum() > 200
    z0 = f0.depth[static][inside]
    assert np.all(z3[inside] < z0)  # every static point ahead got closer
    rendered = f3.depth[v3[inside], u3[inside]]
    agree = np.abs(rendered - z3[inside]) < 0.1 * z3[inside]
    assert agree.mean() > 0.8  # the rest is pixel rounding at edges and newly occluding objects


def test_sequence_objects_persist():
    """Consecutive frames share most of their labels (objects do not pop in and out)."""
    seq = DriveSequence(seed=2, width=128, height=64, fps=20.0)
    a, b = seq.frame(10), seq.frame(11)
    assert (a.labels == b.labels).mean() > 0.85


def test_render_speed_by_counts():
    """The renderer intersects each primitive only with its projected rectangle: the number of
    ray-primitive tests per frame is a small multiple of the pixel count, not pixels x
    primitives."""
    from edgemoe_ros.scenes import raycast

    calls = {"pixels": 0, "prims": 0}
    orig_box = raycast._intersect_box

    def counting(o, d, lo, hi):
        calls["pixels"] += d.shape[0] * d.shape[1]
        calls["prims"] += 1
        return orig_box(o, d, lo, hi)

    raycast._intersect_box = counting
    try:
        render_frame(4, W, H)
    finally:
        raycast._intersect_box = orig_box
    assert calls["prims"] > 20
    assert calls["pixels"] < 10 * W * H < calls["prims"] * W * H / 2


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="frame size"):
        render_frame(0, 1, 10)
