"""Joint image/label augmentation for tf.data: one affine resampling pass per example.

Scale, rotation, horizontal flip and crop compose into a single map from crop pixels to source
pixels, applied once with ``ImageProjectiveTransformV3``: only the crop's pixels are computed,
which at 1024x2048 is several times cheaper than resizing, rotating and then cropping the full
image. The image is resampled bilinearly; the label with nearest neighbour only, so it never
holds an interpolated id. Every pixel that comes from outside the source (padding, rotation
corners) is ``IGNORE_LABEL`` in the label and the ImageNet mean (0 after normalisation) in the
image.

Pixel convention (``seg_jax.data.warp``): pixel ``(row, col)`` has its centre at the continuous
point ``(x=col, y=row)``, as in the transform op. Scaling and rotation act about the centres of
the source and of the scaled canvas, so with scale 1 and angle 0 the map is an integer translation (plus
mirror) and flip and crop are exact copies.

Randomness is stateless: every draw is a pure function of the per-example seed, each quantity
from its own stream, so augmentation can be replayed from (seed, position) when training resumes
and a change to one option (say, the rotation range) does not change the other draws.

Two pieces of mmsegmentation's Cityscapes recipe are options, off by default: ``cat_max_ratio``
redraws the crop position (up to 10 times) while one class dominates the crop, and the 'mmseg'
``photometric_style`` applies its PhotoMetricDistortion to the 8-bit crop (``photometric``).
"""

from typing import Any, NamedTuple, Sequence

import ml_collections
import tensorflow as tf

from seg_jax.data import warp
from seg_jax.data.crops import check_crop_size, check_optional_size
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.data.photometric import (BRIGHTNESS_DELTA, CONTRAST_RANGE, HUE_DELTA,
                                      SATURATION_RANGE, Distortion, check_photometric, distort,
                                      jitter)
from seg_jax.errors import ConfigError, ShapeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Mean and 1 / std in [0, 255] units: centring before the warp lets it fill padding with 0. A
# multiply (not a divide, which graph optimisation rewrites into one) keeps eager and traced
# results bit-identical.
MEAN_255 = tuple(255.0 * m for m in IMAGENET_MEAN)
INVERSE_STD_255 = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)

# One stateless stream per random quantity, folded into the example seed. New streams go at the
# end, so that adding one leaves every existing draw as it was.
_SCALE, _ANGLE, _FLIP, _TOP, _LEFT, _BRIGHTNESS, _CONTRAST = range(7)
# Redraw k of the crop position takes its top and left from streams _TOP and _LEFT of the seed
# folded with _CROP_REDRAW, then k.
_CROP_REDRAW = 7
(_BRIGHTNESS_ON, _BRIGHTNESS_DELTA, _CONTRAST_FIRST, _CONTRAST_ON, _CONTRAST_ALPHA,
 _SATURATION_ON, _SATURATION_ALPHA, _HUE_ON, _HUE_DELTA) = range(8, 17)

# mmseg's RandomCrop checks a crop at most this many times, then takes the next one unchecked.
MAX_CROP_CHECKS = 10


class Geometry(NamedTuple):
    """One example's random geometry; ``top``/``left`` index the scaled canvas and may be
    negative where the canvas is smaller than the crop (the source then sits inside the crop)."""
    scale: tf.Tensor  # float32 resize factor
    angle_degrees: tf.Tensor  # float32 rotation about the canvas centre
    flip: tf.Tensor  # bool: mirror the crop left-right
    top: tf.Tensor  # int32 crop row in the scaled canvas
    left: tf.Tensor  # int32 crop column in the scaled canvas


def _centre(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) - MEAN_255


def _scale_by_std(centred: tf.Tensor) -> tf.Tensor:
    return centred * INVERSE_STD_255


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
                         rotation_degrees: float, base_size: tuple[int, int] | None) -> None:
    check_crop_size(crop_size)
    check_optional_size(base_size, 'base_size', 'short side, long side', '(512, 2048)')
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ConfigError(f'scale_range={scale_range} must be (low, high) with 0 < low <= high; '
                          'set config.data.scale_range to e.g. (0.5, 2.0), or (1.0, 1.0) for no '
                          'rescaling.')
    if not rotation_degrees >= 0:
        raise ConfigError(f'rotation_degrees={rotation_degrees} must be >= 0 (angles are drawn '
                          'from [-r, r]); set config.data.rotation_degrees to e.g. 3.0, or 0.')


def _check_cat_max_ratio(cat_max_ratio: float) -> None:
    if not 0 < cat_max_ratio <= 1:
        raise ConfigError(f'cat_max_ratio={cat_max_ratio} must be in (0, 1]: a crop is redrawn '
                          'while its largest class holds this share of its labelled pixels or '
                          'more; set config.data.cat_max_ratio to e.g. 0.75 (mmsegmentation\'s '
                          'Cityscapes recipe), or 1.0 to turn the redraws off.')


def check_train_options(*, crop_size: tuple[int, int], scale_range: tuple[float, float],
                        rotation_degrees: float, photometric: float,
                        photometric_style: str = 'jitter', cat_max_ratio: float = 1.0,
                        base_size: tuple[int, int] | None = None) -> None:
    """Raises ``ConfigError`` for ``train_transform`` options it cannot honour.

    A run checks its config's options with the rest of the config before it builds anything
    (``seg_jax.config_checks``); ``train_transform`` and the training dataset check them too,
    for their own callers, before tf.data traces anything: an error raised while tf.data
    traces its map function reaches the user wrapped in tf's StagingError rather than as the
    ConfigError that ``main`` prints without a traceback.
    """
    _check_geometry_args(crop_size, scale_range, rotation_degrees, base_size)
    check_photometric(photometric, photometric_style)
    _check_cat_max_ratio(cat_max_ratio)


def train_options(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """``train_transform``'s options (all but ``flip``) as ``config.data`` sets them."""
    return dict(crop_size=tuple(data.crop_size), scale_range=tuple(data.scale_range),
                rotation_degrees=data.rotation_degrees, photometric=data.photometric,
                photometric_style=data.photometric_style, cat_max_ratio=data.cat_max_ratio,
                base_size=None if data.base_size is None else tuple(data.base_size))


def base_scale(image_size, base_size: Sequence[int]):
    """The factor that fits an image of (height, width) ``image_size`` to ``base_size`` (short
    side, long side) keeping its aspect ratio: the largest size with neither side over its
    bound. It is mmsegmentation's ``Resize(scale=(long, short), keep_ratio=True)``, the base its
    VOC and ADE20K recipes draw their random factor around; for tensors or numbers alike."""
    short, long = min(base_size), max(base_size)
    height, width = image_size[0], image_size[1]
    if isinstance(height, tf.Tensor):
        return tf.minimum(long / tf.maximum(height, width), short / tf.minimum(height, width))
    return min(long / max(height, width), short / min(height, width))


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
                    flip: bool, base_size: tuple[int, int] | None = None) -> Geometry:
    """Draws the scale, angle, flip and crop position that ``train_transform`` applies.

    Exposed so the distribution of the draws, and the exactness of pure flips and crops, can be
    checked without resampling anything. ``image_size`` is the source's (height, width). The
    scale is a factor of the image's own size, or with ``base_size`` of its size fitted to it
    (``base_scale``).
    """
    _check_geometry_args(crop_size, scale_range, rotation_degrees, base_size)
    scale = _uniform(seed, _SCALE, scale_range[0], scale_range[1])
    if base_size is not None:
        scale *= base_scale(tf.cast(image_size, tf.float32), base_size)
    angle = _uniform(seed, _ANGLE, -rotation_degrees, rotation_degrees)
    flipped = _uniform(seed, _FLIP, 0.0, 1.0) < 0.5 if flip else tf.constant(False)
    canvas = _scaled_size(image_size, scale)
    return Geometry(scale=scale, angle_degrees=angle, flip=flipped,
                    top=_crop_offset(seed, _TOP, canvas[0], crop_size[0]),
                    left=_crop_offset(seed, _LEFT, canvas[1], crop_size[1]))


def redraw_crop_position(seed: tf.Tensor, geometry: Geometry, redraw: tf.Tensor | int,
                         image_size: tf.Tensor, crop_size: tuple[int, int]) -> Geometry:
    """``geometry`` with the crop position of redraw number ``redraw`` (1, 2, ...).

    Drawn like the first position, over the same scaled canvas, but from streams of its own: each
    redraw differs from the others and replays exactly, and the first draw is untouched.
    """
    redraw_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(seed, _CROP_REDRAW), redraw)
    canvas = _scaled_size(image_size, geometry.scale)
    return geometry._replace(top=_crop_offset(redraw_seed, _TOP, canvas[0], crop_size[0]),
                             left=_crop_offset(redraw_seed, _LEFT, canvas[1], crop_size[1]))


def sample_distortion(seed: tf.Tensor) -> Distortion:
    """Draws mmseg's PhotoMetricDistortion parameters for the 'mmseg' photometric style: each
    step applied with p = 0.5, contrast first or last with p = 0.5, values from mmseg's ranges.

    mmseg draws them in turn from one generator (skipping the values of skipped steps); here each
    has its own stream, which gives the same joint distribution and replays from the seed.
    """
    def coin(stream: int) -> tf.Tensor:
        return _uniform(seed, stream, 0.0, 1.0) < 0.5

    return Distortion(
        brightness_on=coin(_BRIGHTNESS_ON),
        brightness_delta=_uniform(seed, _BRIGHTNESS_DELTA, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA),
        contrast_first=coin(_CONTRAST_FIRST),
        contrast_on=coin(_CONTRAST_ON),
        contrast_alpha=_uniform(seed, _CONTRAST_ALPHA, *CONTRAST_RANGE),
        saturation_on=coin(_SATURATION_ON),
        saturation_alpha=_uniform(seed, _SATURATION_ALPHA, *SATURATION_RANGE),
        hue_on=coin(_HUE_ON),
        hue_delta=_uniform(seed, _HUE_DELTA, -HUE_DELTA, HUE_DELTA, tf.int32))  # -18..17


def crop_transform(geometry: Geometry, image_size: tf.Tensor,
                   crop_size: tuple[int, int]) -> tf.Tensor:
    """The 8 projective parameters mapping crop pixels to source pixels for ``geometry``."""
    canvas_size = _scaled_size(image_size, geometry.scale)
    matrix = (warp.canvas_to_source(image_size, canvas_size, geometry.scale,
                                    geometry.angle_degrees)
              @ warp.crop_to_canvas(geometry.flip, geometry.left, geometry.top, crop_size))
    return warp.projective_parameters(matrix)


def _resample(image: tf.Tensor, label: tf.Tensor, transform: tf.Tensor,
              output_size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised float32 image (bilinear, padding = mean) and int32 label (nearest, padding =
    IGNORE_LABEL), both resampled through the same crop -> source ``transform``."""
    centred = warp.warp(_centre(image), transform, output_size, 'BILINEAR', 0.0)
    warped_label = warp.warp_label(label, transform, output_size)
    return _scale_by_std(centred), tf.cast(warped_label, tf.int32)


def _resample_distorted(image: tf.Tensor, label: tf.Tensor, transform: tf.Tensor,
                        output_size: tf.Tensor,
                        distortion: Distortion) -> tuple[tf.Tensor, tf.Tensor]:
    """``_resample`` for the 'mmseg' photometric style, which distorts the 8-bit crop.

    The crop is resampled unnormalised and rounded to integers (half up, as cv2's fixed-point
    uint8 resize rounds), distorted, then normalised. Its padding is warped at the mean, like
    ``_resample``'s, but the distortion moves it off the mean, so every pixel from outside the
    source (found by warping a mask of ones nearest, like the label) is set to exactly 0.
    """
    centred = warp.warp(_centre(image), transform, output_size, 'BILINEAR', 0.0)
    crop = tf.clip_by_value(tf.floor(centred + MEAN_255 + 0.5), 0.0, 255.0)
    ones = tf.ones(tf.shape(image)[:2])
    inside = warp.warp(ones, transform, output_size, 'NEAREST', 0.0) > 0
    distorted = normalize(distort(crop, distortion))
    return (tf.where(inside[..., tf.newaxis], distorted, 0.0),
            tf.cast(warp.warp_label(label, transform, output_size), tf.int32))


def _balanced(label_crop: tf.Tensor, cat_max_ratio: float) -> tf.Tensor:
    """mmseg's test of a crop: more than one class among its labelled (not IGNORE_LABEL)
    pixels, and the largest holding less than ``cat_max_ratio`` of them (float64, as numpy)."""
    counts = tf.math.bincount(tf.reshape(tf.cast(label_crop, tf.int32), [-1]),
                              minlength=IGNORE_LABEL, maxlength=IGNORE_LABEL,
                              dtype=tf.int64)  # ids >= IGNORE_LABEL are not counted
    largest_share = tf.math.divide_no_nan(tf.cast(tf.reduce_max(counts), tf.float64),
                                          tf.cast(tf.reduce_sum(counts), tf.float64))
    return (tf.math.count_nonzero(counts) > 1) & (largest_share < cat_max_ratio)


def balance_crop(seed: tf.Tensor, geometry: Geometry, label: tf.Tensor, *,
                 crop_size: tuple[int, int],
                 cat_max_ratio: float) -> tuple[Geometry, tf.Tensor]:
    """mmseg's RandomCrop with ``cat_max_ratio``: redraws the crop position while the crop's
    label fails ``_balanced``. Returns the geometry and the number of positions drawn (int32).

    Like mmseg, at most ``MAX_CROP_CHECKS`` crops are checked; if all fail, one more position is
    drawn and taken unchecked (11 draws). Only the position is redrawn: scale, angle and flip
    are one draw each, as in mmseg, which resizes before it crops and flips after. Each check
    warps only the label, nearest, through the candidate's transform, so it counts exactly the
    labels that crop would have (padding is IGNORE_LABEL, not counted, as in mmseg, which pads
    after cropping).
    """
    label = tf.convert_to_tensor(label)
    image_size = tf.shape(label)[:2]
    output_size = tf.constant(crop_size, tf.int32)

    def at(top: tf.Tensor, left: tf.Tensor) -> Geometry:
        return geometry._replace(top=top, left=left)

    def unbalanced(top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        transform = crop_transform(at(top, left), image_size, crop_size)
        return ~_balanced(warp.warp_label(label, transform, output_size), cat_max_ratio)

    def keep_drawing(draws: tf.Tensor, top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        return tf.cond(draws > MAX_CROP_CHECKS, lambda: tf.constant(False),
                       lambda: unbalanced(top, left))

    def redraw(draws: tf.Tensor, top: tf.Tensor, left: tf.Tensor) -> tuple[tf.Tensor, ...]:
        redrawn = redraw_crop_position(seed, geometry, draws, image_size, crop_size)
        return draws + 1, redrawn.top, redrawn.left

    draws, top, left = tf.while_loop(keep_drawing, redraw,
                                     (tf.constant(1), geometry.top, geometry.left))
    return at(top, left), draws


def _jitter_factors(seed: tf.Tensor, strength: float) -> tuple[tf.Tensor, tf.Tensor]:
    """The 'jitter' style's brightness and contrast factors, both ~ U(1 - s, 1 + s)."""
    return (_uniform(seed, _BRIGHTNESS, 1.0 - strength, 1.0 + strength),
            _uniform(seed, _CONTRAST, 1.0 - strength, 1.0 + strength))


def train_transform(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, *,
                    crop_size: tuple[int, int], scale_range: tuple[float, float],
                    rotation_degrees: float, flip: bool, photometric: float,
                    photometric_style: str = 'jitter', cat_max_ratio: float = 1.0,
                    base_size: tuple[int, int] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """A random training crop: uint8 HxWx3 image, HxW train-id label, int [2] stateless seed ->
    (float32 crop_h x crop_w x 3 normalised image, int32 crop_h x crop_w label).

    Image and label share one draw of scale ~ U(scale_range) (times ``base_scale`` with
    ``base_size``), angle ~ U(+-rotation_degrees),
    flip (p = 0.5 if ``flip``) and crop position, uniform over the scaled canvas or, where the
    canvas is smaller than the crop, placing it at a uniform offset inside the crop (the rest is
    padding). ``cat_max_ratio`` < 1 redraws the position while one class holds that share of
    the crop's labelled pixels or more (``balance_crop``). The image only is then changed by
    ``photometric_style`` (see ``seg_jax.data.photometric``): 'jitter' of strength
    ``photometric`` > 0 before the warp, or ('mmseg') mmsegmentation's distortion of the 8-bit
    crop after it; either way the padding stays at the mean (0). Arguments are checked when
    called (at graph construction), raising ``ConfigError``.
    """
    check_train_options(crop_size=crop_size, scale_range=scale_range,
                        rotation_degrees=rotation_degrees, photometric=photometric,
                        photometric_style=photometric_style, cat_max_ratio=cat_max_ratio,
                        base_size=base_size)
    image, label = _as_image_and_label(image, label)
    image_size = tf.shape(image)[:2]
    geometry = sample_geometry(seed, image_size, crop_size=crop_size, scale_range=scale_range,
                               rotation_degrees=rotation_degrees, flip=flip, base_size=base_size)
    if cat_max_ratio < 1:
        geometry, _ = balance_crop(seed, geometry, label, crop_size=crop_size,
                                   cat_max_ratio=cat_max_ratio)
    transform = crop_transform(geometry, image_size, crop_size)
    output_size = tf.constant(crop_size, tf.int32)
    if photometric_style == 'mmseg':
        image, label = _resample_distorted(image, label, transform, output_size,
                                           sample_distortion(seed))
    else:
        if photometric > 0:
            image = jitter(tf.cast(image, tf.float32), *_jitter_factors(seed, photometric))
        image, label = _resample(image, label, transform, output_size)
    return tf.ensure_shape(image, (*crop_size, 3)), tf.ensure_shape(label, crop_size)


def eval_transform(image: tf.Tensor, label: tf.Tensor, *, scale: float = 1.0,
                   canvas: Sequence[int] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """The full image for evaluation, resized by ``scale`` (image bilinear, label nearest):
    (float32 normalised image, int32 label). Scale 1.0 is an exact pass-through.

    With ``canvas`` (height, width) the images of a data set of many sizes (VOC, ADE20K) share
    one shape, so they batch: an image larger than the canvas (after ``scale``) is shrunk
    further, keeping its aspect ratio, until it fits; every image is then padded at the bottom
    and right to the canvas, the image at the mean and the label void, so the padding counts in
    no metric and an image that fits is scored at its own resolution.
    """
    if not scale > 0:
        raise ConfigError(f'scale={scale} must be > 0; set config.data.eval_scale to e.g. 1.0.')
    check_optional_size(canvas, 'eval_size', 'height, width', '(512, 512)')
    image, label = _as_image_and_label(image, label)
    image_size = tf.shape(image)[:2]
    factor = tf.constant(scale, tf.float32)
    if canvas is not None:
        room = tf.constant(canvas, tf.float32) / (tf.cast(image_size, tf.float32) * factor)
        factor *= tf.minimum(1.0, tf.reduce_min(room))

    def resized() -> tuple[tf.Tensor, tf.Tensor]:
        output_size = _scaled_size(image_size, factor)
        if canvas is not None:
            output_size = tf.minimum(output_size, canvas)
        transform = warp.projective_parameters(
            warp.canvas_to_source(image_size, output_size, factor, tf.zeros([])))
        return _resample(image, label, transform, output_size)

    if scale == 1.0 and canvas is None:
        return normalize(image), tf.cast(label, tf.int32)
    image, label = tf.cond(factor == 1.0, lambda: (normalize(image), tf.cast(label, tf.int32)),
                           resized)
    if canvas is None:
        return image, label
    padding = tf.constant(canvas) - tf.shape(label)
    image = tf.pad(image, [[0, padding[0]], [0, padding[1]], [0, 0]])
    label = tf.pad(label, [[0, padding[0]], [0, padding[1]]], constant_values=IGNORE_LABEL)
    return tf.ensure_shape(image, (*canvas, 3)), tf.ensure_shape(label, tuple(canvas))
