"""The course's FCN baseline (SPEC 3.1) and ResNet encoder + transposed-conv decoder (3.3).

Both decode with five 3x3 stride-2 transposed convs (each exactly doubles the size) from an
output-stride-32 encoder, without skip connections; they differ only in the encoder.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.layers import ConvBN, check_input, conv, scaled


class DeconvDecoder(nn.Module):
    """Five [3x3 transposed conv stride 2 -> BN -> ReLU], then a 1x1 conv to the logits."""
    channels: Sequence[int]
    num_classes: int
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i, features in enumerate(self.channels):
            x = ConvBN(features, transposed=True, initializer=self.initializer, dtype=self.dtype,
                       name=f'deconv{i + 1}')(x, train)
        return conv(self.num_classes, 1, use_bias=True, initializer=self.initializer, dtype=self.dtype,
                    name='classifier')(x)


class FCN(nn.Module):
    """Five [3x3 conv stride 2 -> BN -> ReLU] (3->32->...->512), then the deconv decoder."""
    num_classes: int = 19
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32
    output_stride = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, self.output_stride, 'FCN')
        for i, features in enumerate((32, 64, 128, 256, 512)):
            x = ConvBN(scaled(features, self.width), 3, strides=2, initializer=self.initializer,
                       dtype=self.dtype, name=f'conv{i + 1}')(x, train)
        decoder = [scaled(c, self.width) for c in (512, 256, 128, 64, 32)]
        x = DeconvDecoder(decoder, self.num_classes, self.initializer, self.dtype, name='decoder')(x, train)
        return {'out': x.astype(jnp.float32)}


class ResNetDeconv(nn.Module):
    """A backbone at output stride 32 (ResNet-50: 2048 channels) + the deconv decoder."""
    backbone: nn.Module
    num_classes: int = 19
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32
    output_stride = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, self.output_stride, 'ResNetDeconv')
        x = self.backbone(x, train)['out']
        decoder = [scaled(c, self.width) for c in (512, 256, 128, 64, 32)]
        x = DeconvDecoder(decoder, self.num_classes, self.initializer, self.dtype, name='decoder')(x, train)
        return {'out': x.astype(jnp.float32)}
