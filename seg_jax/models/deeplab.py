"""DeepLabv3 and torchvision's FCN (models 'deeplabv3' and 'fcn_resnet'): dilated backbone
-> head, and torchvision's FCN head as the auxiliary head.

Mirrors torchvision's ``segmentation/deeplabv3.py`` and ``segmentation/fcn.py`` module for module
and name for name (``backbone``, ``classifier/0/convs/...``, ``classifier/1``,
``aux_classifier/4`` ...), so ``deeplabv3_resnet50`` and ``fcn_resnet50`` weights map onto them
by rule (``seg_jax.pretrained``).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.aspp import ASPP, atrous_rates
from seg_jax.models.layers import batch_norm, check_input, conv, resize_bilinear, scaled


class DeepLabHead(nn.Module):
    """``Sequential(ASPP, conv3x3, BN, ReLU, conv1x1)`` with a 256-channel ASPP."""
    num_classes: int
    rates: tuple[int, int, int]
    channels: int = 256
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        x = ASPP(self.channels, self.channels, self.rates, project_dropout=0.5, name='0',
                 **kw)(x, train)
        x = conv(self.channels, 3, name='1', **kw)(x)
        x = nn.relu(batch_norm(train, self.dtype, name='2')(x))
        return conv(self.num_classes, 1, use_bias=True, name='4', **kw)(x)


class TorchvisionFCNHead(nn.Module):
    """torchvision's ``segmentation.fcn.FCNHead``, ``Sequential(conv3x3 C->C/4, BN, ReLU,
    Dropout(0.1), conv1x1)``: fcn_resnet's classifier and both networks' auxiliary head."""
    num_classes: int
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        x = conv(x.shape[-1] // 4, 3, name='0', **kw)(x)
        x = nn.relu(batch_norm(train, self.dtype, name='1')(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return conv(self.num_classes, 1, use_bias=True, name='4', **kw)(x)


# DeepLabV3.head: 'deeplabv3' (DeepLabHead) or 'fcn', torchvision's FCN (TorchvisionFCNHead).
HEADS = ('deeplabv3', 'fcn')


class DeepLabV3(nn.Module):
    """``{'out': logits}``, plus ``'aux'`` logits from layer3 in training mode when enabled.

    ``head='deeplabv3'``: the ASPP head with 256 channels (about 0.65 TFLOP forward per 512x1024 crop;
    mmsegmentation's 512-ch head is the 1.1-TFLOP one). ``head='fcn'``: torchvision's
    ``fcn_resnet50/101``, its ``TorchvisionFCNHead`` (conv3x3 to C/4 channels) on the same
    dilated backbone.
    Logits are upsampled bilinearly (align_corners=False), as torchvision does.
    """
    backbone: nn.Module
    num_classes: int = 19
    output_stride: int = 8
    aux_head: bool = True
    head: str = 'deeplabv3'
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, self.output_stride, 'DeepLabV3' if self.head == 'deeplabv3' else 'FCN')
        size = x.shape[1:3]
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        features = self.backbone(x, train)
        if self.head == 'deeplabv3':
            classifier = DeepLabHead(self.num_classes, atrous_rates(self.output_stride),
                                     scaled(256, self.width), name='classifier', **kw)
        else:
            classifier = TorchvisionFCNHead(self.num_classes, name='classifier', **kw)
        logits = classifier(features['out'], train)
        outputs = {'out': resize_bilinear(logits, size).astype(jnp.float32)}
        # At init the aux head is built whatever `train` is, so its parameters always exist;
        # evaluation neither returns nor computes it.
        if self.aux_head and (train or self.is_initializing()):
            aux = TorchvisionFCNHead(self.num_classes, name='aux_classifier', **kw)(
                features['aux'], train)
            if train:
                outputs['aux'] = resize_bilinear(aux, size).astype(jnp.float32)
        return outputs
