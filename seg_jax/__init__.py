"""seg_jax: semantic segmentation on Cityscapes with JAX and Flax."""
