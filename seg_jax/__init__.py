"""seg_jax: semantic segmentation on Cityscapes with JAX and Flax."""

import os

# TensorFlow runs seg_jax's input pipeline, which has none of the convolutions and matrix
# products oneDNN's custom kernels replace, and exported models, which run in XLA. Left on by
# default, they make TensorFlow print a notice when it loads, before any log level applies, on
# CPUs where it enables them; set here, before any seg_jax module imports TensorFlow. A value
# the user set is kept.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
