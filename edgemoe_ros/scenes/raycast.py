# SPDX-License-Identifier: Apache-2.0
"""Analytic ray casting with a z-buffer: the road plane plus boxes and ellipsoids, vectorised in
numpy.

Every primitive is intersected only with the pixels inside its projected bounding rectangle, so a
frame costs roughly (pixels + covered pixels) rather than pixels x primitives. Labels and depth
come from the same nearest hit, which is why they agree with the geometry exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import CameraPose, project
from .world import FLAT, GROUND_TERRAIN, NATURE, SKY, Primitive, World

#: Hits closer than this (metres of z-depth) are ignored: the camera cannot see inside its own
#: housing.
NEAR_CLIP = 0.05


@dataclass
class Hits:
    """Nearest surface per pixel. ``depth`` is z-depth in metres (+inf where the ray meets nothing,
    i.e. sky); ``prim`` indexes the primitive list (-1 = ground or sky); ``ground`` is the GROUND_*
    region code where the ground is hit (-1 elsewhere)."""

    depth: np.ndarray
    label: np.ndarray
    prim: np.ndarray
    ground: np.ndarray
    normal: np.ndarray
    point: np.ndarray


def _pixel_rects(K: np.ndarray, pose: CameraPose, prims: list[Primitive], width: int, height: int,
                 shrink: float = 1.0) -> list[tuple[int, int, int, int] | None]:
    """Per primitive, the pixel rectangle (v0, v1, u0, u1) that can contain it, or None if out of
    view. All bounding-box corners are projected in one batch (the per-primitive Python cost
    dominates).

    ``shrink`` (<= 1) is the smallest factor by which a barrel-distorted lens pulls a pinhole pixel
    towards the principal point (1 / the largest ``camera.undistort_factor``): the distorted image
    of the pinhole rectangle then lies within the bounding box of the rectangle and its copy
    scaled by ``shrink`` about the principal point."""
    if not prims:
        return []
    lo = np.array([p.bounds()[0] for p in prims])
    hi = np.array([p.bounds()[1] for p in prims])
    # (8, 3)
    sel = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=bool)
    corners = np.where(sel[None], hi[:, None, :], lo[:, None, :])  # (N, 8, 3)
    uv, z = project(K, pose, corners.reshape(-1, 3))
    uv, z = uv.reshape(-1, 8, 2), z.reshape(-1, 8)
    rects: list[tuple[int, int, int, int] | None] = []
    for i in range(len(prims)):
        if np.all(z[i] <= NEAR_CLIP):
            rects.append(None)
            continue
        if np.any(z[i] <= NEAR_CLIP):  # straddles the image plane: its projection is unbounded
            rects.append((0, height, 0, width))
            continue
        us, vs = uv[i, :, 0], uv[i, :, 1]
        if shrink < 1.0:
            us = np.concatenate([us, K[0, 2] + (us - K[0, 2]) * shrink])
            vs = np.concatenate([vs, K[1, 2] + (vs - K[1, 2]) * shrink])
        u0 = max(int(np.floor(us.min())), 0)
        u1 = min(int(np.ceil(us.max())) + 1, width)
        v0 = max(int(np.floor(vs.min())), 0)
        v1 = min(int(np.ceil(vs.max())) + 1, height)
        rects.append((v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None)
    return rects


def _intersect_box(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Slab test. Returns entry t (inf where missed) and the outward normal at the entry point."""
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / safe
    t1 = (lo - o) * inv
    t2 = (hi - o) * inv
    tnear = np.minimum(t1, t2)
    tfar = np.maximum(t1, t2).min(axis=-1)
    tmin = tnear.max(axis=-1)
    hit = (tmin > NEAR_CLIP) & (tfar >= tmin)
    t = np.where(hit, tmin, np.inf)
    entry_face = tnear == tmin[..., None]  # the slab entered last is the face that was hit
    normal = np.where(entry_face, -np.sign(d), 0.0).astype(np.float32)
    return t, normal


def _intersect_ellipsoid(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radii: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    oc = (o - centre) / radii
    dd = d / radii
    a = (dd * dd).sum(-1)
    b = 2.0 * (dd * oc).sum(-1)
    c = float((oc * oc).sum() - 1.0)
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = (-b - root) / (2.0 * a)
    hit = (disc >= 0) & (t > NEAR_CLIP)
    t = np.where(hit, t, np.inf)
    p = o + np.where(hit, t, 0.0)[..., None] * d
    n = (p - centre) / (radii * radii)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return t, n.astype(np.float32)


def cast(world: World, K: np.ndarray, pose: CameraPose, rays: np.ndarray, prims: list[Primitive],
         y_built_max: float, shrink: float = 1.0) -> Hits:
    """Nearest hit per pixel of the road plane and ``prims`` (rays from ``camera.camera_rays``;
    ``shrink``: see ``_pixel_rects``, for rays of a distorted lens)."""
    height, width = rays.shape[:2]
    o = pose.origin
    depth = np.full((height, width), np.inf)
    label = np.full((height, width), SKY, dtype=np.uint8)
    prim_idx = np.full((height, width), -1, dtype=np.int32)
    normal = np.zeros((height, width, 3), dtype=np.float32)

    # road plane Z = 0: t = -h / dZ where the ray points down
    dz = rays[..., 2]
    down = dz < -1e-9
    t_ground = np.where(down, -o[2] / np.where(down, dz, -1.0), np.inf)
    depth[down] = t_ground[down]
    gx = o[0] + t_ground[down] * rays[..., 0][down]
    gy = o[1] + t_ground[down] * rays[..., 1][down]
    ground = np.full((height, width), -1, dtype=np.int8)
    ground[down] = world.ground(gx, gy, y_built_max)
    label[down] = np.where(ground[down] == GROUND_TERRAIN, NATURE, FLAT)
    normal[down] = (0.0, 0.0, 1.0)

    for i, (prim, rect) in enumerate(zip(prims,
                                         _pixel_rects(K, pose, prims, width, height, shrink),
                                         strict=True)):
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        d = rays[v0:v1, u0:u1]
        if prim.kind == "box":
            t, n = _intersect_box(o, d, prim.lo, prim.hi)
        else:
            t, n = _intersect_ellipsoid(o, d, prim.lo, prim.hi)
        sub = depth[v0:v1, u0:u1]
        closer = t < sub
        if not closer.any():
            continue
        sub[closer] = t[closer]
        label[v0:v1, u0:u1][closer] = prim.label
        prim_idx[v0:v1, u0:u1][closer] = i
        ground[v0:v1, u0:u1][closer] = -1
        normal[v0:v1, u0:u1][closer] = n[closer]

    point = o + np.where(np.isfinite(depth), depth, 0.0)[..., None] * rays
    return Hits(depth, label, prim_idx, ground, normal, point)


def shadowed(points: np.ndarray, prims: list[Primitive], sun_dir: np.ndarray) -> np.ndarray:
    """For points on the road plane (N, 3), True where a primitive blocks the way to the sun.

    Each primitive is tested only against the points inside its shadow's footprint on the plane
    (its bounding-box corners pushed along the sun direction down to Z = 0), as ``cast`` does
    with pixel rectangles. Appearance only: shadows never change a label or a depth.
    """
    out = np.zeros(points.shape[0], bool)
    if points.size == 0 or sun_dir[2] <= 0.02:
        return out
    sun = np.asarray(sun_dir, dtype=np.float64)
    for prim in prims:
        lo, hi = prim.bounds()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        foot = corners[:, :2] - (corners[:, 2:3] / sun[2]) * sun[None, :2]
        fx0, fy0 = np.minimum(foot.min(0), corners[:, :2].min(0))
        fx1, fy1 = np.maximum(foot.max(0), corners[:, :2].max(0))
        m = ((points[:, 0] >= fx0) & (points[:, 0] <= fx1) & (points[:, 1] >= fy0)
             & (points[:, 1] <= fy1) & ~out)
        if not m.any():
            continue
        o = points[m]
        if prim.kind == "box":
            safe = np.where(np.abs(sun) < 1e-12, 1e-12, sun)
            t1, t2 = (prim.lo - o) / safe, (prim.hi - o) / safe
            tmin, tmax = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
            hit = (tmax >= np.maximum(tmin, 0.0)) & (tmax > NEAR_CLIP)
        else:
            oc = (o - prim.lo) / prim.hi
            dd = sun / prim.hi
            a = float(dd @ dd)
            b = 2.0 * (oc @ dd)
            c = (oc * oc).sum(-1) - 1.0
            disc = b * b - 4.0 * a * c
            far = (-b + np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
            hit = (disc >= 0) & (far > NEAR_CLIP)
        idx = np.flatnonzero(m)
        out[idx[hit]] = True
    return out
