"""ResNet v1.5 backbones (18/34/50/101) with output stride 8, 16 or 32 by dilation.

The layout and names follow torchvision's ``resnet.py`` (``conv1``, ``bn1``, ``layer1/0/conv1``,
``layer1/0/downsample/0`` ...; v1.5 puts the stride on the bottleneck's 3x3 conv), so that
ImageNet weights map onto the parameters key by key. There is no pooling or fc layer: the
segmentation networks only use the feature maps.

``deep_stem=True`` is mmsegmentation's ``ResNetV1c``, the backbone of its published Cityscapes
models: the 7x7 stem conv is replaced by three 3x3 convs (3->32 stride 2, 32->32, 32->64, each
with BN and ReLU) named like mmseg's ``stem`` Sequential (``stem/0``, ``stem/1``, ``stem/3`` ...),
the rest is the same v1.5 network. mmseg's "-D8" dilation (strides 1,2,1,1, dilations 1,1,2,4,
the first block of a dilated stage at half the dilation) is what ``stage_plan(8)`` gives.

With ``remat=True`` every residual block is wrapped in ``nn.remat`` (``jax.checkpoint``): the
backward pass recomputes a block's activations from its input instead of keeping them. The
wrapped block keeps its name, so parameters and checkpoints are the same either way.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.errors import ConfigError
from seg_jax.models.layers import ConvBN, batch_norm, conv, scaled

# depth -> (block type, blocks per stage)
DEPTHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
}
OUTPUT_STRIDES = (8, 16, 32)


def stage_plan(output_stride: int) -> list[tuple[int, int, int]]:
    """(stride, dilation of the first block, dilation of the other blocks) for layer1..layer4.

    A stage whose stride would take the network past ``output_stride`` keeps stride 1 and
    multiplies the dilation instead; its first block keeps the previous dilation, as
    torchvision's ``replace_stride_with_dilation`` does (DeepLab's "multi-grid" is not used).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f'ResNet output_stride={output_stride} is not supported; use one of '
                          f'{OUTPUT_STRIDES}.')
    plan, current_stride, dilation = [], 4, 1  # the stem downsamples by 4
    for nominal_stride in (1, 2, 2, 2):
        if current_stride * nominal_stride > output_stride:
            previous, dilation = dilation, dilation * nominal_stride
            plan.append((1, previous, dilation))
        else:
            current_stride *= nominal_stride
            plan.append((nominal_stride, dilation, dilation))
    return plan


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). Both convs take the block's dilation."""
    planes: int
    strides: int = 1
    dilation: int = 1
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        y = conv(self.planes, 3, strides=self.strides, dilation=self.dilation, name='conv1',
                 **kw)(x)
        y = nn.relu(batch_norm(train, self.dtype, name='bn1')(y))
        y = conv(self.planes, 3, dilation=self.dilation, name='conv2', **kw)(y)
        y = batch_norm(train, self.dtype, name='bn2')(y)
        return nn.relu(y + _shortcut(x, self.planes, self.strides, train, **kw))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 x4 channels (ResNet-50/101, v1.5)."""
    planes: int
    strides: int = 1
    dilation: int = 1
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        y = conv(self.planes, 1, name='conv1', **kw)(x)
        y = nn.relu(batch_norm(train, self.dtype, name='bn1')(y))
        y = conv(self.planes, 3, strides=self.strides, dilation=self.dilation, name='conv2',
                 **kw)(y)
        y = nn.relu(batch_norm(train, self.dtype, name='bn2')(y))
        y = conv(self.planes * 4, 1, name='conv3', **kw)(y)
        y = batch_norm(train, self.dtype, name='bn3')(y)
        return nn.relu(y + _shortcut(x, self.planes * 4, self.strides, train, **kw))


def _shortcut(x: jax.Array, features: int, strides: int, train: bool, **kw) -> jax.Array:
    """Identity, or torchvision's ``downsample = Sequential(conv1x1, bn)`` when shapes change.

    Only called from a block's compact ``__call__``, so the module binds to that block.
    """
    if strides == 1 and x.shape[-1] == features:
        return x
    return ConvBN(features, 1, strides=strides, relu=False, name='downsample', **kw)(x, train)


class ResLayer(nn.Module):
    """One stage (torchvision's ``layerN``): blocks named ``'0'``, ``'1'``, ...

    ``block`` is called as ``block(...)(x, train)`` with ``train`` positional, so that it may
    be an ``nn.remat`` of a block class with ``train`` static.
    """
    block: type[nn.Module]
    planes: int
    num_blocks: int
    strides: int
    first_dilation: int
    dilation: int
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.num_blocks):
            x = self.block(self.planes, strides=self.strides if i == 0 else 1,
                           dilation=self.first_dilation if i == 0 else self.dilation,
                           initializer=self.initializer, dtype=self.dtype, name=str(i))(x, train)
        return x


class DeepStem(nn.Module):
    """mmseg ResNetV1c's stem: three conv3x3 -> BN -> ReLU, the first with stride 2.

    Children are named by their index in mmseg's ``Sequential(conv, bn, relu, conv, bn, relu,
    conv, bn, relu)``: convs ``'0'``, ``'3'``, ``'6'``, BNs ``'1'``, ``'4'``, ``'7'``.
    """
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for index, (channels, strides) in enumerate(((32, 2), (32, 1), (64, 1))):
            x = conv(scaled(channels, self.width), 3, strides=strides, name=str(3 * index),
                     initializer=self.initializer, dtype=self.dtype)(x)
            x = nn.relu(batch_norm(train, self.dtype, name=str(3 * index + 1))(x))
        return x


class ResNet(nn.Module):
    """Returns ``{'low': layer1, 'aux': layer3, 'out': layer4}``; ``'aux'`` and ``'out'`` as
    torchvision's IntermediateLayerGetter names them, ``'low'`` for DeepLabV3+'s decoder."""
    depth: int = 50
    output_stride: int = 32
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each residual block's activations in the backward pass
    deep_stem: bool = False  # mmseg's ResNetV1c stem instead of torchvision's 7x7 conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        if self.depth not in DEPTHS:
            raise ConfigError(f'ResNet depth {self.depth} is not supported; use one of '
                              f'{sorted(DEPTHS)}.')
        kind, blocks_per_stage = DEPTHS[self.depth]
        block = BasicBlock if kind == 'basic' else Bottleneck
        if self.remat:
            # ``train`` (argument 2 counting ``self``) picks BN's mode in Python: static.
            block = nn.remat(block, static_argnums=(2,))
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        if self.deep_stem:
            x = DeepStem(self.width, name='stem', **kw)(x, train)
        else:
            x = conv(scaled(64, self.width), 7, strides=2, name='conv1', **kw)(x)
            x = nn.relu(batch_norm(train, self.dtype, name='bn1')(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        stages = zip(blocks_per_stage, stage_plan(self.output_stride), strict=True)
        layers = []
        for stage, (num_blocks, (strides, first_dilation, dilation)) in enumerate(stages):
            x = ResLayer(block, scaled(64 * 2**stage, self.width), num_blocks, strides,
                         first_dilation, dilation, name=f'layer{stage + 1}', **kw)(x, train)
            layers.append(x)
        return {'low': layers[0], 'aux': layers[2], 'out': layers[3]}
