"""Shared layers: initialisers, torch-style padding and transposed conv, bilinear resizing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from seg_jax.errors import ConfigError
from seg_jax.models import build_model
from seg_jax.models.layers import (ConvBN, SubpixelConvTranspose, conv, kernel_initializer,
                                   resize_bilinear)


def test_fcn_kernels_have_xavier_variance():
    config = load_config('fcn')
    model = build_model(config.model)
    params = jax.jit(lambda key: model.init(key, jnp.zeros((1, 64, 64, 3)), train=False))(
        jax.random.key(0))['params']  # jitted: faster to compile than eager initialisers
    kernel = params['backbone']['conv5']['0']['kernel']  # 3x3, 256 -> 512
    assert kernel.shape == (3, 3, 256, 512)
    fan_in, fan_out = 9 * 256, 9 * 512
    np.testing.assert_allclose(np.var(kernel), 2 / (fan_in + fan_out), rtol=0.02)
    # Xavier *uniform*: bounded by sqrt(6 / (fan_in + fan_out)).
    assert np.abs(kernel).max() <= np.sqrt(6 / (fan_in + fan_out))


def test_kaiming_is_fan_out_normal():
    kernel = kernel_initializer('kaiming')(jax.random.key(0), (3, 3, 256, 512))
    np.testing.assert_allclose(np.var(kernel), 2 / (9 * 512), rtol=0.02)
    with pytest.raises(ConfigError, match="'xavier'"):
        kernel_initializer('he')


@pytest.mark.parametrize('size,stride,dilation', [(8, 2, 1), (9, 2, 1), (8, 1, 3)])
def test_conv_pads_like_pytorch(size, stride, dilation):
    # PyTorch: out = floor((in + 2p - d(k-1) - 1) / s) + 1 with p = d(k-1)/2.
    layer = conv(4, 3, strides=stride, dilation=dilation)
    x = jnp.ones((1, size, size, 2))
    out = jax.eval_shape(lambda x: layer.init_with_output(jax.random.key(0), x)[0], x)
    expected = (size - 1) // stride + 1  # p = d(k-1)/2 cancels the kernel's extent
    assert out.shape == (1, expected, expected, 4)
    # Padding is symmetric: with a ones kernel on a ones image the top-left output sees the zero
    # border, 2x2 taps x 2 channels (``'SAME'`` pads a stride-2 conv of 8 pixels by (0, 1): 18).
    params = {'kernel': jnp.ones((3, 3, 2, 4))}
    assert layer.apply({'params': params}, x)[0, 0, 0, 0] == 8


def test_transposed_conv_block_doubles_the_size():
    block = ConvBN(5, transposed=True)
    x = jnp.ones((2, 3, 7, 4))
    out, _ = block.init_with_output(jax.random.key(0), x, train=False)
    assert out.shape == (2, 6, 14, 5)


def _flax_conv_transpose(features):
    # The ground truth the sub-pixel layer must equal (and the layer ConvBN used before).
    return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)))


@pytest.mark.parametrize('height,width', [(5, 7), (8, 6)])
def test_subpixel_conv_transpose_equals_flax_conv_transpose(height, width):
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (2, height, width, 3))
    params = {'kernel': jax.random.normal(keys[1], (3, 3, 3, 4)),
              'bias': jax.random.normal(keys[2], (4,))}
    cotangent = jax.random.normal(keys[3], (2, 2 * height, 2 * width, 4))

    def loss(layer, params, x):
        return jnp.sum(layer.apply({'params': params}, x) * cotangent)

    ours, reference = SubpixelConvTranspose(4), _flax_conv_transpose(4)
    np.testing.assert_allclose(ours.apply({'params': params}, x),
                               reference.apply({'params': params}, x), atol=1e-5)
    grads = jax.grad(loss, argnums=(1, 2))(ours, params, x)
    expected = jax.grad(loss, argnums=(1, 2))(reference, params, x)
    for name in 'kernel', 'bias':
        np.testing.assert_allclose(grads[0][name], expected[0][name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(grads[1], expected[1], atol=1e-4, err_msg='input')


def test_subpixel_conv_transpose_counts_the_same_flops():
    # Exactly the transposed conv's multiply-adds, so `--mode summary` (XLA's cost analysis) and
    # the README's GFLOPs table do not change; a combined 2x2 kernel with zero taps would count
    # 16/9 of them.
    x = jnp.ones((1, 6, 8, 3))
    params = {'kernel': jnp.ones((3, 3, 3, 4)), 'bias': jnp.zeros(4)}

    def flops(layer):
        apply = jax.jit(lambda p, x: layer.apply({'params': p}, x))
        return apply.lower(params, x).cost_analysis()['flops']

    assert flops(SubpixelConvTranspose(4)) == flops(_flax_conv_transpose(4))


def test_transposed_conv_block_keeps_the_conv_transpose_parameters():
    # Same names, shapes and initial values as the nn.ConvTranspose it replaced, so checkpoints
    # written before still load.
    x = jnp.ones((1, 4, 4, 6))
    params = ConvBN(5, transposed=True, use_bias=True).init(jax.random.key(0), x,
                                                             train=False)['params']
    assert jax.tree.map(jnp.shape, params) == {
        '0': {'kernel': (3, 3, 6, 5), 'bias': (5,)}, '1': {'scale': (5,), 'bias': (5,)}}

    class Before(nn.Module):  # the old ConvBN's conv child
        @nn.compact
        def __call__(self, x):
            return nn.ConvTranspose(5, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                                    kernel_init=kernel_initializer('xavier'), name='0')(x)

    before = Before().init(jax.random.key(0), x)['params']['0']
    np.testing.assert_array_equal(params['0']['kernel'], before['kernel'])
    np.testing.assert_array_equal(params['0']['bias'], before['bias'])


def test_subpixel_conv_transpose_computes_in_bfloat16_with_float32_params():
    layer = SubpixelConvTranspose(4, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (1, 3, 5, 2))
    out, variables = layer.init_with_output(jax.random.key(1), x)
    assert out.dtype == jnp.bfloat16 and out.shape == (1, 6, 10, 4)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    reference = _flax_conv_transpose(4).apply(variables, x)
    np.testing.assert_allclose(out.astype(jnp.float32), reference, atol=0.05, rtol=0.05)


def test_resize_align_corners_true_keeps_the_corners():
    x = jnp.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    out = resize_bilinear(x, (4, 1), align_corners=True)
    np.testing.assert_allclose(out.ravel(), [0, 1 / 3, 2 / 3, 1], atol=1e-6)


def test_resize_align_corners_false_uses_half_pixel_centres():
    x = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1)
    out = resize_bilinear(x, (1, 4), align_corners=False)
    np.testing.assert_allclose(out.ravel(), [0, 0.25, 0.75, 1], atol=1e-6)


def test_resize_matches_jax_image_resize_when_upsampling():
    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
    ours = resize_bilinear(x, (20, 28))
    reference = jax.image.resize(x, (2, 20, 28, 3), 'bilinear')
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_resize_is_identity_at_the_same_size_and_differentiable():
    x = jax.random.normal(jax.random.key(0), (1, 4, 6, 2))
    np.testing.assert_array_equal(resize_bilinear(x, (4, 6)), x)
    grad = jax.grad(lambda x: resize_bilinear(x, (8, 12), align_corners=True).sum())(x)
    # Every output pixel's weights sum to one, so the gradient sums to the output count.
    np.testing.assert_allclose(grad.sum(), 8 * 12 * 2, rtol=1e-5)
