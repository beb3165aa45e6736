"""The synthetic street scenes in the layouts of Pascal VOC 2012 and ADE20K (SceneParsing).

seg_jax's VOC and ADE20K readers must be tested on files laid out and encoded exactly like the
real downloads, which no test machine can fetch. These writers draw ``writer.render_example``'s
scenes and map their Cityscapes label ids by class name onto each data set's values, then write
what the real folders hold: JPEG images of varying sizes, VOC's palette PNGs with void borders
and its split lists (plus, on request, the SBD-augmented ``SegmentationClassAug``), ADE20K's
greyscale PNGs whose value 0 is 'other'.

They follow ``writer.generate``'s rules, and share its code for them: fixed encoder settings,
so the same arguments give byte-identical files; a marker written last, so a finished folder is
reused and anything else (someone's files, an interrupted run, other arguments) is refused,
never overwritten; a folder lock, so the processes of one job write the folder once.
"""

import io
import pathlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from seg_jax.data.classes import ClassTable, class_table, colour_map
from seg_jax.data.labels import LABEL_IDS
from seg_jax.data.synthetic.scene import MIN_HEIGHT, MIN_WIDTH, render_scene
from seg_jax.data.synthetic.writer import (
    GENERATOR_VERSION, SPLITS, check_counts, check_output, render_example, reuse_existing,
    write_marker)
from seg_jax.errors import DataError
from seg_jax.files import folder_lock, png_bytes, write_atomically

# The layouts the synthetic scenes are written in (``config.data.synthetic.layout``).
LAYOUTS = ('cityscapes', 'voc', 'ade20k')
VOC_MARKER = 'synthetic_voc.json'
ADE20K_MARKER = 'synthetic_ade20k.json'
# Bump when what these writers make of a scene changes (mappings, borders, names, encoding), so
# that a folder written by an older version is not reused; the drawing has GENERATOR_VERSION.
LAYOUT_VERSION = 2  # 2: aug.txt lists the training images too
JPEG_OPTIONS = {'quality': 95, 'subsampling': 2, 'optimize': False}  # 2: 4:2:0, as most JPEGs
PNG_LEVEL = 1
# render_example seeds split s with [seed, s, index], s < len(SPLITS): the SBD-augmented
# examples take the next stream, so they are new scenes, not copies of training ones.
AUG_STREAM = len(SPLITS)
# VOC ids are '<year>_<number>': the years cycle like the real ones', and each stream numbers
# from its own block, so ids never collide between train, val and aug.
VOC_ID_START = {'train': 1, 'val': 300_001, 'aug': 600_001}
VOC_ID_BLOCK = 300_000
VOC_PALETTE = [channel for index in range(256) for channel in colour_map(index)]
VOC_BORDER = 255

# Cityscapes class name -> the data set's class name; every other label id is VOC's background
# (value 0) or ADE20K's 'other' (value 0, void).
VOC_FROM_CITYSCAPES = {
    'person': 'person', 'rider': 'person', 'car': 'car', 'truck': 'car', 'bicycle': 'bicycle',
    'motorcycle': 'motorbike', 'bus': 'bus', 'train': 'train'}
ADE20K_FROM_CITYSCAPES = {
    'road': 'road', 'sidewalk': 'sidewalk', 'building': 'building', 'wall': 'wall',
    'fence': 'fence', 'pole': 'pole', 'traffic light': 'traffic light',
    'traffic sign': 'signboard', 'vegetation': 'tree', 'terrain': 'grass', 'sky': 'sky',
    'person': 'person', 'rider': 'person', 'car': 'car', 'truck': 'truck', 'bus': 'bus',
    'motorcycle': 'minibike', 'bicycle': 'bicycle'}


def label_lookup(mapping: dict[str, str], table: ClassTable) -> np.ndarray:
    """Cityscapes label id -> the value of ``table``'s class that ``mapping`` names (its first
    value), for all 256 uint8 ids; unmapped ids -> 0. A name missing on either side raises, so
    a typo or a changed table stops the import instead of silently writing background."""
    lookup = np.zeros(256, np.uint8)
    for cityscapes_name, name in mapping.items():
        if cityscapes_name not in LABEL_IDS:
            raise ValueError(f'{cityscapes_name!r} is not a Cityscapes label name.')
        if name not in table.names:
            raise ValueError(f'{name!r} (for Cityscapes {cityscapes_name!r}) is not a class of '
                             f'{table.describe()}.')
        lookup[LABEL_IDS[cityscapes_name]] = table.values[table.names.index(name)][0]
    return lookup


# Built at import: a wrong name fails here, not in the middle of writing a data set.
VOC_LOOKUP = label_lookup(VOC_FROM_CITYSCAPES, class_table('voc'))
ADE20K_LOOKUP = label_lookup(ADE20K_FROM_CITYSCAPES, class_table('ade20k'))


def example_size(index: int, height: int, width: int) -> tuple[int, int]:
    """Example ``index``'s (height, width): real VOC and ADE20K images differ in size, and a
    reader that assumes one size must fail on these too."""
    return height - 8 * (index % 3), width - 8 * (index % 2)


def check_sizes(height: int, width: int, most: int, what: str) -> None:
    """Refuses a size whose smallest varied example (of ``most`` per stream) is below what a
    scene needs, saying how much larger to ask for."""
    sizes = [example_size(index, height, width) for index in range(max(1, min(most, 6)))]
    smallest = min(h for h, _ in sizes), min(w for _, w in sizes)
    if smallest[0] < MIN_HEIGHT or smallest[1] < MIN_WIDTH:
        raise DataError(
            f'The synthetic {what} varies its examples\' sizes down to {smallest[0]}x'
            f'{smallest[1]} for --height {height} --width {width}, and synthetic scenes need at '
            f'least {MIN_HEIGHT}x{MIN_WIDTH} pixels. Pass at least --height '
            f'{max(height, MIN_HEIGHT + height - smallest[0])} --width '
            f'{max(width, MIN_WIDTH + width - smallest[1])}.')


def render(seed: int, stream: str, index: int, height: int, width: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(image, Cityscapes label ids) of example ``index`` of ``stream`` ('train', 'val' or
    'aug'), at its varied size."""
    height, width = example_size(index, height, width)
    if stream != 'aug':
        return render_example(seed, stream, index, height, width)
    image, label = render_scene(np.random.default_rng([seed, AUG_STREAM, index]), height, width)
    return image, label.astype(np.uint8)


def jpeg_bytes(image: np.ndarray) -> bytes:
    """An RGB image as JPEG bytes, quality 95, fixed settings (so deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', **JPEG_OPTIONS)
    return buffer.getvalue()


def voc_palette_png(values: np.ndarray) -> bytes:
    """VOC values as VOC stores them: a palette ('P') PNG whose indices are the values and whose
    palette is the VOC colour map, so viewers show the official colours."""
    picture = Image.fromarray(values)
    picture.putpalette(VOC_PALETTE)  # turns the 'L' image into a 'P' one
    buffer = io.BytesIO()
    picture.save(buffer, format='PNG', compress_level=PNG_LEVEL)
    return buffer.getvalue()


def voc_values(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> VOC values, with VOC's void band (255) along every boundary of a
    non-background region: VOC's annotators left the ~5 px around each object unlabelled, and a
    reader or loss that does not treat 255 as void must show it. The band is ``max(1, min(h, w)
    // 100)`` px on each side of the boundary; the image's edge is no boundary."""
    values = VOC_LOOKUP[label_ids]
    band = max(1, min(values.shape) // 100)
    padded = np.pad(values, band, mode='edge')
    border = np.zeros(values.shape, bool)
    height, width = values.shape
    for dy in range(2 * band + 1):
        for dx in range(2 * band + 1):
            # Two different values, so at least one is an object: background is never bordered
            # against itself.
            border |= padded[dy:dy + height, dx:dx + width] != values
    return np.where(border, VOC_BORDER, values).astype(np.uint8)


def voc_id(stream: str, index: int) -> str:
    """The id of example ``index`` of ``stream``, shaped like the real ones: '2007_000032'."""
    return f'{2007 + index % 6}_{VOC_ID_START[stream] + index:06d}'


def id_list(ids: list[str]) -> bytes:
    """An ImageSets list: one id a line, sorted like the real ones, newline-terminated."""
    return ''.join(f'{id_}\n' for id_ in sorted(ids)).encode()


def write_new(root: pathlib.Path, arguments: dict, marker: str, what: str,
              files: Iterator[tuple[str, bytes]]) -> None:
    """Writes ``files`` (relative path, bytes) into ``root`` and the marker last, unless
    ``root`` already holds this data set; refuses a folder holding anything else. Under the
    folder's lock, as ``writer.generate``: of several processes one writes, the others reuse."""
    check_output(root)
    with folder_lock(root):
        if reuse_existing(root, arguments, marker, what):
            return
        for path, data in files:
            write_atomically(root / path, data)
        write_marker(root, arguments, marker)


def write_voc(root: str | pathlib.Path, *, num_train: int, num_val: int, height: int,
              width: int, seed: int = 0, num_aug: int = 0) -> None:
    """A synthetic Pascal VOC 2012 in ``root`` (the real ``VOCdevkit/VOC2012``):
    ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs of values 0..20,
    255 on object borders), ``ImageSets/Segmentation/{train,val,trainval}.txt``; with
    ``num_aug``, that many more training examples with ``SegmentationClassAug/<id>.png``
    (greyscale, as mmsegmentation's SBD converter writes them), listed in ``aug.txt`` with the
    training ones (whose labels ``SegmentationClassAug`` holds too), as in the real list.

    Deterministic; a finished folder written with the same arguments is reused, any other
    non-empty folder refused (``synthetic_voc.json``, written last, records the arguments).
    """
    counts = {'train': num_train, 'val': num_val, 'aug': num_aug}
    check_counts(counts)
    for stream, count in counts.items():
        if count > VOC_ID_BLOCK:
            raise DataError(f'num_{stream}={count}: the synthetic VOC numbers its ids in blocks '
                            f'of {VOC_ID_BLOCK}; pass at most that many.')
    check_sizes(height, width, max(counts.values()), 'Pascal VOC')
    arguments = {'generator': 'seg_jax.data.synthetic.layouts', 'layout': 'voc',
                 'version': GENERATOR_VERSION, 'layout_version': LAYOUT_VERSION,
                 'num_train': int(num_train), 'num_val': int(num_val), 'num_aug': int(num_aug),
                 'height': int(height), 'width': int(width), 'seed': int(seed)}
    ids = {stream: [voc_id(stream, index) for index in range(count)]
           for stream, count in counts.items()}

    def files() -> Iterator[tuple[str, bytes]]:
        for stream, count in counts.items():
            for index, id_ in enumerate(ids[stream]):
                image, label_ids = render(seed, stream, index, height, width)
                values = voc_values(label_ids)
                yield f'JPEGImages/{id_}.jpg', jpeg_bytes(image)
                if stream != 'aug':
                    yield f'SegmentationClass/{id_}.png', voc_palette_png(values)
                if stream == 'aug' or (stream == 'train' and num_aug):
                    yield (f'SegmentationClassAug/{id_}.png',
                           png_bytes(values, compress_level=PNG_LEVEL))
        lists = {'train': ids['train'], 'val': ids['val'],
                 'trainval': ids['train'] + ids['val']}
        if num_aug:  # like the converter's: SBD's images, VOC's training ones among them
            lists['aug'] = ids['aug'] + ids['train']
        for name, listed in lists.items():
            yield f'ImageSets/Segmentation/{name}.txt', id_list(listed)

    write_new(pathlib.Path(root), arguments, VOC_MARKER, 'synthetic Pascal VOC', files())


def ade20k_stem(split: str, index: int) -> str:
    """'ADE_train_00000001' (numbered from 1, like the real files) or 'ADE_val_...'."""
    return f'ADE_{split}_{index + 1:08d}'


def write_ade20k(root: str | pathlib.Path, *, num_train: int, num_val: int, height: int,
                 width: int, seed: int = 0) -> None:
    """A synthetic ADE20K SceneParsing in ``root``, as the real ADEChallengeData2016.zip
    unpacks: ``ADEChallengeData2016/images/{training,validation}/<stem>.jpg`` and
    ``ADEChallengeData2016/annotations/{training,validation}/<stem>.png`` (greyscale, value =
    train id + 1, 0 = 'other'), stems ``ADE_train_00000001`` / ``ADE_val_00000001``.

    Deterministic; a finished folder written with the same arguments is reused, any other
    non-empty folder refused (``synthetic_ade20k.json``, written last, records the arguments).
    """
    counts = {'train': num_train, 'val': num_val}
    check_counts(counts)
    check_sizes(height, width, max(counts.values()), 'ADE20K')
    arguments = {'generator': 'seg_jax.data.synthetic.layouts', 'layout': 'ade20k',
                 'version': GENERATOR_VERSION, 'layout_version': LAYOUT_VERSION,
                 'num_train': int(num_train), 'num_val': int(num_val),
                 'height': int(height), 'width': int(width), 'seed': int(seed)}
    folders = {'train': 'training', 'val': 'validation'}

    def files() -> Iterator[tuple[str, bytes]]:
        for split, count in counts.items():
            for index in range(count):
                image, label_ids = render(seed, split, index, height, width)
                stem, folder = ade20k_stem(split, index), folders[split]
                yield f'ADEChallengeData2016/images/{folder}/{stem}.jpg', jpeg_bytes(image)
                yield (f'ADEChallengeData2016/annotations/{folder}/{stem}.png',
                       png_bytes(ADE20K_LOOKUP[label_ids], compress_level=PNG_LEVEL))

    write_new(pathlib.Path(root), arguments, ADE20K_MARKER, 'synthetic ADE20K', files())
