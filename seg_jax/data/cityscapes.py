"""Where Cityscapes examples come from: the TFDS builder, an extracted folder, or the generator.

Every source gives a ``Split``: ``size`` examples addressable by index, decoded in the tf.data
graph into ``{'image': uint8 HxWx3, 'label': uint8 HxW label ids, 'image_id': string,
'problem': string}``. Random access by index (rather than a stream) is what lets the pipeline
make the data order a pure function of (seed, position): resuming at step N reads exactly what
an uninterrupted run would have read, on any number of hosts.

Every source decodes with ``decode_example``, which checks each pair with cheap in-graph string
ops (complete PNGs, equal sizes, known label ids) and names the file in its ``'problem'``. By
default a problem stops the pipeline (``pipeline.named_data_errors`` makes it a DataError);
with ``config.data.skip_bad_examples`` the pair is replaced in place by an all-void placeholder,
so no position shifts, and the pipeline logs and counts it.

* ``'folder'``: the extracted ``leftImg8bit/`` and ``gtFine/`` trees, read directly.
* ``'tfds'``: ``cityscapes/semantic_segmentation`` built from the two official zips, stored as
  ArrayRecord so that it can be read by index.
* ``'synthetic'``: the procedural Cityscapes of ``seg_jax.data.synthetic``, generated on first use
  and then read as ``'folder'``.
"""

import glob
import os

import ml_collections
import tensorflow as tf

from seg_jax.data.classes import CITYSCAPES, ClassTable
from seg_jax.data.labels import NUM_LABEL_IDS
from seg_jax.data.split import Split
from seg_jax.errors import DataError
from seg_jax.files import folder_lock

# seg_jax / TFDS split names -> Cityscapes folder names.
SPLIT_FOLDERS = {'train': 'train', 'validation': 'val', 'test': 'test'}
ZIPS = ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip')
TFDS_NAME = 'cityscapes/semantic_segmentation'


def how_to_get(zips: tuple[str, ...] = ZIPS) -> str:
    """Where to download ``zips`` (by default both), for the messages of missing data."""
    return (f'Cityscapes needs a (free) registered login: download {" and ".join(zips)} from '
            'https://www.cityscapes-dataset.com/downloads/ . Or train on the synthetic '
            'Cityscapes, which needs nothing: --config.data.source=synthetic.')


HOW_TO_GET_CITYSCAPES = how_to_get()

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_END = b'\x00\x00\x00\x00IEND\xaeB`\x82'  # the empty IEND chunk, with its CRC, ends every PNG
# Leads the message of decode_example's failed check, so pipeline.named_data_errors knows it.
BAD_EXAMPLE = 'Bad Cityscapes example:'
FIX_BAD_EXAMPLE = (
    'Re-extract (or re-download) that file from the Cityscapes zips (for the TFDS source, '
    'delete its build in config.data.tfds_dir to rebuild it), remove the pair, or set '
    '--config.data.skip_bad_examples=True to skip such examples.')
# A damaged header could declare any size; a placeholder (``_placeholder``) is never larger.
_MAX_PLACEHOLDER_SIDE = 8192


def _split_folder(split: str) -> str:
    if split not in SPLIT_FOLDERS:
        raise DataError(f'Unknown split {split!r}; use one of {sorted(SPLIT_FOLDERS)}.')
    return SPLIT_FOLDERS[split]


def first_problem(checks: list[tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """The message of the first failed ``(failed, message)`` check, or '' when none failed."""
    problem = tf.constant('')
    for failed, message in reversed(checks):
        problem = tf.where(failed, message, problem)
    return problem


def _file_problem(png: tf.Tensor, file: tf.Tensor) -> tf.Tensor:
    """'' for bytes that start and end like a complete PNG, else what is wrong, naming ``file``.

    Checked before decoding because tf.io.decode_png's errors do not name the file, and it
    decodes a JPEG saved as .png without complaint (wrongly, for a label).
    """
    length = tf.strings.length(png)
    starts = tf.strings.substr(png, 0, len(PNG_SIGNATURE)) == PNG_SIGNATURE
    ends = tf.strings.substr(png, tf.maximum(length - len(PNG_END), 0), len(PNG_END)) == PNG_END
    return first_problem([
        (length == 0, tf.strings.join([file, ' is empty'])),
        (~starts, tf.strings.join([file, ' is not a PNG (it does not start with the PNG '
                                         'signature: an HTML page or a JPEG saved as .png?)'])),
        (~ends, tf.strings.join([file, ' is truncated (it does not end with the PNG IEND '
                                       'chunk)'])),
    ])


def _decode_if_whole(png: tf.Tensor, problem: tf.Tensor, channels: int) -> tf.Tensor:
    """The decoded PNG, or an empty 0x0 image when ``problem`` says its bytes are bad."""
    return tf.cond(problem == '', lambda: tf.io.decode_png(png, channels=channels),
                   lambda: tf.zeros([0, 0, channels], tf.uint8))


def size_text(size: tf.Tensor) -> tf.Tensor:
    return tf.strings.reduce_join(tf.strings.as_string(size), separator='x')


def _declared_size(png: tf.Tensor, otherwise: tf.Tensor) -> tf.Tensor:
    """(height, width) from a PNG's IHDR header, which even a truncated PNG keeps, else
    ``otherwise``."""
    header = tf.strings.substr(tf.strings.join([tf.strings.substr(png, 0, 24), bytes(24)]), 0, 24)
    size = tf.io.decode_raw(tf.strings.substr(header, 16, 8), tf.int32, little_endian=False)[::-1]
    readable = (tf.strings.substr(header, 0, 8) == PNG_SIGNATURE) & (
        tf.strings.substr(header, 12, 4) == b'IHDR') & tf.reduce_all(
        (size > 0) & (size <= _MAX_PLACEHOLDER_SIDE))
    return tf.where(readable, size, otherwise)


def _placeholder(image_png: tf.Tensor, label_png: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The all-void stand-in for a bad pair: a zero image and label id 0 ('unlabeled', train id
    255) everywhere, so it adds nothing to a loss or metric.

    It has the pair's size as the image's PNG header declares it (else the label's; 1x1 when
    neither has a header), so that in evaluation it batches with the split's full images.
    """
    size = _declared_size(image_png, _declared_size(label_png, tf.constant([1, 1])))
    return tf.zeros(tf.concat([size, [3]], 0), tf.uint8), tf.zeros(size, tf.uint8)


def decode_example(image_png: tf.Tensor, label_png: tf.Tensor, image_id: tf.Tensor, *,
                   image_file: tf.Tensor, label_file: tf.Tensor, table: ClassTable,
                   skip_bad: bool = False) -> dict[str, tf.Tensor]:
    """Decodes one image/label pair and checks it, naming the file in any problem.

    ``image_file`` and ``label_file`` say where the bytes came from (a path, or the example in
    a TFDS build). The checks: each file is a complete PNG (signature at the start, IEND chunk
    at the end; checked before decoding, which only runs on bytes that pass), image and label
    have the same size, and the label holds only values ``table`` knows (for
    Cityscapes' own table, its label ids 0..33). ``'problem'`` is the
    first failed check's message, '' for a good pair. Strict (``skip_bad`` False), a problem
    fails a ``tf.debugging.Assert`` whose message starts with ``BAD_EXAMPLE``; with
    ``skip_bad`` the pair becomes ``_placeholder``, in the stream's place, and the caller
    reports ``'problem'``.

    A PNG that starts and ends right but is damaged inside (a flipped bit, say: decode_png
    reports "Invalid PNG data") passes these cheap checks: only inflating its data finds the
    damage, and decode_png's error then stops the tf.data pipeline in either mode
    (``pipeline.named_data_errors`` names the file as well as it can).
    """
    image_problem = _file_problem(image_png, image_file)
    label_problem = _file_problem(label_png, label_file)
    image = _decode_if_whole(image_png, image_problem, 3)
    label = _decode_if_whole(label_png, label_problem, 1)[..., 0]
    image_size, label_size = tf.shape(image)[:2], tf.shape(label)
    unknown = ~tf.gather(tf.constant(table.known_values), tf.cast(label, tf.int32))
    largest_unknown = tf.reduce_max(tf.where(unknown, label, tf.zeros_like(label)))
    outside = ((f' holds values outside the Cityscapes label ids 0..{NUM_LABEL_IDS - 1}')
               if table.is_cityscapes else f' holds values {table.describe()} does not know')
    problem = first_problem([
        (image_problem != '', image_problem),
        (label_problem != '', label_problem),
        (tf.reduce_any(image_size != label_size),
         tf.strings.join(['image and label have different sizes: ', image_file, ' is ',
                          size_text(image_size), ', ', label_file, ' is ',
                          size_text(label_size)])),
        (tf.reduce_any(unknown),
         tf.strings.join([label_file, outside, ' (up to ', tf.strings.as_string(largest_unknown),
                          ')'])),
    ])
    if skip_bad:
        image, label = tf.cond(problem == '', lambda: (image, label),
                               lambda: _placeholder(image_png, label_png))
    else:
        with tf.control_dependencies([tf.debugging.Assert(problem == '', [BAD_EXAMPLE, problem])]):
            image, label = tf.identity(image), tf.identity(label)
    return {'image': image, 'label': label, 'image_id': image_id, 'problem': problem}


def folder_files(root: str, split: str) -> tuple[list[str], list[str], list[str]]:
    """(image ids, image paths, label paths) of an extracted Cityscapes split, sorted by id."""
    root = os.path.expanduser(root)
    folder = _split_folder(split)
    image_dir = os.path.join(root, 'leftImg8bit', folder)
    if not os.path.isdir(image_dir):
        raise DataError(f'No Cityscapes images for split {split!r}: {image_dir} does not exist. '
                        f'config.data.dir must hold the extracted leftImg8bit/ and gtFine/ '
                        f'folders. {HOW_TO_GET_CITYSCAPES}')
    image_paths = sorted(glob.glob(os.path.join(image_dir, '*', '*_leftImg8bit.png')))
    if not image_paths:
        raise DataError(f'Split {split!r} is empty: {image_dir} holds no */*_leftImg8bit.png '
                        'images, so the extraction of leftImg8bit_trainvaltest.zip looks '
                        f'incomplete; extract it again into {root}. {HOW_TO_GET_CITYSCAPES}')
    image_ids, label_paths = [], []
    for path in image_paths:
        image_id = os.path.basename(path)[:-len('_leftImg8bit.png')]
        city = os.path.basename(os.path.dirname(path))
        label_path = os.path.join(root, 'gtFine', folder, city, f'{image_id}_gtFine_labelIds.png')
        if not os.path.isfile(label_path):
            raise DataError(f'The label file {label_path} for image {path} is missing. Extract '
                            f'gtFine_trainvaltest.zip into {root} (or remove the image).')
        image_ids.append(image_id)
        label_paths.append(label_path)
    return image_ids, image_paths, label_paths


def folder_split(root: str, split: str, source: str = 'folder', skip_bad: bool = False,
                 table: ClassTable = CITYSCAPES) -> Split:
    """The extracted split under ``root``, its label ids read by ``table`` (by default
    Cityscapes' own); its problems name the image and label paths."""
    image_ids, image_paths, label_paths = folder_files(root, split)
    ids, images, labels = (tf.constant(x) for x in (image_ids, image_paths, label_paths))

    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
        image_path, label_path = tf.gather(images, index), tf.gather(labels, index)
        return decode_example(tf.io.read_file(image_path), tf.io.read_file(label_path),
                              tf.gather(ids, index), image_file=image_path,
                              label_file=label_path, table=table, skip_bad=skip_bad)

    return Split(source, split, len(image_ids), read, os.path.expanduser(root),
                 tuple(image_paths + label_paths), classes=table)


def tfds_builder(data: ml_collections.ConfigDict):
    """The prepared TFDS builder, built from the zips in ``manual_dir`` on first use."""
    import tensorflow_datasets as tfds  # imported here: it is slow and only this source needs it
    builder = tfds.builder(TFDS_NAME, data_dir=data.tfds_dir, file_format='array_record')
    if builder.is_prepared():
        return builder
    # Processes of one job sharing the folder: one builds, the others wait and reuse the build.
    with folder_lock(builder.data_dir_root):
        builder = tfds.builder(TFDS_NAME, data_dir=data.tfds_dir, file_format='array_record')
        if builder.is_prepared():
            return builder
        manual_dir = os.path.expanduser(
            data.manual_dir or os.path.join(builder.data_dir_root, 'downloads', 'manual'))
        missing = tuple(z for z in ZIPS if not os.path.isfile(os.path.join(manual_dir, z)))
        if missing:
            raise DataError(f'The TFDS Cityscapes build needs {" and ".join(missing)} in '
                            f'{manual_dir} (config.data.manual_dir). {how_to_get(missing)}')
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def tfds_split(data: ml_collections.ConfigDict, split: str,
               table: ClassTable = CITYSCAPES) -> Split:
    """The split of the TFDS build, its label ids read by ``table`` (by default Cityscapes'
    own); its problems name the example by image id."""
    import tensorflow_datasets as tfds
    _split_folder(split)
    skip = tfds.decode.SkipDecoding()
    builder = tfds_builder(data)
    records = builder.as_data_source(
        split, decoders={'image_left': skip, 'segmentation_label': skip})
    if not len(records):
        raise DataError(f'Split {split!r} of the TFDS build in {builder.data_dir} is empty; the '
                        'zips it was built from look incomplete. Delete that folder and build '
                        f'again from complete zips. {HOW_TO_GET_CITYSCAPES}')

    def fetch(index):
        record = records[int(index)]
        return record['image_left'], record['segmentation_label'], record['image_id']

    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
        fetched = tf.py_function(fetch, [index], [tf.string, tf.string, tf.string])
        image_png, label_png, image_id = (tf.ensure_shape(x, []) for x in fetched)
        return decode_example(image_png, label_png, image_id,
                              image_file=tf.strings.join(['the image of ', image_id]),
                              label_file=tf.strings.join(['the label of ', image_id]),
                              table=table, skip_bad=data.skip_bad_examples)

    return Split('tfds', split, len(records), read, builder.data_dir, classes=table)
