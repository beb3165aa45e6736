"""Photometric augmentation of training images, in the style ``config.data.photometric_style``
names. Both change the image only, never the label, and leave padding at the mean.

* ``'jitter'`` (the default): random contrast about the image's mean grey, then brightness, both
  factors ~ U(1 - p, 1 + p) for ``p = config.data.photometric``, on the whole float image before
  the warp, clipped once to [0, 255]. Cheap, and continuous in its parameters.
* ``'mmseg'``: mmsegmentation's ``PhotoMetricDistortion``, as its Cityscapes recipe applies it:
  on the 8-bit crop after resize, crop and flip, before normalisation. In order, each step with
  p = 0.5: brightness ``+ U(-32, 32)``; contrast ``* U(0.5, 1.5)`` here or, with p = 0.5, last;
  saturation ``S * U(0.5, 1.5)`` in OpenCV's 8-bit HSV; hue ``H + randint(-18, 18)`` (-18..17,
  modulo 180); every step saturates to [0, 255] and truncates to an integer, as mmseg's
  ``convert`` does on uint8 images. ``config.data.photometric`` must then be 0: it is the
  jitter's strength, and this distortion's ranges are mmseg's fixed defaults.

The functions here are deterministic: ``augment`` draws the random parameters from its stateless
streams and passes them in, so each step can be checked on its own against its definition.
Images are float32 tensors; in the 'mmseg' style they hold integer values, like the uint8
arrays mmseg works on.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from seg_jax.errors import ConfigError

STYLES = ('jitter', 'mmseg')

# mmseg's PhotoMetricDistortion defaults (brightness_delta, contrast_range, saturation_range,
# hue_delta), which its Cityscapes recipe uses unchanged.
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18

# OpenCV's 8-bit RGB -> HSV is fixed point: divisions by V and by max - min are multiplications
# by these tables, in units of 2**-12, rounded once at the end. Rounding the exact quotients
# instead differs from it in about 2% of colours, so the tables are rebuilt here as OpenCV
# builds them (cvRound of the double quotient; no quotient is a tie).
_HSV_SHIFT = 12
_DIVISORS = np.arange(1, 256, dtype=np.float64)
_SATURATION_DIVISION = np.concatenate([[0], np.rint((255 << _HSV_SHIFT) / _DIVISORS)])
_HUE_DIVISION = np.concatenate([[0], np.rint((180 << _HSV_SHIFT) / (6.0 * _DIVISORS))])

# OpenCV's HSV -> RGB picks each channel from four values by sector (of six, 60 degrees each):
# its sector_data table, which lists (b, g, r), rewritten as (r, g, b).
_SECTOR_TO_RGB = ((0, 3, 1), (2, 0, 1), (1, 0, 3), (1, 2, 0), (3, 1, 0), (0, 1, 2))


class Distortion(NamedTuple):
    """One example's draws of mmseg's PhotoMetricDistortion; a step whose flag is False is
    skipped (its value then does not matter)."""
    brightness_on: tf.Tensor  # bool
    brightness_delta: tf.Tensor  # float32 in [-32, 32)
    contrast_first: tf.Tensor  # bool: contrast right after brightness (mmseg's mode 1), else last
    contrast_on: tf.Tensor  # bool
    contrast_alpha: tf.Tensor  # float32 in [0.5, 1.5)
    saturation_on: tf.Tensor  # bool
    saturation_alpha: tf.Tensor  # float32 in [0.5, 1.5)
    hue_on: tf.Tensor  # bool
    hue_delta: tf.Tensor  # int32 in [-18, 17]


def check_photometric(photometric: float, style: str) -> None:
    """Refuses an unknown style, a jitter strength outside [0, 1), and a strength with 'mmseg'
    (which has no strength to set: a non-zero value would silently mean nothing)."""
    if style not in STYLES:
        raise ConfigError(f'photometric_style={style!r} must be one of {", ".join(STYLES)}; set '
                          "config.data.photometric_style to 'jitter' (brightness / contrast "
                          "jitter of strength config.data.photometric) or 'mmseg' "
                          "(mmsegmentation's PhotoMetricDistortion).")
    if not 0 <= photometric < 1:
        raise ConfigError(f'photometric={photometric} must be in [0, 1): brightness and contrast '
                          'factors are drawn from [1 - p, 1 + p] and must stay positive; set '
                          'config.data.photometric to e.g. 0.3, or 0 to turn jitter off.')
    if style == 'mmseg' and photometric != 0:
        raise ConfigError(f"photometric={photometric} must be 0 with photometric_style='mmseg': "
                          "it is the strength of the 'jitter' style, and PhotoMetricDistortion's "
                          'ranges are fixed; set config.data.photometric=0, or '
                          "config.data.photometric_style='jitter' to keep the jitter.")


def jitter(image: tf.Tensor, brightness: tf.Tensor, contrast: tf.Tensor) -> tf.Tensor:
    """The 'jitter' style on float RGB in [0, 255]: contrast about the image's mean grey, then
    brightness, clipped once to [0, 255] (one clip keeps the two factors independent)."""
    grey = tf.reduce_mean(image)
    return tf.clip_by_value(brightness * (contrast * (image - grey) + grey), 0.0, 255.0)


def convert(image: tf.Tensor, alpha: tf.Tensor | float = 1.0,
            beta: tf.Tensor | float = 0.0) -> tf.Tensor:
    """mmseg's ``convert``: ``x * alpha + beta`` in float32, saturated to [0, 255], truncated to
    an integer (its ``astype(np.uint8)``). Contrast is this plain multiply, not one about the
    mean, so a dark image stays dark."""
    return tf.floor(tf.clip_by_value(image * alpha + beta, 0.0, 255.0))


def rgb_to_hsv(rgb: tf.Tensor) -> tf.Tensor:
    """OpenCV's 8-bit ``COLOR_RGB2HSV``, bit for bit: ...x3 integer RGB in [0, 255] -> H in
    [0, 180) (2 degrees a unit), S and V in [0, 255], as float32 integers.

    V = max, S = 255 (V - min) / V and H = 30 h' / (max - min) with h' the sector formula, each
    division done as OpenCV does it, by its fixed-point tables (checked against cv2 4.5 to 5.0
    on all 2**24 colours). Grey (max == min) has H = S = 0.
    """
    channels = tf.cast(rgb, tf.int32)
    red, green, blue = tf.unstack(channels, axis=-1)
    value = tf.reduce_max(channels, axis=-1)
    spread = value - tf.reduce_min(channels, axis=-1)
    half = 1 << (_HSV_SHIFT - 1)
    saturation = (spread * tf.gather(tf.constant(_SATURATION_DIVISION, tf.int32), value)
                  + half) // (1 << _HSV_SHIFT)
    # Hue before its division, in units of spread / 60 degrees from the sector's start.
    sector_hue = tf.where(value == red, green - blue,
                          tf.where(value == green, blue - red + 2 * spread,
                                   red - green + 4 * spread))
    hue = (sector_hue * tf.gather(tf.constant(_HUE_DIVISION, tf.int32), spread)
           + half) // (1 << _HSV_SHIFT)  # floor division: OpenCV's arithmetic shift
    hue = tf.where(hue < 0, hue + 180, hue)
    return tf.cast(tf.stack([hue, saturation, value], axis=-1), tf.float32)


def _one_minus_product(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """float32 ``1 - a b`` rounded once, as the fused multiply-add that OpenCV's compiled vector
    code uses: the float32 product is exact in float64, and rounding the float64 difference to
    float32 gives the fused result on every input of ``hsv_to_rgb`` (checked exhaustively)."""
    product = tf.cast(a, tf.float64) * tf.cast(b, tf.float64)
    return tf.cast(1.0 - product, tf.float32)


def hsv_to_rgb(hsv: tf.Tensor) -> tf.Tensor:
    """OpenCV's 8-bit ``COLOR_HSV2RGB``, bit for bit: ...x3 HSV (H in [0, 180), S and V in
    [0, 255], as ``rgb_to_hsv`` gives) -> integer RGB in [0, 255] as float32.

    In OpenCV's float32 arithmetic: h = H * 6/180, s = S/255, v = V/255, the four candidate
    values v, v(1 - s), v(1 - s f), v(1 - s(1 - f)) for the fraction f of h in its sector, each
    channel picked by sector, then ``255 * value`` truncated. That is OpenCV's vector code, which
    converts each row in blocks of 32 pixels (AVX2; 16 with SSE or NEON); the rest of a row goes
    through its scalar code, which rounds instead (and has no fused multiply-add). A row whose
    width is a multiple of the block, like mmseg's 1024-wide Cityscapes crops, is therefore
    reproduced exactly: checked against cv2 4.5 to 5.0 on all 180 * 256 * 256 inputs.
    """
    hue, saturation, value = tf.unstack(tf.cast(hsv, tf.float32), axis=-1)
    hue = hue * tf.constant(6.0 / 180.0, tf.float32)
    s = saturation * tf.constant(1.0 / 255.0, tf.float32)
    v = value * tf.constant(1.0 / 255.0, tf.float32)
    sector = tf.floor(hue)
    fraction = hue - sector
    candidates = tf.stack([v, v * (1.0 - s), v * _one_minus_product(s, fraction),
                           v * _one_minus_product(s, 1.0 - fraction)], axis=-1)
    picks = tf.gather(tf.constant(_SECTOR_TO_RGB, tf.int32), tf.cast(sector, tf.int32))
    rgb = tf.gather(candidates, picks, batch_dims=candidates.shape.rank - 1)
    return tf.floor(rgb * 255.0)  # every candidate is in [0, v]: no saturation needed


def _saturate(image: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    hsv = rgb_to_hsv(image)
    return hsv_to_rgb(tf.stack([hsv[..., 0], convert(hsv[..., 1], alpha=alpha), hsv[..., 2]],
                               axis=-1))


def _shift_hue(image: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    hsv = rgb_to_hsv(image)
    hue = tf.math.floormod(hsv[..., 0] + tf.cast(delta, tf.float32), 180.0)
    return hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))


def _maybe(apply: tf.Tensor, step, image: tf.Tensor) -> tf.Tensor:
    """``step(image)`` where ``apply``, else ``image`` unchanged (not recomputed: an HSV round
    trip is not the identity)."""
    return tf.cond(apply, lambda: step(image), lambda: image)


def distort(image: tf.Tensor, distortion: Distortion) -> tf.Tensor:
    """mmseg's PhotoMetricDistortion with the given draws, on HxWx3 integer RGB in [0, 255] as
    float32 -> the same, in mmseg's order (brightness, contrast if first, saturation, hue,
    contrast if last). mmseg converts BGR images; the HSV of a BGR image read as BGR is the HSV
    of the RGB image read as RGB, so working on RGB changes nothing."""
    d = distortion

    def contrast(x: tf.Tensor) -> tf.Tensor:
        return convert(x, alpha=d.contrast_alpha)

    image = _maybe(d.brightness_on, lambda x: convert(x, beta=d.brightness_delta), image)
    image = _maybe(d.contrast_on & d.contrast_first, contrast, image)
    image = _maybe(d.saturation_on, lambda x: _saturate(x, d.saturation_alpha), image)
    image = _maybe(d.hue_on, lambda x: _shift_hue(x, d.hue_delta), image)
    return _maybe(d.contrast_on & ~d.contrast_first, contrast, image)
