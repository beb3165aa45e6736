"""mmsegmentation's networks and checkpoints: parameter counts, loading model-zoo files, logits
equal to a PyTorch re-implementation (tests/mmseg_reference.py), evaluation of a downloaded
checkpoint without training, and the recipe configs training on the synthetic Cityscapes.
"""

import functools
import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_config
from conftest import MMSEG_CONFIGS, load_config
from seg_jax import health as run_health
from seg_jax import evaluate, parallel, pretrained, restore, train, weights_file
from seg_jax.data.sources import open_split
from seg_jax.errors import ConfigError
from seg_jax.models import build_model
from seg_jax.state import abstract_train_state
from seg_jax.summary import abstract_variables, count_parameters
from seg_jax.workdir import config_changes, resolved_config

# Parameters at 19 classes, auxiliary head included. The R-50 counts are those of mmseg 1.2.2's
# own modules; the R-101 ones are the reference's, whose R-50 counts match mmseg's.
PARAMETERS = {'deeplabv3_r50_d8': 68_113_030, 'deeplabv3plus_r50_d8': 43_589_878,
              'pspnet_r50_d8': 48_975_494, 'deeplabv3_r101_d8': 87_105_158,
              'deeplabv3plus_r101_d8': 62_582_006, 'pspnet_r101_d8': 67_967_622}
# State-dict entries (num_batches_tracked included) of mmseg 1.2.2's R-50 models.
STATE_DICT_ENTRIES = {'deeplabv3_r50_d8': 376, 'deeplabv3plus_r50_d8': 424,
                      'pspnet_r50_d8': 370}
# seg_jax config -> (reference builder name, depth).
REFERENCE = {'deeplabv3_r50_d8': ('deeplabv3', 50),
             'deeplabv3plus_r50_d8': ('deeplabv3plus', 50), 'pspnet_r50_d8': ('pspnet', 50)}


@pytest.mark.parametrize('name', MMSEG_CONFIGS)
def test_parameter_counts_are_mmsegmentations(name):
    model = build_model(load_config(name).model)
    assert count_parameters(abstract_variables(model, (1, 64, 128, 3))) == PARAMETERS[name]


@pytest.fixture(scope='module')
def reference():
    pytest.importorskip('torch')
    import mmseg_reference
    return mmseg_reference


@pytest.mark.parametrize('name', MMSEG_CONFIGS)
def test_the_reference_has_mmsegmentations_sizes(reference, name):
    model = reference.ARCHITECTURES[name.replace('_d8', '-d8')]()
    assert reference.parameter_count(model) == PARAMETERS[name]
    if name in STATE_DICT_ENTRIES:
        assert len(reference.state_dict_shapes(model)) == STATE_DICT_ENTRIES[name]


def random_reference(reference, build):
    import torch
    torch.manual_seed(0)
    model = build()
    reference.randomize_batch_norm(model, torch.Generator().manual_seed(1))
    return model.eval()


@pytest.fixture(scope='module')
def checkpoint_files(reference, tmp_path_factory):
    """config name -> (reference model, path of its random weights as an mmseg checkpoint);
    DeepLabV3+ in mmseg 1.x's layout, the others in 0.x's (the model zoo's), PSPNet in
    PyTorch's pre-1.6 serialisation, as the model zoo's 2020 files may be."""
    folder = tmp_path_factory.mktemp('mmseg_checkpoints')
    files = {}
    for name, (builder, depth) in REFERENCE.items():
        model = random_reference(reference, lambda: reference.SEGMENTORS[builder](depth))
        path = folder / f'{name}_cityscapes.pth'
        reference.save_mmseg_checkpoint(model, path, mmseg_1x=builder == 'deeplabv3plus',
                                        legacy_format=builder == 'pspnet')
        files[name] = (model, str(path))
    return files


def to_nhwc(tensor) -> np.ndarray:
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def mmseg_model_config(name: str, path: str):
    config = load_config(name).model
    config.pretrained = path
    return config


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_zoo_checkpoints_load_completely_and_compute_what_mmseg_computes(
        name, reference, checkpoint_files):
    import torch
    torch_model, path = checkpoint_files[name]
    config = mmseg_model_config(name, path)
    model = build_model(config)
    variables, report = pretrained.load_pretrained(abstract_variables(model, (1, 64, 128, 3)),
                                                   config)
    assert not report.fresh and len(report.loaded) == len(jax.tree_util.tree_leaves(variables))
    assert set(report.ignored.values()) == {"PyTorch's BatchNorm step counter"}
    assert report.summary().startswith(
        f'Pretrained mmsegmentation {name.replace("_d8", "-d8")} from {os.path.basename(path)}')
    assert "Cityscapes' 19 classes in train-id order" in report.summary()
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False)['out'])
    for seed, size in enumerate(((128, 256), (97, 161))):  # and a size no stride divides
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = to_nhwc(torch_model(x))
        ours = np.asarray(apply(variables, jnp.asarray(to_nhwc(x))))
        assert ours.shape == expected.shape == (1, *size, 19)
        assert np.abs(ours - expected).max() < 1e-4, (size, np.abs(expected).max())


def test_imagenet_v1c_backbone_fills_the_backbone_and_computes_what_mmseg_computes(
        reference, tmp_path):
    import torch
    torch_model = random_reference(reference, lambda: reference.resnet_v1c(50))
    path = tmp_path / 'resnet50_v1c-2cccc1ad.pth'
    torch.save(torch_model.state_dict(), path)  # a flat state dict, fc included
    config = mmseg_model_config('deeplabv3_r50_d8', str(path))
    model = build_model(config)
    variables, report = pretrained.load_pretrained(abstract_variables(model, (1, 64, 128, 3)),
                                                   config)
    assert report.architecture == 'resnet50_v1c'
    assert {key for key, why in report.ignored.items() if why == 'the ImageNet classifier'} == {
        'fc.weight', 'fc.bias'}
    assert all(name.split('/')[1] != 'backbone' for name in report.fresh)
    assert {name.split('/')[1] for name in report.fresh} == {'decode_head', 'auxiliary_head'}
    backbone = model.backbone.clone(output_stride=32)  # the ImageNet network: not dilated
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = to_nhwc(torch_model(x)[-1])
    ours = backbone.apply({'params': variables['params']['backbone'],
                           'batch_stats': variables['batch_stats']['backbone']},
                          jnp.asarray(to_nhwc(x)), train=False)['out']
    assert np.abs(np.asarray(ours) - expected).max() < 1e-4


def test_a_file_of_another_network_names_the_config_that_fits(checkpoint_files):
    _, path = checkpoint_files['pspnet_r50_d8']
    with pytest.raises(pretrained.WeightsError, match=(
            'holds a whole mmsegmentation pspnet_r50-d8, which needs --config '
            r'configs/pspnet_r50_d8.py \(or --config.model.name=pspnet '
            r'--config.model.backbone=resnet50_v1c\)')):
        pretrained.load_pretrained({}, mmseg_model_config('deeplabv3_r50_d8', path))


class _Exploit:
    """An object whose unpickling would run code: it creates the file named ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_a_file_that_would_run_code_is_refused_without_running_it(reference, tmp_path):
    import torch
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'exploit.pth'
    model = reference.resnet_v1c(50, with_fc=False)
    torch.save({'meta': {'hook': _Exploit(str(marker))}, 'state_dict': model.state_dict()}, path)
    with pytest.raises(pretrained.WeightsError, match=(
            r'holds (_?io|builtins)\.open, which a weights-only load does not build: seg_jax never '
            'runs code')):
        weights_file.read_weights(str(path))
    assert not marker.exists()
    # A numpy scalar in the meta (as mmseg's hook messages may hold) is read, pickled by numpy 2
    # or, as the model zoo's files were, by numpy 1 (numpy.core, not numpy._core).
    torch.save({'meta': {'best_score': np.float64(0.79), 'iter': 80000},
                'state_dict': model.state_dict()}, path, _use_new_zipfile_serialization=False)
    numpy2 = path.read_bytes()
    assert b'numpy._core.multiarray' in numpy2
    numpy1 = tmp_path / 'numpy1.pth'
    numpy1.write_bytes(numpy2.replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))
    for written in (path, numpy1):
        weights = weights_file.read_weights(str(written))
        assert weights.meta['iter'] == 80000 and len(weights.state) == len(model.state_dict())
        score = weights.meta['best_score']
        assert type(score) is np.float64 and score == 0.79


def test_converted_checkpoints_keep_their_meta(checkpoint_files, tmp_path):
    from seg_jax.tools.convert_weights import convert
    _, path = checkpoint_files['deeplabv3_r50_d8']
    converted = str(tmp_path / 'deeplabv3.safetensors')
    assert convert(path, converted) == 'deeplabv3_r50-d8'
    weights = weights_file.read_weights(converted)
    assert weights.meta['CLASSES'] == list(pretrained.CLASS_NAMES)
    assert weights.state.keys() == weights_file.read_weights(path).state.keys()


@pytest.fixture(scope='module')
def synthetic_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('mmseg_synthetic'))


def test_evaluating_a_downloaded_checkpoint_needs_no_training(checkpoint_files, synthetic_dir,
                                                              tmp_path, capsys):
    _, path = checkpoint_files['pspnet_r50_d8']
    config = tiny_config.recipe('pspnet_r50_d8', synthetic_dir, pretrained=path)
    workdir = tmp_path / 'zoo'
    results = evaluate.evaluate_checkpoint(config, str(workdir))
    out = capsys.readouterr().out
    assert f'No checkpoint in {workdir / "checkpoints"}: using config.model.pretrained' in out
    assert 'Pretrained mmsegmentation pspnet_r50-d8' in out
    assert results['weights'] == {'source': 'pretrained', 'path': path, 'step': 0}
    assert results['num_images'] == tiny_config.get_config().data.synthetic.num_val
    record = json.loads((workdir / 'eval' / 'validation_0_pretrained_whole.json').read_text())
    assert record['weights']['source'] == 'pretrained' and record['miou'] == results['miou']
    assert not (workdir / 'checkpoints').exists()


def test_predicting_with_a_downloaded_checkpoint_needs_no_training(checkpoint_files,
                                                                   synthetic_dir, tmp_path,
                                                                   capsys):
    from seg_jax import predict
    _, path = checkpoint_files['pspnet_r50_d8']
    config = tiny_config.recipe('pspnet_r50_d8', synthetic_dir, pretrained=path)
    open_split(config.data, 'validation')  # generates the synthetic data if no test has yet
    image = sorted(pathlib.Path(synthetic_dir).glob('leftImg8bit/val/*/*.png'))[0]
    config.predict.input, config.predict.output = str(image), str(tmp_path / 'out')
    assert predict.predict(config, str(tmp_path / 'zoo')) == 1
    assert f'the pretrained file {path} (config.model.pretrained)' in capsys.readouterr().out
    stem = image.name[:-len('.png')]
    assert all((tmp_path / 'out' / f'{stem}{suffix}').is_file()
               for suffix in predict.OUTPUT_SUFFIXES)


def test_evaluating_weights_that_leave_the_head_random_is_refused(reference, synthetic_dir,
                                                                  tmp_path):
    import torch
    path = tmp_path / 'resnet50_v1c.pth'
    torch.save(reference.resnet_v1c(50).state_dict(), path)
    config = tiny_config.recipe('deeplabv3_r50_d8', synthetic_dir, pretrained=str(path))
    with pytest.raises(pretrained.WeightsError, match=(
            'does not hold the whole configured model: .* variables would be random')):
        evaluate.evaluate_checkpoint(config, str(tmp_path / 'run'))


def test_a_recipe_that_needs_imagenet_weights_refuses_to_start_without(synthetic_dir,
                                                                       tmp_path):
    config = tiny_config.recipe('deeplabv3plus_r101_d8', synthetic_dir)
    with pytest.raises(pretrained.WeightsError) as error:
        train.train_and_evaluate(config, str(tmp_path / 'run'))
    message = str(error.value)
    assert ('https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth'
            in message)
    assert '--config.model.pretrained=PATH/resnet101_v1c-e67eebb6.pth' in message
    assert '--config.model.pretrained_required=False' in message
    assert not (tmp_path / 'run').exists()


def test_a_recipe_trains_and_evaluates_at_tiny_width(synthetic_dir, tmp_path):
    """DeepLabV3+ R-50, whose head uses every kind of layer of the three, with the recipe's
    crop balancing and photometric distortion in the input pipeline."""
    name = 'deeplabv3plus_r50_d8'
    config = tiny_config.recipe(name, synthetic_dir, width=0.0625, pretrained_required=False)
    state = train.train_and_evaluate(config, str(tmp_path / name))
    assert int(state.step) == 2
    history = [json.loads(line) for line in
               (tmp_path / name / 'history.jsonl').read_text().splitlines()]
    losses = [entry['loss'] for entry in history if entry.get('kind') == 'train']
    assert losses and all(np.isfinite(losses))
    evals = [entry for entry in history if entry.get('kind') == 'eval']
    assert evals and 0 <= evals[-1]['miou'] <= 1


@pytest.mark.parametrize('name', [name for name in MMSEG_CONFIGS
                                  if name != 'deeplabv3plus_r50_d8'])
def test_every_recipe_builds_its_training_step(name, synthetic_dir):
    """The other recipes' training steps, traced abstractly (compiling and running each of
    them costs about a minute on CI's CPU for the R-50 networks, three for the R-101 ones)."""
    config = tiny_config.recipe(name, synthetic_dir, width=0.0625, pretrained_required=False)
    setup = train.training_setup(config)
    mesh = parallel.data_mesh()
    state = abstract_train_state(setup.model, setup.tx, tuple(config.data.crop_size), 0, mesh)
    batch = {'image': jax.ShapeDtypeStruct((8, 64, 128, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((8, 64, 128), jnp.int32)}
    step = train.make_train_step(config.loss, config.optimizer, setup.class_weights,
                                 config.seed)
    new_state, logged, _ = jax.eval_shape(step, state, batch, run_health.initial(mesh),
                                          setup.schedule)
    assert {'loss', 'main', 'aux', 'learning_rate'} <= set(logged)
    assert jax.tree.map(lambda leaf: leaf.shape, new_state.params) == jax.tree.map(
        lambda leaf: leaf.shape, state.params)


def jit_init(model, key, x):
    """``model.init(key, x, train=False)``, jitted: one program compiles faster than each
    initialiser run eagerly, and gives the same numbers."""
    return jax.jit(lambda key, x: model.init(key, x, train=False))(key, x)


def tiny_network(name: str, **model):
    config = load_config(name).model
    config.update(dict(width=0.25, **model))
    return build_model(config)


def test_heads_drop_whole_feature_maps_in_training_only():
    model = tiny_network('pspnet_r50_d8')
    x = jax.random.normal(jax.random.key(0), (2, 64, 128, 3))
    variables = jit_init(model, jax.random.key(1), x)

    @functools.partial(jax.jit, static_argnums=0)
    def dropout_inputs_and_outputs(train: bool) -> list[tuple[jax.Array, jax.Array]]:
        """(input, output) of every Dropout in one apply, returned from the jitted program
        (faster to compile than the network is to run eagerly)."""
        dropped = []

        def record(next_fun, args, kwargs, context):
            output = next_fun(*args, **kwargs)
            if isinstance(context.module, nn.Dropout):
                dropped.append((args[0], output))
            return output

        with nn.intercept_methods(record):
            model.apply(variables, x, train=train, mutable=['batch_stats'],
                        rngs={'dropout': jax.random.key(2)})
        return dropped

    dropped = dropout_inputs_and_outputs(True)
    assert len(dropped) == 2  # decode head and auxiliary head, before each conv_seg
    for before, after in dropped:
        zero_maps = np.all(np.asarray(after) == 0, axis=(1, 2))  # (batch, channels)
        kept = ~zero_maps
        np.testing.assert_allclose(np.asarray(after)[kept.nonzero()[0], :, :, kept.nonzero()[1]],
                                   np.asarray(before)[kept.nonzero()[0], :, :, kept.nonzero()[1]]
                                   / 0.9, rtol=1e-5)
        assert 0.02 < zero_maps.mean() < 0.25  # ~10% of the maps, each entirely
    dropped = dropout_inputs_and_outputs(False)
    assert len(dropped) == 1  # the decode head's: the auxiliary head runs in training only
    assert all(np.array_equal(before, after) for before, after in dropped)


def test_mmseg_initialisation_statistics():
    model = tiny_network('deeplabv3plus_r50_d8', init='mmseg')
    params = jit_init(model, jax.random.key(0), jnp.zeros((1, 64, 128, 3)))['params']
    head = params['decode_head']
    for classifier in (head['conv_seg'], params['auxiliary_head']['conv_seg']):
        kernel = np.asarray(classifier['kernel'])
        assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.002
        assert np.all(np.asarray(classifier['bias']) == 0)
    # ConvModules: Kaiming normal, fan-out, std sqrt(2 / (k * k * out)), untruncated.
    for path in (('bottleneck', 'conv'), ('sep_bottleneck', '0', 'depthwise_conv', 'conv'),
                 ('aspp_modules', '0', 'conv')):
        node = head
        for key in path:
            node = node[key]
        kernel = np.asarray(node['kernel'])
        expected = np.sqrt(2.0 / (kernel.shape[0] * kernel.shape[1] * kernel.shape[-1]))
        assert abs(kernel.std() / expected - 1) < 0.05, path
        assert np.abs(kernel).max() > 2.5 * expected  # not truncated at 2 std
    stem = np.asarray(params['backbone']['stem']['0']['kernel'])
    assert abs(stem.std() / np.sqrt(2.0 / (9 * stem.shape[-1])) - 1) < 0.2


@pytest.mark.parametrize('overrides, message', [
    (dict(backbone='vgg16_bn'), "does not fit deeplabv3plus: its heads need a ResNet"),
    (dict(dual_aspp=True), 'only resnet_aspp has a layer3 ASPP'),
    (dict(aspp_dropout=0.5), "mmsegmentation's heads have their own fixed Dropout2d"),
])
def test_fields_the_mmseg_networks_cannot_honour_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_network('deeplabv3plus_r50_d8', **overrides)


def test_mmseg_initialisation_belongs_to_mmsegs_networks():
    config = load_config('resnet_aspp').model
    config.init = 'mmseg'
    with pytest.raises(ConfigError, match="'mmseg' is the initialisation of mmsegmentation"):
        build_model(config)


def test_a_run_written_before_these_fields_existed_still_continues(tmp_path):
    """A deeplabv3_r50 workdir from before the recipe options (its config.json lacks them, and
    its config file did not yet ask for ImageNet weights) resumes with today's config file."""
    config = load_config('deeplabv3_r50')
    stored = resolved_config(config)
    del stored['model']['pretrained_required'], stored['schedule']['end_value']
    del stored['loss']['normalizer'], stored['data']['photometric_style']
    del stored['data']['cat_max_ratio']
    (tmp_path / 'config.json').write_text(json.dumps(stored))
    assert config_changes(str(tmp_path), config) == []
    # ...while a real change of the recipe is still refused.
    config.loss.normalizer = 'all'
    assert config_changes(str(tmp_path), config) == ["loss.normalizer: 'valid' -> 'all'"]


def test_mmseg_networks_are_inferred_at_any_size_without_padding():
    from seg_jax import inference
    model = tiny_network('pspnet_r50_d8')
    x = jax.random.normal(jax.random.key(0), (1, 97, 161, 3))
    variables = jit_init(model, jax.random.key(1), x)
    ours = inference.log_probabilities(model, variables, x, inference.InferenceSettings())
    direct = jax.nn.log_softmax(model.apply(variables, x, train=False)['out'], axis=-1)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(direct), atol=1e-6)


def test_a_workdir_checkpoint_comes_before_the_pretrained_file(trained_run, tmp_path):
    config, workdir = trained_run
    config = config.copy_and_resolve_references()
    config.model.pretrained = str(tmp_path / 'never_read.pth')  # does not exist
    weights = restore.load_trained_model(config, workdir, parallel.data_mesh())
    assert weights.source == 'checkpoint' and weights.step == config.num_train_steps
