"""Latency of an exported model per target: the jitted function, segmenter.jax, the SavedModel.

Prints one JSON object per target on stdout: the seconds to load (deserialize / load the
SavedModel) and to compile or trace on the first call, and the median seconds per image over
``--repeats`` calls after it, for a config's network at full width with random weights on
random uint8 images of ``--size`` (what ``--mode export`` writes, without its parity check).
Example (the table in benchmarks/RESULTS.md):

    python benchmarks/export_latency.py --config demo --size 1024 2048 --repeats 3

Targets: ``jax_jit`` (the function before export, jitted in this process: the baseline),
``segmenter.jax`` (deserialized and jitted, as ``seg_jax.serving`` runs it), ``saved_model`` (TensorFlow's ``serving_default``).
"""

import argparse
import importlib
import json
import os
import statistics
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import export, inference, serving
from seg_jax.models import build_model


def timed(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of the next ``repeats``)."""
    start = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='demo', help='a name in configs/')
    parser.add_argument('--size', type=int, nargs=2, default=(1024, 2048))
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    config = importlib.import_module(f'configs.{args.config}').get_config()
    model = build_model(config.model)
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, 64, 64, 3)), train=False))(
        jax.random.key(0))
    segment = export.segment_function(model, jax.device_get(variables),
                                      inference.inference_settings(config.eval), False)
    size, platforms = tuple(args.size), ('cpu',)
    images = np.random.default_rng(0).integers(0, 256, (1, *size, 3), np.uint8)
    base = {'config': args.config, 'image_size': list(size), 'batch': 1,
            'device': jax.devices()[0].device_kind, 'jax': jax.__version__}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export.write_targets(segment, size, platforms, folder)
        export_s = time.perf_counter() - start

        import tensorflow as tf
        targets = {'jax_jit': lambda: (jax.jit(segment), 0.0)}

        def load_serving():  # what seg_jax.serving.Segmenter runs, without metadata.json
            start = time.perf_counter()
            call = jax.jit(serving.read_exported(folder).call)
            return call, time.perf_counter() - start

        def load_saved_model():
            start = time.perf_counter()
            serve = tf.saved_model.load(os.path.join(folder, serving.SAVED_MODEL_FOLDER)
                                        ).signatures['serving_default']
            return (lambda batch: serve(images=tf.constant(batch))), time.perf_counter() - start

        targets.update({serving.EXPORTED_FILE: load_serving,
                        serving.SAVED_MODEL_FOLDER: load_saved_model})
        for name, load in targets.items():
            run, load_s = load()
            first_s, median_s = timed(lambda: run(images), args.repeats)
            print(json.dumps({**base, 'target': name, 'export_s': round(export_s, 2),
                              'load_s': round(load_s, 2), 'first_call_s': round(first_s, 2),
                              's_per_image': float(f'{median_s:.4g}'),
                              'images_per_s': float(f'{1 / median_s:.4g}')}), flush=True)


if __name__ == '__main__':
    main()
