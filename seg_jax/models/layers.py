"""Building blocks shared by every network: convolutions with torch-style padding, BN, resizing.

Convolutions pad explicitly (``dilation * (k - 1) // 2`` on each side) rather than with
``'SAME'``: for a stride-2 conv on an even input, ``'SAME'`` pads (0, 1) while PyTorch pads (1, 1),
and the torchvision weights that later load into these layers were trained with PyTorch's padding.

Blocks that mirror a torchvision ``nn.Sequential`` name their children ``'0'``, ``'1'``, ... so
that a torchvision state-dict key such as ``layer1.0.downsample.1.running_mean`` maps to the Flax
path ``layer1/0/downsample/1/mean`` by rule, not by a hand-written table.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from seg_jax.errors import ConfigError, ShapeError

Dtype = Any
Initializer = Callable[..., jax.Array]

# Kaiming normal on fan-out (not truncated, as PyTorch's kaiming_normal_).
_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
INITIALIZERS: dict[str, Initializer] = {
    # Glorot/Xavier uniform, as the course project: Var = 2 / (fan_in + fan_out).
    'xavier': nn.initializers.xavier_uniform(),
    # As torchvision initialises its ResNets and DeepLab heads.
    'kaiming': _KAIMING,
    # mmsegmentation's: Kaiming for every conv, and N(0, 0.01) for its heads' classifiers
    # (CLASSIFIER_INITIALIZERS).
    'mmseg': _KAIMING,
}
# Initialisers that treat a network's last, class-scoring conv apart from the others.
CLASSIFIER_INITIALIZERS: dict[str, Initializer] = {'mmseg': nn.initializers.normal(0.01)}


def kernel_initializer(name: str, classifier: bool = False) -> Initializer:
    """Returns the conv-kernel initialiser selected by ``config.model.init``; ``classifier``
    asks for the one of a head's class-scoring conv, where the scheme has its own."""
    if name not in INITIALIZERS:
        raise ConfigError(
            f'config.model.init={name!r} is not known; use one of {sorted(INITIALIZERS)}.')
    if classifier and name in CLASSIFIER_INITIALIZERS:
        return CLASSIFIER_INITIALIZERS[name]
    return INITIALIZERS[name]


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``config.model.width`` (1.0 = the published network)."""
    return max(1, int(round(channels * width)))


def conv(features: int, kernel_size: int, *, strides: int = 1, dilation: int = 1,
         groups: int = 1, use_bias: bool = False, initializer: str = 'xavier',
         classifier: bool = False, dtype: Dtype = jnp.float32,
         name: str | None = None) -> nn.Conv:
    """A square conv padded like PyTorch's ``nn.Conv2d(padding=dilation * (k - 1) // 2)``.

    ``groups`` splits the channels as PyTorch's ``groups`` does (``groups`` = input channels is
    a depthwise conv; its kernel is (k, k, 1, features)). ``classifier`` marks a head's
    class-scoring conv, which some initialisation schemes treat apart.
    """
    pad = dilation * (kernel_size - 1) // 2
    return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                   padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                   feature_group_count=groups, use_bias=use_bias,
                   kernel_init=kernel_initializer(initializer, classifier), dtype=dtype,
                   param_dtype=jnp.float32, name=name)


def batch_norm(train: bool, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5).

    Under ``jax.jit`` on a data-sharded global batch the statistics are those of the whole
    global batch, i.e. synchronised BatchNorm, with no extra code. The variance is computed in
    two passes, mean((x - mean)^2), as PyTorch does, not as mean(x^2) - mean^2: the one-pass form
    cancels catastrophically when activations sit far from zero, and its error then depends on
    how the batch is split over devices.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, param_dtype=jnp.float32,
                        use_fast_variance=False, name=name)


# Per axis, the rows of the 3x3 kernel that reach output phase 0 (2i: row 1, from input i) and
# phase 1 (2i + 1: rows 0 and 2, from inputs i and i + 1). See SubpixelConvTranspose.
_PHASE_TAPS = (slice(1, 2), slice(0, 3, 2))


class SubpixelConvTranspose(nn.Module):
    """3x3 stride-2 transposed conv that exactly doubles H and W, computed per output phase.

    The function and the parameters are those of ``nn.ConvTranspose(features, (3, 3),
    strides=(2, 2), padding=((1, 2), (1, 2)))`` (``kernel`` of shape (3, 3, Cin, Cout), not
    flipped, and ``bias``), i.e. PyTorch's ``ConvTranspose2d(k=3, s=2, padding=1,
    output_padding=1)`` up to the kernel flip, so checkpoints of either load unchanged. XLA
    lowers ``nn.ConvTranspose`` as an input-dilated convolution, whose kernel gradient on XLA:CPU
    is about 25x slower than a plain convolution's (jax issue 23783), which made the networks
    with this decoder 25-32x slower to differentiate than to run.

    Per axis, output ``2i`` is ``x[i] w[1]`` and output ``2i + 1`` is ``x[i] w[0] + x[i+1] w[2]``
    (``x`` is zero past the end). So each of the four output phases (even/odd row x even/odd
    column) is a plain stride-1 convolution of ``x`` with a 1x1, 1x2, 2x1 or 2x2 slice of the
    kernel, padded by one at the bottom/right where it has two taps, and the four are interleaved
    (depth-to-space). That is exactly the multiply-adds of the transposed conv, so XLA's FLOP
    count (``--mode summary``) is unchanged. One 2x2 conv with a (2, 2, Cin, 4 Cout) kernel
    holding zeros where a phase has no tap computes the same, but it does 16/9 of the work, and
    on XLA:CPU its forward was 1.4x slower per layer and the networks' gradients 1.15-1.3x slower.
    """
    features: int
    use_bias: bool = True
    initializer: str = 'xavier'
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ShapeError(f'SubpixelConvTranspose expects NHWC input; got shape {x.shape}.')
        batch, height, width, in_features = x.shape
        kernel = self.param('kernel', kernel_initializer(self.initializer),
                            (3, 3, in_features, self.features), jnp.float32)
        bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
                if self.use_bias else None)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        rows = [[jax.lax.conv_general_dilated(
                    x, kernel[_PHASE_TAPS[phase_y], _PHASE_TAPS[phase_x]], (1, 1),
                    ((0, phase_y), (0, phase_x)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
                 for phase_x in (0, 1)] for phase_y in (0, 1)]
        # (N, H, phase_y, W, phase_x, C) -> pixel (2i + phase_y, 2j + phase_x).
        y = jnp.stack([jnp.stack(row, axis=3) for row in rows], axis=2)
        y = y.reshape(batch, 2 * height, 2 * width, self.features)
        return y + bias if bias is not None else y


class ConvBN(nn.Module):
    """conv -> BN (-> ReLU), children named like torchvision's ``Sequential(conv, bn, relu)``.

    ``first_index`` shifts the names for Sequentials that start with a parameter-free layer
    (torchvision's ASPP pooling branch is ``Sequential(pool, conv, bn, relu)``: conv is ``'1'``).
    ``transposed`` makes the conv a 3x3 stride-2 transposed conv that exactly doubles the size,
    as PyTorch's ``ConvTranspose2d(k=3, s=2, padding=1, output_padding=1)``
    (:class:`SubpixelConvTranspose`).
    """
    features: int
    kernel_size: int = 3
    strides: int = 1
    dilation: int = 1
    relu: bool = True
    use_bias: bool = False
    transposed: bool = False
    first_index: int = 0
    initializer: str = 'xavier'
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv_name, bn_name = str(self.first_index), str(self.first_index + 1)
        if self.transposed:
            x = SubpixelConvTranspose(self.features, use_bias=self.use_bias,
                                      initializer=self.initializer, dtype=self.dtype,
                                      name=conv_name)(x)
        else:
            x = conv(self.features, self.kernel_size, strides=self.strides,
                     dilation=self.dilation, use_bias=self.use_bias, initializer=self.initializer,
                     dtype=self.dtype, name=conv_name)(x)
        x = batch_norm(train, self.dtype, name=bn_name)(x)
        return nn.relu(x) if self.relu else x


def _interpolation_taps(in_size: int, out_size: int, align_corners: bool):
    """Source indices (low, high) and the weight of ``high`` for 1-D linear resampling."""
    out = jnp.arange(out_size, dtype=jnp.float32)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = out * scale
    else:
        # Half-pixel centres, clamped at the border like PyTorch's align_corners=False.
        src = jnp.maximum((out + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
    high = jnp.minimum(low + 1, in_size - 1)
    return low, high, src - low


def resize_bilinear(x: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
    """Bilinear resize of an NHWC array to ``size`` = (height, width), PyTorch semantics.

    ``jax.image.resize`` only offers half-pixel sampling (and antialiases when shrinking); the
    course U-Net upsamples with ``align_corners=True``, so both conventions are implemented here
    as two separable two-tap gathers, which is also cheaper than a dense interpolation matrix.
    """
    for axis, out_size in zip((1, 2), size, strict=True):
        in_size = x.shape[axis]
        if in_size == out_size:
            continue
        low, high, frac = _interpolation_taps(in_size, out_size, align_corners)
        shape = [1, 1, 1, 1]
        shape[axis] = out_size
        frac = frac.reshape(shape).astype(x.dtype)
        x = jnp.take(x, low, axis=axis) * (1 - frac) + jnp.take(x, high, axis=axis) * frac
    return x


def check_input(x: jax.Array, multiple: int, model: str) -> None:
    """Raises a clear error unless ``x`` is NHWC with H and W multiples of ``multiple``."""
    if x.ndim != 4:
        raise ShapeError(f'{model} expects NHWC images (batch, height, width, channels); '
                         f'got an array of shape {x.shape}. Add a batch axis with x[None].')
    height, width = x.shape[1:3]
    if height % multiple or width % multiple:
        fix = tuple(-(-s // multiple) * multiple for s in (height, width))
        raise ShapeError(
            f'{model} needs height and width divisible by its output stride {multiple} to '
            f'return logits at the input size; got {height}x{width}. Pad or crop the input '
            f'to a multiple of {multiple}, e.g. {fix[0]}x{fix[1]}.')
