"""``Split``: what every source gives the pipeline, one split's examples addressable by index."""

import dataclasses
from typing import Callable

import tensorflow as tf

from seg_jax.data.classes import CITYSCAPES, ClassTable


@dataclasses.dataclass(frozen=True)
class Split:
    """``size`` examples of one split; ``read(index)`` decodes one inside a tf.data graph into
    ``{'image': uint8 HxWx3, 'label': uint8 HxW stored label values, 'image_id', 'problem'}``.

    ``location`` is the folder the data lives in, where derived files (class counts) are cached.
    ``files`` are the image and label files a folder source reads (none for TFDS), so that an
    error naming only a byte size (tf.io.decode_png's) can be traced to its file. ``classes``
    is the class table that maps the stored values to train ids.
    """
    source: str
    split: str
    size: int
    read: Callable[[tf.Tensor], dict[str, tf.Tensor]]
    location: str
    files: tuple[str, ...] = ()
    classes: ClassTable = CITYSCAPES
