"""The course's FCN baseline (model 'fcn') and ResNet encoder + transposed-conv decoder
(model 'resnet_deconv').

Both are an encoder at output stride 32 followed by the same decoder, five 3x3 stride-2
transposed convs (each exactly doubles the size) without skip connections, so both are one
``DeconvNet`` with a different ``backbone``: the course's five stride-2 convs
(``CourseFCNEncoder``), or a ResNet. Not to be confused with torchvision's FCN
(``seg_jax.models.deeplab.TorchvisionFCNHead``, model 'fcn_resnet') or mmsegmentation's
auxiliary ``FCNHead`` (``seg_jax.models.mmseg``).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.layers import ConvBN, check_input, conv, scaled

DECODER_CHANNELS = (512, 256, 128, 64, 32)


class CourseFCNEncoder(nn.Module):
    """The course's FCN encoder: five [3x3 conv stride 2 -> BN -> ReLU],
    3->32->64->128->256->512 channels."""
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        for i, features in enumerate((32, 64, 128, 256, 512)):
            x = ConvBN(scaled(features, self.width), 3, strides=2, initializer=self.initializer,
                       dtype=self.dtype, name=f'conv{i + 1}')(x, train)
        return {'out': x}


class DeconvNet(nn.Module):
    """backbone (output stride 32) -> five [3x3 transposed conv stride 2 -> BN -> ReLU]
    (512->256->128->64->32 channels) -> 1x1 conv to the logits."""
    backbone: nn.Module
    num_classes: int = 19
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32
    output_stride = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, self.output_stride, type(self.backbone).__name__ + ' + deconv decoder')
        x = self.backbone(x, train)['out']
        for i, features in enumerate(DECODER_CHANNELS):
            x = ConvBN(scaled(features, self.width), transposed=True,
                       initializer=self.initializer, dtype=self.dtype, name=f'deconv{i + 1}')(
                           x, train)
        x = conv(self.num_classes, 1, use_bias=True, initializer=self.initializer,
                 dtype=self.dtype, name='classifier')(x)
        return {'out': x.astype(jnp.float32)}
