"""mmsegmentation's Cityscapes networks: DeepLabV3, DeepLabV3+ and PSPNet on a dilated ResNet.

Every published Cityscapes number of these networks (and most of the field's tables) was
measured with mmsegmentation's code, whose heads differ from torchvision's (512 channels, a 3x3
bottleneck, channel dropout before the classifier). The modules here mirror mmseg's module for
module and name for name, so that a model-zoo state-dict key maps to a Flax path by rule
(``seg_jax.pretrained``):

* ``decode_head.bottleneck.conv.weight`` is ``params decode_head/bottleneck/conv/kernel``,
  ``decode_head.image_pool.1.bn.running_mean`` is ``batch_stats decode_head/image_pool/1/bn/mean``.
* ``ConvModule`` is conv (no bias) -> BN -> ReLU with children ``conv`` and ``bn``;
  ``DepthwiseSeparableConvModule`` is a depthwise ``ConvModule`` (``depthwise_conv``) then a 1x1
  one (``pointwise_conv``).
* Each head ends in ``Dropout2d(0.1)`` (whole feature maps dropped) and ``conv_seg``, a 1x1 conv
  with bias; the network's logits are resized bilinearly (align_corners False) to the input.
* The auxiliary head (``auxiliary_head``, training only) is mmseg's ``FCNHead`` on layer3: one
  3x3 ``ConvModule`` to 256 channels, dropout, ``conv_seg``.

Unlike seg_jax's other networks these accept any input size, as mmseg's do (every layer rounds
sizes as PyTorch's; adaptive pooling uses PyTorch's bins).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.models.aspp import atrous_rates
from seg_jax.models.layers import batch_norm, check_input, conv, resize_bilinear, scaled

HEAD_DROPOUT = 0.1  # mmseg BaseDecodeHead's dropout_ratio, as Dropout2d
PSP_BINS = (1, 2, 3, 6)


def _adaptive_pool_matrix(size: int, bins: int) -> np.ndarray:
    """(bins, size) averaging weights of PyTorch's ``AdaptiveAvgPool`` along one axis: bin ``i``
    averages ``[floor(i * size / bins), ceil((i + 1) * size / bins))`` (bins may overlap)."""
    matrix = np.zeros((bins, size), np.float32)
    for i in range(bins):
        start, end = (i * size) // bins, -(-(i + 1) * size // bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_average_pool(x: jax.Array, bins: int) -> jax.Array:
    """NHWC ``x`` averaged into ``bins`` x ``bins`` cells, exactly as PyTorch's
    ``AdaptiveAvgPool2d(bins)`` (one matrix product per axis)."""
    rows = jnp.asarray(_adaptive_pool_matrix(x.shape[1], bins), x.dtype)
    cols = jnp.asarray(_adaptive_pool_matrix(x.shape[2], bins), x.dtype)
    return jnp.einsum('nhwc,ih,jw->nijc', x, rows, cols)


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` with BN and ReLU: ``conv`` (no bias) -> ``bn`` -> ReLU."""
    features: int
    kernel_size: int = 1
    dilation: int = 1
    depthwise: bool = False  # one filter per input channel (``groups`` = channels)
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, self.kernel_size, dilation=self.dilation,
                 groups=x.shape[-1] if self.depthwise else 1, initializer=self.initializer,
                 dtype=self.dtype, name='conv')(x)
        return nn.relu(batch_norm(train, self.dtype, name='bn')(x))


class SeparableConvModule(nn.Module):
    """mmcv's ``DepthwiseSeparableConvModule``: a depthwise 3x3 ``ConvModule`` at the input's
    width (``depthwise_conv``), then a 1x1 one to ``features`` (``pointwise_conv``)."""
    features: int
    dilation: int = 1
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        x = ConvModule(x.shape[-1], 3, self.dilation, depthwise=True, name='depthwise_conv',
                       **kw)(x, train)
        return ConvModule(self.features, 1, name='pointwise_conv', **kw)(x, train)


class PooledConvModule(nn.Module):
    """``Sequential(AdaptiveAvgPool2d(bins), ConvModule(1x1))``: the ConvModule is child ``'1'``.
    Returns the pooled ``bins`` x ``bins`` map; the caller resizes it."""
    features: int
    bins: int = 1
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return ConvModule(self.features, 1, initializer=self.initializer, dtype=self.dtype,
                          name='1')(adaptive_average_pool(x, self.bins), train)


class ASPPModules(nn.Module):
    """mmseg's ``ASPPModule`` ModuleList: a 1x1 ``ConvModule`` for dilation 1, 3x3 dilated ones
    for the others (depthwise-separable in DeepLabV3+); returns the branches' outputs."""
    features: int
    dilations: Sequence[int]
    separable: bool = False
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        outputs = []
        for index, dilation in enumerate(self.dilations):
            name = str(index)
            if dilation == 1:
                branch = ConvModule(self.features, 1, name=name, **kw)
            elif self.separable:
                branch = SeparableConvModule(self.features, dilation, name=name, **kw)
            else:
                branch = ConvModule(self.features, 3, dilation, name=name, **kw)
            outputs.append(branch(x, train))
        return outputs


class Sequential(nn.Module):
    """Layers applied in turn, named ``'0'``, ``'1'``, ... as in a PyTorch ``Sequential``;
    each is given as (module class, keyword arguments)."""
    layers: Sequence[tuple[type[nn.Module], dict]]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for index, (layer, kwargs) in enumerate(self.layers):
            x = layer(name=str(index), **kwargs)(x, train)
        return x


def _classify(x: jax.Array, num_classes: int, train: bool, initializer: str,
              dtype: Any) -> jax.Array:
    """mmseg ``BaseDecodeHead.cls_seg``: Dropout2d, then the 1x1 ``conv_seg`` with bias.

    Only called from a head's compact ``__call__``, so ``conv_seg`` binds to that head.
    """
    x = nn.Dropout(HEAD_DROPOUT, broadcast_dims=(1, 2), deterministic=not train)(x)
    return conv(num_classes, 1, use_bias=True, initializer=initializer, classifier=True,
                dtype=dtype, name='conv_seg')(x)


def _aspp_pyramid(x: jax.Array, channels: int, dilations: Sequence[int], separable: bool,
                  train: bool, **kw) -> jax.Array:
    """mmseg ``ASPPHead``'s body: [image pool resized, branches...] concatenated -> the 3x3
    ``bottleneck``. Only called from a head's compact ``__call__``."""
    pooled = PooledConvModule(channels, 1, name='image_pool', **kw)(x, train)
    branches = ASPPModules(channels, tuple(dilations), separable, name='aspp_modules',
                           **kw)(x, train)
    features = jnp.concatenate([resize_bilinear(pooled, x.shape[1:3]), *branches], axis=-1)
    return ConvModule(channels, 3, name='bottleneck', **kw)(features, train)


class ASPPHead(nn.Module):
    """DeepLabV3's head (mmseg ``ASPPHead``) on the backbone's last feature map."""
    num_classes: int
    dilations: Sequence[int] = (1, 12, 24, 36)
    channels: int = 512
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        x = _aspp_pyramid(features['out'], self.channels, self.dilations, False, train, **kw)
        return _classify(x, self.num_classes, train, **kw)


class DepthwiseSeparableASPPHead(nn.Module):
    """DeepLabV3+'s head (mmseg ``DepthwiseSeparableASPPHead``): the ASPP pyramid with
    separable atrous branches, upsampled to layer1's size and joined with layer1 reduced to
    ``low_channels`` (``c1_bottleneck``), then two separable 3x3 convs (``sep_bottleneck``)."""
    num_classes: int
    dilations: Sequence[int] = (1, 12, 24, 36)
    channels: int = 512
    low_channels: int = 48
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        x = _aspp_pyramid(features['out'], self.channels, self.dilations, True, train, **kw)
        low = ConvModule(self.low_channels, 1, name='c1_bottleneck', **kw)(features['low'], train)
        x = jnp.concatenate([resize_bilinear(x, low.shape[1:3]), low], axis=-1)
        separable = (SeparableConvModule, dict(features=self.channels, **kw))
        x = Sequential((separable, separable), name='sep_bottleneck')(x, train)
        return _classify(x, self.num_classes, train, **kw)


class PSPHead(nn.Module):
    """PSPNet's head (mmseg ``PSPHead``): the feature map pooled to 1, 2, 3 and 6 bins, each
    reduced by a 1x1 ``ConvModule`` and resized back (``psp_modules``), concatenated after the
    input, then the 3x3 ``bottleneck``."""
    num_classes: int
    bins: Sequence[int] = PSP_BINS
    channels: int = 512
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        x = features['out']
        pyramid = PyramidPoolingModule(self.channels, tuple(self.bins), name='psp_modules',
                                       **kw)(x, train)
        x = ConvModule(self.channels, 3, name='bottleneck', **kw)(
            jnp.concatenate([x, *pyramid], axis=-1), train)
        return _classify(x, self.num_classes, train, **kw)


class PyramidPoolingModule(nn.Module):
    """mmseg's ``PPM``: one ``PooledConvModule`` per bin count, each resized to the input."""
    features: int
    bins: Sequence[int] = PSP_BINS
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
        return [resize_bilinear(PooledConvModule(self.features, bins, self.initializer,
                                                 self.dtype, name=str(index))(x, train),
                                x.shape[1:3])
                for index, bins in enumerate(self.bins)]


class FCNHead(nn.Module):
    """mmsegmentation's ``FCNHead`` as its networks' auxiliary head (``auxiliary_head``) on
    layer3: ``convs/0`` (3x3 ``ConvModule``), no concatenation with the input, dropout,
    ``conv_seg``. Named as mmseg's class; torchvision's different FCN head is
    ``seg_jax.models.deeplab.TorchvisionFCNHead``, the course's FCN ``seg_jax.models.deconvnet``."""
    num_classes: int
    channels: int = 256
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], train: bool) -> jax.Array:
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        block = (ConvModule, dict(features=self.channels, kernel_size=3, **kw))
        x = Sequential((block,), name='convs')(features['aux'], train)
        return _classify(x, self.num_classes, train, **kw)


HEADS = {'aspp': ASPPHead, 'sep_aspp': DepthwiseSeparableASPPHead, 'psp': PSPHead}


class EncoderDecoder(nn.Module):
    """mmseg's ``EncoderDecoder``: ``backbone`` -> ``decode_head`` (+ ``auxiliary_head`` in
    training) -> logits resized to the input, ``{'out': ...}`` plus ``'aux'`` in training."""
    backbone: nn.Module
    head: str = 'aspp'  # a key of HEADS
    num_classes: int = 19
    output_stride: int = 8
    aux_head: bool = True
    width: float = 1.0
    initializer: str = 'xavier'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        check_input(x, 1, type(self).__name__)  # any size: only the layout is checked
        size = x.shape[1:3]
        kw = dict(initializer=self.initializer, dtype=self.dtype)
        features = self.backbone(x, train)
        head_kw = dict(channels=scaled(512, self.width), **kw)
        if self.head != 'psp':
            head_kw['dilations'] = (1, *atrous_rates(self.output_stride))
        if self.head == 'sep_aspp':
            head_kw['low_channels'] = scaled(48, self.width)
        logits = HEADS[self.head](self.num_classes, name='decode_head', **head_kw)(features,
                                                                                   train)
        outputs = {'out': resize_bilinear(logits, size).astype(jnp.float32)}
        # As DeepLabV3: the aux head's parameters always exist; evaluation does not compute it.
        if self.aux_head and (train or self.is_initializing()):
            aux = FCNHead(self.num_classes, scaled(256, self.width), name='auxiliary_head',
                          **kw)(features, train)
            if train:
                outputs['aux'] = resize_bilinear(aux, size).astype(jnp.float32)
        return outputs
