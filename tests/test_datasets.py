"""Data sets beyond Cityscapes: class tables, the folder-pair / VOC / ADE20K readers in their
exact layouts, the checks that refuse a bad data set before anything is written, and short
trainings on each that learn and report the table's class names."""

import importlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tiny_config
from seg_jax import config_checks, train
from seg_jax.data import classes, labels, pipeline, sources, synthetic
from seg_jax.errors import ConfigError, DataError

# A custom set: 'crack' is marked by two values, 255 is void, values 5..254 are unknown.
CUSTOM_TABLE = {'name': 'walls', 'void': [255], 'marked': ['crack'], 'classes': [
    {'name': 'background', 'train_id': 0, 'values': [0], 'color': [0, 0, 0]},
    {'name': 'crack', 'train_id': 1, 'values': [1, 2], 'color': [255, 0, 0]},
    {'name': 'hole', 'train_id': 2, 'values': [3]},
    {'name': 'rust', 'train_id': 3, 'values': [4], 'color': [200, 120, 0]}]}
CUSTOM_CSV = ('name,train_id,values,color\nbackground,0,0,0 0 0\ncrack,1,1 2,255 0 0\n'
              'hole,2,3,\nrust,3,4,200 120 0\nborder,void,255,\n')
# Each value's colour in the custom images, so that a network can learn the classes.
VALUE_COLOURS = {0: (90, 90, 90), 1: (230, 40, 40), 2: (230, 40, 40), 3: (30, 30, 220),
                 4: (200, 140, 20), 255: (90, 90, 90)}


def custom_label(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Rectangles of every value on background, with a void rim."""
    label = np.zeros((height, width), np.uint8)
    for value in (1, 2, 3, 4):
        top, left = rng.integers(0, height - 16), rng.integers(0, width - 16)
        label[top:top + rng.integers(8, 16), left:left + rng.integers(8, 24)] = value
    label[:2] = 255
    return label


def custom_image(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    colours = np.zeros((256, 3), np.uint8)
    for value, colour in VALUE_COLOURS.items():
        colours[value] = colour
    noise = rng.integers(-20, 21, label.shape + (3,))
    return np.clip(colours[label].astype(int) + noise, 0, 255).astype(np.uint8)


def save_label(path: str, label: np.ndarray, palette: bool) -> None:
    """A greyscale PNG, or a palette PNG whose colours are not its indices."""
    image = Image.fromarray(label, 'L')
    if palette:
        image = image.convert('P')
        image.putpalette([(index * 37 + channel * 91) % 256 for index in range(256)
                          for channel in range(3)])
    image.save(path)


def write_custom(root: str, counts=(('train', 16), ('val', 4)), seed: int = 0) -> str:
    """The 'pairs' layout (images/<split>/x.jpg, labels/<split>/x.png) with its table, in
    images of two sizes, labels alternately greyscale and palette PNGs."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        for folder in ('images', 'labels'):
            os.makedirs(os.path.join(root, folder, split), exist_ok=True)
        for index in range(count):
            height = 64 if index % 2 else 56
            label = custom_label(rng, height, 64)
            Image.fromarray(custom_image(rng, label)).save(
                os.path.join(root, 'images', split, f'wall_{index:03d}.jpg'), quality=95)
            save_label(os.path.join(root, 'labels', split, f'wall_{index:03d}.png'), label,
                       palette=index % 2 == 1)
    with open(os.path.join(root, 'walls.json'), 'w') as f:
        json.dump(CUSTOM_TABLE, f)
    return root


def custom_config(root: str, **data):
    config = tiny_config.get_config()
    config.data.source = 'pairs'
    config.data.dir = root
    config.data.classes = os.path.join(root, 'walls.json')
    config.data.crop_size = (48, 64)
    config.data.eval_size = (64, 64)
    config.model.num_classes = 4
    config.data.update(data)
    return config


def read_labels(config, split: str) -> tuple[list[str], list[np.ndarray]]:
    """The train-id labels the pipeline gives for every example of ``split``, unaugmented."""
    opened = sources.open_split(config.data, split)
    ids, train_ids = [], []
    for index in range(opened.size):
        example = opened.read(tf.constant(index, tf.int64))
        ids.append(example['image_id'].numpy().decode())
        train_ids.append(pipeline.to_train_ids(example, opened.classes).numpy())
    return ids, train_ids


# ------------------------------------------------------------------------------- the tables


def test_the_built_in_tables():
    cityscapes = classes.class_table('cityscapes')
    np.testing.assert_array_equal(cityscapes.value_to_train_id, labels.LABEL_ID_TO_TRAIN_ID)
    np.testing.assert_array_equal(cityscapes.palette, labels.PALETTE)
    assert cityscapes.marked == labels.COURSE_CLASSES and cityscapes.is_cityscapes
    assert cityscapes.known_values.sum() == labels.NUM_LABEL_IDS
    voc = classes.class_table('voc')
    assert voc.num_classes == 21 and voc.names[15] == 'person' and voc.void_values == (255,)
    assert voc.value_to_train_id[:21].tolist() == list(range(21))
    assert voc.colors[1] == (128, 0, 0) and voc.colors[15] == (192, 128, 128)  # VOC's colours
    assert not voc.known_values[21:255].any() and not voc.is_cityscapes
    ade = classes.class_table('ade20k')
    assert ade.num_classes == 150 and ade.names[:3] == ('wall', 'building', 'sky')
    assert ade.value_to_train_id[0] == 255 and ade.value_to_train_id[1:151].tolist() == list(
        range(150))
    assert len(set(ade.colors)) == 150


def test_a_json_and_a_csv_table_read_alike(tmp_path):
    (tmp_path / 'walls.json').write_text(json.dumps(CUSTOM_TABLE))
    (tmp_path / 'walls.csv').write_text(CUSTOM_CSV)
    from_json = classes.class_table(str(tmp_path / 'walls.json'))
    from_csv = classes.class_table(str(tmp_path / 'walls.csv'))
    for table in (from_json, from_csv):
        assert table.names == ('background', 'crack', 'hole', 'rust')
        assert table.value_to_train_id[[0, 1, 2, 3, 4, 255, 7]].tolist() == [
            0, 1, 1, 2, 3, 255, 255]
        assert table.known_values[[0, 1, 2, 3, 4, 255]].all()
        assert not table.known_values[5:255].any()
        assert table.colors[1] == (255, 0, 0)
        assert table.colors[2] == classes.colour_map(3)  # generated where none is given
    assert from_json.marked == ('crack',) and from_csv.marked == ()
    assert from_json.values == from_csv.values and from_json.colors == from_csv.colors


@pytest.mark.parametrize('change, message', [
    (lambda t: t['classes'][3].update(train_id=5),
     r'has train ids \[0, 1, 2, 5\]; they must be 0\.\.3'),
    (lambda t: t['classes'][2].update(values=[2]), "value 2 belongs to both 'crack' and 'hole'"),
    (lambda t: t.update(void=[4]), "value 4 belongs to both 'rust' and 'void'"),
    (lambda t: t['classes'][0].update(values=[300]), 'outside 0..255'),
    (lambda t: t.update(marked=['mould']), "marks \\['mould'\\]"),
    (lambda t: t['classes'][1].update(color=[255, 0]), 'must be three values'),
])
def test_a_bad_table_is_refused_naming_the_file(tmp_path, change, message):
    table = json.loads(json.dumps(CUSTOM_TABLE))
    change(table)
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(table))
    with pytest.raises(ConfigError, match=message) as raised:
        classes.class_table(str(path))
    assert str(path) in str(raised.value)


def test_an_unknown_table_name_lists_the_built_in_ones(tmp_path):
    with pytest.raises(ConfigError, match='neither a built-in class table .cityscapes, voc, '
                                          'ade20k. nor a .json / .csv file'):
        classes.class_table(str(tmp_path / 'missing.json'))


def test_num_classes_must_agree_with_the_table():
    config = tiny_config.get_config()
    config.data.classes = 'voc'
    with pytest.raises(ConfigError, match=r'num_classes=19 disagrees with the class table '
                                          r"'voc', which has 21 classes.*num_classes=21"):
        config_checks.check_config(config, 'train')


def test_the_official_export_is_refused_for_another_data_set(tmp_path):
    config = tiny_config.get_config()
    config.data.classes, config.model.num_classes = 'voc', 21
    config.eval.export_dir = str(tmp_path / 'export')
    with pytest.raises(ConfigError, match='defined for Cityscapes only.*class table .voc.'):
        config_checks.check_config(config, 'eval')
    assert not os.path.exists(tmp_path / 'export')


# ------------------------------------------------------------------------------ the layouts


def test_every_value_of_a_custom_set_lands_on_its_train_id(tmp_path):
    root = write_custom(str(tmp_path / 'walls'), counts=(('train', 4), ('val', 2)))
    config = custom_config(root)
    table = classes.class_table(config.data.classes)
    ids, train_ids = read_labels(config, 'train')
    assert ids == [f'wall_{i:03d}' for i in range(4)]
    for stem, got in zip(ids, train_ids):
        stored = np.asarray(Image.open(os.path.join(root, 'labels', 'train', stem + '.png')))
        assert Image.open(os.path.join(root, 'labels', 'train', stem + '.png')).mode in ('L', 'P')
        np.testing.assert_array_equal(got, table.value_to_train_id[stored])
        assert set(np.unique(got)) == {0, 1, 2, 3, 255}
    # Evaluation pads the 56-row images to the 64x64 canvas with void labels.
    batch = next(pipeline.build_input(config, 'validation'))
    assert batch['label'].shape[1:] == (64, 64) and batch['mask'].sum() == 2
    assert (batch['label'][0, 56:] == 255).all()
    np.testing.assert_array_equal(batch['label'][0, :56], read_labels(config, 'validation')[1][0])


def test_the_voc_layout_reads_palette_indices_and_the_sbd_set(tmp_path):
    root = str(tmp_path / 'VOC2012')
    synthetic.write_voc(root, num_train=3, num_val=2, height=64, width=128, num_aug=2)
    config = tiny_config.get_config()
    config.data.update(source='voc', dir=root, classes='voc', eval_size=(64, 128))
    for split, folder in (('train', 'train'), ('validation', 'val')):
        ids, train_ids = read_labels(config, split)
        with open(os.path.join(root, 'ImageSets', 'Segmentation', f'{folder}.txt')) as f:
            assert ids == sorted(f.read().split())
        for stem, got in zip(ids, train_ids):
            png = Image.open(os.path.join(root, 'SegmentationClass', stem + '.png'))
            assert png.mode == 'P'  # its indices are the values; its colours are VOC's
            np.testing.assert_array_equal(got, np.asarray(png))
    lists = os.path.join(root, 'ImageSets', 'Segmentation')
    with open(os.path.join(lists, 'train.txt')) as f:
        voc_train = f.read().split()
    with open(os.path.join(lists, 'val.txt')) as f:
        voc_val = f.read().split()
    with open(os.path.join(lists, 'aug.txt'), 'a') as f:  # an aug list that holds a val image
        f.write(voc_val[0] + '\n')
    with open(os.path.join(lists, 'aug.txt')) as f:
        aug = f.read().split()
    assert set(voc_train) < set(aug)  # as the converter's list: SBD's images include VOC's
    os.link(os.path.join(root, 'SegmentationClass', voc_val[0] + '.png'),
            os.path.join(root, 'SegmentationClassAug', voc_val[0] + '.png'))
    config.data.voc_aug = True
    ids, train_ids = read_labels(config, 'train')
    assert sorted(ids) == sorted(set(voc_train) | set(aug) - set(voc_val))  # 3 + 2, no val
    for stem in ids:  # VOC's own labels for its training images, SBD's for the others
        folder = 'SegmentationClass' if stem in voc_train else 'SegmentationClassAug'
        np.testing.assert_array_equal(train_ids[ids.index(stem)], np.asarray(
            Image.open(os.path.join(root, folder, stem + '.png'))))


def test_the_ade20k_layout_shifts_values_down_and_makes_zero_void(tmp_path):
    synthetic.write_ade20k(str(tmp_path), num_train=2, num_val=2, height=64, width=128)
    config = tiny_config.get_config()
    config.data.update(source='ade20k', dir=str(tmp_path), classes='ade20k',  # the parent
                       eval_size=(64, 128))
    ids, train_ids = read_labels(config, 'validation')
    assert ids == ['ADE_val_00000001', 'ADE_val_00000002']
    for stem, got in zip(ids, train_ids):
        stored = np.asarray(Image.open(os.path.join(
            tmp_path, 'ADEChallengeData2016', 'annotations', 'validation', stem + '.png')))
        assert (stored == 0).any() and (stored > 0).any()
        np.testing.assert_array_equal(got, np.where(stored == 0, 255, stored.astype(int) - 1))


# ------------------------------------------------------------------------------- the checks


def _label_path(root: str, index: int = 1) -> str:
    return os.path.join(root, 'labels', 'train', f'wall_{index:03d}.png')


def _unknown_value(root: str) -> None:
    label = np.asarray(Image.open(_label_path(root))).copy()
    label[10:12, 10:15] = 7
    save_label(_label_path(root), label, palette=False)


def _colour_label(root: str) -> None:
    label = np.asarray(Image.open(_label_path(root)).convert('L'))
    Image.fromarray(np.stack([label] * 3, -1)).save(_label_path(root))


def _bad_train_ids(root: str) -> None:
    table = json.loads(json.dumps(CUSTOM_TABLE))
    table['classes'][0]['train_id'] = 4
    with open(os.path.join(root, 'walls.json'), 'w') as f:
        json.dump(table, f)


def _truncated_image(root: str) -> None:
    path = os.path.join(root, 'images', 'val', 'wall_001.jpg')  # the evaluated split's
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def _one_bit_label(root: str) -> None:
    label = np.asarray(Image.open(_label_path(root)).convert('L')) > 0
    Image.fromarray(label).save(_label_path(root))


def _sizes_without_canvas(root: str) -> None:
    with open(os.path.join(root, 'walls.json')) as f:
        assert json.load(f)  # the set's images have two heights: nothing to change


@pytest.mark.parametrize('damage, error, message', [
    (_truncated_image, DataError, r"1 of the 2 pairs of split 'validation' are unusable: "
                                  r"\S*images/val/wall_001.jpg is truncated"),
    (_one_bit_label, DataError, r'wall_001.png is a 1-bit greyscale PNG'),
    (_sizes_without_canvas, DataError, r"Split 'validation' has images of 2 sizes \(up to "
                                       r'64x64\).*--config.data.eval_size="\(64, 64\)"'),
    (_unknown_value, DataError,
     r"1 of the 4 pairs of split 'train' are unusable: \S*wall_001.png holds values the class "
     r"table 'walls' of \S* does not know: 7 \(10 px\)"),
    (lambda root: os.remove(_label_path(root, 2)), DataError,
     r"has 1 of 4 images without a label in \S*labels/train .*wall_002.jpg"),
    (lambda root: os.remove(os.path.join(root, 'images', 'train', 'wall_003.jpg')), DataError,
     r"has 1 labels without an image in \S*images/train: \S*wall_003.png"),
    (_colour_label, DataError, r'wall_001.png is a RGB colour image, but labels must store '
                               'class values'),
    (_bad_train_ids, ConfigError, r'has train ids \[1, 2, 3, 4\]; they must be 0\.\.3'),
    (lambda root: None, ConfigError, r'num_classes=5 disagrees'),
])
def test_a_bad_data_set_is_refused_in_one_line_before_anything_is_written(tmp_path, damage,
                                                                          error, message):
    root = write_custom(str(tmp_path / 'walls'), counts=(('train', 4), ('val', 2)))
    damage(root)
    config = custom_config(root)
    if message.startswith('num_classes'):
        config.model.num_classes = 5
    if damage is _sizes_without_canvas:
        config.data.eval_size = None
    workdir = tmp_path / 'run'
    with pytest.raises(error, match=message) as raised:
        train.train_and_evaluate(config, str(workdir))
    assert '\n' not in str(raised.value)
    assert not workdir.exists() or sorted(os.listdir(workdir)) == []


# ---------------------------------------------------------------------------- the trainings


def _chance_miou(confusion: np.ndarray) -> float:
    """The expected mIoU of predicting classes uniformly at random, from a record's confusion
    matrix (rows: ground truth then void; columns: predictions)."""
    frequencies = confusion[:-1].sum(1) / confusion[:-1].sum()
    share = 1 / confusion.shape[1]
    present = frequencies > 0
    iou = frequencies * share / (frequencies + share - frequencies * share)
    return float(iou[present].mean())


@pytest.mark.parametrize('data_set', ['custom', 'voc', 'ade20k'])
def test_a_short_training_learns_and_reports_the_tables_classes(data_set, tmp_path, capsys):
    if data_set == 'custom':
        config = custom_config(write_custom(str(tmp_path / 'walls')))
    else:
        config = tiny_config.get_config()
        config.data.synthetic.layout = config.data.classes = data_set
        config.data.dir = str(tmp_path / data_set)
        config.model.num_classes = classes.class_table(data_set).num_classes
        config.data.eval_size = (64, 128)
    config.data.crop_size = (32, 64)
    config.optimizer.learning_rate = 1e-2
    config.num_train_steps = config.eval_every_steps = 30
    config.log_every_steps = 5
    workdir = str(tmp_path / 'run')
    train.train_and_evaluate(config, workdir)
    table = classes.class_table(config.data.classes)
    with open(os.path.join(workdir, 'history.jsonl')) as f:
        losses = [event['loss'] for event in map(json.loads, f) if event['kind'] == 'train']
    assert losses[-1] < 0.8 * losses[0], losses
    with open(os.path.join(workdir, 'eval', 'validation_30.json')) as f:
        record = json.load(f)
    assert list(record['iou']) == list(table.names) == record['confusion_columns']
    confusion = np.asarray(record['confusion'])
    assert confusion.shape == (table.num_classes + 1, table.num_classes)
    assert record['miou'] > 3 * _chance_miou(confusion)
    learned = [name for name, iou in record['iou'].items() if iou is not None and iou > 0.2]
    # VOC's synthetic scenes are ~90% background, which 30 steps learn first.
    assert len(learned) >= (1 if data_set == 'voc' else 2), record['iou']
    printed = capsys.readouterr().out
    assert all(name in printed for name in table.names[:5])
    if table.marked:
        assert f'* {table.marked_title}' in printed and 'crack *' in printed


def test_with_skip_bad_examples_a_bad_pair_is_logged_and_read_as_void(tmp_path, caplog):
    root = write_custom(str(tmp_path / 'walls'), counts=(('train', 4), ('val', 2)))
    _unknown_value(root)
    config = custom_config(root, skip_bad_examples=True)
    with caplog.at_level('WARNING'):
        ids, train_ids = read_labels(config, 'train')
    assert 'wall_001.png holds values' in caplog.text and 'skip_bad_examples is set' in caplog.text
    assert (train_ids[1] == 255).all()
    assert all((train_ids[i] != 255).any() for i in (0, 2, 3))


@pytest.mark.parametrize('source, layout', [('voc', 'cityscapes'), ('synthetic', 'ade20k')])
def test_cityscapes_table_is_refused_for_a_voc_or_ade20k_layout(source, layout):
    config = tiny_config.get_config()
    config.data.source, config.data.synthetic.layout = source, layout
    name = source if source != 'synthetic' else layout
    with pytest.raises(ConfigError, match=f"{name} labels hold {name}'s values, not Cityscapes' "
                                          f'label ids.*--config.data.classes={name}'):
        config_checks.check_config(config, 'train')


@pytest.mark.parametrize('name', ['voc_deeplabv3plus_r50_d8', 'ade20k_deeplabv3plus_r50_d8'])
def test_the_512x512_recipes_open_their_data_sets_layout(name, tmp_path):
    recipe = importlib.import_module(f'configs.{name}').get_config()
    layout = recipe.data.source
    assert layout in ('voc', 'ade20k') and recipe.data.classes == layout
    assert recipe.model.num_classes == classes.class_table(layout).num_classes
    assert recipe.data.crop_size == (512, 512) and tuple(recipe.data.base_size) == (512, 2048)
    config = tiny_config.recipe(name, str(tmp_path / 'data'), width=0.0625,
                                pretrained_required=False)
    config.data.synthetic.layout = layout  # the recipe, on synthetic data in its layout
    config.data.crop_size, config.data.eval_size = (32, 32), (64, 128)
    config_checks.check_config(config, 'train')
    setup = train.training_setup(config)  # lists and checks both splits, builds the network
    assert setup.train_split.size == (24 if layout == 'voc' else 16)  # VOC: train + SBD's 8
    assert setup.eval_split.classes.names == classes.class_table(layout).names
    assert setup.total_steps == 2
