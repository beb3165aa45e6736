"""Input-pipeline throughput: 1024x2048 Cityscapes PNGs to augmented crops and to eval batches.

Prints one JSON object per mode on stdout. The data is the synthetic Cityscapes at the real
resolution (generated once into --data_dir), read by the 'folder' source exactly as real data
is. ``--threads`` caps tf.data's thread pool, so images/s per core is measured, not guessed.

    python benchmarks/input_pipeline.py --threads 2 --batches 20
"""

import argparse
import json
import os
import time

import tensorflow as tf

from configs import default
from seg_jax.data import pipeline, synthetic


def images_per_second(dataset: tf.data.Dataset, batch_size: int, batches: int) -> float:
    """Steady-state rate: the first batch (start-up, file listing) is not timed."""
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source_size', nargs=2, type=int, default=(1024, 2048),
                        metavar=('H', 'W'), help='resolution of the generated PNGs')
    parser.add_argument('--data_dir', help='default: ~/.cache/seg_jax/benchmark_cityscapes_HxW')
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--batches', type=int, default=20)
    parser.add_argument('--crop', nargs=2, type=int, default=(512, 1024), metavar=('H', 'W'))
    parser.add_argument('--photometric', type=float, default=0.3)
    args = parser.parse_args()

    height, width = args.source_size
    data_dir = args.data_dir or os.path.expanduser(
        f'~/.cache/seg_jax/benchmark_cityscapes_{height}x{width}')
    synthetic.generate(data_dir, num_train=24, num_val=8, num_test=1, height=height,
                       width=width, seed=0)
    config = default.get_config()
    config.data.source = 'folder'
    config.data.dir = data_dir
    config.data.crop_size = tuple(args.crop)
    config.data.photometric = args.photometric
    config.global_batch_size = config.eval.batch_size = args.batch
    options = tf.data.Options()
    options.threading.private_threadpool_size = args.threads

    modes = {
        'train': pipeline.train_dataset(config).with_options(options).repeat(),
        'eval': pipeline.eval_dataset(config, 'validation').with_options(options).repeat(),
    }
    for mode, dataset in modes.items():
        rate = images_per_second(dataset, args.batch, args.batches)
        print(json.dumps({
            'benchmark': 'input_pipeline', 'mode': mode, 'source_resolution': [height, width],
            'output_resolution': list(args.crop) if mode == 'train' else [height, width],
            'batch': args.batch, 'threads': args.threads, 'cpu_count': os.cpu_count(),
            'photometric': args.photometric if mode == 'train' else 0.0,
            'images_per_s': round(rate, 2), 'images_per_s_per_core': round(rate / args.threads, 2),
        }), flush=True)


if __name__ == '__main__':
    main()
