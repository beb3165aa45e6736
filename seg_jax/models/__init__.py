"""The model registry: ``build_model(config.model)`` is the only place that maps names to modules.

Every model is a Flax Linen module called as ``model.apply(variables, images, train=...)`` on
NHWC float images and returns ``{'out': logits}`` (float32, N x H x W x num_classes, at the
input size), plus ``'aux'`` logits in training mode for models with an auxiliary head.

``config.remat`` wraps the repeated blocks, the ResNet backbones' residual blocks and the U-Net's
double convs, in ``nn.remat``; networks with neither (fcn, or a vgg16_bn backbone) reject it.

Three different networks are called FCN: 'fcn' is the course's baseline
(``deconvnet.CourseFCNEncoder`` + ``DeconvNet``), 'fcn_resnet' is torchvision's ``fcn_resnet50/101``
(``deeplab.TorchvisionFCNHead``), and mmsegmentation's ``FCNHead`` (``mmseg.FCNHead``) is only the
auxiliary head of its networks. The names are stored in users' config.json files: keep them.
"""

import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from seg_jax.errors import ConfigError
from seg_jax.models.aspp import ResNetASPP
from seg_jax.models.deconvnet import CourseFCNEncoder, DeconvNet
from seg_jax.models.deeplab import DeepLabV3
from seg_jax.models.layers import CLASSIFIER_INITIALIZERS, kernel_initializer
from seg_jax.models.mmseg import EncoderDecoder
from seg_jax.models.resnet import ResNet
from seg_jax.models.unet import UNet
from seg_jax.models.vgg import VGG16BN, VGGFeatures

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'resnet18': functools.partial(ResNet, depth=18),
    'resnet34': functools.partial(ResNet, depth=34),
    'resnet50': functools.partial(ResNet, depth=50),
    'resnet101': functools.partial(ResNet, depth=101),
    # mmsegmentation's ResNetV1c: the same with a deep stem of three 3x3 convs.
    'resnet50_v1c': functools.partial(ResNet, depth=50, deep_stem=True),
    'resnet101_v1c': functools.partial(ResNet, depth=101, deep_stem=True),
    'vgg16_bn': lambda **kw: VGG16BN(VGGFeatures(**kw)),
}

# mmsegmentation's networks -> the head of seg_jax.models.mmseg they put on the backbone.
MMSEG_HEADS = {'deeplabv3_mmseg': 'aspp', 'deeplabv3plus': 'sep_aspp', 'pspnet': 'psp'}


class Only(NamedTuple):
    """The values of a ``config.model`` field that a network honours (the first is the one to
    leave it at), and why it takes no others."""
    values: tuple
    why: str


# Restrictions shared by several networks, each written once.
_NO_BACKBONE = Only((None,), 'it has no backbone')
_NO_AUX_HEAD = Only((False,), 'only deeplabv3, fcn_resnet and the mmseg networks have an '
                              'auxiliary head')
_NO_DUAL_ASPP = Only((False,), 'only resnet_aspp has a layer3 ASPP')
_NO_ASPP = Only((0.0,), 'it has no ASPP')
_REMAT_APPLIES_TO = '(only the ResNet backbones and the U-Net do)'


def _output_stride_fixed_at(stride: int) -> Only:
    return Only((stride,), f'its output stride is fixed at {stride}')


def _own_dropout(head: str) -> Only:
    return Only((0.0,), f'the {head} head has its own fixed dropout, as torchvision\'s')


# For each network, the config.model fields it cannot honour in full; any field not listed takes
# every valid value. Checked in this order, before the network's other checks (``_common``).
RESTRICTIONS: dict[str, dict[str, Only]] = {
    'fcn': dict(
        backbone=_NO_BACKBONE, output_stride=_output_stride_fixed_at(DeconvNet.output_stride),
        aux_head=_NO_AUX_HEAD, dual_aspp=_NO_DUAL_ASPP, aspp_dropout=_NO_ASPP,
        remat=Only((False,), 'it has no residual or double-conv blocks to recompute '
                             + _REMAT_APPLIES_TO)),
    'unet': dict(
        backbone=_NO_BACKBONE, output_stride=_output_stride_fixed_at(UNet.output_stride),
        aux_head=_NO_AUX_HEAD, dual_aspp=_NO_DUAL_ASPP,
        aspp_dropout=Only((0.0,), 'it has no ASPP (use unet_aspp)')),
    'unet_aspp': dict(
        backbone=_NO_BACKBONE, output_stride=_output_stride_fixed_at(UNet.output_stride),
        aux_head=_NO_AUX_HEAD, dual_aspp=_NO_DUAL_ASPP),
    'resnet_deconv': dict(
        output_stride=Only((DeconvNet.output_stride,),
                           'five x2 transposed convs undo exactly an output stride of 32'),
        aux_head=_NO_AUX_HEAD, dual_aspp=_NO_DUAL_ASPP, aspp_dropout=_NO_ASPP),
    'resnet_aspp': dict(aux_head=_NO_AUX_HEAD),
    'deeplabv3': dict(dual_aspp=_NO_DUAL_ASPP, aspp_dropout=_own_dropout('deeplabv3')),
    'fcn_resnet': dict(dual_aspp=_NO_DUAL_ASPP, aspp_dropout=_own_dropout('fcn')),
    **{name: dict(dual_aspp=_NO_DUAL_ASPP,
                  aspp_dropout=Only((0.0,), "mmsegmentation's heads have their own fixed "
                                            'Dropout2d(0.1) before the classifier'))
       for name in MMSEG_HEADS},
}
# ...and those a backbone imposes on whichever network it is in, checked once it is known.
BACKBONE_RESTRICTIONS: dict[str, dict[str, Only]] = {
    'vgg16_bn': dict(remat=Only((False,), 'its vgg16_bn backbone has no blocks to recompute '
                                          + _REMAT_APPLIES_TO)),
}


def _check_restrictions(config: ml_collections.ConfigDict, restrictions: dict[str, Only]) -> None:
    """Rejects a config value the chosen network cannot honour, instead of ignoring it."""
    for field, (values, why) in restrictions.items():
        if config[field] not in values:
            raise ConfigError(f'config.model.{field}={config[field]!r} does not apply to '
                              f'{config.name}: {why}. Leave config.model.{field} at '
                              f'{values[0]!r} for {config.name}.')


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
    _check_restrictions(config, BACKBONE_RESTRICTIONS.get(config.backbone, {}))
    kw = dict(output_stride=output_stride, width=common['width'],
              initializer=common['initializer'], dtype=common['dtype'])
    if config.backbone != 'vgg16_bn':  # VGGFeatures has no blocks to recompute
        kw['remat'] = config.remat
    return BACKBONES[config.backbone](**kw)


def _course_fcn(config: ml_collections.ConfigDict) -> nn.Module:
    """The course's FCN: five stride-2 convs, then the transposed-conv decoder."""
    common = _common(config)
    encoder = CourseFCNEncoder(common['width'], common['initializer'], common['dtype'])
    return DeconvNet(encoder, **common)


def _unet(config: ml_collections.ConfigDict, aspp: bool = False) -> nn.Module:
    return UNet(aspp=aspp, aspp_dropout=config.aspp_dropout, remat=config.remat,
                **_common(config))


def _resnet_deconv(config: ml_collections.ConfigDict) -> nn.Module:
    common = _common(config)
    return DeconvNet(_backbone(config, DeconvNet.output_stride, common), **common)


def _resnet_aspp(config: ml_collections.ConfigDict) -> nn.Module:
    common = _common(config)
    return ResNetASPP(_backbone(config, config.output_stride, common),
                      output_stride=config.output_stride, dual=config.dual_aspp,
                      aspp_dropout=config.aspp_dropout, **common)


def _dilated(config: ml_collections.ConfigDict, head: str) -> nn.Module:
    """DeepLabv3 or torchvision's FCN: a dilated backbone with the named head."""
    common = _common(config)
    return DeepLabV3(_backbone(config, config.output_stride, common),
                     output_stride=config.output_stride, aux_head=config.aux_head, head=head,
                     **common)


def _mmseg(config: ml_collections.ConfigDict) -> nn.Module:
    """One of mmsegmentation's encoder-decoders on a dilated ResNet."""
    if not (config.backbone or '').startswith('resnet'):
        raise ConfigError(f'config.model.backbone={config.backbone!r} does not fit '
                          f'{config.name}: its heads need a ResNet (layer1, layer3 and layer4 '
                          'features); use resnet50_v1c or resnet101_v1c as mmsegmentation does.')
    common = _common(config)
    return EncoderDecoder(_backbone(config, config.output_stride, common),
                          head=MMSEG_HEADS[config.name], output_stride=config.output_stride,
                          aux_head=config.aux_head, **common)


MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    'fcn': _course_fcn,  # the course's FCN baseline (seg_jax.models.deconvnet)
    'unet': _unet,
    'unet_aspp': functools.partial(_unet, aspp=True),
    'resnet_deconv': _resnet_deconv,
    'resnet_aspp': _resnet_aspp,
    'deeplabv3': functools.partial(_dilated, head='deeplabv3'),
    # torchvision's fcn_resnet50/101: TorchvisionFCNHead on a dilated ResNet.
    'fcn_resnet': functools.partial(_dilated, head='fcn'),
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
    _check_restrictions(config, RESTRICTIONS.get(config.name, {}))
    return MODELS[config.name](config)
