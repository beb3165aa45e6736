"""The one resampling pass of augmentation: affine maps as 3x3 matrices, and the warp.

Pixel convention: pixel ``(row, col)`` has its centre at the continuous point ``(x=col,
y=row)``, as in TensorFlow's ``ImageProjectiveTransformV3``, which maps every output pixel
through a matrix to the source point it samples. Composing scale, rotation, flip and crop into
one such matrix means only the crop's pixels are ever computed.
"""

import math

import tensorflow as tf

from seg_jax.data.labels import IGNORE_LABEL


def affine(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor, tx: tf.Tensor,
            ty: tf.Tensor) -> tf.Tensor:
    """3x3 homogeneous matrix taking (x, y, 1) to (a x + b y + tx, c x + d y + ty, 1)."""
    zero, one = tf.zeros([]), tf.ones([])
    return tf.reshape(tf.stack([a, b, tx, c, d, ty, zero, zero, one]), [3, 3])


def translation(tx: tf.Tensor, ty: tf.Tensor) -> tf.Tensor:
    one, zero = tf.ones([]), tf.zeros([])
    return affine(one, zero, zero, one, tx, ty)


def centre_point(size: tf.Tensor) -> tf.Tensor:
    """Continuous (x, y) of the centre of an image of (height, width) ``size``."""
    return (tf.cast(size[::-1], tf.float32) - 1.0) / 2.0


def canvas_to_source(image_size: tf.Tensor, canvas_size: tf.Tensor, scale: tf.Tensor,
                      angle_degrees: tf.Tensor) -> tf.Tensor:
    """Canvas point -> source point for a source scaled by ``scale`` and rotated by the angle
    about its centre; the canvas centre maps to the source centre."""
    radians = angle_degrees * (math.pi / 180.0)
    cos, sin = tf.cos(radians) / scale, tf.sin(radians) / scale
    source_centre, canvas_centre = centre_point(image_size), centre_point(canvas_size)
    rotate_and_shrink = affine(cos, -sin, sin, cos, tf.zeros([]), tf.zeros([]))
    return (translation(source_centre[0], source_centre[1]) @ rotate_and_shrink
            @ translation(-canvas_centre[0], -canvas_centre[1]))


def crop_to_canvas(flip: tf.Tensor, left: tf.Tensor, top: tf.Tensor,
                   crop_size: tuple[int, int]) -> tf.Tensor:
    """Crop pixel -> canvas point: mirror within the crop if flipped, then offset by the crop's
    top-left corner (``left``, ``top``) on the canvas."""
    mirror = tf.where(flip, -1.0, 1.0)
    mirror_shift = tf.where(flip, float(crop_size[1] - 1), 0.0)
    left, top = tf.cast(left, tf.float32), tf.cast(top, tf.float32)
    one, zero = tf.ones([]), tf.zeros([])
    return affine(mirror, zero, zero, one, mirror_shift + left, top)


def projective_parameters(matrix: tf.Tensor) -> tf.Tensor:
    """The op's 8 parameters of a 3x3 homogeneous matrix (its last entry is 1)."""
    return tf.reshape(matrix, [9])[:8]


def warp(image: tf.Tensor, transform: tf.Tensor, output_size: tf.Tensor, interpolation: str,
          fill_value: float) -> tf.Tensor:
    """Resamples one HxWxC or HxW image at ``output_size`` through ``transform``."""
    batched = image[tf.newaxis, ..., tf.newaxis] if image.shape.rank == 2 else image[tf.newaxis]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=batched, transforms=transform[tf.newaxis], output_shape=output_size,
        fill_value=fill_value, interpolation=interpolation, fill_mode='CONSTANT')
    return warped[0, ..., 0] if image.shape.rank == 2 else warped[0]


def warp_label(label: tf.Tensor, transform: tf.Tensor, output_size: tf.Tensor) -> tf.Tensor:
    """The label resampled nearest (never an interpolated id), padding ``IGNORE_LABEL``."""
    return warp(label, transform, output_size, 'NEAREST', float(IGNORE_LABEL))
