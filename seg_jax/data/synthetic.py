"""A procedural synthetic Cityscapes: street scenes written in the exact Cityscapes layout.

Cityscapes needs a registered login, so no machine here can download it. seg_jax ships this
generator instead; the demo and the tests train on its output, and because it writes the real
file layout (and, on request, the two zips the TFDS builder reads) every real-data code path
runs on it unchanged.

Scenes are drawn in a simple pinhole world: the camera sits one *unit* (its own height, about
1.5 m) above a flat street looking along it. A point ``X`` units to the side, ``Y`` units up and
``Z`` depth units ahead lands at ``x = vanish_x + X * scale / Z``, ``y = horizon + scale * (1 - Y)
/ Z`` (``scale`` = pixels from the horizon to the bottom row, so depth 1 is the bottom row).
All geometry is in these units, so any resolution draws the same scene. Shapes are masks from
coordinate grids over each object's pixel box, painted far to near; textures, shadows, lighting
and noise keep flat colour from giving the class away.

    python -m seg_jax.data.synthetic --output /tmp/cityscapes --height 1024 --width 2048 --zips
"""

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import sys
import zipfile
from collections.abc import Callable

import numpy as np
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from seg_jax.data.labels import LABEL_IDS, NUM_LABEL_IDS
from seg_jax.errors import DataError
from seg_jax.files import folder_lock, png_bytes, write_atomically

SPLITS = ('train', 'val', 'test')
# Real Cityscapes city names; examples go round-robin over a split's cities.
CITIES: dict[str, tuple[str, ...]] = {
    'train': ('aachen', 'bochum', 'bremen', 'cologne', 'darmstadt', 'dusseldorf', 'erfurt',
              'hamburg', 'hanover', 'jena', 'krefeld', 'monchengladbach', 'strasbourg',
              'stuttgart', 'tubingen', 'ulm', 'weimar', 'zurich'),
    'val': ('frankfurt', 'lindau', 'munster'),
    'test': ('berlin', 'bielefeld', 'bonn', 'leverkusen', 'mainz', 'munich'),
}
FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet.
MARKER = 'synthetic_cityscapes.json'
# Bump when the drawing changes, so a folder written by an older generator is not reused.
GENERATOR_VERSION = 2  # 2: *_gtFine_instanceIds.png
MIN_HEIGHT, MIN_WIDTH = 32, 32
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so zips are byte-identical run to run

# Official Cityscapes colours by label id (``*_gtFine_color.png``); labels.py has train ids only.
ID_PALETTE = np.zeros((256, 3), np.uint8)
ID_PALETTE[:NUM_LABEL_IDS] = [id2label[i].color for i in range(NUM_LABEL_IDS)]
# The public test labels carry no classes, only these void regions.
TEST_LABEL_IDS = (LABEL_IDS['ego vehicle'], LABEL_IDS['out of roi'])

ROAD, SIDEWALK, BUILDING = LABEL_IDS['road'], LABEL_IDS['sidewalk'], LABEL_IDS['building']
POLE, LIGHT, SIGN = LABEL_IDS['pole'], LABEL_IDS['traffic light'], LABEL_IDS['traffic sign']
VEGETATION, TERRAIN, SKY = LABEL_IDS['vegetation'], LABEL_IDS['terrain'], LABEL_IDS['sky']
PERSON, RIDER, CAR = LABEL_IDS['person'], LABEL_IDS['rider'], LABEL_IDS['car']
BICYCLE, STATIC = LABEL_IDS['bicycle'], LABEL_IDS['static']
EGO, OUT_OF_ROI = LABEL_IDS['ego vehicle'], LABEL_IDS['out of roi']

Box = tuple[int, int, int, int]  # top, bottom, left, right pixel rows/columns (end exclusive)
Point = tuple[float, float]


# ----------------------------------------------------------------------------- the canvas


@dataclasses.dataclass
class Canvas:
    """The image (float RGB in [0, 1]) and label ids being drawn, plus shared noise fields that
    give every surface a texture (``fine`` per pixel, ``mid`` and ``coarse`` smooth)."""
    image: np.ndarray
    label: np.ndarray
    fine: np.ndarray
    mid: np.ndarray
    coarse: np.ndarray

    def box(self, top: float, bottom: float, left: float, right: float) -> Box | None:
        """The pixel box covering the given extent, clipped to the canvas; None if empty."""
        height, width = self.label.shape
        box = (max(int(np.floor(top)), 0), min(int(np.ceil(bottom)), height),
               max(int(np.floor(left)), 0), min(int(np.ceil(right)), width))
        return box if box[0] < box[1] and box[2] < box[3] else None

    def texture(self, box: Box, colour, fine: float = 0.04, mid: float = 0.05,
                coarse: float = 0.05) -> np.ndarray:
        """``colour`` (RGB, or an array over the box) modulated by the noise fields."""
        top, bottom, left, right = box
        gain = (1 + fine * self.fine[top:bottom, left:right]
                + mid * self.mid[top:bottom, left:right]
                + coarse * self.coarse[top:bottom, left:right])
        return np.asarray(colour, np.float32) * gain[..., None]

    def paint(self, box: Box, mask: np.ndarray, colour, label_id: int) -> None:
        """Draws ``colour`` and ``label_id`` where ``mask`` (over ``box``) is set."""
        top, bottom, left, right = box
        label = self.label[top:bottom, left:right]
        mask = np.broadcast_to(mask, label.shape)
        np.copyto(self.image[top:bottom, left:right], colour, where=mask[..., None])
        np.copyto(label, np.uint8(label_id), where=mask)

    def shade(self, box: Box, factor: np.ndarray, where: np.ndarray) -> None:
        """Darkens (or lightens) the image by ``factor`` where ``where`` is set: shadows."""
        top, bottom, left, right = box
        image = self.image[top:bottom, left:right]
        np.copyto(image, image * factor[..., None], where=where[..., None])


def pixel_grid(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates over ``box`` as broadcastable (rows, 1) and (1, columns)."""
    top, bottom, left, right = box
    rows = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5
    columns = np.arange(left, right, dtype=np.float32)[None, :] + 0.5
    return rows, columns


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Unit-scale noise that varies over about ``cell`` pixels (bilinear value noise)."""
    rows, columns = int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2
    small = rng.standard_normal((rows, columns), np.float32) * 1.5
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def new_canvas(rng: np.random.Generator, height: int, width: int) -> Canvas:
    return Canvas(image=np.zeros((height, width, 3), np.float32),
                  label=np.zeros((height, width), np.uint8),
                  fine=rng.standard_normal((height, width), np.float32),
                  mid=smooth_noise(rng, height, width, max(height / 60, 2)),
                  coarse=smooth_noise(rng, height, width, height / 8))


# ----------------------------------------------------------------------------- the street


@dataclasses.dataclass(frozen=True)
class Street:
    """Camera and street layout. Lateral positions ``X`` are in camera heights, left negative:
    ``kerbs`` bound the road, ``walls`` are the facades, between them sidewalk then verge."""
    horizon: float
    vanish_x: float
    scale: float
    kerbs: Point
    sidewalk_edges: Point
    walls: Point
    lane_lines: tuple[float, ...]
    far: float  # depth where the street ends in a row of buildings

    def pixels(self, depth: float) -> float:
        """Pixels per unit at ``depth``."""
        return self.scale / depth

    def image_x(self, lateral: float, depth: float) -> float:
        return self.vanish_x + lateral * self.scale / depth

    def image_y(self, up: float, depth: float) -> float:
        return self.horizon + self.scale * (1 - up) / depth


def plan_street(rng: np.random.Generator, height: int, width: int) -> Street:
    horizon = height * rng.uniform(0.36, 0.47)
    left_kerb, right_kerb = -rng.uniform(2.4, 5.5), rng.uniform(1.3, 3.2)
    sidewalks = rng.uniform(1.0, 2.8, 2)
    verges = np.where(rng.random(2) < 0.45, rng.uniform(0.4, 2.5, 2), 0.0)
    edges = (left_kerb - sidewalks[0], right_kerb + sidewalks[1])
    first_line = -rng.uniform(1.1, 1.5)
    lane_lines = tuple(line for line in (first_line, first_line - rng.uniform(2.1, 2.5))
                       if line > left_kerb + 1.0)
    return Street(horizon=horizon, vanish_x=width * rng.uniform(0.4, 0.6),
                  scale=height - horizon, kerbs=(left_kerb, right_kerb),
                  sidewalk_edges=edges, walls=(edges[0] - verges[0], edges[1] + verges[1]),
                  lane_lines=lane_lines, far=rng.uniform(25, 60))


def frontal(canvas: Canvas, street: Street, lateral: float, depth: float,
            extent: tuple[float, float, float, float]
            ) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """Box and local coordinates (``u`` right, ``v`` up, in units from the object's foot at
    (``lateral``, ``depth``)) for a flat shape facing the camera; ``extent`` = left, right,
    bottom, top in units. None if the shape is off the canvas."""
    left, right, bottom, top = extent
    pixels = street.pixels(depth)
    foot_x, foot_y = street.image_x(lateral, depth), street.image_y(0.0, depth)
    box = canvas.box(foot_y - top * pixels, foot_y - bottom * pixels,
                     foot_x + left * pixels, foot_x + right * pixels)
    if box is None:
        return None
    rows, columns = pixel_grid(box)
    return box, (columns - foot_x) / pixels, (foot_y - rows) / pixels


def side_plane(canvas: Canvas, street: Street, lateral: float, near: float, far: float,
               top: float) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """Box and plane coordinates (``depth``, ``up``) for a vertical plane along the street at
    ``lateral``, from depth ``near`` to ``far`` and up to ``top`` units (facades, car sides)."""
    x_near, x_far = street.image_x(lateral, near), street.image_x(lateral, far)
    box = canvas.box(street.image_y(top, near), street.image_y(0.0, near),
                     min(x_near, x_far), max(x_near, x_far))
    if box is None:
        return None
    rows, columns = pixel_grid(box)
    inverse_depth = (columns - street.vanish_x) / (lateral * street.scale)
    inverse_depth = np.maximum(inverse_depth, 1e-6)
    up = 1 - (rows - street.horizon) / (inverse_depth * street.scale)
    return box, 1 / inverse_depth, up


def capsule(u: np.ndarray, v: np.ndarray, start: Point, end: Point, radius: float) -> np.ndarray:
    """Points within ``radius`` of the segment ``start``-``end``: limbs, frames, poles."""
    du, dv = end[0] - start[0], end[1] - start[1]
    along = np.clip(((u - start[0]) * du + (v - start[1]) * dv) / (du * du + dv * dv + 1e-12),
                    0, 1)
    return (u - start[0] - along * du) ** 2 + (v - start[1] - along * dv) ** 2 < radius ** 2


def disc(u: np.ndarray, v: np.ndarray, centre: Point, radius: float) -> np.ndarray:
    return (u - centre[0]) ** 2 + (v - centre[1]) ** 2 < radius ** 2


def jitter(rng: np.random.Generator, colour, amount: float = 0.05) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def pick(rng: np.random.Generator, colours, amount: float = 0.05) -> np.ndarray:
    return jitter(rng, colours[rng.integers(len(colours))], amount)


FACADES = ((0.76, 0.72, 0.64), (0.6, 0.6, 0.6), (0.55, 0.36, 0.28), (0.86, 0.85, 0.8),
           (0.42, 0.42, 0.46), (0.72, 0.62, 0.46), (0.66, 0.7, 0.74))
CAR_PAINTS = ((0.9, 0.9, 0.9), (0.65, 0.66, 0.68), (0.08, 0.08, 0.09), (0.1, 0.14, 0.3),
              (0.6, 0.08, 0.08), (0.35, 0.36, 0.38), (0.2, 0.35, 0.6), (0.85, 0.8, 0.7))
CLOTHES = ((0.1, 0.1, 0.12), (0.15, 0.2, 0.4), (0.5, 0.5, 0.52), (0.7, 0.15, 0.15),
           (0.85, 0.85, 0.8), (0.3, 0.25, 0.2), (0.2, 0.4, 0.3), (0.75, 0.6, 0.3))
SKIN = ((0.85, 0.67, 0.55), (0.6, 0.42, 0.3), (0.35, 0.24, 0.18))
LEAVES = ((0.2, 0.33, 0.12), (0.28, 0.4, 0.16), (0.35, 0.42, 0.2), (0.5, 0.45, 0.18))


# ----------------------------------------------------------------------------- background


def draw_sky(canvas: Canvas, rng: np.random.Generator, street: Street) -> None:
    height, width = canvas.label.shape
    overcast = rng.random()
    zenith = (1 - overcast) * jitter(rng, (0.3, 0.5, 0.82), 0.08) + overcast * jitter(
        rng, (0.74, 0.77, 0.8), 0.05)
    haze = jitter(rng, (0.82, 0.86, 0.9), 0.05)
    box = (0, height, 0, width)
    rows, _ = pixel_grid(box)
    blend = np.clip(rows / max(street.horizon, 1), 0, 1)[..., None]
    colour = zenith * (1 - blend) + haze * blend
    clouds = np.clip(canvas.coarse + 0.15 * canvas.mid - rng.uniform(0.3, 2.0), 0, 1)[..., None]
    colour = colour * (1 - 0.6 * clouds) + 0.92 * 0.6 * clouds
    canvas.paint(box, np.ones((1, 1), bool), canvas.texture(box, colour, 0.01, 0.01, 0), SKY)


def draw_skyline(canvas: Canvas, rng: np.random.Generator, street: Street) -> None:
    """Buildings and trees across the far end of the street, seen face on."""
    width = canvas.label.shape[1]
    left = 0.0
    while left < width:
        block = width * rng.uniform(0.02, 0.09)
        lateral = (left - street.vanish_x) / street.pixels(street.far)
        units = block / street.pixels(street.far)
        found = frontal(canvas, street, lateral, street.far, (0, units, 0, 16))
        left += block
        if found is None:
            continue
        box, u, v = found
        if rng.random() < 0.25:
            top = rng.uniform(1.5, 5) + 0.6 * np.sin(u * rng.uniform(2, 6) + rng.uniform(0, 6))
            colour = canvas.texture(box, pick(rng, LEAVES), 0.25, 0.2, 0.1)
            canvas.paint(box, v < top + 0.3 * canvas.mid[box[0]:box[1], box[2]:box[3]], colour,
                         VEGETATION)
        else:
            colour = canvas.texture(box, pick(rng, FACADES, 0.08) * 0.85, 0.04, 0.04, 0.03)
            canvas.paint(box, v < rng.uniform(2, 14), colour, BUILDING)


def draw_ground(canvas: Canvas, rng: np.random.Generator, street: Street) -> None:
    """Road with lane markings, kerbs, sidewalks and grass verges, plus cast shadows."""
    height, width = canvas.label.shape
    box = canvas.box(street.horizon, height, 0, width)
    if box is None:
        return
    rows, columns = pixel_grid(box)
    below = np.maximum(rows - street.horizon, 1e-3)
    depth, lateral = street.scale / below, (columns - street.vanish_x) / below
    (left_kerb, right_kerb), (left_edge, right_edge) = street.kerbs, street.sidewalk_edges
    road = (lateral > left_kerb) & (lateral < right_kerb)
    sidewalk = ~road & (lateral > left_edge) & (lateral < right_edge)

    asphalt = jitter(rng, (0.36, 0.36, 0.37), 0.03) * rng.uniform(0.7, 1.3)
    colour = canvas.texture(box, asphalt, 0.07, 0.025, 0.04)
    paint_white = jitter(rng, (0.82, 0.82, 0.8), 0.06)
    marking = np.zeros(road.shape, bool)
    period = rng.uniform(4, 8)
    for line in street.lane_lines:
        marking |= (np.abs(lateral - line) < 0.07) & ((depth / period) % 1 < 0.45)
    if rng.random() < 0.5:
        marking |= np.abs(lateral - (right_kerb - 0.25)) < 0.06
    if rng.random() < 0.2:
        near = rng.uniform(3, 12)
        marking |= (depth > near) & (depth < near + 2.0) & ((lateral / 0.9) % 1 < 0.5)
    colour = np.where(marking[..., None], canvas.texture(box, paint_white, 0.08, 0.12, 0),
                      colour)
    canvas.paint(box, road, colour, ROAD)

    pavement = pick(rng, ((0.58, 0.58, 0.58), (0.62, 0.5, 0.47), (0.5, 0.5, 0.47)), 0.07)
    tile = rng.uniform(0.25, 0.5)
    visible_tiles = tile * street.scale / depth > 4
    grout = visible_tiles & (((lateral / tile) % 1 < 0.07) | ((depth / tile) % 1 < 0.07))
    kerb = (np.abs(lateral - left_kerb) < 0.12) | (np.abs(lateral - right_kerb) < 0.12)
    gain = np.where(grout, 0.85, 1.0) * np.where(kerb, 1.15, 1.0)
    canvas.paint(box, sidewalk, canvas.texture(box, pavement, 0.06, 0.03, 0.04) * gain[..., None],
                 SIDEWALK)

    grass = pick(rng, ((0.33, 0.45, 0.2), (0.45, 0.48, 0.26), (0.52, 0.5, 0.33)), 0.05)
    canvas.paint(box, ~road & ~sidewalk, canvas.texture(box, grass, 0.2, 0.15, 0.1), TERRAIN)

    shade = np.ones(road.shape, np.float32)
    if rng.random() < 0.5:  # a facade's shadow across part of the street
        edge = rng.uniform(left_kerb, right_kerb)
        cast = lateral < edge if rng.random() < 0.5 else lateral > edge
        shade = np.where(cast, rng.uniform(0.5, 0.75), shade)
    if rng.random() < 0.3:  # dappled tree shadows
        shade *= 1 - 0.3 * np.clip(canvas.coarse[box[0]:box[1]] - 0.5, 0, 1)
    canvas.shade(box, shade, shade < 1)


def draw_walls(canvas: Canvas, rng: np.random.Generator, street: Street) -> list:
    """Facades along both sides, split into buildings of different heights and colours, with
    gaps and hedges; returns the trees planted in front of hedges (drawn later, by depth)."""
    trees = []
    for side, lateral in enumerate(street.walls):
        if rng.random() < 0.12:
            continue
        lit = rng.uniform(0.6, 1.1)
        near = 0.5
        while near < street.far:
            far = min(near + rng.uniform(4, 16), street.far)
            kind = rng.choice(('building', 'gap', 'hedge'), p=(0.72, 0.1, 0.18))
            if kind == 'building':
                draw_facade(canvas, rng, street, lateral, near, far, lit)
            elif kind == 'hedge':
                draw_hedge(canvas, rng, street, lateral, near, far)
                trees += [(depth, functools.partial(draw_tree, lateral=lateral + (side - 0.5)
                                                    * rng.uniform(0.3, 1.5), depth=depth))
                          for depth in np.arange(near + 1, far, rng.uniform(3, 7))]
            near = far
    return trees


def draw_facade(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
                near: float, far: float, lit: float) -> None:
    storeys = rng.integers(3, 9)
    floor = rng.uniform(1.7, 2.3)
    top = storeys * floor + rng.uniform(0.3, 1.5)
    found = side_plane(canvas, street, lateral, near, far, top)
    if found is None:
        return
    box, depth, up = found
    wall = (depth > near) & (depth < far) & (up > 0) & (up < top)
    spacing = rng.uniform(1.0, 1.8)
    storey, bay = np.floor(up / floor), np.floor(depth / spacing)
    window = (((up / floor) % 1 > 0.3) & ((up / floor) % 1 < 0.75) & (up > floor)
              & (up < storeys * floor) & ((depth / spacing) % 1 > 0.25)
              & ((depth / spacing) % 1 < 0.7))
    lottery = rng.random((16, 16)).astype(np.float32)
    pane = lottery[storey.astype(np.int64) % 16, bay.astype(np.int64) % 16][..., None]
    glass = jitter(rng, (0.22, 0.26, 0.3), 0.05) * (0.6 + 0.8 * pane)
    colour = pick(rng, FACADES, 0.08) * lit
    colour = np.where(window[..., None], glass, colour)
    cornice = up > top - 0.25
    colour = np.where(cornice[..., None], colour * 0.75, colour)
    canvas.paint(box, wall, canvas.texture(box, colour, 0.04, 0.03, 0.04), BUILDING)


def draw_hedge(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
               near: float, far: float) -> None:
    top = rng.uniform(0.5, 1.4)
    found = side_plane(canvas, street, lateral, near, far, top + 0.3)
    if found is None:
        return
    box, depth, up = found
    bumps = top + 0.12 * canvas.mid[box[0]:box[1], box[2]:box[3]]
    mask = (depth > near) & (depth < far) & (up > 0) & (up < bumps)
    canvas.paint(box, mask, canvas.texture(box, pick(rng, LEAVES), 0.3, 0.25, 0.1), VEGETATION)


# ----------------------------------------------------------------------------- objects


def draw_tree(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
              depth: float) -> None:
    """A trunk and an irregular crown (both vegetation, as Cityscapes labels trees)."""
    crown_height, radius = rng.uniform(2.5, 4.5), rng.uniform(1.0, 2.2)
    found = frontal(canvas, street, lateral, depth,
                    (-1.5 * radius, 1.5 * radius, 0, crown_height + 1.5 * radius))
    if found is None:
        return
    box, u, v = found
    angle = np.arctan2(v - crown_height, u)
    edge = radius * (1 + sum(rng.uniform(0.04, 0.12) * np.sin(lobes * angle + rng.uniform(0, 6))
                             for lobes in (3, 5, 8, 13)))
    dappling = canvas.mid[box[0]:box[1], box[2]:box[3]]
    crown = (u ** 2 + (v - crown_height) ** 2) < (edge * (1 + 0.08 * dappling)) ** 2
    trunk = (np.abs(u) < rng.uniform(0.07, 0.13)) & (v < crown_height)
    leaves = canvas.texture(box, pick(rng, LEAVES, 0.06), 0.3, 0.3, 0.1)
    bark = canvas.texture(box, jitter(rng, (0.3, 0.25, 0.2), 0.05), 0.1, 0.1, 0)
    canvas.paint(box, trunk, bark, VEGETATION)
    canvas.paint(box, crown, leaves, VEGETATION)


def draw_pole(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
              depth: float, fixture: str) -> None:
    """A pole, bare or with a street lamp, a traffic light or a sign on top."""
    tall = rng.uniform(3.5, 6.0) if fixture in ('bare', 'lamp') else rng.uniform(2.0, 3.2)
    towards_road = -np.sign(lateral) * rng.uniform(0.8, 2.5) if fixture == 'lamp' else 0.0
    found = frontal(canvas, street, lateral, depth,
                    (min(-0.6, towards_road - 0.3), max(0.6, towards_road + 0.3), 0, tall + 0.9))
    if found is None:
        return
    box, u, v = found
    half_width = max(rng.uniform(0.04, 0.07), 0.6 / street.pixels(depth))
    metal = canvas.texture(box, pick(rng, ((0.5, 0.5, 0.5), (0.3, 0.33, 0.3), (0.62, 0.6, 0.55)),
                                     0.05), 0.05, 0.05, 0)
    pole = (np.abs(u) < half_width) & (v < tall)
    if fixture == 'lamp':
        pole |= capsule(u, v, (0, tall), (towards_road, tall + 0.1), half_width)
        pole |= capsule(u, v, (towards_road - 0.2 * np.sign(towards_road), tall + 0.08),
                        (towards_road, tall + 0.1), 2 * half_width)
    canvas.paint(box, pole, metal, POLE)
    if fixture == 'light':
        draw_light_head(canvas, rng, box, u, v, tall)
    elif fixture == 'sign':
        draw_sign_plate(canvas, rng, box, u, v, tall)


def draw_light_head(canvas: Canvas, rng: np.random.Generator, box: Box, u: np.ndarray,
                    v: np.ndarray, base: float) -> None:
    housing = (np.abs(u) < 0.14) & (v > base) & (v < base + 0.75)
    colour = canvas.texture(box, jitter(rng, (0.12, 0.12, 0.12), 0.06), 0.05, 0.05, 0)
    if rng.random() < 0.7:  # seen from the front: three lamps, one lit
        lit = rng.integers(3)
        for lamp, glow in enumerate(((0.95, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.9, 0.4))):
            centre = (0.0, base + 0.62 - 0.24 * lamp)
            brightness = 1.0 if lamp == lit else 0.25
            colour = np.where(disc(u, v, centre, 0.08)[..., None],
                              np.float32(brightness) * np.asarray(glow, np.float32), colour)
    canvas.paint(box, housing, colour, LIGHT)


def draw_sign_plate(canvas: Canvas, rng: np.random.Generator, box: Box, u: np.ndarray,
                    v: np.ndarray, base: float) -> None:
    size = rng.uniform(0.22, 0.36)
    centre = (0.0, base + size)
    shape = rng.integers(4)
    if shape == 0:  # round: red ring, white face
        plate = disc(u, v, centre, size)
        face = disc(u, v, centre, 0.7 * size)
        colour = np.where(face[..., None], np.float32([0.9, 0.9, 0.88]),
                          np.float32([0.8, 0.1, 0.1]))
    elif shape == 1:  # triangle, point up
        plate = (v > centre[1] - size) & (np.abs(u) < (centre[1] + size - v) * 0.6)
        colour = np.float32([0.85, 0.85, 0.8]) if rng.random() < 0.5 else np.float32(
            [0.9, 0.75, 0.1])
    elif shape == 2:  # blue square
        plate = (np.abs(u) < size) & (np.abs(v - centre[1]) < size)
        colour = np.float32([0.1, 0.3, 0.7])
    else:  # the grey back of a sign
        plate = disc(u, v, centre, size)
        colour = np.float32([0.55, 0.55, 0.55])
    canvas.paint(box, plate, canvas.texture(box, colour * rng.uniform(0.75, 1.1), 0.05, 0.05, 0),
                 SIGN)


def draw_car(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
             depth: float) -> None:
    """A car seen from behind (``depth`` is its rear), with the side that faces the camera,
    windows, wheels, lights and a shadow on the ground below it."""
    width, tall, length = rng.uniform(1.1, 1.3), rng.uniform(0.95, 1.2), rng.uniform(2.6, 3.3)
    paint = pick(rng, CAR_PAINTS, 0.05)
    glass = jitter(rng, (0.12, 0.14, 0.17), 0.04)
    belt = 0.6 * tall
    draw_car_shadow(canvas, street, lateral, depth, width, length)
    side = lateral + width / 2 if lateral + width / 2 < 0 else lateral - width / 2
    if side * lateral > 0 and abs(side) > 0.05:
        found = side_plane(canvas, street, side, depth, depth + length, tall)
        if found is not None:
            box, z, up = found
            along = (z - depth) / length
            roof = np.minimum(tall, belt + (tall - belt) * np.minimum(along / 0.25,
                                                                      (1 - along) / 0.2))
            body = (along > 0) & (along < 1) & (up > 0.12) & (up < np.maximum(roof, belt))
            window = (up > belt + 0.04) & (up < roof - 0.06)
            wheels = ((z - depth - 0.55) ** 2 + (up - 0.22) ** 2 < 0.22 ** 2) | (
                (z - depth - length + 0.6) ** 2 + (up - 0.22) ** 2 < 0.22 ** 2)
            colour = np.where(window[..., None], glass, paint * 0.85)
            colour = np.where(wheels[..., None], np.float32([0.05, 0.05, 0.05]), colour)
            canvas.paint(box, body | wheels, canvas.texture(box, colour, 0.03, 0.04, 0.03), CAR)
    found = frontal(canvas, street, lateral, depth, (-width / 2, width / 2, 0, tall))
    if found is None:
        return
    box, u, v = found
    cabin = np.abs(u) < width / 2 * (0.92 - 0.2 * (v - belt) / (tall - belt))
    body = ((v > 0.12) & (v < belt) & (np.abs(u) < width / 2)) | ((v >= belt) & cabin)
    wheels = (v < 0.3) & (np.abs(u) > width / 2 - 0.2) & (np.abs(u) < width / 2)
    window = (v > belt + 0.05) & (v < tall - 0.07) & (np.abs(u) < width / 2 * (
        0.85 - 0.2 * (v - belt) / (tall - belt)))
    lamps = (v > belt - 0.18) & (v < belt - 0.06) & (np.abs(u) > width / 2 - 0.2)
    plate = (v > 0.22) & (v < 0.32) & (np.abs(u) < 0.18)
    colour = np.where(window[..., None], glass, paint)
    colour = np.where(lamps[..., None], np.float32([0.7, 0.08, 0.06]), colour)
    colour = np.where(plate[..., None], np.float32([0.88, 0.88, 0.85]), colour)
    colour = np.where((v < 0.3)[..., None] & ~plate[..., None], colour * 0.45, colour)
    canvas.paint(box, body | wheels, canvas.texture(box, colour, 0.03, 0.04, 0.03), CAR)


def draw_car_shadow(canvas: Canvas, street: Street, lateral: float, depth: float,
                    width: float, length: float) -> None:
    found = frontal(canvas, street, lateral, depth, (-width, width, -0.2, 0.3))
    if found is None:
        return
    box, u, v = found
    ground = np.isin(canvas.label[box[0]:box[1], box[2]:box[3]], (ROAD, SIDEWALK, TERRAIN))
    # On the ground plane, v below 0 means nearer than the rear bumper: a short soft shadow.
    under = (np.abs(u) < width / 2 + 0.05) & (v < 0.25) & (v > -0.15)
    factor = np.where(v > 0, 0.35, 0.35 + 0.6 * (-v / 0.15)).astype(np.float32)
    canvas.shade(box, np.broadcast_to(factor, under.shape), under & ground)


def draw_person(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
                depth: float) -> None:
    """A pedestrian mid-stride: capsules for legs, torso and arms, a disc for the head."""
    size = rng.uniform(1.05, 1.25)
    found = frontal(canvas, street, lateral, depth, (-0.3 * size, 0.3 * size, 0, size))
    if found is None:
        return
    box, u, v = found
    u, v = u / size, v / size
    stride, swing = rng.uniform(-0.09, 0.09), rng.uniform(-0.1, 0.1)
    legs = capsule(u, v, (-0.03, 0.48), (-0.04 + stride, 0.03), 0.04) | capsule(
        u, v, (0.03, 0.48), (0.04 - stride, 0.03), 0.04)
    torso = capsule(u, v, (0, 0.5), (0, 0.78), 0.085)
    arms = capsule(u, v, (-0.1, 0.79), (-0.12 + swing, 0.47), 0.03) | capsule(
        u, v, (0.1, 0.79), (0.12 - swing, 0.47), 0.03)
    head = disc(u, v, (0, 0.9), 0.065)
    colour = np.where((v < 0.48)[..., None], pick(rng, CLOTHES), pick(rng, CLOTHES))
    colour = np.where((head & (v < 0.92))[..., None], pick(rng, SKIN, 0.03), colour)
    colour = np.where((head & (v >= 0.92))[..., None], pick(rng, ((0.1, 0.08, 0.06),
                                                                (0.45, 0.35, 0.2)), 0.05), colour)
    canvas.paint(box, legs | torso | arms | head, canvas.texture(box, colour, 0.05, 0.05, 0),
                 PERSON)


def bicycle_mask(u: np.ndarray, v: np.ndarray, facing: float) -> np.ndarray:
    """A bicycle in side view (1.05 m wheelbase), ``facing`` +1 right or -1 left."""
    u = u * facing
    rear, front, crank = (-0.35, 0.23), (0.35, 0.23), (-0.02, 0.2)
    seat, head = (-0.12, 0.58), (0.26, 0.58)
    wheels = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    for hub in (rear, front):
        distance = np.sqrt((u - hub[0]) ** 2 + (v - hub[1]) ** 2)
        wheels |= (np.abs(distance - 0.21) < 0.025) | (distance < 0.03)
    frame = wheels
    for start, end in ((rear, crank), (rear, seat), (seat, crank), (crank, head), (seat, head),
                       (head, front), (head, (0.24, 0.68)), ((-0.18, 0.6), (-0.06, 0.6))):
        frame = frame | capsule(u, v, start, end, 0.018)
    return frame


def draw_bicycle(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
                 depth: float, ridden: bool) -> None:
    """A bicycle side on, parked or with a rider (rider and bicycle are separate classes)."""
    facing = 1.0 if rng.random() < 0.5 else -1.0
    found = frontal(canvas, street, lateral, depth, (-0.5, 0.5, 0, 1.35 if ridden else 0.75))
    if found is None:
        return
    box, u, v = found
    frame_colour = pick(rng, ((0.1, 0.1, 0.1), (0.6, 0.1, 0.1), (0.2, 0.3, 0.55), (0.8, 0.8, 0.8)))
    canvas.paint(box, bicycle_mask(u, v, facing), canvas.texture(box, frame_colour, 0.05, 0, 0),
                 BICYCLE)
    if not ridden:
        return
    f = facing
    hip, shoulder = (-0.1 * f, 0.66), (0.08 * f, 1.05)
    rider = capsule(u, v, hip, shoulder, 0.09) | disc(u, v, (0.13 * f, 1.18), 0.08)
    rider |= capsule(u, v, (shoulder[0], shoulder[1] - 0.03), (0.24 * f, 0.7), 0.035)
    pedal = rng.uniform(0, 2 * np.pi)
    for phase in (0, np.pi):
        foot = (-0.02 * f + 0.1 * np.cos(pedal + phase), 0.2 + 0.1 * np.sin(pedal + phase))
        knee = ((hip[0] + foot[0]) / 2 + 0.12 * f, (hip[1] + foot[1]) / 2 + 0.05)
        rider |= capsule(u, v, hip, knee, 0.045) | capsule(u, v, knee, foot, 0.04)
    colour = np.where((v > 1.1)[..., None], pick(rng, SKIN + ((0.9, 0.9, 0.9),)),
                      pick(rng, CLOTHES))
    canvas.paint(box, rider, canvas.texture(box, colour, 0.05, 0.05, 0), RIDER)


def draw_static(canvas: Canvas, rng: np.random.Generator, street: Street, lateral: float,
                depth: float) -> None:
    """Street furniture Cityscapes labels 'static' (void): bins, bollards, boxes."""
    size = rng.uniform(0.3, 0.7)
    found = frontal(canvas, street, lateral, depth, (-size / 2, size / 2, 0, size * 1.2))
    if found is None:
        return
    box, u, v = found
    if rng.random() < 0.5:  # a bin with a lid
        mask = (np.abs(u) < size * (0.4 + 0.05 * v / size)) & (v < size * 1.1)
    else:  # a bollard
        mask = capsule(u, v, (0, 0), (0, size), 0.08)
    colour = pick(rng, ((0.2, 0.35, 0.25), (0.55, 0.55, 0.55), (0.7, 0.5, 0.1), (0.2, 0.2, 0.22)))
    canvas.paint(box, mask, canvas.texture(box, colour, 0.05, 0.05, 0), STATIC)


# ----------------------------------------------------------------------------- planning


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A depth between ``low`` and ``high``, as often near as far in ratio terms (uniform depths
    would put most objects far away, a few pixels tall)."""
    return low * (high / low) ** rng.random()


def plan_objects(rng: np.random.Generator, street: Street) -> list[tuple[float, Callable]]:
    """(depth, draw) for every object in the scene; drawing far to near handles occlusion."""
    objects = []
    left_kerb, right_kerb = street.kerbs
    for side, kerb in enumerate(street.kerbs):
        outward = 1.0 if side else -1.0
        sidewalk_width = abs(street.sidewalk_edges[side] - kerb)
        if rng.random() < 0.7 and (side == 0 or right_kerb > 2.4):  # parked cars
            depth = rng.uniform(1.5, 5)
            while depth < min(street.far * 0.8, 45):
                objects.append((depth, functools.partial(draw_car, lateral=kerb - outward * 0.75,
                                                         depth=depth)))
                depth += rng.uniform(3.2, 10)
        if rng.random() < 0.6:  # street trees along the kerb
            spacing = rng.uniform(5, 12)
            for depth in np.arange(rng.uniform(1.5, 6), street.far * 0.8, spacing):
                objects.append((depth, functools.partial(
                    draw_tree, lateral=kerb + outward * 0.5, depth=depth)))
        for _ in range(rng.integers(1, 5)):
            fixture = rng.choice(('bare', 'lamp', 'light', 'sign'), p=(0.2, 0.2, 0.25, 0.35))
            depth = log_uniform(rng, 2.0, 30)
            objects.append((depth, functools.partial(
                draw_pole, lateral=kerb + outward * rng.uniform(0.2, 0.4), depth=depth,
                fixture=fixture)))
        for _ in range(rng.integers(1, 5) if rng.random() < 0.7 else 0):
            depth = log_uniform(rng, 1.8, 25)
            objects.append((depth, functools.partial(
                draw_person, lateral=kerb + outward * rng.uniform(0.4, sidewalk_width),
                depth=depth)))
        if rng.random() < 0.35:
            depth = log_uniform(rng, 2.5, 20)
            objects.append((depth, functools.partial(
                draw_bicycle, lateral=kerb + outward * rng.uniform(0.4, sidewalk_width),
                depth=depth, ridden=False)))
        if rng.random() < 0.3:
            depth = rng.uniform(2, 20)
            objects.append((depth, functools.partial(
                draw_static, lateral=kerb + outward * rng.uniform(0.3, sidewalk_width),
                depth=depth)))
    if rng.random() < 0.3:  # a sign or light at the far end, over the road
        depth = rng.uniform(8, 25)
        objects.append((depth, functools.partial(
            draw_pole, lateral=rng.uniform(left_kerb, right_kerb), depth=depth,
            fixture=rng.choice(('light', 'sign')))))
    if rng.random() < 0.6:  # a cyclist in the road, by the kerb
        depth = log_uniform(rng, 2.5, 15)
        objects.append((depth, functools.partial(
            draw_bicycle, lateral=right_kerb - rng.uniform(0.5, 0.9), depth=depth, ridden=True)))
    lanes = [0.0] + [line - 1.2 for line in street.lane_lines]
    for _ in range(rng.integers(0, 4)):  # traffic
        depth = rng.uniform(4, 40)
        objects.append((depth, functools.partial(
            draw_car, lateral=lanes[rng.integers(len(lanes))] + rng.uniform(-0.2, 0.2),
            depth=depth)))
    if rng.random() < 0.15:  # a pedestrian crossing the road
        depth = rng.uniform(4, 15)
        objects.append((depth, functools.partial(
            draw_person, lateral=rng.uniform(left_kerb + 0.5, right_kerb - 0.5), depth=depth)))
    return objects


def draw_void(canvas: Canvas, rng: np.random.Generator) -> None:
    """The ego vehicle's bonnet at the bottom and an out-of-roi frame, in some images."""
    height, width = canvas.label.shape
    if rng.random() < 0.5:
        rise = height * rng.uniform(0.05, 0.12)
        box = canvas.box(height - rise, height, 0, width)
        if box is not None:
            rows, columns = pixel_grid(box)
            curve = height - rise * (1 - 0.5 * ((columns - width / 2) / (width / 2)) ** 2)
            shine = np.clip((rows - (height - rise)) / rise, 0, 1)[..., None]
            colour = jitter(rng, (0.12, 0.12, 0.14), 0.05) + 0.25 * (1 - shine)
            canvas.paint(box, rows > curve, canvas.texture(box, colour, 0.02, 0.03, 0), EGO)
    if rng.random() < 0.3:
        frame = max(1, round(height * 0.005))
        border = np.zeros(canvas.label.shape, bool)
        border[:frame], border[-frame:], border[:, :frame], border[:, -frame:] = (True,) * 4
        canvas.label[border] = OUT_OF_ROI


def develop(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Per-image exposure, white balance, vignetting and sensor noise; returns uint8 RGB."""
    height, width = canvas.label.shape
    rows, columns = pixel_grid((0, height, 0, width))
    radius = ((rows / height - 0.5) ** 2 + (columns / width - 0.5) ** 2)
    vignette = (1 - rng.uniform(0, 0.5) * radius)[..., None]
    gains = rng.uniform(0.7, 1.25) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    image = np.clip(canvas.image * gains * vignette, 0, 1) ** np.float32(rng.uniform(0.85, 1.15))
    image += rng.uniform(0.008, 0.025) * canvas.fine[..., None] * rng.uniform(0.7, 1.3, 3)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_scene(rng: np.random.Generator, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (RGB image uint8 HxWx3, Cityscapes label ids uint8 HxW)."""
    check_size(height, width)
    # Noise fields take resolution-dependent draws: a stream of their own keeps the layout the
    # same at every resolution.
    rng, noise_rng = rng.spawn(2)
    canvas = new_canvas(noise_rng, height, width)
    street = plan_street(rng, height, width)
    draw_sky(canvas, rng, street)
    draw_skyline(canvas, rng, street)
    draw_ground(canvas, rng, street)
    objects = draw_walls(canvas, rng, street) + plan_objects(rng, street)
    for _, draw in sorted(objects, key=lambda item: -item[0]):
        draw(canvas, rng, street)
    draw_void(canvas, rng)
    return develop(canvas, rng), canvas.label


# ----------------------------------------------------------------------------- writing


def check_size(height: int, width: int) -> None:
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise DataError(f'Synthetic scenes need at least {MIN_HEIGHT}x{MIN_WIDTH} pixels '
                        f'(height x width); got {height}x{width}. Pass a larger size.')


def example_stem(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of example ``index``: round-robin over the split's cities, sequence
    numbers counting up per city, so a shorter run names a prefix of a longer one."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f'{city}_{index // len(cities):06d}_{FRAME:06d}'


def example_paths(split: str, index: int) -> dict[str, str]:
    """Relative paths of one example's files, as in the real data set."""
    city, stem = example_stem(split, index)
    return {'image': f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png',
            'label_ids': f'gtFine/{split}/{city}/{stem}_gtFine_labelIds.png',
            'colour': f'gtFine/{split}/{city}/{stem}_gtFine_color.png',
            'instance_ids': f'gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png'}


def render_example(seed: int, split: str, index: int, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Example ``index`` of ``split``; its own RNG makes it independent of the counts."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    image, label = render_scene(rng, height, width)
    if split == 'test':
        label = np.where(np.isin(label, TEST_LABEL_IDS), label, LABEL_IDS['unlabeled'])
    return image, label.astype(np.uint8)


def colour_label(label_ids: np.ndarray) -> np.ndarray:
    """Label ids in the official colours, RGBA like the real ``*_gtFine_color.png``."""
    colours = ID_PALETTE[label_ids]
    return np.concatenate([colours, np.full(label_ids.shape + (1,), 255, np.uint8)], -1)


def instance_label(label_ids: np.ndarray) -> np.ndarray:
    """The ``*_gtFine_instanceIds.png`` of a scene without instances: uint16 like the real
    ones, each pixel its label id (below 1000: "no single instance", Cityscapes' crowd
    convention), so cityscapesscripts' evaluation reads the folder like the real data set."""
    return label_ids.astype(np.uint16)


def write_zip(path: pathlib.Path, root: pathlib.Path, members: list[str]) -> None:
    """A zip laid out like the real download, PNGs stored (they are compressed already)."""
    temporary = path.with_name(f'.{path.name}.partial')
    with zipfile.ZipFile(temporary, 'w', zipfile.ZIP_STORED) as archive:
        for member in sorted(members):
            info = zipfile.ZipInfo(member, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / member).read_bytes())
    os.replace(temporary, path)


def reuse_existing(output: pathlib.Path, arguments: dict) -> bool:
    """True if ``output`` already holds this exact data set; raises rather than touch a folder
    holding anything else (someone's files, an interrupted run, other arguments)."""
    if not output.exists() or not any(output.iterdir()):
        return False
    marker = output / MARKER
    if not marker.exists():
        raise DataError(
            f'Refusing to write synthetic Cityscapes into {output}: it is not empty and holds no '
            f'{MARKER}, so it is either an interrupted generation or someone else\'s files. '
            'Delete the folder (if it is a broken synthetic run) or choose another --output.')
    previous = json.loads(marker.read_text())
    if previous != arguments:
        changed = sorted(key for key in arguments.keys() | previous.keys()
                         if previous.get(key) != arguments.get(key))
        raise DataError(
            f'{output} holds a synthetic Cityscapes made with other arguments (differing: '
            f'{", ".join(changed)}). Delete the folder or choose another --output.')
    return True


def generate(output: str | pathlib.Path, *, num_train: int = 24, num_val: int = 8,
             num_test: int = 4, height: int = 256, width: int = 512, seed: int = 0,
             zips: bool = False) -> None:
    """Writes a synthetic Cityscapes into ``output`` in the real layout, so the folder reader
    and (with ``zips``, at 1024x2048) the TFDS builder read it like the real data set.

    Deterministic: the same arguments give byte-identical files, and each example depends only
    on (seed, split, index). A finished run leaves ``synthetic_cityscapes.json`` (written last);
    calling again with the same arguments reuses the folder, anything else is refused so that
    no user file is ever overwritten.
    """
    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    for split, count in counts.items():
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise DataError(f'num_{split} must be a whole number >= 0; got {count!r}.')
    check_size(height, width)
    output = pathlib.Path(output)
    arguments = {'generator': 'seg_jax.data.synthetic', 'version': GENERATOR_VERSION,
                 'num_train': int(num_train), 'num_val': int(num_val), 'num_test': int(num_test),
                 'height': int(height), 'width': int(width), 'seed': int(seed),
                 'zips': bool(zips)}
    if output.exists() and not output.is_dir():
        raise DataError(f'{output} is a file, not a folder. Pass --output a folder path.')
    # Processes of one job sharing the folder: one generates, the others wait and reuse it.
    with folder_lock(output):
        if reuse_existing(output, arguments):
            return
        written = []
        for split, count in counts.items():
            for index in range(count):
                image, label = render_example(seed, split, index, height, width)
                paths = example_paths(split, index)
                for key, array in (('image', image), ('label_ids', label),
                                   ('colour', colour_label(label)),
                                   ('instance_ids', instance_label(label))):
                    write_atomically(output / paths[key], png_bytes(array, compress_level=1))
                    written.append(paths[key])
        if zips:
            for name, root in (('leftImg8bit_trainvaltest.zip', 'leftImg8bit/'),
                               ('gtFine_trainvaltest.zip', 'gtFine/')):
                write_zip(output / name, output,
                          [path for path in written if path.startswith(root)])
        write_atomically(output / MARKER, (json.dumps(arguments, indent=2) + '\n').encode())


def sample_sheet(path: str | pathlib.Path, *, seed: int = 0, count: int = 4, height: int = 256,
                 width: int = 512) -> None:
    """A PNG with one row per training example: the image beside its coloured labels."""
    rows = [np.concatenate([image, ID_PALETTE[label]], axis=1)
            for image, label in (render_example(seed, 'train', index, height, width)
                                 for index in range(count))]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m seg_jax.data.synthetic',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--output', help='Folder to write the data set into.')
    parser.add_argument('--num-train', type=int, default=24)
    parser.add_argument('--num-val', type=int, default=8)
    parser.add_argument('--num-test', type=int, default=4)
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--zips', action='store_true', help='Also write the two TFDS zips.')
    parser.add_argument('--samples', help='Also write a PNG sheet of 4 samples here.')
    args = parser.parse_args(argv)
    if args.output is None and args.samples is None:
        parser.error('pass --output (and/or --samples)')
    try:
        if args.samples:
            sample_sheet(args.samples, seed=args.seed)
        if args.output:
            generate(args.output, num_train=args.num_train, num_val=args.num_val,
                     num_test=args.num_test, height=args.height, width=args.width,
                     seed=args.seed, zips=args.zips)
    except DataError as error:
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    main()
