"""The model registry: ``build_model(config.model)`` is the only place that maps names to modules.

Every model is a Flax Linen module called as ``model.apply(variables, images, train=...)`` on
NHWC float images and returns ``{'out': logits}`` (float32, N x H x W x num_classes, at the
input size), plus ``'aux'`` logits in training mode for models with an auxiliary head.

``config.remat`` wraps the repeated blocks, the ResNet backbones' residual blocks and the U-Net's
double convs, in ``nn.remat``; networks with neither (fcn, or a vgg16_bn backbone) reject it.
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from seg_jax.errors import ConfigError
from seg_jax.models.aspp import ResNetASPP
from seg_jax.models.deeplab import DeepLabV3
from seg_jax.models.fcn import DeconvNet, FCNEncoder
from seg_jax.models.layers import CLASSIFIER_INITIALIZERS, kernel_initializer
from seg_jax.models.mmseg import EncoderDecoder
from seg_jax.models.resnet import ResNet
from seg_jax.models.unet import UNet
from seg_jax.models.vgg import VGG16BN, VGGFeatures

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'resnet18': lambda **kw: ResNet(depth=18, **kw),
    'resnet34': lambda **kw: ResNet(depth=34, **kw),
    'resnet50': lambda **kw: ResNet(depth=50, **kw),
    'resnet101': lambda **kw: ResNet(depth=101, **kw),
    # mmsegmentation's ResNetV1c: the same with a deep stem of three 3x3 convs.
    'resnet50_v1c': lambda **kw: ResNet(depth=50, deep_stem=True, **kw),
    'resnet101_v1c': lambda **kw: ResNet(depth=101, deep_stem=True, **kw),
    'vgg16_bn': lambda **kw: VGG16BN(VGGFeatures(**kw)),
}


def _common(config: ml_collections.ConfigDict) -> dict:
    """Arguments every network takes, validated."""
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f'config.model.compute_dtype={config.compute_dtype!r} is not known; '
                          f'use one of {sorted(COMPUTE_DTYPES)}. Parameters stay float32.')
    kernel_initializer(config.init)  # raises on an unknown name
    if config.init in CLASSIFIER_INITIALIZERS and config.name not in MMSEG_HEADS:
        raise ConfigError(f'config.model.init={config.init!r} is the initialisation of '
                          f'mmsegmentation\'s heads ({", ".join(MMSEG_HEADS)}); '
                          f'{config.name} has none. Use \'xavier\' or \'kaiming\'.')
    if config.num_classes < 1:
        raise ConfigError(f'config.model.num_classes={config.num_classes} must be positive.')
    if config.width <= 0:
        raise ConfigError(f'config.model.width={config.width} must be positive (1.0 is the '
                          'published network; smaller values make every layer narrower).')
    return dict(num_classes=config.num_classes, width=config.width, initializer=config.init,
                dtype=COMPUTE_DTYPES[config.compute_dtype])


def _backbone(config: ml_collections.ConfigDict, output_stride: int, common: dict) -> nn.Module:
    """The configured backbone, sharing the network's width, initialiser and compute dtype."""
    if config.backbone not in BACKBONES:
        raise ConfigError(f'config.model.backbone={config.backbone!r} is not known for '
                          f'{config.name}; use one of {sorted(BACKBONES)}.')
    kw = dict(output_stride=output_stride, width=common['width'],
              initializer=common['initializer'], dtype=common['dtype'])
    if config.backbone == 'vgg16_bn':
        _require(config, 'remat', (False,), 'its vgg16_bn backbone has no blocks to recompute '
                 '(only the ResNet backbones and the U-Net do)')
    else:
        kw['remat'] = config.remat
    return BACKBONES[config.backbone](**kw)


def _require(config: ml_collections.ConfigDict, field: str, allowed: tuple, why: str) -> None:
    """Rejects a config value the chosen network cannot honour, instead of ignoring it."""
    if config[field] not in allowed:
        raise ConfigError(f'config.model.{field}={config[field]!r} does not apply to '
                          f'{config.name}: {why}. Leave config.model.{field} at '
                          f'{allowed[0]!r} for {config.name}.')


def _fixed_architecture(config: ml_collections.ConfigDict, output_stride: int) -> None:
    """Checks for networks with no backbone, a fixed output stride and no extra heads."""
    _require(config, 'backbone', (None,), 'it has no backbone')
    _require(config, 'output_stride', (output_stride,),
             f'its output stride is fixed at {output_stride}')
    _require(config, 'aux_head', (False,),
             'only deeplabv3, fcn_resnet and the mmseg networks have an auxiliary head')
    _require(config, 'dual_aspp', (False,), 'only resnet_aspp has a layer3 ASPP')


def _fcn(config: ml_collections.ConfigDict) -> nn.Module:
    _fixed_architecture(config, DeconvNet.output_stride)
    _require(config, 'aspp_dropout', (0.0,), 'it has no ASPP')
    _require(config, 'remat', (False,), 'it has no residual or double-conv blocks to recompute '
             '(only the ResNet backbones and the U-Net do)')
    common = _common(config)
    encoder = FCNEncoder(common['width'], common['initializer'], common['dtype'])
    return DeconvNet(encoder, **common)


def _unet(config: ml_collections.ConfigDict) -> nn.Module:
    _fixed_architecture(config, UNet.output_stride)
    _require(config, 'aspp_dropout', (0.0,), 'it has no ASPP (use unet_aspp)')
    return UNet(remat=config.remat, **_common(config))


def _unet_aspp(config: ml_collections.ConfigDict) -> nn.Module:
    _fixed_architecture(config, UNet.output_stride)
    return UNet(aspp=True, aspp_dropout=config.aspp_dropout, remat=config.remat,
                **_common(config))


def _resnet_deconv(config: ml_collections.ConfigDict) -> nn.Module:
    _require(config, 'output_stride', (DeconvNet.output_stride,),
             'five x2 transposed convs undo exactly an output stride of 32')
    _require(config, 'aux_head', (False,),
             'only deeplabv3, fcn_resnet and the mmseg networks have an auxiliary head')
    _require(config, 'dual_aspp', (False,), 'only resnet_aspp has a layer3 ASPP')
    _require(config, 'aspp_dropout', (0.0,), 'it has no ASPP')
    common = _common(config)
    return DeconvNet(_backbone(config, DeconvNet.output_stride, common), **common)


def _resnet_aspp(config: ml_collections.ConfigDict) -> nn.Module:
    _require(config, 'aux_head', (False,),
             'only deeplabv3, fcn_resnet and the mmseg networks have an auxiliary head')
    common = _common(config)
    return ResNetASPP(_backbone(config, config.output_stride, common),
                      output_stride=config.output_stride, dual=config.dual_aspp,
                      aspp_dropout=config.aspp_dropout, **common)


def _dilated(head: str) -> Callable[[ml_collections.ConfigDict], nn.Module]:
    """DeepLabv3 or torchvision's FCN: a dilated backbone with the named head."""
    def build(config: ml_collections.ConfigDict) -> nn.Module:
        _require(config, 'dual_aspp', (False,), 'only resnet_aspp has a layer3 ASPP')
        _require(config, 'aspp_dropout', (0.0,),
                 f'the {head} head has its own fixed dropout, as torchvision\'s')
        common = _common(config)
        return DeepLabV3(_backbone(config, config.output_stride, common),
                         output_stride=config.output_stride, aux_head=config.aux_head,
                         head=head, **common)
    return build


# mmsegmentation's networks -> the head of seg_jax.models.mmseg they put on the backbone.
MMSEG_HEADS = {'deeplabv3_mmseg': 'aspp', 'deeplabv3plus': 'sep_aspp', 'pspnet': 'psp'}


def _mmseg(config: ml_collections.ConfigDict) -> nn.Module:
    """One of mmsegmentation's encoder-decoders on a dilated ResNet."""
    _require(config, 'dual_aspp', (False,), 'only resnet_aspp has a layer3 ASPP')
    _require(config, 'aspp_dropout', (0.0,), "mmsegmentation's heads have their own fixed "
             'Dropout2d(0.1) before the classifier')
    if not (config.backbone or '').startswith('resnet'):
        raise ConfigError(f'config.model.backbone={config.backbone!r} does not fit '
                          f'{config.name}: its heads need a ResNet (layer1, layer3 and layer4 '
                          'features); use resnet50_v1c or resnet101_v1c as mmsegmentation does.')
    common = _common(config)
    return EncoderDecoder(_backbone(config, config.output_stride, common),
                          head=MMSEG_HEADS[config.name], output_stride=config.output_stride,
                          aux_head=config.aux_head, **common)


MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    'fcn': _fcn,
    'unet': _unet,
    'unet_aspp': _unet_aspp,
    'resnet_deconv': _resnet_deconv,
    'resnet_aspp': _resnet_aspp,
    'deeplabv3': _dilated('deeplabv3'),
    'fcn_resnet': _dilated('fcn'),  # torchvision's fcn_resnet50/101
    **{name: _mmseg for name in MMSEG_HEADS},  # mmsegmentation's Cityscapes networks
}


def input_multiple(model: nn.Module) -> int:
    """What the sides of ``model``'s input must be multiples of: its output stride, except for
    mmsegmentation's networks, which take any size (as mmseg's do, padding nothing)."""
    return 1 if isinstance(model, EncoderDecoder) else model.output_stride


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Builds the network that ``config`` (the ``config.model`` section) describes."""
    if config.name not in MODELS:
        raise ConfigError(f'config.model.name={config.name!r} is not a known model; use one of '
                          f'{sorted(MODELS)}.')
    return MODELS[config.name](config)

