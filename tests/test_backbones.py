"""Full-size backbones and DeepLabv3 through ``jax.eval_shape``: counts, feature maps, names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax.traverse_util import flatten_dict

from conftest import load_config
from seg_jax.models import BACKBONES, build_model
from seg_jax.models.resnet import ResNet
from seg_jax.summary import abstract_variables, count_parameters, forward_flops

# Feature channels (aux = layer3 / pool4, out = layer4 / pool5) at width 1.
CHANNELS = {'resnet18': (256, 512), 'resnet34': (256, 512), 'resnet50': (1024, 2048),
            'resnet101': (1024, 2048), 'vgg16_bn': (512, 512), 'resnet50_v1c': (1024, 2048),
            'resnet101_v1c': (1024, 2048)}


def deeplab_variables(aux_head: bool):
    config = load_config('deeplabv3_r50')
    config.model.aux_head = aux_head
    return abstract_variables(build_model(config.model), (1, 512, 1024, 3))


def test_deeplabv3_resnet50_matches_torchvision_parameter_counts():
    assert count_parameters(deeplab_variables(aux_head=True)) == 42_003_046
    assert count_parameters(deeplab_variables(aux_head=False)) == 39_638_355


def test_resnet50_without_fc_has_torchvision_parameter_count():
    assert count_parameters(abstract_variables(ResNet(depth=50), (1, 224, 224, 3))) == 23_508_032


def test_parameter_paths_follow_torchvision_state_dict_keys():
    variables = deeplab_variables(aux_head=True)
    # torchvision key -> (collection, flax path, shape in Flax layout)
    expected = {
        'backbone.conv1.weight': ('params', 'backbone/conv1/kernel', (7, 7, 3, 64)),
        'backbone.layer1.0.downsample.0.weight':
            ('params', 'backbone/layer1/0/downsample/0/kernel', (1, 1, 64, 256)),
        'backbone.layer1.0.downsample.1.running_mean':
            ('batch_stats', 'backbone/layer1/0/downsample/1/mean', (256,)),
        'backbone.layer3.5.bn2.running_var': ('batch_stats', 'backbone/layer3/5/bn2/var', (256,)),
        'backbone.layer4.2.conv3.weight': ('params', 'backbone/layer4/2/conv3/kernel',
                                           (1, 1, 512, 2048)),
        'classifier.0.convs.0.0.weight': ('params', 'classifier/0/convs/0/0/kernel',
                                          (1, 1, 2048, 256)),
        'classifier.0.convs.3.1.bias': ('params', 'classifier/0/convs/3/1/bias', (256,)),
        'classifier.0.convs.4.1.weight': ('params', 'classifier/0/convs/4/1/kernel',
                                          (1, 1, 2048, 256)),
        'classifier.0.convs.4.2.weight': ('params', 'classifier/0/convs/4/2/scale', (256,)),
        'classifier.0.project.0.weight': ('params', 'classifier/0/project/0/kernel',
                                          (1, 1, 1280, 256)),
        'classifier.1.weight': ('params', 'classifier/1/kernel', (3, 3, 256, 256)),
        'classifier.2.running_mean': ('batch_stats', 'classifier/2/mean', (256,)),
        'classifier.4.bias': ('params', 'classifier/4/bias', (19,)),
        'aux_classifier.0.weight': ('params', 'aux_classifier/0/kernel', (3, 3, 1024, 256)),
        'aux_classifier.4.weight': ('params', 'aux_classifier/4/kernel', (1, 1, 256, 19)),
    }
    flat = {name: flatten_dict(tree, sep='/') for name, tree in variables.items()}
    for key, (collection, path, shape) in expected.items():
        assert path in flat[collection], f'{key}: no {collection} {path}'
        assert flat[collection][path].shape == shape, key
    # Bias-free convs before BN, as torchvision: the only conv biases are the two classifiers'.
    conv_biases = [path for path in flat['params']
                   if path.endswith('/bias') and path[:-len('bias')] + 'kernel' in flat['params']]
    assert sorted(conv_biases) == ['aux_classifier/4/bias', 'classifier/4/bias']


def test_vgg16_bn_paths_follow_torchvision_features_indices():
    params = abstract_variables(BACKBONES['vgg16_bn'](), (1, 64, 64, 3))['params']['features']
    # torchvision vgg16_bn: features.0 conv, .1 bn, .3 conv, ... .40 conv, .41 bn (43 = pool5).
    assert params['0']['kernel'].shape == (3, 3, 3, 64) and params['0']['bias'].shape == (64,)
    assert params['1']['scale'].shape == (64,)
    assert params['7']['kernel'].shape == (3, 3, 64, 128)
    assert params['40']['kernel'].shape == (3, 3, 512, 512)
    assert params['41']['bias'].shape == (512,)
    assert len([k for k in params if 'kernel' in params[k]]) == 13
    # torchvision's vgg16_bn has 138,365,992 parameters; without its classifier 14,723,136.
    assert count_parameters({'params': params}) == 14_723_136


@pytest.mark.parametrize('backbone', sorted(BACKBONES))
@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_feature_map_sizes_follow_the_output_stride(backbone, output_stride):
    model = BACKBONES[backbone](output_stride=output_stride)
    x = jax.ShapeDtypeStruct((2, 256, 512, 3), jnp.float32)
    variables = abstract_variables(model, x.shape)
    features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    aux_channels, out_channels = CHANNELS[backbone]
    out_size = (256 // output_stride, 512 // output_stride)
    # layer3 / pool4 is at stride 16 unless the network is dilated past it.
    aux_size = (256 // min(output_stride, 16), 512 // min(output_stride, 16))
    assert features['out'].shape == (2, *out_size, out_channels)
    assert features['aux'].shape == (2, *aux_size, aux_channels)


def conv_calls(model: nn.Module, shape: tuple[int, ...]) -> dict[str, tuple]:
    """(strides, kernel_dilation) of every conv ``model`` runs, by module path."""
    calls = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Conv) and context.method_name == '__call__':
            module = context.module
            calls['/'.join(module.path)] = (tuple(module.strides), tuple(module.kernel_dilation))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract_variables(model, shape)
    return calls


@pytest.mark.parametrize('output_stride,layer3,layer4', [
    # (strides, dilation) of the 3x3 conv of the first and of the other blocks of each stage.
    (32, [((2, 2), (1, 1)), ((1, 1), (1, 1))], [((2, 2), (1, 1)), ((1, 1), (1, 1))]),
    (16, [((2, 2), (1, 1)), ((1, 1), (1, 1))], [((1, 1), (1, 1)), ((1, 1), (2, 2))]),
    (8, [((1, 1), (1, 1)), ((1, 1), (2, 2))], [((1, 1), (2, 2)), ((1, 1), (4, 4))]),
])
def test_dilation_schedule_first_block_keeps_previous_dilation(output_stride, layer3, layer4):
    calls = conv_calls(ResNet(depth=50, output_stride=output_stride, width=0.125),
                       (1, 64, 64, 3))
    for layer, (first, rest) in (('layer3', layer3), ('layer4', layer4)):
        blocks = sorted({int(p.split('/')[1]) for p in calls if p.startswith(layer)})
        assert calls[f'{layer}/0/conv2'] == first
        for block in blocks[1:]:
            assert calls[f'{layer}/{block}/conv2'] == rest
        # The shortcut 1x1 conv strides with the block and is never dilated.
        assert calls[f'{layer}/0/downsample/0'] == (first[0], (1, 1))


def test_forward_flops_count_multiply_adds_twice():
    # ResNet-50 without its fc layer: 4.09 GMACs at 224x224 in the literature; XLA counts two
    # FLOPs per multiply-add and leaves out the taps that land on padding.
    model = ResNet(depth=50)
    variables = abstract_variables(model, (1, 224, 224, 3))
    flops = forward_flops(model, variables, (1, 224, 224, 3))
    assert 7.7e9 < flops < 8.2e9
    # Per-image FLOPs grow with the number of pixels.
    doubled = forward_flops(model, variables, (1, 224, 448, 3))
    assert 1.95 < doubled / flops < 2.05
