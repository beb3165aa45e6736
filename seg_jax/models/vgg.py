"""VGG-16 with BatchNorm as a backbone, named like torchvision's ``vgg16_bn().features``.

torchvision's ``features`` is one ``nn.Sequential`` of conv, bn, relu and max-pool layers, so the
children here are named by their index in it (``features/0`` conv, ``features/1`` BN,
``features/3`` conv, ...). The convs keep their bias, as torchvision's do.

Output stride 32 is the plain network. For 16 or 8 the last one or two max-pools keep stride 1
(window 3, padding 1, as DeepLab-LargeFOV) and the convs after them are dilated by 2 or 4.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.errors import ConfigError
from seg_jax.models.layers import batch_norm, conv, scaled

LAYOUT = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')
OUTPUT_STRIDES = (8, 16, 32)


class VGGFeatures(nn.Module):
    """torchvision's ``features`` Sequential; returns the outputs of pool4 and pool5."""
    output_stride: int = 32
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        if self.output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f'VGG output_stride={self.output_stride} is not supported; use '
                              f'one of {OUTPUT_STRIDES}.')
        index, stride, dilation, pooled = 0, 1, 1, []
        for item in LAYOUT:
            if item == 'M':
                if stride * 2 <= self.output_stride:
                    stride *= 2
                    x = nn.max_pool(x, (2, 2), strides=(2, 2))
                else:
                    dilation *= 2
                    x = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
                pooled.append(x)
                index += 1
            else:
                x = conv(scaled(item, self.width), 3, dilation=dilation, use_bias=True,
                         initializer=self.initializer, dtype=self.dtype, name=str(index))(x)
                x = nn.relu(batch_norm(train, self.dtype, name=str(index + 1))(x))
                index += 3
        return {'aux': pooled[3], 'out': pooled[4]}


class VGG16BN(nn.Module):
    """Backbone wrapper so that parameters live under ``features/`` as in torchvision."""
    features: VGGFeatures

    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        return self.features(x, train)
