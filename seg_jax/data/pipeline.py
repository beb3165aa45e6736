"""tf.data pipelines: augmented training batches, complete evaluation batches, class counts.

Training order is a pure function of (config.seed, position): the example at global position
``k`` (step ``k // global_batch_size``) is example ``index_shuffle(k mod N)`` of epoch
``k // N``, augmented with a seed folded from ``k``. A host reads only its slice of every global
batch, so any number of hosts together read what one host would, and a run resumed at
``start_step`` continues exactly where an uninterrupted run would be, without replaying data.

Bad examples keep that property: a malformed file stops the pipeline with a DataError naming it
(``named_data_errors``), or, with ``config.data.skip_bad_examples``, its pair stands in its
position as an all-void placeholder (``cityscapes.decode_example``) that adds nothing to the loss
and, masked out, nothing to evaluation, while the host logs it with a running count
(``log_skipped``). Dropping it instead would shift every later position, and give processes
different numbers of evaluation batches.
"""

import contextlib
import json
import logging
import os
import re
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from seg_jax.data import augment, crops, pairs
from seg_jax.data.cityscapes import BAD_EXAMPLE, FIX_BAD_EXAMPLE
from seg_jax.data.sources import open_split
from seg_jax.data.split import Split
from seg_jax.data.classes import CITYSCAPES, ClassTable
from seg_jax.data.labels import IGNORE_LABEL
from seg_jax.errors import ConfigError, DataError, first_few
from seg_jax.files import folder_lock, write_atomically

log = logging.getLogger(__name__)

SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1
COUNTS_FILE = 'seg_jax_class_counts_{split}.json'

# The functions mapped over the datasets use TensorFlow's control flow directly (tf.cond,
# tf.while_loop; Python branches only on config values), so tf.data traces them as written.
# Autograph's source conversion would change nothing in the graph and cost seconds per pipeline
# (5 of the 6 seconds a tiny training spent building its input).
_as_written = tf.autograph.experimental.do_not_convert


def to_train_ids(example: dict[str, tf.Tensor], table: ClassTable) -> tf.Tensor:
    """An example's stored label values -> train ids by its class table, void -> 255 (uint8);
    all void where the example has a problem (a skipped bad pair's stand-in)."""
    train_ids = tf.gather(tf.constant(table.value_to_train_id),
                          tf.cast(example['label'], tf.int32))
    return tf.where(example['problem'] == '', train_ids, tf.constant(IGNORE_LABEL, tf.uint8))


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    return (jax.process_index() if process_index is None else process_index,
            jax.process_count() if process_count is None else process_count)


def per_process_batch(global_batch: int, process_count: int, what: str) -> int:
    """Each process's share of a global batch. A run's config was checked against the devices
    (``seg_jax.config_checks``), which divides it over the processes too; this guards the
    datasets' own callers, which name the process count themselves."""
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
    """Endless host-local training batches ``{'image': f32 BxHxWx3, 'label': i32 BxHxW,
    'image_id': string B, 'problem': string B}`` ('' where the example is good)."""
    return _train_dataset(config, open_split(config.data, 'train'), start_step,
                          *_processes(process_index, process_count))


def _train_dataset(config: ml_collections.ConfigDict, split: Split, start_step: int,
                   process_index: int, process_count: int) -> tf.data.Dataset:
    host_batch = per_process_batch(config.global_batch_size, process_count,
                                   'config.global_batch_size')
    data, size = config.data, split.size
    options = augment.train_options(data)
    # A run checked these with its config already; the dataset's own callers get the same
    # ConfigError here, not tf.data's StagingError from inside the tracing of ``load``.
    augment.check_train_options(**options)

    def load(host_position: tf.Tensor) -> dict[str, tf.Tensor]:
        step, slot = host_position // host_batch, host_position % host_batch
        position = step * config.global_batch_size + process_index * host_batch + slot
        index = tf.random.experimental.index_shuffle(
            position % size, _stream_seed(config.seed, SHUFFLE_STREAM, position // size),
            size - 1)
        example = split.read(index)
        image, label = augment.train_transform(
            example['image'], to_train_ids(example, split.classes),
            _stream_seed(config.seed, AUGMENT_STREAM, position), flip=data.flip, **options)
        return {'image': image, 'label': label, 'image_id': example['image_id'],
                'problem': example['problem']}

    return (tf.data.Dataset.range(start_step * host_batch, np.iinfo(np.int64).max)
            .map(_as_written(load), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(host_batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def eval_dataset(config: ml_collections.ConfigDict, split_name: str, *,
                 process_index: int | None = None,
                 process_count: int | None = None) -> tf.data.Dataset:
    """Every example of the split exactly once, at full resolution, in a fixed order.

    Process ``p`` of ``P`` reads examples ``p, p + P, p + 2P, ...``. Every process yields the
    same number of batches (a multi-host step needs them all); slots past the end repeat
    example 0 with ``mask`` False, so metrics count each real example exactly once. A skipped
    bad example (its placeholder) has ``mask`` False too; its ``'problem'`` says why, and is ''
    for padding, which is no occurrence of example 0.
    """
    return _eval_dataset(config, open_split(config.data, split_name),
                         *_processes(process_index, process_count))


def _eval_dataset(config: ml_collections.ConfigDict, split: Split, process_index: int,
                  process_count: int) -> tf.data.Dataset:
    host_batch = per_process_batch(config.eval.batch_size, process_count,
                                   'config.eval.batch_size')
    per_process = -(-split.size // process_count)
    num_batches = -(-per_process // host_batch)

    def load(row: tf.Tensor) -> dict[str, tf.Tensor]:
        index = process_index + row * process_count
        valid = index < split.size
        example = split.read(tf.where(valid, index, 0))
        image, label = augment.eval_transform(example['image'],
                                              to_train_ids(example, split.classes),
                                              scale=config.data.eval_scale,
                                              canvas=config.data.eval_size)
        problem = tf.where(valid, example['problem'], '')
        return {'image': image, 'label': label, 'mask': valid & (problem == ''),
                'image_id': example['image_id'], 'problem': problem}

    return (tf.data.Dataset.range(num_batches * host_batch)
            .map(_as_written(load), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(host_batch)
            .prefetch(tf.data.AUTOTUNE))


def _what_tf_said(error: tf.errors.OpError) -> str:
    """The first line of a tf error's message, without tf.data's function and iterator names."""
    first_line = error.message.strip().split('\n')[0]
    first_line = re.sub(r'^\{\{function_node [^}]*\}\}\s*', '', first_line)
    first_line = re.sub(r'^Error in user-defined function .*? Iterator::\S+: ', '', first_line)
    return re.sub(r'\s*\[Op:\w+\].*$', '', first_line).strip()


def _files_of_size(files: tuple[str, ...], size: int) -> list[str]:
    """The ``files`` of exactly ``size`` bytes: a stat each, cheap beside reading them."""
    found = []
    for path in files:
        try:
            if os.stat(path).st_size == size:
                found.append(path)
        except OSError:
            continue  # gone since the split was listed: not the file that was decoded
    return found


def _undecodable(said: str, files: tuple[str, ...]) -> str:
    """The message for a file that passed the cheap checks and then failed to decode."""
    size = re.search(r'size (\d+)', said)
    candidates = _files_of_size(files, int(size.group(1))) if size else []
    if len(candidates) == 1:
        which = f'It is {candidates[0]}, the split\'s only file of that size. '
    elif candidates:
        which = f'It is one of the files of that size: {first_few(candidates, separator=" or ")}. '
    elif size:
        which = (f'tf names it only by its size, {size.group(1)} bytes; look for the image or '
                 'label PNG of that size. ')
    else:
        which = ''
    return (f'An image or label could not be decoded ({said}). It starts and ends like its '
            f'format, so its data is damaged inside (a bit error, say). {which}Re-extract (or '
            're-download) that file from the data set\'s archives (Cityscapes: its zips), or '
            'remove the pair; '
            'config.data.skip_bad_examples cannot skip it, since only decoding finds the damage '
            'and the decoder\'s error stops the tf.data pipeline.')


def describe_data_error(error: tf.errors.OpError, files: tuple[str, ...] = ()) -> str | None:
    """What a tf error from reading a split means and what to do, or None for an error that
    is no fault of the data (left as it is, so programming errors stay visible).

    ``files`` (``Split.files``) let a decode error that names only a byte size name its file.
    """
    said = _what_tf_said(error)
    if isinstance(error, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError)):
        return (f'A data file could not be read ({said}): it was there when the split was '
                'listed and has since been moved, deleted or made unreadable. Restore it (for '
                'Cityscapes, re-extract it from the zips) or remove the pair, and start again; '
                'config.data.skip_bad_examples cannot skip a file that cannot be read.')
    if not isinstance(error, tf.errors.InvalidArgumentError):
        return None
    for marker, fix in ((BAD_EXAMPLE, FIX_BAD_EXAMPLE), (pairs.BAD_PAIR, pairs.FIX_BAD_PAIR)):
        failed_check = re.search(rf'\[{re.escape(marker)}\] \[(.*)\]', error.message)
        if failed_check:
            return f'{marker} {failed_check.group(1)}. {fix}'
    if any(op in error.message for op in ('DecodePng', 'DecodeImage', 'DecodeJpeg')):
        return _undecodable(said, files)
    if 'Cannot add tensor to the batch' in said or 'Cannot batch tensors' in said:
        return (f'An evaluation batch mixes images of different sizes ({said}). Evaluation '
                'batches full images, so every image of a split must have the same size: '
                'set config.data.eval_size to a canvas that holds them (data sets of many '
                'sizes), or resize or remove the odd one out. (A skipped Cityscapes pair whose '
                'image and label both lack a PNG header stands in as 1x1: re-extract it from '
                'the zips.)')
    return None


@contextlib.contextmanager
def named_data_errors(split: Split | None = None) -> Iterator[None]:
    """Turns a tf error caused by the data (``describe_data_error``) into a DataError; the
    ``split``'s files let it name a file that tf identifies only by size."""
    try:
        yield
    except tf.errors.OpError as error:
        message = describe_data_error(error, split.files if split else ())
        if message is None:
            raise
        raise DataError(message) from None


def log_skipped(problems: np.ndarray, skipped_so_far: int) -> int:
    """Logs each skipped bad example (a non-empty problem) with the running count; returns the
    new count. Once per occurrence: a bad example drawn again in a later epoch is logged again."""
    for problem in np.ravel(problems):
        if problem:
            skipped_so_far += 1
            log.warning('Skipped a bad example (skipped %d bad examples so far): %s. It '
                        'stands in as an all-void example that counts in no loss or metric; '
                        'restore that file (Cityscapes: re-extract it from the zips), or remove '
                        'the pair, to use it.', skipped_so_far, problem.decode())
    return skipped_so_far


def as_numpy(dataset: tf.data.Dataset, split: Split | None = None
             ) -> Iterator[dict[str, np.ndarray]]:
    """Numpy batches; a malformed file becomes a DataError that names it (using ``split``'s
    files where tf gives only a byte size), and a skipped one is logged and counted, its
    ``'problem'`` field taken out of the batch (``mask``/void labels already account for it)."""
    iterator = dataset.as_numpy_iterator()
    skipped = 0
    while True:
        with named_data_errors(split):
            batch = next(iterator, None)
        if batch is None:
            return
        skipped = log_skipped(batch.pop('problem', ()), skipped)
        yield batch


def image_size(split: Split) -> tuple[int, int]:
    """(height, width) of the split's first image, decoded once (Cityscapes images share one
    size; of other data sets, it stands for the rest), for checks of the config against the
    data before anything is compiled."""
    with named_data_errors(split):
        image = split.read(tf.constant(0, tf.int64))['image']
    return tuple(int(side) for side in image.shape[:2])


def open_training_split(config: ml_collections.ConfigDict) -> Split:
    """The training split, opened once for the whole run, refused when the training crop is
    larger than its images even at the largest rescale factor."""
    split = open_split(config.data, 'train')
    size = image_size(split)
    if config.data.base_size is not None:  # the crop is taken from the image fitted to it
        factor = augment.base_scale(size, config.data.base_size)
        size = tuple(round(side * factor) for side in size)
    crops.check_crop_fits_images(config.data.crop_size, config.data.scale_range, size)
    return split


def build_input(config: ml_collections.ConfigDict, split: str | Split, *,
                start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Host-local numpy batches: endless augmented crops for 'train', else one eval pass. A
    split already opened (``open_split``) is read as it is, without listing it again."""
    opened = split if isinstance(split, Split) else open_split(config.data, split)
    processes = _processes(None, None)
    if opened.split == 'train':
        return as_numpy(_train_dataset(config, opened, start_step, *processes), opened)
    return as_numpy(_eval_dataset(config, opened, *processes), opened)


def _count_pixels(split: Split) -> np.ndarray:
    """Pixels per train id (0..C-1) and void (index C) over the split, in one pass."""
    num_classes = split.classes.num_classes

    def histogram(index: tf.Tensor) -> tf.Tensor:
        train_ids = tf.cast(to_train_ids(split.read(index), split.classes), tf.int32)
        train_ids = tf.where(train_ids == IGNORE_LABEL, num_classes, train_ids)
        return tf.math.bincount(tf.reshape(train_ids, [-1]), minlength=num_classes + 1,
                                maxlength=num_classes + 1, dtype=tf.int64)

    dataset = tf.data.Dataset.range(split.size).map(_as_written(histogram),
                                                    num_parallel_calls=tf.data.AUTOTUNE)
    total = dataset.reduce(tf.zeros(num_classes + 1, tf.int64), lambda a, b: a + b)
    return total.numpy()


def _values_key(table: ClassTable) -> list[list[int]]:
    """The label values of each class, as the counts cache records them."""
    return [list(values) for values in table.values]


def class_pixel_counts(config: ml_collections.ConfigDict, split: str | Split = 'train'
                       ) -> np.ndarray:
    """Labelled pixels per class (int64, one per class of the table) of a split, for
    class-weighted losses.

    Counted once and cached as JSON beside the data; the cache is reused while the split has
    the same number of examples and class table (names and values). If the data folder is read-only the counts are not cached.
    Processes counting the same folder at once take turns, so only the first one counts.
    With ``config.data.skip_bad_examples`` a bad example counts as void pixels (its placeholder).
    """
    split = split if isinstance(split, Split) else open_split(config.data, split)
    names = split.classes.names
    path = os.path.join(split.location, COUNTS_FILE.format(split=split.split))
    # The processes of a job sharing the data folder: one counts, the others reuse its counts.
    with folder_lock(split.location):
        if os.path.isfile(path):
            with open(path) as f:
                cached = json.load(f)
            # Counts written before class tables existed are Cityscapes'.
            cached_values = cached.get('class_values', _values_key(CITYSCAPES))
            if (cached.get('num_examples') == split.size and cached.get('source') == split.source
                    and cached.get('class_names') == list(names)
                    and cached_values == _values_key(split.classes)):
                return np.asarray(cached['counts'], np.int64)
        with named_data_errors(split):
            counts = _count_pixels(split)
        record = {'source': split.source, 'split': split.split, 'num_examples': split.size,
                  'class_names': names, 'class_values': _values_key(split.classes),
                  'counts': counts[:len(names)].tolist(),
                  'void': int(counts[len(names)])}
        try:
            write_atomically(path, json.dumps(record).encode())
        except OSError:
            pass  # a read-only data folder: the counts are simply recomputed next time
    return counts[:len(names)]
