"""The photometric styles: mmseg's PhotoMetricDistortion step by step against its definition and
OpenCV's 8-bit HSV, its draws, its place in train_transform and the pipeline; the jitter kept."""

import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from seg_jax.data import augment, photometric, pipeline
from seg_jax.data.split import Split
from seg_jax.errors import ConfigError

MEAN_255 = 255.0 * np.array(augment.IMAGENET_MEAN, np.float32)
STD_255 = 255.0 * np.array(augment.IMAGENET_STD, np.float32)
MMSEG_OPTIONS = dict(crop_size=(48, 56), scale_range=(0.5, 2.0), rotation_degrees=30.0,
                     flip=True, photometric=0.0, photometric_style='mmseg')

# cv2.cvtColor results (RGB2HSV, then HSV2RGB of that), the same in OpenCV 4.5.5, 4.8, 4.10 and
# 5.0. The last four pin OpenCV's arithmetic rather than the textbook formula: S of (7, 5, 30)
# and H of (0, 5, 246) come from its fixed-point division tables (exact rounding gives 212 and
# 119); (1, 2, 3) and (37, 81, 213) come back changed by its truncating HSV -> RGB.
RGB_HSV_RGB = [
    ((128, 128, 128), (0, 0, 128), (128, 128, 128)),
    ((255, 0, 0), (0, 255, 255), (255, 0, 0)),
    ((0, 255, 0), (60, 255, 255), (0, 255, 0)),
    ((0, 0, 255), (120, 255, 255), (0, 0, 255)),
    ((200, 100, 50), (10, 191, 200), (200, 100, 50)),
    ((10, 200, 30), (63, 242, 200), (10, 200, 29)),
    ((250, 3, 251), (150, 252, 251), (251, 2, 250)),
    ((7, 5, 30), (122, 213, 30), None),
    ((0, 5, 246), (120, 255, 246), None),
    ((1, 2, 3), (105, 170, 3), (1, 1, 3)),
    ((37, 81, 213), (112, 211, 213), (36, 83, 213)),
]
# cv2 HSV2RGB of HSV inputs: (0, 1, 1) truncates (rounding gives (1, 1, 1)), (1, 120, 255)
# needs OpenCV's fused multiply-add (a plain float32 multiply and subtract gives 139).
HSV_RGB = [((0, 1, 1), (1, 0, 0)), ((1, 120, 255), (255, 138, 134)),
           ((90, 128, 200), (99, 199, 200)), ((179, 255, 255), (255, 0, 8))]


def seed(k: int) -> tf.Tensor:
    return tf.constant([11, k], tf.int64)


def pixels(colours) -> tf.Tensor:
    return tf.constant(np.array(colours, np.float32))


def random_image(shape=(16, 24, 3), rng_seed: int = 0) -> np.ndarray:
    return np.random.default_rng(rng_seed).integers(0, 256, shape).astype(np.float32)


def only(**steps) -> photometric.Distortion:
    """A Distortion with every step off except ``steps`` (name -> value, or True for a flag)."""
    values = dict(brightness_on=False, brightness_delta=0.0, contrast_first=False,
                  contrast_on=False, contrast_alpha=1.0, saturation_on=False,
                  saturation_alpha=1.0, hue_on=False, hue_delta=0)
    for name, value in steps.items():
        assert name in values
        values[name] = value
        if not name.endswith(('_on', '_first')):
            values[name.rsplit('_', 1)[0] + '_on'] = True
    return photometric.Distortion(**{name: tf.constant(value) for name, value in values.items()})


def test_hsv_conversions_reproduce_opencv_on_known_colours():
    rgb = [entry[0] for entry in RGB_HSV_RGB]
    hsv = photometric.rgb_to_hsv(pixels(rgb)).numpy()
    np.testing.assert_array_equal(hsv, [entry[1] for entry in RGB_HSV_RGB])
    back = photometric.hsv_to_rgb(tf.constant(hsv)).numpy()
    for (_, _, expected), got in zip(RGB_HSV_RGB, back, strict=True):
        if expected is not None:
            np.testing.assert_array_equal(got, expected)
    hsv_inputs, rgb_outputs = zip(*HSV_RGB)
    np.testing.assert_array_equal(photometric.hsv_to_rgb(pixels(hsv_inputs)).numpy(), rgb_outputs)


def test_hsv_of_many_colours_is_within_a_unit_of_the_exact_values():
    rgb = np.random.default_rng(1).integers(0, 256, (4000, 3))
    hsv = photometric.rgb_to_hsv(pixels(rgb)).numpy()
    assert np.all(hsv == np.round(hsv)) and hsv.dtype == np.float32
    value, low = rgb.max(1), rgb.min(1)
    spread = value - low
    np.testing.assert_array_equal(hsv[:, 2], value)
    exact_s = np.where(value > 0, 255.0 * spread / np.maximum(value, 1), 0.0)
    assert np.abs(hsv[:, 1] - exact_s).max() <= 0.53  # rounding, and the table's 2**-12 units
    red, green, blue = rgb.T.astype(float)
    safe = np.maximum(spread, 1)
    sector = np.where(value == red, (green - blue) / safe,
                      np.where(value == green, 2 + (blue - red) / safe, 4 + (red - green) / safe))
    exact_h = np.where(spread > 0, (30.0 * sector) % 180.0, 0.0)
    hue_error = np.abs((hsv[:, 0] - exact_h + 90.0) % 180.0 - 90.0)
    assert hue_error.max() <= 1.0 and (hsv[:, 0] < 180).all() and (hsv[:, 0] >= 0).all()
    back = photometric.hsv_to_rgb(tf.constant(hsv)).numpy()
    assert np.abs(back - rgb).max() <= 6  # OpenCV's round trip: at most 6 over all colours


def test_hue_shift_alone_turns_pure_red_green_and_blue():
    red = pixels([[[255, 0, 0]]])
    green = photometric.distort(red, only(hue_delta=60)).numpy()
    np.testing.assert_array_equal(green[0, 0], (0, 255, 0))
    blue = photometric.distort(red, only(hue_delta=-60)).numpy()  # -60 mod 180 = 120
    np.testing.assert_array_equal(blue[0, 0], (0, 0, 255))
    grey = pixels([[[90, 90, 90]]])
    np.testing.assert_array_equal(photometric.distort(grey, only(hue_delta=17)).numpy(), grey)


def test_brightness_alone_adds_then_saturates_and_truncates():
    image = random_image()
    for delta in (10.7, -31.9, 0.4):
        got = photometric.distort(tf.constant(image), only(brightness_delta=delta)).numpy()
        expected = np.clip(image + np.float32(delta), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(got, expected)
    edges = pixels([[[0, 250, 128]]])
    np.testing.assert_array_equal(
        photometric.distort(edges, only(brightness_delta=10.5)).numpy(), [[[10, 255, 138]]])


def test_contrast_alone_is_a_plain_multiply_not_about_the_mean():
    image = random_image()
    got = photometric.distort(tf.constant(image), only(contrast_alpha=1.37)).numpy()
    np.testing.assert_array_equal(got, np.clip(image * np.float32(1.37), 0, 255).astype(np.uint8))
    dark = pixels([[[10, 20, 30]]])
    np.testing.assert_array_equal(photometric.distort(dark, only(contrast_alpha=0.5)).numpy(),
                                  [[[5, 10, 15]]])


def test_saturation_alone_scales_s_in_opencv_hsv():
    # (200, 100, 50) is HSV (10, 191, 200): S * 0.5 = 95.5 -> 95, and cv2 gives (200, 150, 125)
    # for HSV (10, 95, 200); grey has S = 0 and comes back unchanged.
    colours = pixels([[[200, 100, 50], [77, 77, 77]]])
    got = photometric.distort(colours, only(saturation_alpha=0.5)).numpy()
    np.testing.assert_array_equal(got, [[[200, 150, 125], [77, 77, 77]]])
    image = tf.constant(random_image())
    hsv = photometric.rgb_to_hsv(image).numpy()
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(1.3), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(photometric.distort(image, only(saturation_alpha=1.3)).numpy(),
                                  photometric.hsv_to_rgb(tf.constant(hsv)).numpy())


def test_contrast_comes_right_after_brightness_or_last():
    image = tf.constant(random_image())
    steps = dict(contrast_alpha=1.4, saturation_alpha=0.6, brightness_delta=-12.0)
    first = photometric.distort(image, only(contrast_first=True, **steps)).numpy()
    last = photometric.distort(image, only(**steps)).numpy()
    brightened = photometric.distort(image, only(brightness_delta=-12.0))
    contrast = only(contrast_alpha=1.4)
    saturation = only(saturation_alpha=0.6)
    np.testing.assert_array_equal(first, photometric.distort(
        photometric.distort(brightened, contrast), saturation).numpy())
    np.testing.assert_array_equal(last, photometric.distort(
        photometric.distort(brightened, saturation), contrast).numpy())
    assert not np.array_equal(first, last)


def test_distortion_draws_follow_mmseg():
    draw = tf.function(augment.sample_distortion)
    draws = [draw(seed(k)) for k in range(400)]
    values = {name: np.array([getattr(d, name).numpy() for d in draws])
              for name in photometric.Distortion._fields}
    flags = ('brightness_on', 'contrast_first', 'contrast_on', 'saturation_on', 'hue_on')
    for flag in flags:
        assert 0.4 < values[flag].mean() < 0.6, flag  # binomial(400, 0.5): 4 sd either side
    for first, second in itertools.combinations(flags, 2):  # independent: a stream each
        assert 0.4 < np.mean(values[first] == values[second]) < 0.6, (first, second)
    brightness = values['brightness_delta']
    assert -32 <= brightness.min() < -30 and 30 < brightness.max() <= 32
    for factor in ('contrast_alpha', 'saturation_alpha'):
        assert 0.5 <= values[factor].min() < 0.53 and 1.47 < values[factor].max() <= 1.5
        assert abs(values[factor].mean() - 1.0) < 0.05
    hue = values['hue_delta']
    assert hue.dtype == np.int32 and set(hue.tolist()) == set(range(-18, 18))  # randint(-18, 18)


def unnormalize(image: np.ndarray) -> np.ndarray:
    return image * STD_255 + MEAN_255


def test_mmseg_style_distorts_the_integer_crop():
    """With scale 1 and no rotation the crop is an exact copy, so the style's output must be the
    distortion of that copy (computed on the crop, after the flip), normalised."""
    image = random_image((64, 96, 3), 2).astype(np.uint8)
    label = np.random.default_rng(3).integers(0, 19, (64, 96)).astype(np.uint8)
    options = dict(MMSEG_OPTIONS, scale_range=(1.0, 1.0), rotation_degrees=0.0)
    geometry_options = {k: v for k, v in options.items() if not k.startswith('photometric')}
    run = tf.function(lambda i, l, s: augment.train_transform(i, l, s, **options))
    distorted = 0
    for k in range(8):
        image_out, label_out = run(image, label, seed(k))
        geometry = augment.sample_geometry(seed(k), tf.constant([64, 96]), **geometry_options)
        top, left = int(geometry.top), int(geometry.left)
        window = np.s_[top:top + 48, left:left + 56]
        crop, label_crop = image[window], label[window]
        if bool(geometry.flip):
            crop, label_crop = crop[:, ::-1], label_crop[:, ::-1]
        expected = photometric.distort(tf.constant(crop, tf.float32),
                                       augment.sample_distortion(seed(k)))
        np.testing.assert_allclose(image_out.numpy(), augment.normalize(expected).numpy(),
                                   atol=1e-6)
        np.testing.assert_array_equal(label_out.numpy(), label_crop)
        distorted += not np.array_equal(expected.numpy(), crop)
    assert distorted >= 4


def test_mmseg_style_is_integer_before_normalisation_and_padding_is_exactly_zero():
    image = random_image((64, 96, 3), 4).astype(np.uint8)
    label = np.ones((64, 96), np.uint8)  # 255 in the output is padding only
    run = tf.function(lambda i, l, s: augment.train_transform(i, l, s, **MMSEG_OPTIONS))
    padded = 0
    for k in range(12):
        image_out, label_out = (t.numpy() for t in run(image, label, seed(k)))
        values = unnormalize(image_out)[label_out == 1]
        np.testing.assert_allclose(values, np.round(values), atol=2e-3)
        assert values.min() > -0.01 and values.max() < 255.01
        padding = label_out == 255
        np.testing.assert_array_equal(image_out[padding], 0.0)
        padded += padding.any()
    assert padded >= 4  # small canvases and rotation corners were padded


def test_jitter_default_is_unchanged():
    """The default style draws its factors from the seed's streams 5 and 6, as it always has,
    and applies them to the whole image before the warp."""
    image = random_image((64, 96, 3), 5).astype(np.uint8)
    label = np.random.default_rng(6).integers(0, 19, (64, 96)).astype(np.uint8)
    options = dict(crop_size=(40, 48), scale_range=(1.0, 1.0), rotation_degrees=0.0, flip=False,
                   photometric=0.3)
    default = augment.train_transform(image, label, seed(3), **options)
    explicit = augment.train_transform(image, label, seed(3), photometric_style='jitter',
                                       cat_max_ratio=1.0, **options)
    for a, b in zip(default, explicit, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    def factor(stream: int) -> tf.Tensor:
        return tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed(3), stream), 1.0 - 0.3, 1.0 + 0.3)

    jittered = photometric.jitter(tf.constant(image, tf.float32), factor(5), factor(6))
    geometry = augment.sample_geometry(seed(3), tf.constant([64, 96]), crop_size=(40, 48),
                                       scale_range=(1.0, 1.0), rotation_degrees=0.0, flip=False)
    top, left = int(geometry.top), int(geometry.left)
    expected = augment.normalize(jittered[top:top + 40, left:left + 48]).numpy()
    np.testing.assert_array_equal(default[0].numpy(), expected)


@pytest.mark.parametrize('overrides, message', [
    (dict(photometric_style='hsv'), "photometric_style='hsv' must be one of jitter, mmseg"),
    (dict(photometric_style='MMSEG'), 'config.data.photometric_style'),
    (dict(photometric=0.3), "photometric=0.3 must be 0 with photometric_style='mmseg'"),
    (dict(photometric=0.3), 'set config.data.photometric=0'),
    (dict(photometric=-0.1), 'photometric=-0.1 must be in [0, 1)'),
])
def test_bad_photometric_options_raise_config_errors(overrides, message):
    with pytest.raises(ConfigError) as error:
        augment.train_transform(random_image((20, 20, 3)).astype(np.uint8),
                                np.zeros((20, 20), np.uint8), seed(0),
                                **{**MMSEG_OPTIONS, 'crop_size': (8, 8), **overrides})
    assert message in str(error.value)


def fake_split(monkeypatch, images: np.ndarray, label_ids: np.ndarray) -> None:
    """Makes the pipeline read ``images`` / ``label_ids`` as its training split."""
    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
        return {'image': tf.gather(images, index), 'label': tf.gather(label_ids, index),
                'image_id': tf.strings.as_string(index), 'problem': tf.constant('')}

    split = Split(source='folder', split='train', size=len(images), read=read,
                             location='/nonexistent')
    monkeypatch.setattr(pipeline, 'open_split', lambda data, name: split)


def pipeline_config(**data) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(seed=0, global_batch_size=8, data=dict(
        crop_size=(32, 40), scale_range=(1.0, 1.0), rotation_degrees=0.0, flip=True,
        photometric=0.0, photometric_style='mmseg', cat_max_ratio=0.75, base_size=None)))
    config.data.update(data)
    return config


def test_pipeline_passes_both_options_to_the_transform(monkeypatch):
    # Left half road (label id 7 -> train id 0), right half sidewalk (8 -> 1): a 40-wide crop of
    # the 64-wide label has a class share below 0.75 only at left offsets 3..21 of 0..24.
    label_ids = np.where(np.arange(64) < 32, 7, 8).astype(np.uint8)[None].repeat(32, 0)
    images = random_image((2, 32, 64, 3), 7).astype(np.uint8)
    fake_split(monkeypatch, images, np.stack([label_ids, label_ids]))
    batch = next(pipeline.as_numpy(pipeline.train_dataset(pipeline_config(), process_index=0,
                                                          process_count=1)))
    for label in batch['label']:
        assert np.bincount(label.ravel(), minlength=2).max() / label.size < 0.75
    values = unnormalize(batch['image'])
    np.testing.assert_allclose(values, np.round(values), atol=2e-3)  # the 8-bit 'mmseg' style
    with pytest.raises(ConfigError, match='config.data.cat_max_ratio'):
        pipeline.train_dataset(pipeline_config(cat_max_ratio=0.0), process_index=0,
                               process_count=1)
