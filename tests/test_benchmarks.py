"""The benchmark scripts run and print well-formed JSON (their numbers are not asserted)."""

import json
import subprocess
import sys

from conftest import REPO


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
