"""Forward and forward+backward speed and memory of every network of the zoo.

Prints one JSON object per config on stdout: parameters and forward FLOPs (as ``--mode
summary``), XLA's compiled memory figures for the training-mode gradient step, and the measured
wall time per batch of the jit-compiled forward (eval mode) and gradient (train mode) on the
default device. Example (the table in benchmarks/RESULTS.md):

    python benchmarks/model_zoo.py --crop 256 512 --batch 2 --repeats 3

The gradient here has no optimiser update and no input pipeline: it measures the network.
"""

import argparse
import importlib
import json
import time

import jax
import jax.numpy as jnp

from seg_jax.models import build_model
from seg_jax.summary import count_parameters, forward_flops

CONFIGS = ('fcn', 'unet', 'unet_aspp', 'resnet_deconv', 'resnet_aspp', 'deeplabv3_r50')


def seconds_per_call(function, *args, repeats: int) -> float:
    """Median wall time of ``function(*args)`` after one warm-up call (compilation)."""
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def benchmark(name: str, crop: tuple[int, int], batch: int, dtype: str, repeats: int) -> dict:
    config = importlib.import_module(f'configs.{name}').get_config()
    config.model.compute_dtype = dtype
    model = build_model(config.model)
    images = jax.random.normal(jax.random.key(0), (batch, *crop, 3))
    variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(images)

    @jax.jit
    def forward(variables, images):
        return model.apply(variables, images, train=False)['out']

    @jax.jit
    def gradient(variables, images):
        def loss(params):
            outputs, _ = model.apply({**variables, 'params': params}, images, train=True,
                                     mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
            return sum(jnp.mean(out) for out in outputs.values())
        return jax.grad(loss)(variables['params'])

    memory = gradient.lower(variables, images).compile().memory_analysis()
    flops = forward_flops(model, variables, (1, *crop, 3))
    forward_s = seconds_per_call(forward, variables, images, repeats=repeats)
    gradient_s = seconds_per_call(gradient, variables, images, repeats=repeats)
    return {
        'config': name,
        'device': jax.devices()[0].device_kind,
        'crop': list(crop),
        'batch': batch,
        'compute_dtype': dtype,
        'parameters': count_parameters(variables),
        'forward_gflops_per_image': round(flops / 1e9, 1),
        'forward_s_per_batch': round(forward_s, 4),
        'forward_images_per_s': round(batch / forward_s, 2),
        'gradient_s_per_batch': round(gradient_s, 4),
        'gradient_images_per_s': round(batch / gradient_s, 2),
        # Forward FLOP/s achieved (the gradient costs about three forwards).
        'forward_gflop_per_s': round(batch * flops / forward_s / 1e9, 1),
        'gradient_temp_mib': round(memory.temp_size_in_bytes / 2**20, 1),
        'gradient_argument_mib': round(memory.argument_size_in_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', nargs='+', default=CONFIGS, choices=CONFIGS)
    parser.add_argument('--crop', nargs=2, type=int, default=(256, 512), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    for name in args.configs:
        print(json.dumps(benchmark(name, tuple(args.crop), args.batch, args.dtype, args.repeats)),
              flush=True)


if __name__ == '__main__':
    main()
