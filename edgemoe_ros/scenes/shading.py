# SPDX-License-Identifier: Apache-2.0
"""Appearance of the synthetic scenes: materials, procedural textures, sun lighting, sky and haze.

Only the look is random here; geometry (and so labels and depth) is fixed by raycast.py. Variety
in colour, light and texture is what keeps a model trained on these frames from keying on one
colour per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from . import world as W
from .raycast import Hits, shadowed
from .world import Primitive

_NOISE_SIZE = 256


def _make_noise() -> np.ndarray:
    rng = np.random.default_rng(12345)
    base = rng.random((_NOISE_SIZE, _NOISE_SIZE)).astype(np.float32)
    pad = 8  # blur a wrapped copy so the table tiles without seams
    smooth = cv2.GaussianBlur(np.pad(base, pad, mode="wrap"), (0, 0), 1.2)[pad:-pad, pad:-pad]
    smooth -= smooth.min()
    return smooth / smooth.max()


#: A tileable smooth value-noise table shared by all textures (fixed, so textures never change by
#: run).
NOISE = _make_noise()


def noise(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Value noise in [0, 1] at surface coordinates (a, b) metres, ``scale`` texels per metre."""
    ia = np.floor(a * scale).astype(np.int64) & (_NOISE_SIZE - 1)
    ib = np.floor(b * scale).astype(np.int64) & (_NOISE_SIZE - 1)
    return NOISE[ia, ib]


def fbm(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Three octaves of ``noise``: coarse blotches plus fine grain, mean about 0.5."""
    return (0.5 * noise(a, b, scale) + 0.3 * noise(b + 17.3, a, scale * 4.1)
            + 0.2 * noise(a - 5.1, b, scale * 15.7))


@dataclass(frozen=True)
class Lighting:
    """Sun, sky and camera exposure of a scene."""

    sun_dir: np.ndarray        # unit vector towards the sun (world)
    sun_strength: float        # 0 = overcast, 1 = clear
    ambient: float
    zenith: np.ndarray
    horizon: np.ndarray
    cloud_cover: float
    haze_dist: float           # metres at which haze reaches 63 %
    exposure: float
    tint: np.ndarray           # white-balance multiplier
    noise_sigma: float
    #: Colour of direct sunlight (None = white, the default scenes'; randomise.py varies it).
    sun_color: np.ndarray | None = None
    #: Cast shadows of objects on the road plane (off in the default scenes; randomise.py turns it
    #: on).
    shadows: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator) -> Lighting:
        az = rng.uniform(-math.pi, math.pi)
        el = rng.uniform(0.15, 1.2)
        sun = np.array([math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)])
        overcast = rng.random() < 0.3
        zenith = np.array([0.25, 0.45, 0.85]) + rng.uniform(-0.1, 0.1, 3)
        horizon = np.array([0.75, 0.82, 0.92]) + rng.uniform(-0.08, 0.08, 3)
        if overcast:
            zenith = np.full(3, rng.uniform(0.55, 0.75))
            horizon = zenith + 0.1
        if rng.random() < 0.15:  # low sun, warm light
            horizon = np.array([0.95, 0.7, 0.45]) + rng.uniform(-0.05, 0.05, 3)
            el = 0.1
            sun[2] = math.sin(el)
            sun /= np.linalg.norm(sun)
        return cls(
            sun_dir=sun,
            sun_strength=float(rng.uniform(0.1, 0.35) if overcast else rng.uniform(0.55, 1.0)),
            ambient=float(rng.uniform(0.35, 0.55)),
            zenith=np.clip(zenith, 0, 1), horizon=np.clip(horizon, 0, 1),
            cloud_cover=float(rng.uniform(0.0, 0.7) if not overcast else 0.9),
            haze_dist=float(rng.uniform(120.0, 600.0)),
            exposure=float(rng.uniform(0.8, 1.25)),
            tint=1.0 + rng.uniform(-0.06, 0.06, 3),
            noise_sigma=float(rng.uniform(0.003, 0.02)),
        )


def sky_color(rays: np.ndarray, light: Lighting) -> np.ndarray:
    """Sky colour per ray: horizon-to-zenith gradient, sun glow, and clouds fixed to the sky
    dome."""
    d = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    el = np.clip(d[..., 2], 0.0, 1.0)
    g = np.clip(el / 0.6, 0, 1)[..., None] ** 0.6
    col = light.horizon * (1 - g) + light.zenith * g
    cos_sun = np.clip(d @ light.sun_dir, 0, 1)[..., None]
    col = col + light.sun_strength * (0.25 * cos_sun ** 8
                                      + 1.5 * cos_sun ** 400) * np.array([1.0, 0.95, 0.8])
    if light.cloud_cover > 0:
        z = np.maximum(d[..., 2], 0.02)
        ca, cb = d[..., 0] / z, d[..., 1] / z
        c = fbm(ca, cb, 3.0)
        cover = np.clip((c - (1.0 - light.cloud_cover) * 0.7 - 0.15) * 4.0, 0, 1)
        cover *= np.clip(d[..., 2] / 0.05, 0, 1)
        col = col * (1 - cover[..., None]) + (0.8 + 0.2 * c[..., None]) * cover[..., None]
    return col


_GROUND_COLORS = {W.GROUND_CURB: np.array([0.7, 0.7, 0.68])}


def _ground_albedo(world: W.World, region: np.ndarray, p: np.ndarray) -> np.ndarray:
    x, y = p[:, 0], p[:, 1]
    out = np.empty((region.size, 3))
    fine = fbm(x, y, 6.0)[:, None]
    colors = {
        W.GROUND_ROAD: world.road_color, W.GROUND_SIDEWALK: world.sidewalk_color,
        W.GROUND_CURB: _GROUND_COLORS[W.GROUND_CURB], W.GROUND_PAINT: world.paint_color,
        W.GROUND_TERRAIN: world.terrain_color, W.GROUND_PAVEMENT: world.sidewalk_color * 0.9,
    }
    for code, base in colors.items():
        m = region == code
        if not m.any():
            continue
        if code == W.GROUND_TERRAIN:
            grass = fbm(x[m], y[m], 1.5)[:, None]
            out[m] = base * (0.6 + 0.8 * grass) * (0.85 + 0.3 * fine[m])
        elif code in (W.GROUND_SIDEWALK, W.GROUND_PAVEMENT):
            tile = ((np.mod(x[m], 0.6) < 0.03) | (np.mod(y[m], 0.6) < 0.03))[:, None]
            out[m] = base * (0.9 + 0.2 * fine[m]) * np.where(tile, 0.8, 1.0)
        else:
            patch = fbm(x[m] * 0.2, y[m] * 0.2, 1.0)[:, None]
            out[m] = base * (0.8 + 0.25 * fine[m] + 0.2 * patch)
    return out


def _prim_albedo(prims: list[Primitive], idx: np.ndarray, p: np.ndarray, n: np.ndarray,
                 light: Lighting) -> np.ndarray:
    colors = np.array([pr.color for pr in prims]).reshape(-1, 3)
    materials = np.array([pr.material for pr in prims], dtype=np.int64)
    out = colors[idx].copy()
    mat = materials[idx]
    horiz_x = np.abs(n[:, 0]) > 0.5  # face looking along X: its horizontal coordinate is Y
    u = np.where(horiz_x, p[:, 1], p[:, 0])
    z = p[:, 2]
    grain = fbm(u, z, 5.0)
    out *= (0.88 + 0.24 * grain)[:, None]
    m = mat == W.MAT_PLASTER
    if m.any():  # rough render: fine grain and broad stains, then windows like any façade
        out[m] *= (0.72 + 0.5 * noise(u[m] + 7.7, z[m], 28.0)
                   * (0.6 + 0.4 * fbm(u[m], z[m], 0.4)))[:, None]
    m = (mat == W.MAT_FACADE) | (mat == W.MAT_PLASTER)
    if m.any():
        spacing = 2.0 + (idx[m] * 0.377) % 1.6
        floor_h = 2.8 + (idx[m] * 0.613) % 0.8
        fu = np.mod(u[m], spacing) / spacing
        fz = np.mod(z[m], floor_h) / floor_h
        window = ((fu > 0.22) & (fu < 0.78) & (fz > 0.3) & (fz < 0.8) & (z[m] > 1.0)
                  & (np.abs(n[m, 2]) < 0.5))
        glass = 0.12 + 0.25 * light.horizon * fbm(u[m], z[m], 0.7)[:, None]
        out[m] = np.where(window[:, None], glass, out[m])
    m = mat == W.MAT_FOLIAGE
    if m.any():
        leaf = fbm(p[m, 0] + p[m, 2], p[m, 1] - p[m, 2], 4.0)[:, None]
        out[m] *= 0.5 + 1.0 * leaf
    m = mat == W.MAT_BARK
    if m.any():
        out[m] *= 0.7 + 0.6 * noise(u[m], z[m], 12.0)[:, None]
    m = mat == W.MAT_GLASS
    if m.any():
        out[m] += 0.25 * light.horizon * np.clip(n[m, 2:3], 0, 1)
    m = mat == W.MAT_CAR_PAINT
    if m.any():  # clear coat: a blurred mirror of the sky, strongest on surfaces facing up
        streak = fbm(u[m] * 0.5, z[m] * 3.0, 2.0)[:, None]
        refl = (0.12 + 0.4 * np.clip(n[m, 2:3], 0, 1)) * light.horizon * (0.5 + 0.9 * streak)
        out[m] = 0.8 * out[m] + refl
    m = mat == W.MAT_LEAVES
    if m.any():
        pa, pb = p[m, 0] + p[m, 2], p[m, 1] - p[m, 2]
        leaf = 0.6 * noise(pa, pb, 17.0) + 0.4 * fbm(pa + 3.1, pb, 2.5)
        hue = np.stack([noise(pa + 11.0, pb, 6.0), noise(pa, pb + 23.0, 6.0),
                        noise(pa + 5.0, pb + 5.0, 6.0)], -1)
        gap = noise(pa - 9.0, pb + 2.0, 11.0) < 0.22  # holes in the crown: deep shadow
        out[m] *= (0.2 + 1.4 * leaf)[:, None] * (0.7 + 0.6 * hue)
        out[m] *= np.where(gap, 0.3, 1.0)[:, None]
    m = mat == W.MAT_CURTAIN_WALL
    if m.any():  # glass panes between mullions (the primitive's colour), mirroring the sky
        mu = np.mod(u[m], 1.5) < 0.12
        mz = np.mod(z[m], 3.5) < 0.25
        sky = (light.horizon * (1 - np.clip(z[m] / 40.0, 0, 1))[:, None]
               + light.zenith * np.clip(z[m] / 40.0, 0, 1)[:, None])
        pane = 0.55 * sky * (0.7 + 0.6 * fbm(u[m] * 0.3, z[m] * 0.3, 1.0))[:, None]
        out[m] = np.where((mu | mz)[:, None], out[m], pane)
    return out


def shade(world: W.World, hits: Hits, prims: list[Primitive], rays: np.ndarray, light: Lighting,
          rng: np.random.Generator) -> np.ndarray:
    """Colour every pixel; returns uint8 RGB (H, W, 3)."""
    h, w = hits.depth.shape
    img = np.empty((h, w, 3))
    sky = ~np.isfinite(hits.depth)
    img[sky] = sky_color(rays[sky], light)

    surf = ~sky
    p = hits.point[surf]
    n = hits.normal[surf].astype(np.float64)
    albedo = np.empty((p.shape[0], 3))
    g = hits.ground[surf] >= 0
    if g.any():
        albedo[g] = _ground_albedo(world, hits.ground[surf][g], p[g])
    if (~g).any():
        albedo[~g] = _prim_albedo(prims, hits.prim[surf][~g], p[~g], n[~g], light)
    lambert = np.clip(n @ light.sun_dir, 0.0, 1.0)
    if light.shadows and g.any():
        gi = np.flatnonzero(g)
        lambert[gi[shadowed(p[g], prims, light.sun_dir)]] = 0.0
    sky_light = 0.75 + 0.25 * n[:, 2]  # faces looking up see more sky
    if light.sun_color is None:
        shading = light.ambient * sky_light + light.sun_strength * lambert
        col = albedo * shading[:, None]
    else:
        col = albedo * (light.ambient * sky_light[:, None]
                        + light.sun_strength * lambert[:, None] * light.sun_color)
    haze = 1.0 - np.exp(-hits.depth[surf] / light.haze_dist)
    col = col * (1 - haze[:, None]) + light.horizon * haze[:, None]
    img[surf] = col

    img = img * light.exposure * light.tint
    img += rng.normal(0.0, light.noise_sigma, img.shape)
    img = np.clip(img, 0.0, 1.0) ** (1 / 1.1)
    return (img * 255.0 + 0.5).astype(np.uint8)
