"""Starting a model from torchvision weights: read the file, map it by rule, check it, report.

seg_jax's backbones and torchvision-style heads name their variables as torchvision's state-dict
keys do (``backbone/layer1/0/downsample/1/mean`` is
``backbone.layer1.0.downsample.1.running_mean``), so the mapping is a rule, applied to every
variable of the target:

* ``params .../kernel`` <- ``....weight``, OIHW -> HWIO; ``params .../scale`` <- ``....weight``;
  ``params .../bias`` <- ``....bias``; ``batch_stats .../mean|var`` <- ``....running_mean|var``.
* ImageNet classification files (ResNet-18/34/50/101, VGG-16-BN) fill the model's ``backbone``;
  the segmentation head stays freshly initialised. ``fc.*`` and VGG's ``classifier.*`` (the
  ImageNet classifier) are ignored on purpose.
* Whole segmentation files (``deeplabv3_resnet50/101``, ``fcn_resnet50/101``) fill every
  variable, auxiliary head included; a classifier with another number of classes is reported and
  left freshly initialised.
* ``num_batches_tracked`` (PyTorch's BatchNorm step counter; Flax keeps none) is ignored.

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
from seg_jax.errors import SegJaxError, first_few

CLASSIFICATION = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'vgg16_bn')
SEGMENTATION = {  # torchvision builder -> (seg_jax model name, backbone)
    'deeplabv3_resnet50': ('deeplabv3', 'resnet50'),
    'deeplabv3_resnet101': ('deeplabv3', 'resnet101'),
    'fcn_resnet50': ('fcn_resnet', 'resnet50'),
    'fcn_resnet101': ('fcn_resnet', 'resnet101'),
}
# ResNet blocks per stage, and whether its blocks are bottlenecks.
RESNET_STAGES = {(2, 2, 2, 2, False): 'resnet18', (3, 4, 6, 3, False): 'resnet34',
                 (3, 4, 6, 3, True): 'resnet50', (3, 4, 23, 3, True): 'resnet101'}
# (collection, Flax leaf name) -> torchvision tensor name.
TORCH_LEAF = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
              ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
              ('batch_stats', 'var'): 'running_var'}
# The layers that map image features to classes: another class count re-initialises them.
CLASS_LAYERS = ('classifier.4', 'aux_classifier.4')
SEPARATOR = ', '  # between the names listed in reports and errors
HOW_TO_GET = ('torchvision publishes the files (e.g. resnet50-11ad3fa6.pth, '
              'deeplabv3_resnet50_coco-cd0a2569.pth); see README, "Pretrained weights".')


class WeightsError(SegJaxError):
    """A weights file that cannot be read or does not fit the configured model."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict as numpy arrays: ``.safetensors`` with the safetensors package, ``.pth`` /
    ``.pt`` with torch (``weights_only``: no code in the file is run)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise WeightsError(f'No weights file at {path}. {HOW_TO_GET}')
    extension = os.path.splitext(path)[1].lower()
    if extension == '.safetensors':
        from safetensors.numpy import load_file
        return load_file(path)
    if extension not in ('.pth', '.pt'):
        raise WeightsError(f'{path}: pretrained weights must be a .safetensors or .pth file '
                           f'(a torchvision state dict); got {extension or "no extension"!r}.')
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f'Reading {path} needs PyTorch, which is not installed. Install it (the CPU build is '
            'enough: pip install torch), or convert the file where torch is installed and copy '
            f'the result here: python -m seg_jax.tools.convert_weights {path} '
            f'{os.path.splitext(path)[0]}.safetensors') from None
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, Mapping) or not all(
            isinstance(value, torch.Tensor) for value in state.values()):
        raise WeightsError(f'{path} is not a flat state dict of tensors (a training checkpoint '
                           'holding one, perhaps): save model.state_dict() itself.')
    # numpy has no bfloat16: such tensors become float32, which the load casts as needed.
    return {key: (value.float() if value.dtype == torch.bfloat16 else value).cpu().numpy()
            for key, value in state.items()}


def identify(state: Mapping[str, np.ndarray]) -> str:
    """The torchvision architecture a state dict belongs to (a key of CLASSIFICATION or
    SEGMENTATION), from its keys alone."""
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
    if depth is None or f'{prefix}conv1.weight' not in state:
        sample = ', '.join(list(state)[:4])
        raise WeightsError(
            'The file is not a torchvision ResNet-18/34/50/101, VGG-16-BN, DeepLabv3 or FCN '
            f'state dict (its first keys: {sample}; ResNet blocks per stage: {blocks}).')
    if not whole:
        return depth
    head = ('deeplabv3' if 'classifier.0.convs.0.0.weight' in state else
            'fcn' if 'classifier.0.weight' in state else None)
    if head is None or depth not in ('resnet50', 'resnet101'):
        raise WeightsError(f'The file has a {depth} backbone but neither a torchvision DeepLabv3 '
                           'nor an FCN head; supported whole models are '
                           f'{", ".join(SEGMENTATION)}.')
    return f'{head}_{depth}'


def check_fits_config(architecture: str, model: ml_collections.ConfigDict) -> None:
    """Raises unless ``config.model`` builds a network the ``architecture``'s weights fit."""
    if architecture in SEGMENTATION:
        name, backbone = SEGMENTATION[architecture]
        if (model.name, model.backbone) != (name, backbone):
            raise WeightsError(
                f'The pretrained file holds a whole torchvision {architecture}, which needs '
                f'--config.model.name={name} --config.model.backbone={backbone}; the config has '
                f'name={model.name!r}, backbone={model.backbone!r}.')
    elif model.backbone != architecture:
        what = (f'config.model.backbone={model.backbone!r}' if model.backbone else
                f'config.model.name={model.name!r} has no backbone')
        raise WeightsError(f'The pretrained file holds ImageNet {architecture} weights but '
                           f'{what}; set --config.model.backbone={architecture} (with a model '
                           'that has a backbone: resnet_aspp, deeplabv3, resnet_deconv, '
                           'fcn_resnet).')
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

    def summary(self) -> str:
        lines = [f'Pretrained {self.architecture} from {self.source}: loaded {len(self.loaded)} '
                 'variables.']
        for title, entries in (('Ignored tensors of the file', self.ignored),
                               ('Freshly initialised variables', self.fresh)):
            by_reason: dict[str, list[str]] = {}
            for name, reason in entries.items():
                by_reason.setdefault(reason, []).append(name)
            for reason, names in by_reason.items():
                listed = first_few(names, separator=SEPARATOR)
                lines.append(f'{title} ({len(names)}, {reason}): {listed}')
        return '\n'.join(lines)


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
    if key.startswith('aux_classifier.') and 'aux_classifier' not in variables['params']:
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


def load_pretrained(variables: Mapping[str, Any], model: ml_collections.ConfigDict
                    ) -> tuple[dict[str, Any], LoadReport]:
    """``variables`` with ``config.model.pretrained`` loaded into them (host numpy arrays
    where loaded), after checking that the file fits ``config.model``."""
    state = read_state_dict(model.pretrained)
    architecture = identify(state)
    check_fits_config(architecture, model)
    return map_state_dict(variables, state, architecture, os.path.basename(model.pretrained))


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
