"""``--mode benchmark``: how fast the configured training and evaluation run here, and what
bounds them.

Prints one JSON object per measurement on stdout (process 0), each carrying the device kind and
count, model, input size, global batch and compute dtype:

* ``peak``: the device's own matmul and 3x3-convolution throughput, measured in the same run,
  so the step's FLOP/s can be read as a fraction of what this device reaches at all.
* ``train_step``: the real jit-compiled train step (loss, gradients, optimiser, BatchNorm
  statistics) on a global batch already on the devices, state donated: compile time,
  steady-state step time (median and spread over ``config.benchmark.steps`` steps after
  warm-up), images/s, FLOPs per image from XLA's cost analysis, achieved FLOP/s and its ratio
  to the peaks, and peak memory.
* ``eval``: images/s of the eval step at ``config.benchmark.eval_size`` (full resolution,
  1024x2048, by default).
* ``input_pipeline``: images/s of this process's tf.data training input beside what the step
  consumes, and which of the two bounds training.

Nothing is written to disk. Steps are timed one by one (``block_until_ready``), which costs the
overlap of consecutive dispatches (microseconds against steps of milliseconds and more).
"""

import dataclasses
import json
import resource
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seg_jax import config_checks, evaluate, health, inference, optim, parallel, train
from seg_jax.data import pipeline
from seg_jax.models import COMPUTE_DTYPES
from seg_jax.state import create_train_state


def _timed(function: Callable[..., Any], repeats: int, *args: Any) -> list[float]:
    """Wall time of each of ``repeats`` calls ``function(*args)``, until its result is ready."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return times


def _spread(times: list[float]) -> dict[str, float]:
    quantiles = np.quantile(times, [0.1, 0.9])
    return {'median': statistics.median(times), 'p10': float(quantiles[0]),
            'p90': float(quantiles[1]), 'min': min(times), 'max': max(times)}


def peak_memory_bytes() -> dict[str, int]:
    """Peak device memory on GPU/TPU (the allocator's statistics), else the process's peak
    resident set size (CPU: the devices' memory is the host's)."""
    stats = jax.local_devices()[0].memory_stats()
    if stats and 'peak_bytes_in_use' in stats:
        return {'peak_device_bytes': int(stats['peak_bytes_in_use'])}
    return {'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def measure_peaks(size: int, dtype: jnp.dtype, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of a ``size``-square matmul and of a 3x3 256->256 conv on one device."""
    keys = jax.random.split(jax.random.key(0), 4)
    a, b = (jax.random.normal(k, (size, size), dtype) for k in keys[:2])
    matmul = jax.jit(jnp.matmul)
    images = jax.random.normal(keys[2], (max(1, size // 512), 128, 128, 256), dtype)
    kernel = jax.random.normal(keys[3], (3, 3, 256, 256), dtype)
    convolve = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    results = {}
    for name, function, args, flops in (
            ('matmul', matmul, (a, b), 2 * size ** 3),
            ('conv3x3', convolve, (images, kernel), 2 * 9 * 256 * 256 * images.shape[0]
             * 128 * 128)):
        _timed(function, 1, *args)  # compilation
        seconds = statistics.median(_timed(function, repeats, *args))
        results[f'{name}_flop_per_s'] = flops / seconds
    return results


def _random_batch(batch: int, size: tuple[int, int], num_classes: int, mesh, with_mask: bool
                  ) -> dict[str, jax.Array]:
    """A global batch of random images and labels, placed on the devices like real ones."""
    rng = np.random.default_rng(0)
    per_process = batch // jax.process_count()
    host = {'image': rng.standard_normal((per_process, *size, 3), np.float32),
            'label': rng.integers(0, num_classes, (per_process, *size), np.int32)}
    if with_mask:
        host['mask'] = np.ones(per_process, bool)
    return parallel.global_batch(host, mesh)


@dataclasses.dataclass
class CompiledTrainStep:
    """The train step compiled for one global batch, with what it runs on: a fresh state, a
    random batch already on the devices, the health record and the run's schedule."""
    compiled: Any
    state: Any
    batch: dict[str, jax.Array]
    record: Any
    schedule: optim.Schedule
    compile_s: float
    flops: float  # the whole global batch, from XLA's cost analysis before sharding
    memory: Any  # XLA's compiled memory analysis

    def needed_bytes(self) -> int:
        """Device memory the step needs: arguments, outputs and temporaries, less what the
        donated state lets outputs reuse."""
        memory = self.memory
        return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                   + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def compile_train_step(config: ml_collections.ConfigDict, setup: train.TrainingSetup,
                       mesh) -> CompiledTrainStep:
    """The real train step of ``config``, lowered and compiled but not yet run."""
    crop = tuple(config.data.crop_size)
    state = create_train_state(setup.model, setup.tx, crop, config.seed, mesh)
    step = train.make_train_step(config.loss, config.optimizer, setup.class_weights,
                                 config.seed)
    batch = _random_batch(config.global_batch_size, crop, config.model.num_classes, mesh,
                          with_mask=False)
    record = health.initial(mesh)
    start = time.perf_counter()
    lowered = step.lower(state, batch, record, setup.schedule)
    compiled = lowered.compile()
    return CompiledTrainStep(compiled, state, batch, record, setup.schedule,
                             time.perf_counter() - start,
                             float(lowered.cost_analysis()['flops']), compiled.memory_analysis())


def time_train_step(config: ml_collections.ConfigDict, step: CompiledTrainStep
                    ) -> tuple[dict[str, Any], Any]:
    """Runs the compiled step ``config.benchmark`` times: its timings, FLOP/s and memory; also
    returns the state it ends with (for the eval step)."""
    state, record = step.state, step.record

    def one_step():
        nonlocal state, record
        state, logged, record = step.compiled(state, step.batch, record, step.schedule)
        return state, logged

    _timed(one_step, config.benchmark.warmup_steps)
    times = _timed(one_step, config.benchmark.steps)
    seconds = statistics.median(times)
    return {
        'compile_s': step.compile_s,
        'step_s': _spread(times),
        'images_per_s': config.global_batch_size / seconds,
        'flops_per_image': step.flops / config.global_batch_size,
        'flop_per_s': step.flops / seconds,
        'compiled_temp_bytes': int(step.memory.temp_size_in_bytes),
        'compiled_argument_bytes': int(step.memory.argument_size_in_bytes),
        **peak_memory_bytes(),
    }, state


def benchmark_train_step(config: ml_collections.ConfigDict, setup: train.TrainingSetup,
                         mesh) -> tuple[dict[str, Any], Any]:
    """The train step's timings and FLOPs; also returns the state (for the eval step)."""
    return time_train_step(config, compile_train_step(config, setup, mesh))


def benchmark_eval(config: ml_collections.ConfigDict, model, state, mesh) -> dict[str, Any]:
    """Images/s of the eval step (inference as config.eval says, argmax, confusion matrix) at
    the benchmark size."""
    size = tuple(config.benchmark.eval_size)
    settings = inference.inference_settings(config.eval)
    step = inference.make_predict_fn(model, settings, mesh, evaluate.eval_totals)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    batch = _random_batch(config.eval.batch_size, size, config.model.num_classes, mesh,
                          with_mask=True)
    start = time.perf_counter()
    compiled = step.lower(variables, batch).compile()
    compile_s = time.perf_counter() - start
    _timed(compiled, 1, variables, batch)  # warm-up
    times = _timed(compiled, config.benchmark.eval_batches, variables, batch)
    return {'eval_size': list(size), 'eval_batch': config.eval.batch_size,
            'compile_s': compile_s, 'batch_s': _spread(times),
            'images_per_s': config.eval.batch_size / statistics.median(times),
            'inference_views': settings.num_views,
            'sliding_window': list(settings.window) if settings.window else None}


def benchmark_input(config: ml_collections.ConfigDict, step_images_per_s: float
                    ) -> dict[str, Any]:
    """This process's training input rate against the step's appetite."""
    batches = pipeline.build_input(config, 'train')
    next(batches)  # start-up: thread pools, file listing
    count = config.benchmark.input_batches
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    per_process = count * config.global_batch_size / jax.process_count() / (
        time.perf_counter() - start)
    total = per_process * jax.process_count()
    return {'images_per_s_per_process': per_process, 'images_per_s': total,
            'step_images_per_s': step_images_per_s, 'input_over_step': total / step_images_per_s,
            'bound_by': 'input' if total < step_images_per_s else 'step'}


def run_benchmark(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """``--mode benchmark``: every measurement of the module docstring, printed as it is made."""
    del workdir  # nothing is written
    config_checks.check_config(config, 'benchmark')
    mesh = parallel.data_mesh()
    common = {'device_kind': jax.devices()[0].device_kind, 'platform': jax.default_backend(),
              'device_count': jax.device_count(), 'process_count': jax.process_count(),
              'jax_version': jax.__version__, 'model': config.model.name,
              'backbone': config.model.backbone, 'output_stride': config.model.output_stride,
              'crop': list(config.data.crop_size), 'global_batch': config.global_batch_size,
              'compute_dtype': config.model.compute_dtype}

    def emit(measurement: str, values: dict[str, Any]) -> None:
        if jax.process_index() == 0:
            print(json.dumps({'measurement': measurement, **common, **values}), flush=True)

    peaks = measure_peaks(config.benchmark.peak_size, COMPUTE_DTYPES[config.model.compute_dtype])
    emit('peak', peaks)
    setup = train.training_setup(config)
    step, state = benchmark_train_step(config, setup, mesh)
    devices = jax.device_count()
    step['utilisation_of_matmul_peak'] = step['flop_per_s'] / (peaks['matmul_flop_per_s']
                                                               * devices)
    step['utilisation_of_conv_peak'] = step['flop_per_s'] / (peaks['conv3x3_flop_per_s']
                                                             * devices)
    emit('train_step', step)
    emit('eval', benchmark_eval(config, setup.model, state, mesh))
    emit('input_pipeline', benchmark_input(config, step['images_per_s']))
