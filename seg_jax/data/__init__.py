"""Cityscapes input for seg_jax.

* ``labels``: the official label table (via cityscapesscripts), id lookup tables, palette.
* ``synthetic``: the procedural synthetic Cityscapes, in the real folder layout and zips.
* ``cityscapes``: the sources ('tfds', 'folder', 'synthetic'), read by index with checks.
* ``augment``: joint image/label augmentation in one resampling pass (crops balanced by
  ``cat_max_ratio`` where asked); normalisation.
* ``photometric``: colour augmentation of the image: seg_jax's brightness/contrast jitter, or
  mmsegmentation's PhotoMetricDistortion with OpenCV's 8-bit HSV arithmetic.
* ``pipeline``: ``build_input(config, split)`` (host-local numpy batches: endless augmented
  training crops, or one complete, masked evaluation pass) and ``class_pixel_counts(config)``.

Importing this package imports nothing heavy; TensorFlow loads with the modules that need it.
"""
