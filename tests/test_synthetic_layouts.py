"""The synthetic Pascal VOC and ADE20K: the real folder layouts and encodings (VOC's palette
PNGs and void borders, the SBD-augmented greyscale labels, ADE20K's value 0 = 'other'), classes
mapped by name from the Cityscapes scenes, varying sizes, determinism, reuse and refusal."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from seg_jax.data import synthetic
from seg_jax.data.classes import class_table, colour_map
from seg_jax.data.labels import LABEL_IDS
from seg_jax.data.synthetic import layouts
from seg_jax.data.synthetic.__main__ import main
from seg_jax.errors import DataError

SIZE = {'height': 64, 'width': 128}
VOC_COUNTS = {'num_train': 4, 'num_val': 3, 'num_aug': 3}
ADE_COUNTS = {'num_train': 4, 'num_val': 3}
SEED = 5
VOC_ID = re.compile(r'20(0[7-9]|1[0-2])_\d{6}')
# The task's mappings, written out again here so that the module's tables are checked against
# them rather than against themselves.
VOC_NAMES = {'person': 'person', 'rider': 'person', 'car': 'car', 'truck': 'car',
             'bicycle': 'bicycle', 'motorcycle': 'motorbike', 'bus': 'bus', 'train': 'train'}
ADE_NAMES = {'road': 'road', 'sidewalk': 'sidewalk', 'building': 'building', 'wall': 'wall',
             'fence': 'fence', 'pole': 'pole', 'traffic light': 'traffic light',
             'traffic sign': 'signboard', 'vegetation': 'tree', 'terrain': 'grass',
             'sky': 'sky', 'person': 'person', 'rider': 'person', 'car': 'car',
             'truck': 'truck', 'bus': 'bus', 'motorcycle': 'minibike', 'bicycle': 'bicycle'}


def files_under(root) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob('*')) if path.is_file()}


def mtimes(root) -> dict[str, int]:
    return {path.relative_to(root).as_posix(): path.stat().st_mtime_ns
            for path in root.rglob('*')}


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def expected_values(label_ids: np.ndarray, names: dict[str, str], table: str, offset: int):
    """The test's own name mapping: Cityscapes ids -> values, unmapped -> 0."""
    table_names = class_table(table).names
    expected = np.zeros(label_ids.shape, np.uint8)
    for cityscapes_name, name in names.items():
        expected[label_ids == LABEL_IDS[cityscapes_name]] = table_names.index(name) + offset
    return expected


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp('voc') / 'VOCdevkit' / 'VOC2012'
    synthetic.write_voc(root, **VOC_COUNTS, **SIZE, seed=SEED)
    return root, files_under(root)


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp('ade')
    synthetic.write_ade20k(root, **ADE_COUNTS, **SIZE, seed=SEED)
    return root, files_under(root)


def voc_ids(files, list_name: str) -> list[str]:
    text = files[f'ImageSets/Segmentation/{list_name}.txt'].decode()
    assert text.endswith('\n')
    return text.splitlines()


def test_voc_layout_lists_and_ids(voc):
    _, files = voc
    ids = {name: voc_ids(files, name) for name in ('train', 'val', 'trainval', 'aug')}
    # aug.txt lists SBD's 3 new images and, as the converter's list does, VOC's training ones.
    assert [len(ids[name]) for name in ('train', 'val', 'aug')] == [4, 3, 7]
    assert set(ids['train']) < set(ids['aug']) and not set(ids['val']) & set(ids['aug'])
    assert sorted(ids['trainval']) == sorted(ids['train'] + ids['val'])
    every = ids['val'] + ids['aug']
    assert len(set(every)) == len(every) and all(VOC_ID.fullmatch(id_) for id_ in every)
    expected = {layouts.VOC_MARKER} | {f'ImageSets/Segmentation/{name}.txt' for name in ids}
    expected |= {f'JPEGImages/{id_}.jpg' for id_ in every}
    expected |= {f'SegmentationClass/{id_}.png' for id_ in ids['train'] + ids['val']}
    expected |= {f'SegmentationClassAug/{id_}.png' for id_ in ids['aug']}
    assert set(files) == expected
    marker = json.loads(files[layouts.VOC_MARKER])
    assert marker['layout'] == 'voc' and marker['seed'] == SEED and marker['num_aug'] == 3


def test_voc_labels_are_palette_pngs_with_borders_and_images_are_jpegs(voc):
    _, files = voc
    palette = [channel for index in range(256) for channel in colour_map(index)]
    allowed = set(range(21)) | {255}
    classes_seen, sizes = set(), []
    for id_ in voc_ids(files, 'trainval'):
        label = open_image(files[f'SegmentationClass/{id_}.png'])
        assert label.mode == 'P' and label.getpalette() == palette
        values = np.asarray(label)
        assert set(np.unique(values)) <= allowed
        classes_seen |= set(np.unique(values)) - {0, 255}
        jpeg = files[f'JPEGImages/{id_}.jpg']
        image = open_image(jpeg)
        assert jpeg[:2] == b'\xff\xd8' and image.format == 'JPEG' and image.mode == 'RGB'
        assert image.size == label.size
        sizes.append(label.size)
    assert classes_seen, 'no object class in the whole set'
    assert len(set(sizes)) >= 3  # 4 train + 3 val over 6 size variants


def test_voc_values_follow_the_name_mapping_with_a_void_band_at_boundaries(voc):
    _, files = voc
    borders = 0
    for split, index_ids in (('train', voc_ids(files, 'train')), ('val', voc_ids(files, 'val'))):
        for id_ in index_ids:
            index = int(id_.split('_')[1]) - layouts.VOC_ID_START[split]
            height, width = SIZE['height'] - 8 * (index % 3), SIZE['width'] - 8 * (index % 2)
            _, label_ids = synthetic.render_example(SEED, split, index, height, width)
            plain = expected_values(label_ids, VOC_NAMES, 'voc', 0)
            written = np.asarray(open_image(files[f'SegmentationClass/{id_}.png']))
            assert written.shape == (height, width)
            keep = written != 255
            np.testing.assert_array_equal(written[keep], plain[keep])
            # Every pixel beside a boundary of the plain labels is void.
            vertical = plain[1:] != plain[:-1]
            assert (written[1:][vertical] == 255).all() and (written[:-1][vertical] == 255).all()
            horizontal = plain[:, 1:] != plain[:, :-1]
            assert (written[:, 1:][horizontal] == 255).all()
            assert (written[:, :-1][horizontal] == 255).all()
            borders += int((~keep).sum())
    assert borders > 0


def test_voc_border_band_scales_with_the_image():
    label_ids = np.full((300, 400), LABEL_IDS['road'], np.uint8)
    label_ids[100:200, 150:260] = LABEL_IDS['car']
    values = layouts.voc_values(label_ids)
    band = 3  # min(300, 400) // 100
    car = class_table('voc').names.index('car')
    expected = np.zeros_like(values)
    expected[100 - band:200 + band, 150 - band:260 + band] = 255
    expected[100 + band:200 - band, 150 + band:260 - band] = car
    np.testing.assert_array_equal(values, expected)
    # Small images still get a 1-px band on each side.
    small = np.zeros((40, 40), np.uint8)
    small[10:20, 10:20] = LABEL_IDS['person']
    assert (layouts.voc_values(small) == 255).sum() == 12 * 12 - 8 * 8


def test_voc_aug_labels_are_greyscale_and_new_scenes(voc):
    _, files = voc
    train_ids = voc_ids(files, 'train')
    aug_ids = [id_ for id_ in voc_ids(files, 'aug') if id_ not in train_ids]  # SBD's own
    for id_ in voc_ids(files, 'aug'):
        label = open_image(files[f'SegmentationClassAug/{id_}.png'])
        assert label.mode == 'L'
        assert set(np.unique(np.asarray(label))) <= set(range(21)) | {255}
        image = open_image(files[f'JPEGImages/{id_}.jpg'])
        assert files[f'JPEGImages/{id_}.jpg'][:2] == b'\xff\xd8' and image.size == label.size
    # Example 0 of each has the same size: equal pixels would mean the same seed stream.
    first_train = np.asarray(open_image(files[f'JPEGImages/{sorted(train_ids)[0]}.jpg']))
    first_aug = np.asarray(open_image(files[f'JPEGImages/{sorted(aug_ids)[0]}.jpg']))
    assert first_train.shape == first_aug.shape and not np.array_equal(first_train, first_aug)


def test_ade20k_layout_values_and_mapping(ade):
    _, files = ade
    names = class_table('ade20k').names
    sizes, expected = set(), {layouts.ADE20K_MARKER}
    for split, folder, count in (('train', 'training', 4), ('val', 'validation', 3)):
        images = sorted(name for name in files if name.startswith(
            f'ADEChallengeData2016/images/{folder}/'))
        annotations = sorted(name for name in files if name.startswith(
            f'ADEChallengeData2016/annotations/{folder}/'))
        stems = [f'ADE_{split}_{n:08d}' for n in range(1, count + 1)]
        assert images == [f'ADEChallengeData2016/images/{folder}/{s}.jpg' for s in stems]
        assert annotations == [f'ADEChallengeData2016/annotations/{folder}/{s}.png'
                               for s in stems]
        expected |= set(images) | set(annotations)
        for index, (image_path, label_path) in enumerate(zip(images, annotations)):
            label = open_image(files[label_path])
            assert label.mode == 'L' and files[image_path][:2] == b'\xff\xd8'
            assert open_image(files[image_path]).size == label.size
            values = np.asarray(label)
            assert values.max() <= 150
            _, label_ids = synthetic.render_example(SEED, split, index, *values.shape)
            road = label_ids == LABEL_IDS['road']
            assert road.any() and (values[road] == names.index('road') + 1).all()
            np.testing.assert_array_equal(values, expected_values(label_ids, ADE_NAMES,
                                                                  'ade20k', 1))
            sizes.add(label.size)
    assert len(sizes) >= 3
    assert set(files) == expected


def test_lookups_map_every_cityscapes_id_by_name():
    # Also the classes the scenes rarely or never draw (truck, bus, train, wall).
    every_id = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(layouts.VOC_LOOKUP,
                                  expected_values(every_id, VOC_NAMES, 'voc', 0))
    np.testing.assert_array_equal(layouts.ADE20K_LOOKUP,
                                  expected_values(every_id, ADE_NAMES, 'ade20k', 1))
    ids = np.array([LABEL_IDS[name] for name in
                    ('unlabeled', 'ego vehicle', 'out of roi', 'train', 'parking')], np.uint8)
    assert (layouts.ADE20K_LOOKUP[ids] == 0).all()
    assert list(layouts.VOC_LOOKUP[ids]) == [0, 0, 0, 19, 0]  # train -> VOC 'train'


def test_a_mapping_to_an_unknown_name_fails_loudly():
    with pytest.raises(ValueError, match="'streetcar'.*ade20k"):
        layouts.label_lookup({'car': 'streetcar'}, class_table('ade20k'))
    with pytest.raises(ValueError, match="'tram' is not a Cityscapes"):
        layouts.label_lookup({'tram': 'car'}, class_table('voc'))


def test_same_arguments_give_identical_bytes_and_other_seeds_other_scenes(voc, ade, tmp_path):
    synthetic.write_voc(tmp_path / 'voc', **VOC_COUNTS, **SIZE, seed=SEED)
    assert files_under(tmp_path / 'voc') == voc[1]
    synthetic.write_ade20k(tmp_path / 'ade', **ADE_COUNTS, **SIZE, seed=SEED)
    assert files_under(tmp_path / 'ade') == ade[1]
    synthetic.write_ade20k(tmp_path / 'other', **ADE_COUNTS, **SIZE, seed=SEED + 1)
    other = files_under(tmp_path / 'other')
    assert other.keys() == ade[1].keys()
    assert other['ADEChallengeData2016/images/training/ADE_train_00000001.jpg'] != \
        ade[1]['ADEChallengeData2016/images/training/ADE_train_00000001.jpg']


@pytest.mark.parametrize('write', [synthetic.write_voc, synthetic.write_ade20k])
def test_reuses_a_finished_folder_and_refuses_other_arguments(write, tmp_path):
    root = tmp_path / 'data'
    write(root, num_train=2, num_val=1, **SIZE)
    before, contents = mtimes(root), files_under(root)
    write(root, num_train=2, num_val=1, **SIZE)
    assert mtimes(root) == before
    with pytest.raises(DataError, match=r'other arguments \(differing: num_train\)'):
        write(root, num_train=3, num_val=1, **SIZE)
    assert mtimes(root) == before and files_under(root) == contents


@pytest.mark.parametrize('write', [synthetic.write_voc, synthetic.write_ade20k])
def test_refuses_a_folder_holding_other_files(write, tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    before = mtimes(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + '.*Delete the folder'):
        write(tmp_path, num_train=1, num_val=1, **SIZE)
    assert mtimes(tmp_path) == before and (tmp_path / 'notes.txt').read_text() == 'mine'


def test_refuses_sizes_whose_varied_examples_are_too_small(tmp_path):
    with pytest.raises(DataError, match=r'down to 24x56.*--height 48 --width 64'):
        synthetic.write_voc(tmp_path / 'small', num_train=3, num_val=0, height=40, width=64)
    assert not (tmp_path / 'small').exists()
    synthetic.write_ade20k(tmp_path / 'one', num_train=1, num_val=1, height=32, width=32)
    assert (tmp_path / 'one' / layouts.ADE20K_MARKER).exists()


def test_command_line_writes_a_layout_and_refuses_cityscapes_options(tmp_path, capsys):
    output = tmp_path / 'ADE'
    main(['--layout', 'ade20k', '--output', str(output), '--num-train', '2', '--num-val', '1',
          '--height', '64', '--width', '96', '--seed', '2'])
    files = files_under(output)
    assert json.loads(files[layouts.ADE20K_MARKER])['num_train'] == 2
    assert sorted(name for name in files if name.endswith('.png')) == [
        'ADEChallengeData2016/annotations/training/ADE_train_00000001.png',
        'ADEChallengeData2016/annotations/training/ADE_train_00000002.png',
        'ADEChallengeData2016/annotations/validation/ADE_val_00000001.png']
    for option, value in (('--zips', []), ('--num-test', ['2'])):
        with pytest.raises(SystemExit) as exit_:
            main(['--layout', 'voc', '--output', str(tmp_path / 'voc'), option, *value])
        assert exit_.value.code == 2 and f'{option} applies to --layout cityscapes' in \
            capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--layout', 'ade20k', '--output', str(tmp_path / 'x'), '--num-aug', '1'])
    assert '--num-aug applies to --layout voc' in capsys.readouterr().err
    assert not (tmp_path / 'voc').exists() and not (tmp_path / 'x').exists()
