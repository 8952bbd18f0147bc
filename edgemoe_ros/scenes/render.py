# SPDX-License-Identifier: Apache-2.0
"""Public entry points: single random frames for training, and continuous drives for the demo."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from . import randomise as R
from .camera import (
    DEFAULT_CAMERA_HEIGHT,
    DEFAULT_HFOV_DEG,
    CameraPose,
    camera_rays,
    intrinsics,
    undistort_factor,
)
from .randomise import Randomisation
from .raycast import cast
from .shading import Lighting, shade
from .world import EGO_LANE, Primitive, World, car_parts

#: Objects further ahead than this (metres along the road) are not generated; haze hides the cut.
VIEW_RANGE = 160.0
#: ... and objects this far behind the camera are dropped (they can still be beside it).
BEHIND_RANGE = 12.0

#: Depth value of pixels that see no surface (sky). Depth metrics must treat them as invalid.
SKY_DEPTH = float("inf")


@dataclass
class Frame:
    """One rendered image with exact ground truth.

    rgb: (H, W, 3) uint8. labels: (H, W) uint8 class ids (``SEMSEG_CLASSES`` order).
    depth: (H, W) float32 z-depth along the optical axis in metres (REP-118), ``+inf`` for sky.
    K: 3x3 intrinsics. pose: the camera pose in the world. Randomised frames
    (``render_frame(randomise=...)``) may also hold ``IGNORE_INDEX`` labels with NaN depth (ego
    hood, image borders).
    """

    rgb: np.ndarray
    labels: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    pose: CameraPose
    #: Radial distortion of the lens (``camera.undistort_factor``); 0 = pinhole (all default
    #: scenes).
    k1: float = 0.0


def _lead_vehicle(rng: np.random.Generator, world: World, y: float,
                  lateral: float) -> list[Primitive]:
    cx = float(world.road.center(y))
    return [p.shifted(cx + lateral, y) for p in car_parts(rng)]


def _contains_camera(prim: Primitive, origin: np.ndarray, margin: float = 0.3) -> bool:
    """True for a primitive the camera would sit inside (it would fill the view with one
    colour)."""
    lo, hi = prim.bounds()
    return bool(np.all(origin >= lo - margin) and np.all(origin <= hi + margin))


def render_view(world: World, pose: CameraPose, width: int, height: int, light: Lighting, t: float,
                rng: np.random.Generator, extra: list[Primitive] | None = None,
                hfov_deg: float = DEFAULT_HFOV_DEG, k1: float = 0.0,
                restyle: Callable[[list[Primitive]], list[Primitive]] | None = None,
                pixel_aspect: float = 1.0
                ) -> Frame:
    """Render ``world`` at time ``t`` seen from ``pose`` (the shared core of frames and sequences).

    ``k1``: radial lens distortion (``camera.undistort_factor``; 0 = pinhole, >= 0 only);
    ``pixel_aspect``: ``fx / fy`` (``hfov_deg`` fixes ``fx``); below 1 the view is squeezed
    sideways, as a wide image stretched into a narrower aspect (KITTI into the model: 0.6);
    ``restyle``: maps the visible primitives to new colours/materials (domain randomisation)."""
    if k1 < 0:
        raise ValueError(f"k1 must be >= 0 (barrel distortion), got {k1}")
    if pixel_aspect <= 0:
        raise ValueError(f"pixel_aspect must be > 0, got {pixel_aspect}")
    K = intrinsics(width, height, hfov_deg)
    if pixel_aspect != 1.0:
        K[1, 1] = K[0, 0] / pixel_aspect
    rays = camera_rays(K, width, height, pose, k1)
    shrink = 1.0 / float(undistort_factor(K, width, height, k1).max()) if k1 else 1.0
    prims = world.primitives(pose.y - BEHIND_RANGE, pose.y + VIEW_RANGE, t) + list(extra or [])
    prims = [p for p in prims if not _contains_camera(p, pose.origin)]
    if restyle is not None:
        prims = restyle(prims)
    hits = cast(world, K, pose, rays, prims, pose.y + VIEW_RANGE, shrink)
    rgb = shade(world, hits, prims, rays, light, rng)
    return Frame(rgb=rgb, labels=hits.label, depth=hits.depth.astype(np.float32), K=K, pose=pose,
                 k1=k1)


def render_frame(seed: int, width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG,
                 randomise: str | float | Randomisation | None = None) -> Frame:
    """A random street view: random world, position, camera jitter, light and traffic, all from
    ``seed``.

    ``randomise``: a domain-randomisation profile (``randomise.PROFILES`` name, a strength, or a
    ``Randomisation``); None/"off"/0 renders the default distribution, bit for bit as ever. With
    one, ``hfov_deg`` is replaced by the profile's random lens, and ignored overlays (hood,
    borders) carry label ``IGNORE_INDEX`` and NaN depth."""
    if width < 2 or height < 2:
        raise ValueError(f"frame size must be at least 2x2, got {width}x{height}")
    prof = R.resolve(randomise)
    rng = np.random.default_rng([int(seed), 2])
    world = World(seed)
    road = world.road
    y = float(rng.uniform(0.0, 2000.0))
    lateral = road.lane_lateral(EGO_LANE) + float(rng.uniform(-0.4, 0.4))
    pose = CameraPose(
        x=float(road.center(y)) + lateral, y=y,
        height=DEFAULT_CAMERA_HEIGHT + float(rng.uniform(-0.05, 0.05)),
        yaw=road.heading(y) + float(rng.normal(0.0, 0.04)),
        pitch=float(rng.normal(0.0, 0.02)), roll=float(rng.normal(0.0, 0.01)))
    extra = []
    if rng.random() < 0.5:
        extra = _lead_vehicle(rng, world, y + float(rng.uniform(6.0, 60.0)),
                              road.lane_lateral(EGO_LANE))
    light = Lighting.random(rng)
    t = float(rng.uniform(0, 20))
    if prof is None:
        return render_view(world, pose, width, height, light, t, rng, extra, hfov_deg)
    return _randomised(seed, world, pose, width, height, t, rng, extra, prof)


def _randomised(seed: int, world: World, pose: CameraPose, width: int, height: int, t: float,
                rng: np.random.Generator, extra: list[Primitive], prof: Randomisation) -> Frame:
    """``render_frame``'s scene under domain randomisation (all draws from the seed's own
    stream)."""
    rr = np.random.default_rng([int(seed), R.RANDOMISE_STREAM])
    pose, lens = R.camera(rr, prof, pose)
    R.restyle_world(world, rr, prof, pose.y)
    extra = extra + R.clutter(world, pose, rr, prof)
    light = R.lighting(rr, prof)
    style_rng = np.random.default_rng([int(seed), R.RANDOMISE_STREAM, 1])
    frame = render_view(world, pose, width, height, light, t, rng, extra, lens.hfov_deg, lens.k1,
                        restyle=lambda prims: R.restyle(prims, style_rng, prof),
                        pixel_aspect=lens.pixel_aspect)
    labels, depth = frame.labels.copy(), frame.depth.copy()
    rgb = frame.rgb.copy()
    R.overlays(rgb, labels, depth, rr, prof)
    rgb = R.sensor(rgb, rr, prof)
    return replace(frame, rgb=rgb, labels=labels, depth=depth)


class DriveSequence:
    """A continuous drive down one world's road: the camera car advances at ``speed`` m/s in its
    lane, parked objects stay put, traffic and pedestrians move, light is fixed. Frame ``i`` is at
    time ``i / fps``; rendering is deterministic by ``seed`` and independent of earlier frames."""

    def __init__(self, seed: int, width: int, height: int, fps: float = 10.0, speed: float = 10.0,
                 hfov_deg: float = DEFAULT_HFOV_DEG):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.seed, self.width, self.height, self.fps = (int(seed), int(width), int(height),
                                                        float(fps))
        self.speed, self.hfov_deg = float(speed), float(hfov_deg)
        self.world = World(seed)
        rng = np.random.default_rng([self.seed, 3])
        self.light = Lighting.random(rng)
        self.start_y = float(rng.uniform(0.0, 500.0))
        self.lead_gap = float(rng.uniform(15.0, 35.0)) if rng.random() < 0.6 else None
        self._lead_parts = car_parts(rng)

    def pose(self, i: int) -> CameraPose:
        road = self.world.road
        y = self.start_y + self.speed * i / self.fps
        # gentle in-lane drift
        lateral = road.lane_lateral(EGO_LANE) + 0.15 * math.sin(0.3 * i / self.fps)
        return CameraPose(x=float(road.center(y)) + lateral, y=y, yaw=road.heading(y),
                          pitch=0.01 * math.sin(2.0 * i / self.fps))  # a little suspension pitch

    def frame(self, i: int) -> Frame:
        pose = self.pose(i)
        extra = []
        if self.lead_gap is not None:
            y = pose.y + self.lead_gap + 5.0 * math.sin(0.2 * i / self.fps)
            cx = float(self.world.road.center(y))
            lat = self.world.road.lane_lateral(EGO_LANE)
            extra = [p.shifted(cx + lat, y) for p in self._lead_parts]
        # sensor noise differs per frame, reproducibly
        rng = np.random.default_rng([self.seed, 4, i])
        return render_view(self.world, pose, self.width, self.height, self.light, i / self.fps,
                           rng, extra, self.hfov_deg)

    def frames(self, n: int) -> Iterator[Frame]:
        for i in range(n):
            yield self.frame(i)
