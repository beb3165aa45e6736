"""The canvas and the camera every synthetic scene is drawn with, and the shape primitives.

Scenes are drawn in a simple pinhole world: the camera sits one *unit* (its own height, about
1.5 m) above a flat street looking along it. A point ``X`` units to the side, ``Y`` units up and
``Z`` depth units ahead lands at ``x = vanish_x + X * scale / Z``, ``y = horizon + scale * (1 - Y)
/ Z`` (``scale`` = pixels from the horizon to the bottom row, so depth 1 is the bottom row).
All geometry is in these units, so any resolution draws the same scene. Shapes are masks from
coordinate grids over each object's pixel box (``frontal``, ``side_plane``), painted onto the
``Canvas`` with a texture from its noise fields, so that flat colour does not give the class away.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from seg_jax.data.labels import LABEL_IDS

# The label ids that the scene and its objects paint.
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

    def texture(self, box: Box, colour: ArrayLike, fine: float = 0.04, mid: float = 0.05,
                coarse: float = 0.05) -> np.ndarray:
        """``colour`` (RGB, or an array over the box) modulated by the noise fields."""
        top, bottom, left, right = box
        gain = (1 + fine * self.fine[top:bottom, left:right]
                + mid * self.mid[top:bottom, left:right]
                + coarse * self.coarse[top:bottom, left:right])
        return np.asarray(colour, np.float32) * gain[..., None]

    def paint(self, box: Box, mask: np.ndarray, colour: ArrayLike, label_id: int) -> None:
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
    """A blank canvas with fresh noise fields; their draws depend on the size, so ``rng``
    must be a stream of its own (see ``render_scene``)."""
    return Canvas(image=np.zeros((height, width, 3), np.float32),
                  label=np.zeros((height, width), np.uint8),
                  fine=rng.standard_normal((height, width), np.float32),
                  mid=smooth_noise(rng, height, width, max(height / 60, 2)),
                  coarse=smooth_noise(rng, height, width, height / 8))


# ----------------------------------------------------------------------------- the camera


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
        """The column of a point ``lateral`` units to the side at ``depth``."""
        return self.vanish_x + lateral * self.scale / depth

    def image_y(self, up: float, depth: float) -> float:
        """The row of a point ``up`` units above the street at ``depth``."""
        return self.horizon + self.scale * (1 - up) / depth


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


def jitter(rng: np.random.Generator, colour: ArrayLike, amount: float = 0.05) -> np.ndarray:
    """``colour`` nudged per channel, so that no two instances of a class share one colour."""
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def pick(rng: np.random.Generator, colours: Sequence[ArrayLike],
         amount: float = 0.05) -> np.ndarray:
    """One of ``colours`` at random, jittered."""
    return jitter(rng, colours[rng.integers(len(colours))], amount)
