"""Everything seg_jax measures on an accelerator, in one command that keeps to a time budget.

    python benchmarks/accelerator_check.py --output DIR           # within --budget_s (8 minutes)
    python benchmarks/accelerator_check.py --output DIR --tiny    # small sizes, on any CPU

Accelerator time comes in short windows, so this is the one prepared command to spend them on;
``--tiny`` runs the same code at small sizes, which is how the test suite keeps it working. On
whatever devices JAX finds, in order:

* ``environment``: device, driver, CUDA, jax and jaxlib versions, device memory.
* ``data``: the synthetic Cityscapes the other parts read, made before anything is timed.
* ``peak``: the measured matmul and 3x3-convolution FLOP/s, in bfloat16 and in float32.
* ``train_step``: ``--mode benchmark``'s real train step of each config at 512x1024, at the
  largest per-device batch of ``--batches`` whose compiled program fits in device memory;
  bfloat16 and float32, without and with ``config.model.remat``: compile time, step time,
  images/s, achieved FLOP/s and its share of the same dtype's measured matmul peak, and
  memory: ``needed_device_bytes`` is XLA's figure for that step's program, ``peak_device_bytes``
  the allocator's peak of the whole check so far.
* ``eval``: the first config's eval step at full resolution (1024x2048), whole image and
  multi-scale + flip, extrapolated to Cityscapes' 500 val images.
* ``bf16_training``: 150 bfloat16 steps of a narrow U-Net on the synthetic Cityscapes at
  512x1024, whose loss must fall and stay finite.
* ``input_pipeline``: the tf.data training input's images/s on this host's cores beside what
  the first config's train step consumes.

Each part has its own share of ``--budget_s``: it starts a measurement only while what is left
of its share covers its slowest measurement so far, and writes a ``skipped`` row for each one it
leaves out. Every row is printed and appended to ``DIR/accelerator_check.jsonl`` as it is made;
a measurement that fails writes an ``error`` row and the others go on. The exit status is 1 when
a row is an error or the bf16 training did not learn. The device is only used, never configured:
nothing here sets clocks, modes or memory fractions, and the process's memory goes with it.
"""

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from seg_jax import benchmark, console, health, parallel, train
from seg_jax.data import pipeline
from seg_jax.models import COMPUTE_DTYPES, RESTRICTIONS
from seg_jax.state import create_train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('deeplabv3_r50', 'deeplabv3_r50_d8', 'resnet_aspp')
# Configs after the first two are measured last: only if the budget allows.
FIRST_CONFIGS = 2
MS_FLIP_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
CITYSCAPES_VAL_IMAGES = 500
# Shares of --budget_s per part; the rest is start-up and the synthetic data.
PART_SHARES = {'peak': 0.06, 'train_step': 0.56, 'eval': 0.16, 'bf16_training': 0.13,
               'input_pipeline': 0.04}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the check measures at: the real sizes, or ``--tiny``'s."""
    crop: tuple[int, int]
    eval_size: tuple[int, int]
    data_size: tuple[int, int]  # the synthetic Cityscapes' images
    width: float  # channel multiplier of the measured configs
    peak_size: int
    warmup_steps: int
    timed_steps: int
    eval_batch_per_device: int
    eval_batches: int
    training_steps: int
    input_batches: int


FULL = Sizes(crop=(512, 1024), eval_size=(1024, 2048), data_size=(1024, 2048), width=1.0,
             peak_size=8192, warmup_steps=3, timed_steps=10, eval_batch_per_device=2,
             eval_batches=3, training_steps=150, input_batches=10)
TINY = Sizes(crop=(64, 128), eval_size=(64, 128), data_size=(64, 128), width=0.125,
             peak_size=256, warmup_steps=1, timed_steps=2, eval_batch_per_device=1,
             eval_batches=1, training_steps=30, input_batches=2)


class Budget:
    """A part's seconds. A measurement is never cut short; one starts only while what is left
    covers the part's slowest so far, so the part ends within its share."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.slowest = 0.0

    def allows_another(self) -> bool:
        return time.monotonic() + self.slowest <= self.deadline

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.slowest = max(self.slowest, time.monotonic() - start)


class Results:
    """Rows printed and appended to the results file as they are made."""

    def __init__(self, path: str):
        self.path = path
        self.failed = False

    def write(self, measurement: str, **values: Any) -> dict[str, Any]:
        row = {'measurement': measurement, **values}
        line = json.dumps(row, default=float)
        print(line, flush=True)
        with open(self.path, 'a') as file:
            file.write(line + '\n')
        self.failed |= measurement == 'error'
        return row

    def attempt(self, part: str, item: dict[str, Any], function: Callable[[], dict[str, Any]]
                ) -> dict[str, Any] | None:
        """``function()``'s row, or an ``error`` row naming the failure (the check goes on)."""
        try:
            return self.write(part, **item, **function())
        except Exception as error:  # noqa: BLE001 - one failed measurement must not end the rest
            self.write('error', part=part, **item, error=f'{type(error).__name__}: {error}'[:2000])
            return None


def _nvidia_smi() -> dict[str, Any]:
    """The GPU's name, driver, memory and the CUDA version the driver supports, where
    nvidia-smi is installed."""
    try:
        query = subprocess.run(
            ['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
             '--format=csv,noheader'], capture_output=True, text=True, timeout=30, check=True)
        header = subprocess.run(['nvidia-smi'], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    name, driver, memory = (field.strip() for field in query.stdout.splitlines()[0].split(','))
    cuda = re.search(r'CUDA Version:\s*([\d.]+)', header.stdout)
    return {'gpu_name': name, 'driver_version': driver, 'gpu_memory': memory,
            'driver_cuda_version': cuda.group(1) if cuda else None}


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    cuda_versions = getattr(jax._src.lib, 'cuda_versions', None)  # a jaxlib CUDA plugin's
    return {
        'device_kind': device.device_kind, 'platform': device.platform,
        'device_count': jax.device_count(), 'process_count': jax.process_count(),
        'compute_capability': getattr(device, 'compute_capability', None),
        'device_memory_limit_bytes': stats.get('bytes_limit'),
        'cuda_runtime_version': cuda_versions.cuda_runtime_get_version() if cuda_versions else None,
        'cudnn_version': cuda_versions.cudnn_get_version() if cuda_versions else None,
        **_nvidia_smi(),
        'jax': jax.__version__, 'jaxlib': _installed('jaxlib'),
        'jax_cuda12_plugin': _installed('jax-cuda12-plugin'), 'python': platform.python_version(),
        'host_cpus': os.cpu_count(),
    }


def recipe(name: str, sizes: Sizes, data_dir: str, dtype: str, remat: bool = False,
           per_device_batch: int = 1) -> ml_collections.ConfigDict:
    """``configs/<name>.py`` on the synthetic Cityscapes at the check's sizes."""
    config = importlib.import_module(f'configs.{name}').get_config()
    config.data.source, config.data.dir = 'synthetic', data_dir
    config.data.synthetic.update(dict(num_train=8, num_val=2, num_test=1,
                                      height=sizes.data_size[0], width=sizes.data_size[1]))
    config.data.crop_size = sizes.crop
    config.model.width, config.model.compute_dtype, config.model.remat = sizes.width, dtype, remat
    config.global_batch_size = per_device_batch * jax.device_count()
    config.benchmark.warmup_steps, config.benchmark.steps = sizes.warmup_steps, sizes.timed_steps
    config.benchmark.input_batches = sizes.input_batches
    config.benchmark.eval_batches = sizes.eval_batches
    config.benchmark.eval_size = sizes.eval_size
    config.eval.batch_size = sizes.eval_batch_per_device * jax.device_count()
    return config


def remat_refusal(name: str) -> str | None:
    """Why ``configs/<name>.py``'s network has no ``config.model.remat``, or None."""
    model = importlib.import_module(f'configs.{name}').get_config().model.name
    allowed = RESTRICTIONS.get(model, {}).get('remat')
    return None if allowed is None or True in allowed.values else allowed.why


def _out_of_memory(error: Exception) -> bool:
    return 'RESOURCE_EXHAUSTED' in str(error) or 'Out of memory' in str(error)


def measure_train_step(name: str, dtype: str, remat: bool, batches: tuple[int, ...],
                       sizes: Sizes, data_dir: str, peaks: dict[str, dict[str, float]],
                       memory_limit: int | None) -> dict[str, Any]:
    """The train step at the largest per-device batch of ``batches`` whose compiled program
    fits in ``memory_limit`` bytes (None: no limit known, as on a CPU) and runs."""
    mesh, too_large = parallel.data_mesh(), {}
    for per_device in sorted(batches, reverse=True):
        config = recipe(name, sizes, data_dir, dtype, remat, per_device)
        compiled = benchmark.compile_train_step(config, train.training_setup(config), mesh)
        if memory_limit is not None and compiled.needed_bytes() > memory_limit:
            too_large[per_device] = f'needs {compiled.needed_bytes()} of {memory_limit} bytes'
            continue
        try:
            row, _ = benchmark.time_train_step(config, compiled)
        except jax.errors.JaxRuntimeError as error:
            if not _out_of_memory(error):
                raise
            too_large[per_device] = 'out of memory when run'
            continue
        row['utilisation_of_matmul_peak'] = row['flop_per_s'] / (
            peaks[dtype]['matmul_flop_per_s'] * jax.device_count())
        row['utilisation_of_conv_peak'] = row['flop_per_s'] / (
            peaks[dtype]['conv3x3_flop_per_s'] * jax.device_count())
        return {'per_device_batch': per_device, 'global_batch': config.global_batch_size,
                'needed_device_bytes': compiled.needed_bytes(),
                'larger_batches_left_out': too_large, **row}
    raise MemoryError(f'no per-device batch of {sorted(batches)} fits: {too_large}')


def train_step_order(configs: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """(config, dtype, remat) in the order they are measured: the first configs before the
    others; within them bfloat16 before float32 and remat off before on."""
    def priority(variant):
        name, dtype, remat = variant
        index = configs.index(name)
        return index >= FIRST_CONFIGS, remat, dtype != 'bfloat16', index
    return sorted(((name, dtype, remat) for name in configs for dtype in ('bfloat16', 'float32')
                   for remat in (False, True)), key=priority)


def measure_eval(name: str, dtype: str, scales: tuple[float, ...], sizes: Sizes,
                 data_dir: str) -> dict[str, Any]:
    config = recipe(name, sizes, data_dir, dtype)
    config.eval.scales, config.eval.flip = scales, len(scales) > 1
    mesh = parallel.data_mesh()
    setup = train.training_setup(config)
    state = create_train_state(setup.model, setup.tx, sizes.crop, config.seed, mesh)
    row = benchmark.benchmark_eval(config, setup.model, state, mesh)
    row['val_images_s'] = CITYSCAPES_VAL_IMAGES / row['images_per_s']
    return row


def bf16_training(sizes: Sizes, data_dir: str, seconds: float) -> dict[str, Any]:
    """A narrow U-Net (configs/demo.py) trained in bfloat16 for ``sizes.training_steps`` steps,
    or as many as ``seconds`` allow: does its loss fall?"""
    config = recipe('demo', sizes, data_dir, 'bfloat16')
    config.model.width = min(sizes.width, 0.25)
    config.global_batch_size = max(8, jax.device_count())
    config.global_batch_size += -config.global_batch_size % jax.device_count()
    config.num_train_steps = sizes.training_steps
    mesh = parallel.data_mesh()
    setup = train.training_setup(config)
    state = create_train_state(setup.model, setup.tx, sizes.crop, config.seed, mesh)
    step = train.make_train_step(config.loss, config.optimizer, setup.class_weights,
                                 config.seed)
    batches = parallel.prefetch_to_devices(pipeline.build_input(config, setup.train_split), mesh)
    record = health.initial(mesh)
    losses, start, deadline = [], time.perf_counter(), time.monotonic() + seconds
    first_step_s = None
    while len(losses) < sizes.training_steps and (not losses or time.monotonic() < deadline):
        state, logged, record = step(state, next(batches), record, setup.schedule)
        losses.append(float(jax.device_get(logged['loss'])))
        if first_step_s is None:
            first_step_s, start = time.perf_counter() - start, time.perf_counter()
    tenth = max(1, len(losses) // 10)
    first, last = float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:]))
    finite = bool(np.all(np.isfinite(losses)))
    return {'model': 'unet', 'width': config.model.width, 'crop': list(sizes.crop),
            'global_batch': config.global_batch_size, 'steps': len(losses),
            'steps_asked': sizes.training_steps, 'first_step_s': first_step_s,
            'images_per_s': (len(losses) - 1) * config.global_batch_size / max(
                time.perf_counter() - start, 1e-9),
            'loss_first_tenth': first, 'loss_last_tenth': last, 'all_finite': finite,
            'learned': finite and last < first}


def input_pipeline(name: str, sizes: Sizes, data_dir: str, per_device_batch: int,
                   step_images_per_s: float) -> dict[str, Any]:
    config = recipe(name, sizes, data_dir, 'bfloat16', per_device_batch=per_device_batch)
    return {'host_cpus': os.cpu_count(), 'global_batch': config.global_batch_size,
            **benchmark.benchmark_input(config, step_images_per_s)}


BUDGET_SPENT = "its part's time budget is spent"


def measure_each(results: Results, part: str, budget_s: float, items: list[dict[str, Any]],
                 measure: Callable[[dict[str, Any]], dict[str, Any]],
                 refusal: Callable[[dict[str, Any]], str | None] = lambda item: None
                 ) -> list[dict[str, Any]]:
    """``measure(item)`` of each item in turn within the part's share of ``budget_s``; an item
    that ``refusal`` names a reason for, or that the budget leaves out, is a ``skipped`` row."""
    budget, rows = Budget(PART_SHARES[part] * budget_s), []
    for item in items:
        reason = refusal(item) or (None if budget.allows_another() else BUDGET_SPENT)
        if reason:
            results.write('skipped', part=part, **item, reason=reason)
            continue
        with budget.measuring():
            row = results.attempt(part, item, lambda: measure(item))
        if row:
            rows.append(row)
    return rows


def run_check(output: str, sizes: Sizes, configs: tuple[str, ...], batches: tuple[int, ...],
              budget_s: float, data_dir: str) -> bool:
    """Every part, in order; True when nothing failed."""
    results = Results(os.path.join(output, 'accelerator_check.jsonl'))
    started = time.monotonic()
    memory_limit = results.write('environment', **environment())['device_memory_limit_bytes']
    start = time.monotonic()  # generated here, not inside the first timed measurement
    pipeline.open_training_split(recipe(configs[0], sizes, data_dir, 'float32'))
    results.write('data', dir=data_dir, image_size=list(sizes.data_size),
                  seconds=time.monotonic() - start)

    peaks = {row['dtype']: row for row in measure_each(
        results, 'peak', budget_s, [{'dtype': dtype, 'size': sizes.peak_size}
                                    for dtype in ('bfloat16', 'float32')],
        lambda item: benchmark.measure_peaks(item['size'], COMPUTE_DTYPES[item['dtype']]))}

    def step_refusal(item: dict[str, Any]) -> str | None:
        if item['remat'] and remat_refusal(item['config']):
            return f'config.model.remat does not apply: {remat_refusal(item["config"])}'
        if item['compute_dtype'] not in peaks:
            return 'no peak of this dtype was measured to compare with'
        return None

    steps = measure_each(
        results, 'train_step', budget_s,
        [{'config': name, 'compute_dtype': dtype, 'remat': remat, 'crop': list(sizes.crop)}
         for name, dtype, remat in train_step_order(configs)],
        lambda item: measure_train_step(item['config'], item['compute_dtype'], item['remat'],
                                        batches, sizes, data_dir, peaks, memory_limit),
        step_refusal)

    measure_each(
        results, 'eval', budget_s,
        [{'config': configs[0], 'compute_dtype': dtype, 'mode': mode}
         for dtype, mode in (('bfloat16', 'whole'), ('bfloat16', 'ms_flip'), ('float32', 'whole'))],
        lambda item: measure_eval(item['config'], item['compute_dtype'],
                                  MS_FLIP_SCALES if item['mode'] == 'ms_flip' else (1.0,),
                                  sizes, data_dir))

    training = measure_each(results, 'bf16_training', budget_s, [{}], lambda item: bf16_training(
        sizes, data_dir, PART_SHARES['bf16_training'] * budget_s))
    if not (training and training[0]['learned']):
        results.failed = True

    # The input against the appetite of the first config's first (bfloat16) train step.
    first = next((row for row in steps if row['config'] == configs[0]), None)
    measure_each(
        results, 'input_pipeline', budget_s, [{'config': configs[0]}],
        lambda item: input_pipeline(item['config'], sizes, data_dir, first['per_device_batch'],
                                    first['images_per_s']),
        lambda item: None if first else 'no train step of this config was measured')
    results.write('summary', seconds=time.monotonic() - started, budget_s=budget_s,
                  failed=results.failed)
    return not results.failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', required=True,
                        help='folder for accelerator_check.jsonl (made if missing)')
    parser.add_argument('--tiny', action='store_true',
                        help='small sizes and narrow networks: seconds on a CPU')
    parser.add_argument('--configs', nargs='+', default=CONFIGS)
    parser.add_argument('--batches', nargs='+', type=int, default=None,
                        help='per-device train batches to try, the largest that fits is used '
                        '(default 16 8; --tiny: 2 1)')
    parser.add_argument('--budget_s', type=float, default=480.0,
                        help='seconds for the whole check, shared among its parts')
    parser.add_argument('--data_dir', default=None,
                        help='synthetic Cityscapes folder (default: DIR/synthetic_cityscapes)')
    console.add_verbosity_argument(parser)
    args = parser.parse_args()
    unknown = [name for name in args.configs
               if not os.path.exists(os.path.join(REPO, 'configs', f'{name}.py'))]
    if unknown:
        parser.error(f'--configs {" ".join(unknown)}: no such file in {REPO}/configs/')
    console.configure(args.verbosity)
    results_file = os.path.join(args.output, 'accelerator_check.jsonl')
    if os.path.exists(results_file):
        sys.exit(f'error: {results_file} exists, from an earlier check; give another --output '
                 '(nothing was overwritten)')
    os.makedirs(args.output, exist_ok=True)
    sizes = TINY if args.tiny else FULL
    batches = tuple(args.batches or ((2, 1) if args.tiny else (16, 8)))
    data_dir = args.data_dir or os.path.join(args.output, 'synthetic_cityscapes')
    ok = run_check(args.output, sizes, tuple(args.configs), batches, args.budget_s, data_dir)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
