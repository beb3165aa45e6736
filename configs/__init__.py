"""Config files for ``python -m seg_jax.main --config configs/NAME.py``; each has get_config()."""
