"""Full-image inference speed per mode: whole image, sliding window, multi-scale + flip.

Prints one JSON object per mode on stdout: the jitted ``inference.log_probabilities`` + argmax
(what eval and predict run) of a config's network at full width on random images of
``--size``, sharded over every local device: compile seconds, median seconds per batch after a
warm-up, images/s, the number of network passes per image, and XLA's compiled temporary memory.
Example (the table in benchmarks/RESULTS.md):

    python benchmarks/inference.py --config demo --size 1024 2048 --batch 1 --repeats 2

Modes: ``whole``; ``window`` (``--window``, stride ``--stride``, overlapping logits averaged);
``ms_flip`` (``--scales``, each mirrored too); ``window_ms_flip`` (both).
"""

import argparse
import importlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import metrics, parallel
from seg_jax.inference import InferenceSettings, log_probabilities, window_starts
from seg_jax.models import build_model


def mode_settings(window: tuple[int, int], stride: tuple[int, int],
                  scales: tuple[float, ...]) -> dict[str, InferenceSettings]:
    return {'whole': InferenceSettings(),
            'window': InferenceSettings(window=window, stride=stride),
            'ms_flip': InferenceSettings(scales=scales, flip=True),
            'window_ms_flip': InferenceSettings(window=window, stride=stride, scales=scales,
                                                flip=True)}


def passes_per_image(settings: InferenceSettings, size: tuple[int, int]) -> int:
    """Network evaluations per image: windows at each scale, twice with flip."""
    total = 0
    for scale in settings.scales:
        scaled = [max(1, round(side * scale)) for side in size]
        if settings.window is None:
            total += 1
        else:
            total += np.prod([len(window_starts(side, min(window, side), stride))
                              for side, window, stride in zip(scaled, settings.window,
                                                              settings.stride)])
    return int(total) * (2 if settings.flip else 1)


def benchmark(config_name: str, size: tuple[int, int], batch: int, repeats: int,
              modes: dict[str, InferenceSettings]):
    config = importlib.import_module(f'configs.{config_name}').get_config()
    model = build_model(config.model)
    parallel.check_batch_size(batch, '--batch')
    mesh = parallel.data_mesh()
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, 64, 64, 3)), train=False),
                        out_shardings=parallel.replicated(mesh))(jax.random.key(0))
    images = jax.device_put(jax.random.normal(jax.random.key(1), (batch, *size, 3)),
                            parallel.batch_sharded(mesh))
    for mode, settings in modes.items():
        step = jax.jit(lambda v, x, s=settings: metrics.predictions_from_logits(
            log_probabilities(model, v, x, s)), out_shardings=parallel.batch_sharded(mesh))
        start = time.perf_counter()
        compiled = step.lower(variables, images).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(variables, images))  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(variables, images))
            times.append(time.perf_counter() - start)
        seconds = sorted(times)[len(times) // 2]
        yield {'config': config_name, 'mode': mode, 'device': jax.devices()[0].device_kind,
               'device_count': jax.device_count(), 'size': list(size), 'batch': batch,
               'window': list(settings.window) if settings.window else None,
               'stride': list(settings.stride) if settings.stride else None,
               'scales': list(settings.scales), 'flip': settings.flip,
               'passes_per_image': passes_per_image(settings, size),
               'compile_s': round(compile_s, 2), 's_per_batch': round(seconds, 4),
               'images_per_s': round(batch / seconds, 4),
               'temp_mib': round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='demo', help='a module of configs/')
    parser.add_argument('--size', nargs=2, type=int, default=(1024, 2048), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1, help='global; a multiple of devices')
    parser.add_argument('--window', nargs=2, type=int, default=(512, 1024), metavar=('H', 'W'))
    parser.add_argument('--stride', nargs=2, type=int, default=(341, 683), metavar=('H', 'W'))
    parser.add_argument('--scales', nargs='+', type=float, default=(0.75, 1.0, 1.25))
    parser.add_argument('--modes', nargs='+', default=None,
                        choices=('whole', 'window', 'ms_flip', 'window_ms_flip'))
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args()
    modes = mode_settings(tuple(args.window), tuple(args.stride), tuple(args.scales))
    if args.modes:
        modes = {mode: modes[mode] for mode in args.modes}
    for row in benchmark(args.config, tuple(args.size), args.batch, args.repeats, modes):
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
