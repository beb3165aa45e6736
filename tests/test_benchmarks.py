"""The benchmark scripts and --mode benchmark run and print well-formed JSON (speed is never
asserted: only that the numbers are present and consistent with each other)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, xla_flags


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
