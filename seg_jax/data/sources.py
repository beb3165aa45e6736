"""Every data source by name: ``open_split(config.data, split)`` opens the one it names.

Cityscapes (``seg_jax.data.cityscapes``): 'tfds', 'folder', and 'synthetic' (the generator's
Cityscapes, or with ``config.data.synthetic.layout`` its VOC- or ADE20K-layout variant).
Other data sets (``seg_jax.data.pairs``): 'pairs', 'voc', 'ade20k'.

Each split carries the class table of ``config.data.classes``, which says what its labels'
values mean.
"""

import os
from typing import Callable

import ml_collections

from seg_jax.data import cityscapes, pairs, synthetic
from seg_jax.data.classes import ClassTable, class_table
from seg_jax.data.split import Split
from seg_jax.data.synthetic.layouts import LAYOUT_VERSION, LAYOUTS
from seg_jax.errors import DataError


def _needs_dir(data: ml_collections.ConfigDict, what: str) -> str:
    if not data.dir:
        raise DataError(f'config.data.source={data.source} needs config.data.dir: {what}.')
    return os.path.expanduser(data.dir)


def _folder(data: ml_collections.ConfigDict, split: str, table: ClassTable) -> Split:
    root = _needs_dir(data, 'the folder holding the extracted leftImg8bit/ and gtFine/. '
                      + cityscapes.HOW_TO_GET_CITYSCAPES)
    return cityscapes.folder_split(root, split, skip_bad=data.skip_bad_examples, table=table)


def _pairs(data: ml_collections.ConfigDict, split: str, table: ClassTable) -> Split:
    root = _needs_dir(data, 'the folder that config.data.pairs\' image and label folders are in')
    return pairs.pair_split('pairs', split,
                            pairs.list_pairs(root, pairs.layout_of(data.pairs), split),
                            root, table, data)


def _voc_at(root: str, data: ml_collections.ConfigDict, split: str, table: ClassTable,
            source: str) -> Split:
    return pairs.pair_split(source, split, pairs.voc_pairs(root, split, data.voc_aug), root,
                            table, data)


def _ade20k_at(root: str, data: ml_collections.ConfigDict, split: str, table: ClassTable,
               source: str) -> Split:
    root = pairs.ade20k_root(root)
    return pairs.pair_split(source, split, pairs.list_pairs(root, pairs.ADE20K, split), root,
                            table, data)


def _voc(data: ml_collections.ConfigDict, split: str, table: ClassTable) -> Split:
    root = _needs_dir(data, 'the VOC2012 folder (holding JPEGImages/ and SegmentationClass/)')
    return _voc_at(root, data, split, table, 'voc')


def _ade20k(data: ml_collections.ConfigDict, split: str, table: ClassTable) -> Split:
    root = _needs_dir(data, 'the ADEChallengeData2016 folder')
    return _ade20k_at(root, data, split, table, 'ade20k')


def synthetic_aug_count(data: ml_collections.ConfigDict) -> int:
    """How many SBD-like examples the synthetic VOC adds for ``config.data.voc_aug``: half as
    many as its training set (the real SBD adds ~6x VOC's)."""
    return max(1, data.synthetic.num_train // 2) if data.voc_aug else 0


def synthetic_dir(data: ml_collections.ConfigDict) -> str:
    """Where the synthetic data set lives: ``config.data.dir`` or a cache folder per setting
    (a new generator version writes a new folder)."""
    if data.dir:
        return os.path.expanduser(data.dir)
    s, layout = data.synthetic, data.synthetic.layout
    version = (f'{synthetic.GENERATOR_VERSION}' if layout == 'cityscapes' else
               f'{synthetic.GENERATOR_VERSION}.{LAYOUT_VERSION}')
    counts = (f'{s.num_train}-{s.num_val}-{s.num_test}' if layout != 'voc' else
              f'{s.num_train}-{s.num_val}-aug{synthetic_aug_count(data)}')
    name = f'{s.height}x{s.width}_seed{s.seed}_{counts}_v{version}'
    folder = 'synthetic_cityscapes' if layout == 'cityscapes' else f'synthetic_{layout}'
    return os.path.join(os.path.expanduser('~'), '.cache', 'seg_jax', folder, name)


def _synthetic(data: ml_collections.ConfigDict, split: str, table: ClassTable) -> Split:
    layout, s, root = data.synthetic.layout, data.synthetic, synthetic_dir(data)
    if layout not in LAYOUTS:
        raise DataError(f'config.data.synthetic.layout={layout!r} is not known; use one of '
                        f'{", ".join(LAYOUTS)}.')
    if layout == 'cityscapes':
        synthetic.generate(root, num_train=s.num_train, num_val=s.num_val,
                           num_test=s.num_test, height=s.height, width=s.width, seed=s.seed)
        return cityscapes.folder_split(root, split, 'synthetic', data.skip_bad_examples, table)
    if layout == 'voc':
        synthetic.write_voc(root, num_train=s.num_train, num_val=s.num_val, height=s.height,
                            width=s.width, seed=s.seed, num_aug=synthetic_aug_count(data))
        return _voc_at(root, data, split, table, 'synthetic')
    synthetic.write_ade20k(root, num_train=s.num_train, num_val=s.num_val, height=s.height,
                           width=s.width, seed=s.seed)
    return _ade20k_at(root, data, split, table, 'synthetic')


SOURCES: dict[str, Callable[[ml_collections.ConfigDict, str, ClassTable], Split]] = {
    'folder': _folder,
    'tfds': cityscapes.tfds_split,
    'synthetic': _synthetic,
    'pairs': _pairs,
    'voc': _voc,
    'ade20k': _ade20k,
}


def open_split(data: ml_collections.ConfigDict, split: str) -> Split:
    """The ``split`` of the source ``config.data.source`` names, with its class table."""
    if data.source not in SOURCES:
        raise DataError(f'config.data.source={data.source!r} is not known; use one of '
                        f'{sorted(SOURCES)}.')
    return SOURCES[data.source](data, split, class_table(data.classes))
