# SPDX-License-Identifier: Apache-2.0
"""Domain randomisation: everything the renderer can vary, controlled by one ``Randomisation``
profile.

Why: a model trained on one look of one camera learns that look. On real KITTI frames the shipped
model reads textured autumn trees as façades, dark glossy cars as people, white façades as sky and
shadowed road as cars (docs/datasets.md). Each of those is a cue our default scenes never vary, so
here they do: materials and colours (white/glass façades, plaster, autumn foliage with fine leaf
texture, glossy car paint, clothing of any colour), light (sun direction and colour, blown-out
skies, cast shadows on the road), weather (haze), the camera (focal length, radial distortion,
height, pitch, roll, non-square pixels), the sensor (exposure, white balance, noise, blur, JPEG,
vignetting), road
markings, roadside clutter (parked cars, pedestrians, poles, street trees in front of buildings)
and what is not the scene (an ego-vehicle hood and black image borders, labelled ``IGNORE_INDEX``
with no depth, as Cityscapes labels the ego vehicle: labelId 1, ignored in evaluation).

Everything comes from its own random stream (``default_rng([seed, RANDOMISE_STREAM])``) so a frame
rendered without randomisation is exactly the frame it always was, and geometry stays exact:
labels and depth are still the nearest ray hit; only the ignored overlays replace them.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..model.config import IGNORE_INDEX
from . import world as W
from .camera import CameraPose
from .shading import Lighting
from .world import Primitive, World, car_parts, person_parts

#: Sub-stream of a frame's seed that drives all randomisation (render.py uses 2, 3 and 4).
RANDOMISE_STREAM = 7


@dataclass(frozen=True)
class Randomisation:
    """How far each aspect of a frame is randomised (probabilities and ranges).

    ``strength`` scales every probability (0 = nothing happens; 1 = the profile as written)."""

    strength: float = 1.0
    # camera
    hfov_deg: tuple[float, float] = (45.0, 100.0)
    height_m: tuple[float, float] = (1.2, 2.0)
    pitch_sigma: float = 0.04
    roll_sigma: float = 0.025
    yaw_sigma: float = 0.06
    distortion_prob: float = 0.25
    distortion_k1: tuple[float, float] = (0.02, 0.15)
    #: Non-square pixels (fx / fy): what the model sees of a wide camera stretched to its aspect.
    stretch_prob: float = 0.4
    pixel_aspect: tuple[float, float] = (0.55, 1.0)
    # materials and colours
    restyle_prob: float = 0.8
    # light and weather
    blown_sky_prob: float = 0.3
    overcast_prob: float = 0.35
    shadow_prob: float = 0.7
    exposure: tuple[float, float] = (0.55, 1.7)
    haze_m: tuple[float, float] = (40.0, 800.0)
    # roadside clutter (per frame, expected counts)
    parked_cars: float = 4.0
    pedestrians: float = 2.5
    poles: float = 3.0
    street_trees: float = 4.0
    crosswalk_prob: float = 0.2
    # not the scene: ignored overlays
    hood_prob: float = 0.25
    border_prob: float = 0.15
    # sensor
    noise_sigma: tuple[float, float] = (0.0, 0.04)
    blur_prob: float = 0.35
    jpeg_prob: float = 0.5
    vignette_prob: float = 0.4

    def p(self, prob: float) -> float:
        return min(1.0, max(0.0, prob * self.strength))


#: The named profiles (``render_frame(..., randomise=NAME)``, ``--randomise NAME`` of the tools).
PROFILES: dict[str, Randomisation | None] = {"off": None, "domain": Randomisation()}


def resolve(randomise: str | float | Randomisation | None) -> Randomisation | None:
    """A profile from its name, a strength (0 = off), an instance or None (off)."""
    if randomise is None or isinstance(randomise, Randomisation):
        return randomise
    if isinstance(randomise, str):
        if randomise not in PROFILES:
            raise ValueError(f"unknown randomisation profile {randomise!r}; "
                             f"known: {', '.join(PROFILES)}")
        return PROFILES[randomise]
    strength = float(randomise)
    if not (math.isfinite(strength) and strength >= 0.0):
        raise ValueError(f"randomisation strength must be a finite number >= 0, got {randomise!r}")
    return None if strength == 0.0 else Randomisation(strength=strength)


# ----- camera -----

@dataclass(frozen=True)
class Lens:
    hfov_deg: float
    k1: float
    pixel_aspect: float = 1.0


def camera(rng: np.random.Generator, r: Randomisation,
           pose: CameraPose) -> tuple[CameraPose, Lens]:
    """Vary the mounting (height, pitch, roll, yaw about the base pose) and the lens."""
    pose = replace(pose, height=float(rng.uniform(*r.height_m)),
                   yaw=pose.yaw + float(rng.normal(0.0, r.yaw_sigma * r.strength)),
                   pitch=float(rng.normal(0.0, r.pitch_sigma * r.strength)),
                   roll=float(rng.normal(0.0, r.roll_sigma * r.strength)))
    hfov = float(rng.uniform(*r.hfov_deg))
    k1 = float(rng.uniform(*r.distortion_k1)) if rng.random() < r.p(r.distortion_prob) else 0.0
    aspect = float(rng.uniform(*r.pixel_aspect)) if rng.random() < r.p(r.stretch_prob) else 1.0
    return pose, Lens(hfov, k1, aspect)


# ----- materials and colours -----

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def facade_style(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A façade colour and material: white and near-white render (the colour of an overcast sky),
    glass curtain walls, brick, or any pale paint."""
    k = rng.random()
    if k < 0.3:
        return _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.08), rng.uniform(0.85, 0.98)), \
            W.MAT_PLASTER
    if k < 0.42:
        return _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.2), rng.uniform(0.2, 0.6)), \
            W.MAT_CURTAIN_WALL
    if k < 0.57:
        return _hsv(rng.uniform(0.0, 0.07), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6)), \
            W.MAT_PLASTER
    return _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.45), rng.uniform(0.45, 0.95)), \
        (W.MAT_PLASTER if rng.random() < 0.6 else W.MAT_FACADE)


def foliage_color(rng: np.random.Generator) -> np.ndarray:
    """Leaves of any season: green, yellow-green, autumn yellow, orange, red-brown, dry olive."""
    k = rng.random()
    if k < 0.45:
        return _hsv(rng.uniform(0.2, 0.38), rng.uniform(0.35, 0.8), rng.uniform(0.2, 0.55))
    if k < 0.8:
        return _hsv(rng.uniform(0.03, 0.16), rng.uniform(0.45, 0.85), rng.uniform(0.3, 0.75))
    return _hsv(rng.uniform(0.1, 0.22), rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5))


def car_color(rng: np.random.Generator) -> np.ndarray:
    """Car paint: a third dark (black, navy, dark grey), a third white/silver, a third any hue."""
    k = rng.random()
    if k < 0.35:
        return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.02, 0.18))
    if k < 0.65:
        return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.06), rng.uniform(0.55, 0.97))
    return _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.85))


def cloth_color(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.9), rng.uniform(0.05, 0.95))


def restyle(prims: list[Primitive], rng: np.random.Generator, r: Randomisation) -> list[Primitive]:
    """New colours and materials for the primitives (geometry and labels untouched). Parts of one
    object share their original colour, so they get the same new one (a car stays one colour)."""
    remap: dict[tuple, tuple[np.ndarray, int]] = {}
    out = []
    for prim in prims:
        key = (prim.label, prim.material, tuple(np.round(prim.color, 6)))
        if key not in remap:
            remap[key] = _new_style(prim, rng, r)
        color, material = remap[key]
        out.append(Primitive(prim.kind, prim.lo, prim.hi, prim.label, color, material))
    return out


def _new_style(prim: Primitive, rng: np.random.Generator,
               r: Randomisation) -> tuple[np.ndarray, int]:
    if rng.random() >= r.p(r.restyle_prob):
        return prim.color, prim.material
    if prim.label == W.CONSTRUCTION and prim.material == W.MAT_FACADE:
        return facade_style(rng)
    if prim.label == W.NATURE and prim.material == W.MAT_FOLIAGE:
        return foliage_color(rng), W.MAT_LEAVES
    if (prim.label == W.VEHICLE and prim.material == W.MAT_PLAIN
            and prim.color.max() > 0.07):  # body, not tyres
        return car_color(rng), W.MAT_CAR_PAINT
    if prim.label == W.HUMAN and prim.material == W.MAT_PLAIN:
        return cloth_color(rng), W.MAT_PLAIN
    return np.clip(prim.color * rng.uniform(0.7, 1.3, 3), 0.01, 0.99), prim.material


def restyle_world(world: World, rng: np.random.Generator, r: Randomisation, y: float) -> None:
    """Ground colours (asphalt from dark to concrete, sidewalks, grass from green to dry brown,
    paint) and extra road markings near ``y``. Changes appearance only: regions stay regions."""
    if rng.random() < r.p(r.restyle_prob):
        world.road_color = np.full(3, rng.uniform(0.15, 0.55)) * rng.uniform(0.93, 1.07, 3)
        world.sidewalk_color = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.25),
                                    rng.uniform(0.3, 0.8))
        world.terrain_color = _hsv(rng.uniform(0.08, 0.3), rng.uniform(0.3, 0.7),
                                   rng.uniform(0.2, 0.55))
    if rng.random() < r.p(r.crosswalk_prob):
        world.crosswalks = (y + float(rng.uniform(8.0, 40.0)),)
    if rng.random() < r.p(r.crosswalk_prob):
        world.stop_lines = (y + float(rng.uniform(6.0, 30.0)),)


# ----- clutter -----

def _street_tree(rng: np.random.Generator, x: float, y: float) -> list[Primitive]:
    """A tree of a few overlapping leafy ellipsoids on a trunk."""
    trunk_h = float(rng.uniform(2.2, 4.0))
    r0 = float(rng.uniform(1.2, 3.0))
    color = foliage_color(rng)
    parts = [W._box(x - 0.13, x + 0.13, y - 0.13, y + 0.13, 0.0, trunk_h + r0 * 0.6, W.NATURE,
                    np.array([0.25, 0.2, 0.15]) * rng.uniform(0.6, 1.4), W.MAT_BARK)]
    for _ in range(int(rng.integers(2, 5))):
        r = r0 * float(rng.uniform(0.55, 0.9))
        parts.append(W._ellipsoid(x + float(rng.normal(0, 0.4 * r0)),
                                  y + float(rng.normal(0, 0.4 * r0)),
                                  trunk_h + r0 + float(rng.normal(0, 0.3 * r0)),
                                  r, r, r * float(rng.uniform(0.8, 1.3)),
                                  W.NATURE, color * rng.uniform(0.85, 1.15, 3), W.MAT_LEAVES))
    return parts


def clutter(world: World, pose: CameraPose, rng: np.random.Generator,
            r: Randomisation) -> list[Primitive]:
    """Extra roadside objects ahead of ``pose``: parked cars (on the kerb where the road has one
    lane, so the ego lane stays clear), pedestrians, poles with signs, street trees."""
    road = world.road
    hw, sw = road.half_width, road.sidewalk_width
    out: list[Primitive] = []

    def at(lateral: float, y: float, parts: list[Primitive]) -> None:
        out.extend(p.shifted(float(road.center(y)) + lateral, y) for p in parts)

    for _ in range(int(rng.poisson(r.parked_cars * r.strength))):
        side = -1 if rng.random() < 0.5 else 1
        # keep the ego lane free: park half on the sidewalk
        kerb = side > 0 and road.lanes_per_direction == 1
        lateral = side * (hw + 0.6 if kerb else hw - float(rng.uniform(1.0, 1.3)))
        at(lateral, pose.y + float(rng.uniform(4.0, 70.0)), car_parts(rng))
    for _ in range(int(rng.poisson(r.pedestrians * r.strength))):
        side = -1 if rng.random() < 0.5 else 1
        at(side * (hw + float(rng.uniform(0.4, max(sw - 0.3, 0.5)))),
           pose.y + float(rng.uniform(3.0, 50.0)), person_parts(rng))
    metal = np.array([0.45, 0.45, 0.47]) * rng.uniform(0.5, 1.5)
    for _ in range(int(rng.poisson(r.poles * r.strength))):
        side = -1 if rng.random() < 0.5 else 1
        h = float(rng.uniform(2.0, 5.0))
        parts = [W._box(-0.06, 0.06, -0.06, 0.06, 0.0, h, W.OBJECT, np.clip(metal, 0, 1))]
        if rng.random() < 0.6:
            s = float(rng.uniform(0.25, 0.5))
            parts.append(W._box(-s, s, -0.06, -0.03, h - 2 * s, h, W.OBJECT, cloth_color(rng)))
        at(side * (hw + float(rng.uniform(0.3, 0.8))), pose.y + float(rng.uniform(3.0, 60.0)),
           parts)
    for _ in range(int(rng.poisson(r.street_trees * r.strength))):
        side = -1 if rng.random() < 0.5 else 1
        lateral = side * (hw + float(rng.uniform(0.6, max(sw, 0.8))))
        y = pose.y + float(rng.uniform(3.0, 70.0))
        out.extend(p.shifted(float(road.center(y)) + lateral, 0.0)
                   for p in _street_tree(rng, 0.0, y))
    return out


# ----- light and weather -----

def lighting(rng: np.random.Generator, r: Randomisation) -> Lighting:
    """Sun anywhere above the horizon with a warm-to-cool colour; clear, hazy, overcast or
    blown-out white skies; exposure and white balance well beyond the default scenes'."""
    az = rng.uniform(-math.pi, math.pi)
    el = rng.uniform(0.1, 1.3)
    sun = np.array([math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)])
    overcast = rng.random() < r.p(r.overcast_prob)
    zenith = _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.2, 0.75), rng.uniform(0.6, 0.95))
    horizon = _hsv(rng.uniform(0.52, 0.62), rng.uniform(0.02, 0.3), rng.uniform(0.75, 1.0))
    if overcast:
        zenith = np.full(3, rng.uniform(0.5, 0.9))
        horizon = np.clip(zenith + rng.uniform(0.0, 0.15), 0, 1)
    if rng.random() < r.p(r.blown_sky_prob):  # a sky the sensor saturates: near-white everywhere
        zenith = np.full(3, rng.uniform(0.85, 1.0)) * rng.uniform(0.95, 1.0, 3)
        horizon = np.full(3, rng.uniform(0.9, 1.0))
    warmth = rng.uniform(-0.15, 0.3) if el > 0.3 else rng.uniform(0.2, 0.5)
    sun_color = np.array([1.0 + 0.5 * warmth, 1.0, 1.0 - warmth])
    return Lighting(
        sun_dir=sun,
        sun_strength=float(rng.uniform(0.05, 0.35) if overcast else rng.uniform(0.5, 1.2)),
        ambient=float(rng.uniform(0.25, 0.6)),
        zenith=np.clip(zenith, 0, 1), horizon=np.clip(horizon, 0, 1),
        cloud_cover=float(0.9 if overcast else rng.uniform(0.0, 0.8)),
        haze_dist=float(math.exp(rng.uniform(math.log(r.haze_m[0]), math.log(r.haze_m[1])))),
        exposure=float(math.exp(rng.uniform(math.log(r.exposure[0]), math.log(r.exposure[1])))),
        tint=1.0 + rng.uniform(-0.15, 0.15, 3),
        noise_sigma=float(rng.uniform(*r.noise_sigma)),
        sun_color=sun_color,
        shadows=bool(rng.random() < r.p(r.shadow_prob)),
    )


# ----- what is not the scene -----

def hood_mask(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Bottom-of-image ego-vehicle bonnet: a flat arc, 8-22 % of the height at its top."""
    top = rng.uniform(0.08, 0.22) * height
    bulge = rng.uniform(0.3, 0.8)
    u = (np.arange(width) - (width - 1) / 2.0) / (width / 2.0)
    edge = height - top * (1.0 - bulge * u * u)
    return np.arange(height)[:, None] >= edge[None, :]


def overlays(rgb: np.ndarray, labels: np.ndarray, depth: np.ndarray, rng: np.random.Generator,
             r: Randomisation) -> None:
    """In place: an ego hood (glossy paint mirroring the scene above it) and black borders, both
    labelled ``IGNORE_INDEX`` with NaN depth (no measurement), as Cityscapes treats them."""
    h, w = labels.shape
    if rng.random() < r.p(r.hood_prob):
        m = hood_mask(w, h, rng)
        paint = car_color(rng) * 255.0
        mirror = cv2.GaussianBlur(rgb[::-1].astype(np.float32), (0, 0), max(w / 100.0, 1.0))
        shade = np.linspace(0.6, 1.0, h, dtype=np.float32)[:, None, None]
        hood = 0.55 * paint[None, None, :] * shade + 0.35 * mirror
        rgb[m] = np.clip(hood[m], 0, 255).astype(np.uint8)
        labels[m] = IGNORE_INDEX
        depth[m] = np.nan
    if rng.random() < r.p(r.border_prob):
        m = np.zeros((h, w), bool)
        for side in range(4):
            if rng.random() < 0.5:
                k = int(rng.integers(1, max(2, (w if side < 2 else h) // 25)))
                if side == 0:
                    m[:, :k] = True
                elif side == 1:
                    m[:, w - k:] = True
                elif side == 2:
                    m[h - k:] = True
                else:
                    m[:k] = True
        rgb[m] = rng.integers(0, 20)
        labels[m] = IGNORE_INDEX
        depth[m] = np.nan


# ----- sensor -----

def sensor(rgb: np.ndarray, rng: np.random.Generator, r: Randomisation) -> np.ndarray:
    """Vignetting, optics/motion blur and JPEG compression of a uint8 image (new array)."""
    img = rgb.astype(np.float32)
    h, w = img.shape[:2]
    if rng.random() < r.p(r.vignette_prob):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        rr = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        img *= (1.0 - rng.uniform(0.1, 0.35) * rr / 2.0)[..., None]
    if rng.random() < r.p(r.blur_prob):
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.3)))
        else:  # horizontal motion blur
            k = int(rng.integers(2, 5))
            img = cv2.blur(img, (k, 1))
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < r.p(r.jpeg_prob):
        out = jpeg_roundtrip(out, int(rng.integers(30, 95)))
    return out


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """A uint8 RGB image after JPEG compression at ``quality`` (1-100): blocking and ringing."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {rgb.shape} {rgb.dtype} image")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


__all__ = ["PROFILES", "RANDOMISE_STREAM", "Lens", "Randomisation", "camera", "clutter",
           "jpeg_roundtrip", "lighting", "overlays", "resolve", "restyle", "restyle_world",
           "sensor"]
