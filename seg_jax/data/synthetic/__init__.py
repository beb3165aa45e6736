"""A procedural synthetic Cityscapes: street scenes written in the exact Cityscapes layout.

Cityscapes needs a registered login, so no machine here can download it. seg_jax ships this
generator instead; the demo and the tests train on its output, and because it writes the real
file layout (and, on request, the two zips the TFDS builder reads) every real-data code path
runs on it unchanged.

* ``canvas``: the image and label being drawn, the pinhole camera, shape masks and colours.
* ``objects``: cars, people, bicycles and riders, trees, poles, lights, signs, street furniture:
  where they stand and how each is drawn.
* ``scene``: one street scene, from the street's layout and background to the camera's noise.
* ``writer``: the data set on disk: file names, PNGs, zips, the reuse marker, determinism.
* ``layouts``: the same scenes in the layouts of Pascal VOC 2012 (with the SBD-augmented
  ``SegmentationClassAug``) and ADE20K, their classes mapped by name, for the VOC and ADE20K
  readers.
* ``__main__``: the command line.

    python -m seg_jax.data.synthetic --output /tmp/cityscapes --height 1024 --width 2048 --zips
    python -m seg_jax.data.synthetic --layout voc --output /tmp/VOCdevkit/VOC2012 --num-aug 16
"""

from seg_jax.data.synthetic.layouts import write_ade20k, write_voc
from seg_jax.data.synthetic.scene import render_scene
from seg_jax.data.synthetic.writer import (
    CITIES, GENERATOR_VERSION, ID_PALETTE, MARKER, SPLITS, TEST_LABEL_IDS, generate,
    render_example, sample_sheet)

__all__ = ['CITIES', 'GENERATOR_VERSION', 'ID_PALETTE', 'MARKER', 'SPLITS', 'TEST_LABEL_IDS',
           'generate', 'render_example', 'render_scene', 'sample_sheet', 'write_ade20k',
           'write_voc']
