"""Whole-image, sliding-window and multi-scale + flip inference against direct computation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seg_jax import inference
from seg_jax.errors import ConfigError
from seg_jax.inference import InferenceSettings, log_probabilities
from seg_jax.models import build_model
from seg_jax.models.layers import resize_bilinear
from tests.tiny_config import get_config

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def unet():
    """The tests' narrow U-Net (output stride 16) with random weights (the classifier too,
    which starts at zero) and random BN statistics."""
    model = build_model(get_config().model)
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, 32, 64, 3)), train=False))(
        jax.random.key(0))

    @jax.jit  # one program instead of one per leaf shape
    def randomize(variables):
        leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
        keys = jax.random.split(jax.random.key(1), len(leaves))
        randomized = []
        for (path, leaf), key in zip(leaves, keys):
            name = path[-1].key
            if name == 'var':
                randomized.append(jax.random.uniform(key, leaf.shape, minval=0.5, maxval=1.5))
            elif name == 'mean':
                randomized.append(0.1 * jax.random.normal(key, leaf.shape))
            else:
                randomized.append(leaf + 0.02 * jax.random.normal(key, leaf.shape))
        return jax.tree_util.tree_unflatten(tree, randomized)
    return model, randomize(variables)


def images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def logits(model, variables, x):
    """``model.apply(variables, x, train=False)['out']``, jitted (faster to compile than run
    eagerly, op by op)."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False)['out'])(variables, x)


def plain(model, variables, x):
    """The model on ``x`` as training's evaluation ran it: log-softmax of its logits."""
    return jax.nn.log_softmax(logits(model, variables, x), axis=-1)


def test_whole_image_is_the_model_on_the_image(unet):
    x = images((2, 32, 64, 3))
    np.testing.assert_allclose(log_probabilities(*unet, x), plain(*unet, x), **TOLERANCE)


def test_a_window_equal_to_the_image_equals_whole_image_inference(unet):
    x = images((2, 32, 64, 3))
    windowed = log_probabilities(*unet, x, InferenceSettings(window=(32, 64), stride=(32, 64)))
    np.testing.assert_allclose(windowed, log_probabilities(*unet, x), **TOLERANCE)
    # A window larger than the image shrinks to it: the same single window.
    larger = log_probabilities(*unet, x, InferenceSettings(window=(64, 128), stride=(48, 96)))
    np.testing.assert_allclose(larger, log_probabilities(*unet, x), **TOLERANCE)


def test_overlapping_windows_average_their_logits(unet):
    model, variables = unet
    x = images((1, 48, 80, 3), seed=2)
    got = log_probabilities(model, variables, x, InferenceSettings(window=(32, 48),
                                                                    stride=(16, 24)))
    assert inference.window_starts(48, 32, 16) == [0, 16]
    assert inference.window_starts(80, 48, 24) == [0, 24, 32]  # the last flush with the edge
    total, count = np.zeros((1, 48, 80, 19)), np.zeros((1, 48, 80, 1))
    for top in (0, 16):
        for left in (0, 24, 32):
            crop = x[:, top:top + 32, left:left + 48]
            total[:, top:top + 32, left:left + 48] += logits(model, variables, crop)
            count[:, top:top + 32, left:left + 48] += 1
    expected = jax.nn.log_softmax(total / count, axis=-1)
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    # And it is not the whole-image result (the test could fail).
    assert np.abs(np.asarray(got) - np.asarray(log_probabilities(model, variables, x))).max() > 1e-3


def test_any_image_size_is_padded_to_the_output_stride_and_cropped_back(unet):
    model, variables = unet
    x = images((1, 37, 50, 3), seed=3)  # U-Net needs multiples of 16
    got = log_probabilities(model, variables, x)
    assert got.shape == (1, 37, 50, 19)
    padded = jnp.pad(x, ((0, 0), (0, 11), (0, 14), (0, 0)))
    np.testing.assert_allclose(got, plain(model, variables, padded)[:, :37, :50], **TOLERANCE)


def test_scale_one_alone_equals_whole_image(unet):
    x = images((2, 32, 64, 3))
    np.testing.assert_array_equal(log_probabilities(*unet, x, InferenceSettings(scales=(1.0,))),
                                  log_probabilities(*unet, x))


def test_multi_scale_averages_the_probabilities_of_each_scale_at_the_input_size(unet):
    model, variables = unet
    x = images((1, 32, 64, 3), seed=4)
    got = log_probabilities(model, variables, x, InferenceSettings(scales=(0.5, 1.0, 1.5)))
    probabilities = []
    for size in ((16, 32), (32, 64), (48, 96)):
        scaled = logits(model, variables, resize_bilinear(x, size))
        probabilities.append(jax.nn.softmax(resize_bilinear(scaled, (32, 64)), axis=-1))
    expected = jnp.log(sum(probabilities) / 3)
    np.testing.assert_allclose(got, expected, **TOLERANCE)


class SymmetricNet(nn.Module):
    """Two 3x3 convs whose kernels are mirror-symmetric left-right: flip-equivariant."""
    num_classes: int = 5
    output_stride = 1

    @nn.compact
    def __call__(self, x, train=False):
        for features in (8, self.num_classes):
            kernel = self.param(f'kernel_{features}', nn.initializers.normal(1.0),
                                (3, 3, x.shape[-1], features))
            kernel = (kernel + kernel[:, ::-1]) / 2
            x = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
            x = jnp.tanh(x) if features != self.num_classes else x
        return {'out': x}


def test_flip_on_a_flip_symmetric_model_equals_the_plain_output():
    model = SymmetricNet()
    x = images((2, 16, 24, 3), seed=5)
    variables = model.init(jax.random.key(0), x)
    flipped = log_probabilities(model, variables, x, InferenceSettings(flip=True))
    np.testing.assert_allclose(flipped, log_probabilities(model, variables, x), **TOLERANCE)


def test_flip_averages_the_prediction_of_the_mirrored_image(unet):
    model, variables = unet
    x = images((1, 32, 64, 3), seed=6)
    got = log_probabilities(model, variables, x, InferenceSettings(flip=True))
    mirrored = logits(model, variables, x[:, :, ::-1])[:, :, ::-1]
    direct = logits(model, variables, x)
    expected = jnp.log((jax.nn.softmax(direct) + jax.nn.softmax(mirrored)) / 2)
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    assert np.abs(np.asarray(got) - np.asarray(jax.nn.log_softmax(direct))).max() > 1e-3


def test_sliding_window_multi_scale_and_flip_combine(unet):
    model, variables = unet
    x = images((1, 32, 64, 3), seed=7)
    settings = InferenceSettings(window=(32, 32), stride=(16, 16), scales=(1.0, 1.5), flip=True)
    got = log_probabilities(model, variables, x, settings)
    views = []
    for scale in settings.scales:
        scaled = resize_bilinear(x, (round(32 * scale), round(64 * scale)))
        for mirrored in (False, True):
            view = scaled[:, :, ::-1] if mirrored else scaled
            logits = log_probabilities(model, variables, view,
                                       InferenceSettings(window=(32, 32), stride=(16, 16)))
            logits = logits[:, :, ::-1] if mirrored else logits
            views.append(jax.nn.softmax(resize_bilinear(logits, (32, 64)), axis=-1))
    np.testing.assert_allclose(got, jnp.log(sum(views) / len(views)), **TOLERANCE)


def test_inference_compiles_the_model_once_per_scale(unet):
    """Windows are a scan and flips a map: the jitted program holds one model per scale."""
    model, variables = unet
    x = images((1, 64, 64, 3))
    settings = InferenceSettings(window=(32, 32), stride=(16, 16), scales=(1.0, 0.5), flip=True)
    text = jax.jit(lambda v, x: log_probabilities(model, v, x, settings)).lower(
        variables, x).as_text()
    one_model = jax.jit(lambda v, x: log_probabilities(model, v, x)).lower(
        variables, x).as_text()
    convolutions = text.count('stablehlo.convolution')
    assert convolutions == 2 * one_model.count('stablehlo.convolution')


def eval_config(**fields):
    config = ml_collections.ConfigDict(dict(window=None, stride=None, scales=(1.0,), flip=False))
    config.update(fields)
    return config


@pytest.mark.parametrize('fields, message', [
    (dict(window=(0, 32)), 'two positive integers'),
    (dict(window=(32,)), 'two positive integers'),
    (dict(stride=(16, 16)), 'needs config.eval.window'),
    (dict(window=(32, 32), stride=(48, 16)), 'larger than config.eval.window'),
    (dict(scales=()), 'non-empty tuple of positive factors'),
    (dict(scales=(1.0, -0.5)), 'non-empty tuple of positive factors'),
])
def test_bad_inference_settings_are_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        inference.inference_settings(eval_config(**fields))


def test_stride_defaults_to_the_window():
    settings = inference.inference_settings(eval_config(window=(32, 64), scales=(0.5, 1)))
    assert settings == InferenceSettings((32, 64), (32, 64), (0.5, 1.0), False)
    assert settings.num_views == 2
