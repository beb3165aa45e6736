"""Data sources and pipelines on the synthetic Cityscapes: TFDS vs folder, order, eval, errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import load_config
from seg_jax.data import cityscapes, pipeline, sources, synthetic
from seg_jax.data.split import Split
from seg_jax.data.labels import LABEL_ID_TO_TRAIN_ID, NUM_CLASSES, NUM_LABEL_IDS
from seg_jax.errors import ConfigError, DataError

NUM_TRAIN, NUM_VAL = 6, 5


def read_split(split: Split) -> dict[str, dict[str, np.ndarray]]:
    """image id -> decoded example, for every example of the split."""
    dataset = tf.data.Dataset.range(split.size).map(split.read)
    return {ex['image_id'].decode(): ex for ex in pipeline.as_numpy(dataset)}


@pytest.fixture(scope='module')
def small_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('synthetic_small')
    synthetic.generate(root, num_train=NUM_TRAIN, num_val=NUM_VAL, num_test=2, height=64,
                       width=128, seed=3)
    return str(root)


def data_config(root: str):
    """Small crops and batches from the Cityscapes folder ``root``."""
    config = load_config('fcn')
    config.data.source = 'folder'
    config.data.dir = root
    config.data.crop_size = (32, 64)
    config.global_batch_size = 4
    config.eval.batch_size = 2
    return config


def test_tfds_builder_builds_from_synthetic_zips_and_matches_the_folder(tmp_path):
    # The TFDS builder insists on 1024x2048, so this is the one full-size generation.
    root = tmp_path / 'cityscapes'
    synthetic.generate(root, num_train=2, num_val=1, num_test=1, height=1024, width=2048,
                       seed=0, zips=True)
    config = data_config(str(root))
    config.data.manual_dir = str(root)
    config.data.tfds_dir = str(tmp_path / 'tfds')
    for split_name, size in (('train', 2), ('validation', 1)):
        from_tfds = read_split(cityscapes.tfds_split(config.data, split_name))
        from_folder = read_split(cityscapes.folder_split(str(root), split_name))
        assert len(from_tfds) == size and set(from_tfds) == set(from_folder)
        for image_id, example in from_tfds.items():
            assert example['image'].shape == (1024, 2048, 3)
            assert example['label'].shape == (1024, 2048)
            np.testing.assert_array_equal(example['image'], from_folder[image_id]['image'])
            np.testing.assert_array_equal(example['label'], from_folder[image_id]['label'])
            # Label *ids* (road is 7), not train ids.
            assert example['label'].max() < NUM_LABEL_IDS and 7 in example['label']


def test_train_batches_are_augmented_crops_of_train_ids(small_data):
    batch = next(pipeline.build_input(data_config(small_data), 'train'))
    assert batch['image'].shape == (4, 32, 64, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (4, 32, 64) and batch['label'].dtype == np.int32
    values = set(np.unique(batch['label']).tolist())
    assert values <= set(range(NUM_CLASSES)) | {255} and len(values) > 2
    assert abs(float(batch['image'].mean())) < 2  # normalised, not 0..255


def take(dataset: tf.data.Dataset, count: int) -> list[dict[str, np.ndarray]]:
    return list(pipeline.as_numpy(dataset.take(count)))


def test_train_order_is_a_function_of_seed_and_step(small_data):
    config = data_config(small_data)
    straight = take(pipeline.train_dataset(config), 5)
    # Resuming at step 3 reads what an uninterrupted run reads at steps 3 and 4.
    resumed = take(pipeline.train_dataset(config, start_step=3), 2)
    for a, b in zip(straight[3:], resumed, strict=True):
        np.testing.assert_array_equal(a['image'], b['image'])
        np.testing.assert_array_equal(a['label'], b['label'])
    # Two processes read the two halves of the same global batches.
    halves = [take(pipeline.train_dataset(config, process_index=p, process_count=2), 5)
              for p in range(2)]
    for step in range(5):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][step]['label'], halves[1][step]['label']]),
            straight[step]['label'])
    # Another seed gives other batches; epochs are reshuffled (6 examples, 4 per step).
    config.seed = 1
    other = take(pipeline.train_dataset(config), 1)[0]
    assert not np.array_equal(other['label'], straight[0]['label'])


def test_eval_yields_every_image_once_with_a_mask_on_the_padded_tail(small_data):
    config = data_config(small_data)
    expected = set(cityscapes.folder_files(small_data, 'validation')[0])
    batches = list(pipeline.build_input(config, 'validation'))
    assert [b['mask'].tolist() for b in batches] == [[True, True], [True, True], [True, False]]
    seen = [i.decode() for b in batches for i, m in zip(b['image_id'], b['mask'], strict=True) if m]
    assert sorted(seen) == sorted(expected)
    assert batches[0]['image'].shape == (2, 64, 128, 3)
    # Two processes: disjoint shards covering the split, the same number of batches each.
    shards = [list(pipeline.as_numpy(pipeline.eval_dataset(
        config, 'validation', process_index=p, process_count=2))) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    ids = [{i.decode() for b in shard for i, m in zip(b['image_id'], b['mask'], strict=True) if m}
           for shard in shards]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == expected


def test_class_pixel_counts_match_the_label_files_and_are_cached(small_data, monkeypatch):
    config = data_config(small_data)
    _, _, label_paths = cityscapes.folder_files(small_data, 'train')
    expected = np.zeros(NUM_CLASSES, np.int64)
    for path in label_paths:
        train_ids = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(path))]
        expected += np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
    counts = pipeline.class_pixel_counts(config)
    np.testing.assert_array_equal(counts, expected)
    cache = os.path.join(small_data, 'seg_jax_class_counts_train.json')
    assert json.load(open(cache))['counts'] == expected.tolist()

    def fail(split):
        raise AssertionError('counted again instead of reading the cache')

    monkeypatch.setattr(pipeline, '_count_pixels', fail)
    np.testing.assert_array_equal(pipeline.class_pixel_counts(config), expected)


def test_synthetic_source_generates_on_first_use_then_reuses(tmp_path):
    config = data_config(str(tmp_path / 'generated'))
    config.data.source = 'synthetic'
    config.data.synthetic.update(dict(num_train=2, num_val=1, num_test=1, height=64, width=128))
    split = sources.open_split(config.data, 'train')
    assert split.size == 2 and split.source == 'synthetic'
    stamp = os.path.getmtime(cityscapes.folder_files(str(tmp_path / 'generated'), 'train')[1][0])
    sources.open_split(config.data, 'validation')
    assert os.path.getmtime(
        cityscapes.folder_files(str(tmp_path / 'generated'), 'train')[1][0]) == stamp


def write_pair(root, split, image, label, city='aachen', image_id='aachen_000000_000019'):
    for folder, suffix, array in (('leftImg8bit', 'leftImg8bit', image),
                                  ('gtFine', 'gtFine_labelIds', label)):
        if array is None:
            continue
        path = root / folder / split / city / f'{image_id}_{suffix}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return root / 'leftImg8bit' / split / city / f'{image_id}_leftImg8bit.png'


def test_missing_data_names_what_is_missing_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match='cityscapes-dataset.com') as error:
        sources.open_split(data_config(str(tmp_path / 'nowhere')).data, 'train')
    assert 'nowhere' in str(error.value)
    config = data_config(str(tmp_path))
    config.data.source = 'tfds'
    config.data.manual_dir = str(tmp_path / 'zips')
    config.data.tfds_dir = str(tmp_path / 'tfds')
    with pytest.raises(DataError, match='leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip'):
        sources.open_split(config.data, 'train')
    config.data.source = 'folder'
    config.data.dir = None
    with pytest.raises(DataError, match='needs config.data.dir'):
        sources.open_split(config.data, 'train')
    config.data.source = 'kaggle'
    with pytest.raises(DataError, match="'synthetic'"):
        sources.open_split(config.data, 'train')


def test_missing_label_file_is_named(tmp_path):
    image = write_pair(tmp_path, 'train', np.zeros((8, 8, 3), np.uint8), None)
    with pytest.raises(DataError, match='aachen_000000_000019_gtFine_labelIds.png') as error:
        cityscapes.folder_split(str(tmp_path), 'train')
    assert str(image) in str(error.value)


@pytest.mark.parametrize('label,message', [
    (np.full((8, 10), 7, np.uint8), 'different sizes'),
    (np.full((8, 8), 40, np.uint8), 'outside the Cityscapes label ids'),
])
def test_malformed_pairs_are_errors_that_name_the_file(tmp_path, label, message):
    write_pair(tmp_path, 'val', np.zeros((8, 8, 3), np.uint8), label)
    config = data_config(str(tmp_path))
    config.eval.batch_size = 1
    with pytest.raises(DataError, match=message) as error:
        list(pipeline.build_input(config, 'validation'))
    assert 'aachen_000000_000019' in str(error.value)


def test_batch_sizes_must_split_evenly_over_processes(small_data):
    config = data_config(small_data)
    config.global_batch_size = 3
    with pytest.raises(ConfigError, match='global_batch_size=3'):
        pipeline.train_dataset(config, process_count=2)
