"""The course's modified U-Net and its ASPP variant, one module.

Encoder: five stages at 64..1024 channels, each after the first preceded by a 2x2 max-pool.
Decoder, four times: bilinear x2 (align_corners=True) -> conv3x3 C->C/2 -> BN -> ReLU, concat
the encoder feature of the same size, fuse. In the plain U-Net every fuse is two conv-BN-ReLUs
and a 1x1 conv makes the logits. With ``aspp=True`` the third fuse is ASPP(256->128, h=128) and
the fourth fuse plus the classifier are one ASPP(128->classes, h=classes) that outputs logits.

With ``remat=True`` every ``DoubleConv`` (the encoder stages and the plain fuses) is wrapped in
``nn.remat``: its activations are recomputed in the backward pass instead of stored. Names, and
so parameters and checkpoints, are the same either way.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.aspp import ASPP
from seg_jax.models.layers import ConvBN, check_input, conv, resize_bilinear, scaled

ENCODER_WIDTHS = (64, 128, 256, 512, 1024)


class DoubleConv(nn.Module):
    """[conv3x3 -> BN -> ReLU] x2; the course's first stage has no BN after its first conv."""
    features: int
    first_bn: bool = True
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        if self.first_bn:
            x = ConvBN(self.features, 3, name='conv1', **kw)(x, train)
        else:
            x = nn.relu(conv(self.features, 3, use_bias=True, name='conv1', **kw)(x))
        return ConvBN(self.features, 3, name='conv2', **kw)(x, train)


class UNet(nn.Module):
    """``{'out': logits}`` at the input size; input sides must be multiples of 16."""
    num_classes: int = 19
    aspp: bool = False
    aspp_dropout: float = 0.0
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each DoubleConv's activations in the backward pass
    output_stride = 16

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, self.output_stride, 'UNet + ASPP' if self.aspp else 'UNet')
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        # ``train`` (argument 2 counting ``self``) picks BN's mode in Python: static.
        double_conv = nn.remat(DoubleConv, static_argnums=(2,)) if self.remat else DoubleConv
        widths = [scaled(c, self.width) for c in ENCODER_WIDTHS]
        skips = []
        for i, features in enumerate(widths):
            if i:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = double_conv(features, first_bn=i > 0, name=f'down{i + 1}', **kw)(x, train)
            skips.append(x)
        aspp_kw = dict(rates=(6, 12, 18), branch_dropout=self.aspp_dropout,
                       bn_on_1x1=False, **kw)
        for i, (skip, features) in enumerate(zip(skips[-2::-1], widths[-2::-1], strict=True)):
            x = resize_bilinear(x, skip.shape[1:3], align_corners=True)
            x = ConvBN(features, 3, name=f'up{i + 1}', **kw)(x, train)
            x = jnp.concatenate([skip, x], axis=-1)
            if self.aspp and i == 2:
                x = ASPP(features, features, classifier=False, name=f'fuse{i + 1}',
                         **aspp_kw)(x, train)
            elif self.aspp and i == 3:
                x = ASPP(self.num_classes, self.num_classes, classifier=True,
                         name=f'fuse{i + 1}', **aspp_kw)(x, train)
                return {'out': x.astype(jnp.float32)}
            else:
                x = double_conv(features, name=f'fuse{i + 1}', **kw)(x, train)
        x = conv(self.num_classes, 1, use_bias=True, name='classifier', **kw)(x)
        return {'out': x.astype(jnp.float32)}
