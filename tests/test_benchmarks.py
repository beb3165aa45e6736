"""The benchmark scripts and --mode benchmark run and print well-formed JSON (speed is never
asserted: only that the numbers are present and consistent with each other)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import pytest

from conftest import REPO, xla_flags
from seg_jax import benchmark, parallel, train


def test_model_zoo_benchmark_prints_one_json_object_per_config(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'model_zoo.py'), '--configs', 'fcn',
         'resnet_aspp', '--crop', '64', '128', '--batch', '1', '--repeats', '1'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row['config'] for row in rows] == ['fcn', 'resnet_aspp']
    for row in rows:
        assert row['crop'] == [64, 128] and row['batch'] == 1
        assert row['parameters'] > 1_000_000
        for field in ('forward_s_per_batch', 'gradient_s_per_batch', 'forward_gflop_per_s',
                      'gradient_temp_mib'):
            assert row[field] > 0, field


def test_input_pipeline_benchmark_prints_train_and_eval_rates(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'input_pipeline.py'), '--source_size', '64',
         '128', '--crop', '32', '64', '--batch', '2', '--batches', '2', '--threads', '1',
         '--data_dir', str(tmp_path / 'data')],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row['mode'] for row in rows] == ['train', 'eval']
    assert rows[0]['output_resolution'] == [32, 64] and rows[1]['output_resolution'] == [64, 128]
    for row in rows:
        assert row['images_per_s'] > 0 and row['images_per_s_per_core'] == row['images_per_s']


def test_benchmark_mode_prints_every_measurement_as_json(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'seg_jax.main', f'--config={REPO / "tests" / "tiny_config.py"}',
         '--mode=benchmark', f'--config.data.dir={tmp_path / "data"}',
         '--config.benchmark.warmup_steps=1', '--config.benchmark.steps=3',
         '--config.benchmark.eval_size=(128, 256)', '--config.benchmark.eval_batches=2',
         '--config.benchmark.input_batches=2', '--config.benchmark.peak_size=512'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {row['measurement']: row for row in map(json.loads, result.stdout.splitlines())}
    assert list(rows) == ['peak', 'train_step', 'eval', 'input_pipeline']
    for row in rows.values():
        assert row['model'] == 'unet' and row['crop'] == [64, 128]
        assert row['global_batch'] == 8 and row['compute_dtype'] == 'float32'
        assert row['device_count'] >= 1 and row['device_kind']
    peak, step = rows['peak'], rows['train_step']
    assert peak['matmul_flop_per_s'] > 0 and peak['conv3x3_flop_per_s'] > 0
    assert step['step_s']['min'] <= step['step_s']['median'] <= step['step_s']['max']
    assert step['images_per_s'] == pytest.approx(8 / step['step_s']['median'])
    # A train step costs about three forward passes (forward, and two for the gradients).
    summary = subprocess.run(
        [sys.executable, '-m', 'seg_jax.main', f'--config={REPO / "tests" / "tiny_config.py"}',
         '--mode=summary'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    forward = json.loads(summary.stdout)['flops_per_image']
    assert 2 * forward < step['flops_per_image'] < 5 * forward
    assert step['utilisation_of_matmul_peak'] == pytest.approx(
        step['flop_per_s'] / (peak['matmul_flop_per_s'] * step['device_count']))
    assert step['compiled_temp_bytes'] > 0
    assert (step.get('peak_rss_bytes') or step.get('peak_device_bytes')) > 0
    evaluation, data = rows['eval'], rows['input_pipeline']
    assert evaluation['eval_size'] == [128, 256] and evaluation['images_per_s'] > 0
    assert data['step_images_per_s'] == step['images_per_s']
    assert data['input_over_step'] == pytest.approx(data['images_per_s'] / step['images_per_s'])
    assert data['bound_by'] == ('input' if data['input_over_step'] < 1 else 'step')


def test_inference_benchmark_prints_one_json_object_per_mode(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'inference.py'), '--config', 'fcn',
         '--size', '64', '128', '--batch', '1', '--window', '64', '64', '--stride', '32', '32',
         '--scales', '0.5', '1.0', '--repeats', '1'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'XLA_FLAGS': xla_flags(1)})  # one device, for a batch of one
    assert result.returncode == 0, result.stderr
    rows = {row['mode']: row for row in map(json.loads, result.stdout.splitlines())}
    assert list(rows) == ['whole', 'window', 'ms_flip', 'window_ms_flip']
    # Windows at 64x128: 1 x 3 offsets; at scale 0.5 (32x64) the window shrinks to 32x64: 1.
    assert [rows[mode]['passes_per_image'] for mode in rows] == [1, 3, 4, 2 * (1 + 3)]
    for row in rows.values():
        assert row['size'] == [64, 128] and row['s_per_batch'] > 0 and row['compile_s'] > 0
        assert row['images_per_s'] == pytest.approx(1 / row['s_per_batch'], rel=1e-2)


def test_export_latency_benchmark_prints_one_json_object_per_target(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'export_latency.py'), '--config', 'fcn',
         '--size', '64', '128', '--repeats', '1'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'XLA_FLAGS': xla_flags(1)})
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row['target'] for row in rows] == ['jax_jit', 'segmenter.jax', 'saved_model']
    for row in rows:
        assert row['image_size'] == [64, 128] and row['s_per_image'] > 0
        assert row['images_per_s'] == pytest.approx(1 / row['s_per_image'], rel=1e-2)


def test_accelerator_check_runs_every_part_in_tiny_mode_and_keeps_its_results(tmp_path):
    output = tmp_path / 'check'
    # The course FCN: the cheapest network to compile here, and one that refuses remat.
    command = [sys.executable, str(REPO / 'benchmarks' / 'accelerator_check.py'), '--tiny',
               '--output', str(output), '--configs', 'fcn', '--budget_s', '3600']
    environment = {**os.environ, 'XLA_FLAGS': xla_flags(2)}  # batches split over 2 devices
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                            env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == ''  # the JSON rows and nothing else
    written = (output / 'accelerator_check.jsonl').read_text()
    rows = [json.loads(line) for line in written.splitlines()]
    assert rows == [json.loads(line) for line in result.stdout.splitlines()]
    data_row = rows.pop(1)  # the synthetic Cityscapes, made before anything is timed
    assert data_row['measurement'] == 'data' and data_row['image_size'] == [64, 128]
    assert (output / 'synthetic_cityscapes' / 'leftImg8bit' / 'train').is_dir()
    assert [row['measurement'] for row in rows] == [
        'environment', 'peak', 'peak', 'train_step', 'train_step', 'skipped', 'skipped',
        'eval', 'eval', 'eval', 'bf16_training', 'input_pipeline', 'summary']
    environment_row, peaks = rows[0], {row['dtype']: row for row in rows[1:3]}
    assert environment_row['platform'] == 'cpu' and environment_row['device_count'] == 2
    assert environment_row['device_memory_limit_bytes'] is None  # no limit known on a CPU
    assert environment_row['jax'] == jax.__version__ and environment_row['host_cpus'] > 0
    for row in peaks.values():
        assert row['size'] == 256 and row['matmul_flop_per_s'] > 0
    steps = rows[3:5]
    assert [row['compute_dtype'] for row in steps] == ['bfloat16', 'float32']
    for row in steps:
        assert row['config'] == 'fcn' and row['crop'] == [64, 128] and not row['remat']
        assert row['per_device_batch'] == 2 and row['global_batch'] == 4  # the largest tried
        assert row['larger_batches_left_out'] == {}
        assert row['images_per_s'] == pytest.approx(4 / row['step_s']['median'])
        assert row['utilisation_of_matmul_peak'] == pytest.approx(
            row['flop_per_s'] / (2 * peaks[row['compute_dtype']]['matmul_flop_per_s']))
        assert row['compile_s'] > 0 and row['needed_device_bytes'] > 0
    for row in rows[5:7]:
        assert row['part'] == 'train_step' and row['remat']
        assert row['reason'].startswith('config.model.remat does not apply: it has no residual')
    whole, ms_flip, whole_f32 = rows[7:10]
    assert [whole['mode'], ms_flip['mode'], whole_f32['mode']] == ['whole', 'ms_flip', 'whole']
    assert whole['inference_views'] == 1 and ms_flip['inference_views'] == 12
    for row in (whole, ms_flip, whole_f32):
        assert row['eval_size'] == [64, 128] and row['eval_batch'] == 2
        assert row['val_images_s'] == pytest.approx(500 / row['images_per_s'])
    training = rows[10]
    assert training['steps'] == training['steps_asked'] == 30 and training['all_finite']
    assert training['learned'] and training['loss_last_tenth'] < training['loss_first_tenth']
    data = rows[11]
    assert data['step_images_per_s'] == steps[0]['images_per_s'] and data['images_per_s'] > 0
    assert rows[12]['failed'] is False

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env=environment)
    assert again.returncode != 0
    assert (f'{output / "accelerator_check.jsonl"} exists, from an earlier check; give another '
            '--output (nothing was overwritten)') in again.stderr
    assert (output / 'accelerator_check.jsonl').read_text() == written


def _accelerator_check():
    spec = importlib.util.spec_from_file_location('accelerator_check',
                                                  REPO / 'benchmarks' / 'accelerator_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accelerator_check_takes_the_largest_batch_that_fits_in_device_memory(tmp_path):
    check = _accelerator_check()
    data_dir = str(tmp_path / 'data')
    config = check.recipe('fcn', check.TINY, data_dir, 'float32', per_device_batch=1)
    one_image = benchmark.compile_train_step(config, train.training_setup(config),
                                             parallel.data_mesh()).needed_bytes()
    peaks = {'float32': {'matmul_flop_per_s': 1e9, 'conv3x3_flop_per_s': 1e9}}
    row = check.measure_train_step('fcn', 'float32', False, (1, 2), check.TINY, data_dir, peaks,
                                   memory_limit=one_image)
    assert row['per_device_batch'] == 1 and row['needed_device_bytes'] == one_image
    (left_out,) = row['larger_batches_left_out'].items()
    assert left_out[0] == 2 and re.fullmatch(rf'needs (\d+) of {one_image} bytes', left_out[1])
    with pytest.raises(MemoryError, match=r'no per-device batch of \[1, 2\] fits'):
        check.measure_train_step('fcn', 'float32', False, (1, 2), check.TINY, data_dir, peaks,
                                 memory_limit=one_image - 1)


def test_accelerator_check_orders_variants_and_spends_each_part_within_its_budget():
    check = _accelerator_check()
    order = check.train_step_order(('deeplabv3_r50', 'deeplabv3_r50_d8', 'resnet_aspp'))
    assert order[:4] == [('deeplabv3_r50', 'bfloat16', False),
                         ('deeplabv3_r50_d8', 'bfloat16', False),
                         ('deeplabv3_r50', 'float32', False), ('deeplabv3_r50_d8', 'float32', False)]
    assert order[4:8] == [(name, dtype, True) for dtype in ('bfloat16', 'float32')
                          for name in ('deeplabv3_r50', 'deeplabv3_r50_d8')]
    assert {name for name, _, _ in order[8:]} == {'resnet_aspp'} and len(order) == 12
    budget = check.Budget(10.0)
    assert budget.allows_another()
    budget.slowest = 9.0
    assert budget.allows_another()
    budget.slowest = 11.0  # a measurement as slow as the part's slowest would overrun it
    assert not budget.allows_another()


def test_accelerator_check_with_no_time_skips_every_measurement_and_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'accelerator_check.py'), '--tiny', '--output',
         str(tmp_path), '--configs', 'fcn', '--budget_s', '0'],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'XLA_FLAGS': xla_flags(1)})
    assert result.returncode == 1  # the bf16 training did not show that it learns
    rows = [json.loads(line) for line in (tmp_path / 'accelerator_check.jsonl').open()]
    assert [row['measurement'] for row in rows] == ['environment', 'data', *['skipped'] * 11,
                                                    'summary']
    assert [row['part'] for row in rows[2:-1]] == [
        'peak', 'peak', *['train_step'] * 4, 'eval', 'eval', 'eval', 'bf16_training',
        'input_pipeline']
    assert {row['reason'] for row in rows[2:-1] if row['part'] in ('peak', 'eval')} == {
        "its part's time budget is spent"}
    assert rows[-1]['failed'] is True
