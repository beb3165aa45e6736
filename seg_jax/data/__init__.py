"""Input for seg_jax: Cityscapes, and any data set described by a class table.

* ``labels``: Cityscapes' official label table (via cityscapesscripts), id lookup tables, palette.
* ``classes``: class tables (Cityscapes', VOC's, ADE20K's, or a JSON / CSV file): what the label
  values mean; ``builtin_classes`` holds VOC's and ADE20K's class names.
* ``synthetic``: the procedural synthetic Cityscapes, in the real folder layout and zips, and the
  same scenes in VOC's and ADE20K's layouts.
* ``split``: ``Split``, one split's examples read by index, as every source gives them.
* ``sources``: ``open_split``, every source by name; ``cityscapes`` reads Cityscapes ('tfds',
  'folder', 'synthetic'), ``pairs`` other data sets ('pairs', 'voc', 'ade20k'), with checks.
* ``augment``: joint image/label augmentation in one resampling pass (crops balanced by
  ``cat_max_ratio`` where asked); normalisation; the evaluation canvas.
* ``photometric``: colour augmentation of the image: seg_jax's brightness/contrast jitter, or
  mmsegmentation's PhotoMetricDistortion with OpenCV's 8-bit HSV arithmetic.
* ``pipeline``: ``build_input(config, split)`` (host-local numpy batches: endless augmented
  training crops, or one complete, masked evaluation pass) and ``class_pixel_counts(config)``.

Importing this package imports nothing heavy; TensorFlow loads with the modules that need it.
"""
