"""tf.data pipelines: augmented training batches, complete evaluation batches, class counts.

Training order is a pure function of (config.seed, position): the example at global position
``k`` (step ``k // global_batch_size``) is example ``index_shuffle(k mod N)`` of epoch
``k // N``, augmented with a seed folded from ``k``. A host reads only its slice of every global
batch, so any number of hosts together read what one host would, and a run resumed at
``start_step`` continues exactly where an uninterrupted run would be, without replaying data.
"""

import contextlib
import json
import os
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from seg_jax.data import augment
from seg_jax.data.cityscapes import Split, open_split
from seg_jax.data.labels import CLASS_NAMES, IGNORE_LABEL, LABEL_ID_TO_TRAIN_ID, NUM_CLASSES
from seg_jax.errors import ConfigError, DataError
from seg_jax.files import folder_lock, write_atomically

SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1
COUNTS_FILE = 'seg_jax_class_counts_{split}.json'


def to_train_ids(label_ids: tf.Tensor) -> tf.Tensor:
    """Cityscapes label ids -> train ids, void -> 255 (uint8)."""
    return tf.gather(tf.constant(LABEL_ID_TO_TRAIN_ID), tf.cast(label_ids, tf.int32))


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    return (jax.process_index() if process_index is None else process_index,
            jax.process_count() if process_count is None else process_count)


def per_process_batch(global_batch: int, process_count: int, what: str) -> int:
    if global_batch < 1 or global_batch % process_count:
        raise ConfigError(f'{what}={global_batch} must be a positive multiple of the number of '
                          f'processes ({process_count}), so every process gets the same share.')
    return global_batch // process_count


def _stream_seed(seed: int, stream: int, data: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, stream], tf.int64), tf.cast(data, tf.int64))


def train_dataset(config: ml_collections.ConfigDict, *, start_step: int = 0,
                  process_index: int | None = None,
                  process_count: int | None = None) -> tf.data.Dataset:
    """Endless host-local training batches ``{'image': f32 BxHxWx3, 'label': i32 BxHxW}``."""
    process_index, process_count = _processes(process_index, process_count)
    host_batch = per_process_batch(config.global_batch_size, process_count,
                                   'config.global_batch_size')
    split = open_split(config.data, 'train')
    data, size = config.data, split.size

    def load(host_position: tf.Tensor) -> dict[str, tf.Tensor]:
        step, slot = host_position // host_batch, host_position % host_batch
        position = step * config.global_batch_size + process_index * host_batch + slot
        index = tf.random.experimental.index_shuffle(
            position % size, _stream_seed(config.seed, SHUFFLE_STREAM, position // size),
            size - 1)
        example = split.read(index)
        image, label = augment.train_transform(
            example['image'], to_train_ids(example['label']),
            _stream_seed(config.seed, AUGMENT_STREAM, position),
            crop_size=tuple(data.crop_size), scale_range=tuple(data.scale_range),
            rotation_degrees=data.rotation_degrees, flip=data.flip, photometric=data.photometric)
        return {'image': image, 'label': label}

    return (tf.data.Dataset.range(start_step * host_batch, np.iinfo(np.int64).max)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(host_batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def eval_dataset(config: ml_collections.ConfigDict, split_name: str, *,
                 process_index: int | None = None,
                 process_count: int | None = None) -> tf.data.Dataset:
    """Every example of the split exactly once, at full resolution, in a fixed order.

    Process ``p`` of ``P`` reads examples ``p, p + P, p + 2P, ...``. Every process yields the
    same number of batches (a multi-host step needs them all); slots past the end repeat
    example 0 with ``mask`` False, so metrics count each real example exactly once.
    """
    process_index, process_count = _processes(process_index, process_count)
    host_batch = per_process_batch(config.eval.batch_size, process_count,
                                   'config.eval.batch_size')
    split = open_split(config.data, split_name)
    per_process = -(-split.size // process_count)
    num_batches = -(-per_process // host_batch)

    def load(row: tf.Tensor) -> dict[str, tf.Tensor]:
        index = process_index + row * process_count
        valid = index < split.size
        example = split.read(tf.where(valid, index, 0))
        image, label = augment.eval_transform(example['image'], to_train_ids(example['label']),
                                              scale=config.data.eval_scale)
        return {'image': image, 'label': label, 'mask': valid, 'image_id': example['image_id']}

    return (tf.data.Dataset.range(num_batches * host_batch)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(host_batch)
            .prefetch(tf.data.AUTOTUNE))


@contextlib.contextmanager
def named_data_errors() -> Iterator[None]:
    """Turns the failed check of a malformed file (``decode_example``) into a DataError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        raise DataError(f'Bad Cityscapes example: {error.message.strip()}. Fix or remove that '
                        'file.') from None


def as_numpy(dataset: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Numpy batches; a malformed file becomes a DataError that names it."""
    iterator = dataset.as_numpy_iterator()
    while True:
        with named_data_errors():
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def build_input(config: ml_collections.ConfigDict, split: str, *,
                start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Host-local numpy batches: endless augmented crops for 'train', else one eval pass."""
    if split == 'train':
        return as_numpy(train_dataset(config, start_step=start_step))
    return as_numpy(eval_dataset(config, split))


def _count_pixels(split: Split) -> np.ndarray:
    """Pixels per train id (0..18) and void (index 19) over the split, in one pass."""
    def histogram(index: tf.Tensor) -> tf.Tensor:
        train_ids = tf.cast(to_train_ids(split.read(index)['label']), tf.int32)
        train_ids = tf.where(train_ids == IGNORE_LABEL, NUM_CLASSES, train_ids)
        return tf.math.bincount(tf.reshape(train_ids, [-1]), minlength=NUM_CLASSES + 1,
                                maxlength=NUM_CLASSES + 1, dtype=tf.int64)

    dataset = tf.data.Dataset.range(split.size).map(histogram,
                                                    num_parallel_calls=tf.data.AUTOTUNE)
    total = dataset.reduce(tf.zeros(NUM_CLASSES + 1, tf.int64), lambda a, b: a + b)
    return total.numpy()


def class_pixel_counts(config: ml_collections.ConfigDict, split_name: str = 'train'
                       ) -> np.ndarray:
    """Labelled pixels per class (int64, length 19) of a split, for class-weighted losses.

    Counted once and cached as JSON beside the data; the cache is reused while the split has
    the same number of examples. If the data folder is read-only the counts are not cached.
    Processes counting the same folder at once take turns, so only the first one counts.
    """
    split = open_split(config.data, split_name)
    path = os.path.join(split.location, COUNTS_FILE.format(split=split_name))
    # The processes of a job sharing the data folder: one counts, the others reuse its counts.
    with folder_lock(split.location):
        if os.path.isfile(path):
            with open(path) as f:
                cached = json.load(f)
            if cached.get('num_examples') == split.size and cached.get('source') == split.source:
                return np.asarray(cached['counts'], np.int64)
        with named_data_errors():
            counts = _count_pixels(split)
        record = {'source': split.source, 'split': split_name, 'num_examples': split.size,
                  'class_names': CLASS_NAMES, 'counts': counts[:NUM_CLASSES].tolist(),
                  'void': int(counts[NUM_CLASSES])}
        try:
            write_atomically(path, json.dumps(record).encode())
        except OSError:
            pass  # a read-only data folder: the counts are simply recomputed next time
    return counts[:NUM_CLASSES]
