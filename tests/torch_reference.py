"""Plain-PyTorch stand-ins for the torchvision models that seg_jax mirrors.

torchvision is not a dependency of seg_jax (nor of its tests), yet the Flax models are meant to
load torchvision's published checkpoints. The modules here re-create torchvision's ResNet
(v1.5), vgg16_bn, DeepLabV3 and FCN with only ``torch``: the same module tree, hence the same
state-dict keys and shapes, and the same eval-mode forward computation. Tests use them to

* list every state-dict key and shape of each torchvision architecture
  (``tests/data/torchvision_state_dicts.json`` keeps that table for tests that run without torch:
  ``python tests/torch_reference.py`` regenerates it), and
* compute reference outputs from randomly initialised weights.

Weights keep PyTorch's default initialisation rather than torchvision's (kaiming-normal convs;
VGG also zeroes its biases): tests copy these weights into the Flax models, so only the layout
and the forward computation have to match, and non-zero biases exercise their placement too.
"""

import collections
import json
import pathlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Blocks per stage, and whether the stage uses the Bottleneck block, as torchvision's resnetXX().
_RESNET_STAGES = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
}

# torchvision's vgg.py cfgs['D']: output channels of each 3x3 conv, 'M' a 2x2 max-pool.
_VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512, 'M')

# The table of every architecture's state-dict shapes, for tests that run without torch.
STATE_DICTS_JSON = pathlib.Path(__file__).resolve().parent / 'data' / 'torchvision_state_dicts.json'


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """torchvision resnet.conv3x3: bias-free 3x3 conv, padding equal to the dilation."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """torchvision resnet.conv1x1: bias-free 1x1 conv."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision resnet.BasicBlock (ResNet-18/34): two 3x3 convs, the first one strided."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        if dilation > 1:
            # As torchvision: BasicBlock networks cannot be dilated.
            raise NotImplementedError('Dilation > 1 not supported in BasicBlock')
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision resnet.Bottleneck (ResNet v1.5): 1x1, 3x3 (strided, dilated), 1x1 x4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision resnet.ResNet (groups=1, width 64, BatchNorm2d)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 num_classes: int = 1000,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False)):
        super().__init__()
        if len(replace_stride_with_dilation) != 3:
            raise ValueError('replace_stride_with_dilation needs 3 entries, got '
                             f'{replace_stride_with_dilation}')
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1, dilate: bool = False) -> nn.Sequential:
        """torchvision ResNet._make_layer.

        A dilated stage trades its stride for dilation; its first block still uses the dilation
        in force before the stage (``previous_dilation``), the remaining blocks the new one.
        """
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(depth: int, num_classes: int = 1000,
           replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> ResNet:
    """torchvision ``resnet18/34/50/101(num_classes=..., replace_stride_with_dilation=...)``."""
    if depth not in _RESNET_STAGES:
        raise ValueError(f'depth must be one of {sorted(_RESNET_STAGES)}, got {depth}')
    layers, bottleneck = _RESNET_STAGES[depth]
    return ResNet(Bottleneck if bottleneck else BasicBlock, layers, num_classes,
                  replace_stride_with_dilation)


class VGG(nn.Module):
    """torchvision vgg.VGG: features, 7x7 adaptive average pool, three-layer classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16_bn(num_classes: int = 1000) -> VGG:
    """torchvision ``vgg16_bn(num_classes=...)``: vgg.make_layers(cfgs['D'], batch_norm=True).

    Each conv keeps its bias (unlike ResNet's) and is followed by BatchNorm and ReLU, so the
    ``features`` indices run conv 0, BN 1, ReLU 2, conv 3, BN 4, ReLU 5, pool 6, conv 7, ...
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for v in _VGG16_CFG:
        if v == 'M':
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v),
                       nn.ReLU(inplace=True)]
            in_channels = v
    return VGG(nn.Sequential(*layers), num_classes)


class IntermediateLayerGetter(nn.ModuleDict):
    """torchvision models._utils.IntermediateLayerGetter.

    Keeps the model's direct children in order up to the last one named in ``return_layers``
    (for a ResNet returning layer4 this drops avgpool and fc) and returns the named children's
    outputs as an OrderedDict under their new names.
    """

    def __init__(self, model: nn.Module, return_layers: dict[str, str]):
        names = [name for name, _ in model.named_children()]
        if not set(return_layers).issubset(names):
            raise ValueError('return_layers are not present in model')
        layers = collections.OrderedDict()
        remaining = set(return_layers)
        for name, module in model.named_children():
            layers[name] = module
            remaining.discard(name)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> collections.OrderedDict[str, torch.Tensor]:
        out = collections.OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class FCNHead(nn.Sequential):
    """torchvision segmentation.fcn.FCNHead: 3x3 conv to in_channels // 4 channels, BN, ReLU,
    dropout 0.1, 1x1 classifier conv."""

    def __init__(self, in_channels: int, channels: int):
        inter_channels = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter_channels, channels, 1),
        )


class ASPPConv(nn.Sequential):
    """torchvision segmentation.deeplabv3.ASPPConv: dilated 3x3 conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """torchvision segmentation.deeplabv3.ASPPPooling: image pooling branch, upsampled back."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class ASPP(nn.Module):
    """torchvision segmentation.deeplabv3.ASPP: 1x1, three atrous 3x3 and a pooling branch,
    concatenated and projected back to ``out_channels`` (with dropout 0.5)."""

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256):
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )]
        branches += [ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """torchvision segmentation.deeplabv3.DeepLabHead: ASPP(rates 12, 24, 36), 3x3 conv, BN,
    ReLU, 1x1 classifier conv."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(
            ASPP(in_channels, [12, 24, 36]),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, num_classes, 1),
        )


class SimpleSegmentationModel(nn.Module):
    """torchvision segmentation._utils._SimpleSegmentationModel (the base of DeepLabV3 and FCN).

    Returns an OrderedDict with 'out' (and 'aux' when there is an aux classifier), each head's
    logits bilinearly resized (align_corners=False) to the input's height and width.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module,
                 aux_classifier: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: torch.Tensor) -> collections.OrderedDict[str, torch.Tensor]:
        input_shape = x.shape[-2:]
        features = self.backbone(x)
        result = collections.OrderedDict()
        out = self.classifier(features['out'])
        result['out'] = F.interpolate(out, size=input_shape, mode='bilinear', align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features['aux'])
            result['aux'] = F.interpolate(aux, size=input_shape, mode='bilinear',
                                          align_corners=False)
        return result


def _dilated_resnet_backbone(depth: int, aux: bool) -> IntermediateLayerGetter:
    """The output-stride-8 ResNet of torchvision's segmentation models, returning layer4 as
    'out' (and layer3 as 'aux')."""
    if depth not in (50, 101):
        raise ValueError(f'segmentation backbones are ResNet-50 or -101, got depth {depth}')
    return_layers = {'layer4': 'out'}
    if aux:
        return_layers['layer3'] = 'aux'
    return IntermediateLayerGetter(
        resnet(depth, replace_stride_with_dilation=(False, True, True)), return_layers)


def deeplabv3_resnet(depth: int, num_classes: int = 21,
                     aux: bool = True) -> SimpleSegmentationModel:
    """torchvision ``deeplabv3_resnet50/101(num_classes=..., aux_loss=...)``."""
    return SimpleSegmentationModel(_dilated_resnet_backbone(depth, aux),
                                   DeepLabHead(2048, num_classes),
                                   FCNHead(1024, num_classes) if aux else None)


def fcn_resnet(depth: int, num_classes: int = 21, aux: bool = True) -> SimpleSegmentationModel:
    """torchvision ``fcn_resnet50/101(num_classes=..., aux_loss=...)``."""
    return SimpleSegmentationModel(_dilated_resnet_backbone(depth, aux),
                                   FCNHead(2048, num_classes),
                                   FCNHead(1024, num_classes) if aux else None)


# Each architecture as torchvision builds it for its published weights: ImageNet classifiers
# with 1000 classes, segmentation models with the 21 COCO_WITH_VOC_LABELS classes and aux head.
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    'resnet18': lambda: resnet(18),
    'resnet34': lambda: resnet(34),
    'resnet50': lambda: resnet(50),
    'resnet101': lambda: resnet(101),
    'vgg16_bn': vgg16_bn,
    'deeplabv3_resnet50': lambda: deeplabv3_resnet(50),
    'deeplabv3_resnet101': lambda: deeplabv3_resnet(101),
    'fcn_resnet50': lambda: fcn_resnet(50),
    'fcn_resnet101': lambda: fcn_resnet(101),
}


def state_dict_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Every state-dict key (``num_batches_tracked`` included), in order, to its shape."""
    return {key: list(value.shape) for key, value in module.state_dict().items()}


@torch.no_grad()
def randomize_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm random statistics and affine parameters.

    A fresh BatchNorm (mean 0, variance 1, weight 1, bias 0) is nearly the identity in eval
    mode and would hide a misplaced or transposed BN; after this, running_var and weight lie
    in [0.5, 2) and running_mean and bias in [-0.5, 0.5).
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for tensor, low, high in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                                      (m.weight, 0.5, 2.0), (m.bias, -0.5, 0.5)):
                values = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.copy_(low + (high - low) * values)


def main() -> None:
    """Write ``tests/data/torchvision_state_dicts.json``: one architecture per line."""
    lines = [f'{json.dumps(name)}: {json.dumps(state_dict_shapes(build()), separators=(",", ":"))}'
             for name, build in ARCHITECTURES.items()]
    STATE_DICTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    STATE_DICTS_JSON.write_text('{\n' + ',\n'.join(lines) + '\n}\n')
    print(f'wrote {STATE_DICTS_JSON}')


if __name__ == '__main__':
    main()
