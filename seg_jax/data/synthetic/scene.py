"""One synthetic street scene: the street's layout, the background (sky, the far skyline, the
ground, the facades along the street), the objects of ``objects`` painted far to near, void
regions, and the camera's exposure and noise, as an image and its Cityscapes label ids.
"""

import functools
import numpy as np

from seg_jax.data.synthetic.canvas import (
    BUILDING, EGO, OUT_OF_ROI, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION, Canvas, Street,
    frontal, jitter, new_canvas, pick, pixel_grid, side_plane)
from seg_jax.data.synthetic.objects import LEAVES, Draw, draw_tree, plan_objects
from seg_jax.errors import DataError

MIN_HEIGHT, MIN_WIDTH = 32, 32

# Facade colours, for the buildings along the street and on the skyline.
FACADES = ((0.76, 0.72, 0.64), (0.6, 0.6, 0.6), (0.55, 0.36, 0.28), (0.86, 0.85, 0.8),
           (0.42, 0.42, 0.46), (0.72, 0.62, 0.46), (0.66, 0.7, 0.74))


def check_size(height: int, width: int) -> None:
    """Refuses sizes too small for the scene's geometry, with a message that says why."""
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise DataError(f'Synthetic scenes need at least {MIN_HEIGHT}x{MIN_WIDTH} pixels '
                        f'(height x width); got {height}x{width}. Pass a larger size.')



# ----------------------------------------------------------------------------- the street


def plan_street(rng: np.random.Generator, height: int, width: int) -> Street:
    """A random camera and street layout: horizon, vanishing point, road, sidewalks, verges."""
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


def draw_walls(canvas: Canvas, rng: np.random.Generator, street: Street
               ) -> list[tuple[float, Draw]]:
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



# ----------------------------------------------------------------------------- the whole scene


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
