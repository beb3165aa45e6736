"""Checks of the training crop size against itself and against the training images, and of the
other sizes a config gives (the base size of the rescale, the evaluation canvas).

Kept free of TensorFlow so that ``--mode summary`` can check a config without loading it.
"""

import math
import numbers
from typing import Sequence

from seg_jax.errors import ConfigError


def check_crop_size(crop_size: Sequence[int]) -> tuple[int, int]:
    """``crop_size`` as (height, width) if it is two positive ints, else a ConfigError."""
    crop_size = tuple(crop_size) if isinstance(crop_size, Sequence) else (crop_size,)
    if len(crop_size) != 2 or not all(isinstance(n, numbers.Integral) and n > 0
                                      for n in crop_size):
        raise ConfigError(f'config.data.crop_size={crop_size} must be two positive ints '
                          '(height, width), e.g. --config.data.crop_size="(512, 1024)".')
    return crop_size


def check_crop_fits_images(crop_size: Sequence[int], scale_range: Sequence[float],
                           image_size: Sequence[int]) -> None:
    """Refuses a crop larger than the training images even at the largest rescale factor.

    Augmentation pads a canvas smaller than the crop (void labels, mean-coloured image), which
    is right for the occasional small rescale; but a crop larger than every rescaled image
    makes every crop partly padding, which is almost always a crop size meant for other data
    (a Cityscapes recipe's 512x1024 on small synthetic images, say).
    """
    height, width = check_crop_size(crop_size)
    largest = [math.floor(side * max(scale_range)) for side in image_size]
    if height > largest[0] or width > largest[1]:
        fitting = (min(height, largest[0]), min(width, largest[1]))
        raise ConfigError(
            f'config.data.crop_size=({height}, {width}) is larger than the training images '
            f'({image_size[0]}x{image_size[1]}) even at the largest rescale factor '
            f'{max(scale_range)} of config.data.scale_range ({largest[0]}x{largest[1]}), so '
            'every crop would be partly padding. Use a crop of at most '
            f'{largest[0]}x{largest[1]}, e.g. --config.data.crop_size="{fitting}", or raise the '
            'upper end of config.data.scale_range.')


def check_optional_size(value: Sequence[int] | None, field: str, sides: str,
                        example: str) -> None:
    """Refuses a ``config.data.<field>`` that is neither None nor two positive ints."""
    if value is not None and (
            len(tuple(value)) != 2
            or not all(isinstance(n, numbers.Integral) and n > 0 for n in value)):
        raise ConfigError(f'config.data.{field}={value} must be None or two positive ints '
                          f'({sides}), e.g. --config.data.{field}="{example}".')
