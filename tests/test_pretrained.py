"""torchvision weights: complete mapping for every supported architecture, numerical parity with
PyTorch, conversion to safetensors, and a clear error for every file that does not fit.

The key/shape table (tests/data/torchvision_state_dicts.json) lets the mapping tests run
without torch; where torch is installed (CI installs the CPU build), the table is checked
against PyTorch re-implementations of torchvision's models (tests/torch_reference.py), and
those models, randomly initialised, give the reference logits.
"""

import json
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_config
from conftest import REPO, load_config
from seg_jax import pretrained, train, weights_file
from seg_jax.models import build_model
from seg_jax.models.resnet import ResNet
from seg_jax.models.vgg import VGG16BN, VGGFeatures

TABLE = json.loads((REPO / 'tests' / 'data' / 'torchvision_state_dicts.json').read_text())
# architecture -> the seg_jax model config the weights go into.
TARGETS = {
    'resnet18': dict(name='resnet_aspp', backbone='resnet18'),
    'resnet34': dict(name='resnet_deconv', backbone='resnet34', output_stride=32),
    'resnet50': dict(name='deeplabv3', backbone='resnet50', aux_head=True),
    'resnet101': dict(name='resnet_aspp', backbone='resnet101', dual_aspp=True),
    'vgg16_bn': dict(name='resnet_aspp', backbone='vgg16_bn'),
    'deeplabv3_resnet50': dict(name='deeplabv3', backbone='resnet50', aux_head=True),
    'deeplabv3_resnet101': dict(name='deeplabv3', backbone='resnet101', aux_head=True),
    'fcn_resnet50': dict(name='fcn_resnet', backbone='resnet50', aux_head=True),
    'fcn_resnet101': dict(name='fcn_resnet', backbone='resnet101', aux_head=True),
}
INPUT = (1, 64, 128, 3)


def model_config(architecture: str, **overrides):
    config = load_config('deeplabv3_r50').model
    config.update({'aux_head': False, **TARGETS[architecture], **overrides})
    return config


def abstract_variables(model_config) -> dict:
    model = build_model(model_config)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(INPUT), train=False))


def zeros_like_table(architecture: str) -> dict[str, np.ndarray]:
    """A state dict with the table's keys and shapes (zero-copy views, no memory)."""
    return {key: np.broadcast_to(np.float32(0), shape)
            for key, shape in TABLE[architecture].items()}


def leaf_names(variables) -> set[str]:
    return {'/'.join(str(getattr(k, 'key', k)) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]}


@pytest.mark.parametrize('architecture', sorted(TABLE))
def test_every_tensor_and_every_variable_is_accounted_for(architecture):
    state = zeros_like_table(architecture)
    assert pretrained.identify(state) == architecture
    variables = abstract_variables(model_config(architecture))
    _, report = pretrained.map_state_dict(variables, state, architecture, 'table')
    # Every variable of the model: loaded or freshly initialised, never both.
    names = leaf_names(variables)
    assert set(report.loaded) | set(report.fresh) == names
    assert not set(report.loaded) & set(report.fresh)
    # Every tensor of the file: loaded or ignored with its reason.
    ignored = set(report.ignored)
    assert len(report.loaded) + len(ignored) == len(state)
    assert all(key.endswith('num_batches_tracked') or key.startswith(('fc.', 'classifier.'))
               or key.startswith('aux_classifier.4.') for key in ignored)
    if architecture in pretrained.CLASSIFICATION:
        # The whole backbone is loaded; everything else is the head.
        assert {n for n in names if n.split('/')[1] == 'backbone'} == set(report.loaded)
        assert set(report.fresh.values()) == {
            'not in an ImageNet classifier: the segmentation head'}
    else:
        # The 21 VOC classes of torchvision's weights do not fit 19 Cityscapes classes.
        assert set(report.fresh) == {f'params/{head}/4/{leaf}' for head in
                                     ('classifier', 'aux_classifier')
                                     for leaf in ('kernel', 'bias')}
        assert set(report.fresh.values()) == {'21 classes in the file, 19 in the model'}


def test_whole_models_with_their_own_classes_load_completely():
    state = zeros_like_table('deeplabv3_resnet50')
    variables = abstract_variables(model_config('deeplabv3_resnet50', num_classes=21))
    _, report = pretrained.map_state_dict(variables, state, 'deeplabv3_resnet50', 'table')
    assert not report.fresh and len(report.loaded) == len(leaf_names(variables))


def test_an_auxiliary_head_the_model_lacks_is_ignored_and_said():
    state = zeros_like_table('deeplabv3_resnet50')
    variables = abstract_variables(model_config('deeplabv3_resnet50', aux_head=False))
    _, report = pretrained.map_state_dict(variables, state, 'deeplabv3_resnet50', 'table')
    aux = {key for key in state
           if key.startswith('aux_classifier.') and not key.endswith('num_batches_tracked')}
    assert aux and all('no auxiliary head' in report.ignored[key] for key in aux)
    assert 'config.model.aux_head=False' in report.summary()


def save_safetensors(state: dict, path) -> str:
    from safetensors.numpy import save_file
    save_file({key: np.ascontiguousarray(value) for key, value in state.items()}, str(path))
    return str(path)


def small_resnet18_file(tmp_path, **changes) -> str:
    """resnet18 weights (zeros) with some tensors replaced or removed (value None)."""
    state = {key: np.zeros(shape, np.float32) for key, shape in TABLE['resnet18'].items()}
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return save_safetensors(state, tmp_path / 'resnet18.safetensors')


def load_file(path, **overrides):
    config = model_config('resnet18', pretrained=str(path), **overrides)
    return pretrained.load_pretrained(abstract_variables(config), config)


def test_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(pretrained.WeightsError, match='No weights file at .*missing.pth'):
        load_file(tmp_path / 'missing.pth')
    (tmp_path / 'weights.bin').write_bytes(b'')
    with pytest.raises(pretrained.WeightsError, match="must be a .safetensors or .pth file"):
        load_file(tmp_path / 'weights.bin')
    (tmp_path / 'weights.pth').write_bytes(b'')
    monkeypatch.setitem(sys.modules, 'torch', None)  # as if torch were not installed
    with pytest.raises(pretrained.WeightsError, match=(
            r'needs PyTorch, which is not installed.*pip install torch.*'
            r'python -m seg_jax.tools.convert_weights .*weights.pth .*weights.safetensors')):
        load_file(tmp_path / 'weights.pth')


def test_a_file_of_another_architecture_is_refused(tmp_path):
    path = save_safetensors({'encoder.weight': np.zeros((2, 2), np.float32)},
                            tmp_path / 'other.safetensors')
    with pytest.raises(pretrained.WeightsError, match='not a torchvision ResNet-18/34/50/101, '
                                                      'VGG-16-BN, DeepLabv3 or FCN state dict'):
        load_file(path)


@pytest.mark.parametrize('overrides, message', [
    (dict(backbone='resnet50'), "ImageNet resnet18 weights but config.model.backbone='resnet50'"
                                '; set --config.model.backbone=resnet18'),
    (dict(name='unet', backbone=None), "config.model.name='unet' has no backbone"),
    (dict(width=0.5), 'config.model.width=0.5 makes every layer narrower. Set it to 1.0.'),
])
def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, overrides, message):
    path = small_resnet18_file(tmp_path)
    config = model_config('resnet18', pretrained=path, **overrides)
    with pytest.raises(pretrained.WeightsError, match=re.escape(message)):
        pretrained.load_pretrained({}, config)


def test_a_whole_model_needs_its_own_network(tmp_path):
    path = save_safetensors(zeros_like_table('fcn_resnet50'), tmp_path / 'fcn.safetensors')
    config = model_config('deeplabv3_resnet50', pretrained=path)
    with pytest.raises(pretrained.WeightsError, match=(
            'whole torchvision fcn_resnet50, which needs --config.model.name=fcn_resnet '
            '--config.model.backbone=resnet50')):
        pretrained.load_pretrained({}, config)


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    path = small_resnet18_file(tmp_path, **{'layer2.0.conv1.weight':
                                            np.zeros((128, 32, 3, 3), np.float32)})
    with pytest.raises(pretrained.WeightsError, match=(
            r'layer2\.0\.conv1\.weight has shape \(128, 32, 3, 3\) in the file .*'
            r'\(3, 3, 32, 128\) as Flax params/backbone/layer2/0/conv1/kernel.* has shape '
            r'\(3, 3, 64, 128\)')):
        load_file(path)


def test_tensors_with_no_place_and_variables_left_out_are_refused(tmp_path):
    path = small_resnet18_file(tmp_path, **{'layer1.0.conv1.weight': None,
                                            'extra.weight': np.zeros(3, np.float32)})
    with pytest.raises(pretrained.WeightsError) as error:
        load_file(path)
    assert 'tensors of the file with no place in the model: extra.weight' in str(error.value)
    assert ('variables the file should fill but does not hold: '
            'params/backbone/layer1/0/conv1/kernel') in str(error.value)


# ---- With PyTorch: the table, numerical parity, conversion, and a training run. ----

@pytest.fixture(scope='module')
def torch_reference():
    pytest.importorskip('torch')
    import torch_reference as reference
    return reference


def test_the_table_holds_the_keys_of_the_pytorch_models(torch_reference):
    for architecture, build in torch_reference.ARCHITECTURES.items():
        shapes = torch_reference.state_dict_shapes(build())
        assert list(shapes.items()) == list(TABLE[architecture].items()), architecture


def random_torch_model(torch_reference, build):
    """A torch model in eval mode with random weights and BatchNorm statistics."""
    import torch
    torch.manual_seed(0)
    model = build()
    torch_reference.randomize_batch_norm(model, torch.Generator().manual_seed(1))
    return model.eval()


def torch_input():
    import torch
    return torch.randn(*INPUT[:1], 3, *INPUT[1:3], generator=torch.Generator().manual_seed(2))


def to_nhwc(tensor) -> np.ndarray:
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def numpy_state(model) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in model.state_dict().items()}


class BackboneOnly(nn.Module):
    """A backbone under the name models give it, returning its last feature map."""
    backbone: nn.Module

    def __call__(self, x, train: bool):
        return self.backbone(x, train)['out']


@pytest.mark.parametrize('architecture, backbone, dilation', [
    ('resnet18', ResNet(depth=18, output_stride=32), (False, False, False)),
    ('resnet50', ResNet(depth=50, output_stride=8), (False, True, True)),
    ('resnet50', ResNet(depth=50, output_stride=16), (False, False, True)),
    ('vgg16_bn', VGG16BN(VGGFeatures(output_stride=32)), None),
])
def test_imagenet_backbones_compute_what_pytorch_computes(torch_reference, architecture,
                                                          backbone, dilation):
    import torch
    if dilation is None:
        reference = random_torch_model(torch_reference, torch_reference.vgg16_bn)
        features = reference.features
    else:
        depth = int(architecture[len('resnet'):])
        reference = random_torch_model(
            torch_reference, lambda: torch_reference.resnet(depth,
                                                            replace_stride_with_dilation=dilation))
        features = torch.nn.Sequential(*list(reference.children())[:-2])  # up to layer4
    x = torch_input()
    with torch.no_grad():
        expected = to_nhwc(features(x))
    model = BackboneOnly(backbone)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(INPUT),
                                                  train=False))
    variables, report = pretrained.map_state_dict(variables, numpy_state(reference),
                                                  architecture, 'torch')
    assert not report.fresh
    ours = model.apply(variables, jnp.asarray(to_nhwc(x)), train=False)
    assert ours.shape == expected.shape
    assert np.abs(np.asarray(ours) - expected).max() < 1e-4, np.abs(expected).max()


@pytest.mark.parametrize('architecture', ['deeplabv3_resnet50', 'fcn_resnet50'])
def test_whole_torchvision_models_compute_what_pytorch_computes(torch_reference, tmp_path,
                                                                architecture):
    import torch
    reference = random_torch_model(torch_reference, torch_reference.ARCHITECTURES[architecture])
    path = tmp_path / f'{architecture}.pth'
    torch.save(reference.state_dict(), path)  # read back through the .pth path of seg_jax
    x = torch_input()
    with torch.no_grad():
        expected = to_nhwc(reference(x)['out'])
    config = model_config(architecture, num_classes=21, pretrained=str(path))
    variables, report = pretrained.load_pretrained(abstract_variables(config), config)
    assert not report.fresh
    ours = build_model(config).apply(variables, jnp.asarray(to_nhwc(x)), train=False)['out']
    assert ours.shape == expected.shape == (1, 64, 128, 21)
    assert np.abs(np.asarray(ours) - expected).max() < 1e-4, np.abs(expected).max()


def run_converter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'seg_jax.tools.convert_weights', *args],
                          capture_output=True, text=True, timeout=300)


def test_convert_weights_writes_the_same_tensors_and_never_overwrites(torch_reference,
                                                                      tmp_path):
    import torch
    reference = random_torch_model(torch_reference, lambda: torch_reference.resnet(18))
    source, converted = tmp_path / 'resnet18.pth', tmp_path / 'resnet18.safetensors'
    torch.save(reference.state_dict(), source)
    result = run_converter(str(source), str(converted))
    assert result.returncode == 0, result.stderr
    assert 'torchvision resnet18' in result.stdout
    from_pth, from_safetensors = (weights_file.read_weights(str(p)).state
                                  for p in (source, converted))
    assert from_pth.keys() == from_safetensors.keys()
    for key, value in from_pth.items():
        np.testing.assert_array_equal(from_safetensors[key], value)
    written = converted.read_bytes()
    result = run_converter(str(source), str(converted))
    assert result.returncode == 1 and 'already exists' in result.stderr
    assert converted.read_bytes() == written
    torch.save({'model': reference.state_dict(), 'epoch': 3}, tmp_path / 'checkpoint.pth')
    result = run_converter(str(tmp_path / 'checkpoint.pth'), str(tmp_path / 'out.safetensors'))
    assert result.returncode == 1
    assert 'is not a flat state dict of tensors' in result.stderr
    assert not (tmp_path / 'out.safetensors').exists()


def test_training_starts_from_the_pretrained_backbone(torch_reference, tmp_path, capsys):
    reference = random_torch_model(torch_reference, lambda: torch_reference.resnet(18))
    weights = save_safetensors(numpy_state(reference), tmp_path / 'resnet18.safetensors')
    config = tiny_config.get_config()
    config.data.dir = str(tmp_path / 'data')
    # Output stride 8, not 32: at 32 the 64x128 crops leave layer4 a 2x4 map, smaller than its
    # 3x3 kernels, which XLA's CPU backend computes through a slow generic loop (this test took
    # 39 s at stride 32 and takes 25 s at 8, alone on 2 cores). The loaded weights are the same.
    config.model.update(name='resnet_aspp', backbone='resnet18', output_stride=8, width=1.0,
                        pretrained=weights)
    config.num_train_steps, config.eval_every_steps = 1, 1
    config.checkpoint_every_steps = 1
    config.optimizer.learning_rate = 0.0  # step 1 leaves the parameters as loaded
    state = train.train_and_evaluate(config, str(tmp_path / 'run'))
    assert 'Pretrained torchvision resnet18 from resnet18.safetensors: loaded 100 variables.' in (
        capsys.readouterr().out)
    kernel = np.asarray(state.params['backbone']['layer3']['1']['conv2']['kernel'])
    np.testing.assert_array_equal(
        kernel, reference.state_dict()['layer3.1.conv2.weight'].numpy().transpose(2, 3, 1, 0))
    scale = np.asarray(state.params['backbone']['bn1']['scale'])
    np.testing.assert_array_equal(scale, reference.state_dict()['bn1.weight'].numpy())
