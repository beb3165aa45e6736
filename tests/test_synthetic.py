"""The synthetic Cityscapes: real layout and file formats, valid labels, determinism, plausible
class frequencies, TFDS-style zips, and never overwriting a user's folder."""

import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from seg_jax.data import synthetic
from seg_jax.data.labels import LABEL_ID_TO_TRAIN_ID, LABEL_IDS, NUM_LABEL_IDS
from seg_jax.errors import DataError

SIZE = {'height': 64, 'width': 128}
COUNTS = {'num_train': 7, 'num_val': 4, 'num_test': 3}
# The same pattern the TFDS builder uses to find an image's id.
LEFT_IMAGE = re.compile(r'([a-z\-]+)_(\d{6})_(\d{6})_leftImg8bit\.png')
EVALUATED = ('road', 'sidewalk', 'building', 'pole', 'traffic light', 'traffic sign',
             'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'bicycle')


def files_under(root) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob('*')) if path.is_file()}


def read_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A small data set with zips, and its files by relative path."""
    root = tmp_path_factory.mktemp('synthetic') / 'cityscapes'
    synthetic.generate(root, **COUNTS, **SIZE, seed=3, zips=True)
    return root, files_under(root)


def test_layout_and_file_names(dataset):
    root, files = dataset
    expected = {synthetic.MARKER, 'leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip'}
    for split in synthetic.SPLITS:
        count = COUNTS[f'num_{split}']
        images = sorted(name for name in files if name.startswith(f'leftImg8bit/{split}/'))
        assert len(images) == count
        cities = {name.split('/')[2] for name in images}
        assert len(cities) >= 3 and cities <= set(synthetic.CITIES[split])
        sequences = {}
        for name in images:
            _, _, city, filename = name.split('/')
            match = LEFT_IMAGE.fullmatch(filename)
            assert match and match[1] == city and match[3] == '000019', name
            sequences.setdefault(city, []).append(int(match[2]))
            stem = filename.removesuffix('_leftImg8bit.png')
            expected |= {name, f'gtFine/{split}/{city}/{stem}_gtFine_labelIds.png',
                         f'gtFine/{split}/{city}/{stem}_gtFine_color.png',
                         f'gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png'}
        assert all(seqs == list(range(len(seqs))) for seqs in sequences.values()), sequences
    assert set(files) == expected


def test_images_and_labels_formats(dataset):
    _, files = dataset
    for name in (name for name in files if name.endswith('_leftImg8bit.png')):
        image = read_png(files[name])
        label_name = name.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelIds.png')
        label = read_png(files[label_name])
        assert image.mode == 'RGB' and label.mode == 'L'
        assert image.size == label.size == (SIZE['width'], SIZE['height'])
        assert np.asarray(image).dtype == np.asarray(label).dtype == np.uint8


def test_labels_are_cityscapes_ids_and_colours_match(dataset):
    _, files = dataset
    for name in (name for name in files if name.endswith('_labelIds.png')):
        label = np.asarray(read_png(files[name]))
        assert label.max() < NUM_LABEL_IDS, name
        colour = np.asarray(read_png(files[name.replace('_labelIds', '_color')]))
        np.testing.assert_array_equal(colour[..., :3], synthetic.ID_PALETTE[label])
        instances = np.asarray(read_png(files[name.replace('_labelIds', '_instanceIds')]))
        assert instances.dtype == np.uint16  # 16-bit, like the real instance PNGs
        np.testing.assert_array_equal(instances, label)
        if '/test/' not in name:  # train and val carry classes, not only void
            assert (LABEL_ID_TO_TRAIN_ID[label] != 255).mean() > 0.5, name


def test_test_labels_carry_only_void(dataset):
    _, files = dataset
    labels = [np.asarray(read_png(data)) for name, data in files.items()
              if name.startswith('gtFine/test/') and name.endswith('_labelIds.png')]
    values = np.unique(np.concatenate([label.ravel() for label in labels]))
    assert set(values) <= {LABEL_IDS['unlabeled'], *synthetic.TEST_LABEL_IDS}
    assert (LABEL_ID_TO_TRAIN_ID[values] == 255).all()


def test_zips_hold_the_written_files_as_the_real_downloads(dataset):
    root, files = dataset
    for zip_name, prefix in (('leftImg8bit_trainvaltest.zip', 'leftImg8bit/'),
                             ('gtFine_trainvaltest.zip', 'gtFine/')):
        with zipfile.ZipFile(root / zip_name) as archive:
            members = archive.infolist()
            assert {member.filename for member in members} == {
                name for name in files if name.startswith(prefix)}
            assert all(member.compress_type == zipfile.ZIP_STORED for member in members)
            for member in members:
                assert archive.read(member) == files[member.filename], member.filename


def test_same_seed_gives_identical_files_and_counts_give_prefixes(dataset, tmp_path):
    root, files = dataset
    synthetic.generate(tmp_path / 'again', **COUNTS, **SIZE, seed=3, zips=True)
    assert files_under(tmp_path / 'again') == files
    synthetic.generate(tmp_path / 'fewer', num_train=2, num_val=1, num_test=0, **SIZE, seed=3)
    fewer = files_under(tmp_path / 'fewer')
    images = [name for name in fewer if name.endswith('.png')]
    assert len(images) == 3 * 4  # 3 examples, 4 files each
    assert all(fewer[name] == files[name] for name in images)


def test_different_seed_gives_different_scenes(dataset, tmp_path):
    _, files = dataset
    synthetic.generate(tmp_path / 'other', **COUNTS, **SIZE, seed=4)
    other = files_under(tmp_path / 'other')
    pngs = [name for name in other if name.endswith('.png')]
    assert all(other[name] != files[name] for name in pngs
               if 'leftImg8bit' in name or '/test/' not in name)


def test_class_frequencies_are_imbalanced_like_cityscapes():
    counts = np.zeros(256, np.int64)
    images_with = np.zeros(256, np.int64)
    for index in range(24):
        _, label = synthetic.render_example(0, 'train', index, 128, 256)
        present = np.bincount(label.ravel(), minlength=256)
        counts += present
        images_with += present > 0
    labelled = counts[LABEL_ID_TO_TRAIN_ID[np.arange(256)] != 255].sum()
    share = {name: counts[LABEL_IDS[name]] / labelled for name in EVALUATED}
    assert share['road'] + share['building'] + share['vegetation'] + share['sky'] > 0.6
    assert share['road'] == max(share.values())
    for rare in ('bicycle', 'rider', 'traffic sign'):
        assert 0 < share[rare] < 0.02, (rare, share[rare])
    missing = [name for name in EVALUATED if images_with[LABEL_IDS[name]] == 0]
    assert not missing
    for name in ('bicycle', 'rider', 'traffic sign', 'person'):  # a decent fraction
        assert images_with[LABEL_IDS[name]] >= 5, name


def test_scenes_scale_with_resolution():
    _, small = synthetic.render_example(1, 'train', 0, 64, 128)
    _, large = synthetic.render_example(1, 'train', 0, 256, 512)
    coarse = large.reshape(64, 4, 128, 4)[:, 1, :, 1]  # a pixel from each 4x4 block
    assert (coarse == small).mean() > 0.85


def test_refuses_folder_holding_other_files(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        synthetic.generate(tmp_path, num_train=1, num_val=0, num_test=0, **SIZE)
    assert [path.name for path in tmp_path.iterdir()] == ['notes.txt']


def test_refuses_interrupted_generation(tmp_path):
    synthetic.generate(tmp_path, num_train=1, num_val=1, num_test=0, **SIZE)
    (tmp_path / synthetic.MARKER).unlink()  # as if killed before the marker was written
    with pytest.raises(DataError, match='interrupted'):
        synthetic.generate(tmp_path, num_train=1, num_val=1, num_test=0, **SIZE)


def test_reuses_same_arguments_and_refuses_different_ones(tmp_path):
    arguments = {'num_train': 1, 'num_val': 1, 'num_test': 1, **SIZE, 'seed': 0}
    synthetic.generate(tmp_path, **arguments)
    image = next(tmp_path.glob('leftImg8bit/train/*/*.png'))
    image.write_bytes(b'edited')  # reuse must not rewrite anything
    synthetic.generate(tmp_path, **arguments)
    assert image.read_bytes() == b'edited'
    assert json.loads((tmp_path / synthetic.MARKER).read_text())['seed'] == 0
    with pytest.raises(DataError, match='seed'):
        synthetic.generate(tmp_path, **{**arguments, 'seed': 1})
    assert image.read_bytes() == b'edited'


@pytest.mark.parametrize('arguments, problem', [
    ({'num_train': -1}, 'num_train'),
    ({'height': 16}, '16x128'),
    ({'width': 8}, '64x8'),
])
def test_bad_arguments_are_named(tmp_path, arguments, problem):
    with pytest.raises(DataError, match=problem):
        synthetic.generate(tmp_path / 'out', **{**SIZE, **arguments})
    assert not (tmp_path / 'out').exists()


def test_command_line_writes_the_layout_and_refuses_to_overwrite(tmp_path):
    command = [sys.executable, '-m', 'seg_jax.data.synthetic', '--output', str(tmp_path / 'cs'),
               '--num-train', '2', '--num-val', '1', '--num-test', '1', '--height', '64',
               '--width', '128', '--seed', '5']
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    files = files_under(tmp_path / 'cs')
    assert sum(name.endswith('_leftImg8bit.png') for name in files) == 4
    assert sum(name.endswith('_gtFine_labelIds.png') for name in files) == 4
    assert json.loads(files[synthetic.MARKER])['seed'] == 5
    refused = subprocess.run(command[:-1] + ['6'], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and 'seed' in refused.stderr
    assert 'Traceback' not in refused.stderr


def test_processes_generating_the_same_folder_at_once_share_one_generation(tmp_path):
    # The processes of a multi-process job all ask for the data at start-up: one generates
    # under a lock on the folder, the others wait and reuse it instead of refusing a folder
    # that is being written.
    command = [sys.executable, '-m', 'seg_jax.data.synthetic', '--output', str(tmp_path / 'cs'),
               '--num-train', '6', '--num-val', '2', '--num-test', '0', '--height', '64',
               '--width', '128']
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], errors
    synthetic.generate(tmp_path / 'alone', num_train=6, num_val=2, num_test=0, **SIZE)
    assert files_under(tmp_path / 'cs') == files_under(tmp_path / 'alone')
