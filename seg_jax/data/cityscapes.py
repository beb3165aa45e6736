"""Where Cityscapes examples come from: the TFDS builder, an extracted folder, or the generator.

Every source gives a ``Split``: ``size`` examples addressable by index, decoded in the tf.data
graph into ``{'image': uint8 HxWx3, 'label': uint8 HxW label ids, 'image_id': string}``.
Random access by index (rather than a stream) is what lets the pipeline make the data order a
pure function of (seed, position): resuming at step N reads exactly what an uninterrupted run
would have read, on any number of hosts.

* ``'folder'``: the extracted ``leftImg8bit/`` and ``gtFine/`` trees, read directly.
* ``'tfds'``: ``cityscapes/semantic_segmentation`` built from the two official zips, stored as
  ArrayRecord so that it can be read by index.
* ``'synthetic'``: the procedural Cityscapes of ``seg_jax.data.synthetic``, generated on first use
  and then read as ``'folder'``.
"""

import dataclasses
import glob
import os
from typing import Callable

import ml_collections
import tensorflow as tf

from seg_jax.data.labels import NUM_LABEL_IDS
from seg_jax.errors import DataError
from seg_jax.files import folder_lock

# seg_jax / TFDS split names -> Cityscapes folder names.
SPLIT_FOLDERS = {'train': 'train', 'validation': 'val', 'test': 'test'}
ZIPS = ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip')
TFDS_NAME = 'cityscapes/semantic_segmentation'
HOW_TO_GET_CITYSCAPES = (
    'Cityscapes needs a (free) registered login: download leftImg8bit_trainvaltest.zip and '
    'gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/ . Or train on '
    'the synthetic Cityscapes, which needs nothing: --config.data.source=synthetic.')


@dataclasses.dataclass(frozen=True)
class Split:
    """``size`` examples of one split; ``read(index)`` decodes one inside a tf.data graph.

    ``location`` is the folder the data lives in, where derived files (class counts) are cached.
    """
    source: str
    split: str
    size: int
    read: Callable[[tf.Tensor], dict[str, tf.Tensor]]
    location: str


def _split_folder(split: str) -> str:
    if split not in SPLIT_FOLDERS:
        raise DataError(f'Unknown split {split!r}; use one of {sorted(SPLIT_FOLDERS)}.')
    return SPLIT_FOLDERS[split]


def decode_example(image_png: tf.Tensor, label_png: tf.Tensor, name: tf.Tensor
                   ) -> dict[str, tf.Tensor]:
    """Decodes one image/label pair and checks it, naming the file in any error."""
    image = tf.io.decode_png(image_png, channels=3)
    label = tf.io.decode_png(label_png, channels=1)[..., 0]
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label)[:2]))
    in_table = tf.reduce_max(label) < NUM_LABEL_IDS
    checks = [
        tf.debugging.Assert(same_size, ['image and label have different sizes:', name,
                                        tf.shape(image)[:2], tf.shape(label)[:2]]),
        tf.debugging.Assert(in_table, ['label holds values outside the Cityscapes label ids '
                                       f'0..{NUM_LABEL_IDS - 1}:', name, tf.reduce_max(label)]),
    ]
    with tf.control_dependencies(checks):
        return {'image': tf.identity(image), 'label': tf.identity(label), 'image_id': name}


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
        raise DataError(f'{image_dir} holds no */*_leftImg8bit.png images; the extraction of '
                        f'leftImg8bit_trainvaltest.zip looks incomplete. {HOW_TO_GET_CITYSCAPES}')
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


def folder_split(root: str, split: str, source: str = 'folder') -> Split:
    image_ids, image_paths, label_paths = folder_files(root, split)
    ids, images, labels = (tf.constant(x) for x in (image_ids, image_paths, label_paths))

    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
        image_path, label_path = tf.gather(images, index), tf.gather(labels, index)
        return decode_example(tf.io.read_file(image_path), tf.io.read_file(label_path),
                              tf.gather(ids, index))

    return Split(source, split, len(image_ids), read, os.path.expanduser(root))


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
        missing = [z for z in ZIPS if not os.path.isfile(os.path.join(manual_dir, z))]
        if missing:
            raise DataError(f'The TFDS Cityscapes build needs {" and ".join(missing)} in '
                            f'{manual_dir} (config.data.manual_dir). {HOW_TO_GET_CITYSCAPES}')
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def tfds_split(data: ml_collections.ConfigDict, split: str) -> Split:
    import tensorflow_datasets as tfds
    _split_folder(split)
    skip = tfds.decode.SkipDecoding()
    builder = tfds_builder(data)
    records = builder.as_data_source(
        split, decoders={'image_left': skip, 'segmentation_label': skip})

    def fetch(index):
        record = records[int(index)]
        return record['image_left'], record['segmentation_label'], record['image_id']

    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
        image_png, label_png, image_id = tf.py_function(
            fetch, [index], [tf.string, tf.string, tf.string])
        return decode_example(image_png, label_png, image_id)

    return Split('tfds', split, len(records), read, builder.data_dir)


def synthetic_dir(data: ml_collections.ConfigDict) -> str:
    """Where the synthetic Cityscapes lives: ``config.data.dir`` or a cache folder per setting."""
    if data.dir:
        return os.path.expanduser(data.dir)
    s = data.synthetic
    name = f'{s.height}x{s.width}_seed{s.seed}_{s.num_train}-{s.num_val}-{s.num_test}'
    return os.path.join(os.path.expanduser('~'), '.cache', 'seg_jax', 'synthetic_cityscapes', name)


def synthetic_split(data: ml_collections.ConfigDict, split: str) -> Split:
    from seg_jax.data import synthetic
    root = synthetic_dir(data)
    s = data.synthetic
    synthetic.generate(root, num_train=s.num_train, num_val=s.num_val, num_test=s.num_test,
                       height=s.height, width=s.width, seed=s.seed)
    return folder_split(root, split, source='synthetic')


def _folder_source(data: ml_collections.ConfigDict, split: str) -> Split:
    if not data.dir:
        raise DataError('config.data.source=folder needs config.data.dir: the folder holding '
                        f'the extracted leftImg8bit/ and gtFine/. {HOW_TO_GET_CITYSCAPES}')
    return folder_split(data.dir, split)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict, str], Split]] = {
    'folder': _folder_source,
    'tfds': tfds_split,
    'synthetic': synthetic_split,
}


def open_split(data: ml_collections.ConfigDict, split: str) -> Split:
    """The ``split`` of the source ``config.data.source`` names."""
    if data.source not in SOURCES:
        raise DataError(f'config.data.source={data.source!r} is not known; use one of '
                        f'{sorted(SOURCES)}.')
    return SOURCES[data.source](data, split)
