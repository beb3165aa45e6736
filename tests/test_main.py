"""The command line: ``--mode summary`` on every config, locked configs, clear errors."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import CONFIG_NAMES, MMSEG_CONFIGS, REPO, load_config
from seg_jax.summary import model_summary


def run_main(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'seg_jax.main', *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def readme_zoo() -> dict[str, tuple[int, float]]:
    """config name -> (parameters, GFLOPs per image) from the README's model-zoo table."""
    rows = re.findall(r'^\| `configs/(\w+)\.py` \|.*?\| ([\d,]+) \| ([\d.]+) \|',
                      (REPO / 'README.md').read_text(), flags=re.MULTILINE)
    return {name: (int(params.replace(',', '')), float(gflops)) for name, params, gflops in rows}


@pytest.fixture(scope='module')
def summaries(tmp_path_factory) -> dict[str, dict]:
    """``--mode summary`` of every config, run from a folder outside the repository."""
    cwd = tmp_path_factory.mktemp('elsewhere')
    results = {}
    for name in CONFIG_NAMES:
        result = run_main('--config', str(REPO / 'configs' / f'{name}.py'), '--mode', 'summary',
                          cwd=cwd)
        assert result.returncode == 0, result.stderr
        results[name] = json.loads(result.stdout)  # stdout is exactly one JSON object
    return results


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_summary_reports_the_configured_model(summaries, name):
    summary = summaries[name]
    config = load_config(name)
    height, width = config.data.crop_size
    assert summary['model'] == config.model.name
    assert summary['backbone'] == config.model.backbone
    assert summary['input_shape'] == [1, height, width, 3]
    assert summary['output_shape'] == [1, height, width, 19]
    assert summary['output_stride'] == config.model.output_stride
    assert summary['compute_dtype'] == 'float32'
    assert summary['parameters'] > 1_000_000 and summary['flops_per_image'] > 1e9


def test_readme_zoo_table_matches_the_summaries(summaries):
    table = readme_zoo()
    assert set(table) == set(CONFIG_NAMES) | set(MMSEG_CONFIGS)
    # The course's networks through the command line, mmseg's in-process (the same function).
    in_process = {name: model_summary(load_config(name)) for name in MMSEG_CONFIGS}
    for name, (parameters, gflops) in table.items():
        summary = summaries[name] if name in summaries else in_process[name]
        assert parameters == summary['parameters'], name
        assert gflops == round(summary['flops_per_image'] / 1e9, 1), name


def test_summary_follows_overrides(tmp_path):
    result = run_main('--config', str(REPO / 'configs' / 'resnet_aspp.py'), '--mode', 'summary',
                      '--config.model.output_stride=16', '--config.model.backbone=resnet18',
                      '--config.data.crop_size=(256, 512)', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary['backbone'] == 'resnet18' and summary['output_stride'] == 16
    assert summary['output_shape'] == [1, 256, 512, 19]


def test_invalid_value_is_a_one_line_error(tmp_path):
    result = run_main('--config', str(REPO / 'configs' / 'fcn.py'), '--mode', 'summary',
                      '--config.data.crop_size=(100, 200)', cwd=tmp_path)
    assert result.returncode != 0
    assert 'divisible by its output stride 32' in result.stderr
    assert 'Traceback' not in result.stderr


def test_predict_names_what_it_needs(tmp_path):
    result = run_main('--config', str(REPO / 'configs' / 'demo.py'), '--mode', 'predict',
                      cwd=tmp_path)
    assert result.returncode != 0 and '--mode predict needs --workdir' in result.stderr
    result = run_main('--config', str(REPO / 'configs' / 'demo.py'), '--mode', 'predict',
                      '--workdir', str(tmp_path / 'run'), cwd=tmp_path)
    assert result.returncode != 0 and 'needs --config.predict.input' in result.stderr
    assert 'Traceback' not in result.stderr


def test_eval_without_a_checkpoint_is_a_clear_error_and_creates_nothing(tmp_path):
    workdir = tmp_path / 'no_such_run'
    result = run_main('--config', str(REPO / 'configs' / 'demo.py'), '--mode', 'eval',
                      '--workdir', str(workdir), cwd=tmp_path)
    assert result.returncode != 0
    assert 'No checkpoint in' in result.stderr and 'Traceback' not in result.stderr
    assert not workdir.exists()
    result = run_main('--config', str(REPO / 'configs' / 'demo.py'), '--mode', 'train',
                      cwd=tmp_path)
    assert result.returncode != 0 and 'needs --workdir' in result.stderr


def test_configs_are_locked():
    config = load_config('deeplabv3_r50')
    with pytest.raises(AttributeError):
        config.model.outptu_stride = 16
    with pytest.raises(AttributeError):
        config.bogus = 1


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines seg_jax printed as its error (logs of jax and TensorFlow aside)."""
    return [line for line in result.stderr.splitlines() if line.startswith('error:')]


BAD_FIELD_FILE = '''from configs import fcn


def get_config():
    config = fcn.get_config()
    config.model.{line}
    return config
'''


@pytest.mark.parametrize('overrides,file_line,message', [
    (['--config.model.outptu_stride=16'], None,
     "the config has no field 'outptu_stride' (did you mean 'output_stride'?); the fields beside "
     'it are: '),
    ([], 'outptu_stride = 16', "the config has no field 'outptu_stride' (did you mean "
     "'output_stride'?); the fields beside it are: name, backbone, output_stride"),
    (['--config.num_train_steps=many'], None,
     "--config.num_train_steps=many: invalid literal for int() with base 10: 'many'"),
    ([], "width = 'wide'", 'line 6: field width must be of type float, not str'),
    (['--config.model.name=segformer'], None, "config.model.name='segformer' is not a known "
     "model; use one of ['deeplabv3', 'deeplabv3_mmseg', 'deeplabv3plus', 'fcn', 'fcn_resnet', "
     "'pspnet', 'resnet_aspp', 'resnet_deconv', 'unet', 'unet_aspp']"),
    (['--config.model.name=resnet_aspp', '--config.model.backbone=resnet152'], None,
     "config.model.backbone='resnet152' is not known for resnet_aspp; use one of ['resnet101', "
     "'resnet101_v1c', 'resnet18', 'resnet34', 'resnet50', 'resnet50_v1c', 'vgg16_bn']"),
    (['--config.data.crop_size=(512,)'], None,
     'config.data.crop_size=(512,) must be two positive ints (height, width)'),
])
def test_config_faults_are_one_line_errors_naming_the_valid_choices(tmp_path, overrides,
                                                                    file_line, message):
    config_file = REPO / 'configs' / 'fcn.py'
    if file_line:
        config_file = tmp_path / 'my_config.py'
        config_file.write_text(BAD_FIELD_FILE.format(line=file_line))
    result = subprocess.run(
        [sys.executable, '-m', 'seg_jax.main', '--config', str(config_file), '--mode', 'summary',
         *overrides], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert result.returncode != 0 and result.stdout == ''
    assert 'Traceback' not in result.stderr
    [line] = error_lines(result)
    assert message in line, line


def test_the_readme_fault_table_names_tests_that_exist():
    readme = (REPO / 'README.md').read_text()
    section = readme.split('## What happens when ...')[1].split('\n## ')[0]
    references = re.findall(r'`(tests/\w+\.py)::(\w+)`', section)
    assert len(references) >= 15
    for path, name in references:
        assert re.search(rf'^def {name}\(', (REPO / path).read_text(), re.MULTILINE), (path, name)
