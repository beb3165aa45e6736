"""Joint image/label augmentation for tf.data: one affine resampling pass per example.

Scale, rotation, horizontal flip and crop compose into a single map from crop pixels to source
pixels, applied once with ``ImageProjectiveTransformV3``: only the crop's pixels are computed,
which at 1024x2048 is several times cheaper than resizing, rotating and then cropping the full
image. The image is resampled bilinearly; the label with nearest neighbour only, so it never
holds an interpolated id. Every pixel that comes from outside the source (padding, rotation
corners) is ``IGNORE_LABEL`` in the label and the ImageNet mean (0 after normalisation) in the
image.

Pixel convention: pixel ``(row, col)`` has its centre at the continuous point ``(x=col,
y=row)``, as in the transform op. Scaling and rotation act about the centres of the source and
of the scaled canvas, so with scale 1 and angle 0 the map is an integer translation (plus
mirror) and flip and crop are exact copies.

Randomness is stateless: every draw is a pure function of the per-example seed, each quantity
from its own stream, so augmentation can be replayed from (seed, position) when training resumes
and a change to one option (say, the rotation range) does not change the other draws.
"""

import math
from typing import NamedTuple

import tensorflow as tf

from seg_jax.data.crops import check_crop_size
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import ConfigError, ShapeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Mean and 1 / std in [0, 255] units: centring before the warp lets it fill padding with 0. A
# multiply (not a divide, which graph optimisation rewrites into one) keeps eager and traced
# results bit-identical.
_MEAN_255 = tuple(255.0 * m for m in IMAGENET_MEAN)
_INVERSE_STD_255 = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)

# One stateless stream per random quantity, folded into the example seed.
_SCALE, _ANGLE, _FLIP, _TOP, _LEFT, _BRIGHTNESS, _CONTRAST = range(7)


class Geometry(NamedTuple):
    """One example's random geometry; ``top``/``left`` index the scaled canvas and may be
    negative where the canvas is smaller than the crop (the source then sits inside the crop)."""
    scale: tf.Tensor  # float32 resize factor
    angle_degrees: tf.Tensor  # float32 rotation about the canvas centre
    flip: tf.Tensor  # bool: mirror the crop left-right
    top: tf.Tensor  # int32 crop row in the scaled canvas
    left: tf.Tensor  # int32 crop column in the scaled canvas


def _centre(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) - _MEAN_255


def _scale_by_std(centred: tf.Tensor) -> tf.Tensor:
    return centred * _INVERSE_STD_255


def normalize(image: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 255] (uint8 or float) -> float32 ``(x / 255 - mean) / std``.

    Computed as ``(x - 255 mean) * (1 / (255 std))``, the same ops ``train_transform`` applies
    around its warp, so a flip or crop gives values bit-identical to normalising the copy.
    """
    return _scale_by_std(_centre(image))


def _as_image_and_label(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Tensors of the two inputs, after checking the ranks that are known statically."""
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    if image.shape.rank is not None and (image.shape.rank != 3 or image.shape[-1] not in (3, None)):
        raise ShapeError(f'image must be HxWx3 RGB, got shape {image.shape}.')
    if label.shape.rank is not None and label.shape.rank != 2:
        raise ShapeError(f'label must be an HxW map of train ids, got shape {label.shape}; '
                         'squeeze a trailing channel axis first.')
    return image, label


def _check_geometry_args(crop_size: tuple[int, int], scale_range: tuple[float, float],
                         rotation_degrees: float) -> None:
    check_crop_size(crop_size)
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ConfigError(f'scale_range={scale_range} must be (low, high) with 0 < low <= high; '
                          'set config.data.scale_range to e.g. (0.5, 2.0), or (1.0, 1.0) for no '
                          'rescaling.')
    if not rotation_degrees >= 0:
        raise ConfigError(f'rotation_degrees={rotation_degrees} must be >= 0 (angles are drawn '
                          'from [-r, r]); set config.data.rotation_degrees to e.g. 3.0, or 0.')


def _check_photometric(photometric: float) -> None:
    if not 0 <= photometric < 1:
        raise ConfigError(f'photometric={photometric} must be in [0, 1): brightness and contrast '
                          'factors are drawn from [1 - p, 1 + p] and must stay positive; set '
                          'config.data.photometric to e.g. 0.3, or 0 to turn jitter off.')


def _uniform(seed: tf.Tensor, stream: int, minval, maxval, dtype=tf.float32) -> tf.Tensor:
    """A scalar uniform draw in [minval, maxval) from the seed's ``stream``."""
    stream_seed = tf.random.experimental.stateless_fold_in(seed, stream)
    return tf.random.stateless_uniform([], stream_seed, minval, maxval, dtype=dtype)


def _scaled_size(image_size: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """(height, width) of the source resized by ``scale``, the canvas the crop is taken from."""
    return tf.cast(tf.round(tf.cast(image_size, tf.float32) * scale), tf.int32)


def _crop_offset(seed: tf.Tensor, stream: int, canvas: tf.Tensor, crop: int) -> tf.Tensor:
    """Uniform integer offset of the crop along one axis of the canvas.

    A canvas smaller than the crop gives a negative offset: the canvas lands at a uniformly
    random position inside the crop (not centred), so the model sees content at every position.
    """
    slack = canvas - crop
    return _uniform(seed, stream, tf.minimum(slack, 0), tf.maximum(slack, 0) + 1, tf.int32)


def sample_geometry(seed: tf.Tensor, image_size: tf.Tensor, *, crop_size: tuple[int, int],
                    scale_range: tuple[float, float], rotation_degrees: float,
                    flip: bool) -> Geometry:
    """Draws the scale, angle, flip and crop position that ``train_transform`` applies.

    Exposed so the distribution of the draws, and the exactness of pure flips and crops, can be
    checked without resampling anything. ``image_size`` is the source's (height, width).
    """
    _check_geometry_args(crop_size, scale_range, rotation_degrees)
    scale = _uniform(seed, _SCALE, scale_range[0], scale_range[1])
    angle = _uniform(seed, _ANGLE, -rotation_degrees, rotation_degrees)
    flipped = _uniform(seed, _FLIP, 0.0, 1.0) < 0.5 if flip else tf.constant(False)
    canvas = _scaled_size(image_size, scale)
    return Geometry(scale=scale, angle_degrees=angle, flip=flipped,
                    top=_crop_offset(seed, _TOP, canvas[0], crop_size[0]),
                    left=_crop_offset(seed, _LEFT, canvas[1], crop_size[1]))


def _affine(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor, tx: tf.Tensor,
            ty: tf.Tensor) -> tf.Tensor:
    """3x3 homogeneous matrix taking (x, y, 1) to (a x + b y + tx, c x + d y + ty, 1)."""
    zero, one = tf.zeros([]), tf.ones([])
    return tf.reshape(tf.stack([a, b, tx, c, d, ty, zero, zero, one]), [3, 3])


def _translation(tx: tf.Tensor, ty: tf.Tensor) -> tf.Tensor:
    one, zero = tf.ones([]), tf.zeros([])
    return _affine(one, zero, zero, one, tx, ty)


def _centre_point(size: tf.Tensor) -> tf.Tensor:
    """Continuous (x, y) of the centre of an image of (height, width) ``size``."""
    return (tf.cast(size[::-1], tf.float32) - 1.0) / 2.0


def _canvas_to_source(image_size: tf.Tensor, canvas_size: tf.Tensor, scale: tf.Tensor,
                      angle_degrees: tf.Tensor) -> tf.Tensor:
    """Canvas point -> source point for a source scaled by ``scale`` and rotated by the angle
    about its centre; the canvas centre maps to the source centre."""
    radians = angle_degrees * (math.pi / 180.0)
    cos, sin = tf.cos(radians) / scale, tf.sin(radians) / scale
    source_centre, canvas_centre = _centre_point(image_size), _centre_point(canvas_size)
    rotate_and_shrink = _affine(cos, -sin, sin, cos, tf.zeros([]), tf.zeros([]))
    return (_translation(source_centre[0], source_centre[1]) @ rotate_and_shrink
            @ _translation(-canvas_centre[0], -canvas_centre[1]))


def _crop_to_canvas(geometry: Geometry, crop_size: tuple[int, int]) -> tf.Tensor:
    """Crop pixel -> canvas point: mirror within the crop if flipped, then offset by the crop."""
    mirror = tf.where(geometry.flip, -1.0, 1.0)
    mirror_shift = tf.where(geometry.flip, float(crop_size[1] - 1), 0.0)
    left, top = tf.cast(geometry.left, tf.float32), tf.cast(geometry.top, tf.float32)
    one, zero = tf.ones([]), tf.zeros([])
    return _affine(mirror, zero, zero, one, mirror_shift + left, top)


def _projective_parameters(matrix: tf.Tensor) -> tf.Tensor:
    """The op's 8 parameters of a 3x3 homogeneous matrix (its last entry is 1)."""
    return tf.reshape(matrix, [9])[:8]


def crop_transform(geometry: Geometry, image_size: tf.Tensor,
                   crop_size: tuple[int, int]) -> tf.Tensor:
    """The 8 projective parameters mapping crop pixels to source pixels for ``geometry``."""
    canvas_size = _scaled_size(image_size, geometry.scale)
    matrix = (_canvas_to_source(image_size, canvas_size, geometry.scale, geometry.angle_degrees)
              @ _crop_to_canvas(geometry, crop_size))
    return _projective_parameters(matrix)


def _warp(image: tf.Tensor, transform: tf.Tensor, output_size: tf.Tensor, interpolation: str,
          fill_value: float) -> tf.Tensor:
    """Resamples one HxWxC or HxW image at ``output_size`` through ``transform``."""
    batched = image[tf.newaxis, ..., tf.newaxis] if image.shape.rank == 2 else image[tf.newaxis]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=batched, transforms=transform[tf.newaxis], output_shape=output_size,
        fill_value=fill_value, interpolation=interpolation, fill_mode='CONSTANT')
    return warped[0, ..., 0] if image.shape.rank == 2 else warped[0]


def _resample(image: tf.Tensor, label: tf.Tensor, transform: tf.Tensor,
              output_size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised float32 image (bilinear, padding = mean) and int32 label (nearest, padding =
    IGNORE_LABEL), both resampled through the same crop -> source ``transform``."""
    centred = _warp(_centre(image), transform, output_size, 'BILINEAR', 0.0)
    warped_label = _warp(label, transform, output_size, 'NEAREST', float(IGNORE_LABEL))
    return _scale_by_std(centred), tf.cast(warped_label, tf.int32)


def _jitter_photometric(image: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Random contrast (about the image's mean grey) then brightness, on float RGB in [0, 255],
    clipped once to [0, 255]; both factors ~ U(1 - strength, 1 + strength)."""
    brightness = _uniform(seed, _BRIGHTNESS, 1.0 - strength, 1.0 + strength)
    contrast = _uniform(seed, _CONTRAST, 1.0 - strength, 1.0 + strength)
    grey = tf.reduce_mean(image)
    return tf.clip_by_value(brightness * (contrast * (image - grey) + grey), 0.0, 255.0)


def train_transform(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, *,
                    crop_size: tuple[int, int], scale_range: tuple[float, float],
                    rotation_degrees: float, flip: bool,
                    photometric: float) -> tuple[tf.Tensor, tf.Tensor]:
    """A random training crop: uint8 HxWx3 image, HxW train-id label, int [2] stateless seed ->
    (float32 crop_h x crop_w x 3 normalised image, int32 crop_h x crop_w label).

    Image and label share one draw of scale ~ U(scale_range), angle ~ U(+-rotation_degrees),
    flip (p = 0.5 if ``flip``) and crop position, uniform over the scaled canvas or, where the
    canvas is smaller than the crop, placing it at a uniform offset inside the crop (the rest is
    padding). ``photometric`` > 0 jitters brightness and contrast of the image only, before
    normalisation; the padding stays at the mean. Arguments are checked when called (at graph
    construction), raising ``ConfigError``.
    """
    _check_photometric(photometric)
    image, label = _as_image_and_label(image, label)
    image_size = tf.shape(image)[:2]
    geometry = sample_geometry(seed, image_size, crop_size=crop_size, scale_range=scale_range,
                               rotation_degrees=rotation_degrees, flip=flip)
    if photometric > 0:
        image = _jitter_photometric(tf.cast(image, tf.float32), seed, photometric)
    image, label = _resample(image, label, crop_transform(geometry, image_size, crop_size),
                             tf.constant(crop_size, tf.int32))
    return tf.ensure_shape(image, (*crop_size, 3)), tf.ensure_shape(label, crop_size)


def eval_transform(image: tf.Tensor, label: tf.Tensor, *,
                   scale: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
    """The full image for evaluation, resized by ``scale`` (image bilinear, label nearest):
    (float32 normalised image, int32 label). Scale 1.0 is an exact pass-through."""
    if not scale > 0:
        raise ConfigError(f'scale={scale} must be > 0; set config.data.eval_scale to e.g. 1.0.')
    image, label = _as_image_and_label(image, label)
    if scale == 1.0:
        return normalize(image), tf.cast(label, tf.int32)
    image_size = tf.shape(image)[:2]
    factor = tf.constant(scale, tf.float32)
    output_size = _scaled_size(image_size, factor)
    transform = _projective_parameters(
        _canvas_to_source(image_size, output_size, factor, tf.zeros([])))
    return _resample(image, label, transform, output_size)
