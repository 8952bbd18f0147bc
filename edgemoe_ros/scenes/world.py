# SPDX-License-Identifier: Apache-2.0
"""Procedural street layout: a road along world +Y, sidewalks, and objects made of boxes and
ellipsoids.

The road is cut into chunks of ``CHUNK_LEN`` metres; each chunk's contents come from its own
``(seed, chunk)`` random stream, so a world is infinite, lazily built, and any stretch of it is
the same no matter in which order or how often it is asked for. That is what lets a drive
sequence keep every object in place from frame to frame while single frames stay cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..model.config import SEMSEG_CLASSES

#: Class ids (SPEC §2 order), looked up by name so the two never disagree.
FLAT, HUMAN, VEHICLE, CONSTRUCTION, OBJECT, NATURE, SKY = (
    SEMSEG_CLASSES.index(n) for n in ("flat", "human", "vehicle", "construction", "object",
                                      "nature", "sky"))

#: Lane (counted from the centre line, +Y direction) the camera car drives in.
EGO_LANE = 0

#: Length of one independently generated stretch of road, metres.
CHUNK_LEN = 24.0

# Surface materials (decide the texture in shading.py).
MAT_PLAIN, MAT_FACADE, MAT_FOLIAGE, MAT_BARK, MAT_GLASS, MAT_SKIN = range(6)
# Materials only the domain randomisation (randomise.py) uses: glossy car paint that mirrors the
# sky, leaves with high-frequency texture and gaps, rough plaster façades, glass curtain walls.
MAT_CAR_PAINT, MAT_LEAVES, MAT_PLASTER, MAT_CURTAIN_WALL = range(6, 10)

# Ground regions (flat road / sidewalk / curb / lane paint, or nature terrain).
GROUND_ROAD, GROUND_SIDEWALK, GROUND_CURB, GROUND_PAINT, GROUND_TERRAIN, GROUND_PAVEMENT = range(6)


@dataclass
class Primitive:
    """An axis-aligned box (``kind="box"``: ``lo``/``hi`` corners) or an ellipsoid
    (``kind="ellipsoid"``: ``lo`` = centre, ``hi`` = radii) with its class label, base colour (RGB
    0..1) and material."""

    kind: str
    lo: np.ndarray
    hi: np.ndarray
    label: int
    color: np.ndarray
    material: int = MAT_PLAIN

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "box":
            return self.lo, self.hi
        return self.lo - self.hi, self.lo + self.hi

    def shifted(self, dx: float, dy: float) -> Primitive:
        off = np.array([dx, dy, 0.0])
        lo = self.lo + off
        hi = self.hi + off if self.kind == "box" else self.hi
        return Primitive(self.kind, lo, hi, self.label, self.color, self.material)


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, label: int,
         color: np.ndarray, material: int = MAT_PLAIN) -> Primitive:
    return Primitive("box", np.array([min(x0, x1), min(y0, y1), z0]),
                     np.array([max(x0, x1), max(y0, y1), z1]), label, np.asarray(color, float),
                     material)


def _ellipsoid(cx: float, cy: float, cz: float, rx: float, ry: float, rz: float, label: int,
               color: np.ndarray, material: int = MAT_PLAIN) -> Primitive:
    return Primitive("ellipsoid", np.array([cx, cy, cz]), np.array([rx, ry, rz]), label,
                     np.asarray(color, float), material)


@dataclass
class Agent:
    """Something that moves at constant speed along the road: a driving car or a walking person.
    Its parts are built at lateral offset 0 / position 0 and placed at ``lateral``, ``y0 + v
    t``."""

    parts: list[Primitive]
    lateral: float
    y0: float
    speed: float


@dataclass
class ChunkContent:
    static: list[Primitive] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    #: Per side (left, right): True if the ground beyond the sidewalk is pavement (built-up block).
    built_up: tuple[bool, bool] = (False, False)


def _jitter_color(rng: np.random.Generator, base: tuple[float, float, float],
                  amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(base) + rng.uniform(-amount, amount, 3), 0.02, 0.98)


CAR_COLORS = ((0.75, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.1, 0.1, 0.1),
              (0.5, 0.5, 0.55), (0.9, 0.75, 0.2), (0.2, 0.45, 0.25), (0.95, 0.95, 0.97))
FACADE_COLORS = ((0.7, 0.6, 0.5), (0.55, 0.5, 0.45), (0.8, 0.78, 0.7), (0.6, 0.35, 0.3),
                 (0.45, 0.45, 0.5), (0.85, 0.8, 0.6), (0.5, 0.55, 0.6))
CLOTH_COLORS = ((0.2, 0.2, 0.3), (0.6, 0.1, 0.1), (0.1, 0.3, 0.6), (0.8, 0.8, 0.7),
                (0.15, 0.15, 0.15), (0.4, 0.5, 0.2), (0.7, 0.5, 0.3))


def car_parts(rng: np.random.Generator, heading: float = 1.0) -> list[Primitive]:
    """A car (or van/bus-ish) centred at lateral 0, y 0: body, cabin with dark windows, wheels."""
    kind = rng.random()
    width = rng.uniform(1.7, 2.0)
    length = rng.uniform(3.8, 4.9) if kind < 0.8 else rng.uniform(5.5, 9.0)
    body_h = rng.uniform(0.9, 1.1) if kind < 0.8 else rng.uniform(2.2, 2.9)
    color = _jitter_color(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 0.05)
    hw, hl = width / 2, length / 2
    parts = [_box(-hw, hw, -hl, hl, 0.3, 0.3 + body_h, VEHICLE, color)]
    if kind < 0.8:
        cab_l = length * rng.uniform(0.45, 0.6)
        shift = heading * rng.uniform(-0.4, 0.1)
        parts.append(_box(-hw + 0.08, hw - 0.08, -cab_l / 2 + shift, cab_l / 2 + shift,
                          0.3 + body_h,
                          0.3 + body_h + rng.uniform(0.45, 0.6), VEHICLE, (0.12, 0.14, 0.17),
                          MAT_GLASS))
    for sy in (-1, 1):
        for sx in (-1, 1):
            yc = sy * (hl - 0.75)
            parts.append(_box(sx * hw - 0.12, sx * hw + 0.12, yc - 0.33, yc + 0.33, 0.0, 0.6,
                              VEHICLE, (0.05, 0.05, 0.05)))
    return parts


def person_parts(rng: np.random.Generator) -> list[Primitive]:
    """A standing pedestrian at lateral 0, y 0: legs, torso, arms, head."""
    h = rng.uniform(1.5, 1.95)
    leg_h, torso_h = 0.47 * h, 0.33 * h
    pants = _jitter_color(rng, CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))])
    shirt = _jitter_color(rng, CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))])
    skin = _jitter_color(rng, ((0.85, 0.65, 0.5), (0.55, 0.38, 0.25),
                               (0.35, 0.22, 0.15))[rng.integers(3)], 0.05)
    sw = rng.uniform(0.18, 0.23)
    parts = [
        _box(-sw, -0.02, -0.1, 0.1, 0.0, leg_h, HUMAN, pants),
        _box(0.02, sw, -0.1, 0.1, 0.0, leg_h, HUMAN, pants),
        _box(-sw - 0.02, sw + 0.02, -0.13, 0.13, leg_h, leg_h + torso_h, HUMAN, shirt),
        _box(-sw - 0.12, -sw - 0.02, -0.06, 0.06, leg_h + 0.05, leg_h + torso_h, HUMAN, shirt),
        _box(sw + 0.02, sw + 0.12, -0.06, 0.06, leg_h + 0.05, leg_h + torso_h, HUMAN, shirt),
    ]
    head_r = 0.1 * h / 1.75
    parts.append(_ellipsoid(0.0, 0.0, leg_h + torso_h + head_r * 1.15, head_r, head_r,
                            head_r * 1.15, HUMAN, skin, MAT_SKIN))
    return parts


@dataclass(frozen=True)
class RoadLayout:
    """Cross-section and plan of the road; one per world."""

    lanes_per_direction: int
    lane_width: float
    sidewalk_width: float
    curvature_amp: float
    curvature_len: float

    @property
    def half_width(self) -> float:
        return self.lanes_per_direction * self.lane_width

    def center(self, y: np.ndarray | float) -> np.ndarray | float:
        """Lateral position of the road centre line at ``y`` (a gentle S-curve)."""
        return self.curvature_amp * np.sin(np.asarray(y) / self.curvature_len)

    def lane_lateral(self, lane: int) -> float:
        """Lateral offset of the centre of a +Y lane from the road centre line."""
        return (lane + 0.5) * self.lane_width

    def heading(self, y: float) -> float:
        """Road direction at ``y`` as a yaw angle (radians, left of +Y positive)."""
        slope = self.curvature_amp / self.curvature_len * math.cos(y / self.curvature_len)
        return -math.atan(slope)


class World:
    """An infinite procedural street, deterministic by seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 0xC0FFEE])
        self.road = RoadLayout(
            lanes_per_direction=int(rng.integers(1, 3)),
            lane_width=float(rng.uniform(2.9, 3.6)),
            sidewalk_width=float(rng.uniform(1.5, 4.0)),
            curvature_amp=float(rng.choice([0.0, rng.uniform(2.0, 15.0)])),
            curvature_len=float(rng.uniform(60.0, 160.0)),
        )
        #: Probability a roadside block is built up (city) rather than green (suburb/park).
        self.urban = float(rng.uniform(0.2, 0.95))
        self.road_color = _jitter_color(rng, (0.32, 0.32, 0.34), 0.07)
        self.sidewalk_color = _jitter_color(rng, (0.62, 0.6, 0.57), 0.08)
        self.terrain_color = _jitter_color(rng, (0.35, 0.5, 0.2), 0.08)
        self.paint_color = (np.array([0.92, 0.92, 0.88]) if rng.random() < 0.8
                            else np.array([0.95, 0.8, 0.2]))
        #: Extra road markings (randomise.py sets them): Y positions of zebra crossings and stop
        #: lines.
        self.crosswalks: tuple[float, ...] = ()
        self.stop_lines: tuple[float, ...] = ()
        self._chunks: dict[int, ChunkContent] = {}

    # ----- layout -----
    def chunk(self, k: int) -> ChunkContent:
        if k not in self._chunks:
            self._chunks[k] = self._build_chunk(k)
        return self._chunks[k]

    def _build_chunk(self, k: int) -> ChunkContent:
        rng = np.random.default_rng([self.seed, 1, k + 1_000_000])
        road, y0 = self.road, k * CHUNK_LEN
        out = ChunkContent()
        # lateral distance of the sidewalk's outer edge
        edge = road.half_width + road.sidewalk_width
        built = []
        for side in (-1, 1):
            is_built = bool(rng.random() < self.urban)
            built.append(is_built)
            if is_built:
                self._buildings(rng, out, side, y0, edge)
            else:
                self._vegetation(rng, out, side, y0, edge)
            self._street_furniture(rng, out, side, y0)
            self._roadside_people_and_cars(rng, out, side, y0)
        out.built_up = (built[0], built[1])
        self._traffic(rng, out, y0)
        return out

    def _place(self, parts: list[Primitive], lateral: float, y: float) -> list[Primitive]:
        cx = float(self.road.center(y))
        return [p.shifted(cx + lateral, y) for p in parts]

    def _buildings(self, rng: np.random.Generator, out: ChunkContent, side: int, y0: float,
                   edge: float) -> None:
        y = y0
        while y < y0 + CHUNK_LEN:
            length = float(rng.uniform(6.0, 20.0))
            y_end = min(y + length, y0 + CHUNK_LEN)
            if rng.random() < 0.12:  # gap between buildings (a courtyard or side street)
                y = y_end
                continue
            setback = float(rng.uniform(0.0, 4.0))
            depth = float(rng.uniform(8.0, 20.0))
            height = float(rng.uniform(4.0, 28.0))
            color = _jitter_color(rng, FACADE_COLORS[rng.integers(len(FACADE_COLORS))])
            inner = edge + setback
            cx = float(self.road.center(0.5 * (y + y_end)))
            out.static.append(_box(cx + side * inner, cx + side * (inner + depth), y, y_end, 0.0,
                                   height, CONSTRUCTION, color, MAT_FACADE))
            if rng.random() < 0.25 and setback > 1.0:  # low wall / fence in front
                wall_h = float(rng.uniform(0.6, 1.6))
                out.static.append(_box(cx + side * (edge + 0.2), cx + side * (edge + 0.45), y,
                                       y_end, 0.0, wall_h, CONSTRUCTION,
                                       _jitter_color(rng, (0.6, 0.58, 0.55))))
            y = y_end

    def _vegetation(self, rng: np.random.Generator, out: ChunkContent, side: int, y0: float,
                    edge: float) -> None:
        for _ in range(int(rng.integers(2, 7))):
            y = y0 + float(rng.uniform(0, CHUNK_LEN))
            lat = side * (edge + float(rng.uniform(1.0, 15.0)))
            cx = float(self.road.center(y))
            trunk_h = float(rng.uniform(1.5, 4.0))
            r = float(rng.uniform(1.2, 3.5))
            out.static.append(_box(cx + lat - 0.15, cx + lat + 0.15, y - 0.15, y + 0.15, 0.0,
                                   trunk_h + r * 0.5,
                                   NATURE, _jitter_color(rng, (0.35, 0.25, 0.15)), MAT_BARK))
            out.static.append(_ellipsoid(cx + lat, y, trunk_h + r, r, r,
                                         r * float(rng.uniform(0.9, 1.5)), NATURE,
                                         _jitter_color(rng, (0.2, 0.42, 0.15), 0.1), MAT_FOLIAGE))
        if rng.random() < 0.5:
            ys = y0 + float(rng.uniform(0, 10))
            ye = min(ys + float(rng.uniform(4, 14)), y0 + CHUNK_LEN)
            cx = float(self.road.center(0.5 * (ys + ye)))
            off = edge + float(rng.uniform(0.3, 2.0))
            out.static.append(_box(cx + side * off, cx + side * (off + rng.uniform(0.8, 2.0)), ys,
                                   ye, 0.0, float(rng.uniform(0.6, 1.8)), NATURE,
                                   _jitter_color(rng, (0.18, 0.38, 0.14)), MAT_FOLIAGE))
        if rng.random() < 0.3:  # a building far behind the greenery
            y = y0 + float(rng.uniform(0, 12))
            lat = edge + float(rng.uniform(18, 35))
            cx = float(self.road.center(y))
            out.static.append(_box(cx + side * lat, cx + side * (lat + 12), y,
                                   y + float(rng.uniform(8, 14)), 0.0,
                                   float(rng.uniform(5, 20)), CONSTRUCTION,
                                   _jitter_color(rng,
                                                 FACADE_COLORS[rng.integers(len(FACADE_COLORS))]),
                                   MAT_FACADE))

    def _street_furniture(self, rng: np.random.Generator, out: ChunkContent, side: int,
                          y0: float) -> None:
        lat = side * (self.road.half_width + float(rng.uniform(0.3, 0.7)))
        metal = _jitter_color(rng, (0.45, 0.45, 0.47), 0.05)
        if rng.random() < 0.8:  # street light
            y = y0 + float(rng.uniform(0, CHUNK_LEN))
            cx = float(self.road.center(y))
            h = float(rng.uniform(6.0, 9.0))
            out.static.append(_box(cx + lat - 0.1, cx + lat + 0.1, y - 0.1, y + 0.1, 0.0, h,
                                   OBJECT, metal))
            arm = -side * float(rng.uniform(1.0, 2.0))
            out.static.append(_box(cx + lat, cx + lat + arm, y - 0.08, y + 0.08, h - 0.2, h,
                                   OBJECT, metal))
        if rng.random() < 0.6:  # traffic sign on a pole
            y = y0 + float(rng.uniform(0, CHUNK_LEN))
            cx = float(self.road.center(y))
            h = float(rng.uniform(2.0, 2.8))
            out.static.append(_box(cx + lat - 0.05, cx + lat + 0.05, y - 0.05, y + 0.05, 0.0, h,
                                   OBJECT, metal))
            plate = ((0.85, 0.1, 0.1), (0.1, 0.3, 0.8), (0.95, 0.85, 0.1),
                     (0.95, 0.95, 0.95))[rng.integers(4)]
            s = float(rng.uniform(0.3, 0.45))
            out.static.append(_box(cx + lat - s, cx + lat + s, y - 0.06, y - 0.03, h, h + 2 * s,
                                   OBJECT, _jitter_color(rng, plate, 0.05)))
        if rng.random() < 0.25:  # traffic light
            y = y0 + float(rng.uniform(0, CHUNK_LEN))
            cx = float(self.road.center(y))
            out.static.append(_box(cx + lat - 0.08, cx + lat + 0.08, y - 0.08, y + 0.08, 0.0, 3.0,
                                   OBJECT, metal))
            out.static.append(_box(cx + lat - 0.18, cx + lat + 0.18, y - 0.25, y - 0.05, 3.0, 3.9,
                                   OBJECT, (0.08, 0.08, 0.08)))
        if rng.random() < 0.3:  # bollards
            y = y0 + float(rng.uniform(0, CHUNK_LEN - 6))
            for i in range(int(rng.integers(2, 6))):
                yy = y + 1.5 * i
                cx = float(self.road.center(yy))
                out.static.append(_box(cx + lat - 0.1, cx + lat + 0.1, yy - 0.1, yy + 0.1, 0.0,
                                       0.9, OBJECT, _jitter_color(rng, (0.7, 0.7, 0.2))))

    def _roadside_people_and_cars(self, rng: np.random.Generator, out: ChunkContent, side: int,
                                  y0: float) -> None:
        road = self.road
        for _ in range(int(rng.poisson(1.2))):  # pedestrians on the sidewalk, some walking
            lat = side * (road.half_width + float(rng.uniform(0.4, road.sidewalk_width - 0.3)))
            speed = float(rng.choice([0.0, rng.uniform(-1.6, 1.6)]))
            out.agents.append(Agent(person_parts(rng), lat, y0 + float(rng.uniform(0, CHUNK_LEN)),
                                    speed))
        if rng.random() < 0.15:
            # someone crossing the road, in the oncoming half (never in the ego lane)
            lat = float(rng.uniform(-road.half_width + 0.3, -0.3))
            out.agents.append(Agent(person_parts(rng), lat, y0 + float(rng.uniform(0, CHUNK_LEN)),
                                    0.0))
        y = y0 + float(rng.uniform(0, 4))
        # parked cars along the curb; on the ego side only where there is a second lane to park in
        may_park = side < 0 or road.lanes_per_direction > EGO_LANE + 1
        while y < y0 + CHUNK_LEN - 3:
            if may_park and rng.random() < 0.45:
                lat = side * (road.half_width - float(rng.uniform(1.0, 1.3)))
                for p in self._place(car_parts(rng), lat, y + 2.5):
                    out.static.append(p)
            y += float(rng.uniform(5.5, 9.0))

    def _traffic(self, rng: np.random.Generator, out: ChunkContent, y0: float) -> None:
        road = self.road
        for _ in range(int(rng.poisson(1.0))):
            lane = int(rng.integers(road.lanes_per_direction))
            # right-hand traffic: +Y lanes are at lateral > 0
            direction = 1 if rng.random() < 0.5 else -1
            if direction == 1 and lane == EGO_LANE:
                # the ego lane only ever holds the lead vehicle (render.py), never a car to drive
                # through
                continue
            lat = direction * (lane + 0.5) * road.lane_width
            speed = direction * float(rng.uniform(4.0, 14.0))
            out.agents.append(Agent(car_parts(rng, direction), lat,
                                    y0 + float(rng.uniform(0, CHUNK_LEN)), speed))

    # ----- queries -----
    def primitives(self, y_from: float, y_to: float, t: float = 0.0,
                   max_agent_speed: float = 16.0) -> list[Primitive]:
        """Everything that may be visible between ``y_from`` and ``y_to`` at time ``t`` seconds."""
        k0, k1 = math.floor(y_from / CHUNK_LEN), math.floor(y_to / CHUNK_LEN)
        prims: list[Primitive] = []
        for k in range(k0, k1 + 1):
            prims.extend(self.chunk(k).static)
        reach = max_agent_speed * abs(t)
        ka, kb = math.floor((y_from - reach) / CHUNK_LEN), math.floor((y_to + reach) / CHUNK_LEN)
        for k in range(ka, kb + 1):
            for agent in self.chunk(k).agents:
                y = agent.y0 + agent.speed * t
                if y_from - 10 <= y <= y_to + 10:
                    prims.extend(self._place(agent.parts, agent.lateral, y))
        return prims

    def ground(self, x: np.ndarray, y: np.ndarray, y_built_max: float) -> np.ndarray:
        """Ground region code (GROUND_*) of world points on the road plane. Beyond ``y_built_max``
        (past the objects that are rendered) everything off the road is terrain."""
        road = self.road
        lat = x - road.center(y)
        a = np.abs(lat)
        hw = road.half_width
        region = np.full(x.shape, GROUND_TERRAIN, dtype=np.int8)
        chunk = np.floor(np.minimum(y, y_built_max + CHUNK_LEN) / CHUNK_LEN).astype(np.int64)
        built_left = np.zeros(x.shape, bool)
        built_right = np.zeros(x.shape, bool)
        for k in np.unique(chunk):
            m = chunk == k
            bl, br = self.chunk(int(k)).built_up
            built_left[m], built_right[m] = bl, br
        built = np.where(lat < 0, built_left, built_right) & (y <= y_built_max)
        region[built] = GROUND_PAVEMENT
        region[a < hw + road.sidewalk_width] = GROUND_SIDEWALK
        region[a < hw + 0.2] = GROUND_CURB
        region[a < hw] = GROUND_ROAD
        # lane paint: solid edge lines, dashed lines between lanes (3 m dash, 6 m gap)
        paint = (a > hw - 0.35) & (a < hw - 0.2)
        for i in range(road.lanes_per_direction):
            off = i * road.lane_width
            line = np.abs(a - off) < (0.08 if i == 0 and road.lanes_per_direction > 1 else 0.06)
            if i > 0 or road.lanes_per_direction == 1:
                line &= np.mod(y, 9.0) < 3.0
            paint |= line
        for yc in self.crosswalks:  # zebra: 0.5 m stripes across the road, 4 m deep
            paint |= (np.abs(y - yc) < 2.0) & (np.mod(lat, 1.0) < 0.5)
        for ys in self.stop_lines:  # a 0.4 m bar across the +Y half of the road
            paint |= (np.abs(y - ys) < 0.2) & (lat > 0)
        region[paint & (a < hw)] = GROUND_PAINT
        return region
