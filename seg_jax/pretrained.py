"""Starting a model from published weights: read the file, map it by rule, check it, report.

Two families of files are read: torchvision's (ImageNet classifiers, whole DeepLabv3 / FCN
models) and mmsegmentation's (its ImageNet ``ResNetV1c`` backbones and its model-zoo
checkpoints, trained on Cityscapes). seg_jax's networks name their variables as those files'
state-dict keys do (``backbone/layer1/0/downsample/1/mean`` is
``backbone.layer1.0.downsample.1.running_mean``, ``decode_head/bottleneck/conv/kernel`` is
``decode_head.bottleneck.conv.weight``), so the mapping is a rule, applied to every variable of
the target:

* ``params .../kernel`` <- ``....weight``, OIHW -> HWIO (a depthwise conv's (C, 1, k, k) becomes
  (k, k, 1, C)); ``params .../scale`` <- ``....weight``; ``params .../bias`` <- ``....bias``;
  ``batch_stats .../mean|var`` <- ``....running_mean|var``.
* ImageNet classification files (ResNet-18/34/50/101, VGG-16-BN, ResNet-50/101-V1c) fill the
  model's ``backbone``; the segmentation head stays freshly initialised. ``fc.*`` and VGG's
  ``classifier.*`` (the ImageNet classifier) are ignored on purpose.
* Whole segmentation files (torchvision's ``deeplabv3_resnet50/101``, ``fcn_resnet50/101``;
  mmseg's DeepLabV3, DeepLabV3+ and PSPNet R-50/101-D8) fill every variable, auxiliary head
  included; a classifier with another number of classes is reported and left freshly
  initialised.
* ``num_batches_tracked`` (PyTorch's BatchNorm step counter; Flax keeps none) is ignored.

Which family and architecture a file holds is recognised from its keys alone. The file is read
by ``seg_jax.weights_file``, which never runs code from it.

Nothing is silently dropped: every tensor of the file is consumed or listed as ignored with its
reason, and every variable of the target is loaded or listed as freshly initialised; a tensor
that fits nowhere, a variable of the backbone the file should fill but does not, and a shape
mismatch are errors that name the tensor.
"""

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from seg_jax import parallel
from seg_jax.data.labels import CLASS_NAMES
from seg_jax.errors import first_few
from seg_jax.weights_file import WeightsError, read_weights

# ImageNet backbones: torchvision's, and mmseg's V1c (a deep stem of three 3x3 convs).
CLASSIFICATION = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'vgg16_bn',
                  'resnet50_v1c', 'resnet101_v1c')
SEGMENTATION = {  # whole model (torchvision builder, mmseg config) -> (model name, backbone)
    'deeplabv3_resnet50': ('deeplabv3', 'resnet50'),
    'deeplabv3_resnet101': ('deeplabv3', 'resnet101'),
    'fcn_resnet50': ('fcn_resnet', 'resnet50'),
    'fcn_resnet101': ('fcn_resnet', 'resnet101'),
    'deeplabv3_r50-d8': ('deeplabv3_mmseg', 'resnet50_v1c'),
    'deeplabv3_r101-d8': ('deeplabv3_mmseg', 'resnet101_v1c'),
    'deeplabv3plus_r50-d8': ('deeplabv3plus', 'resnet50_v1c'),
    'deeplabv3plus_r101-d8': ('deeplabv3plus', 'resnet101_v1c'),
    'pspnet_r50-d8': ('pspnet', 'resnet50_v1c'),
    'pspnet_r101-d8': ('pspnet', 'resnet101_v1c'),
}
# The config file of seg_jax that holds each whole model's network and recipe.
CONFIG_FILES = {'deeplabv3_resnet50': 'configs/deeplabv3_r50.py',
                **{name: f'configs/{name.replace("-", "_")}.py' for name in SEGMENTATION
                   if name.endswith('-d8')}}
# mmseg's decode heads, by a key only that head's state dict has -> its name in mmseg configs.
MMSEG_HEAD_KEYS = {'decode_head.aspp_modules.1.depthwise_conv.conv.weight': 'deeplabv3plus',
               'decode_head.image_pool.1.conv.weight': 'deeplabv3',
               'decode_head.psp_modules.0.1.conv.weight': 'pspnet'}
# seg_jax's ResNet depth -> how mmseg's config names spell it.
MMSEG_DEPTHS = {'resnet50': 'r50', 'resnet101': 'r101'}
# ResNet blocks per stage, and whether its blocks are bottlenecks.
RESNET_STAGES = {(2, 2, 2, 2, False): 'resnet18', (3, 4, 6, 3, False): 'resnet34',
                 (3, 4, 6, 3, True): 'resnet50', (3, 4, 23, 3, True): 'resnet101'}
# (collection, Flax leaf name) -> torchvision tensor name.
TORCH_LEAF = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
              ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
              ('batch_stats', 'var'): 'running_var'}
# The layers that map image features to classes: another class count re-initialises them.
CLASS_LAYERS = ('classifier.4', 'aux_classifier.4', 'decode_head.conv_seg',
                'auxiliary_head.conv_seg')
AUX_HEADS = ('aux_classifier', 'auxiliary_head')  # torchvision's and mmseg's names
SEPARATOR = ', '  # between the names listed in reports and errors
# Where each backbone's ImageNet weights come from, for the message that asks for them.
IMAGENET_FILES = {
    'resnet18': 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
    'resnet34': 'https://download.pytorch.org/models/resnet34-b627a593.pth',
    'resnet50': 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth',
    'resnet101': 'https://download.pytorch.org/models/resnet101-cd907fc2.pth',
    'vgg16_bn': 'https://download.pytorch.org/models/vgg16_bn-6c64b313.pth',
    'resnet50_v1c': 'https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth',
    'resnet101_v1c':
        'https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth',
}
def identify(state: Mapping[str, np.ndarray]) -> str:
    """The architecture a state dict belongs to (a key of CLASSIFICATION or SEGMENTATION), from
    its keys alone."""
    whole = any(key.startswith('backbone.') for key in state)
    prefix = 'backbone.' if whole else ''
    if not whole and 'features.0.weight' in state and 'features.1.running_mean' in state:
        return 'vgg16_bn'
    blocks = []
    for stage in range(1, 5):
        indices = {int(match.group(1)) for key in state
                   if (match := re.match(rf'{prefix}layer{stage}\.(\d+)\.', key))}
        blocks.append(len(indices))
    bottleneck = f'{prefix}layer1.0.conv3.weight' in state
    depth = RESNET_STAGES.get((*blocks, bottleneck))
    deep_stem = f'{prefix}stem.0.weight' in state
    if depth is None or not (deep_stem or f'{prefix}conv1.weight' in state):
        sample = ', '.join(list(state)[:4])
        raise WeightsError(
            'The file is not a torchvision ResNet-18/34/50/101, VGG-16-BN, DeepLabv3 or FCN '
            'state dict, nor an mmsegmentation ResNetV1c, DeepLabV3, DeepLabV3+ or PSPNet one '
            f'(its first keys: {sample}; ResNet blocks per stage: {blocks}).')
    backbone = f'{depth}_v1c' if deep_stem else depth
    if backbone not in CLASSIFICATION:
        raise WeightsError(f'The file holds a {depth} with a deep stem, which mmsegmentation '
                           'publishes only for ResNet-50 and ResNet-101 (V1c).')
    if not whole:
        return backbone
    if any(key.startswith('decode_head.') for key in state):
        return _mmseg_architecture(state, backbone)
    head = ('deeplabv3' if 'classifier.0.convs.0.0.weight' in state else
            'fcn' if 'classifier.0.weight' in state else None)
    if head is None or backbone not in ('resnet50', 'resnet101'):
        raise WeightsError(f'The file has a {backbone} backbone but neither a torchvision '
                           'DeepLabv3 nor an FCN head; supported whole models are '
                           f'{", ".join(SEGMENTATION)}.')
    return f'{head}_{backbone}'


def _mmseg_architecture(state: Mapping[str, np.ndarray], backbone: str) -> str:
    """The mmseg config name (e.g. ``pspnet_r50-d8``) of a whole mmseg state dict."""
    head = next((name for key, name in MMSEG_HEAD_KEYS.items() if key in state), None)
    depth = backbone.removesuffix('_v1c')
    if head is None or not backbone.endswith('_v1c'):
        heads = sorted({key.split('.')[1] for key in state if key.startswith('decode_head.')})
        raise WeightsError(
            f'The file is an mmsegmentation model with a {backbone} backbone and a decode head '
            f'of {", ".join(heads)}; seg_jax loads mmseg\'s DeepLabV3 (ASPPHead), DeepLabV3+ '
            '(DepthwiseSeparableASPPHead) and PSPNet (PSPHead) on ResNet-50/101-V1c.')
    return f'{head}_{MMSEG_DEPTHS[depth]}-d8'


def family(architecture: str) -> str:
    """Who publishes ``architecture``'s files: 'mmsegmentation' or 'torchvision'."""
    return 'mmsegmentation' if architecture.endswith(('-d8', '_v1c')) else 'torchvision'


def _fitting_config(architecture: str) -> str:
    """What builds ``architecture``'s network, for error messages: its config file if seg_jax
    has one, and the model flags."""
    name, backbone = SEGMENTATION[architecture]
    flags = f'--config.model.name={name} --config.model.backbone={backbone}'
    if architecture in CONFIG_FILES:
        return f'--config {CONFIG_FILES[architecture]} (or {flags})'
    return flags


def check_fits_config(architecture: str, model: ml_collections.ConfigDict) -> None:
    """Raises unless ``config.model`` builds a network the ``architecture``'s weights fit."""
    if architecture in SEGMENTATION:
        name, backbone = SEGMENTATION[architecture]
        if (model.name, model.backbone) != (name, backbone):
            raise WeightsError(
                f'The pretrained file holds a whole {family(architecture)} {architecture}, which '
                f'needs {_fitting_config(architecture)}; the config has name={model.name!r}, '
                f'backbone={model.backbone!r}.')
    elif model.backbone != architecture:
        what = (f'config.model.backbone={model.backbone!r}' if model.backbone else
                f'config.model.name={model.name!r} has no backbone')
        raise WeightsError(f'The pretrained file holds {family(architecture)} ImageNet '
                           f'{architecture} weights but '
                           f'{what}; set --config.model.backbone={architecture} (with a model '
                           'that has a backbone: resnet_aspp, deeplabv3, resnet_deconv, '
                           'fcn_resnet, deeplabv3_mmseg, deeplabv3plus, pspnet).')
    if model.width != 1.0:
        raise WeightsError(f'Pretrained weights have the published widths; config.model.width='
                           f'{model.width} makes every layer narrower. Set it to 1.0.')


@dataclasses.dataclass
class LoadReport:
    """What a load did with every tensor of the file and every variable of the model."""
    source: str
    architecture: str
    loaded: list[str] = dataclasses.field(default_factory=list)  # model variables
    fresh: dict[str, str] = dataclasses.field(default_factory=dict)  # variable -> why
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)  # file tensor -> why
    meta_summary: str | None = None  # what the file's meta says of its training, if anything

    def summary(self) -> str:
        lines = [f'Pretrained {family(self.architecture)} {self.architecture} from '
                 f'{self.source}: loaded {len(self.loaded)} variables.']
        if self.meta_summary:
            lines.append(self.meta_summary)
        for title, entries in (('Ignored tensors of the file', self.ignored),
                               ('Freshly initialised variables', self.fresh)):
            by_reason: dict[str, list[str]] = {}
            for name, reason in entries.items():
                by_reason.setdefault(reason, []).append(name)
            for reason, names in by_reason.items():
                listed = first_few(names, separator=SEPARATOR)
                lines.append(f'{title} ({len(names)}, {reason}): {listed}')
        return '\n'.join(lines)


def describe_meta(meta: Mapping[str, Any]) -> str | None:
    """One line on what an mmseg checkpoint's ``meta`` says it was trained on: its classes
    (``CLASSES`` in mmseg 0.x, ``dataset_meta['classes']`` in 1.x), version and iterations."""
    classes = meta.get('CLASSES') or (meta.get('dataset_meta') or {}).get('classes')
    parts = []
    if classes:
        classes = tuple(str(name) for name in classes)
        parts.append("Cityscapes' 19 classes in train-id order" if classes == CLASS_NAMES else
                     f'{len(classes)} classes that are not Cityscapes\' 19 in train-id order '
                     f'({first_few(list(classes), 4, SEPARATOR)})')
    for field, label in (('mmseg_version', 'mmseg'), ('iter', 'iterations')):
        if meta.get(field) is not None:
            parts.append(f'{label} {meta[field]}')
    return f"The file's meta: {', '.join(parts)}." if parts else None


def _torch_name(collection: str, path: tuple[str, ...]) -> str:
    return '.'.join(path[:-1] + (TORCH_LEAF[collection, path[-1]],))


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
    """A torch tensor in Flax layout: conv kernels OIHW -> HWIO."""
    return value.transpose(2, 3, 1, 0) if leaf == 'kernel' and value.ndim == 4 else value


def _ignore_reason(key: str, architecture: str, variables: Mapping) -> str | None:
    if key.endswith('num_batches_tracked'):
        return "PyTorch's BatchNorm step counter"
    if architecture in CLASSIFICATION and (key.startswith('fc.') or
                                           key.startswith('classifier.')):
        return 'the ImageNet classifier'
    head = key.split('.', 1)[0]
    if head in AUX_HEADS and head not in variables['params']:
        return 'the configured model has no auxiliary head (config.model.aux_head=False)'
    return None


def map_state_dict(variables: Mapping[str, Any], state: Mapping[str, np.ndarray],
                   architecture: str, source: str) -> tuple[dict[str, Any], LoadReport]:
    """``variables`` (``{'params', 'batch_stats'}``, arrays or ShapeDtypeStructs) with every
    variable ``state`` holds replaced by its (converted) value, and the report of the load.

    For a classification ``architecture`` the file fills the ``backbone`` subtree, for a
    segmentation one the whole model.
    """
    report = LoadReport(source, architecture)
    consumed, shape_errors = set(), []
    whole = architecture in SEGMENTATION

    def load(path, target):
        collection, *names = (getattr(key, 'key', key) for key in path)
        names = tuple(str(name) for name in names)
        flax_name = '/'.join((collection,) + names)
        if not whole and names[0] != 'backbone':
            report.fresh[flax_name] = 'not in an ImageNet classifier: the segmentation head'
            return target
        key = _torch_name(collection, names if whole else names[1:])
        if key not in state:
            report.fresh[flax_name] = 'not in the file'
            return target
        consumed.add(key)
        value = _to_flax(np.asarray(state[key]), names[-1])
        if value.shape == tuple(target.shape):
            report.loaded.append(flax_name)
            return value.astype(target.dtype, copy=False)
        layer = key.rsplit('.', 1)[0]
        if whole and layer in CLASS_LAYERS and value.shape[:-1] == tuple(target.shape[:-1]):
            reason = f'{value.shape[-1]} classes in the file, {target.shape[-1]} in the model'
            report.fresh[flax_name] = report.ignored[key] = reason
            return target
        shape_errors.append(f'{key} has shape {tuple(state[key].shape)} in the file (PyTorch '
                            f'layout; {value.shape} as Flax {flax_name}) but the model\'s '
                            f'{flax_name} has shape {tuple(target.shape)}')
        return target

    loaded = jax.tree_util.tree_map_with_path(load, dict(variables))
    if shape_errors:
        raise WeightsError(f'{source} does not fit the configured model: '
                           f'{first_few(shape_errors, 3)}.')
    unplaced = []
    for key in state:
        if key in consumed:
            continue
        reason = _ignore_reason(key, architecture, variables)
        if reason is None:
            unplaced.append(key)
        else:
            report.ignored[key] = reason
    # The variables the file must fill, by what it is: none may be left out.
    missing = [name for name, why in report.fresh.items() if why == 'not in the file']
    if unplaced or missing:
        raise WeightsError(
            f'{source} ({architecture}) and the configured model do not match: '
            + '; '.join(part for part in (
                unplaced and f'tensors of the file with no place in the model: '
                             f'{first_few(unplaced, separator=SEPARATOR)}',
                missing and f'variables the file should fill but does not hold: '
                            f'{first_few(missing, separator=SEPARATOR)}') if part)
            + '. Check config.model (name, backbone, output_stride does not matter) against the '
              'file.')
    return loaded, report


def check_required(model: ml_collections.ConfigDict) -> None:
    """Refuses to start a training from random weights that its recipe says needs pretrained
    ones (``config.model.pretrained_required``), naming the file, where it comes from, and the
    option that trains from scratch on purpose."""
    if not model.pretrained_required or model.pretrained:
        return
    url = IMAGENET_FILES.get(model.backbone)
    where = (f'download {url.rsplit("/", 1)[-1]} ({family(model.backbone)}) from {url} and pass '
             f'--config.model.pretrained=PATH/{url.rsplit("/", 1)[-1]}' if url else
             'pass its ImageNet weights with --config.model.pretrained=PATH')
    raise WeightsError(
        f'This recipe trains {model.name} from an ImageNet-pretrained {model.backbone} backbone '
        '(config.model.pretrained_required=True): its published numbers need it, and from random '
        f'weights it falls far short. {where[0].upper()}{where[1:]} (README, "Pretrained '
        'weights"), or start from a whole trained model (README, "Model zoo"). To train from '
        'random weights on purpose, add --config.model.pretrained_required=False.')


def load_pretrained(variables: Mapping[str, Any], model: ml_collections.ConfigDict
                    ) -> tuple[dict[str, Any], LoadReport]:
    """``variables`` with ``config.model.pretrained`` loaded into them (host numpy arrays
    where loaded), after checking that the file fits ``config.model``."""
    state, meta = read_weights(model.pretrained)
    architecture = identify(state)
    check_fits_config(architecture, model)
    loaded, report = map_state_dict(variables, state, architecture,
                                    os.path.basename(model.pretrained))
    report.meta_summary = describe_meta(meta)
    return loaded, report


def load_into_state(state: Any, model: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                    ) -> tuple[Any, LoadReport]:
    """A freshly created train state with ``config.model.pretrained`` loaded, replicated over
    ``mesh``. Only parameters and BatchNorm statistics change: the optimiser's initial state
    does not depend on the parameters' values."""
    variables, report = load_pretrained(
        {'params': state.params, 'batch_stats': state.batch_stats}, model)
    variables = jax.device_put(variables, parallel.replicated(mesh))
    return state.replace(params=variables['params'],
                         batch_stats=variables['batch_stats']), report
