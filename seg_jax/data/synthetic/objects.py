"""The objects of a synthetic street: trees, poles with lamps, lights and signs, cars, people,
bicycles with and without riders, street furniture; where they stand (``plan_objects``) and
how each is drawn. Each draw function takes (canvas, rng, street) plus its place, so the scene
can sort them by depth and paint far to near.
"""

import functools
from collections.abc import Callable

import numpy as np

from seg_jax.data.synthetic.canvas import (
    BICYCLE, CAR, LIGHT, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, STATIC, TERRAIN, VEGETATION,
    Box, Canvas, Street, capsule, disc, frontal, jitter, pick, side_plane)

# A draw function with its place bound: the scene calls it as draw(canvas, rng, street).
Draw = Callable[[Canvas, np.random.Generator, Street], None]

# Palettes that ``pick`` chooses from; the scene's hedges and skyline trees share LEAVES.
CAR_PAINTS = ((0.9, 0.9, 0.9), (0.65, 0.66, 0.68), (0.08, 0.08, 0.09), (0.1, 0.14, 0.3),
              (0.6, 0.08, 0.08), (0.35, 0.36, 0.38), (0.2, 0.35, 0.6), (0.85, 0.8, 0.7))
CLOTHES = ((0.1, 0.1, 0.12), (0.15, 0.2, 0.4), (0.5, 0.5, 0.52), (0.7, 0.15, 0.15),
           (0.85, 0.85, 0.8), (0.3, 0.25, 0.2), (0.2, 0.4, 0.3), (0.75, 0.6, 0.3))
SKIN = ((0.85, 0.67, 0.55), (0.6, 0.42, 0.3), (0.35, 0.24, 0.18))
LEAVES = ((0.2, 0.33, 0.12), (0.28, 0.4, 0.16), (0.35, 0.42, 0.2), (0.5, 0.45, 0.18))


# ----------------------------------------------------------------------------- drawing


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


def plan_objects(rng: np.random.Generator, street: Street) -> list[tuple[float, Draw]]:
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
