"""--mode predict on folders of images of any size, against evaluation's predictions."""

import copy
import glob
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from seg_jax import cityscapes_export, evaluate, inference, predict
from seg_jax.data.labels import LABEL_ID_TO_TRAIN_ID, PALETTE
from seg_jax.errors import ConfigError, DataError


def predict_config(config, input_spec, output, **fields):
    config = copy.deepcopy(config)
    config.predict.input = str(input_spec)
    config.predict.output = str(output)
    config.predict.update(fields)
    return config


@pytest.fixture()
def photos(trained_run, tmp_path):
    """A folder of images of two sizes: three synthetic val images (64x128 PNG) at the top and
    two 50x70 JPEGs (not a multiple of the U-Net's output stride) in a subfolder."""
    config, _ = trained_run
    folder = tmp_path / 'photos'
    (folder / 'phone').mkdir(parents=True)
    val_images = sorted(glob.glob(os.path.join(config.data.dir, 'leftImg8bit', 'val', '*',
                                               '*.png')))[:3]
    for path in val_images:
        shutil.copy(path, folder)
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), np.uint8)).save(
            folder / 'phone' / f'shot{k}.jpg')
    return folder, [os.path.basename(p) for p in val_images]


def test_predict_writes_every_output_at_each_input_size(trained_run, photos, tmp_path,
                                                        monkeypatch):
    config, workdir = trained_run
    folder, val_names = photos
    compiled = []
    make_step = inference.make_predict_fn

    def recorded(*args):
        compiled.append(make_step(*args))
        return compiled[-1]

    monkeypatch.setattr(inference, 'make_predict_fn', recorded)
    output = tmp_path / 'out'
    assert predict.predict(predict_config(config, folder, output, overlay_alpha=0.4),
                           workdir) == 5
    expected = {name[:-len('.png')]: (64, 128) for name in val_names}
    expected.update({'phone/shot0': (50, 70), 'phone/shot1': (50, 70)})
    for name, size in expected.items():
        photo = np.asarray(Image.open(next(folder.glob(name + '.*'))).convert('RGB'))
        train_ids = np.asarray(Image.open(output / f'{name}_trainIds.png'))
        colours = np.asarray(Image.open(output / f'{name}_color.png'))
        blended = np.asarray(Image.open(output / f'{name}_overlay.png'))
        assert train_ids.shape == size and train_ids.dtype == np.uint8 and train_ids.max() < 19
        np.testing.assert_array_equal(colours, PALETTE[train_ids])
        np.testing.assert_array_equal(blended, predict.overlay(photo, colours, 0.4))
    assert len(list(output.rglob('*.png'))) == 3 * len(expected)
    # One compiled step, compiled once per image size.
    assert len(compiled) == 1 and compiled[0]._cache_size() == 2


def test_predictions_are_those_of_evaluation(trained_run, photos, tmp_path):
    """The same val images through --mode predict and through the exported eval agree."""
    config, workdir = trained_run
    folder, val_names = photos
    eval_config = copy.deepcopy(config)
    eval_config.eval.export_dir = str(tmp_path / 'export')
    evaluate.evaluate_checkpoint(eval_config, workdir)
    predict.predict(predict_config(config, folder, tmp_path / 'out'), workdir)
    for name in val_names:
        image_id = name[:-len('_leftImg8bit.png')]
        exported = cityscapes_export.prediction_path(str(tmp_path / 'export' / 'val'), image_id)
        from_eval = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(exported))]
        predicted = np.asarray(Image.open(tmp_path / 'out' / (name[:-4] + '_trainIds.png')))
        np.testing.assert_array_equal(predicted, from_eval)


def test_predict_needs_no_dataset(trained_run, photos, tmp_path):
    """Restoring reads only the checkpoint: the training data may be absent."""
    config, workdir = trained_run
    folder, _ = photos
    config = predict_config(config, folder / 'phone' / 'shot0.jpg', tmp_path / 'out')
    config.data.source, config.data.dir = 'folder', str(tmp_path / 'no_cityscapes_here')
    assert predict.predict(config, workdir) == 1
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'shot0_color.png', 'shot0_overlay.png', 'shot0_trainIds.png']


def test_a_glob_names_outputs_relative_to_its_fixed_part(trained_run, photos, tmp_path):
    config, workdir = trained_run
    folder, _ = photos
    assert predict.predict(predict_config(config, folder / '*' / '*.jpg', tmp_path / 'out'),
                           workdir) == 2
    assert (tmp_path / 'out' / 'phone' / 'shot1_overlay.png').is_file()


def test_predict_never_replaces_files_unless_asked(trained_run, photos, tmp_path):
    config, workdir = trained_run
    folder, _ = photos
    output = tmp_path / 'out'
    spec = folder / 'phone'
    predict.predict(predict_config(config, spec, output), workdir)
    before = {path: path.stat().st_mtime_ns for path in output.rglob('*.png')}
    with pytest.raises(ConfigError, match='already exist.*overwrite=True'):
        predict.predict(predict_config(config, spec, output), workdir)
    assert {path: path.stat().st_mtime_ns for path in output.rglob('*.png')} == before
    predict.predict(predict_config(config, spec, output, overwrite=True), workdir)
    assert all(path.stat().st_mtime_ns > mtime for path, mtime in before.items())


def test_outputs_inside_the_input_folder_are_not_read_as_inputs(trained_run, photos):
    config, workdir = trained_run
    folder, _ = photos
    spec = folder / 'phone'
    assert predict.predict(predict_config(config, spec, spec / 'segmented'), workdir) == 2
    # A second run over the same folder still finds the two photos only.
    assert len(predict.list_inputs(str(spec), exclude=str(spec / 'segmented'))) == 2


def test_bad_inputs_are_named_before_anything_is_written(trained_run, photos, tmp_path):
    config, workdir = trained_run
    folder, _ = photos
    (folder / 'phone' / 'notes.png').write_text('not an image')
    with pytest.raises(DataError, match=r'notes\.png is not an image'):
        predict.predict(predict_config(config, folder, tmp_path / 'out'), workdir)
    with pytest.raises(DataError, match='names no image'):
        predict.predict(predict_config(config, tmp_path / 'empty*', tmp_path / 'out'), workdir)
    (folder / 'phone' / 'notes.png').unlink()
    shutil.copy(folder / 'phone' / 'shot0.jpg', folder / 'phone' / 'shot0.png')
    with pytest.raises(DataError, match='differ only in extension'):
        predict.predict(predict_config(config, folder, tmp_path / 'out'), workdir)
    with pytest.raises(ConfigError, match='overlay_alpha=1.5'):
        predict.predict(predict_config(config, folder, tmp_path / 'out', overlay_alpha=1.5),
                        workdir)
    assert not (tmp_path / 'out').exists()


def test_batches_group_images_of_one_size_and_split_them_over_processes():
    def image(name, size):
        return predict.InputImage(name, name, size)

    images = [image('a', (2, 2)), image('b', (3, 3)), image('c', (2, 2)), image('d', (2, 2))]
    plan = predict.batches(images, batch_size=2)
    assert [[i.name for i in batch] for batch in plan] == [['a', 'c'], ['d'], ['b']]
    # 2 processes, global batch 4: process 1 holds slots 2 and 3, padding past the end.
    share = predict.process_share(plan[0], 4, process_index=1, process_count=2)
    assert [(i.name, real) for i, real in share] == [('a', False), ('a', False)]
    share = predict.process_share(images[:3], 4, process_index=1, process_count=2)
    assert [(i.name, real) for i, real in share] == [('c', True), ('a', False)]
