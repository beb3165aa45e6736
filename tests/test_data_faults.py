"""Data faults, provoked for real on a tiny synthetic Cityscapes: loud and named, or skipped and
counted (config.data.skip_bad_examples) without moving any other example."""

import io
import logging
import os
import shutil
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from seg_jax.data import cityscapes, pipeline, sources, synthetic
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import DataError
from test_data import data_config

HEIGHT, WIDTH = 32, 64
FIX = 'set --config.data.skip_bad_examples=True'


@pytest.fixture(scope='module')
def clean_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('clean')
    synthetic.generate(root, num_train=4, num_val=3, num_test=1, height=HEIGHT, width=WIDTH,
                       seed=5)
    return str(root)


@pytest.fixture
def data(clean_data, tmp_path) -> str:
    """A private copy of the clean data for one test to damage."""
    return shutil.copytree(clean_data, tmp_path / 'cityscapes')


def config_for(root: str, skip: bool = False):
    config = data_config(str(root))
    config.data.crop_size = (HEIGHT, WIDTH)
    config.data.skip_bad_examples = skip
    return config


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def truncate(path: str) -> None:
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])


def garbage(path: str) -> None:
    open(path, 'wb').write(np.random.default_rng(0).bytes(300))


def empty(path: str) -> None:
    open(path, 'wb').close()


def html_page(path: str) -> None:
    open(path, 'wb').write(b'<!DOCTYPE html><html><body>Please log in</body></html>')


def jpeg_renamed(path: str) -> None:
    Image.open(path).convert('RGB').save(path, format='JPEG')


def label_id_40(path: str) -> None:
    open(path, 'wb').write(png_bytes(np.full((HEIGHT, WIDTH), 40, np.uint8)))


def other_size(path: str) -> None:
    open(path, 'wb').write(png_bytes(np.full((HEIGHT, WIDTH + 8), 7, np.uint8)))


def corrupt_inside(path: str) -> None:
    """Flips bytes in the middle of the compressed data: signature and IEND stay intact."""
    data = bytearray(open(path, 'rb').read())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    open(path, 'wb').write(bytes(data))


# (damage, which file of the pair: 0 image / 1 label, words the problem must contain)
FAULTS: dict[str, tuple[Callable[[str], None], int, str]] = {
    'truncated image': (truncate, 0, 'is truncated'),
    'garbage label': (garbage, 1, 'is not a PNG'),
    'empty image': (empty, 0, 'is empty'),
    'html label': (html_page, 1, 'is not a PNG'),
    'jpeg image': (jpeg_renamed, 0, 'is not a PNG'),
    'label id 40': (label_id_40, 1, 'outside the Cityscapes label ids 0..33 (up to 40)'),
    'label of another size': (other_size, 1, 'different sizes'),
}


def damage(root: str, split: str, index: int, fault: str) -> tuple[str, str]:
    """Applies ``fault`` to example ``index`` of ``split``; returns its image id and the path the
    problem must name."""
    ids, images, labels = cityscapes.folder_files(root, split)
    change, which, _ = FAULTS[fault]
    path = (images, labels)[which][index]
    change(path)
    return ids[index], path


def train_batches(root: str, skip: bool, steps: int = 2) -> list[dict[str, np.ndarray]]:
    batches = pipeline.build_input(config_for(root, skip), 'train')
    return [next(batches) for _ in range(steps)]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_a_bad_example_is_a_data_error_naming_the_file_and_the_fix(data, fault):
    _, path = damage(data, 'train', 1, fault)
    with pytest.raises(DataError) as error:
        train_batches(data, skip=False)
    message = str(error.value)
    assert path in message and FAULTS[fault][2] in message and FIX in message
    assert 'Re-extract' in message


@pytest.mark.parametrize('fault', ['truncated image', 'garbage label', 'label id 40',
                                   'label of another size'])
def test_skipped_bad_example_keeps_its_position_as_all_void_and_is_logged(
        clean_data, data, fault, caplog):
    image_id, path = damage(data, 'train', 2, fault)
    clean = train_batches(clean_data, skip=False)
    with caplog.at_level(logging.WARNING):
        skipped = train_batches(data, skip=True)
    assert len(skipped) == len(clean)
    seen = 0
    for good, batch in zip(clean, skipped, strict=True):
        assert 'problem' not in batch
        # The same example at every position: nothing was dropped or moved.
        np.testing.assert_array_equal(good['image_id'], batch['image_id'])
        for row, row_id in enumerate(batch['image_id']):
            if row_id.decode() == image_id:
                seen += 1
                assert (batch['label'][row] == IGNORE_LABEL).all()
            else:
                np.testing.assert_array_equal(good['image'][row], batch['image'][row])
                np.testing.assert_array_equal(good['label'][row], batch['label'][row])
    assert seen == 2  # 4 examples, 4 per step: once in each of the two epochs
    logged = warnings(caplog)
    assert len(logged) == 2 and all(path in m and FAULTS[fault][2] in m for m in logged)
    assert 'skipped 1 bad examples so far' in logged[0]
    assert 'skipped 2 bad examples so far' in logged[1]


# An empty image leaves only the label's header to size the placeholder; a truncated image
# keeps its own; a label of id 40 decodes.
@pytest.mark.parametrize('fault', ['empty image', 'truncated image', 'label id 40'])
def test_skipped_bad_eval_example_is_masked_out_and_logged_once(clean_data, data, fault, caplog):
    # Example 0 also pads the last batch (3 examples, batches of 2); padding is not logged.
    image_id, path = damage(data, 'validation', 0, fault)
    clean = list(pipeline.build_input(config_for(clean_data), 'validation'))
    with caplog.at_level(logging.WARNING):
        skipped = list(pipeline.build_input(config_for(data, skip=True), 'validation'))
    assert len(skipped) == len(clean) == 2
    for good, batch in zip(clean, skipped, strict=True):
        assert 'problem' not in batch
        np.testing.assert_array_equal(good['image_id'], batch['image_id'])
        for row, row_id in enumerate(batch['image_id']):
            if row_id.decode() == image_id:
                assert not batch['mask'][row]
                assert (batch['label'][row] == IGNORE_LABEL).all()
            else:
                assert batch['mask'][row] == good['mask'][row]
                np.testing.assert_array_equal(good['image'][row], batch['image'][row])
                np.testing.assert_array_equal(good['label'][row], batch['label'][row])
    assert sum(int(b['mask'].sum()) for b in skipped) == 2
    logged = warnings(caplog)
    assert len(logged) == 1 and path in logged[0] and FAULTS[fault][2] in logged[0]
    assert 'skipped 1 bad examples so far' in logged[0]


def test_eval_pair_with_both_files_unreadable_is_a_data_error_saying_why_when_skipping(data):
    # With no PNG header to size it, the placeholder is 1x1 and cannot share a batch.
    damage(data, 'validation', 1, 'garbage label')
    garbage(cityscapes.folder_files(data, 'validation')[1][1])
    with pytest.raises(DataError, match='mixes images of different sizes') as error:
        list(pipeline.build_input(config_for(data, skip=True), 'validation'))
    assert 'both lack a PNG header' in str(error.value)


@pytest.mark.parametrize('skip', [False, True])
def test_png_damaged_inside_is_a_data_error_naming_the_file_in_both_modes(data, skip):
    _, images, _ = cityscapes.folder_files(data, 'train')
    corrupt_inside(images[3])
    with pytest.raises(DataError, match='could not be decoded') as error:
        train_batches(data, skip=skip)
    message = str(error.value)
    assert images[3] in message and 'Re-extract' in message
    assert 'skip_bad_examples cannot skip it' in message


def test_file_deleted_after_listing_is_a_data_error_naming_it(data):
    batches = pipeline.build_input(config_for(data, skip=True), 'validation')
    label = cityscapes.folder_files(data, 'validation')[2][1]
    os.remove(label)
    with pytest.raises(DataError, match='could not be read') as error:
        list(batches)
    assert label in str(error.value) and 'Restore it' in str(error.value)


@pytest.mark.parametrize('split,folder', [('train', 'train'), ('validation', 'val')])
def test_empty_split_folder_is_a_data_error_naming_split_and_folder(data, split, folder):
    image_dir = os.path.join(data, 'leftImg8bit', folder)
    shutil.rmtree(image_dir)
    os.makedirs(os.path.join(image_dir, 'aachen'))
    with pytest.raises(DataError, match=f"Split '{split}' is empty") as error:
        pipeline.build_input(config_for(data), split)
    assert image_dir in str(error.value) and 'extract it again' in str(error.value)


class FakeTfdsBuilder:
    """Stands in for a prepared TFDS build, so its reading can be tested without the 1024x2048
    build: ``records`` as ``as_data_source`` gives them with decoding skipped."""

    def __init__(self, records: list[dict[str, bytes]], data_dir: str):
        self.records, self.data_dir = records, data_dir

    def as_data_source(self, split, decoders):
        return self.records


def tfds_config(monkeypatch, tmp_path, records: list[dict[str, bytes]], skip: bool = False):
    monkeypatch.setattr(cityscapes, 'tfds_builder',
                        lambda data: FakeTfdsBuilder(records, str(tmp_path / 'tfds')))
    config = config_for(str(tmp_path), skip)
    config.data.source = 'tfds'
    return config


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_empty_tfds_split_is_a_data_error_naming_split_and_build(monkeypatch, tmp_path, split):
    with pytest.raises(DataError, match=f"Split '{split}' of the TFDS build") as error:
        pipeline.build_input(tfds_config(monkeypatch, tmp_path, []), split)
    assert str(tmp_path / 'tfds') in str(error.value) and 'build again' in str(error.value)


def test_tfds_bad_example_is_named_by_its_image_id(clean_data, monkeypatch, tmp_path, caplog):
    ids, images, labels = cityscapes.folder_files(clean_data, 'train')
    records = [{'image_left': open(image, 'rb').read(),
                'segmentation_label': open(label, 'rb').read(), 'image_id': image_id.encode()}
               for image_id, image, label in zip(ids, images, labels, strict=True)]
    records[1]['segmentation_label'] = records[1]['segmentation_label'][:100]
    with pytest.raises(DataError, match=f'the label of {ids[1]} is truncated'):
        next(pipeline.build_input(tfds_config(monkeypatch, tmp_path, records), 'train'))
    with caplog.at_level(logging.WARNING):
        batch = next(pipeline.build_input(tfds_config(monkeypatch, tmp_path, records, True),
                                          'train'))
    assert ids[1].encode() in batch['image_id'].tolist()
    assert any(f'the label of {ids[1]} is truncated' in m for m in warnings(caplog))


def test_one_missing_zip_is_named_alone(tmp_path):
    manual_dir = tmp_path / 'zips'
    manual_dir.mkdir()
    (manual_dir / 'leftImg8bit_trainvaltest.zip').touch()
    config = config_for(str(tmp_path))
    config.data.source = 'tfds'
    config.data.manual_dir = str(manual_dir)
    config.data.tfds_dir = str(tmp_path / 'tfds')
    with pytest.raises(DataError, match='needs gtFine_trainvaltest.zip in') as error:
        sources.open_split(config.data, 'train')
    assert 'leftImg8bit' not in str(error.value) and 'cityscapes-dataset.com' in str(error.value)
