"""Command-line tools: ``python -m seg_jax.tools.<name>``."""
