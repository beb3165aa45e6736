"""--mode export: three networks exported, then run where only jax, numpy and TensorFlow are
imported, against --mode predict on the synthetic val images."""

import copy
import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import tiny_config
from conftest import REPO
from seg_jax import checkpoints, export, inference, parallel, predict, restore, serving, train
from seg_jax.data.augment import normalize
from seg_jax.data.labels import CLASS_NAMES, PALETTE
from seg_jax.errors import ConfigError
from seg_jax.state import create_train_state
from seg_jax.workdir import checkpoint_dir, write_config
from test_reliability import tree_digest

MIN_AGREEMENT, MAX_DIFFERENCE = 0.9999, 1e-4  # what the issue of the export asks of each file


def untrained_run(name: str, data_dir: str, workdir: str, **eval_settings):
    """``configs/<name>.py`` at 1/8 width on the tests' synthetic data, inferred as
    ``eval_settings`` say, with its freshly initialised state saved as checkpoint 0 of
    ``workdir``: a workdir ``--mode export`` restores as it restores a trained one."""
    config = tiny_config.recipe(name, data_dir, width=0.125, pretrained=None,
                                pretrained_required=False)
    config.eval.update(eval_settings)
    setup = train.training_setup(config)
    state = create_train_state(setup.model, setup.tx, tuple(config.data.crop_size), config.seed,
                               parallel.data_mesh())
    write_config(workdir, config)
    with checkpoints.Checkpointer(checkpoint_dir(workdir), keep=1) as checkpointer:
        checkpointer.save(0, state, force=True)
    return config


@pytest.fixture(scope='module')
def exports(trained_run, tmp_path_factory):
    """name -> (config, workdir, export folder): the tests' trained U-Net, exported by the
    command line; DeepLabv3-R50 with sliding windows and ResNet + ASPP with two scales and
    flipping, exported in-process; all with probabilities."""
    unet_config, unet_workdir = trained_run
    root = tmp_path_factory.mktemp('exports')
    unet_config = copy.deepcopy(unet_config)
    unet_config.export.probabilities = True
    unet_config.export.dir = str(root / 'unet_export')
    result = subprocess.run(
        [sys.executable, '-m', 'seg_jax.main', '--mode', 'export', '--workdir', unet_workdir,
         '--config', str(REPO / 'tests' / 'tiny_config.py'),
         f'--config.data.dir={unet_config.data.dir}', '--config.export.probabilities=True',
         f'--config.export.dir={unet_config.export.dir}'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Wrote {unet_config.export.dir}: segmenter.jax' in result.stdout, result.stdout
    printed = result.stdout + result.stderr  # seg_jax's two lines; no library speaks
    assert printed.count('\n') == 2 and 'WARNING' not in printed, printed
    runs = {'unet': (unet_config, unet_workdir, unet_config.export.dir)}
    for name, settings in (('deeplabv3_r50', dict(window=(48, 96), stride=(32, 64))),
                           ('resnet_aspp', dict(scales=(0.75, 1.0), flip=True))):
        workdir = str(root / name)
        config = untrained_run(name, unet_config.data.dir, workdir, **settings)
        config.export.probabilities = True
        runs[name] = (config, workdir, export.export_model(config, workdir))
    return runs


@pytest.fixture(scope='module')
def val_images(trained_run) -> tuple[list[str], np.ndarray]:
    """The synthetic val images (paths, uint8 (6, 64, 128, 3))."""
    config, _ = trained_run
    paths = sorted(glob.glob(os.path.join(config.data.dir, 'leftImg8bit', 'val', '*', '*.png')))
    return paths, np.stack([np.asarray(Image.open(path).convert('RGB')) for path in paths])


def predicted(config, workdir: str, paths: list[str], output) -> np.ndarray:
    """--mode predict's train ids for ``paths`` (the val images, in their city folders)."""
    config = copy.deepcopy(config)
    folder = os.path.join(config.data.dir, 'leftImg8bit', 'val')
    config.predict.input, config.predict.output = folder, str(output)
    predict.predict(config, workdir)
    return np.stack([np.asarray(Image.open(os.path.join(
        output, os.path.relpath(path, folder)[:-len('.png')] + '_trainIds.png')))
        for path in paths])


def probabilities(config, workdir: str, images: np.ndarray) -> np.ndarray:
    """The restored model's class probabilities for ``images``, normalised as training does."""
    trained = restore.load_trained_model(config, workdir, parallel.data_mesh())
    normalised = np.stack([normalize(image).numpy() for image in images])
    log_probs = inference.log_probabilities(trained.model, jax.device_get(trained.variables),
                                            normalised, inference.inference_settings(config.eval))
    return np.exp(np.asarray(log_probs))


def test_each_export_segments_as_predict_does_without_flax_or_seg_jax_models(
        exports, val_images, tmp_path):
    paths, images = val_images
    np.save(tmp_path / 'images.npy', images)
    names = list(exports)
    served = subprocess.run(
        [sys.executable, str(REPO / 'tests' / 'serve_exported.py'), str(tmp_path / 'images.npy'),
         str(tmp_path), *(exports[name][2] for name in names)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-3000:]
    report = json.loads((tmp_path / 'report.json').read_text())
    assert not [m for m in report['modules'] if m.split('.')[0] in ('flax', 'optax', 'orbax')]
    assert [m for m in report['modules'] if m.startswith('seg_jax')] == ['seg_jax',
                                                                         'seg_jax.serving']
    for k, name in enumerate(names):
        config, workdir, _ = exports[name]
        outputs = np.load(tmp_path / f'{k}.npz')
        classes = predicted(config, workdir, paths, tmp_path / f'predicted_{name}')
        probs = probabilities(config, workdir, images)
        assert len(np.unique(classes)) > 1, name  # a map of one class would prove little
        for target, count in (('batch', len(images)), ('first', 1),
                              ('saved_model', len(images)), ('saved_model_first', 1)):
            agreement = np.mean(outputs[f'{target}_classes'] == classes[:count])
            difference = np.max(np.abs(outputs[f'{target}_probabilities'] - probs[:count]))
            assert agreement >= MIN_AGREEMENT and difference <= MAX_DIFFERENCE, (
                name, target, agreement, difference)
            assert outputs[f'{target}_classes'].dtype == np.uint8

        errors = report['serving_errors'][k]
        assert errors['dtype'].startswith('InputError: Images must be uint8 RGB values in '
                                          '[0, 255], not float32'), errors
        assert errors['rank'] == ('InputError: Images must be a batch of shape (N, 64, 128, 3), '
                                  'not (64, 128, 3) (one image: images[None]).'), errors
        assert errors['size'] == (
            'InputError: This model was exported for 64x128 images; got 63x128. Resize them to '
            '64x128, or export again with --config.export.image_size="(63, 128)".'), errors
        assert errors['channels'].startswith('InputError: Images must have 3 channels'), errors
        assert errors['empty'] == ('InputError: The batch (0, 64, 128, 3) holds no image; pass '
                                   'at least one.'), errors
        errors = report['saved_model_errors'][k]  # the SavedModel's own checks, in TensorFlow
        assert 'was expected to be a uint8 tensor but is a float tensor' in errors['dtype']
        for kind in ('rank', 'size', 'channels'):
            assert ('images must be uint8 RGB of shape (batch, 64, 128, 3), channels last: this '
                    'model was exported for 64x128 images') in errors[kind], (kind, errors)


def test_metadata_says_what_the_files_take_give_and_were_checked_on(exports):
    for name, (config, workdir, folder) in exports.items():
        assert sorted(os.listdir(folder)) == ['metadata.json', 'saved_model', 'segmenter.jax']
        metadata = serving.read_metadata(folder)
        assert metadata['model']['name'] == config.model.name
        assert metadata['weights']['path'] == workdir
        assert metadata['weights']['step'] == (8 if name == 'unet' else 0)
        assert metadata['input']['image_size'] == [64, 128]
        assert metadata['input']['shape'] == ['batch', 64, 128, 3]
        assert metadata['inference']['window'] == (list(config.eval.window)
                                                   if config.eval.window else None)
        assert metadata['classes']['names'] == list(CLASS_NAMES)
        assert metadata['classes']['palette'] == PALETTE[:19].tolist()
        assert metadata['platforms'] == ['cpu', 'cuda', 'tpu']
        assert serving.load(folder).platforms == ('cpu', 'cuda', 'tpu')
        assert metadata['versions']['jax'] == jax.__version__
        for target in ('segmenter.jax', 'segmenter.jax, one image at a time', 'saved_model'):
            figures = metadata['parity'][target]
            assert figures['class_agreement'] >= MIN_AGREEMENT, (name, target, figures)
            assert figures['max_probability_difference'] <= MAX_DIFFERENCE, (name, target)
        assert metadata['config']['eval']['flip'] == config.eval.flip


def test_an_export_is_never_written_over(exports):
    config, workdir, folder = exports['deeplabv3_r50']
    assert folder == os.path.join(workdir, 'export', '0')  # the default place
    before = tree_digest(folder)
    with pytest.raises(ConfigError, match=f'^{folder} exists already .*nothing was overwritten'):
        export.export_model(config, workdir)
    assert tree_digest(folder) == before


def test_an_export_that_segments_differently_is_refused_and_leaves_nothing(
        trained_run, tmp_path, monkeypatch):
    config, workdir = trained_run
    config = copy.deepcopy(config)
    config.export.dir = str(tmp_path / 'new' / 'folders' / 'export')
    # Normalised without the mean: the exported function is no longer the model predict runs.
    monkeypatch.setattr(export, 'MEAN_255', (0.0, 0.0, 0.0))
    with pytest.raises(export.ExportMismatchError, match=r'^The exported segmenter.jax segments '
                       r'differently from the model: its classes agree .*nothing was written'):
        export.export_model(config, workdir)
    # No export, no half-written staging folder, and not the folders made to hold them.
    assert os.listdir(tmp_path) == []


def test_an_export_folder_that_cannot_be_written_is_named(trained_run, tmp_path):
    config, workdir = trained_run
    config = copy.deepcopy(config)
    (tmp_path / 'notes.txt').write_text('a file where the export folder would go')
    config.export.dir = str(tmp_path / 'notes.txt' / 'export')
    with pytest.raises(ConfigError, match=f'^Cannot write the export to {tmp_path}/notes.txt '
                       r'\(Not a directory\); choose a writable folder with '
                       r'--config.export.dir=FOLDER\.$'):
        export.export_model(config, workdir)
    assert os.listdir(tmp_path) == ['notes.txt']


@pytest.mark.parametrize('field,value,message', [
    ('image_size', (64,), r'config.export.image_size=\(64,\) must be \(height, width\)'),
    ('platforms', ('cpu', 'gpu'), r"config.export.platforms=\('cpu', 'gpu'\) must be a "
     r"tuple of distinct names from \('cpu', 'cuda', 'rocm', 'tpu'\)"),
    ('platforms', ('cuda',), r"config.export.platforms=\('cuda',\) lacks \['cpu'\]: each "
     r"exported file is run before it is kept, here and in tensorflow-cpu; add 'cpu'\."),
    ('check_images', 1, r'config.export.check_images=1 must be 2 or more images'),
])
def test_export_settings_that_cannot_be_honoured_are_refused_first(trained_run, tmp_path,
                                                                   field, value, message):
    config, workdir = trained_run
    config = copy.deepcopy(config)
    config.export.dir = str(tmp_path / 'export')
    config.export[field] = value
    with pytest.raises(ConfigError, match=f'^{message}'):
        export.export_model(config, workdir)
    assert not os.path.exists(config.export.dir)


def test_the_default_size_is_the_evaluation_images(trained_run):
    config = copy.deepcopy(trained_run[0])
    assert export.export_image_size(config) == (64, 128)  # the synthetic set's
    config.data.source = 'tfds'
    assert export.export_image_size(config) == (1024, 2048)  # Cityscapes'
    config.export.image_size = (512, 1024)
    assert export.export_image_size(config) == (512, 1024)
