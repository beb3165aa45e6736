"""Data sets other than Cityscapes: folders of images beside folders of label PNGs.

Three sources read such folders, each in its real layout, under ``config.data.dir``:

* ``'pairs'``: any data set. Images and labels are matched by file name (stem) in the folders
  ``config.data.pairs`` names per split (``{split}`` is replaced by the split's folder name),
  either globbed or listed in a split file of stems.
* ``'voc'``: Pascal VOC 2012 (the ``VOC2012`` folder): ``JPEGImages/*.jpg``,
  ``SegmentationClass/*.png`` palette PNGs, ``ImageSets/Segmentation/{train,val}.txt``. With
  ``config.data.voc_aug`` training also reads SBD's augmented set as mmsegmentation's converter
  writes it (``SegmentationClassAug/*.png`` and ``ImageSets/Segmentation/aug.txt``).
* ``'ade20k'``: ADE20K SceneParsing (``ADEChallengeData2016``, or the folder that holds it):
  ``images/{training,validation}/*.jpg`` and ``annotations/{...}/*.png``.

Labels are read as their stored values: a greyscale PNG's grey levels, a palette PNG's indices
(not its colours: VOC's PNGs are palette images whose indices are the classes). The class table
(``seg_jax.data.classes``) maps values to train ids. A colour (RGB) label, a 16-bit label and
a value the table does not know are errors that name the file, before training
(``check_splits``) and again wherever a file is read.
"""

import concurrent.futures
import dataclasses
import glob
import io
import logging
import os
import string
from collections.abc import Mapping

import ml_collections
import numpy as np
import tensorflow as tf
from PIL import Image

from seg_jax.data.cityscapes import first_problem, size_text
from seg_jax.data.classes import ClassTable
from seg_jax.data.split import Split
from seg_jax.errors import ConfigError, DataError, first_few

log = logging.getLogger(__name__)

IMAGE_SIGNATURES = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n')  # JPEG, PNG
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
PNG_END = b'IEND\xaeB`\x82'  # the last chunk of every PNG
JPEG_END = b'\xff\xd9'  # JPEG's end-of-image marker; some cameras append a few bytes after it
JPEG_TAIL = 4096  # how far from the end of a JPEG its end marker is looked for
# Leads the message of a pair's failed check, so pipeline.named_data_errors knows it.
BAD_PAIR = 'Bad example:'
FIX_BAD_PAIR = ('Replace or remove that pair, or set --config.data.skip_bad_examples=True to '
                'skip such examples.')


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one part of a split lives, relative to the data set's root.

    ``images`` / ``labels`` are folders and ``split_list`` a file of stems (empty: every image
    in the folder), each with ``{split}`` standing for ``split_names[split]``.
    """
    images: str
    labels: str
    split_names: Mapping[str, str]
    image_suffix: str = '.jpg'
    label_suffix: str = '.png'
    split_list: str = ''


VOC = Layout('JPEGImages', 'SegmentationClass', {'train': 'train', 'validation': 'val'},
             split_list='ImageSets/Segmentation/{split}.txt')
VOC_AUG = Layout('JPEGImages', 'SegmentationClassAug', {'train': 'aug'},
                 split_list='ImageSets/Segmentation/{split}.txt')
ADE20K = Layout('images/{split}', 'annotations/{split}',
                {'train': 'training', 'validation': 'validation'})


def layout_of(pairs: ml_collections.ConfigDict) -> Layout:
    """The ``'pairs'`` source's layout from ``config.data.pairs``, checked: folder and list
    paths may hold no placeholder but ``{split}``, and the suffixes must say what is read."""
    for field in ('images', 'labels', 'split_list'):
        names = {name for _, name, _, _ in string.Formatter().parse(pairs[field] or '')
                 if name is not None}
        if names - {'split'}:
            raise ConfigError(f'config.data.pairs.{field}={pairs[field]!r} has the placeholder(s) '
                              f'{sorted(names - {"split"})}; only {{split}} is replaced (by '
                              'the split\'s folder name).')
    if pairs.image_suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f'config.data.pairs.image_suffix={pairs.image_suffix!r}: images must be '
                          f'JPEG or PNG files ({", ".join(IMAGE_SUFFIXES)}); convert the others.')
    if not pairs.label_suffix.lower().endswith('.png'):
        raise ConfigError(f'config.data.pairs.label_suffix={pairs.label_suffix!r}: labels must be '
                          'PNG files, e.g. ".png" or "_mask.png".')
    return Layout(pairs.images, pairs.labels, dict(pairs.splits), pairs.image_suffix,
                  pairs.label_suffix, pairs.split_list or '')


def _listed_stems(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def list_pairs(root: str, layout: Layout, split: str) -> tuple[list[str], list[str], list[str]]:
    """(stems, image paths, label paths) of ``split``, sorted by stem; a split with images but
    no labels, or labels but no images, is a DataError naming them."""
    if split not in layout.split_names:
        raise DataError(f'This data set has no split {split!r}: its layout has '
                        f'{sorted(layout.split_names)}.')
    name = layout.split_names[split]
    image_dir = os.path.join(root, layout.images.format(split=name))
    label_dir = os.path.join(root, layout.labels.format(split=name))
    if not os.path.isdir(image_dir):
        raise DataError(f'No images for split {split!r}: {image_dir} does not exist. '
                        'config.data.dir must be the data set\'s root folder (see README, '
                        '"Your own data").')
    if layout.split_list:
        list_file = os.path.join(root, layout.split_list.format(split=name))
        if not os.path.isfile(list_file):
            raise DataError(f'The list of split {split!r}, {list_file}, does not exist.')
        stems = sorted(set(_listed_stems(list_file)))
        image_paths = [os.path.join(image_dir, s + layout.image_suffix) for s in stems]
        missing = [p for p in image_paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f'{len(missing)} images listed in {list_file} are missing: '
                            f'{first_few(missing)}. Restore them, or remove their lines.')
    else:
        image_paths = sorted(glob.glob(os.path.join(glob.escape(image_dir),
                                                    '*' + layout.image_suffix)))
        stems = [os.path.basename(p)[:-len(layout.image_suffix)] for p in image_paths]
    if not stems:
        raise DataError(f'Split {split!r} is empty: {image_dir} holds no *{layout.image_suffix} '
                        'images. Check config.data.dir and the image suffix.')
    label_paths = [os.path.join(label_dir, s + layout.label_suffix) for s in stems]
    unlabelled = [p for p in image_paths if not os.path.isfile(
        os.path.join(label_dir, os.path.basename(p)[:-len(layout.image_suffix)]
                     + layout.label_suffix))]
    if unlabelled:
        raise DataError(f'Split {split!r} has {len(unlabelled)} of {len(stems)} images without '
                        f'a label in {label_dir} (a label is <image name>{layout.label_suffix}): '
                        f'{first_few(unlabelled)}. Add their labels or remove the images.')
    if not layout.split_list:
        labelled = set(stems)
        orphans = sorted(p for p in glob.glob(os.path.join(glob.escape(label_dir),
                                                           '*' + layout.label_suffix))
                         if os.path.basename(p)[:-len(layout.label_suffix)] not in labelled)
        if orphans:
            raise DataError(f'Split {split!r} has {len(orphans)} labels without an image in '
                            f'{image_dir}: {first_few(orphans)}. Add their images or remove '
                            'the labels.')
    return stems, image_paths, label_paths


def voc_pairs(root: str, split: str, aug: bool) -> tuple[list[str], list[str], list[str]]:
    """VOC's split; with ``aug``, training adds SBD's images that VOC's own list lacks."""
    stems, images, labels = list_pairs(root, VOC, split)
    if aug and split == 'train':
        # VOC's own labels win for images in both lists; val images never train.
        known = set(stems) | set(list_pairs(root, VOC, 'validation')[0])
        for stem, image, label in zip(*list_pairs(root, VOC_AUG, split)):
            if stem not in known:
                stems.append(stem)
                images.append(image)
                labels.append(label)
    return stems, images, labels


def ade20k_root(root: str) -> str:
    """``ADEChallengeData2016`` itself, given it or the folder that holds it."""
    inner = os.path.join(root, 'ADEChallengeData2016')
    return inner if os.path.isdir(inner) else root


def label_values(data: bytes, table: ClassTable) -> tuple[np.ndarray, str]:
    """(uint8 HxW stored values, problem) of a label PNG's bytes; the problem ('' when none)
    says what is wrong, without the file's name, which the caller adds."""
    try:
        label = Image.open(io.BytesIO(data))
        label.load()
    except Exception as error:  # PIL raises many types for damaged files
        return np.zeros((1, 1), np.uint8), f'could not be read as an image ({error})'
    bit_depth, colour_type = (data[24], data[25]) if data[12:16] == b'IHDR' else (8, 0)
    if colour_type == 0 and bit_depth < 8:  # PIL scales 1-, 2- and 4-bit grey to 0..255
        return np.zeros((1, 1), np.uint8), (
            f'is a {bit_depth}-bit greyscale PNG, whose values readers scale to 0..255 (so '
            'which value is stored is ambiguous); save it as an 8-bit greyscale PNG')
    if label.mode in ('RGB', 'RGBA'):
        return np.zeros((1, 1), np.uint8), (
            f'is a {label.mode} colour image, but labels must store class values (a greyscale '
            'or palette PNG): convert each colour to its value (the class table\'s colours) '
            'and save it as a greyscale PNG')
    if label.mode not in ('L', 'P', '1', 'LA', 'PA'):
        return np.zeros((1, 1), np.uint8), (
            f'is a {label.mode} image, but labels must be 8-bit greyscale or palette PNGs '
            '(values 0..255); save it as one')
    values = np.asarray(label)
    values = values[..., 0] if values.ndim == 3 else values
    values = values.astype(np.uint8)
    unknown = ~table.known_values[values]
    if unknown.any():
        found, counts = np.unique(values[unknown], return_counts=True)
        listed = ', '.join(f'{v} ({c:,} px)' for v, c in zip(found.tolist(), counts.tolist()))
        return values, (f'holds values {table.describe()} does not know: {listed}. Add them '
                        'to the table (as classes or void), or fix the label')
    return values, ''


def _image_problem(image: tf.Tensor, file: tf.Tensor) -> tf.Tensor:
    head = tf.strings.substr(image, 0, 8)
    is_image = tf.reduce_any([tf.strings.substr(head, 0, len(s)) == s for s in IMAGE_SIGNATURES])
    return first_problem([
        (tf.strings.length(image) == 0, tf.strings.join([file, ' is empty'])),
        (~is_image, tf.strings.join([file, ' is neither a JPEG nor a PNG'])),
    ])


def pair_split(source: str, split: str, files: tuple[list[str], list[str], list[str]],
               location: str, table: ClassTable, data: ml_collections.ConfigDict) -> Split:
    """A ``Split`` reading listed pairs: images decoded by TensorFlow, labels by PIL (the only
    way to keep a palette PNG's indices), every problem naming its file; ``data`` is
    ``config.data`` (``skip_bad_examples``, ``eval_size``)."""
    skip_bad = data.skip_bad_examples
    stems, image_paths, label_paths = files
    ids, images, labels = (tf.constant(x) for x in files)

    def read_label(png: tf.Tensor) -> tuple[np.ndarray, bytes]:
        values, problem = label_values(png.numpy(), table)
        return values, problem.encode()

    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
        image_file, label_file = tf.gather(images, index), tf.gather(labels, index)
        image_bytes = tf.io.read_file(image_file)
        image_problem = _image_problem(image_bytes, image_file)
        image = tf.cond(image_problem == '',
                        lambda: tf.io.decode_image(image_bytes, channels=3,
                                                   expand_animations=False),
                        lambda: tf.zeros([1, 1, 3], tf.uint8))
        label, label_problem = tf.py_function(read_label, [tf.io.read_file(label_file)],
                                              [tf.uint8, tf.string])
        label = tf.ensure_shape(label, [None, None])
        label_problem = tf.ensure_shape(label_problem, [])
        image_size, label_size = tf.shape(image)[:2], tf.shape(label)
        problem = first_problem([
            (image_problem != '', image_problem),
            (label_problem != '', tf.strings.join([label_file, ' ', label_problem])),
            (tf.reduce_any(image_size != label_size),
             tf.strings.join(['image and label have different sizes: ', image_file, ' is ',
                              size_text(image_size), ', ', label_file, ' is ',
                              size_text(label_size)])),
        ])
        if skip_bad:  # a stand-in of the image's size; the pipeline makes its labels void
            image, label = tf.cond(problem == '', lambda: (image, label),
                                   lambda: (image, tf.zeros(tf.shape(image)[:2], tf.uint8)))
        else:
            with tf.control_dependencies([tf.debugging.Assert(problem == '',
                                                              [BAD_PAIR, problem])]):
                image, label = tf.identity(image), tf.identity(label)
        return {'image': image, 'label': label, 'image_id': tf.gather(ids, index),
                'problem': problem}

    opened = Split(source, split, len(stems), read, location,
                   tuple(image_paths + label_paths), classes=table)
    check_split(opened, skip_bad, data.eval_size)
    return opened


def _image_file_problem(path: str) -> str:
    """'' for a file that starts like a JPEG or PNG and ends like one, else what is wrong.

    Checked before training because a truncated image otherwise fails inside TensorFlow's
    decoder, whose error names no file."""
    with open(path, 'rb') as f:
        head = f.read(8)
        f.seek(max(os.path.getsize(path) - JPEG_TAIL, 0))
        tail = f.read()
    if not head:
        return f'{path} is empty'
    if not head.startswith(IMAGE_SIGNATURES):
        return f'{path} is neither a JPEG nor a PNG (what its name says it is)'
    complete = tail.endswith(PNG_END) if head.startswith(IMAGE_SIGNATURES[1]) else (
        JPEG_END in tail)
    return '' if complete else f'{path} is truncated (its end marker is missing)'


def _check_pair(image_path: str, label_path: str, table: ClassTable
                ) -> tuple[str, tuple[int, int] | None]:
    """('' or the problem of one pair, read as the pipeline reads it; the image's size)."""
    with open(label_path, 'rb') as f:
        values, problem = label_values(f.read(), table)
    if problem:
        return f'{label_path} {problem}', None
    problem = _image_file_problem(image_path)
    if problem:
        return problem, None
    with Image.open(image_path) as image:  # the header only: the size without decoding
        width, height = image.size
    if (height, width) != values.shape:
        return (f'image and label have different sizes: {image_path} is {height}x{width}, '
                f'{label_path} is {values.shape[0]}x{values.shape[1]}'), None
    return '', (height, width)


def check_split(split: Split, skip_bad: bool = False,
                eval_size: tuple[int, int] | None = None) -> None:
    """Reads every label of a split (and every image's header and end) once, when it is opened,
    so that a bad pair is refused before anything trains, in one line naming the files and what
    is wrong; with ``skip_bad`` it is logged instead, and the pipeline skips it where it is read.
    An evaluated split of images of several sizes needs ``eval_size`` (the canvas they batch
    on), which is refused here too rather than at the first evaluation."""
    half = len(split.files) // 2  # a pairs split lists its images, then their labels
    pairs = list(zip(split.files[:half], split.files[half:]))
    with concurrent.futures.ThreadPoolExecutor(max(os.cpu_count() or 1, 2)) as pool:
        checked = list(pool.map(lambda pair: _check_pair(*pair, split.classes), pairs))
    problems = [problem for problem, _ in checked if problem]
    if problems:
        message = (f'{len(problems)} of the {len(pairs)} pairs of split {split.split!r} are '
                   f'unusable: {first_few(problems)}.')
        if not skip_bad:
            raise DataError(f'{message} {FIX_BAD_PAIR}')
        log.warning('%s config.data.skip_bad_examples is set: they stand in as all-void '
                    'examples.', message)
    sizes = {size for _, size in checked if size}
    if split.split != 'train' and eval_size is None and len(sizes) > 1:
        largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
        raise DataError(
            f'Split {split.split!r} has images of {len(sizes)} sizes (up to {largest[0]}x'
            f'{largest[1]}), which evaluation cannot batch as they are: set '
            f'--config.data.eval_size="({largest[0]}, {largest[1]})", the canvas they are '
            'padded to (a smaller one shrinks the larger images).')
