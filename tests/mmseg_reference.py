"""Plain-PyTorch stand-ins for the mmsegmentation networks that seg_jax mirrors.

mmsegmentation (and mmcv/mmengine under it) is not a dependency of seg_jax nor of its tests,
yet the Flax models of ``seg_jax.models.mmseg`` are meant to load mmseg's published Cityscapes
checkpoints. The modules here re-create mmseg 1.2.2's ``EncoderDecoder`` on a ``ResNetV1c``
with ``ASPPHead`` (DeepLabV3), ``DepthwiseSeparableASPPHead`` (DeepLabV3+) or ``PSPHead``
(PSPNet) and the ``FCNHead`` auxiliary head, as ``configs/_base_/models/*_r50-d8.py`` build
them, with only ``torch``: the same module tree, registered in the same order, hence the same
state-dict keys, shapes and key order, and the same eval-mode forward computation. Tests use
them to

* save random weights as an mmseg model-zoo checkpoint (``save_mmseg_checkpoint``: 0.x and 1.x
  layouts) for seg_jax's loader to read, and
* compute reference logits for the Flax models to match.

What of mmseg's tree has no state is left out: the heads' ``loss_decode`` (CrossEntropyLoss)
and the segmentor's ``data_preprocessor`` hold neither parameters nor buffers. mmseg's configs
use SyncBN; a single-process ``BatchNorm2d`` has the same state-dict entries and the same
eval-mode computation. Weights keep PyTorch's default initialisation rather than mmseg's
(Kaiming convs, N(0, 0.01) ``conv_seg``): only the layout and the forward have to match, and
non-zero biases exercise their placement too.
"""

import collections
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import torch_reference

# ResNet.arch_settings of mmseg's backbones/resnet.py for its Bottleneck depths.
_RESNET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# The "-D8" setting of every Cityscapes config here: output stride 8, layer3 and layer4 dilated
# instead of strided (contract_dilation halves the first block's dilation of each).
D8_STRIDES = (1, 2, 1, 1)
D8_DILATIONS = (1, 1, 2, 4)

HEAD_CHANNELS = 512  # decode_head.channels of all three configs
AUX_CHANNELS = 256  # auxiliary_head.channels
ASPP_DILATIONS = (1, 12, 24, 36)
PSP_POOL_SCALES = (1, 2, 3, 6)
DROPOUT_RATIO = 0.1
ALIGN_CORNERS = False

# mmseg.datasets.CityscapesDataset.METAINFO (train ids 0..18).
CITYSCAPES_CLASSES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
    'motorcycle', 'bicycle')
CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32]]


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """mmseg ``models.utils.resize`` as every head and the segmentor call it: bilinear,
    ``align_corners=False`` (the configs' value; its warning only concerns align_corners=True)."""
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=ALIGN_CORNERS)


class ConvModule(nn.Module):
    """mmcv ``ConvModule`` with ``norm_cfg=BN`` and ``act_cfg=ReLU``: ``conv`` -> ``bn`` -> ReLU.

    ``bias='auto'`` drops the conv bias because a norm follows; ``build_norm_layer`` names a
    BatchNorm ``bn``; the ReLU (``activate``, inplace) holds no state. Keys:
    ``conv.weight``, ``bn.{weight,bias,running_mean,running_var,num_batches_tracked}``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv ``DepthwiseSeparableConvModule``: ``depthwise_conv``, a ``ConvModule`` with
    ``groups=in_channels`` (its own BN and ReLU: dw_norm_cfg/dw_act_cfg default to the module's),
    then ``pointwise_conv``, a 1x1 ``ConvModule``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 padding: int = 0, dilation: int = 1):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, padding=padding,
                                         dilation=dilation, groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class Bottleneck(nn.Module):
    """mmseg ``backbones.resnet.Bottleneck``, style 'pytorch': the stride sits on the 3x3 conv2.

    Registered conv1, bn1, conv2, bn2, conv3, bn3, relu, downsample (``build_norm_layer`` with
    postfixes 1-3 names the norms bn1-bn3); conv2's padding equals its dilation.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def res_layer(inplanes: int, planes: int, num_blocks: int, stride: int = 1, dilation: int = 1,
              contract_dilation: bool = False) -> nn.Sequential:
    """mmseg ``models.utils.ResLayer`` (no avg_down, no multi_grid).

    The first block takes the stride and a 1x1-conv + BN ``downsample``; with
    ``contract_dilation`` a dilated stage's first block uses half the dilation (layer3 of -D8:
    1 then 2, 2, ...; layer4: 2 then 4, 4).
    """
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion),
        )
    first_dilation = dilation // 2 if dilation > 1 and contract_dilation else dilation
    layers = [Bottleneck(inplanes, planes, stride, first_dilation, downsample)]
    inplanes = planes * Bottleneck.expansion
    layers += [Bottleneck(inplanes, planes, 1, dilation) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class ResNetV1c(nn.Module):
    """mmseg ``ResNetV1c``: ``ResNet(deep_stem=True, avg_down=False)`` with BN, style 'pytorch'.

    ``stem`` is Sequential(conv3x3 3->32 stride 2, BN, ReLU, conv3x3 32->32, BN, ReLU,
    conv3x3 32->64, BN, ReLU) (state at indices 0, 1, 3, 4, 6, 7), then a 3x3 stride-2 max-pool
    (no state) and ``layer1``..``layer4``. The defaults are mmseg's class defaults (the
    ImageNet network, output stride 32); the segmentation configs pass ``D8_STRIDES``,
    ``D8_DILATIONS`` and ``contract_dilation=True``. ``forward`` returns the outputs of the
    stages in ``out_indices`` as a tuple.
    """

    def __init__(self, depth: int = 50, strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), contract_dilation: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3), stem_channels: int = 64,
                 base_channels: int = 64):
        super().__init__()
        if depth not in _RESNET_STAGES:
            raise ValueError(f'depth must be one of {sorted(_RESNET_STAGES)}, got {depth}')
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f'need 4 strides and 4 dilations, got {strides}, {dilations}')
        self.out_indices = tuple(out_indices)
        half = stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_layers: list[str] = []
        inplanes = stem_channels
        for i, num_blocks in enumerate(_RESNET_STAGES[depth]):
            planes = base_channels * 2**i
            self.add_module(f'layer{i + 1}', res_layer(inplanes, planes, num_blocks, strides[i],
                                                       dilations[i], contract_dilation))
            self.res_layers.append(f'layer{i + 1}')
            inplanes = planes * Bottleneck.expansion
        self.feat_dim = inplanes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.stem(x))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class ResNetV1cImageNet(ResNetV1c):
    """The ImageNet ResNetV1c of mmcv's ``open-mmlab://resnet50_v1c`` / ``resnet101_v1c``
    (``pretrain/third_party/resnet{50,101}_v1c-*.pth``): ``ResNetV1c`` plus the classifier
    ``fc`` (2048 -> 1000) that those files also hold. mmseg loads them into its ResNetV1c, which
    has no ``fc``, and reports ``fc.weight, fc.bias`` as unexpected keys. ``forward`` still
    returns the stage outputs; ``classify`` is the ImageNet forward (global average pool, fc).
    """

    def __init__(self, depth: int = 50, num_classes: int = 1000):
        super().__init__(depth)
        self.fc = nn.Linear(self.feat_dim, num_classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward(x)[-1]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


class BaseDecodeHead(nn.Module):
    """mmseg ``BaseDecodeHead``: picks ``inputs[in_index]``; ``cls_seg`` is ``Dropout2d`` then
    ``conv_seg`` (1x1, with bias).

    ``conv_seg`` (and the stateless ``dropout``) are registered here, before any subclass
    module, so each head's state dict starts with ``conv_seg.weight``, ``conv_seg.bias``.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, in_index: int = -1,
                 dropout_ratio: float = DROPOUT_RATIO):
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.in_index = in_index
        self.align_corners = ALIGN_CORNERS
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def _transform_inputs(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return inputs[self.in_index]

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)


class ASPPModule(nn.ModuleList):
    """mmseg ``decode_heads.aspp_head.ASPPModule``: per dilation a ``ConvModule``, 1x1 (padding
    0) for dilation 1, else 3x3 with padding = dilation; returns the list of branch outputs."""

    def __init__(self, dilations: Sequence[int], in_channels: int, channels: int):
        super().__init__()
        self.dilations = tuple(dilations)
        for dilation in dilations:
            self.append(ConvModule(in_channels, channels, 1 if dilation == 1 else 3,
                                   padding=0 if dilation == 1 else dilation, dilation=dilation))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [module(x) for module in self]


class ASPPHead(BaseDecodeHead):
    """mmseg ``ASPPHead`` (DeepLabV3).

    ``image_pool`` = Sequential(AdaptiveAvgPool2d(1), 1x1 ``ConvModule``), resized back to the
    feature size (bilinear from 1x1: a broadcast); concatenated as [image_pool, aspp_modules
    0..3] (5 x 512 channels) into ``bottleneck``, a 3x3 ``ConvModule``; then ``cls_seg``.
    """

    def __init__(self, in_channels: int = 2048, channels: int = HEAD_CHANNELS,
                 num_classes: int = 19, dilations: Sequence[int] = ASPP_DILATIONS,
                 in_index: int = 3):
        super().__init__(in_channels, channels, num_classes, in_index)
        self.dilations = tuple(dilations)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                        ConvModule(in_channels, channels, 1))
        self.aspp_modules = ASPPModule(dilations, in_channels, channels)
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3, padding=1)

    def _aspp(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck's output: mmseg ``ASPPHead._forward_feature`` after input selection."""
        aspp_outs = [resize(self.image_pool(x), x.shape[2:])]
        aspp_outs.extend(self.aspp_modules(x))
        return self.bottleneck(torch.cat(aspp_outs, dim=1))

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self._aspp(self._transform_inputs(inputs)))


class DepthwiseSeparableASPPModule(ASPPModule):
    """mmseg ``DepthwiseSeparableASPPModule``: the ``ASPPModule`` with each dilated branch
    replaced in place (same index) by a 3x3 ``DepthwiseSeparableConvModule``; branch 0 stays
    the 1x1 ``ConvModule``."""

    def __init__(self, dilations: Sequence[int], in_channels: int, channels: int):
        super().__init__(dilations, in_channels, channels)
        for i, dilation in enumerate(self.dilations):
            if dilation > 1:
                self[i] = DepthwiseSeparableConvModule(in_channels, channels, 3,
                                                       padding=dilation, dilation=dilation)


class DepthwiseSeparableASPPHead(ASPPHead):
    """mmseg ``DepthwiseSeparableASPPHead`` (DeepLabV3+).

    ``ASPPHead.__init__`` runs first, so the tree (and key order) is conv_seg, image_pool,
    aspp_modules (re-assigned to the separable module, keeping its place), bottleneck (still
    ASPPHead's plain 3x3 ``ConvModule`` 2560 -> 512), c1_bottleneck, sep_bottleneck. Forward:
    the ASPP bottleneck's output is resized to layer1's size (``inputs[0]``, taken directly, not
    through in_index) and concatenated after ``c1_bottleneck(layer1)`` (512 + 48 channels), then
    ``sep_bottleneck`` (two 3x3 separable modules) and ``cls_seg``.
    """

    def __init__(self, in_channels: int = 2048, channels: int = HEAD_CHANNELS,
                 num_classes: int = 19, dilations: Sequence[int] = ASPP_DILATIONS,
                 in_index: int = 3, c1_in_channels: int = 256, c1_channels: int = 48):
        super().__init__(in_channels, channels, num_classes, dilations, in_index)
        self.aspp_modules = DepthwiseSeparableASPPModule(dilations, in_channels, channels)
        self.c1_bottleneck = (ConvModule(c1_in_channels, c1_channels, 1)
                              if c1_in_channels > 0 else None)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, padding=1),
            DepthwiseSeparableConvModule(channels, channels, 3, padding=1),
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        output = self._aspp(self._transform_inputs(inputs))
        if self.c1_bottleneck is not None:
            c1_output = self.c1_bottleneck(inputs[0])
            output = torch.cat([resize(output, c1_output.shape[2:]), c1_output], dim=1)
        return self.cls_seg(self.sep_bottleneck(output))


class PPM(nn.ModuleList):
    """mmseg ``decode_heads.psp_head.PPM``: per scale Sequential(AdaptiveAvgPool2d(scale),
    1x1 ``ConvModule``), each output resized back (bilinear) to the input's size.

    PyTorch's adaptive pooling bin ``i`` of ``n`` over a length ``L`` averages
    ``[floor(i * L / n), ceil((i + 1) * L / n))``: where ``n`` does not divide ``L`` the bins
    differ in size and neighbours overlap.
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        for scale in pool_scales:
            self.append(nn.Sequential(nn.AdaptiveAvgPool2d(scale),
                                      ConvModule(in_channels, channels, 1)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize(ppm(x), x.shape[2:]) for ppm in self]


class PSPHead(BaseDecodeHead):
    """mmseg ``PSPHead`` (PSPNet): [x, PPM outputs] (2048 + 4 x 512 channels) into
    ``bottleneck``, a 3x3 ``ConvModule``, then ``cls_seg``."""

    def __init__(self, in_channels: int = 2048, channels: int = HEAD_CHANNELS,
                 num_classes: int = 19, pool_scales: Sequence[int] = PSP_POOL_SCALES,
                 in_index: int = 3):
        super().__init__(in_channels, channels, num_classes, in_index)
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = PPM(pool_scales, in_channels, channels)
        self.bottleneck = ConvModule(in_channels + len(pool_scales) * channels, channels, 3,
                                     padding=1)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        psp_outs = [x, *self.psp_modules(x)]
        return self.cls_seg(self.bottleneck(torch.cat(psp_outs, dim=1)))


class FCNHead(BaseDecodeHead):
    """mmseg ``FCNHead`` as the configs' auxiliary head: ``convs`` = Sequential of
    ``num_convs`` 3x3 ``ConvModule``s (1 here: 1024 -> 256 on layer3, in_index 2), no
    ``conv_cat`` (concat_input=False), then ``cls_seg``."""

    def __init__(self, in_channels: int = 1024, channels: int = AUX_CHANNELS,
                 num_classes: int = 19, num_convs: int = 1, kernel_size: int = 3,
                 in_index: int = 2):
        super().__init__(in_channels, channels, num_classes, in_index)
        padding = kernel_size // 2
        self.convs = nn.Sequential(*[
            ConvModule(in_channels if i == 0 else channels, channels, kernel_size,
                       padding=padding) for i in range(num_convs)])

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.convs(self._transform_inputs(inputs)))


class EncoderDecoder(nn.Module):
    """mmseg ``segmentors.EncoderDecoder`` (no neck): ``backbone``, ``decode_head`` and an
    optional ``auxiliary_head`` (training only in mmseg; kept for its keys and for tests).

    ``forward`` is mmseg's whole-image inference (``encode_decode``, then
    ``decode_head.predict_by_feat``): the decode head's logits resized bilinearly
    (align_corners=False) to the input's height and width, before any softmax.
    """

    def __init__(self, backbone: ResNetV1c, decode_head: BaseDecodeHead,
                 auxiliary_head: BaseDecodeHead | None = None, config_text: str = ''):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        if auxiliary_head is not None:  # mmseg only sets the attribute when there is one
            self.auxiliary_head = auxiliary_head
        self.align_corners = decode_head.align_corners
        self.num_classes = decode_head.num_classes
        self.config_text = config_text  # an mmseg 0.x-style config, for checkpoint meta

    @property
    def with_auxiliary_head(self) -> bool:
        return hasattr(self, 'auxiliary_head')

    def extract_feat(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone's four stage outputs (layer1..layer4)."""
        return self.backbone(x)

    def encode_decode(self, x: torch.Tensor) -> torch.Tensor:
        """Decode-head logits at the input's size."""
        return resize(self.decode_head(self.extract_feat(x)), x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_decode(x)

    def forward_all(self, x: torch.Tensor) -> collections.OrderedDict[str, torch.Tensor]:
        """'out' (decode head) and, with an auxiliary head, 'aux' logits, both resized to the
        input's size, from one backbone pass (torch_reference's output convention)."""
        features = self.extract_feat(x)
        result = collections.OrderedDict(out=resize(self.decode_head(features), x.shape[2:]))
        if self.with_auxiliary_head:
            result['aux'] = resize(self.auxiliary_head(features), x.shape[2:])
        return result

    def auxiliary_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's logits at the input's size."""
        if not self.with_auxiliary_head:
            raise ValueError('this model was built without an auxiliary head')
        return resize(self.auxiliary_head(self.extract_feat(x)), x.shape[2:])


def _config_text(decode_head: str, depth: int, num_classes: int, aux: bool,
                 head_args: str) -> str:
    """A compact mmseg 0.x-style config (``cfg.pretty_text``'s model part) of the network, for
    the ``config`` entry of checkpoint meta."""
    aux_text = (
        "    auxiliary_head=dict(type='FCNHead', in_channels=1024, in_index=2, channels=256,\n"
        "        num_convs=1, concat_input=False, dropout_ratio=0.1,\n"
        f"        num_classes={num_classes}, norm_cfg=norm_cfg, align_corners=False,\n"
        "        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,"
        " loss_weight=0.4)),\n") if aux else ''
    return (
        "norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
        "model = dict(\n"
        "    type='EncoderDecoder',\n"
        f"    pretrained='open-mmlab://resnet{depth}_v1c',\n"
        f"    backbone=dict(type='ResNetV1c', depth={depth}, num_stages=4,\n"
        "        out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),\n"
        "        norm_cfg=norm_cfg, norm_eval=False, style='pytorch', contract_dilation=True),\n"
        f"    decode_head=dict(type='{decode_head}', in_channels=2048, in_index=3,"
        f" channels=512,\n        {head_args}dropout_ratio=0.1, num_classes={num_classes},"
        " norm_cfg=norm_cfg,\n        align_corners=False,\n"
        "        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,"
        " loss_weight=1.0)),\n"
        f"{aux_text}"
        "    train_cfg=dict(),\n"
        "    test_cfg=dict(mode='whole'))\n")


def resnet_v1c_d8(depth: int = 50) -> ResNetV1c:
    """The configs' backbone: ResNetV1c-D8 (strides 1, 2, 1, 1; dilations 1, 1, 2, 4;
    contract_dilation), returning all four stages."""
    return ResNetV1c(depth, strides=D8_STRIDES, dilations=D8_DILATIONS, contract_dilation=True)


def _aux_head(num_classes: int, aux: bool) -> FCNHead | None:
    return FCNHead(1024, AUX_CHANNELS, num_classes) if aux else None


def deeplabv3(depth: int = 50, num_classes: int = 19, aux: bool = True) -> EncoderDecoder:
    """mmseg ``deeplabv3_r{50,101}-d8`` (``configs/_base_/models/deeplabv3_r50-d8.py``)."""
    return EncoderDecoder(
        resnet_v1c_d8(depth), ASPPHead(2048, HEAD_CHANNELS, num_classes),
        _aux_head(num_classes, aux),
        _config_text('ASPPHead', depth, num_classes, aux, 'dilations=(1, 12, 24, 36), '))


def deeplabv3plus(depth: int = 50, num_classes: int = 19, aux: bool = True) -> EncoderDecoder:
    """mmseg ``deeplabv3plus_r{50,101}-d8`` (``configs/_base_/models/deeplabv3plus_r50-d8.py``)."""
    return EncoderDecoder(
        resnet_v1c_d8(depth), DepthwiseSeparableASPPHead(2048, HEAD_CHANNELS, num_classes),
        _aux_head(num_classes, aux),
        _config_text('DepthwiseSeparableASPPHead', depth, num_classes, aux,
                     'dilations=(1, 12, 24, 36), c1_in_channels=256, c1_channels=48, '))


def pspnet(depth: int = 50, num_classes: int = 19, aux: bool = True) -> EncoderDecoder:
    """mmseg ``pspnet_r{50,101}-d8`` (``configs/_base_/models/pspnet_r50-d8.py``)."""
    return EncoderDecoder(
        resnet_v1c_d8(depth), PSPHead(2048, HEAD_CHANNELS, num_classes),
        _aux_head(num_classes, aux),
        _config_text('PSPHead', depth, num_classes, aux, 'pool_scales=(1, 2, 3, 6), '))


def resnet_v1c(depth: int = 50, with_fc: bool = True) -> ResNetV1c:
    """The ImageNet backbone alone, as mmcv's ``resnet{50,101}_v1c`` files hold it: keys
    relative to the backbone (``stem.0.weight``, ``layer1.0.conv1.weight``, ...), non-dilated
    (output stride 32), and with ``fc.weight``/``fc.bias`` (1000 classes) unless ``with_fc``
    is False (then mmseg's ``ResNetV1c`` exactly)."""
    return ResNetV1cImageNet(depth) if with_fc else ResNetV1c(depth)


SEGMENTORS: dict[str, Callable[..., EncoderDecoder]] = {
    'deeplabv3': deeplabv3,
    'deeplabv3plus': deeplabv3plus,
    'pspnet': pspnet,
}

# Each architecture as mmseg builds it for its Cityscapes model zoo (19 classes, aux head
# included), named as its configs, and the ImageNet backbones those configs start from.
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    **{f'{name}_r{depth}-d8': (lambda build=build, depth=depth: build(depth))
       for name, build in SEGMENTORS.items() for depth in (50, 101)},
    'resnet50_v1c': lambda: resnet_v1c(50),
    'resnet101_v1c': lambda: resnet_v1c(101),
}


def state_dict_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Every state-dict key (``num_batches_tracked`` included), in order, to its shape."""
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def parameter_count(module: nn.Module) -> int:
    """Number of parameter elements (buffers excluded), as model-zoo tables count them."""
    return sum(p.numel() for p in module.parameters())


def randomize_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    """torch_reference's random BatchNorm statistics and affine parameters (a fresh BatchNorm
    is nearly the identity and would hide a misplaced one), and a plausible non-zero
    ``num_batches_tracked``, as in a trained checkpoint."""
    torch_reference.randomize_batch_norm(module, generator)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_batches_tracked.fill_(80000)


def checkpoint_meta(config_text: str = '', mmseg_1x: bool = False,
                    iteration: int = 80000) -> dict[str, Any]:
    """The ``meta`` of an mmseg model-zoo checkpoint.

    0.x (mmcv runner; tools/train.py's checkpoint_config.meta): ``mmseg_version``, ``config``
    (the config's text), ``CLASSES`` (a tuple), ``PALETTE`` (a list of [r, g, b] lists), plus the
    runner's ``epoch``, ``iter``, ``mmcv_version`` and ``time``. 1.x (mmengine runner): ``cfg``
    (the config's text), ``dataset_meta`` = {'classes', 'palette'}, ``epoch``, ``iter``,
    ``mmengine_version``, ``seed``, ``experiment_name``, ``time``.
    """
    if mmseg_1x:
        return {
            'cfg': config_text, 'seed': 0, 'experiment_name': 'mmseg_reference',
            'time': time.strftime('%Y%m%d_%H%M%S'), 'mmengine_version': '0.10.3',
            'dataset_meta': {'classes': CITYSCAPES_CLASSES,
                             'palette': [list(c) for c in CITYSCAPES_PALETTE]},
            'epoch': 0, 'iter': iteration,
        }
    return {
        'mmseg_version': '0.11.0+0000000', 'config': config_text,
        'CLASSES': CITYSCAPES_CLASSES, 'PALETTE': [list(c) for c in CITYSCAPES_PALETTE],
        'epoch': 1, 'iter': iteration, 'mmcv_version': '1.2.4', 'time': time.asctime(),
    }


def save_mmseg_checkpoint(model: nn.Module, path: str | pathlib.Path,
                          meta: dict[str, Any] | None = None, *, mmseg_1x: bool = False,
                          legacy_format: bool = False) -> None:
    """Write ``{'meta': meta, 'state_dict': model.state_dict()}`` as a torch pickle, the layout
    of mmseg's published checkpoints (optimizer state stripped, as the model zoo publishes
    them; tensors on CPU).

    ``meta`` defaults to ``checkpoint_meta`` (0.x, or 1.x with ``mmseg_1x``) with the model's
    config text. ``legacy_format`` writes PyTorch's pre-1.6 (non-zip) serialisation, which the
    older model-zoo files use.
    """
    if meta is None:
        meta = checkpoint_meta(getattr(model, 'config_text', ''), mmseg_1x)
    state_dict = collections.OrderedDict(
        (key, value.detach().cpu()) for key, value in model.state_dict().items())
    torch.save({'meta': meta, 'state_dict': state_dict}, str(path),
               _use_new_zipfile_serialization=not legacy_format)
