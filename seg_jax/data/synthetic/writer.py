"""Writing the synthetic Cityscapes: the real file names and layout, the colour and instance
PNGs, the two zips the TFDS builder reads, and the marker that makes a finished folder reusable.

Every byte is deterministic: each example is drawn from its own RNG seeded by (seed, split,
index), PNGs are written with fixed settings and zip members with a fixed date, so the same
arguments give byte-identical files and fewer examples give a prefix of more.
"""

import json
import os
import pathlib
import zipfile

import numpy as np
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from seg_jax.data.labels import LABEL_IDS, NUM_LABEL_IDS
from seg_jax.data.synthetic.scene import check_size, render_scene
from seg_jax.errors import DataError
from seg_jax.files import folder_lock, png_bytes, write_atomically

SPLITS = ('train', 'val', 'test')
# Real Cityscapes city names; examples go round-robin over a split's cities.
CITIES: dict[str, tuple[str, ...]] = {
    'train': ('aachen', 'bochum', 'bremen', 'cologne', 'darmstadt', 'dusseldorf', 'erfurt',
              'hamburg', 'hanover', 'jena', 'krefeld', 'monchengladbach', 'strasbourg',
              'stuttgart', 'tubingen', 'ulm', 'weimar', 'zurich'),
    'val': ('frankfurt', 'lindau', 'munster'),
    'test': ('berlin', 'bielefeld', 'bonn', 'leverkusen', 'mainz', 'munich'),
}
FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet.
MARKER = 'synthetic_cityscapes.json'
# Bump when the drawing (canvas, scene, objects) changes, so that a folder written by an
# older generator is not reused.
GENERATOR_VERSION = 2  # 2: *_gtFine_instanceIds.png
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so zips are byte-identical run to run

# Official Cityscapes colours by label id (``*_gtFine_color.png``); labels.py has train ids only.
ID_PALETTE = np.zeros((256, 3), np.uint8)
ID_PALETTE[:NUM_LABEL_IDS] = [id2label[i].color for i in range(NUM_LABEL_IDS)]
# The public test labels carry no classes, only these void regions.
TEST_LABEL_IDS = (LABEL_IDS['ego vehicle'], LABEL_IDS['out of roi'])


def example_stem(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of example ``index``: round-robin over the split's cities, sequence
    numbers counting up per city, so a shorter run names a prefix of a longer one."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f'{city}_{index // len(cities):06d}_{FRAME:06d}'


def example_paths(split: str, index: int) -> dict[str, str]:
    """Relative paths of one example's files, as in the real data set."""
    city, stem = example_stem(split, index)
    return {'image': f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png',
            'label_ids': f'gtFine/{split}/{city}/{stem}_gtFine_labelIds.png',
            'colour': f'gtFine/{split}/{city}/{stem}_gtFine_color.png',
            'instance_ids': f'gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png'}


def render_example(seed: int, split: str, index: int, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Example ``index`` of ``split``; its own RNG makes it independent of the counts."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    image, label = render_scene(rng, height, width)
    if split == 'test':
        label = np.where(np.isin(label, TEST_LABEL_IDS), label, LABEL_IDS['unlabeled'])
    return image, label.astype(np.uint8)


def colour_label(label_ids: np.ndarray) -> np.ndarray:
    """Label ids in the official colours, RGBA like the real ``*_gtFine_color.png``."""
    colours = ID_PALETTE[label_ids]
    return np.concatenate([colours, np.full(label_ids.shape + (1,), 255, np.uint8)], -1)


def instance_label(label_ids: np.ndarray) -> np.ndarray:
    """The ``*_gtFine_instanceIds.png`` of a scene without instances: uint16 like the real
    ones, each pixel its label id (below 1000: "no single instance", Cityscapes' crowd
    convention), so cityscapesscripts' evaluation reads the folder like the real data set."""
    return label_ids.astype(np.uint16)


def write_zip(path: pathlib.Path, root: pathlib.Path, members: list[str]) -> None:
    """A zip laid out like the real download, PNGs stored (they are compressed already)."""
    temporary = path.with_name(f'.{path.name}.partial')
    with zipfile.ZipFile(temporary, 'w', zipfile.ZIP_STORED) as archive:
        for member in sorted(members):
            info = zipfile.ZipInfo(member, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / member).read_bytes())
    os.replace(temporary, path)


def reuse_existing(output: pathlib.Path, arguments: dict, marker_name: str = MARKER,
                   what: str = 'synthetic Cityscapes') -> bool:
    """True if ``output`` already holds this exact data set (its ``marker_name`` records
    ``arguments``); raises rather than touch a folder holding anything else (someone's files,
    an interrupted run, other arguments). ``what`` names the data set in the messages; every
    layout of ``layouts`` shares this check, so all refuse a folder the same way."""
    if not output.exists() or not any(output.iterdir()):
        return False
    marker = output / marker_name
    if not marker.exists():
        raise DataError(
            f'Refusing to write {what} into {output}: it is not empty and holds no '
            f'{marker_name}, so it is either an interrupted generation or someone else\'s files. '
            'Delete the folder (if it is a broken synthetic run) or choose another --output.')
    previous = json.loads(marker.read_text())
    if previous != arguments:
        changed = sorted(key for key in arguments.keys() | previous.keys()
                         if previous.get(key) != arguments.get(key))
        raise DataError(
            f'{output} holds a {what} made with other arguments (differing: '
            f'{", ".join(changed)}). Delete the folder or choose another --output.')
    return True


def check_counts(counts: dict[str, int]) -> None:
    """Refuses an example count that is not a whole number >= 0, naming its argument."""
    for split, count in counts.items():
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise DataError(f'num_{split} must be a whole number >= 0; got {count!r}.')


def check_output(output: pathlib.Path) -> None:
    """Refuses an ``output`` that is a file: the data set is a folder."""
    if output.exists() and not output.is_dir():
        raise DataError(f'{output} is a file, not a folder. Pass --output a folder path.')


def write_marker(output: pathlib.Path, arguments: dict, marker_name: str = MARKER) -> None:
    """The marker that makes a finished folder reusable; written last, so only a complete run
    leaves one."""
    write_atomically(output / marker_name, (json.dumps(arguments, indent=2) + '\n').encode())


def generate(output: str | pathlib.Path, *, num_train: int = 24, num_val: int = 8,
             num_test: int = 4, height: int = 256, width: int = 512, seed: int = 0,
             zips: bool = False) -> None:
    """Writes a synthetic Cityscapes into ``output`` in the real layout, so the folder reader
    and (with ``zips``, at 1024x2048) the TFDS builder read it like the real data set.

    Deterministic: the same arguments give byte-identical files, and each example depends only
    on (seed, split, index). A finished run leaves ``synthetic_cityscapes.json`` (written last);
    calling again with the same arguments reuses the folder, anything else is refused so that
    no user file is ever overwritten.
    """
    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    check_counts(counts)
    check_size(height, width)
    output = pathlib.Path(output)
    arguments = {'generator': 'seg_jax.data.synthetic', 'version': GENERATOR_VERSION,
                 'num_train': int(num_train), 'num_val': int(num_val), 'num_test': int(num_test),
                 'height': int(height), 'width': int(width), 'seed': int(seed),
                 'zips': bool(zips)}
    check_output(output)
    # Processes of one job sharing the folder: one generates, the others wait and reuse it.
    with folder_lock(output):
        if reuse_existing(output, arguments):
            return
        written = []
        for split, count in counts.items():
            for index in range(count):
                image, label = render_example(seed, split, index, height, width)
                paths = example_paths(split, index)
                for key, array in (('image', image), ('label_ids', label),
                                   ('colour', colour_label(label)),
                                   ('instance_ids', instance_label(label))):
                    write_atomically(output / paths[key], png_bytes(array, compress_level=1))
                    written.append(paths[key])
        if zips:
            for name, root in (('leftImg8bit_trainvaltest.zip', 'leftImg8bit/'),
                               ('gtFine_trainvaltest.zip', 'gtFine/')):
                write_zip(output / name, output,
                          [path for path in written if path.startswith(root)])
        write_marker(output, arguments)


def sample_sheet(path: str | pathlib.Path, *, seed: int = 0, count: int = 4, height: int = 256,
                 width: int = 512) -> None:
    """A PNG with one row per training example: the image beside its coloured labels."""
    rows = [np.concatenate([image, ID_PALETTE[label]], axis=1)
            for image, label in (render_example(seed, 'train', index, height, width)
                                 for index in range(count))]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
