"""cityscapesscripts' ``csEvalPixelLevelSemanticLabeling``, runnable with the pinned numpy.

    CITYSCAPES_DATASET=/data/cityscapes CITYSCAPES_RESULTS=EXPORT_DIR/val \
        python -m seg_jax.tools.cityscapes_eval

cityscapesscripts 2.3.0 (the newest) computes its instance-level scores with ``numpy.in1d``,
which numpy 2.4 removed, so its own command fails on real Cityscapes (whose ``gtFine`` holds
``*_instanceIds.png``) with "module 'numpy' has no attribute 'in1d'". This runs the same
``main``, unchanged (the same environment variables, search for predictions, table and JSON
file), after restoring ``in1d`` as its documented equivalent, ``numpy.isin(...).ravel()``. With
numpy older than 2.4 the original command works as well.
"""

import numpy as np


def _in1d(values, test_values, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    return np.isin(values, test_values, assume_unique=assume_unique, invert=invert).ravel()


def main() -> None:
    if not hasattr(np, 'in1d'):
        np.in1d = _in1d
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling
    evalPixelLevelSemanticLabeling.main()


if __name__ == '__main__':
    main()
