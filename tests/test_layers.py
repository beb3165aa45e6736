"""Shared layers: initialisers, torch-style padding and transposed conv, bilinear resizing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from seg_jax.errors import ConfigError
from seg_jax.models import build_model
from seg_jax.models.layers import ConvBN, conv, kernel_initializer, resize_bilinear


def test_fcn_kernels_have_xavier_variance():
    config = load_config('fcn')
    model = build_model(config.model)
    params = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)['params']
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
